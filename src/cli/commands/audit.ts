import { createHash, createPublicKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { loadConfig, type FirmaConfig } from '../../config/index.js';
import { auditFileSet } from '../../audit/files.js';
import type { AuditEvent } from '../../audit/events.js';
import { readAuditLog } from '../../audit/follow.js';
import { AUDIT_PUBLIC_KEY_FILE, keyFingerprint } from '../../audit/keys.js';
import { RequestTail } from '../../audit/tail.js';
import { verifyAuditFiles, type UnsignedRun, type VerifiedLog } from '../../audit/verify.js';
import { readConfig } from '../read-config.js';
import { auditRepair } from './audit-repair.js';
import { fail, USAGE } from '../usage.js';

export interface AuditFlags {
  readonly config?: string | undefined;
  readonly 'public-key'?: string | undefined;
  readonly 'allow-unsigned-tail'?: boolean | undefined;
  readonly follow?: boolean | undefined;
  readonly decision?: string | undefined;
  readonly agent?: string | undefined;
  readonly host?: string | undefined;
}

/**
 * The key folder of the log being verified. A log named on the command line, with no --config, is
 * verified with the key of the firma.toml it belongs to (the nearest one up from the log whose
 * `audit.path` is that log), not with whatever `keys/` the current folder has (docs/audit.md "Verifying").
 */
function keyDirFor(paths: readonly string[], config: FirmaConfig, explicitConfig: boolean): string {
  const log = paths[0];
  if (explicitConfig || log === undefined) return config.audit.key_dir;
  const target = resolve(log);
  for (let dir = dirname(target), depth = 0; depth < 4; dir = dirname(dir), depth++) {
    const candidate = join(dir, 'firma.toml');
    if (!existsSync(candidate)) continue;
    try {
      const owner = loadConfig(candidate, dir);
      const own = resolve(owner.audit.path);
      if (target === own || target === dirname(own) || auditFileSet(own).includes(target)) return owner.audit.key_dir;
    } catch {
      // an unreadable or invalid config beside the log says nothing about its key
    }
    if (dir === dirname(dir)) break;
  }
  return config.audit.key_dir;
}

const FRAGMENT = /(sha256:[0-9a-f]{64}), moved to (\S+)$/;

/** Whether the fragment an `audit_repaired` event names is beside the log, with the hash it records. */
function fragmentCheck(logFile: string, detail: string): string {
  const m = FRAGMENT.exec(detail);
  if (m === null) return '';
  const path = join(dirname(logFile), m[2] ?? '');
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch {
    return ' (fragment file not found)';
  }
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}` === m[1] ? ' (fragment file present, hash matches)' : ' (fragment file present, HASH DIFFERS)';
}

const seqs = (r: UnsignedRun): string => (r.first === r.last ? `seq ${r.first}` : `seq ${r.first}..${r.last}`);
const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;

/** Events after the last signature (docs/audit.md "Checkpoints"): what they are, in one sentence. */
function unsignedTailLine(r: VerifiedLog, tail: UnsignedRun): string {
  const after = r.checkpoints + r.signedAlone > 0 ? 'after the last checkpoint' : 'with no checkpoint after them';
  return `${tail.file}: ${plural(tail.events, 'event')} ${after} (${seqs(tail)}) ${tail.events === 1 ? 'is' : 'are'} not signed yet (the sidecar is running, or was killed)`;
}

/** The first line of a successful verify: what was checked, how it was signed, what was signed late. */
function summaryLine(r: VerifiedLog): string {
  const how = [r.checkpoints > 0 ? plural(r.checkpoints, 'checkpoint') : '', r.signedAlone > 0 ? `${plural(r.signedAlone, 'event')} signed on ${r.signedAlone === 1 ? 'its' : 'their'} own` : '']
    .filter((x) => x !== '')
    .join(', ');
  const late = r.recovered.reduce((n, x) => n + x.events, 0);
  const recovered = late === 0 ? '' : `; ${plural(late, 'event')} (${r.recovered.map(seqs).join(', ')}) signed at recovery after a kill, not when written`;
  const upTo = r.unsignedTail === null ? '' : ` up to seq ${r.unsignedTail.first - 1}`;
  return `ok: ${r.events} events, seq 1..${r.lastSeq}, chain and every signature valid${upTo}${how === '' ? '' : ` (${how})`}${recovered}\n`;
}

/** `firma audit verify | key | tail [-f] | repair`. */
export async function auditCommand(sub: string | undefined, rest: readonly string[], values: AuditFlags): Promise<void> {
  const config = readConfig(values.config);
  if (sub === 'key') {
    const publicKeyFile = values['public-key'] ?? join(config.audit.key_dir, AUDIT_PUBLIC_KEY_FILE);
    try {
      process.stdout.write(readFileSync(publicKeyFile, 'utf8'));
    } catch {
      fail(`firma audit key: no audit public key at ${publicKeyFile} (it is created on the sidecar's first start)`);
    }
    return;
  }
  if (sub === 'verify') {
    const paths = rest.length > 0 ? [...rest] : [config.audit.path];
    const publicKeyFile = values['public-key'] ?? join(keyDirFor(paths, config, values.config !== undefined), AUDIT_PUBLIC_KEY_FILE);
    let pem: string;
    try {
      pem = readFileSync(publicKeyFile, 'utf8');
    } catch {
      fail(`firma audit verify: cannot read the audit public key ${publicKeyFile} (use --public-key FILE)`);
    }
    const result = verifyAuditFiles(paths, pem);
    const key = `key ${publicKeyFile} (fingerprint ${keyFingerprint(createPublicKey(pem))})`;
    if (!result.ok) fail(`${result.file}:${result.line}: ${result.problem}\n(checked with ${key})`);
    const tail = result.unsignedTail;
    if (tail !== null && values['allow-unsigned-tail'] !== true) {
      fail(`${unsignedTailLine(result, tail)}; --allow-unsigned-tail accepts them\n(checked with ${key})`);
    }
    // A repaired torn line is part of the history: name it, and whether the fragment moved aside is still there.
    const repairs = result.repairs.map((r) => `repaired: ${r.file}:${r.line} (seq ${r.seq}): ${r.detail}${fragmentCheck(r.file, r.detail)}\n`).join('');
    process.stdout.write(
      summaryLine(result) +
        (tail === null ? '' : `unsigned: ${unsignedTailLine(result, tail)}\n`) +
        repairs +
        `head hash ${result.headHash}\n` +
        `verified with ${key}\n` +
        'note: events cut from the end of the log leave no trace in the log itself; compare the head hash with a copy kept elsewhere.\n',
    );
    return;
  }
  if (sub === 'repair') return auditRepair(config);
  if (sub === 'tail') {
    const filter = { decision: values.decision, agent: values.agent, host: values.host };
    const view = new RequestTail(filter, (text) => process.stdout.write(text + '\n'));
    const print = (line: string): void => {
      if (line.trim() === '') return;
      try {
        view.push(JSON.parse(line) as AuditEvent);
      } catch {
        process.stdout.write(`(unparsable line) ${line.slice(0, 120)}\n`);
      }
    };
    // A request still streaming after a second is shown as in progress rather than kept back.
    await readAuditLog(config.audit.path, print, values.follow === true ? { tick: () => view.flush(1000) } : null);
    view.flush();
    return;
  }
  fail(`firma audit: unknown subcommand ${JSON.stringify(sub ?? '')}\n\n${USAGE}`, 2);
}
