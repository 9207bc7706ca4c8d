import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import type { AuditEvent } from './events.js';
import { moveTornTail, type TornTail } from './torn-tail.js';
import { isCheckpoint, sealProblem, shapeProblem } from './verify.js';
import { AuditWriterError } from './writer-error.js';

const TAIL_BYTES = 1024 * 1024;

/** Where an existing log's chain stands: the last event's `seq` and `hash`. */
export interface ChainTail {
  readonly seq: number;
  readonly hash: string;
  /**
   * The first of the unsigned events the log ends with (`unsignedFrom..seq`: a run killed before its
   * checkpoint, docs/audit.md "Checkpoints"), or null when its last event is signed.
   */
  readonly unsignedFrom: number | null;
}

const corruptError = (file: string, line: number, problem: string): AuditWriterError =>
  new AuditWriterError('FIRMA_AUDIT_CORRUPT', `${file}:${line}: ${problem}; refusing to continue the audit chain — run "firma audit verify", then repair or move the file aside`);

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
 * Reads the last event of `file` to continue the chain. A torn last line (no newline) was moved aside
 * before (torn-tail.ts); any doubt about the last complete one (bad JSON, bad hash or signature) refuses
 * to open: silently starting a new chain would hide exactly the tampering or loss the log exists to reveal.
 */
function readTail(file: string, publicKey: KeyObject): AuditEvent | null {
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
    throw corruptError(file, line, problem);
  };
  // moveTornTail ran first, so this is a file that changed under us: refuse rather than guess.
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
  return parsed as AuditEvent;
}

/** The complete lines of `file` (which ends with a newline), last first, read in 1 MiB chunks. */
function* linesBackward(fd: number, size: number): Generator<string> {
  const buf = Buffer.allocUnsafe(TAIL_BYTES);
  let rest: Buffer = Buffer.alloc(0);
  for (let pos = size - 1; pos > 0; ) {
    const start = Math.max(0, pos - TAIL_BYTES);
    const n = readSync(fd, buf, 0, pos - start, start);
    pos = start;
    const data = Buffer.concat([buf.subarray(0, n), rest]);
    let end = data.length;
    for (let i = end > 0 ? data.lastIndexOf(0x0a, end - 1) : -1; i >= 0; i = end > 0 ? data.lastIndexOf(0x0a, end - 1) : -1) {
      yield data.subarray(i + 1, end).toString('utf8');
      end = i;
    }
    rest = data.subarray(0, end);
    if (pos === 0) yield rest.toString('utf8');
  }
}

/**
 * Reads the log back from its last event (already checked by readTail) to the last signature before
 * it, checking each line's hash and its link to the next: an unsigned tail (a run killed before its
 * checkpoint), or the events the last checkpoint signs, are checked as the last event is, so any doubt
 * about them refuses to open too, and a recovery checkpoint signs only a chain that goes back unbroken to
 * a signature. Returns the first seq of the unsigned tail, or null when the log ends signed. `files`:
 * newest first, the one holding the last event first.
 */
function scanBack(files: readonly string[], publicKey: KeyObject, last: AuditEvent): number | null {
  if (last.sig !== undefined && !isCheckpoint(last)) return null; // signed on its own: nothing before it to check
  let later: AuditEvent | null = null;
  for (const file of files) {
    const fd = openSync(file, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size === 0) continue;
      const end = Buffer.alloc(1);
      readSync(fd, end, 0, 1, size - 1);
      if (end[0] !== 0x0a) throw corruptError(file, countLines(file) + 1, 'last line is incomplete (no newline)');
      let back = 0;
      for (const text of linesBackward(fd, size)) {
        const where = (): number => countLines(file) - back;
        let e: AuditEvent;
        try {
          e = JSON.parse(text) as AuditEvent;
        } catch {
          throw corruptError(file, where(), 'not JSON');
        }
        const problem = shapeProblem(e) ?? sealProblem(e, publicKey);
        if (problem !== null) throw corruptError(file, where(), `${problem} (one of the last events, after the last signature)`);
        if (later !== null && (later.seq !== e.seq + 1 || later.prev_hash !== e.hash)) throw corruptError(file, where(), 'broken chain (the next event does not link to it)');
        if (later !== null && e.sig !== undefined) return last.sig === undefined ? later.seq : null;
        later = e;
        back++;
      }
    } finally {
      closeSync(fd);
    }
  }
  // The log's first event reached with no signature before: all of it is unsigned (or signed by its last checkpoint).
  return last.sig === undefined ? (later?.seq ?? null) : null;
}

function isRegular(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Where the chain resumes, and the torn last lines moved aside to get there. */
export interface Resumed {
  readonly tail: ChainTail | null;
  readonly torn: readonly TornTail[];
}

/**
 * The tail of the newest non-empty file of a log, to resume its chain from (tail null for a log with no
 * event yet). `rotated` is the log's rotated files, oldest first (files.ts). A torn last line is moved
 * aside first (docs/audit.md "Torn last line"). Throws FIRMA_AUDIT_CORRUPT when the last complete event
 * is in doubt, FIRMA_AUDIT_REPAIR when a torn line cannot be cut off.
 */
export function resumeChain(path: string, rotated: ReadonlyArray<{ readonly path: string }>, publicKey: KeyObject): Resumed {
  const torn: TornTail[] = [];
  // Newest first: the live file, then rotated files from the highest number (empty ones are skipped).
  const candidates = [path, ...rotated.map((r) => r.path).reverse()];
  for (const file of candidates) {
    // A missing live file falls through to the rotated ones; a device such as /dev/full has nothing to resume from.
    if (!isRegular(file)) continue;
    const cut = moveTornTail(file);
    if (cut !== null) torn.push(cut);
    const last = readTail(file, publicKey);
    if (last === null) continue;
    const unsignedFrom = scanBack(candidates.slice(candidates.indexOf(file)).filter(isRegular), publicKey, last);
    return { tail: { seq: last.seq, hash: last.hash, unsignedFrom }, torn };
  }
  return { tail: null, torn };
}
