import { close, closeSync, constants, fstat, fstatSync, fsync, mkdirSync, open, openSync, readSync, rename, statSync, write } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { dirname } from 'node:path';
import { FirmaError } from '../core/errors.js';
import { canonicalEvent, chainHash, GENESIS_HASH } from './chain.js';
import { createSigner, type HashSigner } from './signer.js';
import type { AuditEvent, AuditEventBody } from './events.js';
import { listRotated, rotatedName } from './files.js';
import { loadOrCreateAuditKeys } from './keys.js';
import { sealProblem, shapeProblem } from './verify.js';
import type { AuditWriteMetrics } from '../core/metrics.js';

export type AuditFsync = 'always' | 'interval' | 'never';

export interface AuditWriterOptions {
  /** Live file, e.g. audit/audit.jsonl; rotated files are `<path>.1` (oldest), `.2`, … (files.ts). */
  readonly path: string;
  readonly keyDir: string;
  /**
   * 'always': fsync after every batch (a crash loses nothing that was written); 'interval': every
   * `fsyncIntervalMs` (default 100; a crash may lose up to that much); 'never': the OS decides.
   */
  readonly fsync: AuditFsync;
  readonly fsyncIntervalMs?: number;
  /** Rotate before a write would make the live file larger than this (a single larger line goes alone). */
  readonly maxFileBytes: number;
  /** Called when writing fails (false, error) and when it works again (true). */
  readonly onStateChange?: (available: boolean, err?: unknown) => void;
  /** Batch write latency and failed attempts (`/metrics`). */
  readonly metrics?: AuditWriteMetrics;
}

export class AuditWriterError extends FirmaError {
  constructor(code: 'FIRMA_AUDIT_CORRUPT' | 'FIRMA_AUDIT_OPEN' | 'FIRMA_AUDIT_UNAVAILABLE', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'AuditWriterError';
  }
}

/** Bounds of what is held in memory while the disk refuses writes; past them `append` fails closed. */
export const AUDIT_QUEUE_MAX_EVENTS = 10_000;
export const AUDIT_QUEUE_MAX_BYTES = 16 * 1024 * 1024;
const MAX_BATCH_BYTES = 1024 * 1024;
const RETRY_MS = 250;
const TAIL_BYTES = 1024 * 1024;
const OPEN_FLAGS = constants.O_APPEND | constants.O_CREAT | constants.O_WRONLY;

function errCode(err: unknown): string {
  const c = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof c === 'string' ? c : 'EUNKNOWN';
}

// Callback fs wrapped by hand: the fd-based API is what O_APPEND batching needs, and it keeps the types exact.
const writeAsync = (fd: number, buf: Buffer, off: number, len: number): Promise<number> =>
  new Promise((res, rej) => write(fd, buf, off, len, null, (err, n) => (err ? rej(err) : res(n))));
const fsyncAsync = (fd: number): Promise<void> => new Promise((res, rej) => fsync(fd, (err) => (err ? rej(err) : res())));
const closeAsync = (fd: number): Promise<void> => new Promise((res, rej) => close(fd, (err) => (err ? rej(err) : res())));
const renameAsync = (a: string, b: string): Promise<void> => new Promise((res, rej) => rename(a, b, (err) => (err ? rej(err) : res())));
const openAsync = (p: string): Promise<number> => new Promise((res, rej) => open(p, OPEN_FLAGS, 0o600, (err, fd) => (err ? rej(err) : res(fd))));
const sizeAsync = (fd: number): Promise<number> => new Promise((res, rej) => fstat(fd, (err, st) => (err ? rej(err) : res(st.size))));

function countLines(file: string): number {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 16);
    let lines = 0;
    for (let pos = 0; ; ) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) return lines;
      for (let i = 0; i < n; i++) if (buf[i] === 0x0a) lines++;
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads the last event of `file` to continue the chain. Any doubt about it (partial line, bad JSON, bad
 * hash or signature) refuses to open: silently starting a new chain would hide exactly the tampering or
 * loss the log exists to reveal.
 */
