import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, symlinkSync, unlinkSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ProxyAgent, request } from 'undici';
import { useUpstream } from '../helpers/upstream.js';
import { startTestSidecar, CLI, type TestSidecar } from '../helpers/sidecar.js';
import { curl, runFirma, type CliRun } from '../helpers/clients.js';
import { issueToken } from '../../src/enforce/capability/tokens.js';

const up = useUpstream(t);
const tlsUp = useUpstream(t, { tls: true });

const RULES = `
[[rules]]
host = "127.0.0.1"
path = "/echo"
action_class = "demo.call"
risk = "low"

[[rules]]
host = "127.0.0.1"
path = "/hang"
action_class = "demo.call"
risk = "low"

[[rules]]
host = "127.0.0.1"
path = "/bytes"
action_class = "demo.call"
risk = "low"

[[rules]]
host = "127.0.0.1"
path = "/admin/**"
action_class = "demo.admin"
risk = "critical"
`;

interface Ev {
  type: string;
  seq: number;
  request_id: string | null;
  [k: string]: unknown;
}

function events(sc: TestSidecar): Ev[] {
  return readFileSync(join(sc.dir, 'audit', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Ev);
}

const firma = (args: string[], cwd: string): Promise<CliRun> => runFirma(args, cwd);

t.test('mixed traffic: one decision event per request, one outcome per dispatch, verify passes; tampering is named', async (t) => {
  const secret = `sk-audit-${randomBytes(12).toString('hex')}`;
  process.env['FIRMA_AUDIT_TEST_KEY'] = secret;
  t.teardown(() => {
    delete process.env['FIRMA_AUDIT_TEST_KEY'];
  });
  const sc = await startTestSidecar(`
[[sidecar.connector.hosts]]
host = "${up.hostPort}"
timeout_ms = 500

[[sidecar.connector.hosts]]
host = "127.0.0.1:${tlsUp.port}"
rps = 1
burst = 1
timeout_ms = 400  # room for a first TLS handshake on a busy box; the next token is ~1 s away, so the second request is refused at once

[[credentials]]
host = "127.0.0.1:${tlsUp.port}"
mode = "basic"
value_from_env = "FIRMA_AUDIT_TEST_KEY"
prefix = "Bearer "
`, { rules: RULES, capabilities: 'required = true', mappingExtra: 'default_protected = false' });
  const keys = join(sc.dir, 'keys');
  const { token } = await issueToken({ signingKeyFile: join(keys, 'capability.key'), publicKeyFile: join(keys, 'capability.pub'), agent: 'auditor', actions: ['*'], scope: '127.0.0.1', ttlMs: 3_600_000 });
  const proxy = `http://auditor:${token}@127.0.0.1:${sc.proxyPort}`;
  const allowed = await curl(['--proxy', proxy, '-H', 'Cookie: session=cookie-secret', `${up.origin}/echo?api_key=query-secret&x=1`]);
  const denied = await curl(['--proxy', proxy, `${up.origin}/admin/drop`]);
  const timeout = await curl(['--proxy', proxy, `${up.origin}/hang`]);
  const injected = await curl(['--proxy', proxy, '--cacert', sc.caPath, `${tlsUp.origin}/echo`]);
  const limited = await curl(['--proxy', proxy, '--cacert', sc.caPath, `${tlsUp.origin}/echo`]);
  const noToken = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo`]);
  const passthrough = await curl(['--proxy', sc.proxyUrl, '-H', 'Authorization: Bearer agent-own-secret', `${up.origin}/status/200`]);
  t.same([allowed.status, denied.status, timeout.status, injected.status, limited.status, noToken.status, passthrough.status], [200, 403, 504, 200, 429, 407, 200]);
  await sc.stop();

  const all = events(sc);
  t.same(all.map((e) => e.seq), all.map((_e, i) => i + 1), 'seq is gapless from 1');
  t.equal(all[0]?.type, 'lifecycle');
  t.equal(all[all.length - 1]?.type, 'lifecycle');
  const byRequest = new Map<string, Ev[]>();
  for (const e of all) if (e.request_id !== null) byRequest.set(e.request_id, [...(byRequest.get(e.request_id) ?? []), e]);
  const decisions = all.filter((e) => e.type === 'decision');
  t.equal(decisions.length, 7, 'one decision event per request');
  t.equal(new Set(decisions.map((e) => e.request_id)).size, 7);
  for (const [id, evs] of byRequest) {
    t.equal(evs.filter((e) => e.type === 'decision').length, 1, `request ${id.slice(0, 8)}: exactly one decision`);
    t.ok(evs.filter((e) => e.type === 'outcome').length <= 1, 'at most one outcome');
  }
  const d = (reason: string): Ev | undefined => decisions.find((e) => e['reason'] === reason);
  t.equal(d('policy_deny')?.['decision'], 'deny');
  t.same(d('policy_deny')?.['policy_ids'], ['default.deny-critical']);
  t.equal(d('token_missing')?.['stage'], 'capability');
  const allowEvents = decisions.filter((e) => e['decision'] === 'allow');
  t.equal(allowEvents.length, 4, 'allowed: plain, timeout, injected, rate-limited (the connector failed after the allow)');
  t.ok(allowEvents.every((e) => typeof e['token_id'] === 'string' && typeof e['policy_hash'] === 'string'));
  t.match(String(allowEvents[0]?.['path']), /^\/echo\?api_key=REDACTED&x=REDACTED$/, 'query values redacted');
  const pass = decisions.find((e) => e['decision'] === 'passthrough');
  t.match(pass, { action_class: null, path: '/status/200', token_id: null }, 'unclassified traffic is audited as passthrough');
  const outcomes = all.filter((e) => e.type === 'outcome');
  t.equal(outcomes.length, 5, 'one outcome per dispatched request');
  t.match(outcomes.find((e) => e.request_id === pass?.request_id), { status: 200, error: null, credential_injected: false }, 'passthrough outcome');
  const plain = outcomes.find((e) => e.request_id === allowEvents[0]?.request_id);
  t.match(plain, { status: 200, error: null, credential_injected: false, bytes_in: 0 });
  t.ok(Number(plain?.['bytes_out']) > 0 && typeof plain?.['duration_ms'] === 'number', 'bytes and duration recorded');
  const o = (pred: (e: Ev) => boolean): Ev | undefined => outcomes.find(pred);
  t.equal(o((e) => e['error'] === 'timeout')?.['status'], 504);
  t.equal(o((e) => e['error'] === 'rate_limited')?.['status'], 429);
  const inj = o((e) => e['credential_injected'] === true);
  t.equal(inj?.['status'], 200);
  t.equal(inj?.['response_hash'], `sha256:${createHash('sha256').update(injected.body).digest('hex')}`, 'response_hash = sha256 of what the client received');
  // Secrets appear nowhere in the audit log.
  const text = readFileSync(join(sc.dir, 'audit', 'audit.jsonl'), 'utf8');
  for (const s of [secret, token, 'cookie-secret', 'query-secret', 'agent-own-secret', 'Bearer ', 'Proxy-Authorization']) t.notOk(text.includes(s), `no ${s.slice(0, 14)}… in the audit log`);
  const logs = sc.logs.join('\n');
  for (const s of [secret, token, 'cookie-secret', 'query-secret', 'agent-own-secret']) t.notOk(logs.includes(s), `no ${s.slice(0, 14)}… in the logs`);

  const config = join(sc.dir, 'firma.toml');
  const ok = await firma(['audit', 'verify', '--config', config], sc.dir);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /^ok: \d+ events, seq 1\.\.\d+, chain and every signature valid \(\d+ checkpoints?\)\nhead hash [0-9a-f]{64}/);
  const key = await firma(['audit', 'key', '--config', config], sc.dir);
  t.match(key.stdout, /^-----BEGIN PUBLIC KEY-----/);
  const tail = await firma(['audit', 'tail', '--decision', 'deny', '--config', config], sc.dir);
  t.match(tail.stdout, /admin\/drop/);
  t.notMatch(tail.stdout, /\/echo\?/, 'filtered to denies');

  // Tampering, each named with its line.
  const lines = text.trim().split('\n');
  const tamper = async (name: string, mutated: string[], expected: RegExp): Promise<void> => {
    const file = join(sc.dir, `tampered-${name}.jsonl`);
    writeFileSync(file, mutated.join('\n') + '\n');
    const r = await firma(['audit', 'verify', file, '--config', config], sc.dir);
    t.equal(r.code, 1, `${name}: verify fails`);
    t.match(r.stderr, expected, `${name}: ${r.stderr.trim()}`);
  };
  const edited = [...lines];
  edited[3] = (edited[3] as string).replace('"ts":"2', '"ts":"3');
  await tamper('edit', edited, /tampered-edit\.jsonl:4: edited/);
  await tamper('delete', lines.filter((_l, i) => i !== 4), /tampered-delete\.jsonl:5: deleted/);
  const swapped = [...lines];
  [swapped[2], swapped[3]] = [swapped[3] as string, swapped[2] as string];
  await tamper('swap', swapped, /tampered-swap\.jsonl:3: /);
  // A copy of the first checkpoint with a forged signature, inserted before it (events carry no sig: signatures = "checkpoint").
  const cp = lines.findIndex((l) => l.includes('"event":"checkpoint"'));
  t.ok(cp > 0, 'the log has checkpoints');
  const forged = [...lines];
  forged.splice(cp, 0, (lines[cp] as string).replace(/"sig":"[^"]+"/, '"sig":"AAAA"'));
  await tamper('insert', forged, new RegExp(`tampered-insert\\.jsonl:${cp + 1}: bad signature \\(the checkpoint over seq \\d+\\.\\.\\d+\\)`));
});

t.test('2,000 requests at concurrency 50: 2,000 decision events, gapless, verified', async (t) => {
  const sc = await startTestSidecar('', { rules: RULES });
  const dispatcher = new ProxyAgent({ uri: sc.proxyUrl, proxyTunnel: false, connections: 50 });
  let next = 0;
  const statuses: number[] = [];
  await Promise.all(Array.from({ length: 50 }, async () => {
    while (next < 2000) {
      next++;
      const res = await request(`${up.origin}/echo`, { dispatcher });
      await res.body.text();
      statuses.push(res.statusCode);
    }
  }));
  await dispatcher.close();
  await sc.stop();
  t.equal(statuses.filter((s) => s === 200).length, 2000);
  const all = events(sc);
  t.equal(all.filter((e) => e.type === 'decision').length, 2000, '2,000 decision events');
  t.equal(all.filter((e) => e.type === 'outcome').length, 2000, '2,000 outcome events');
  t.same(all.map((e) => e.seq), all.map((_e, i) => i + 1), 'gapless');
  const v = await firma(['audit', 'verify', '--config', join(sc.dir, 'firma.toml')], sc.dir);
  t.equal(v.code, 0, v.stderr);
});

t.test('audit log unwritable (disk full): requests refused 503, readyz 503, recovery when writing works again', async (t) => {
  const base = join(startDir(), 'audit-full');
  mkdirSync(base, { recursive: true });
  const link = join(base, 'audit.jsonl');
  symlinkSync('/dev/full', link);
  const sc = await startTestSidecar(`
[audit]
path = "${link}"
`, { rules: RULES });
  t.teardown(() => sc.stop());
  await new Promise((r) => setTimeout(r, 300));
  const refused = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo`]);
  t.equal(refused.status, 503);
  t.equal((JSON.parse(refused.body) as Record<string, string>)['reason'], 'audit_unavailable');
  const ready = await curl([`${sc.adminUrl}/readyz`]);
  t.equal(ready.status, 503);
  t.match(ready.body, /audit log cannot be written/);
  // Space returns: the path now leads to a real file.
  unlinkSync(link);
  writeFileSync(link, '');
  let status = 0;
  for (let i = 0; i < 40 && status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 100));
    status = (await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo`])).status;
  }
  t.equal(status, 200, 'dispatching resumes by itself');
  t.equal((await curl([`${sc.adminUrl}/readyz`])).status, 200);
  await sc.stop();
  const text = readFileSync(link, 'utf8');
  t.match(text, /"event":"audit_recovered"/);
  const v = await firma(['audit', 'verify', link, '--public-key', join(sc.dir, 'keys', 'audit.pub')], sc.dir);
  t.equal(v.code, 0, `the chain survives the outage: ${v.stderr}`);
});

t.test('response_hash of a 50 MiB download equals sha256 of what the client received', async (t) => {
  const sc = await startTestSidecar('', { rules: RULES });
  const r = await curl(['--proxy', sc.proxyUrl, '--cacert', sc.caPath, '-o', join(sc.dir, 'big.bin'), `${tlsUp.origin}/bytes?mib=50`]);
  t.equal(r.status, 200, r.stderr);
  await sc.stop();
  const got = `sha256:${createHash('sha256').update(readFileSync(join(sc.dir, 'big.bin'))).digest('hex')}`;
  const outcome = events(sc).find((e) => e.type === 'outcome');
  t.equal(outcome?.['bytes_out'], 50 * 2 ** 20);
  t.equal(outcome?.['response_hash'], got);
});

t.test('response_hash of an empty body, a one-chunk body and a body in many chunks', async (t) => {
  const rules = `${RULES}\n[[rules]]\nhost = "127.0.0.1"\npath = "/status/*"\naction_class = "demo.call"\nrisk = "low"\n\n[[rules]]\nhost = "127.0.0.1"\npath = "/drip"\naction_class = "demo.call"\nrisk = "low"\n`;
  const sc = await startTestSidecar('', { rules });
  const agent = new ProxyAgent({ uri: sc.proxyUrl, requestTls: { ca: readFileSync(sc.caPath) } });
  t.teardown(() => agent.close());
  const bodies = new Map<string, Buffer>();
  for (const path of ['/status/204', '/status/200', '/drip?n=5&gap=5']) {
    const r = await request(`${tlsUp.origin}${path}`, { dispatcher: agent });
    t.equal(r.statusCode, path === '/status/204' ? 204 : 200, path);
    bodies.set(path, Buffer.from(await r.body.arrayBuffer()));
  }
  await sc.stop();
  const outcomes = events(sc).filter((e) => e.type === 'outcome');
  t.equal(outcomes.length, 3);
  const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  t.equal(bodies.get('/status/204')?.length, 0);
  t.same(outcomes.map((e) => e['response_hash']), [...bodies.values()].map(sha), 'each is the SHA-256 of what the client received');
  t.ok(Number(outcomes[2]?.['bytes_out']) > 0, 'the dripped body came through');
});

/** `firma audit tail -f` on the sidecar's log, killed at teardown; returns what it has printed so far. */
function followTail(t: { teardown: (fn: () => unknown) => void }, sc: TestSidecar, args: string[] = []): () => string {
  const tail = spawn(process.execPath, [CLI, 'audit', 'tail', '-f', ...args, '--config', join(sc.dir, 'firma.toml')], { cwd: sc.dir });
  t.teardown(() => tail.kill('SIGKILL'));
  let out = '';
  tail.stdout.on('data', (c: Buffer) => (out += c.toString()));
  return () => out;
}

function startDir(): string {
  return join('/tmp', `firma-audit-${randomBytes(4).toString('hex')}`);
}

t.test('stdout sink and `firma audit tail -f`: events show up as requests happen', async (t) => {
  const sc = await startTestSidecar('\n[audit]\nstdout = true\n', { rules: RULES });
  t.teardown(() => sc.stop());
  const out = followTail(t, sc);
  // The follower has read the existing file once it printed the start event; the deny comes after.
  for (let i = 0; i < 200 && !out().includes('lifecycle  start'); i++) await new Promise((res) => setTimeout(res, 50));
  t.match(out(), /lifecycle {2}start/, 'the existing events are printed first');
  const r = await curl(['--proxy', sc.proxyUrl, `${up.origin}/admin/tail-me`]);
  t.equal(r.status, 403);
  for (let i = 0; i < 200 && !out().includes('/admin/tail-me'); i++) await new Promise((res) => setTimeout(res, 50));
  t.match(out(), /deny .*\/admin\/tail-me/, 'the new deny appears in the followed view');
  t.ok(sc.logs.some((l) => l.includes('"msg":"audit"') && l.includes('/admin/tail-me')), 'and as a JSON line on the logger (stdout sink)');
  // One line per request: an allowed call's decision and outcome together.
  const ok = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo?tail=1`]);
  t.equal(ok.status, 200);
  for (let i = 0; i < 200 && !out().includes('/echo?tail='); i++) await new Promise((res) => setTimeout(res, 50));
  t.match(out(), /allow {2}local-agent {2}GET 127\.0\.0\.1:\d+\/echo\?tail=REDACTED {2}demo\.call\/low {2}\S+(?: \(\S+\))? {2}→ 200 {2}in=0B out=\d+B {2}[\d.]+ms {2}req=/, 'decision and outcome on one line');
  t.notMatch(out(), /outcome {2}local-agent {2}200/, 'no separate outcome line for it');
});

