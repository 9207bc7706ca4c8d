import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProxyAgent, request } from 'undici';
import { configDir, loopbackSidecar, spawnSidecar, writeDecisionFiles, type SidecarProcess } from '../helpers/sidecar.js';
import { useUpstream } from '../helpers/upstream.js';
import { curl, runFirma } from '../helpers/clients.js';

// The audit log after the worst a process can meet (docs/audit.md "Torn last line", "Durability",
// "Fail closed", "Approvals in the log"), with real `firma start` processes and the real CLI: a torn
// last line, a SIGKILL under load with fsync = "always", approvals held at a SIGKILL, a full disk.

const up = useUpstream(t);

type Event = Record<string, unknown> & { type: string; seq: number };

/** The whole lines of the live log (a torn last line, if any, is left out). */
function events(dir: string, path = join(dir, 'audit', 'audit.jsonl')): Event[] {
  const text = readFileSync(path, 'utf8');
  return text.split('\n').slice(0, -1).map((l) => JSON.parse(l) as Event);
}

async function stop(sc: SidecarProcess): Promise<number | null> {
  sc.proc.kill('SIGTERM');
  return sc.exited;
}

/** Polls `check` every 50 ms for at most `ms`; returns whether it held. */
async function until(check: () => boolean | Promise<boolean>, ms = 10_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

const verify = (dir: string): Promise<{ code: number; stdout: string; stderr: string }> => runFirma(['audit', 'verify'], dir);

t.test('a torn last line from an older version: verify names it, `firma audit repair` moves it aside, start does the same by itself', async (t) => {
  const dir = configDir(loopbackSidecar());
  const first = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => first.proc.kill('SIGKILL'));
  t.equal((await curl(['--proxy', `http://127.0.0.1:${first.proxyPort}`, `${up.origin}/echo`])).status, 200);
  t.equal(await stop(first), 0);
  const log = join(dir, 'audit', 'audit.jsonl');
  const whole = events(dir).length;
  const fragment = '{"action_class":"test.call","agent_id":"local-agent","approval_id":null,"deci';
  appendFileSync(log, fragment);

  const bad = await verify(dir);
  t.equal(bad.code, 1);
  t.match(bad.stderr, new RegExp(`audit\\.jsonl:${whole + 1}: not JSON \\(truncated last line; "firma audit repair" moves it aside\\)`));

  const repaired = await runFirma(['audit', 'repair'], dir);
  t.equal(repaired.code, 0, repaired.stderr);
  t.match(repaired.stdout, new RegExp(`^repaired: the torn last line of \\S+audit\\.jsonl \\(${fragment.length} bytes, sha256:[0-9a-f]{64}\\) moved to \\S+audit\\.jsonl\\.torn-\\S+$`, 'm'));
  // The audit_repaired event (seq whole + 1) and the checkpoint that signs it as the repair closes the log.
  t.match(repaired.stdout, new RegExp(`chain continues to seq ${whole + 2}`));
  const torn = readdirSync(join(dir, 'audit')).filter((n) => n.startsWith('audit.jsonl.torn-'));
  t.equal(torn.length, 1);
  t.equal(readFileSync(join(dir, 'audit', torn[0] ?? ''), 'utf8'), fragment, 'the fragment kept as it was');
  t.equal(statSync(join(dir, 'audit', torn[0] ?? '')).mode & 0o777, 0o600);

  const ok = await verify(dir);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, new RegExp(`^repaired: \\S+audit\\.jsonl:${whole + 1} \\(seq ${whole + 1}\\): torn last line of audit\\.jsonl after seq ${whole}: ${fragment.length} bytes sha256:[0-9a-f]{64}, moved to audit\\.jsonl\\.torn-\\S+ \\(fragment file present, hash matches\\)$`, 'm'));

  const nothing = await runFirma(['audit', 'repair'], dir);
  t.equal(nothing.code, 1);
  t.match(nothing.stderr, /nothing to repair: \S+audit\.jsonl ends with a complete line/);

  // The same tear left for `firma start`: it repairs, records, and serves.
  appendFileSync(log, '{"v":1,"seq":');
  const second = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => second.proc.kill('SIGKILL'));
  t.equal((await curl(['--proxy', `http://127.0.0.1:${second.proxyPort}`, `${up.origin}/echo`])).status, 200);
  t.equal(await stop(second), 0);
  const evs = events(dir);
  const repairs = evs.filter((e) => e['event'] === 'audit_repaired');
  t.equal(repairs.length, 2);
  const start = evs.findIndex((e) => e.seq > (repairs[1]?.seq ?? 0) && e['event'] === 'start');
  t.ok(start > 0, 'the repair is recorded before the start event');
  const again = await verify(dir);
  t.equal(again.code, 0, again.stderr);
  t.equal(again.stdout.match(/^repaired: /gm)?.length, 2);
});

