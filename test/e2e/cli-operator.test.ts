/**
 * The CLI as an operator uses it beside a running sidecar: from another folder, in a shell that does not
 * hold the provider keys the sidecar injects.
 *   - only `firma start` needs a credential's variable (`check` warns, or fails with --require-env);
 *   - `firma audit verify LOG` uses the key of the config the log belongs to, and a wrong key is
 *     reported as "signed by another key", never in the words used for an edited line;
 *   - `firma audit tail` shows why a request was denied (the reason), not only where (the rule);
 *   - `firma check` reports config, mapping and Cedar errors in one run, each location once.
 */
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configDir, loopbackSidecar, spawnSidecar, writeDecisionFiles } from '../helpers/sidecar.js';
import { useUpstream } from '../helpers/upstream.js';
import { curl, runFirma } from '../helpers/clients.js';
import type { Test } from '../helpers/expect.js';

const up = useUpstream(t);
const SECRET = 'sk-real-provider-key-4f1e9a';
/** The operator's shell: PATH and HOME, no provider keys. */
const SHELL: NodeJS.ProcessEnv = { HOME: process.env['HOME'] };

const CREDENTIALS = `
[[credentials]]
host = "api.openai.com"
header = "Authorization"
prefix = "Bearer "
mode = "basic"
value_from_env = "OPENAI_REAL_KEY"
`;

/** A sidecar folder whose firma.toml injects OPENAI_REAL_KEY; it has served one request and stopped. */
async function servedFolder(t: Test, opts: { capabilities?: string } = {}): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'firma-operator-'));
  const decisions = writeDecisionFiles(dir, opts.capabilities !== undefined ? { capabilities: opts.capabilities } : {});
  writeFileSync(join(dir, 'firma.toml'), loopbackSidecar() + CREDENTIALS + decisions);
  const sc = await spawnSidecar(['start'], { cwd: dir, env: { OPENAI_REAL_KEY: SECRET } });
  const r = await curl(['--proxy', `http://127.0.0.1:${sc.proxyPort}`, `${up.origin}/echo`]);
  t.equal(r.status, opts.capabilities === undefined ? 200 : 407, 'the sidecar served a request');
  sc.proc.kill('SIGTERM');
  t.equal(await sc.exited, 0);
  return dir;
}

t.test('issuing tokens, exporting the CA and reading the audit log do not need the injected secrets', async (t) => {
  const dir = await servedFolder(t);
  const runs = {
    caExport: await runFirma(['ca', 'export', '--env'], dir, SHELL),
    token: await runFirma(['token', 'issue', '--agent', 'agent-1', '--actions', 'test.call', '--scope', '127.0.0.1'], dir, SHELL),
    tail: await runFirma(['audit', 'tail'], dir, SHELL),
    verify: await runFirma(['audit', 'verify'], dir, SHELL),
  };
  for (const [name, r] of Object.entries(runs)) {
    t.equal(r.code, 0, `${name}: exit 0 (${r.stderr.trim()})`);
    t.notMatch(r.stderr, /OPENAI_REAL_KEY/, `${name}: says nothing of the credential variable`);
  }
  t.match(runs.caExport.stdout, /^export SSL_CERT_FILE=/m);
  t.match(runs.token.stdout, /^v4\.public\./);
  t.match(runs.tail.stdout, /allow .*GET 127\.0\.0\.1:\d+\/echo/);
  t.match(runs.verify.stdout, /^ok: \d+ events/);

  const check = await runFirma(['check'], dir, SHELL);
  t.equal(check.code, 0, 'check: the file is valid');
  t.match(check.stderr, /^warning: .*firma\.toml:\d+:\d+: credentials\[0\]\.value_from_env: environment variable OPENAI_REAL_KEY is not set in this shell/m);
  const strict = await runFirma(['check', '--require-env'], dir, SHELL);
  t.equal(strict.code, 1, 'check --require-env: an unset variable is an error');
  t.match(strict.stderr, /firma\.toml:\d+:\d+: credentials\[0\]\.value_from_env: environment variable OPENAI_REAL_KEY is not set/);
  const start = await runFirma(['start'], dir, SHELL);
  t.equal(start.code, 1, 'start refuses without the secret');
  t.match(start.stderr, /firma\.toml:\d+:\d+: credentials\[0\]\.value_from_env: environment variable OPENAI_REAL_KEY is not set/);
  const all = Object.values(runs).concat([check, strict, start]).map((r) => r.stdout + r.stderr).join('\n');
  t.notOk(all.includes(SECRET), 'the secret appears in no output');
});

t.test('audit verify from another folder uses the log’s key; a wrong key is "signed by another key"', async (t) => {
  const dir = await servedFolder(t);
  const log = join(dir, 'audit', 'audit.jsonl');
  const elsewhere = mkdtempSync(join(tmpdir(), 'firma-elsewhere-'));
  mkdirSync(join(elsewhere, 'keys'));
  const other = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
  writeFileSync(join(elsewhere, 'keys', 'audit.pub'), other);

  const found = await runFirma(['audit', 'verify', log], elsewhere, SHELL);
  t.equal(found.code, 0, found.stderr);
  t.match(found.stdout, `verified with key ${join(dir, 'keys', 'audit.pub')} (fingerprint sha256:`);
  const start = readFileSync(log, 'utf8').split('\n')[0] ?? '';
  const recorded = /audit_key=(sha256:[0-9a-f]{32})/.exec(start)?.[1];
  t.ok(recorded !== undefined, 'the start event records the signing key’s fingerprint');
  t.match(found.stdout, `(fingerprint ${recorded})`);

  const wrong = await runFirma(['audit', 'verify', log, '--public-key', join(elsewhere, 'keys', 'audit.pub')], elsewhere, SHELL);
  t.equal(wrong.code, 1);
  // Named at the first signature, the first checkpoint (the events before it carry none).
  const firstSigned = readFileSync(log, 'utf8').split('\n').findIndex((l) => l.includes('"sig":')) + 1;
  t.ok(firstSigned > 1, `the first signature is the checkpoint on line ${firstSigned}`);
  t.match(wrong.stderr, `audit.jsonl:${firstSigned}: signed by another key (fingerprint ${recorded}), not this one (fingerprint sha256:`);
  t.notMatch(wrong.stderr, /bad signature|edited/, 'not the words of tampering');

  // A log really edited still reads as edited, with its own key.
  const edited = readFileSync(log, 'utf8').replace('"seq":2,', '"seq":2,"x":1,');
  const copy = join(dir, 'audit', 'edited.jsonl');
  writeFileSync(copy, edited);
  const tampered = await runFirma(['audit', 'verify', copy, '--public-key', join(dir, 'keys', 'audit.pub')], elsewhere, SHELL);
  t.equal(tampered.code, 1);
  t.match(tampered.stderr, /edited\.jsonl:2: edited \(hash mismatch\)/);
});

