import t from 'tap';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync, mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { REPO, configDir, loopbackSidecar, spawnSidecar } from '../helpers/sidecar.js';
import { startUpstream, useUpstream } from '../helpers/upstream.js';
import { curl, runFirma, type CliRun } from '../helpers/clients.js';

const firma = (args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<CliRun> => runFirma(args, cwd, env);

const QUIET = loopbackSidecar('drain_timeout_ms = 5000');

const up = useUpstream(t);

t.test('firma check: every error as file:line:col, exit 1', async (t) => {
  const dir = configDir(`# a comment
[sidecar]
log_level = "loud"
drain_timeout_ms = -5

[sidecar.interceptor]
listn = "127.0.0.1:8080"

[sidecar.interceptor.mitm]
bypass_hosts = ["ok.example", "../../x"]
`);
  const file = join(dir, 'firma.toml');
  const r = await firma(['check', '--config', file], dir);
  t.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n');
  t.equal(lines.length, 4, r.stderr);
  t.match(lines[0], new RegExp(`^${file}:3:1: sidecar\\.log_level: `));
  t.match(lines[1], new RegExp(`^${file}:4:1: sidecar\\.drain_timeout_ms: `));
  t.match(lines[2], new RegExp(`^${file}:7:1: sidecar\\.interceptor\\.listn: unknown key "listn" \\(did you mean "listen"\\?\\)`));
  t.match(lines[3], new RegExp(`^${file}:10:\\d+: sidecar\\.interceptor\\.mitm\\.bypass_hosts\\[1\\]: `));

  const syntax = configDir('[sidecar\nlog_level = "info"\n');
  const s = await firma(['check'], syntax);
  t.equal(s.code, 1);
  t.match(s.stderr, /firma\.toml:1:\d+: /, 'TOML syntax error with its position');

  const missing = await firma(['check', '--config', '/nonexistent/firma.toml'], dir);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /\/nonexistent\/firma\.toml:1:1: file not found/);
});

t.test('firma check: the shipped firma.toml is valid and documents the defaults', async (t) => {
  const r = await firma(['check', '--config', join(REPO, 'firma.toml')], REPO);
  t.equal(r.code, 0, r.stderr);
  const schema = JSON.parse(readFileSync(join(REPO, 'firma.schema.json'), 'utf8')) as unknown;
  const fresh = await firma(['schema'], REPO);
  t.same(JSON.parse(fresh.stdout), schema, 'firma.schema.json is up to date (npm run schema)');
});

t.test('firma ca init / export / export --env', async (t) => {
  const dir = configDir(QUIET);
  const noCa = await firma(['ca', 'export'], dir);
  t.equal(noCa.code, 1);
  t.match(noCa.stderr, /firma ca init/);
  const init = await firma(['ca', 'init'], dir);
  t.equal(init.code, 0, init.stderr);
  t.match(init.stdout, /^created: .*certs\/ca\.crt/);
  t.equal(statSync(join(dir, 'certs', 'ca.key')).mode & 0o777, 0o600, 'key is 0600');
  const again = await firma(['ca', 'init'], dir);
  t.match(again.stdout, /^exists: /, 'never regenerated');
  t.equal(again.stdout.split('\n')[1], init.stdout.split('\n')[1], 'same fingerprint');
  const pem = await firma(['ca', 'export'], dir);
  t.equal(pem.stdout, readFileSync(join(dir, 'certs', 'ca.crt'), 'utf8'));
  const env = await firma(['ca', 'export', '--env'], dir);
  for (const name of ['SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'NODE_EXTRA_CA_CERTS', 'CURL_CA_BUNDLE']) {
    t.match(env.stdout, new RegExp(`^export ${name}=.*ca\\.crt'?$`, 'm'), name);
  }
  // The env lines work: curl trusts the MITM leaf with nothing but them.
  const sc = await spawnSidecar(['start'], { cwd: dir });
  try {
    const https = await startUpstream({ tls: true });
    const caFile = /CURL_CA_BUNDLE='?([^'\n]+)'?/.exec(env.stdout)?.[1] ?? '';
    const r = await curl(['--proxy', `http://127.0.0.1:${sc.proxyPort}`, `${https.origin}/echo`], { env: { CURL_CA_BUNDLE: caFile } });
    t.equal(r.status, 200, r.stderr);
    await https.close();
  } finally {
    sc.proc.kill('SIGKILL');
  }
});

