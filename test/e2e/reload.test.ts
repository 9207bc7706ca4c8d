import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { useUpstream } from '../helpers/upstream.js';
import { REPO, spawnSidecar, startTestSidecar, writeDecisionFiles } from '../helpers/sidecar.js';
import { defaultConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/core/log.js';
import { Sidecar } from '../../src/sidecar.js';
import { changedKeys } from '../../src/reload/reloader.js';
import { issueToken, revokeToken } from '../../src/enforce/capability/tokens.js';
import { Writable } from 'node:stream';

import type { Test } from '../helpers/expect.js';

// ------------------------------------------------------------------------------------------ fixtures

const PERMIT_ALL = `@id("allow-all")
permit (principal, action, resource);
`;
/** PERMIT_ALL plus a forbid on /data/*: the decision for the traffic paths flips from allow to deny. */
const FORBID_DATA = `${PERMIT_ALL}
@id("forbid-data")
forbid (principal, action, resource) when { context.path like "/data/*" };
`;
/** Allows /data/* again, under a third policy hash. */
const FORBID_OTHER = `${PERMIT_ALL}
@id("forbid-other")
forbid (principal, action, resource) when { context.path like "/other/*" };
`;
const FORBID_DRIP = `${PERMIT_ALL}
@id("forbid-drip")
forbid (principal, action, resource) when { context.path == "/drip" };
`;

/** 200 on every path: an allowed request is a 200, a denied one the sidecar's 403. */
let ok: { server: http.Server; hostPort: string };
const up = useUpstream(t);
t.before(async () => {
  const server = http.createServer((_req, res) => res.end('ok\n'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  ok = { server, hostPort: `127.0.0.1:${(server.address() as AddressInfo).port}` };
});
t.teardown(async () => {
  ok.server.closeAllConnections();
  await new Promise<void>((r) => ok.server.close(() => r()));
});

// ------------------------------------------------------------------------------------------ helpers

async function waitFor(cond: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Replace a file the way editors and config management do: write a temp file, rename it over. */
function replaceFile(path: string, text: string): void {
  const dir = path.slice(0, path.lastIndexOf('/'));
  const tmp = join(dir, `.${path.slice(dir.length + 1)}.tmp-${process.pid}`);
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

interface Reply {
  readonly status: number | null;
  readonly error: string | null;
  readonly body: string;
}

function proxyGet(proxyPort: number, hostPort: string, path: string, agent: http.Agent | false = false, onResponse?: () => void): Promise<Reply> {
  return new Promise((resolve) => {
    const req = http.request(
      { host: '127.0.0.1', port: proxyPort, method: 'GET', path: `http://${hostPort}${path}`, headers: { host: hostPort }, agent },
      (res) => {
        onResponse?.();
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? null, error: null, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (err) => resolve({ status: res.statusCode ?? null, error: err.message, body: '' }));
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ status: null, error: err.code ?? err.message, body: '' }));
    req.setTimeout(20_000, () => req.destroy(new Error('client timeout')));
    req.end();
  });
}

interface Sample {
  readonly path: string;
  /** How many reloads the test had seen acknowledged when the request started. */
  readonly phase: number;
  readonly reply: Reply;
}

/**
 * Continuous traffic: `clients` keep-alive clients, each sending GET /data/<client>-<n> one after the
 * other until `done()` says so or `max` requests each (bounded either way).
 */
function traffic(proxyPort: number, opts: { clients: number; max: number; phase: () => number; done: (perClientAfter: number[]) => boolean }) {
  const samples: Sample[] = [];
  const counts: number[] = new Array<number>(opts.clients).fill(0);
  const afterLast: number[] = new Array<number>(opts.clients).fill(0);
  let target = Number.POSITIVE_INFINITY;
  const run = async (client: number): Promise<void> => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < opts.max && !opts.done(afterLast); i++) {
        const phase = opts.phase();
        const path = `/data/c${client}-${i}`;
        const reply = await proxyGet(proxyPort, ok.hostPort, path, agent);
        samples.push({ path, phase, reply });
        counts[client]!++;
        if (phase >= target) afterLast[client]!++;
      }
    } finally {
      agent.destroy();
    }
  };
  const finished = Promise.all(Array.from({ length: opts.clients }, (_, c) => run(c)));
  return {
    samples,
    counts,
    /** From now on, count the requests that start at or after `phase` (the final one). */
    countAfter(phase: number): void {
      target = phase;
    },
    finished,
  };
}

