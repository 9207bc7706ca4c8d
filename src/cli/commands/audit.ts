import { createHash, createPublicKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { loadConfig, type FirmaConfig } from '../../config/index.js';
import { auditFileSet } from '../../audit/files.js';
import type { AuditEvent } from '../../audit/events.js';
import { readAuditLog } from '../../audit/follow.js';
import { AUDIT_PUBLIC_KEY_FILE, keyFingerprint } from '../../audit/keys.js';
import { RequestTail } from '../../audit/tail.js';
import { verifyAuditFiles } from '../../audit/verify.js';
import { readConfig } from '../read-config.js';
import { auditRepair } from './audit-repair.js';
import { fail, USAGE } from '../usage.js';

export interface AuditFlags {
  readonly config?: string | undefined;
  readonly 'public-key'?: string | undefined;
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
    // A repaired torn line is part of the history: name it, and whether the fragment moved aside is still there.
    const repairs = result.repairs.map((r) => `repaired: ${r.file}:${r.line} (seq ${r.seq}): ${r.detail}${fragmentCheck(r.file, r.detail)}\n`).join('');
    process.stdout.write(
      `ok: ${result.events} events, seq 1..${result.lastSeq}, chain and every signature valid\n` +
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
