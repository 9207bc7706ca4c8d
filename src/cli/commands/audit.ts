import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditEvent } from '../../audit/events.js';
import { readAuditLog } from '../../audit/follow.js';
import { AUDIT_PUBLIC_KEY_FILE } from '../../audit/keys.js';
import { RequestTail } from '../../audit/tail.js';
import { verifyAuditFiles } from '../../audit/verify.js';
import { readConfig } from '../read-config.js';
import { fail, USAGE } from '../usage.js';

export interface AuditFlags {
  readonly config?: string | undefined;
  readonly 'public-key'?: string | undefined;
  readonly follow?: boolean | undefined;
  readonly decision?: string | undefined;
  readonly agent?: string | undefined;
  readonly host?: string | undefined;
}

/** `firma audit verify | key | tail [-f]`. */
export async function auditCommand(sub: string | undefined, rest: readonly string[], values: AuditFlags): Promise<void> {
  const config = readConfig(values.config);
  const publicKeyFile = values['public-key'] ?? join(config.audit.key_dir, AUDIT_PUBLIC_KEY_FILE);
  if (sub === 'key') {
    try {
      process.stdout.write(readFileSync(publicKeyFile, 'utf8'));
    } catch {
      fail(`firma audit key: no audit public key at ${publicKeyFile} (it is created on the sidecar's first start)`);
    }
    return;
  }
  if (sub === 'verify') {
    let pem: string;
    try {
      pem = readFileSync(publicKeyFile, 'utf8');
    } catch {
      fail(`firma audit verify: cannot read the audit public key ${publicKeyFile} (use --public-key FILE)`);
    }
    const paths = rest.length > 0 ? [...rest] : [config.audit.path];
    const result = verifyAuditFiles(paths, pem);
    if (!result.ok) fail(`${result.file}:${result.line}: ${result.problem}`);
    process.stdout.write(
      `ok: ${result.events} events, seq 1..${result.lastSeq}, chain and every signature valid\n` +
        `head hash ${result.headHash}\n` +
        'note: events cut from the end of the log leave no trace in the log itself; compare the head hash with a copy kept elsewhere.\n',
    );
    return;
  }
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
