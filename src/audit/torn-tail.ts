import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { errorCode } from '../core/errors.js';
import { AuditWriterError } from './writer-error.js';

/** A torn last line moved out of a log file (docs/audit.md "Torn last line"). */
export interface TornTail {
  /** The log file it was cut from. */
  readonly file: string;
  /** Where the fragment now is, or null when it could not be saved (e.g. the disk is still full). */
  readonly movedTo: string | null;
  /** Why it could not be saved (an errno code), when `movedTo` is null. */
  readonly notSaved: string | null;
  readonly bytes: number;
  /** `sha256:<hex>` of the fragment. */
  readonly sha256: string;
}

const CHUNK = 64 * 1024;

/** Offset just past the last newline of the open file (0 when it has none). */
function lastLineEnd(fd: number, size: number): number {
  const buf = Buffer.allocUnsafe(CHUNK);
  for (let end = size; end > 0; ) {
    const start = Math.max(0, end - CHUNK);
    const n = readSync(fd, buf, 0, end - start, start);
    const i = buf.subarray(0, n).lastIndexOf(0x0a);
    if (i >= 0) return start + i + 1;
    end = start;
  }
  return 0;
}

/** `audit.jsonl.torn-2026-12-03T12-53-07-174Z`: sorts by time, and never matches a rotated file's `.<n>`. */
export function tornName(file: string, now = new Date()): string {
  return `${file}.torn-${now.toISOString().replace(/[:.]/g, '-')}`;
}

/** Copies bytes [from, to) of `fd` into a new 0600 file, fsynced; returns their hash. */
function copyOut(fd: number, from: number, to: number, dest: string): void {
  const out = openSync(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (let pos = from; pos < to; ) {
      const n = readSync(fd, buf, 0, Math.min(CHUNK, to - pos), pos);
      if (n === 0) break;
      for (let off = 0; off < n; ) off += writeSync(out, buf, off, n - off);
      pos += n;
    }
    fsyncSync(out);
  } finally {
    closeSync(out);
  }
  // The new name must survive a power loss as well as its bytes.
  const dir = openSync(dirname(dest), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

function hashRange(fd: number, from: number, to: number): string {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(CHUNK);
  for (let pos = from; pos < to; ) {
    const n = readSync(fd, buf, 0, Math.min(CHUNK, to - pos), pos);
    if (n === 0) break;
    h.update(buf.subarray(0, n));
    pos += n;
  }
  return `sha256:${h.digest('hex')}`;
}

/**
 * When `file` ends without a newline (a write cut by a crash, a kill or a full disk in an older
 * version), moves the fragment after its last complete line to `<file>.torn-<ts>` (0600) and truncates
 * the file back to that line, so the chain continues from the last whole event. Returns null when the
 * file ends cleanly. The fragment is copied before the cut: a crash between the two leaves the tail
 * torn, to be moved again. When the copy cannot be made (the disk is still full) the fragment — never a
 * whole event, so nothing a verifier could check — is cut anyway and only its size and hash are kept,
 * in the `audit_repaired` event: a full disk must not keep the sidecar from starting (docs/audit.md).
 */
export function moveTornTail(file: string): TornTail | null {
  let fd: number;
  try {
    fd = openSync(file, 'r+');
  } catch (err: unknown) {
    throw new AuditWriterError('FIRMA_AUDIT_REPAIR', `cannot open ${file} to move its torn last line aside (${errorCode(err) ?? 'EUNKNOWN'})`, { cause: err });
  }
  try {
    const size = fstatSync(fd).size;
    if (size === 0) return null;
    const last = Buffer.alloc(1);
    readSync(fd, last, 0, 1, size - 1);
    if (last[0] === 0x0a) return null;
    const cut = lastLineEnd(fd, size);
    const sha256 = hashRange(fd, cut, size);
    const dest = tornName(file);
    let movedTo: string | null = dest;
    let notSaved: string | null = null;
    try {
      copyOut(fd, cut, size, dest);
    } catch (err: unknown) {
      movedTo = null;
      notSaved = errorCode(err) ?? 'EUNKNOWN';
    }
    try {
      ftruncateSync(fd, cut);
      fsyncSync(fd);
    } catch (err: unknown) {
      throw new AuditWriterError('FIRMA_AUDIT_REPAIR', `cannot cut the torn last line off ${file} (${errorCode(err) ?? 'EUNKNOWN'})`, { cause: err });
    }
    return { file, movedTo, notSaved, bytes: size - cut, sha256 };
  } finally {
    closeSync(fd);
  }
}

/** The `audit_repaired` event's detail: what was cut, from which file, and where it went. */
export function repairDetail(t: TornTail, afterSeq: number): string {
  const where = t.movedTo !== null ? `moved to ${basename(t.movedTo)}` : `not saved (${t.notSaved ?? 'EUNKNOWN'})`;
  return `torn last line of ${basename(t.file)} after seq ${afterSeq}: ${t.bytes} bytes ${t.sha256}, ${where}`;
}
