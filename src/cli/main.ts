import { parseArgs } from 'node:util';
import { readFileSync, statSync, fstatSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { verifyAuditFiles } from '../audit/verify.js';
import { approvalsCommand } from './approvals.js';
import { auditFileSet, liveAuditFile, listRotated } from '../audit/files.js';
import { RequestTail } from '../audit/tail.js';
import { AUDIT_PUBLIC_KEY_FILE } from '../audit/keys.js';
import type { AuditEvent } from '../audit/events.js';
import { ConfigError, loadConfig, resolveConfigPath, firmaConfigJsonSchema, type FirmaConfig } from '../config/index.js';
import { initCa, loadCa, caEnvLines } from '../intercept/tls/ca.js';
import { issueToken, revokeToken, parseDuration } from '../enforce/capability/tokens.js';
import { loadDecisionRules } from '../enforce/setup.js';
import { createLogger } from '../core/log.js';
import { Sidecar } from '../sidecar.js';
import { errorCode } from '../core/errors.js';

const USAGE = `firma — egress sidecar proxy for AI agents

usage:
  firma start [--config PATH]        run the sidecar (config: --config, $FIRMA_CONFIG, ./firma.toml, built-in defaults)
  firma check [--config PATH]        validate the configuration; print every error as file:line:col and exit 1
  firma ca init [--config PATH]      create the local CA under ca_dir (never overwrites)
  firma ca export [--env] [--config PATH]
                                     print the CA certificate PEM, or the env lines that make clients trust it
  firma token issue --agent ID --actions a,b --scope HOST[/PATH] [--ttl 1h] [--config PATH]
                                     mint a capability token (PASETO v4.public) with the local signing key
  firma token revoke TOKEN_ID [--config PATH]
                                     add a token id to the revocation list (takes effect without restart)
  firma audit verify [PATH...] [--public-key FILE]
                                     verify the hash chain and every signature; exit 1 naming the first bad line
  firma audit key                    print the audit public key (to verify elsewhere)
  firma audit tail [-f] [--decision D] [--agent A] [--host H]
                                     a readable view of the audit log, one line per request
  firma approvals list [--admin URL] requests held for approval, and standing grants
  firma approvals approve ID [--grant-minutes N [--grant-host]] [--reason TEXT]
                                     release a held request (and identical ones); optionally grant the
                                     agent this action class (on this host) for N minutes
  firma approvals deny ID [--reason TEXT]
  firma approvals grants | revoke GRANT_ID
                                     (mutations use the token in the variable named by [sidecar.admin] token_env)
  firma schema                       print the JSON Schema of firma.toml (for editors)
  firma version
`;

/** Exit with a message on stderr; expected failures are not stack traces. */
function fail(message: string, code = 1): never {
  process.stderr.write(message.endsWith('\n') ? message : message + '\n');
  process.exit(code);
}

function readConfig(flag: string | undefined): FirmaConfig {
  try {
    const path = resolveConfigPath({ flag, env: process.env, cwd: process.cwd() });
    return loadConfig(path, process.cwd());
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
}

async function start(configFlag: string | undefined): Promise<void> {
  const config = readConfig(configFlag);
  const log = createLogger(config.sidecar.log_level);
  let sidecar: Sidecar | null = null;
  // SIGHUP reloads (the daemon convention) instead of ending the process. One that arrives while
  // starting is kept and done once ready (files may have changed after they were read). The reloader
  // logs and audits the result, so nothing is left to do with it here.
  let stopping = false;
  let hupWhileStarting = false;
  process.on('SIGHUP', () => {
    if (sidecar === null) hupWhileStarting = true;
    else if (!stopping) void sidecar.reload('SIGHUP');
  });
  let started: Sidecar;
  try {
    started = await Sidecar.start({ config, log });
    sidecar = started;
    if (hupWhileStarting) void started.reload('SIGHUP');
  } catch (err) {
    const code = errorCode(err);
    const message = err instanceof Error ? err.message : String(err);
    log.fatal({ code }, `cannot start: ${message}`);
    log.flush();
    fail(`firma: cannot start: ${message}`);
  }
  const shutdown = (signal: string): void => {
    if (stopping) {
      if (signal === 'SIGINT') process.exit(130);
      return;
    }
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    started.stop().then(
      () => log.flush(() => process.exit(0)),
      (err: unknown) => {
        log.error({ err }, 'error while stopping');
        log.flush(() => process.exit(1));
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('uncaughtException', (err) => {
    // Every socket has an error handler; reaching this is a bug. Exit so the supervisor restarts a
    // clean process rather than serve from an unknown state.
    log.fatal({ err }, 'uncaught exception');
    log.flush(() => process.exit(1));
  });
}

function check(configFlag: string | undefined): void {
  const config = readConfig(configFlag);
  let rules;
  try {
    rules = loadDecisionRules(config);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  for (const w of rules.policy.warnings) process.stderr.write(`warning: ${w}\n`);
  process.stdout.write(
    `${config.source.path ?? '(built-in defaults)'}: ok — ${rules.mapping.ruleCount} mapping rules in ${rules.mapping.files.length} files, ` +
      `${rules.policy.policyIds.length} policies (sha256 ${rules.policy.policyHash.slice(0, 12)}…)\n`,
  );
}

function caCommand(sub: string | undefined, env: boolean, configFlag: string | undefined): void {
  const config = readConfig(configFlag);
  const dir = config.sidecar.interceptor.mitm.ca_dir;
  try {
    if (sub === 'init') {
      const { ca, created } = initCa(dir);
      process.stdout.write(`${created ? 'created' : 'exists'}: ${ca.certPath}\nsha256 fingerprint: ${ca.fingerprint256}\n`);
      return;
    }
    if (sub === 'export') {
      const ca = loadCa(dir);
      process.stdout.write(env ? caEnvLines(ca.certPath).join('\n') + '\n' : ca.certPem);
      return;
    }
  } catch (err) {
    const code = errorCode(err);
    if (code !== undefined && code.startsWith('FIRMA_CA_')) {
      fail(`firma ca ${sub}: ${(err as Error).message}${code === 'FIRMA_CA_MISSING' ? ' (run `firma ca init`)' : ''}`);
    }
    throw err;
  }
  fail(`firma ca: unknown subcommand ${JSON.stringify(sub ?? '')}\n\n${USAGE}`, 2);
}

async function tokenCommand(sub: string | undefined, rest: readonly string[], values: TokenFlags): Promise<void> {
  const config = readConfig(values.config);
  const caps = config.sidecar.capabilities;
  try {
    if (sub === 'issue') {
      if (values.agent === undefined || values.actions === undefined || values.scope === undefined) {
        fail('firma token issue: --agent, --actions and --scope are required\n\n' + USAGE, 2);
      }
      const issued = await issueToken({
        signingKeyFile: caps.signing_key_file,
        publicKeyFile: caps.public_key_file,
        agent: values.agent,
        actions: values.actions.split(',').map((a) => a.trim()).filter((a) => a !== ''),
        scope: values.scope,
        ttlMs: parseDuration(values.ttl ?? '1h'),
      });
      // The token on stdout alone (so `TOKEN=$(firma token issue …)` works); facts on stderr.
      process.stdout.write(`${issued.token}\n`);
      process.stderr.write(
        `token id ${issued.jti}, agent ${values.agent}, scope ${issued.scope}, expires ${issued.exp.toISOString()}\n` +
          (issued.keyCreated ? `created the signing key pair: ${caps.signing_key_file} (0600) and ${caps.public_key_file}\n` : ''),
      );
      return;
    }
    if (sub === 'revoke') {
      const jti = rest[0];
      if (jti === undefined) fail('firma token revoke: TOKEN_ID is required\n\n' + USAGE, 2);
      const { added } = revokeToken(caps.revocation_file, jti);
      process.stdout.write(`${added ? 'revoked' : 'already revoked'}: ${jti} (${caps.revocation_file})\n`);
      return;
    }
  } catch (err) {
    const code = errorCode(err);
    if (code !== undefined && code.startsWith('FIRMA_')) fail(`firma token ${sub}: ${(err as Error).message}`);
    throw err;
  }
  fail(`firma token: unknown subcommand ${JSON.stringify(sub ?? '')}\n\n${USAGE}`, 2);
}

interface AuditFlags {
  readonly config?: string | undefined;
  readonly 'public-key'?: string | undefined;
  readonly follow?: boolean | undefined;
  readonly decision?: string | undefined;
  readonly agent?: string | undefined;
  readonly host?: string | undefined;
}

async function auditCommand(sub: string | undefined, rest: readonly string[], values: AuditFlags): Promise<void> {
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
    const files = auditFileSet(config.audit.path);
    const view = new RequestTail(filter, (text) => process.stdout.write(text + '\n'));
    const print = (line: string): void => {
      if (line.trim() === '') return;
      try {
        view.push(JSON.parse(line) as AuditEvent);
      } catch {
        process.stdout.write(`(unparsable line) ${line.slice(0, 120)}\n`);
      }
    };
    // The live file is read once and followed from exactly the bytes read: an event appended between
    // the read and the follow's first look is printed once, neither lost nor doubled.
    const live = liveAuditFile(config.audit.path);
    let liveBytes: Buffer = Buffer.alloc(0);
    for (const f of files) {
      let bytes: Buffer;
      try {
        bytes = readFileSync(f);
      } catch {
        continue;
      }
      if (f === live) liveBytes = bytes;
      const lines = bytes.toString('utf8').split('\n');
      const last = lines.pop() ?? '';
      for (const line of lines) print(line);
      if (f !== live) print(last);
    }
    if (values.follow === true) {
      const end = liveBytes.lastIndexOf(0x0a) + 1; // an unfinished last line is re-read once complete
      // A request still streaming after a second is shown as in progress rather than kept back.
      await followFile(live, end, print, () => view.flush(1000));
    } else if (liveBytes.length > 0) {
      print(liveBytes.subarray(liveBytes.lastIndexOf(0x0a) + 1).toString('utf8'));
    }
    view.flush();
    return;
  }
  fail(`firma audit: unknown subcommand ${JSON.stringify(sub ?? '')}\n\n${USAGE}`, 2);
}

function inodeOf(path: string): number | null {
  try {
    return statSync(path).ino;
  } catch {
    return null;
  }
}

/**
 * `tail -f` for the live audit file: print lines appended after byte `from`. Reads through an open
 * descriptor, so when the file is rotated (renamed away, a new one created) the rest of the old file
 * is still read to its end before the new one is read from its start: nothing lost, nothing mixed.
 */
async function followFile(path: string, from: number, print: (line: string) => void, tick: () => void): Promise<never> {
  let fd: number | null = null;
  let offset = from;
  let partial = '';
  const drain = (d: number): void => {
    const size = fstatSync(d).size;
    if (size <= offset) return;
    const buf = Buffer.alloc(size - offset);
    const n = readSync(d, buf, 0, buf.length, offset);
    offset += n;
    const lines = (partial + buf.subarray(0, n).toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) print(line);
  };
  for (;;) {
    tick();
    try {
      if (fd === null) fd = openSync(path, 'r');
      drain(fd);
      let current: number | null = null;
      try {
        current = statSync(path).ino;
      } catch {
        // Between the rename and the new file's creation: keep the old one for now.
      }
      if (current !== null && current !== fstatSync(fd).ino) {
        const oldIno = fstatSync(fd).ino;
        drain(fd); // whatever was written to it before the rename
        closeSync(fd);
        fd = null;
        offset = 0; // whatever is opened next is read from its start
        if (partial !== '') print(partial); // a rotated file ends with a whole line
        partial = '';
        // Several rotations may have happened since the last look: the files renamed after ours are
        // read whole, oldest first, and the list is looked at again once the new live file is open.
        let rotated = listRotated(path);
        const ours = rotated.find((r) => inodeOf(r.path) === oldIno);
        let last = ours?.n ?? Infinity; // not found (removed already): only the live file is left to read
        fd = openSync(path, 'r');
        for (;;) {
          rotated = listRotated(path);
          const newer = rotated.filter((r) => r.n > last);
          if (newer.length === 0) break;
          for (const r of newer) for (const line of readFileSync(r.path, 'utf8').split('\n')) print(line);
          last = newer[newer.length - 1]?.n ?? last;
          // The live file opened above may itself have been rotated meanwhile: start over with the current one.
          closeSync(fd);
          fd = openSync(path, 'r');
        }
        continue; // read the new live file at once
      }
    } catch {
      if (fd !== null) closeSync(fd);
      fd = null;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface TokenFlags {
  readonly config?: string | undefined;
  readonly agent?: string | undefined;
  readonly actions?: string | undefined;
  readonly scope?: string | undefined;
  readonly ttl?: string | undefined;
}

async function main(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        env: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
        agent: { type: 'string' },
        actions: { type: 'string' },
        scope: { type: 'string' },
        ttl: { type: 'string' },
        'public-key': { type: 'string' },
        follow: { type: 'boolean', short: 'f', default: false },
        decision: { type: 'string' },
        host: { type: 'string' },
        admin: { type: 'string' },
        reason: { type: 'string' },
        'grant-minutes': { type: 'string' },
        'grant-host': { type: 'boolean' },
      },
    });
  } catch (err) {
    fail(`firma: ${(err as Error).message}\n\n${USAGE}`, 2);
  }
  const { values, positionals } = parsed;
  const [command, sub, ...rest] = positionals;
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  switch (command) {
    case 'start':
      return start(values.config);
    case 'check':
      return check(values.config);
    case 'ca':
      return caCommand(sub, values.env ?? false, values.config);
    case 'token':
      return tokenCommand(sub, rest, values);
    case 'audit':
      return auditCommand(sub, rest, values);
    case 'approvals': {
      const r = await approvalsCommand(readConfig(values.config), sub, rest, values);
      if (!r.ok) fail(r.message, r.code);
      process.stdout.write(r.out);
      return;
    }
    case 'schema':
      process.stdout.write(JSON.stringify(firmaConfigJsonSchema(), null, 2) + '\n');
      return;
    case 'version': {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
      process.stdout.write(`firma ${pkg.version}\n`);
      return;
    }
    default:
      fail(`firma: unknown command ${JSON.stringify(command)}\n\n${USAGE}`, 2);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`firma: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