interface AuditEv {
  type: string;
  path?: string;
  decision?: string;
  policy_hash?: string | null;
  event?: string;
  detail?: string | null;
  request_id: string | null;
  status?: number;
}

function auditEvents(dir: string): AuditEv[] {
  return readFileSync(join(dir, 'audit', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as AuditEv);
}

interface LogLine {
  msg?: string;
  policy_hash?: string;
  trigger?: string;
  errors?: string[];
  key?: string;
  mapping_rules?: number;
}

function parseLines(lines: readonly string[]): LogLine[] {
  const out: LogLine[] = [];
  for (const l of lines) {
    try {
      out.push(JSON.parse(l) as LogLine);
    } catch {
      // not a JSON log line
    }
  }
  return out;
}

const reloadedLines = (lines: readonly string[]): LogLine[] => parseLines(lines).filter((l) => l.msg === 'configuration reloaded');

/**
 * The no-mixed-decision check: every reply is a 200 (allowed, from the upstream) or the sidecar's 403;
 * its one decision event says the same, under a policy hash whose verdict is exactly that; and a
 * request that started after reload k was acknowledged was decided under reload k or later.
 */
function checkSamples(t: Test, samples: readonly Sample[], events: readonly AuditEv[], hashes: readonly string[], expected: Readonly<Record<string, 200 | 403>>): void {
  const byPath = new Map<string, AuditEv[]>();
  for (const e of events) {
    if (e.type !== 'decision' || e.path === undefined) continue;
    const list = byPath.get(e.path);
    if (list === undefined) byPath.set(e.path, [e]);
    else list.push(e);
  }
  const problems: string[] = [];
  for (const s of samples) {
    if (s.reply.error !== null || (s.reply.status !== 200 && s.reply.status !== 403)) {
      problems.push(`${s.path}: failed (${s.reply.status ?? '-'} ${s.reply.error ?? ''} ${s.reply.body.slice(0, 120)})`);
      continue;
    }
    const evs = byPath.get(s.path) ?? [];
    if (evs.length !== 1) {
      problems.push(`${s.path}: ${evs.length} decision events`);
      continue;
    }
    const ev = evs[0]!;
    const hash = ev.policy_hash ?? '';
    const want = expected[hash];
    if (want === undefined) problems.push(`${s.path}: decided under unknown policy hash ${hash}`);
    else if (want !== s.reply.status) problems.push(`${s.path}: status ${s.reply.status} but its decision (${hash.slice(0, 8)}) means ${want}`);
    if ((ev.decision === 'allow') !== (s.reply.status === 200)) problems.push(`${s.path}: status ${s.reply.status} with decision ${ev.decision}`);
    if (hashes.indexOf(hash) < s.phase) problems.push(`${s.path}: started after reload ${s.phase} was acknowledged but decided under ${hashes.indexOf(hash)}`);
  }
  t.same(problems.slice(0, 10), [], `${samples.length} requests: none failed, none mixed`);
}

/** A config folder for a spawned sidecar: PERMIT_ALL policies, loopback upstreams allowed. */
function processDir(reload: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'firma-reload-'));
  const decisions = writeDecisionFiles(dir, { policies: { 'main.cedar': PERMIT_ALL } });
  writeFileSync(
    join(dir, 'firma.toml'),
    `[sidecar]
log_level = "info"
drain_timeout_ms = 5000
[sidecar.reload]
${reload}
[sidecar.interceptor]
listen = "127.0.0.1:0"
[sidecar.interceptor.mitm]
ca_dir = "certs"
[sidecar.admin]
listen = "127.0.0.1:0"
[sidecar.connector]
allow_private = ["127.0.0.1/32"]
${decisions}`,
  );
  return dir;
}

/**
 * (a) On a real process under continuous traffic (3 clients): swap PERMIT_ALL → FORBID_DATA with
 * `swap`, and check that no request failed, none was decided half-way, and every request that
 * started after the acknowledgement got the new decision.
 */
