import type { FirmaConfig } from '../config/index.js';
import type { Target } from '../core/envelope.js';

/** What the connector applies to one upstream: its limits, resolved from `[[sidecar.connector.hosts]]`. */
export interface HostPolicy {
  /** Bound on rate-limit wait + connect + time to response headers. */
  readonly timeoutMs: number;
  /** Longest silence inside a streaming body. */
  readonly idleTimeoutMs: number;
  /** Token bucket name (`host:port` as configured) or null when the host has no rate limit. */
  readonly bucket: string | null;
  readonly rps: number | null;
  readonly burst: number | null;
}

/**
 * Exact-match lookup of per-host settings. An entry without a port covers the scheme defaults
 * (443 and 80); an entry with a port covers that port only. Unlisted hosts get the defaults and no
 * rate limit. Built once per config, looked up once per request (one Map get).
 */
export class HostPolicies {
  readonly #byAuthority = new Map<string, HostPolicy>();
  readonly #default: HostPolicy;

  constructor(connector: FirmaConfig['sidecar']['connector']) {
    this.#default = {
      timeoutMs: connector.default_timeout_ms,
      idleTimeoutMs: connector.idle_timeout_ms,
      bucket: null,
      rps: null,
      burst: null,
    };
    for (const h of connector.hosts) {
      const policy: HostPolicy = {
        timeoutMs: h.timeout_ms ?? connector.default_timeout_ms,
        idleTimeoutMs: h.idle_timeout_ms ?? connector.idle_timeout_ms,
        bucket: h.rps === undefined ? null : h.host.port === null ? h.host.host : `${h.host.host}:${h.host.port}`,
        rps: h.rps ?? null,
        burst: h.rps === undefined ? null : h.burst ?? h.rps,
      };
      const ports = h.host.port === null ? [443, 80] : [h.host.port];
      // An explicit :443 entry wins over a portless one for the same host (config order aside).
      for (const port of ports) {
        const key = `${h.host.host}:${port}`;
        if (h.host.port !== null || !this.#byAuthority.has(key)) this.#byAuthority.set(key, policy);
      }
    }
  }

  for(target: Target): HostPolicy {
    return this.#byAuthority.get(`${target.host}:${target.port}`) ?? this.#default;
  }

  /** Every configured bucket with its rate, for the rate limiter. */
  buckets(): Array<{ bucket: string; rps: number; burst: number }> {
    const out = new Map<string, { bucket: string; rps: number; burst: number }>();
    for (const p of this.#byAuthority.values()) {
      if (p.bucket !== null && p.rps !== null && p.burst !== null) out.set(p.bucket, { bucket: p.bucket, rps: p.rps, burst: p.burst });
    }
    return [...out.values()];
  }
}