t.test('SIGKILL under load with fsync = "always": every 200 the client got has its decision in the log; the next start recovers', async (t) => {
  const dir = configDir(loopbackSidecar() + '\n[audit]\nfsync = "always"\n');
  const sc = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => sc.proc.kill('SIGKILL'));
  const agent = new ProxyAgent({ uri: `http://127.0.0.1:${sc.proxyPort}`, connections: 64 });
  t.teardown(() => agent.destroy());
  // Each request carries its number as a query *name* (values are redacted in the log, names are kept).
  const served: number[] = [];
  let next = 0;
  let killed = false;
  const worker = async (): Promise<void> => {
    while (!killed && next < 10_000) {
      const n = next++;
      try {
        const r = await request(`${up.origin}/echo?k${n}=1`, { dispatcher: agent, headersTimeout: 5_000, bodyTimeout: 5_000 });
        await r.body.text();
        if (r.statusCode === 200 && !killed) served.push(n);
        // Killed the moment a response lands: the requests decided just before it are the ones at risk.
        if (served.length >= 600 && !killed) {
          killed = true;
          sc.proc.kill('SIGKILL');
        }
      } catch {
        // cut by the kill
      }
    }
  };
  const load = Promise.all(Array.from({ length: 64 }, worker));
  t.ok(await until(() => killed, 20_000), 'killed mid-load');
  sc.proc.kill('SIGKILL');
  await sc.exited;
  await load;
  const logged = new Set<string>();
  for (const e of events(dir)) if (e.type === 'decision' && e['decision'] === 'allow') logged.add(String(e['path']));
  const missing = served.filter((n) => !logged.has(`/echo?k${n}=REDACTED`));
  t.same(missing, [], `all ${served.length} served requests have a decision event`);
  // The next start must succeed (a torn last line is moved aside) and the log verify.
  const again = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => again.proc.kill('SIGKILL'));
  t.equal((await curl(['--proxy', `http://127.0.0.1:${again.proxyPort}`, `${up.origin}/echo`])).status, 200);
  t.equal(await stop(again), 0);
  const v = await verify(dir);
  t.equal(v.code, 0, v.stderr);
  t.match(v.stdout, /^ok: \d+ events/);
});

const APPROVAL_RULES = `
[[rules]]
method = "POST"
host = "127.0.0.1"
path = "/echo"
action_class = "payments.refund"
risk = "high"
body_fields = ["amount"]
`;

