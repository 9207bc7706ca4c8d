import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { canonicalWithoutSeal, chainHash, GENESIS_HASH, verifyHashSig } from './chain.js';
import { CHECKPOINT_FIELDS, COMMON_FIELDS, REQUIRED_FIELDS, type AuditEvent, type AuditEventType, type CheckpointEvent } from './events.js';
import { auditFileSet } from './files.js';
import { keyFingerprint } from './keys.js';

/** A lifecycle `audit_repaired` event: a torn last line moved aside, the chain continued past it. */
export interface VerifiedRepair {
  readonly file: string;
  readonly line: number;
  readonly seq: number;
  readonly detail: string;
}

/** Unsigned events (seq `first..last`) with no signed event after them: see docs/audit.md "Checkpoints". */
export interface UnsignedRun {
  /** The file and line of the first of them. */
  readonly file: string;
  readonly line: number;
  readonly first: number;
  readonly last: number;
  readonly events: number;
}

export interface VerifiedLog {
  ok: true;
  events: number;
  headHash: string;
  lastSeq: number;
  repairs: VerifiedRepair[];
  /** Checkpoint events, and the events signed on their own (signatures = "event"). */
  checkpoints: number;
  signedAlone: number;
  /** The ranges `recovered` checkpoints signed: events a killed run left unsigned, signed at the next start. */
  recovered: UnsignedRun[];
  /** Events after the last signature; the caller decides whether that is acceptable (`--allow-unsigned-tail`). */
  unsignedTail: UnsignedRun | null;
}

export type VerifyResult = VerifiedLog | { ok: false; file: string; line: number; problem: string };

export interface VerifyOptions {
  /**
   * Accept a set whose first event is not seq 1 (older files pruned by retention): the first event is
   * then trusted as the anchor. Off by default, so deleting the first line or first file is detected.
   */
  readonly allowMissingStart?: boolean;
}

const HEX64 = /^[0-9a-f]{64}$/;
const TYPES: ReadonlySet<string> = new Set<AuditEventType>(['decision', 'outcome', 'approval', 'lifecycle']);

/** Structural check of a parsed line; returns the problem or null. */
export function shapeProblem(e: unknown): string | null {
  if (typeof e !== 'object' || e === null || Array.isArray(e)) return 'not JSON object';
  const o = e as Record<string, unknown>;
  for (const f of COMMON_FIELDS) if (!(f in o)) return `missing field ${f}`;
  if (o['v'] !== 1) return `unsupported v ${JSON.stringify(o['v'])}`;
  if (!Number.isSafeInteger(o['seq']) || (o['seq'] as number) < 1) return 'bad seq';
  if (typeof o['type'] !== 'string' || !TYPES.has(o['type'])) return 'bad type';
  if (typeof o['prev_hash'] !== 'string' || !HEX64.test(o['prev_hash'])) return 'bad prev_hash';
  if (typeof o['hash'] !== 'string' || !HEX64.test(o['hash'])) return 'bad hash';
  if ('sig' in o && typeof o['sig'] !== 'string') return 'bad sig';
  for (const f of REQUIRED_FIELDS[o['type'] as AuditEventType]) if (!(f in o)) return `missing field ${f}`;
  if (o['type'] === 'lifecycle' && o['event'] === 'checkpoint') {
    for (const f of CHECKPOINT_FIELDS) if (!(f in o)) return f === 'sig' ? 'checkpoint without a signature' : `missing field ${f}`;
    for (const f of ['first_seq', 'last_seq', 'events']) if (!Number.isSafeInteger(o[f])) return `bad ${f}`;
    if (typeof o['recovered'] !== 'boolean') return 'bad recovered';
  }
  return null;
}

export function isCheckpoint(e: AuditEvent): e is CheckpointEvent {
  return e.type === 'lifecycle' && e.event === 'checkpoint';
}

/** Hash of one event, and its signature when it has one; returns the problem or null. */
export function sealProblem(e: AuditEvent, publicKey: KeyObject): string | null {
  const canonical = canonicalWithoutSeal(e as unknown as Record<string, unknown>);
  if (chainHash(e.prev_hash, canonical) !== e.hash) return 'edited (hash mismatch)';
  if (e.sig !== undefined && !verifyHashSig(publicKey, e.hash, e.sig)) return 'bad signature';
  return null;
}