function readTail(file: string, publicKey: KeyObject): { seq: number; hash: string } | null {
  const fd = openSync(file, 'r');
  let text: string;
  let size: number;
  try {
    size = fstatSync(fd).size;
    if (size === 0) return null;
    const len = Math.min(size, TAIL_BYTES);
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const n = readSync(fd, buf, got, len - got, size - len + got);
      if (n === 0) break;
      got += n;
    }
    text = buf.subarray(0, got).toString('utf8');
  } finally {
    closeSync(fd);
  }
  const corrupt = (line: number, problem: string): never => {
    throw new AuditWriterError(
      'FIRMA_AUDIT_CORRUPT',
      `${file}:${line}: ${problem}; refusing to continue the audit chain — run "firma audit verify", then repair or move the file aside`,
    );
  };
  if (!text.endsWith('\n')) return corrupt(countLines(file) + 1, 'last line is incomplete (no newline)');
  const start = text.lastIndexOf('\n', text.length - 2) + 1;
  if (start === 0 && size > TAIL_BYTES) return corrupt(countLines(file), 'last line is longer than 1 MiB');
  const lineNo = countLines(file);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.slice(start, -1));
  } catch {
    return corrupt(lineNo, 'last line is not JSON');
  }
  const problem = shapeProblem(parsed) ?? sealProblem(parsed as AuditEvent, publicKey);
  if (problem !== null) return corrupt(lineNo, `last event: ${problem}`);
  const e = parsed as AuditEvent;
  return { seq: e.seq, hash: e.hash };
}

/**
 * The single writer of the audit log. `append` decides the chain on the event loop, in call order (seq,
 * ts, prev_hash, hash: ~10 µs) and hands the hash to the signer (signer.ts): a worker thread, so
 * Ed25519 (~40–100 µs an event) stays off the event loop and each request's critical path, or inline
 * when the process is confined to one CPU. Signed lines come back in order, batched, and join the write
 * queue; one async loop writes batches with `fs.write` to an O_APPEND fd. On a write error the
 * unwritten bytes stay queued in order, `available` turns false, and the loop retries every 250 ms
 * (reopening the path) until a write succeeds, then logs `audit_recovered`.
 */
export class AuditWriter {
  private seqN: number;
  private head: string;
  private avail = true;
  private closed = false;
  private fd: number | null;
  private fileBytes: number;
  private nextRotation: number;
  private readonly queue: Array<Buffer | undefined> = [];
  /** Sealed events waiting for their signature: the line up to `"sig":"`, and the 32-byte hashes. */
  private unsignedLines: string[] = [];
  private unsignedHashes: Buffer[] = [];
  private signScheduled = false;
  /** Events sealed but not yet in `queue` (unsigned, or being signed). */
  private sealing = 0;
  private qStart = 0;
  /** Bytes of queue[qStart] already written (a short write never loses or duplicates a byte). */
  private headOffset = 0;
  private queuedBytes = 0;
  private running = false;
  private scheduled = false;
  private dirty = false;
  private syncDue = false;
  private lastError: unknown = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly syncTimer: NodeJS.Timeout | null = null;
  private idleWaiters: Array<() => void> = [];
  private failWaiters: Array<() => void> = [];

  private constructor(
    private readonly opts: AuditWriterOptions,
    private readonly signer: HashSigner,
    state: { seq: number; head: string; fd: number; fileBytes: number; nextRotation: number },
  ) {
    this.seqN = state.seq;
    this.head = state.head;
    this.fd = state.fd;
    this.fileBytes = state.fileBytes;
    this.nextRotation = state.nextRotation;
    if (opts.fsync === 'interval') {
      this.syncTimer = setInterval(() => {
        if (this.dirty) {
          this.syncDue = true;
          this.kick();
        }
      }, opts.fsyncIntervalMs ?? 100);
      this.syncTimer.unref();
    }
  }