async function swapUnderTraffic(t: Test, reload: string, swap: (dir: string, pid: number) => void, trigger: string): Promise<void> {
  const dir = processDir(reload);
  const sc = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => {
    if (sc.proc.exitCode === null) sc.proc.kill('SIGKILL');
  });
  const started = parseLines(sc.lines).find((l) => l.msg === 'firma sidecar ready');
  const oldHash = started?.policy_hash ?? '';
  t.match(oldHash, /^[0-9a-f]{64}$/, 'ready line names the policy hash');
  const acks = (): number => reloadedLines(sc.lines).length;
  const load = traffic(sc.proxyPort, { clients: 3, max: 2000, phase: acks, done: (after) => after.every((n) => n >= 25) });
  await waitFor(() => load.counts.every((n) => n >= 15), 'traffic before the reload');
  swap(dir, sc.proc.pid!);
  await waitFor(() => acks() >= 1, 'the reload acknowledgement');
  load.countAfter(1);
  await load.finished;
  const reloaded = reloadedLines(sc.lines)[0]!;
  t.equal(reloaded.trigger, trigger, `reloaded by ${trigger}`);
  const newHash = reloaded.policy_hash ?? '';
  t.not(newHash, oldHash, 'a new policy hash');
  sc.proc.kill('SIGTERM');
  t.equal(await sc.exited, 0, 'clean exit after the reload');
  t.equal(reloadedLines(sc.lines).length, 1, 'exactly one reload');
  const events = auditEvents(dir);
  checkSamples(t, load.samples, events, [oldHash, newHash], { [oldHash]: 200, [newHash]: 403 });
  const before = load.samples.filter((s) => s.reply.status === 200).length;
  const after = load.samples.filter((s) => s.phase >= 1).length;
  t.ok(before >= 45 && after >= 75, `traffic on both sides of the swap (${before} allowed, ${after} after the acknowledgement)`);
  const lifecycle = events.filter((e) => e.type === 'lifecycle' && e.event === 'reload');
  t.equal(lifecycle.length, 1, 'one reload lifecycle event');
  t.match(lifecycle[0]?.detail ?? '', new RegExp(`^ok \\(${trigger}\\) policy_hash=${newHash}`), 'it names the trigger and the new policy hash');
}

// ------------------------------------------------------------------------------------------ (a)

t.test('SIGHUP on a real process under continuous traffic: no failed request, no mixed decision', async (t) => {
  await swapUnderTraffic(t, 'watch = false', (dir, pid) => {
    writeFileSync(join(dir, 'policies', 'main.cedar'), FORBID_DATA);
    process.kill(pid, 'SIGHUP');
  }, 'SIGHUP');
});

t.test('file watch on a real process under continuous traffic: an editor-style replace reloads once', async (t) => {
  await swapUnderTraffic(t, 'watch = true\ndebounce_ms = 200', (dir) => replaceFile(join(dir, 'policies', 'main.cedar'), FORBID_DATA), 'watch');
});

// ------------------------------------------------------------------------------------------ (b)

