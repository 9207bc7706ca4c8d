/** Most bytes handed to one write call. */
const MAX_BATCH_BYTES = 1024 * 1024;

/**
 * Signed lines waiting to be written, in order. A write that fails or comes back short keeps the
 * unwritten bytes at the head: the writer cuts the file back to its last whole line and consumes only
 * whole lines, so the next batch starts exactly where the file ends and no byte is lost or duplicated
 * (when the cut itself fails, the next batch finishes the partly written line instead).
 */
export class WriteQueue {
  private readonly lines: Array<Buffer | undefined> = [];
  private start = 0;
  /** Bytes of lines[start] already written. */
  private headOffset = 0;
  private queuedBytes = 0;
  private done = 0;
  /** Line numbers (1-based, counted like `linesDone`) after which the file must rotate, ascending. */
  private readonly rotateAfter: number[] = [];

  /** Lines not yet written in full. */
  get length(): number {
    return this.lines.length - this.start;
  }
  /** Lines written in full since the queue was made (the writer turns it into a seq). */
  get linesDone(): number {
    return this.done;
  }
  /** Their size in bytes (whole lines, counting a partly written one in full). */
  get bytes(): number {
    return this.queuedBytes;
  }

  /**
   * The live file is to end after line `n` (counted like `linesDone`; in checkpoint mode, a checkpoint
   * sealed for the rotation: checkpoint.ts): `takeBatch` stops there and then asks for the rotation.
   */
  rotateAfterLine(n: number): void {
    this.rotateAfter.push(n);
  }

  /** The rotation asked for is done. */
  rotated(): void {
    if (this.rotateAfter[0] !== undefined && this.rotateAfter[0] <= this.done) this.rotateAfter.shift();
  }

  push(line: Buffer): void {
    this.lines.push(line);
    this.queuedBytes += line.length;
  }

  /**
   * Up to 1 MiB of queued lines that fit in a live file of `fileBytes` kept under `maxFileBytes`;
   * null when the file must rotate first.
   */
  takeBatch(fileBytes: number, maxFileBytes: number): Buffer | null {
    const parts: Buffer[] = [];
    let size = 0;
    const mark = this.rotateAfter[0];
    if (mark !== undefined && mark <= this.done && this.headOffset === 0) {
      if (fileBytes > 0) return null;
      this.rotateAfter.shift(); // the file is empty already
    }
    const next = this.rotateAfter[0];
    // A mark already passed (only a partly written line can be ahead of it) never holds the queue back.
    const upTo = next === undefined || next <= this.done ? this.lines.length : Math.min(this.lines.length, this.start + (next - this.done));
    for (let i = this.start; i < upTo; i++) {
      const whole = this.lines[i];
      if (whole === undefined) break;
      const b = i === this.start && this.headOffset > 0 ? whole.subarray(this.headOffset) : whole;
      const overflows = fileBytes + size + b.length > maxFileBytes;
      if (parts.length === 0) {
        // A partly written line must be finished in the same file; an over-large line goes alone.
        if (overflows && this.headOffset === 0 && fileBytes > 0) return null;
      } else if (overflows || size + b.length > MAX_BATCH_BYTES) {
        break;
      }
      parts.push(b);
      size += b.length;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size);
  }

  /** Drops the `written` bytes at the head of the queue. */
  consume(written: number): void {
    let n = written;
    while (n > 0) {
      const b = this.lines[this.start];
      if (b === undefined) break;
      const rest = b.length - this.headOffset;
      if (n < rest) {
        this.headOffset += n;
        return;
      }
      n -= rest;
      this.queuedBytes -= b.length;
      this.lines[this.start] = undefined;
      this.start++;
      this.done++;
      this.headOffset = 0;
    }
    if (this.start > 4096 && this.start * 2 > this.lines.length) {
      this.lines.splice(0, this.start);
      this.start = 0;
    }
  }
}