/** The key fingerprint a start event records (`audit_key=…` in its detail). */
const RECORDED_KEY = /\baudit_key=(sha256:[0-9a-f]+)/;

/**
 * A bad signature is tampering only if this key signed the log at all. When no event verifies with it,
 * the log was signed by another key (the wrong --public-key, or another folder's keys/): say that, with
 * the fingerprint the log records, never the words used for an edited line (docs/audit.md "Verifying").
 */
function otherKeyProblem(files: readonly string[], publicKey: KeyObject): string | null {
  let recorded: string | null = null;
  for (const file of files) {
    for (const l of linesOf(file)) {
      let e: AuditEvent;
      try {
        e = JSON.parse(l.text) as AuditEvent;
      } catch {
        continue;
      }
      if (shapeProblem(e) !== null) continue;
      if (e.type === 'lifecycle' && e.event === 'start') recorded = RECORDED_KEY.exec(e.detail ?? '')?.[1] ?? recorded;
      // Only a signature can say which key signed: unsigned events (checkpoint mode) are skipped.
      if (e.sig !== undefined && sealProblem(e, publicKey) === null) return null;
    }
  }
  const ours = keyFingerprint(publicKey);
  // The log says it was signed with this very key: then the signatures were altered (or the hashes they sign).
  if (recorded === ours) return null;
  const theirs = recorded !== null && recorded !== ours ? ` (fingerprint ${recorded})` : '';
  return `signed by another key${theirs}, not this one (fingerprint ${ours}): no event verifies with it; pass the log's own key with --public-key`;
}

interface Line {
  readonly file: string;
  readonly line: number;
  readonly text: string;
  readonly last: boolean;
  readonly terminated: boolean;
}

function* linesOf(file: string): Generator<Line> {
  const text = readFileSync(file, 'utf8');
  const parts = text.split('\n');
  const terminated = text.endsWith('\n');
  // A trailing '\n' leaves one empty element that is not a line.
  const n = terminated ? parts.length - 1 : parts.length;
  for (let i = 0; i < n; i++) {
    if (i === n - 1 && parts[i] === '' && !terminated) break; // empty file
    yield { file, line: i + 1, text: parts[i] ?? '', last: i === n - 1, terminated: i < n - 1 || terminated };
  }
}

/**
 * Verifies an audit log offline: JSON, required fields, recomputed hash, every signature present (each
 * event's, or the checkpoints' that cover the unsigned ones: docs/audit.md "Checkpoints"), gapless `seq` and
 * `prev_hash` linkage across `paths` in the given order (a single directory or base path expands to its
 * rotated set, oldest first). Reports the FIRST bad file:line. It cannot detect the removal of events at
 * the tail (or of the newest files) — compare `headHash` with a copy anchored elsewhere for that.
 */