t.test('invalid policy, mapping and firma.toml are rejected with file:line:col; the old set keeps serving', async (t) => {
  const sc = await startTestSidecar('', { policies: { 'main.cedar': PERMIT_ALL }, sidecar: '[sidecar.reload]\nwatch = false' });
  t.teardown(() => sc.stop());
  const firmaToml = join(sc.dir, 'firma.toml');
  const goodToml = readFileSync(firmaToml, 'utf8');
  const oldHash = sc.sidecar.readiness()['policies']?.detail ?? '';
  let rejected = 0;
  const load = traffic(sc.proxyPort, { clients: 2, max: 5000, phase: () => 0, done: () => rejected >= 3 });
  const progress = async (): Promise<void> => {
    const seen = [...load.counts];
    await waitFor(() => load.counts.every((n, i) => n >= seen[i]! + 10), 'traffic between the reloads');
  };
  await progress();

  // A Cedar syntax error on line 4.
  writeFileSync(join(sc.dir, 'policies', 'broken.cedar'), '// broken\n\n@id("x")\npermit (principal, action resource);\n');
  const badPolicy = await sc.sidecar.reload();
  t.equal(badPolicy.ok, false, 'syntax error: rejected');
  if (!badPolicy.ok) t.match(badPolicy.errors.join('\n'), /policies\/broken\.cedar:4:\d+: /, 'names broken.cedar:4:col');
  rejected++;
  await progress();
  const readyz = await proxyless(`${sc.adminUrl}/readyz`);
  t.equal(readyz, 200, 'readyz stays 200');

  // A mapping file that is not valid TOML.
  writeFileSync(join(sc.dir, 'policies', 'broken.cedar'), FORBID_DATA.slice(PERMIT_ALL.length)); // fixed; now the mapping breaks
  writeFileSync(join(sc.dir, 'mappings', 'zz.toml'), '[[rules]]\nhost = "*"\naction_class = \n');
  const badMapping = await sc.sidecar.reload();
  t.equal(badMapping.ok, false, 'bad mapping file: rejected (and FORBID_DATA, valid on its own, is not applied)');
  if (!badMapping.ok) t.match(badMapping.errors.join('\n'), /mappings\/zz\.toml:3:\d+: /, 'names zz.toml:3:col');
  rejected++;
  await progress();

  // firma.toml with a bad value and an unknown key.
  writeFileSync(join(sc.dir, 'mappings', 'zz.toml'), '');
  const badToml = goodToml.replace('[sidecar]\n', '[sidecar]\nmode = "block"\nwatchh = 1\n');
  writeFileSync(firmaToml, badToml);
  const modeLine = badToml.split('\n').indexOf('mode = "block"') + 1;
  const badConfig = await sc.sidecar.reload();
  t.equal(badConfig.ok, false, 'bad firma.toml: rejected');
  if (!badConfig.ok) {
    t.match(badConfig.errors.join('\n'), new RegExp(`firma\\.toml:${modeLine}:1: sidecar\\.mode: `), 'names firma.toml:line:col of mode');
    t.match(badConfig.errors.join('\n'), new RegExp(`firma\\.toml:${modeLine + 1}:1: sidecar\\.watchh: unknown key`), 'and of the unknown key');
  }
  await progress();
  rejected++;
  await load.finished;
  t.equal(await proxyless(`${sc.adminUrl}/readyz`), 200, 'readyz still 200');
  t.match(sc.sidecar.readiness()['config']?.detail ?? '', /^last reload rejected: .*firma\.toml:\d+:1: sidecar\.mode/, 'readiness says why the file is not in effect');
  t.equal(sc.sidecar.readiness()['policies']?.detail, oldHash, 'the old policy hash is still in effect');

  await sc.sidecar.audit.flush();
  const events = auditEvents(sc.dir);
  checkSamples(t, load.samples, events, [oldHash], { [oldHash]: 200 });
  const lifecycle = events.filter((e) => e.type === 'lifecycle' && e.event === 'reload').map((e) => e.detail ?? '');
  t.equal(lifecycle.length, 3, 'three reload lifecycle events');
  t.match(lifecycle[0], /^rejected \(api\): .*broken\.cedar:4:/, 'the first names the policy error');
  t.match(lifecycle[1], /^rejected \(api\): .*zz\.toml:3:/, 'the second the mapping error');
  t.match(lifecycle[2], new RegExp(`^rejected \\(api\\): .*firma\\.toml:${modeLine}:1: sidecar\\.mode`), 'the third the config error');
  const errorsLogged = parseLines(sc.logs).filter((l) => l.msg?.startsWith('reload rejected') === true);
  t.equal(errorsLogged.length, 3, 'three error log lines');
  t.match(errorsLogged[0]?.msg ?? '', /broken\.cedar:4:\d+/, 'the log line names file:line:col');

  // Fixed: the same files now load, and the decision changes.
  writeFileSync(firmaToml, goodToml);
  const fixed = await sc.sidecar.reload();
  t.same(fixed.ok ? [] : fixed.errors, [], 'accepted once fixed');
  t.equal(sc.sidecar.readiness()['config']?.detail, undefined, 'and the rejection note is gone');
  t.equal((await proxyGet(sc.proxyPort, ok.hostPort, '/data/after-fix')).status, 403, 'FORBID_DATA now applies');
});

function proxyless(url: string): Promise<number | null> {
  return new Promise((resolve) => {
    http.get(url, (res) => {
      res.resume();
      resolve(res.statusCode ?? null);
    }).on('error', () => resolve(null));
  });
}

