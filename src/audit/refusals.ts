/**
 * What the log misses while it cannot be written (docs/audit.md "Fail closed"): the requests refused
 * with `audit_unavailable` and the events the writer could not even queue, with the time span. The
 * `audit_recovered` event carries the tally, so the log itself says how much is missing and when.
 */
export class RefusalTally {
  private requests = 0;
  private unrecorded = 0;
  private first: string | null = null;
  private last: string | null = null;

  get empty(): boolean {
    return this.requests === 0 && this.unrecorded === 0;
  }

  /** A request refused because its events could not be recorded (503 `audit_unavailable`). */
  request(): void {
    this.requests++;
    this.touch();
  }

  /** An event refused by the writer (its queue over bounds, or closed): not in the log at all. */
  unrecordedEvent(): void {
    this.unrecorded++;
    this.touch();
  }

  /** ` refused_requests=N unrecorded_events=M first_refused=… last_refused=…` (empty when nothing was refused); resets. */
  take(): string {
    if (this.empty) return '';
    const text = ` refused_requests=${this.requests} unrecorded_events=${this.unrecorded} first_refused=${this.first ?? ''} last_refused=${this.last ?? ''}`;
    this.requests = 0;
    this.unrecorded = 0;
    this.first = null;
    this.last = null;
    return text;
  }

  private touch(): void {
    const now = new Date().toISOString();
    this.first ??= now;
    this.last = now;
  }
}
