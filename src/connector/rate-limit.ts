/**
 * Per-host token buckets for the connector (issue 3 §2).
 *
 * Local mode (no `[redis] url`): `burst` tokens refilled continuously at `rps`, computed lazily from
 * the clock, so a request that finds a token costs one Map lookup, a clock read and some arithmetic
 * (well under 1 µs awaited, see bench/limiter.mjs). A request without a token waits in a per-bucket FIFO, served by
 * one timer armed for the head only; it is admitted to the queue only if its turn, projected from the
 * refill rate and the waiters ahead of it, comes before its deadline — otherwise it is refused at once.
 * Tokens are counted at the moment they are handed out, so timer lateness can delay grants but never
 * lets more than `burst + rps·T` through in any window of T seconds.
 *
 * Shared mode (`[redis] url` set) lives in rate-limit-redis.ts: an atomic GCRA token bucket in one Lua
 * script per acquire instead of bottleneck's ioredis datastore, for the measured reasons given at the
 * top of that file.
 */
import { FirmaError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { FirmaConfig } from '../config/index.js';
import type { UpstreamHostKey } from '../config/validators.js';
import { RedisRateLimiter } from './rate-limit-redis.js';

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

/** The bucket key of a configured host: `host` without a port, `host:port` with one (as HostPolicies). */
export function bucketKey(host: UpstreamHostKey): string {
  return host.port === null ? host.host : `${host.host}:${host.port}`;
}

/** The buckets config entries define; entries without `rps` have no limit and no bucket. */
export function bucketsFromHosts(hosts: readonly HostLimitConfig[]): BucketLimit[] {
  const out: BucketLimit[] = [];
  for (const h of hosts) {
    if (h.rps === undefined) continue;
    out.push({ bucket: bucketKey(h.host), rps: h.rps, burst: h.burst ?? h.rps });
  }
  return out;
}

/**
 * The limiter for a validated config: local buckets when `redis.url` is "", else shared through Redis
 * (with local buckets as the `on_error = "local"` fallback). Accepts the raw config entries or
 * already-resolved buckets (e.g. `HostPolicies.buckets()`), which name buckets the same way.
 */
export function createRateLimiter(
  hosts: Iterable<HostLimitConfig | BucketLimit>,
  redis: RedisLimitConfig,
  opts: RateLimiterOptions = {},
): RateLimiter {
  const limits = new Map<string, BucketLimit>();
  for (const h of hosts) {
    const limit = 'bucket' in h ? h : bucketsFromHosts([h])[0];
    if (limit === undefined) continue;
    if (!(limit.rps > 0 && limit.burst >= 1)) {
      throw new FirmaError('FIRMA_RATE_LIMIT_CONFIG', `bucket ${limit.bucket}: rps must be > 0 and burst >= 1`);
    }
    limits.set(limit.bucket, limit);
  }
  const local = new LocalRateLimiter(limits.values(), opts.now);
  if (redis.url === '') return local;
  return new RedisRateLimiter(limits, redis, { local, ...(opts.log !== undefined ? { log: opts.log } : {}) });
}

function unknownBucket(bucket: string): FirmaError {
  return new FirmaError('FIRMA_RATE_LIMIT_UNKNOWN_BUCKET', `no rate limit is configured for bucket ${JSON.stringify(bucket)}`);
}

/** Results without per-call data are shared: the fast path allocates nothing but its promise. */
const GRANTED_NOW: Acquired = Object.freeze({ ok: true, waitedMs: 0 });
const CLOSED: Acquired = Object.freeze({ ok: false, reason: 'limiter_unavailable', retryAfterMs: 1000 });

/**
 * A token may be counted as 0.9999999… when it is due "exactly now" (floating point); treat that as a
 * whole token rather than spinning another 1 ms timer. The excess is a few nanoseconds of rate.
 */
const EPSILON = 1e-9;

interface Waiter {
  readonly since: number;
  readonly resolve: (a: Acquired) => void;
}

/** One token bucket with its FIFO of waiters. */
export class LocalBucket {
  readonly limit: BucketLimit;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #tokens: number;
  #last: number;
  // Array + head index: O(1) dequeue without shift(); compacted when the head passes half the array.
  #queue: Waiter[] = [];
  #head = 0;
  #timer: NodeJS.Timeout | null = null;
  readonly #onTimer = (): void => this.#drain();

  constructor(limit: BucketLimit, now: () => number) {
    this.limit = limit;
    this.#intervalMs = 1000 / limit.rps;
    this.#now = now;
    this.#tokens = limit.burst;
    this.#last = now();
  }

  acquire(deadline: number): Promise<Acquired> | Acquired {
    const t = this.#now();
    const tokens = Math.min(this.limit.burst, this.#tokens + (t - this.#last) / this.#intervalMs);
    this.#tokens = tokens;
    this.#last = t;
    const waiting = this.#queue.length - this.#head;
    // Waiters ahead keep their place: a newcomer never takes the token the head is waiting for.
    if (waiting === 0 && tokens >= 1 - EPSILON) {
      this.#tokens = tokens - 1;
      return GRANTED_NOW;
    }
    // The (waiting + 1)-th token from now is this request's; nothing else consumes tokens while the
    // queue is non-empty, so this projection only ever gets earlier (timer lateness aside).
    const readyAt = t + (waiting + 1 - tokens) * this.#intervalMs;
    if (readyAt > deadline) {
      return { ok: false, reason: 'rate_limited', retryAfterMs: Math.max(1, Math.ceil(readyAt - t)) };
    }
    return new Promise<Acquired>((resolve) => {
      this.#queue.push({ since: t, resolve });
      if (this.#timer === null) this.#arm();
    });
  }

  /** Grant every waiter a token is there for, then re-arm for the next head. */
  #drain(): void {
    this.#timer = null;
    const t = this.#now();
    let tokens = Math.min(this.limit.burst, this.#tokens + (t - this.#last) / this.#intervalMs);
    this.#last = t;
    while (this.#head < this.#queue.length && tokens >= 1 - EPSILON) {
      const w = this.#queue[this.#head]!;
      this.#queue[this.#head] = undefined as unknown as Waiter; // release for GC
      this.#head++;
      tokens -= 1;
      // Admission guaranteed this token was due before the waiter's deadline; being served a little
      // after it (a late timer under load) is still the waiter's turn, so it is granted, not refused.
      w.resolve({ ok: true, waitedMs: t - w.since });
    }
    this.#tokens = tokens;
    if (this.#head >= this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
      return;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    this.#arm();
  }

  #arm(): void {
    const delay = (1 - this.#tokens) * this.#intervalMs;
    // Node timers have 1 ms granularity and may fire up to ~1 ms early against performance.now();
    // rounding up avoids most early wake-ups (an early one just re-arms for the remainder).
    this.#timer = setTimeout(this.#onTimer, Math.max(1, Math.ceil(delay)));
  }

  /** Waiters currently queued (for metrics and tests). */
  get queued(): number {
    return this.#queue.length - this.#head;
  }

  close(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    for (let i = this.#head; i < this.#queue.length; i++) this.#queue[i]!.resolve(CLOSED);
    this.#queue = [];
    this.#head = 0;
  }
}

/** In-memory buckets, one per configured host. */
export class LocalRateLimiter implements RateLimiter {
  readonly #buckets = new Map<string, LocalBucket>();

  constructor(limits: Iterable<BucketLimit>, now: () => number = () => performance.now()) {
    for (const l of limits) this.#buckets.set(l.bucket, new LocalBucket(l, now));
  }

  acquire(bucket: string, deadline: number): Promise<Acquired> {
    const b = this.#buckets.get(bucket);
    if (b === undefined) return Promise.reject(unknownBucket(bucket));
    const got = b.acquire(deadline);
    return got instanceof Promise ? got : Promise.resolve(got);
  }

  limitFor(bucket: string): BucketLimit | null {
    return this.#buckets.get(bucket)?.limit ?? null;
  }

  /** Waiters queued on `bucket` (0 for unknown buckets). */
  queued(bucket: string): number {
    return this.#buckets.get(bucket)?.queued ?? 0;
  }

  ready(): Promise<boolean> {
    return Promise.resolve(true);
  }

  close(): Promise<void> {
    for (const b of this.#buckets.values()) b.close();
    return Promise.resolve();
  }
}