// ------------------------------------------------------------------------------------------ (c)

t.test('a slow request in flight finishes under the decision set it started with', async (t) => {
  const sc = await startTestSidecar('', { policies: { 'main.cedar': PERMIT_ALL }, sidecar: '[sidecar.reload]\nwatch = false' });
  t.teardown(() => sc.stop());
  const oldHash = sc.sidecar.readiness()['policies']?.detail ?? '';
  let headers = false;
  const slow = proxyGet(sc.proxyPort, up.hostPort, '/drip?n=8&gap=100', false, () => (headers = true));
  await waitFor(() => headers, 'the slow response to start');
  writeFileSync(join(sc.dir, 'policies', 'main.cedar'), FORBID_DRIP);
  const result = await sc.sidecar.reload();
  t.equal(result.ok, true, 'reloaded while the request is in flight');
  const newHash = result.ok ? result.policyHash : '';
  t.not(newHash, oldHash);
  const fresh = await proxyGet(sc.proxyPort, up.hostPort, '/drip?n=1&gap=1');
  t.equal(fresh.status, 403, 'a new request gets the new decision');
  const done = await slow;
  t.equal(done.status, 200, 'the in-flight request completes');
  t.equal(done.body.split('\n').filter((l) => l.startsWith('chunk')).length, 8, 'with its whole body');
  await sc.sidecar.audit.flush();
  const events = auditEvents(sc.dir).filter((e) => e.path?.startsWith('/drip?') === true);
  const [first, second] = events.filter((e) => e.type === 'decision');
  t.equal(first?.policy_hash, oldHash, 'the in-flight request was decided under the old hash');
  t.equal(first?.decision, 'allow');
  t.equal(second?.policy_hash, newHash, 'the new one under the new hash');
  t.equal(second?.decision, 'deny');
  const outcome = auditEvents(sc.dir).find((e) => e.type === 'outcome' && e.request_id === first?.request_id);
  t.equal(outcome?.status, 200, 'and its outcome is recorded as a 200');
});

// ------------------------------------------------------------------------------------------ watch details

t.test('file watch: bursts are debounced, renames and replaced folders are followed, globbed rule folders are watched, stop closes it', async (t) => {
  const sc = await startTestSidecar('', { policies: { 'main.cedar': PERMIT_ALL }, sidecar: '[sidecar.reload]\nwatch = true\ndebounce_ms = 150' });
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await sc.stop();
  });
  const reloads = (): LogLine[] => reloadedLines(sc.logs);
  const main = join(sc.dir, 'policies', 'main.cedar');

  // A burst of 30 writes in one synchronous run: one reload.
  for (let i = 0; i < 30; i++) writeFileSync(main, `${FORBID_DATA}\n// edit ${i}\n`);
  await waitFor(() => reloads().length >= 1, 'the reload after the burst');
  await new Promise((r) => setTimeout(r, 600)); // 4 debounce periods: any extra reload would have come
  t.equal(reloads().length, 1, 'a burst of 30 writes reloads once');
  t.equal(reloads()[0]?.trigger, 'watch');
  t.equal((await proxyGet(sc.proxyPort, ok.hostPort, '/data/x')).status, 403, 'the new policy applies');

  // Editor-style replace (temp file + rename), twice: the watch survives the first rename.
  replaceFile(main, FORBID_OTHER);
  await waitFor(() => reloads().length >= 2, 'the reload after the first rename');
  t.equal((await proxyGet(sc.proxyPort, ok.hostPort, '/data/x')).status, 200, 'first replace applied');
  replaceFile(main, FORBID_DATA);
  await waitFor(() => reloads().length >= 3, 'the reload after the second rename');
  t.equal((await proxyGet(sc.proxyPort, ok.hostPort, '/data/x')).status, 403, 'second replace applied');

  // A new file in the globbed mappings folder.
  writeFileSync(join(sc.dir, 'mappings', 'more.toml'), '[[rules]]\nhost = "example.com"\naction_class = "test.more"\nrisk = "low"\n');
  await waitFor(() => reloads().length >= 4, 'the reload after a new mapping file');
  t.equal(reloads()[3]?.mapping_rules, 2, 'the new rule file was loaded');

  // The whole policy folder replaced (rename of a new folder into place), then a file in the new one.
  mkdirSync(join(sc.dir, 'policies.new'));
  writeFileSync(join(sc.dir, 'policies.new', 'main.cedar'), FORBID_OTHER);
  renameSync(join(sc.dir, 'policies'), join(sc.dir, 'policies.old'));
  renameSync(join(sc.dir, 'policies.new'), join(sc.dir, 'policies'));
  await waitFor(() => reloads().length >= 5 && (reloads().at(-1)?.policy_hash ?? '') !== (reloads()[3]?.policy_hash ?? ''), 'the reload after the folder swap');
  t.equal((await proxyGet(sc.proxyPort, ok.hostPort, '/data/x')).status, 200, 'the new folder applies');
  const n = reloads().length;
  writeFileSync(join(sc.dir, 'policies', 'main.cedar'), FORBID_DATA);
  await waitFor(() => reloads().length > n, 'a reload from an edit inside the new folder');
  t.equal((await proxyGet(sc.proxyPort, ok.hostPort, '/data/x')).status, 403, 'edits inside the new folder are seen');

  // Files that are not config do not reload.
  const m = reloads().length;
  writeFileSync(join(sc.dir, 'policies', 'notes.txt'), 'x');
  writeFileSync(join(sc.dir, 'policies', '.main.cedar.swp'), 'x');
  writeFileSync(join(sc.dir, 'unrelated.toml'), 'x');
  await new Promise((r) => setTimeout(r, 600));
  t.equal(reloads().length, m, 'swap files and unrelated files do not reload');

  await sc.stop();
  stopped = true;
  const k = reloads().length;
  writeFileSync(join(sc.dir, 'policies', 'main.cedar'), FORBID_OTHER);
  await new Promise((r) => setTimeout(r, 600));
  t.equal(reloads().length, k, 'no reload after stop (the watch is closed)');
});