export function verifyAuditFiles(paths: string[], publicKeyPem: string, opts: VerifyOptions = {}): VerifyResult {
  const publicKey = createPublicKey(publicKeyPem);
  let files = paths;
  if (paths.length === 1 && paths[0] !== undefined) {
    const only = paths[0];
    let isDir = false;
    try {
      isDir = statSync(only).isDirectory();
    } catch {
      isDir = true; // missing base path: look for its rotated siblings
    }
    const set = auditFileSet(only);
    if (isDir || set.length > 1) files = set;
  }
  if (files.length === 0) return { ok: false, file: paths[0] ?? '', line: 0, problem: 'no audit files found' };

  let prevHash: string | null = null;
  let prevSeq = 0;
  let events = 0;
  const repairs: VerifiedRepair[] = [];
  let checkpoints = 0;
  let signedAlone = 0;
  const recovered: UnsignedRun[] = [];
  /** The unsigned events since the last signed one: where the first is, and how many. */
  let run: { file: string; line: number; first: number; atStart: boolean } | null = null;
  let runCount = 0;
  for (const file of files) {
    let lines: Line[];
    try {
      lines = [...linesOf(file)];
    } catch (err: unknown) {
      return { ok: false, file, line: 0, problem: `unreadable: ${(err as Error).message}` };
    }
    // Seqs of the file's lines, so a jump can be told apart: the missing seq appears later (reordered) or never (deleted).
    const laterSeqs: number[] = lines.map((l) => {
      try {
        const s = (JSON.parse(l.text) as { seq?: unknown }).seq;
        return typeof s === 'number' ? s : -1;
      } catch {
        return -1;
      }
    });
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i] as Line;
      const bad = (problem: string): VerifyResult => ({ ok: false, file: l.file, line: l.line, problem });
      let parsed: unknown;
      try {
        parsed = JSON.parse(l.text);
      } catch {
        return bad(l.terminated ? 'not JSON' : 'not JSON (truncated last line; "firma audit repair" moves it aside)');
      }
      const shape = shapeProblem(parsed);
      if (shape !== null) return bad(shape);
      const e = parsed as AuditEvent;
      const seal = sealProblem(e, publicKey);
      if (seal === 'bad signature') return bad(otherKeyProblem(files, publicKey) ?? (isCheckpoint(e) ? `bad signature (the checkpoint over seq ${e.first_seq}..${e.last_seq})` : seal));
      if (seal !== null) return bad(seal);
      if (!l.terminated) return bad('truncated last line (no newline); "firma audit repair" moves it aside');

      if (prevHash === null) {
        if (e.seq === 1) {
          if (e.prev_hash !== GENESIS_HASH) return bad('broken chain (seq 1 does not start from the genesis hash)');
        } else if (!opts.allowMissingStart) {
          return bad(`deleted (log starts at seq ${e.seq}, expected 1)`);
        }
      } else {
        const expected = prevSeq + 1;
        if (e.seq > expected) {
          const reappears = laterSeqs.indexOf(expected, i + 1) >= 0;
          return bad(reappears ? `reordered (seq ${e.seq} where ${expected} was expected)` : `deleted (seq ${expected}${e.seq - 1 > expected ? `..${e.seq - 1}` : ''} missing)`);
        }
        if (e.seq < expected) {
          // Every seq up to prevSeq was already seen (gapless), so this is a replayed copy of an older event.
          return bad(`inserted (copy of seq ${e.seq} after seq ${prevSeq})`);
        }
        if (e.prev_hash !== prevHash) return bad('broken chain (prev_hash does not match the previous event)');
      }
      if (e.sig === undefined) {
        run ??= { file: l.file, line: l.line, first: e.seq, atStart: prevHash === null };
        runCount++;
      } else if (isCheckpoint(e)) {
        const covered = coverageProblem(e, run === null ? null : { first: run.first, count: runCount, atStart: run.atStart && opts.allowMissingStart === true });
        if (covered !== null) return bad(covered);
        checkpoints++;
        if (e.recovered) recovered.push({ file: l.file, line: l.line, first: e.first_seq, last: e.last_seq, events: e.events });
        run = null;
        runCount = 0;
      } else {
        signedAlone++;
        run = null; // its signature covers every event before it too, through the chain
        runCount = 0;
      }
      prevSeq = e.seq;
      prevHash = e.hash;
      events++;
      if (e.type === 'lifecycle' && e.event === 'audit_repaired') repairs.push({ file: l.file, line: l.line, seq: e.seq, detail: e.detail ?? '' });
    }
  }
  const unsignedTail = run === null ? null : { file: run.file, line: run.line, first: run.first, last: prevSeq, events: runCount };
  return { ok: true, events, headHash: prevHash ?? GENESIS_HASH, lastSeq: prevSeq, repairs, checkpoints, signedAlone, recovered, unsignedTail };
}

/**
 * A checkpoint must say what it signs: the unsigned events just before it, `first_seq..last_seq` (its
 * own seq - 1), `events` of them. `run.atStart`: the log may begin inside its range (older files pruned).
 */
function coverageProblem(e: CheckpointEvent, run: { first: number; count: number; atStart: boolean } | null): string | null {
  const before = run === null ? 'none' : `seq ${run.first}..${e.seq - 1}`;
  const firstOk = run !== null && (e.first_seq === run.first || (run.atStart && e.first_seq < run.first));
  if (firstOk && e.last_seq === e.seq - 1 && e.events === e.last_seq - e.first_seq + 1) return null;
  return `checkpoint does not match the events before it (it covers seq ${e.first_seq}..${e.last_seq}, ${e.events} events; the unsigned events before it: ${before})`;
}