t.test('start refuses a world-readable or corrupt CA and never regenerates it', async (t) => {
  const dir = configDir(QUIET);
  t.equal((await firma(['ca', 'init'], dir)).code, 0);
  const key = join(dir, 'certs', 'ca.key');
  const cert = join(dir, 'certs', 'ca.crt');
  chmodSync(key, 0o644);
  const open = await firma(['start'], dir);
  t.equal(open.code, 1);
  t.match(open.stderr, /chmod 600/);
  chmodSync(key, 0o600);
  const original = readFileSync(cert, 'utf8');
  const broken = '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n';
  writeFileSync(cert, broken);
  const corrupt = await firma(['start'], dir);
  t.equal(corrupt.code, 1);
  t.match(corrupt.stderr, /ca\.crt/);
  t.equal(readFileSync(cert, 'utf8'), broken, 'left as it was: not silently replaced');
  t.not(broken, original);
});

t.test('built-in defaults when there is no firma.toml (what `npm start` runs from an empty folder)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firma-empty-'));
  const sc = await spawnSidecar(['start'], { cwd: dir });
  try {
    const ready = sc.lines.map((l) => JSON.parse(l) as Record<string, string>).find((o) => o['msg'] === 'firma sidecar ready');
    t.equal(ready?.['config'], '(built-in defaults)');
    t.equal(ready?.['proxy'], '127.0.0.1:8080');
    t.equal(ready?.['admin'], '127.0.0.1:9090');
    t.ok(existsSync(join(dir, 'certs', 'ca.crt')), 'CA created on first start');
    const health = await curl(['http://127.0.0.1:9090/healthz']);
    t.equal(health.status, 200);
    const ready2 = await curl(['http://127.0.0.1:9090/readyz']);
    t.equal(ready2.status, 200);
    t.equal((JSON.parse(ready2.body) as { ready: boolean }).ready, true);
  } finally {
    sc.proc.kill('SIGTERM');
    t.equal(await sc.exited, 0, 'SIGTERM exits 0');
  }
});

t.test('SIGTERM mid-download: stop accepting, drain the in-flight response, exit 0', async (t) => {
  const dir = configDir(QUIET);
  const sc = await spawnSidecar(['start'], { cwd: dir });
  const proxy = `http://127.0.0.1:${sc.proxyPort}`;
  const download = curl(['--proxy', proxy, `${up.origin}/drip?n=10&gap=150`]);
  await new Promise((r) => setTimeout(r, 400));
  sc.proc.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 200));
  const readyz = await curl([`http://127.0.0.1:${sc.adminPort}/readyz`]);
  t.equal(readyz.status, 503, 'not ready while draining');
  const refused = await new Promise<string>((resolve) => {
    const s = net.connect(sc.proxyPort, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
  t.equal(refused, 'ECONNREFUSED', 'new connections are refused');
  const r = await download;
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.body.split('\n').filter((l) => l.startsWith('chunk')).length, 10, 'the in-flight download completed');
  t.equal(await sc.exited, 0, 'exit code 0');
  t.ok(sc.lines.some((l) => l.includes('"msg":"stopped"')), 'logged its stop');
});

t.test('SIGTERM with a download longer than drain_timeout_ms: cut at the bound, still exit 0', async (t) => {
  const dir = configDir(QUIET.replace('drain_timeout_ms = 5000', 'drain_timeout_ms = 300'));
  const sc = await spawnSidecar(['start'], { cwd: dir });
  const download = curl(['--proxy', `http://127.0.0.1:${sc.proxyPort}`, `${up.origin}/drip?n=50&gap=100`]);
  await new Promise((r) => setTimeout(r, 300));
  sc.proc.kill('SIGTERM');
  t.equal(await sc.exited, 0);
  const r = await download;
  t.not(r.exitCode, 0, 'the long download was cut');
  t.ok(sc.lines.some((l) => l.includes('"cut":1')), 'the cut is logged');
});