// ------------------------------------------------------------------------------------------ what reloads

t.test('reload applies mode, connector host limits, and reports restart-only keys', async (t) => {
  const sc = await startTestSidecar('', { policies: { 'main.cedar': FORBID_DATA }, sidecar: '[sidecar.reload]\nwatch = false' });
  t.teardown(() => sc.stop());
  const firmaToml = join(sc.dir, 'firma.toml');
  const base = readFileSync(firmaToml, 'utf8');
  t.equal((await proxyGet(sc.proxyPort, ok.hostPort, '/data/a')).status, 403, 'enforce: denied');

  // monitor mode + a rate limit of 1 rps on the upstream + a changed admin listener (restart-only).
  writeFileSync(firmaToml, `${base.replace('[sidecar]\n', '[sidecar]\nmode = "monitor"\n').replace(/\[sidecar\.admin\]\nlisten = "127\.0\.0\.1:0"/, '[sidecar.admin]\nlisten = "127.0.0.1:1"')}
[[sidecar.connector.hosts]]
host = "${ok.hostPort}"
rps = 1
burst = 1
timeout_ms = 400
`);
  const result = await sc.sidecar.reload();
  t.equal(result.ok, true, 'accepted');
  if (result.ok) t.same(result.restartRequired, ['sidecar.admin.listen'], 'the admin listener needs a restart');
  t.ok(
    parseLines(sc.logs).some((l) => l.key === 'sidecar.admin.listen' && l.msg === 'sidecar.admin.listen changed in file, takes effect at restart'),
    'logged as "changed in file, takes effect at restart"',
  );
  t.equal(await proxyless(`${sc.adminUrl}/readyz`), 200, 'the admin listener still serves on its old port');
  const first = await proxyGet(sc.proxyPort, ok.hostPort, '/data/b');
  t.equal(first.status, 200, 'monitor: the forbid is logged, not enforced');
  const second = await proxyGet(sc.proxyPort, ok.hostPort, '/data/c');
  t.equal(second.status, 429, 'the new rate limit applies');

  // Back: limits gone, enforce again; the old limiter is released later without affecting anything.
  writeFileSync(firmaToml, base);
  const back = await sc.sidecar.reload();
  t.equal(back.ok, true);
  if (back.ok) t.same(back.restartRequired, [], 'nothing restart-only differs any more');
  t.equal((await proxyGet(sc.proxyPort, ok.hostPort, '/data/d')).status, 403, 'enforce again');
});