t.test('approvals pending at a SIGKILL are closed as abandoned at the next start', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firma-proc-'));
  writeFileSync(join(dir, 'firma.toml'), loopbackSidecar() + writeDecisionFiles(dir, { rules: APPROVAL_RULES }));
  const sc = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => sc.proc.kill('SIGKILL'));
  // Two held requests (distinct bodies, so two approvals); curl waits on them until the kill.
  const held = [1, 2].map((n) =>
    spawn('curl', ['-sS', '--noproxy', '', '--proxy', `http://127.0.0.1:${sc.proxyPort}`, '-X', 'POST', '-d', `{"amount":${n}}`, '-H', 'content-type: application/json', `${up.origin}/echo`], { stdio: 'ignore' }));
  t.teardown(() => held.forEach((c) => c.kill('SIGKILL')));
  const log = join(dir, 'audit', 'audit.jsonl');
  const requested = (): Event[] => events(dir, log).filter((e) => e.type === 'approval' && e['action'] === 'requested');
  t.ok(await until(() => requested().length === 2), 'both approvals requested and written');
  sc.proc.kill('SIGKILL');
  await sc.exited;
  const ids = requested().map((e) => e['approval_id']);
  const again = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => again.proc.kill('SIGKILL'));
  t.equal(await stop(again), 0);
  const evs = events(dir);
  const abandoned = evs.filter((e) => e.type === 'approval' && e['action'] === 'abandoned');
  t.same(abandoned.map((e) => e['approval_id']).sort(), [...ids].sort(), 'every requested approval has an end');
  for (const a of abandoned) t.match(a, { approver: null, reason: 'sidecar_restarted', request_id: /\S+/, agent_id: 'local-agent' });
  const starts = evs.filter((e) => e['event'] === 'start');
  t.ok((abandoned[0]?.seq ?? 0) < (starts[1]?.seq ?? 0), 'closed before the new run starts');
  t.equal((await verify(dir)).code, 0);
});

const root = process.getuid?.() === 0;

t.test('a full disk (256 KiB tmpfs): no partial line, a SIGKILL during the outage, a clean restart on the still-full disk, recovery counts the refusals', { skip: root ? false : 'needs root to mount a tmpfs' }, async (t) => {
  const mnt = mkdtempSync(join(tmpdir(), 'firma-tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', mnt]);
  t.teardown(() => execFileSync('umount', ['-l', mnt]));
  const filler = join(mnt, 'filler');
  writeFileSync(filler, Buffer.alloc(216 * 1024));
  const log = join(mnt, 'audit.jsonl');
  const dir = configDir(loopbackSidecar() + `\n[audit]\npath = "${log}"\nfsync = "always"\n`);
  mkdirSync(join(dir, 'audit'), { recursive: true });
  const first = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => first.proc.kill('SIGKILL'));
  const proxy = `http://127.0.0.1:${first.proxyPort}`;
  let status = 200;
  for (let i = 0; i < 400 && status === 200; i++) status = (await curl(['--proxy', proxy, `${up.origin}/echo?fill${i}=1`])).status;
  t.equal(status, 503, 'the disk filled up: refused');
  const onDisk = readFileSync(log);
  t.equal(onDisk[onDisk.length - 1], 0x0a, 'the failed write left no partial line');
  first.proc.kill('SIGKILL');
  await first.exited;

  const second = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => second.proc.kill('SIGKILL'));
  const proxy2 = `http://127.0.0.1:${second.proxyPort}`;
  t.pass('started on the still-full disk');
  const refused = await curl(['--proxy', proxy2, `${up.origin}/echo`]);
  t.equal(refused.status, 503);
  t.match(JSON.parse(refused.body), { reason: 'audit_unavailable' });
  unlinkSync(filler);
  t.ok(await until(async () => (await curl([`http://127.0.0.1:${second.adminPort}/readyz`])).status === 200), 'writable again');
  t.equal((await curl(['--proxy', proxy2, `${up.origin}/echo`])).status, 200);
  t.equal(await stop(second), 0);
  const evs = events(dir, log);
  const rec = evs.filter((e) => e['event'] === 'audit_recovered').at(-1);
  t.match(rec, { detail: /^ENOSPC refused_requests=([1-9]\d*) unrecorded_events=\d+ first_refused=\S+Z last_refused=\S+Z$/ });
  const v = await runFirma(['audit', 'verify', log, '--public-key', join(dir, 'keys', 'audit.pub')], dir);
  t.equal(v.code, 0, v.stderr);
});