t.test('firma check: mapping and policy errors with file:line:col, all at once', async (t) => {
  const dir = configDir(`
[sidecar.mapping]
rules_paths = ["mappings/*.toml"]
[sidecar.policy]
dir = "policies"
`);
  mkdirSync(join(dir, 'mappings'));
  mkdirSync(join(dir, 'policies'));
  writeFileSync(join(dir, 'mappings', 'a.toml'), '[[rules]]\nhost = "api.example.com"\npath = "/v1/x"\naction_class = "demo.read"\nrisk = "low"\n');
  writeFileSync(join(dir, 'mappings', 'b.toml'), '[[rules]]\nhost = "api.example.com"\npath = "/v1/x"\naction_class = "demo.other"\nrisk = "severe"\n');
  writeFileSync(join(dir, 'policies', 'p.cedar'), [
    '@id("ok")',
    'permit (principal, action, resource) when { context.risk == "low" };',
    '',
    '@id("typo")',
    'forbid (principal, action == Firma::Action::"demo.read", resource) when { context.riskk == "high" };',
    '',
  ].join('\n'));
  const r = await firma(['check'], dir);
  t.equal(r.code, 1);
  t.match(r.stderr, /b\.toml:5:\d+: rules\[0\]\.risk: expected one of "low", "medium", "high", "critical", got "severe"/, 'mapping value error');
  t.match(r.stderr, /p\.cedar:5:\d+: typo: .*riskk/, 'policy schema error with file, line and policy id');
  const fixed = join(dir, 'mappings', 'b.toml');
  writeFileSync(fixed, '[[rules]]\nhost = "api.example.com"\npath = "/v1/x"\naction_class = "demo.other"\nrisk = "high"\n');
  const dup = await firma(['check'], dir);
  t.match(dup.stderr, /duplicate rule: .*a\.toml:1 and .*b\.toml:1/, 'duplicate rules name both files and lines');
  writeFileSync(fixed, '[[rules]]\nhost = "api.example.com"\npath = "/v2/x"\naction_class = "demo.other"\nrisk = "high"\n');
  writeFileSync(join(dir, 'policies', 'p.cedar'), '@id("ok")\npermit (principal, action, resource) when { context.risk == "low" };\n');
  const ok = await firma(['check'], dir);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /ok — 2 mapping rules in 2 files, 1 policies/);
});

t.test('firma token issue / revoke from the command line', async (t) => {
  const dir = configDir(QUIET);
  const issued = await firma(['token', 'issue', '--agent', 'cli-agent', '--actions', 'llm.*,github.read', '--scope', 'api.openai.com/v1', '--ttl', '2h'], dir);
  t.equal(issued.code, 0, issued.stderr);
  t.match(issued.stdout, /^v4\.public\.[A-Za-z0-9_-]+\n$/, 'only the token on stdout');
  t.match(issued.stderr, /token id [A-Za-z0-9_-]+, agent cli-agent, scope api\.openai\.com\/v1, expires /);
  t.match(issued.stderr, /created the signing key pair/);
  t.equal(statSync(join(dir, 'keys', 'capability.key')).mode & 0o777, 0o600);
  const jti = /token id ([A-Za-z0-9_-]+)/.exec(issued.stderr)?.[1] ?? '';
  const revoked = await firma(['token', 'revoke', jti], dir);
  t.match(revoked.stdout, /^revoked: /);
  t.match(readFileSync(join(dir, 'keys', 'revoked.txt'), 'utf8'), new RegExp(jti));
  const bad = await firma(['token', 'issue', '--agent', 'x', '--actions', 'llm*', '--scope', 'api.openai.com'], dir);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /firma token issue: /);
});
