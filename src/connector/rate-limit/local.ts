import { GRANTED_NOW, UNAVAILABLE, unknownBucket, type Acquired, type BucketLimit, type RateLimiter } from './types.js';

/**
 * Local token buckets: the limiter when `[redis] url` is "", and the shared limiter's fallback.
 *
 * `burst` tokens refilled continuously at `rps`, computed lazily from the clock, so a request that
 * finds a token costs one Map lookup, a clock read and some arithmetic (well under 1 µs awaited, see
 * bench/limiter.mjs). A request without a token waits in a per-bucket FIFO, served by one timer armed
 * for the head only; it is admitted to the queue only if its turn, projected from the refill rate and
 * the waiters ahead of it, comes before its deadline — otherwise it is refused at once. Tokens are
 * counted at the moment they are handed out, so timer lateness can delay grants but never lets more
 * than `burst + rps·T` through in any window of T seconds.
 */

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
    for (let i = this.#head; i < this.#queue.length; i++) this.#queue[i]!.resolve(UNAVAILABLE);
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