  /** Opens (creating the key pair and file when missing) and resumes the chain from the newest file. */
  static open(opts: AuditWriterOptions): AuditWriter {
    const keys = loadOrCreateAuditKeys(opts.keyDir);
    mkdirSync(dirname(opts.path), { recursive: true, mode: 0o700 });
    const rotated = listRotated(opts.path);
    // Newest first: the live file, then rotated files from the highest number (empty ones are skipped).
    const candidates = [opts.path, ...rotated.map((r) => r.path).reverse()];
    let tail: { seq: number; hash: string } | null = null;
    for (const file of candidates) {
      let regular = false;
      try {
        regular = statSync(file).isFile();
      } catch {
        // Missing live file: fall through to the rotated ones.
      }
      if (!regular) continue; // e.g. a device such as /dev/full: nothing to resume from
      tail = readTail(file, keys.publicKey);
      if (tail !== null) break;
    }
    let fd: number;
    try {
      fd = openSync(opts.path, OPEN_FLAGS, 0o600);
    } catch (err: unknown) {
      throw new AuditWriterError('FIRMA_AUDIT_OPEN', `cannot open audit file ${opts.path} (${errCode(err)})`, { cause: err });
    }
    return new AuditWriter(opts, createSigner(keys.privateKey), {
      seq: tail?.seq ?? 0,
      head: tail?.hash ?? GENESIS_HASH,
      fd,
      fileBytes: fstatSync(fd).size,
      nextRotation: (rotated[rotated.length - 1]?.n ?? 0) + 1,
    });
  }

  /** False while events cannot be written: callers refuse requests (fail closed). */
  get available(): boolean {
    return this.avail;
  }
  /** `hash` of the last appended event (GENESIS_HASH for an empty log): anchor it elsewhere. */
  get headHash(): string {
    return this.head;
  }
  /** `seq` of the last appended event. */
  get seq(): number {
    return this.seqN;
  }
  /** Events appended but not yet written. */
  get pending(): number {
    return this.queue.length - this.qStart + this.sealing;
  }

  /**
   * Seals and queues one event. Never throws. Returns false — the event is NOT recorded and the caller
   * must refuse the request — after close, or when the queue is over its bounds (disk failing or too slow).
   */
  append(body: AuditEventBody): boolean {
    if (this.closed) return false;
    if (this.pending >= AUDIT_QUEUE_MAX_EVENTS || this.queuedBytes >= AUDIT_QUEUE_MAX_BYTES) return false;
    try {
      this.seal(body);
      return true;
    } catch {
      // Only a body that cannot be serialised gets here (e.g. a BigInt from an untyped caller).
      return false;
    }
  }

  private seal(body: AuditEventBody): void {
    const seq = this.seqN + 1;
    const prev = this.head;
    const canonical = canonicalEvent(body as unknown as Readonly<Record<string, unknown>>, { v: 1, seq, ts: new Date().toISOString(), prev_hash: prev });
    const hash = chainHash(prev, canonical);
    // The line is the canonical text plus hash and sig; the verifier re-canonicalises, so key order here is free.
    this.unsignedLines.push(`${canonical.slice(0, -1)},"hash":"${hash}","sig":"`);
    this.unsignedHashes.push(Buffer.from(hash, 'hex'));
    this.seqN = seq;
    this.head = hash;
    this.sealing++;
    if (!this.signScheduled) {
      this.signScheduled = true;
      // setImmediate: the events sealed in this tick go to the signer as one batch.
      setImmediate(() => this.signBatch());
    }
  }

  private signBatch(): void {
    this.signScheduled = false;
    const lines = this.unsignedLines;
    const hashes = this.unsignedHashes;
    this.unsignedLines = [];
    this.unsignedHashes = [];
    if (lines.length === 0) return;
    this.signer.sign(Buffer.concat(hashes, hashes.length * 32), (sigs) => {
      for (let i = 0; i < lines.length; i++) {
        const buf = Buffer.from(`${lines[i] as string}${sigs.toString('base64', i * 64, i * 64 + 64)}"}\n`, 'utf8');
        this.queue.push(buf);
        this.queuedBytes += buf.length;
      }
      this.sealing -= lines.length;
      this.kick();
    });
  }

  /** Resolves once every event appended before the call is written and fsynced; waits through an outage. */
  flush(): Promise<void> {
    this.syncDue = true;
    const p = new Promise<void>((res) => this.idleWaiters.push(res));
    this.kick();
    if (!this.running && !this.scheduled && this.fd !== null && this.sealing === 0) this.resolveIdle();
    return p;
  }