t.test('capabilities across reloads: tokens keep working, revocation still takes effect without restart', async (t) => {
  const sc = await startTestSidecar('', { policies: { 'main.cedar': PERMIT_ALL }, capabilities: 'required = true', sidecar: '[sidecar.reload]\nwatch = false' });
  t.teardown(() => sc.stop());
  const keys = join(sc.dir, 'keys');
  const issued = await issueToken({ signingKeyFile: join(keys, 'capability.key'), publicKeyFile: join(keys, 'capability.pub'), agent: 'a1', actions: ['*'], scope: '127.0.0.1', ttlMs: 3_600_000 });
  const withToken = (path: string): Promise<Reply> =>
    new Promise((resolve) => {
      const req = http.request({
        host: '127.0.0.1', port: sc.proxyPort, path: `http://${ok.hostPort}${path}`,
        headers: { host: ok.hostPort, 'proxy-authorization': `Basic ${Buffer.from(`a1:${issued.token}`).toString('base64')}` },
      }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? null, error: null, body: '' }));
      });
      req.on('error', (err) => resolve({ status: null, error: err.message, body: '' }));
      req.end();
    });
  t.equal((await withToken('/data/1')).status, 200, 'token accepted');
  t.equal((await sc.sidecar.reload()).ok, true, 'reloaded');
  t.equal((await withToken('/data/2')).status, 200, 'still accepted after the reload');
  revokeToken(join(keys, 'revoked.txt'), issued.jti);
  await waitFor(() => parseLines(sc.logs).some((l) => l.msg === 'capability revocation list reloaded'), 'the revocation list reload', 10_000);
  t.equal((await withToken('/data/3')).status, 403, 'revocation after a reload still takes effect without restart');
  t.equal((await sc.sidecar.reload()).ok, true, 'reloaded again');
  t.equal((await withToken('/data/4')).status, 403, 'and stays revoked');
});

t.test('built-in defaults (no config file): reload re-reads the shipped mappings and policies', async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'firma-defaults-'));
  const d = defaultConfig(cwd);
  const config = {
    ...d,
    sidecar: {
      ...d.sidecar,
      reload: { ...d.sidecar.reload, watch: false },
      interceptor: { ...d.sidecar.interceptor, listen: { host: '127.0.0.1', port: 0 } },
      admin: { ...d.sidecar.admin, listen: { host: '127.0.0.1', port: 0 } },
    },
  };
  const logs: string[] = [];
  const log = createLogger('info', { destination: new Writable({ write: (c: Buffer, _e, cb) => { logs.push(c.toString()); cb(); } }) });
  const sidecar = await Sidecar.start({ config, log });
  t.teardown(() => sidecar.stop());
  const hash = sidecar.readiness()['policies']?.detail;
  const result = await sidecar.reload();
  t.equal(result.ok, true, 'reloaded');
  if (result.ok) {
    t.equal(result.policyHash, hash, 'the shipped policies, unchanged');
    t.same(result.restartRequired, [], 'nothing to restart');
  }
  t.ok(readFileSync(join(REPO, 'policies', 'default.cedar'), 'utf8').length > 0);
});

t.test('changedKeys: tables (as the schema declares them) are compared key by key, values whole', async (t) => {
  const schema = { type: 'object', properties: { a: { type: 'object', properties: { b: {}, c: {}, l: {}, e: {} } }, d: {} } };
  t.same(changedKeys({ a: { b: 1, c: [1, 2] }, d: 'x' }, { a: { b: 1, c: [1, 3] }, d: 'x' }, schema), ['a.c']);
  t.same(changedKeys({ a: { b: 1 } }, { a: { b: 1, e: 2 } }, schema), ['a.e']);
  t.same(changedKeys({ a: { l: { host: 'h', port: 1 } } }, { a: { l: { host: 'h', port: 2 } } }, schema), ['a.l'], 'a parsed value is one key');
  t.same(changedKeys({ d: 1n, x: 1 }, { d: 1n, x: 2 }, schema), ['x'], 'keys outside the schema compare whole');
});
