import type { FirmaConfig } from '../config/index.js';
import type { Logger } from '../core/log.js';
import type { EgressSettings } from './connector.js';
import { HostPolicies } from './host-policy.js';
import { createRateLimiter } from './rate-limit/create.js';
import type { RateLimiter } from './rate-limit/types.js';
import { createCredentialInjector } from './credentials.js';

/**
 * The connector's per-host settings built from one config, with what it takes to release them. Built
 * the same way at start and on reload; a reload keeps the running limiter (its token state, its Redis
 * connection) and credential injector (its Vault login and cache) when their settings did not change.
 */
export interface EgressParts extends EgressSettings {
  /** What the limiter was built from; equal keys share one limiter. */
  readonly limitsKey: string;
  /** What the injector was built from; equal keys share one injector. */
  readonly credentialsKey: string;
  /** The longest a request holding these settings can wait in them (rate-limit wait, credential fetch). */
  readonly longestWaitMs: number;
  readonly closeCredentials: () => Promise<void>;
}

function stableJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

/**
 * `redis` is the running process's `[redis]` table on reload (a restart-only setting: a changed URL in
 * the file must not quietly move the buckets to another server).
 */
export function buildEgress(config: FirmaConfig, log: Logger, previous: EgressParts | null = null, redis: FirmaConfig['redis'] = config.redis): EgressParts {
  const hosts = new HostPolicies(config.sidecar.connector);
  const buckets = hosts.buckets().sort((a, b) => (a.bucket < b.bucket ? -1 : a.bucket > b.bucket ? 1 : 0));
  const limitsKey = stableJson([buckets, redis]);
  const credentialsKey = stableJson([config.credentials, config.vault]);
  const connector = config.sidecar.connector;
  const longestWaitMs = Math.max(connector.default_timeout_ms, ...connector.hosts.map((h) => h.timeout_ms ?? 0));

  let limiter: RateLimiter | null;
  let newLimiter: RateLimiter | null = null;
  if (previous !== null && previous.limitsKey === limitsKey) {
    limiter = previous.limiter;
  } else {
    newLimiter = buckets.length === 0 ? null : createRateLimiter(buckets, redis, { log });
    limiter = newLimiter;
  }
  if (previous !== null && previous.credentialsKey === credentialsKey) {
    return { hosts, limiter, credentials: previous.credentials, closeCredentials: previous.closeCredentials, limitsKey, credentialsKey, longestWaitMs };
  }
  try {
    const { injector, close } = createCredentialInjector(config);
    return { hosts, limiter, credentials: injector, closeCredentials: close, limitsKey, credentialsKey, longestWaitMs };
  } catch (err) {
    void newLimiter?.close();
    throw err;
  }
}

/**
 * The parts of `old` that `next` does not share, as one release function (for after the requests that
 * may still hold them are done). Null when everything is shared.
 */
export function unsharedParts(old: EgressParts, next: EgressParts | null): (() => Promise<void>) | null {
  const limiter = next === null || old.limiter !== next.limiter ? old.limiter : null;
  const credentials = next === null || old.closeCredentials !== next.closeCredentials ? old.closeCredentials : null;
  if (limiter === null && credentials === null) return null;
  return async () => {
    await limiter?.close();
    await credentials?.();
  };
}
