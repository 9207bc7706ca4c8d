import type { Allowed } from '../core/decision.js';
import type { SidecarReply } from '../core/reply.js';
import type { ConnectorErrorKind, DispatchOutcome } from '../core/outcome.js';
import type { RateLimitMetrics } from '../core/metrics.js';
import { FirmaError, errorCode } from '../core/errors.js';
import { formatAuthority } from '../core/host.js';
import type { HostPolicies, HostPolicy } from './host-policy.js';
import type { RateLimiter } from './rate-limit/types.js';
import type { CredentialInjector, ResolvedCredential } from './credentials.js';

/** The per-host settings a hot reload may replace (as one value: a request reads them once). */
export interface EgressSettings {
  /** Per-host timeouts and rate-limit buckets. */
  readonly hosts: HostPolicies;
  /** Token buckets; null when no host has a rate limit. */
  readonly limiter: RateLimiter | null;
  /** Credentials to inject after allow; null when none are configured. */
  readonly credentials: CredentialInjector | null;
}

/** Everything decided before a byte goes upstream: the deadline and the credentials to inject. */
export type Preflight = Cleared | Refused;

export interface Cleared {
  readonly ok: true;
  /** `performance.now()` time by which the upstream must have sent its response headers. */
  readonly deadline: number;
  readonly policy: HostPolicy;
  readonly credentials: readonly ResolvedCredential[] | null;
  readonly waitedMs: number;
}

export interface Refused {
  readonly ok: false;
  readonly reply: Omit<SidecarReply, 'requestId'>;
  readonly error: ConnectorErrorKind;
  readonly errorCode: string;
  readonly waitedMs: number;
}

const NONE: readonly never[] = [];

/**
 * Rate limit, then credential (docs/architecture.md "Connector"). Both run after the decision and
 * before any byte goes upstream; either failing means the request is not dispatched at all.
 */
export async function preflight(allowed: Allowed, egress: EgressSettings, metrics: RateLimitMetrics | undefined): Promise<Preflight> {
  const target = allowed.envelope.target;
  const policy = egress.hosts.for(target);
  const deadline = performance.now() + policy.timeoutMs;
  let waitedMs = 0;
  if (policy.bucket !== null && egress.limiter !== null) {
    const got = await egress.limiter.acquire(policy.bucket, deadline);
    if (!got.ok) {
      metrics?.rateLimitRejected(policy.bucket, got.reason);
      const unavailable = got.reason === 'limiter_unavailable';
      const seconds = Math.max(1, Math.ceil(got.retryAfterMs / 1000));
      return {
        ok: false,
        error: 'rate_limited',
        errorCode: unavailable ? 'LIMITER_UNAVAILABLE' : 'RATE_LIMITED',
        waitedMs,
        reply: {
          status: unavailable ? 503 : 429,
          decision: 'allow',
          stage: 'connector',
          reason: unavailable ? 'limiter_unavailable' : 'rate_limited',
          message: unavailable
            ? `the shared rate limit for ${policy.bucket} cannot be checked (Redis unreachable), so the request was not sent`
            : `rate limit for ${policy.bucket} (${policy.rps}/s, burst ${policy.burst}): no token within ${policy.timeoutMs} ms`,
          headers: { 'retry-after': String(seconds) },
        },
      };
    }
    waitedMs = got.waitedMs;
    metrics?.rateLimitGranted(policy.bucket, waitedMs);
  }
  let credentials: ResolvedCredential[] | null = null;
  const injector = egress.credentials;
  // Unclassified traffic let through unprotected never carries a credential, and a blind tunnel
  // (kind "tunnel") cannot: fetching one there would only add a way to fail (Vault down → 502).
  const entries = allowed.passthrough || allowed.envelope.kind === 'tunnel' ? NONE : injector?.matchAll(target) ?? NONE;
  if (injector !== null && entries.length > 0) {
    try {
      credentials = await Promise.all(entries.map((e) => injector.resolve(e)));
    } catch (err) {
      return {
        ok: false,
        error: 'credential',
        errorCode: errorCode(err) ?? 'FIRMA_CREDENTIAL_UNAVAILABLE',
        waitedMs,
        reply: {
          status: 502,
          decision: 'allow',
          stage: 'credentials',
          reason: 'credential',
          // CredentialError messages are written to be safe (source and cause, never the value).
          message: err instanceof FirmaError ? err.message : `the credential for ${formatAuthority(target)} could not be obtained`,
        },
      };
    }
  }
  return { ok: true, deadline, policy, credentials, waitedMs };
}

/** The outcome of a request the preflight refused. */
export function refusedOutcome(pre: Refused): DispatchOutcome {
  return {
    status: pre.reply.status,
    upstreamStatus: null,
    error: pre.error,
    errorCode: pre.errorCode,
    bytesIn: 0,
    bytesOut: 0,
    clientAborted: false,
    credentialInjected: false,
    waitedMs: pre.waitedMs,
    responseHash: null,
  };
}