t.test('audit tail shows the reason a request was denied', async (t) => {
  const dir = await servedFolder(t, { capabilities: 'required = true' });
  const sc = await spawnSidecar(['start'], { cwd: dir, env: { OPENAI_REAL_KEY: SECRET } });
  t.teardown(() => sc.proc.kill('SIGKILL'));
  const issued = await runFirma(['token', 'issue', '--agent', 'agent-7', '--actions', 'test.call', '--scope', 'other.example'], dir, SHELL);
  t.equal(issued.code, 0, issued.stderr);
  const token = issued.stdout.split('\n')[0] ?? '';
  const r = await curl(['--proxy', `http://agent-7:${token}@127.0.0.1:${sc.proxyPort}`, `${up.origin}/echo`]);
  t.equal(r.status, 403);
  sc.proc.kill('SIGTERM');
  await sc.exited;
  const tail = await runFirma(['audit', 'tail', '--decision', 'deny'], dir, SHELL);
  t.equal(tail.code, 0, tail.stderr);
  t.match(tail.stdout, /deny {2}agent-7 {2}GET 127\.0\.0\.1:\d+\/echo {2}test\.call\/low {2}capability:out_of_scope \(\S+:\d+\)/);
  t.match(tail.stdout, /deny {2}local-agent .*capability:token_missing/, 'the request without a token, by its reason');
});

t.test('firma check: config, mapping and Cedar errors in one run, each location once', async (t) => {
  const dir = configDir(`
[sidecar]
log_level = "loud"
[[sidecar.connector.hosts]]
host = "api.example.com"
rps = -1
[sidecar.mapping]
rules_paths = ["mappings/*.toml"]
[sidecar.policy]
dir = "policies"
[sidecar.capabilities]
required = false
`);
  mkdirSync(join(dir, 'mappings'));
  mkdirSync(join(dir, 'policies'));
  writeFileSync(join(dir, 'mappings', 'bad.toml'), '[[rules]]\nhost = "api.example.com"\nrisk = "extreme"\naction_class = "x.y"\n');
  writeFileSync(join(dir, 'policies', 'typo.cedar'), 'permit(principal, action, resource) when { context.x == };\n');
  const r = await runFirma(['check'], dir, SHELL);
  t.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n');
  t.match(lines[0], /firma\.toml:3:1: sidecar\.log_level: expected one of/, 'the config’s errors');
  t.match(lines[1], /firma\.toml:6:1: sidecar\.connector\.hosts\[0\]\.rps: /);
  t.ok(lines.some((l) => /mappings\/bad\.toml:3:\d+: rules\[0\]\.risk: /.test(l)), `the mapping error: ${r.stderr}`);
  const cedar = lines.find((l) => l.includes('typo.cedar'));
  t.match(cedar, /policies\/typo\.cedar:1:\d+: [^:]*failed to parse|policies\/typo\.cedar:1:\d+: unexpected/, 'the Cedar error');
  t.notMatch(cedar, /typo\.cedar:1:\d+: typo\.cedar:1:/, 'its location once');
});

t.test('firma ca export --admin prints the running sidecar’s CA; every export says which CA it printed', async (t) => {
  const dir = configDir(loopbackSidecar());
  const sc = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => sc.proc.kill('SIGKILL'));
  const elsewhere = mkdtempSync(join(tmpdir(), 'firma-elsewhere-'));
  const own = readFileSync(join(dir, 'certs', 'ca.crt'), 'utf8');

  const fetched = await runFirma(['ca', 'export', '--admin', `http://127.0.0.1:${sc.adminPort}`], elsewhere, SHELL);
  t.equal(fetched.code, 0, fetched.stderr);
  t.equal(fetched.stdout, own, 'the very certificate the sidecar signs with');
  t.match(fetched.stderr, `the CA served by http://127.0.0.1:${sc.adminPort}/ca.crt, sha256 `);

  const local = await runFirma(['ca', 'export'], dir, SHELL);
  t.equal(local.stdout, own);
  t.match(local.stderr, `the CA in ${join(dir, 'certs')} (config: ${join(dir, 'firma.toml')}), sha256 `);

  const none = await runFirma(['ca', 'export'], elsewhere, SHELL);
  t.equal(none.code, 1, 'no CA here');
  t.match(none.stderr, /config: built-in defaults.*firma ca export --admin/, 'the hint names the config used and the way to the running one');

  const both = await runFirma(['ca', 'export', '--admin', `http://127.0.0.1:${sc.adminPort}`, '--env'], elsewhere, SHELL);
  t.equal(both.code, 2);
  t.match(both.stderr, /--env needs the certificate in a file/);
});
