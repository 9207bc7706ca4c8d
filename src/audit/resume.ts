import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import type { AuditEvent } from './events.js';
import { moveTornTail, type TornTail } from './torn-tail.js';
import { sealProblem, shapeProblem } from './verify.js';
import { AuditWriterError } from './writer-error.js';

const TAIL_BYTES = 1024 * 1024;

/** Where an existing log's chain stands: the last event's `seq` and `hash`. */
export interface ChainTail {
  readonly seq: number;
  readonly hash: string;
}

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
function readTail(file: string, publicKey: KeyObject): ChainTail | null {
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
  const e = parsed as AuditEvent;
  return { seq: e.seq, hash: e.hash };
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
    let regular = false;
    try {
      regular = statSync(file).isFile();
    } catch {
      // Missing live file: fall through to the rotated ones.
    }
    if (!regular) continue; // e.g. a device such as /dev/full: nothing to resume from
    const cut = moveTornTail(file);
    if (cut !== null) torn.push(cut);
    const tail = readTail(file, publicKey);
    if (tail !== null) return { tail, torn };
  }
  return { tail: null, torn };
}
