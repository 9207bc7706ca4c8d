import { close, fstatSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { errorCode } from '../core/errors.js';
import type { AuditWriteMetrics } from '../core/metrics.js';
import { GENESIS_HASH } from './chain.js';
import type { AuditEventBody } from './events.js';
import { Checkpointer, type AuditSignatures, type CheckpointBounds } from './checkpoint.js';
import { CommitWaiters } from './commit.js';
import { listRotated } from './files.js';
import { keyFingerprint, loadOrCreateAuditKeys } from './keys.js';
import { WritePace } from './write-pace.js';
import { closeAsync, fsyncAsync, keepWholeLines, LIVE_FILE_FLAGS, reopenLiveFile, rotateLiveFile, writeAsync, type LiveFile } from './live-file.js';
import { openApprovals } from './open-approvals.js';
import { RefusalTally } from './refusals.js';
import { resumeChain } from './resume.js';
import { ChainSealer } from './sealer.js';
import { createSigner, type HashSigner } from './signer.js';
import { repairDetail, type TornTail } from './torn-tail.js';
import { WriteQueue } from './write-queue.js';
import { AuditWriterError } from './writer-error.js';

export type AuditFsync = 'always' | 'interval' | 'never';

export interface AuditWriterOptions {
  /** Live file, e.g. audit/audit.jsonl; rotated files are `<path>.1` (oldest), `.2`, … (files.ts). */
  readonly path: string;
  readonly keyDir: string;
  /**
   * 'always': fsync after every batch, and `durable()` lets a caller wait for its event to be on disk
   * (group commit); 'interval': every `fsyncIntervalMs` (default 100); 'never': the OS decides. What a
   * crash can lose with each: docs/audit.md "Durability".
   */
  readonly fsync: AuditFsync;
  readonly fsyncIntervalMs?: number;
  /** Rotate before a write would make the live file larger than this (a single larger line goes alone). */
  readonly maxFileBytes: number;
  /** Called when writing fails (false, error) and when it works again (true). */
  readonly onStateChange?: (available: boolean, err?: unknown) => void;
  /** Batch write latency and failed attempts (`/metrics`). */
  readonly metrics?: AuditWriteMetrics;
  /** Each event signed, or by checkpoints (default; docs/audit.md "Checkpoints"). */
  readonly signatures?: AuditSignatures;
  readonly checkpointBounds?: CheckpointBounds; // tests only: sooner than the contract's 100 ms / 1,000 events
}

/** Bounds of what is held in memory while the disk refuses writes; past them `append` fails closed. */
export const AUDIT_QUEUE_MAX_EVENTS = 10_000;
export const AUDIT_QUEUE_MAX_BYTES = 16 * 1024 * 1024;
const RETRY_MS = 250;

const errCode = (err: unknown): string => errorCode(err) ?? 'EUNKNOWN';

/** What opening the log repaired before the chain went on (docs/audit.md "Torn last line", "Approvals in the log"). */
export interface AuditRecovery {
  readonly torn: readonly TornTail[];
  /** Approvals a previous run left open, now closed with `abandoned` events. */
  readonly abandoned: number;
}

/**
 * The single writer of the audit log. `append` decides the chain on the event loop, in call order
 * (sealer.ts). By default events are left unsigned and a signed checkpoint follows them within 100 ms
 * or 1,000 events (checkpoint.ts); with signatures "event" each gets its own Ed25519 signature from the
 * signer (signer.ts: a worker thread, or inline on one CPU). Lines join the write queue in order
 * (write-queue.ts); one async loop writes batches with `fs.write` to an O_APPEND fd, rotating the live
 * file when it is full (live-file.ts). On a write error the file is cut back to its last whole line,
 * the unwritten lines stay queued in order, `available` turns false, and the loop retries every 250 ms
 * (reopening the path) until a write succeeds, then logs `audit_recovered` with what the outage
 * refused (docs/audit.md "Fail closed"). With fsync "always", callers await `durable()` before
 * dispatching; one fsync per batch serves them all (commit.ts), and none waits for a checkpoint.
 */
export class AuditWriter {
  private avail = true;
  private closed = false;
  private readonly queue = new WriteQueue();
  private readonly sealer: ChainSealer;
  private readonly chain: Checkpointer; // every event is sealed through it
  private appendedSeq: number; // seq of the last event `append` took: `durable` waits for no checkpoint after it
  private running = false;
  private scheduled = false;
  private readonly pace = new WritePace();
  private syncDue = false;
  private lastError: unknown = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly syncTimer: NodeJS.Timeout | null = null;
  private idleWaiters: Array<() => void> = [];
  private failWaiters: Array<() => void> = [];
  private readonly commits: CommitWaiters;
  private readonly refusals = new RefusalTally();
  private readonly startSeq: number;
  /** What `open` repaired (torn last lines moved aside, approvals closed as abandoned). */
  recovery: AuditRecovery = { torn: [], abandoned: 0 };

  private constructor(
    private readonly opts: AuditWriterOptions,
    signer: HashSigner,
    start: { readonly seq: number; readonly head: string },
    private readonly live: LiveFile,
    /** The signing key's fingerprint (`keyFingerprint`), recorded in the start event. */
    readonly keyFingerprint: string,
  ) {
    this.sealer = new ChainSealer(signer, start, this.queue, () => this.kick());
    this.chain = new Checkpointer(this.sealer, {
      signatures: opts.signatures ?? 'checkpoint',
      maxFileBytes: opts.maxFileBytes,
      fileBytes: live.bytes,
      rotateAfter: (seq) => this.queue.rotateAfterLine(seq - start.seq),
      ...(opts.checkpointBounds !== undefined ? { bounds: opts.checkpointBounds } : {}),
    });
    this.startSeq = start.seq;
    this.appendedSeq = start.seq;
    this.commits = new CommitWaiters(start.seq);
    if (opts.fsync === 'interval') {
      this.syncTimer = setInterval(() => {
        if (this.live.dirty) {
          this.syncDue = true;
          this.kick();
        }
      }, opts.fsyncIntervalMs ?? 100);
      this.syncTimer.unref();
    }
  }

  /**
   * Opens (creating the key pair and file when missing) and resumes the chain from the newest file. A
   * torn last line is moved aside and recorded (`audit_repaired`), and approvals a killed run left open
   * are closed (`abandoned`), before anything else is appended (docs/audit.md). Before even those, events
   * a killed run left unsigned get a `recovered` checkpoint (docs/audit.md "Checkpoints").
   */
  static open(opts: AuditWriterOptions): AuditWriter {
    const keys = loadOrCreateAuditKeys(opts.keyDir);
    mkdirSync(dirname(opts.path), { recursive: true, mode: 0o700 });
    const rotated = listRotated(opts.path);
    const { tail, torn } = resumeChain(opts.path, rotated, keys.publicKey);
    const open = openApprovals([...rotated.map((r) => r.path), opts.path]);
    let fd: number;
    try {
      fd = openSync(opts.path, LIVE_FILE_FLAGS, 0o600);
    } catch (err: unknown) {
      throw new AuditWriterError('FIRMA_AUDIT_OPEN', `cannot open audit file ${opts.path} (${errCode(err)})`, { cause: err });
    }
    // Checkpoints sign ≤ ~10 hashes a second: inline (~20 µs each), no worker thread (docs/audit.md "Checkpoints").
    const signer = opts.signatures === 'event' ? createSigner(keys.privateKey) : createSigner(keys.privateKey, 1);
    const w = new AuditWriter(opts, signer, { seq: tail?.seq ?? 0, head: tail?.hash ?? GENESIS_HASH }, {
      fd,
      bytes: fstatSync(fd).size,
      dirty: false,
      nextRotation: (rotated[rotated.length - 1]?.n ?? 0) + 1,
    }, keyFingerprint(keys.publicKey));
    if (tail !== null && tail.unsignedFrom !== null) w.chain.recover(tail.unsignedFrom, tail.seq);
    for (const t of torn) {
      w.chain.seal({ type: 'lifecycle', event: 'audit_repaired', detail: repairDetail(t, tail?.seq ?? 0), request_id: null, agent_id: null });
    }
    for (const a of open) {
      w.chain.seal({
        type: 'approval',
        request_id: a.requestId,
        agent_id: a.agentId,
        approval_id: a.approvalId,
        action: 'abandoned',
        approver: null,
        reason: 'sidecar_restarted',
        grant: null,
      });
    }
    w.recovery = { torn, abandoned: open.length };
    return w;
  }

  /** False while events cannot be written: callers refuse requests (fail closed). */
  get available(): boolean {
    return this.avail;
  }
  /** `hash` of the last appended event (GENESIS_HASH for an empty log): anchor it elsewhere. */
  get headHash(): string {
    return this.sealer.headHash;
  }
  /** `seq` of the last appended event. */
  get seq(): number {
    return this.sealer.seq;
  }
  /** Checkpoints sealed so far by this writer (`recovered` ones included). */
  get checkpoints(): number {
    return this.chain.sealed;
  }
  /** Events appended but not yet written. */
  get pending(): number {
    return this.queue.length + this.sealer.sealing;
  }

  /**
   * Seals and queues one event. Never throws. Returns false — the event is NOT recorded and the caller
   * must refuse the request — after close, or when the queue is over its bounds (disk failing or too slow).
   */
  append(body: AuditEventBody): boolean {
    if (this.closed) return false;
    if (this.pending >= AUDIT_QUEUE_MAX_EVENTS || this.queue.bytes >= AUDIT_QUEUE_MAX_BYTES) {
      this.refusals.unrecordedEvent();
      return false;
    }
    // The queue had filled while the disk still worked (too slow): say so once it takes events again.
    if (this.avail && !this.refusals.empty) this.sealLifecycle('audit_recovered', `queue_full${this.refusals.take()}`);
    try {
      this.chain.seal(body);
      this.appendedSeq = this.sealer.seq;
      return true;
    } catch {
      // Only a body that cannot be serialised gets here (e.g. a BigInt from an untyped caller).
      return false;
    }
  }

  /** A request refused because the log could not take its events: counted into the next `audit_recovered`. */
  noteRefused(): void {
    this.refusals.request();
  }

  /**
   * With fsync "always": resolves true once every event appended so far is written and fsynced, false
   * if writing fails first (the caller must then not dispatch). One fsync settles every waiter it
   * covers (group commit). Null with "interval" or "never": there is nothing to wait for.
   */
  durable(): Promise<boolean> | null {
    if (this.opts.fsync !== 'always') return null;
    if (this.closed || !this.avail) return Promise.resolve(false);
    return this.commits.wait(this.appendedSeq);
  }

  /** Resolves once every event appended before the call is written and fsynced; waits through an outage. */
  flush(): Promise<void> {
    this.syncDue = true;
    const p = new Promise<void>((res) => this.idleWaiters.push(res));
    this.kick();
    if (!this.running && !this.scheduled && this.live.fd !== null && this.sealer.sealing === 0) this.resolveIdle();
    return p;
  }

  /** Flushes and closes. While unavailable it gives up and rejects, naming how many events were not written. */
  async close(): Promise<void> {
    // The last checkpoint, so a stopped sidecar's log ends signed.
    if (!this.closed) this.chain.close();
    this.closed = true;
    if (this.syncTimer !== null) clearInterval(this.syncTimer);
    if (this.avail) {
      // Wait for the queue to drain, or for a write failure (then waiting would never end).
      await new Promise<void>((res) => {
        this.failWaiters.push(res);
        void this.flush().then(res);
      });
    }
    if (!this.avail) {
      this.commits.failAll();
      if (this.retryTimer !== null) clearTimeout(this.retryTimer);
      this.retryTimer = null;
      await this.sealer.close();
      throw new AuditWriterError('FIRMA_AUDIT_UNAVAILABLE', `audit log unavailable (${errCode(this.lastError)}): ${this.pending} event(s) not written`, {
        cause: this.lastError,
      });
    }
    await this.sealer.close();
    const fd = this.live.fd;
    this.live.fd = null;
    if (fd !== null) await closeAsync(fd);
  }

  private kick(): void {
    if (this.running || this.scheduled || this.live.fd === null) return;
    this.scheduled = true;
    // setImmediate, not a direct call: appends made in the same tick are written as one batch.
    setImmediate(() => {
      this.scheduled = false;
      void this.run();
    });
  }

  private resolveIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Whether to let the queue fill a little longer (write-pace.ts); if so the next run is scheduled. */
  private coalescing(): boolean {
    const wait = this.pace.delay(this.queue.bytes, this.opts.fsync === 'always' || this.closed || this.idleWaiters.length > 0);
    if (wait === 0) return false;
    this.scheduled = true;
    setTimeout(() => {
      this.scheduled = false;
      void this.run();
    }, wait);
    return true;
  }

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (;;) {
        const fd = this.live.fd;
        if (fd === null) return;
        if (this.queue.length > 0) {
          if (this.coalescing()) return;
          const batch = this.queue.takeBatch(this.live.bytes, this.opts.maxFileBytes);
          if (batch === null) {
            await rotateLiveFile(this.opts.path, this.live, fd, this.opts.fsync !== 'never');
            this.queue.rotated();
            continue;
          }
          let off = 0;
          const started = performance.now();
          this.pace.wrote(started);
          try {
            while (off < batch.length) off += await writeAsync(fd, batch, off, batch.length - off);
          } catch (err: unknown) {
            off = await keepWholeLines(fd, batch, off, this.live.bytes);
            throw err;
          } finally {
            this.queue.consume(off);
            this.live.bytes += off;
            if (off > 0) this.live.dirty = true;
          }
          if (this.opts.fsync === 'always') {
            await fsyncAsync(fd);
            this.live.dirty = false;
            this.commits.settle(this.startSeq + this.queue.linesDone);
          }
          this.opts.metrics?.auditWritten((performance.now() - started) / 1000);
          if (!this.avail) this.recovered();
        } else if (this.syncDue) {
          this.syncDue = false;
          if (this.live.dirty && this.opts.fsync !== 'never') {
            this.live.dirty = false;
            await fsyncAsync(fd);
          }
        } else {
          // Events still being signed come back through kick(); idle only when nothing is on its way.
          if (this.sealer.sealing === 0) this.resolveIdle();
          return;
        }
      }
    } catch (err: unknown) {
      this.failed(err);
    } finally {
      this.running = false;
    }
  }

  private sealLifecycle(event: 'audit_failed' | 'audit_recovered', detail: string): void {
    this.chain.seal({ type: 'lifecycle', event, detail, request_id: null, agent_id: null });
  }

  private failed(err: unknown): void {
    this.lastError = err;
    this.commits.failAll();
    this.opts.metrics?.auditWriteFailed();
    const fd = this.live.fd;
    this.live.fd = null;
    if (fd !== null) close(fd, () => undefined);
    if (this.avail) {
      this.avail = false;
      // Recorded in the chain (written after recovery) so the outage's start is part of the log.
      this.sealLifecycle('audit_failed', errCode(err));
      this.opts.onStateChange?.(false, err);
    }
    const waiters = this.failWaiters;
    this.failWaiters = [];
    for (const w of waiters) w();
    if (!this.closed) this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== null || (this.closed && !this.avail)) return;
    // Not unref'd: queued events are pending work the process should stay alive for.
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.retry();
    }, RETRY_MS);
  }

  private async retry(): Promise<void> {
    try {
      await reopenLiveFile(this.opts.path, this.live);
    } catch (err: unknown) {
      this.lastError = err;
      this.opts.metrics?.auditWriteFailed();
      this.scheduleRetry();
      return;
    }
    await this.run();
  }

  private recovered(): void {
    this.avail = true;
    // What the outage cost: the requests refused and the events never queued, with the span (docs/audit.md "Fail closed").
    this.sealLifecycle('audit_recovered', `${errCode(this.lastError)}${this.refusals.take()}`);
    this.lastError = null;
    this.opts.onStateChange?.(true);
  }
}