  /** Flushes and closes. While unavailable it gives up and rejects, naming how many events were not written. */
  async close(): Promise<void> {
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
      if (this.retryTimer !== null) clearTimeout(this.retryTimer);
      this.retryTimer = null;
      await this.signer.close();
      throw new AuditWriterError('FIRMA_AUDIT_UNAVAILABLE', `audit log unavailable (${errCode(this.lastError)}): ${this.pending} event(s) not written`, {
        cause: this.lastError,
      });
    }
    await this.signer.close();
    const fd = this.fd;
    this.fd = null;
    if (fd !== null) await closeAsync(fd);
  }

  private kick(): void {
    if (this.running || this.scheduled || this.fd === null) return;
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

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (;;) {
        const fd = this.fd;
        if (fd === null) return;
        if (this.queue.length > this.qStart) {
          const batch = this.takeBatch();
          if (batch === null) {
            await this.rotate(fd);
            continue;
          }
          let off = 0;
          const started = performance.now();
          try {
            while (off < batch.length) off += await writeAsync(fd, batch, off, batch.length - off);
          } finally {
            this.consume(off);
            this.fileBytes += off;
            if (off > 0) this.dirty = true;
          }
          if (this.opts.fsync === 'always') await fsyncAsync(fd);
          this.opts.metrics?.auditWritten((performance.now() - started) / 1000);
          if (!this.avail) this.recovered();
        } else if (this.syncDue) {
          this.syncDue = false;
          if (this.dirty && this.opts.fsync !== 'never') {
            this.dirty = false;
            await fsyncAsync(fd);
          }
        } else {
          // Events still being signed come back through kick(); idle only when nothing is on its way.
          if (this.sealing === 0) this.resolveIdle();
          return;
        }
      }
    } catch (err: unknown) {
      this.failed(err);
    } finally {
      this.running = false;
    }
  }

  /** Up to 1 MiB of queued lines that fit in the live file; null when the file must rotate first. */
  private takeBatch(): Buffer | null {
    const parts: Buffer[] = [];
    let size = 0;
    for (let i = this.qStart; i < this.queue.length; i++) {
      const whole = this.queue[i];
      if (whole === undefined) break;
      const b = i === this.qStart && this.headOffset > 0 ? whole.subarray(this.headOffset) : whole;
      const overflows = this.fileBytes + size + b.length > this.opts.maxFileBytes;
      if (parts.length === 0) {
        // A partly written line must be finished in the same file; an over-large line goes alone.
        if (overflows && this.headOffset === 0 && this.fileBytes > 0) return null;
      } else if (overflows || size + b.length > MAX_BATCH_BYTES) {
        break;
      }
      parts.push(b);
      size += b.length;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size);
  }

  private consume(written: number): void {
    let n = written;
    while (n > 0) {
      const b = this.queue[this.qStart];
      if (b === undefined) break;
      const rest = b.length - this.headOffset;
      if (n < rest) {
        this.headOffset += n;
        return;
      }
      n -= rest;
      this.queuedBytes -= b.length;
      this.queue[this.qStart] = undefined;
      this.qStart++;
      this.headOffset = 0;
    }
    if (this.qStart > 4096 && this.qStart * 2 > this.queue.length) {
      this.queue.splice(0, this.qStart);
      this.qStart = 0;
    }
  }

  /** `<path>` → `<path>.<n>` (one rename), then a fresh live file; the chain simply continues in it. */
  private async rotate(fd: number): Promise<void> {
    if (this.opts.fsync !== 'never') await fsyncAsync(fd);
    this.fd = null;
    await closeAsync(fd);
    await renameAsync(this.opts.path, rotatedName(this.opts.path, this.nextRotation));
    this.nextRotation++;
    this.dirty = false;
    const nfd = await openAsync(this.opts.path);
    this.fd = nfd;
    this.fileBytes = await sizeAsync(nfd);
  }

  private failed(err: unknown): void {
    this.lastError = err;
    this.opts.metrics?.auditWriteFailed();
    const fd = this.fd;
    this.fd = null;
    if (fd !== null) close(fd, () => undefined);
    if (this.avail) {
      this.avail = false;
      // Recorded in the chain (written after recovery) so the outage's start is part of the log.
      this.seal({ type: 'lifecycle', event: 'audit_failed', detail: errCode(err), request_id: null, agent_id: null });
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
      const fd = await openAsync(this.opts.path);
      this.fd = fd;
      this.fileBytes = await sizeAsync(fd);
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
    this.seal({ type: 'lifecycle', event: 'audit_recovered', detail: errCode(this.lastError), request_id: null, agent_id: null });
    this.lastError = null;
    this.opts.onStateChange?.(true);
  }
}
