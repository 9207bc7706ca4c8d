import { FirmaError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { FirmaConfig } from '../../config/index.js';

/**
 * What every rate limiter offers the connector (local buckets in local.ts, shared ones through Redis in
 * redis.ts; create.ts picks one from the config, docs/configuration.md), and the answers both give.
 */

export type Acquired =
  | { readonly ok: true; readonly waitedMs: number }
  | { readonly ok: false; readonly reason: 'rate_limited' | 'limiter_unavailable'; readonly retryAfterMs: number };

export interface BucketLimit {
  /** Bucket key: `host` or `host:port` exactly as the config entry was keyed (see `bucketKey`). */
  readonly bucket: string;
  readonly rps: number;
  readonly burst: number;
}

export interface RateLimiter {
  /**
   * Take one token from `bucket`, waiting at most until `deadline` (a `performance.now()` timestamp).
   * Never rejects for a known bucket; an unknown bucket is a programming error and rejects with
   * `FIRMA_RATE_LIMIT_UNKNOWN_BUCKET` (fail closed rather than silently unlimited).
   */
  acquire(bucket: string, deadline: number): Promise<Acquired>;
  /** The bucket's limits, or null when no host maps to it (the host is not rate limited). */
  limitFor(bucket: string): BucketLimit | null;
  /** True once requests are limited the configured way: at once locally, when Redis answers if shared. */
  ready(): Promise<boolean>;
  /** Stop timers and connections; waiters still queued get `limiter_unavailable`. */
  close(): Promise<void>;
}

export interface RateLimiterOptions {
  /** For Redis state changes (down / back); nothing is logged per request. */
  readonly log?: Logger;
  /** Clock in ms on the `performance.now()` scale; injectable for tests. */
  readonly now?: () => number;
}

/** One `[[sidecar.connector.hosts]]` entry as validated by the config. */
export type HostLimitConfig = FirmaConfig['sidecar']['connector']['hosts'][number];
export type RedisLimitConfig = FirmaConfig['redis'];

/** Results without per-call data are shared: the fast path allocates nothing but its promise. */
export const GRANTED_NOW: Acquired = Object.freeze({ ok: true, waitedMs: 0 });
/** The limiter is closed, or (shared, on_error = "deny") Redis cannot be reached. */
export const UNAVAILABLE: Acquired = Object.freeze({ ok: false, reason: 'limiter_unavailable', retryAfterMs: 1000 });

/** An acquire for a bucket no host maps to: a programming error, refused (fail closed). */
export function unknownBucket(bucket: string): FirmaError {
  return new FirmaError('FIRMA_RATE_LIMIT_UNKNOWN_BUCKET', `no rate limit is configured for bucket ${JSON.stringify(bucket)}`);
}
