import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { canonicalWithoutSeal, chainHash, GENESIS_HASH, verifyHashSig } from './chain.js';
import { COMMON_FIELDS, REQUIRED_FIELDS, type AuditEvent, type AuditEventType } from './events.js';
import { auditFileSet } from './files.js';
import { keyFingerprint } from './keys.js';

/** A lifecycle `audit_repaired` event: a torn last line moved aside, the chain continued past it. */
export interface VerifiedRepair {
  readonly file: string;
  readonly line: number;
  readonly seq: number;
  readonly detail: string;
}

export type VerifyResult =
  | { ok: true; events: number; headHash: string; lastSeq: number; repairs: VerifiedRepair[] }
  | { ok: false; file: string; line: number; problem: string };

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
  if (typeof o['sig'] !== 'string') return 'bad sig';
  for (const f of REQUIRED_FIELDS[o['type'] as AuditEventType]) if (!(f in o)) return `missing field ${f}`;
  return null;
}

/** Hash and signature of one event; returns the problem or null. */
export function sealProblem(e: AuditEvent, publicKey: KeyObject): string | null {
  const canonical = canonicalWithoutSeal(e as unknown as Record<string, unknown>);
  if (chainHash(e.prev_hash, canonical) !== e.hash) return 'edited (hash mismatch)';
  if (!verifyHashSig(publicKey, e.hash, e.sig)) return 'bad signature';
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
      if (sealProblem(e, publicKey) === null) return null;
      if (e.type === 'lifecycle' && e.event === 'start') recorded = RECORDED_KEY.exec(e.detail ?? '')?.[1] ?? recorded;
    }
  }
  const ours = keyFingerprint(publicKey);
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
 * Verifies an audit log offline: JSON, required fields, recomputed hash, signature, gapless `seq` and
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
      if (seal === 'bad signature') return bad(otherKeyProblem(files, publicKey) ?? seal);
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
      prevSeq = e.seq;
      prevHash = e.hash;
      events++;
      if (e.type === 'lifecycle' && e.event === 'audit_repaired') repairs.push({ file: l.file, line: l.line, seq: e.seq, detail: e.detail ?? '' });
    }
  }
  if (prevHash === null) return { ok: true, events: 0, headHash: GENESIS_HASH, lastSeq: 0, repairs };
  return { ok: true, events, headHash: prevHash, lastSeq: prevSeq, repairs };
}