t.test('[audit] stdout writes every event whatever log_level is', async (t) => {
  const sc = await startTestSidecar('\n[audit]\nstdout = true\n', { rules: RULES, sidecar: 'log_level = "warn"' });
  t.teardown(() => sc.stop());
  const r = await curl(['--proxy', sc.proxyUrl, `${up.origin}/admin/quiet`]);
  t.equal(r.status, 403);
  for (let i = 0; i < 40 && !sc.logs.some((l) => l.includes('/admin/quiet')); i++) await new Promise((res) => setTimeout(res, 50));
  t.ok(sc.logs.some((l) => l.includes('"msg":"audit"') && l.includes('/admin/quiet')), 'the audit line is on stdout');
  t.notOk(sc.logs.some((l) => l.includes('"msg":"request"')), 'while info-level log lines are not');
});

t.test('firma audit tail: one line per request; -f shows a long stream as in progress, then its outcome', async (t) => {
  const sc = await startTestSidecar('', { rules: RULES + '\n[[rules]]\nhost = "127.0.0.1"\npath = "/sse"\naction_class = "demo.stream"\nrisk = "low"\n' });
  t.teardown(() => sc.stop());
  const out = followTail(t, sc, ['--decision', 'allow']);
  // The follower is reading once an allowed request shows up (a loaded machine starts it slowly).
  const ready = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo?ready=1`]);
  t.equal(ready.status, 200);
  for (let i = 0; i < 400 && !out().includes('/echo?ready='); i++) await new Promise((res) => setTimeout(res, 50));
  const stream = curl(['--proxy', sc.proxyUrl, `${up.origin}/sse?n=40&gap=100`]);
  for (let i = 0; i < 100 && !out().includes('(in progress)'); i++) await new Promise((res) => setTimeout(res, 50));
  t.match(out(), /allow .*\/sse\?n=REDACTED&gap=REDACTED .* {2}\(in progress\)/, 'a stream still running after a second is shown');
  t.equal((await stream).status, 200);
  for (let i = 0; i < 100 && !/outcome .* 200/.test(out()); i++) await new Promise((res) => setTimeout(res, 50));
  t.match(out(), /outcome {2}local-agent {2}200 /, 'its outcome follows on its own line');
  t.notMatch(out(), /lifecycle/, '--decision allow: lifecycle events filtered out');
  await sc.stop();
  // Read whole (no -f): every line a request.
  const once = await firma(['audit', 'tail', '--config', join(sc.dir, 'firma.toml')], sc.dir);
  t.match(once.stdout, /allow .*\/sse\?.* → 200 /, 'afterwards: one merged line');
  t.notMatch(once.stdout, /^\S+ {2}outcome /m);
});

t.test('firma audit tail -f across rotations: every request once, none lost or mixed', async (t) => {
  const sc = await startTestSidecar('\n[audit]\nmax_file_bytes = 4096\n', { rules: RULES });
  t.teardown(() => sc.stop());
  const out = followTail(t, sc);
  for (let i = 0; i < 200 && !out().includes('lifecycle  start'); i++) await new Promise((res) => setTimeout(res, 50));
  const n = 40; // ~2 KiB of events per request: the file rotates many times meanwhile
  for (let i = 0; i < n; i++) {
    const r = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo?i=${i}`]);
    t.equal(r.status, 200);
    if (i % 8 === 7) await new Promise((res) => setTimeout(res, 300)); // let the follower see some rotations happen
  }
  const lines = (): string[] => out().split('\n').filter((l) => / → 200 /.test(l));
  for (let i = 0; i < 100 && lines().length < n; i++) await new Promise((res) => setTimeout(res, 50));
  const rotated = readdirSync(join(sc.dir, 'audit')).filter((f) => /\.jsonl\.\d+$/.test(f));
  t.ok(rotated.length >= 3, `the log rotated (${rotated.length} files)`);
  t.equal(lines().length, n, 'every request printed once');
  t.equal(new Set(lines().map((l) => /req=(\S+)/.exec(l)?.[1])).size, n, 'no request twice');
  t.notMatch(out(), /unparsable/, 'no line cut or mixed');
});
