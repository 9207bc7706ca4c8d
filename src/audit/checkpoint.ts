import type { AuditEventBody, CheckpointBody } from './events.js';
import { ChainSealer } from './sealer.js';

/**
 * `[audit] signatures`: "checkpoint" (default) signs a checkpoint event now and then, whose hash chains
 * over every event before it; "event" signs every event (docs/audit.md "Checkpoints").
 */
export type AuditSignatures = 'checkpoint' | 'event';

/** The contract: a checkpoint follows any unsigned event within this long, or this many events. */
export const CHECKPOINT_MAX_DELAY_MS = 100;
export const CHECKPOINT_MAX_EVENTS = 1_000;
/**
 * Room kept at the end of a file for the checkpoint that ends it: more than any checkpoint line takes
 * (~430 bytes with 16-digit seqs; test/unit/audit/checkpoint.test.ts measures it).
 */
export const CHECKPOINT_LINE_RESERVE = 640;

/** Tests make checkpoints come sooner; the sidecar always uses the contract's bounds. */
export interface CheckpointBounds {
  readonly maxDelayMs?: number;
  readonly maxEvents?: number;
}

/** The checkpoint over the unsigned events `first..last`; `recovered`: signed at the next start, not when written. */
export function checkpointBody(first: number, last: number, recovered: boolean): CheckpointBody {
  const events = last - first + 1;
  const detail = `seq ${first}..${last} (${events} event${events === 1 ? '' : 's'})${recovered ? ', signed at recovery, not when written' : ''}`;
  return { type: 'lifecycle', event: 'checkpoint', request_id: null, agent_id: null, detail, first_seq: first, last_seq: last, events, recovered };
}

export interface CheckpointerOptions {
  readonly signatures: AuditSignatures;
  readonly maxFileBytes: number;
  /** Size of the live file at open. */
  readonly fileBytes: number;
  /** The live file must end after event `seq` (write-queue.ts `rotateAfterLine`). */
  readonly rotateAfter: (seq: number) => void;
  readonly bounds?: CheckpointBounds;
}

/**
 * How events are signed. With signatures "event" every event is sealed signed. With "checkpoint"
 * events are sealed unsigned — hashed and chained, no signing work at all — and one signed checkpoint
 * event (`lifecycle` `checkpoint`, checkpointBody) is sealed through the same chain
 * `CHECKPOINT_MAX_DELAY_MS` after the first unsigned event since the last one (one timer), or before
 * the `CHECKPOINT_MAX_EVENTS + 1`-th, or before the file would rotate (so every rotated file ends
 * signed), or at `close`; none when nothing is unsigned. To know when the file will rotate it follows
 * the size the live file will have once every sealed line is written (as the write queue does, plus
 * the room its checkpoint needs), and asks the queue to rotate right after the checkpoint.
 */
export class Checkpointer {
  /** First seq of the unsigned events since the last signature, and how many; 0 when none. */
  private first = 0;
  private count = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Bytes of the live file once every line sealed so far is written. */
  private projected: number;
  private readonly maxDelayMs: number;
  private readonly maxEvents: number;
  /** Checkpoints sealed, `recovered` ones included. */
  sealed = 0;

  constructor(
    private readonly sealer: ChainSealer,
    private readonly opts: CheckpointerOptions,
  ) {
    this.projected = opts.fileBytes;
    this.maxDelayMs = opts.bounds?.maxDelayMs ?? CHECKPOINT_MAX_DELAY_MS;
    this.maxEvents = opts.bounds?.maxEvents ?? CHECKPOINT_MAX_EVENTS;
  }

  /** Unsigned events not yet followed by a checkpoint. */
  get unsigned(): number {
    return this.count;
  }

  /** Seals one event; throws only for a body that cannot be serialised (the chain is then unchanged). */
  seal(body: AuditEventBody): void {
    if (this.opts.signatures === 'event') return this.sealer.seal(body, true);
    if (this.count >= this.maxEvents) this.checkpoint();
    let e = this.sealer.build(body);
    if (this.projected > 0 && this.projected + e.bytes + CHECKPOINT_LINE_RESERVE > this.opts.maxFileBytes) {
      // This event and the checkpoint after it would not both fit: end the file here, signed.
      this.checkpoint();
      this.opts.rotateAfter(this.sealer.seq);
      this.projected = 0;
      e = this.sealer.build(body);
    }
    this.sealer.commit(e, false);
    this.track(e.bytes);
    if (this.count === 0) {
      this.first = e.seq;
      // Referenced: an unsigned event is work the process should stay alive for (≤ maxDelayMs).
      this.timer = setTimeout(() => {
        this.timer = null;
        this.checkpoint();
      }, this.maxDelayMs);
    }
    this.count++;
  }

  /** Signs what is unsigned now with a checkpoint; nothing when nothing is. */
  checkpoint(): void {
    if (this.count === 0) return;
    this.sealCheckpoint(checkpointBody(this.first, this.sealer.seq, false));
  }

  /**
   * The first act of a writer on a log whose last events are unsigned (the run before was killed
   * before its checkpoint): a checkpoint over them that says they were signed now, at recovery.
   */
  recover(first: number, last: number): void {
    this.sealCheckpoint(checkpointBody(first, last, true));
  }

  /** The final checkpoint; no timer is left behind. */
  close(): void {
    this.checkpoint();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private sealCheckpoint(body: CheckpointBody): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const e = this.sealer.build(body);
    this.sealer.commit(e, true);
    this.track(ChainSealer.signedBytes(e));
    this.count = 0;
    this.first = 0;
    this.sealed++;
  }

  /** As the write queue decides: a line that would overflow a non-empty file starts the next one. */
  private track(bytes: number): void {
    this.projected = this.projected > 0 && this.projected + bytes > this.opts.maxFileBytes ? bytes : this.projected + bytes;
  }
}
