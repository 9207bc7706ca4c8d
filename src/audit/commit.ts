/**
 * Group commit for `[audit] fsync = "always"` (docs/audit.md "Durability"): a caller that must not go on
 * before its event is on disk waits for the seq it was given; one fsync settles every waiter whose event
 * it covers, so a burst of requests shares one fsync instead of paying one each.
 */
export class CommitWaiters {
  /** Ordered by seq: events are sealed, written and fsynced in seq order. */
  private waiters: Array<{ readonly seq: number; readonly done: (ok: boolean) => void }> = [];
  /** Highest seq known to be written and fsynced. */
  private durableSeq: number;

  constructor(startSeq: number) {
    this.durableSeq = startSeq;
  }

  get durable(): number {
    return this.durableSeq;
  }

  /** Resolves true once event `seq` is fsynced, false if writing fails first (the caller fails closed). */
  wait(seq: number): Promise<boolean> {
    if (seq <= this.durableSeq) return Promise.resolve(true);
    return new Promise<boolean>((done) => this.waiters.push({ seq, done }));
  }

  /** Every event up to `seq` is fsynced. */
  settle(seq: number): void {
    if (seq > this.durableSeq) this.durableSeq = seq;
    let n = 0;
    while (n < this.waiters.length && (this.waiters[n]?.seq ?? Infinity) <= this.durableSeq) n++;
    if (n === 0) return;
    const ready = this.waiters.splice(0, n);
    for (const w of ready) w.done(true);
  }

  /** Writing failed: nobody waiting can be told their event is on disk. */
  failAll(): void {
    const all = this.waiters;
    this.waiters = [];
    for (const w of all) w.done(false);
  }
}
