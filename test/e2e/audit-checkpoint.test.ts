import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configDir, loopbackSidecar, spawnSidecar, type SidecarProcess } from '../helpers/sidecar.js';
import { useUpstream } from '../helpers/upstream.js';
import { curl, runFirma } from '../helpers/clients.js';

// Checkpoint signatures with a real `firma start` process and the real CLI (docs/audit.md
// "Checkpoints"): a stopped sidecar's log ends signed; a killed one leaves an unsigned tail that
// `firma audit verify` names (exit 1, or 0 with --allow-unsigned-tail); the next start signs it with a
// recovered checkpoint, and verify says so.

const up = useUpstream(t);

type Ev = Record<string, unknown> & { type: string; seq: number; event?: string; sig?: string };
const logOf = (dir: string): string => join(dir, 'audit', 'audit.jsonl');
const events = (dir: string): Ev[] => readFileSync(logOf(dir), 'utf8').split('\n').slice(0, -1).map((l) => JSON.parse(l) as Ev);
const isCp = (e: Ev): boolean => e.type === 'lifecycle' && e.event === 'checkpoint';
const verify = (dir: string, ...flags: string[]): ReturnType<typeof runFirma> => runFirma(['audit', 'verify', ...flags], dir);

async function requests(sc: SidecarProcess, n: number, tag: string): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await curl(['--proxy', `http://127.0.0.1:${sc.proxyPort}`, `${up.origin}/echo?${tag}${i}=1`]);
    if (r.status !== 200) throw new Error(`request ${tag}${i}: ${r.status} ${r.stderr}`);
  }
}

t.test('SIGTERM: the log ends with a checkpoint; events carry no sig; verify exits 0', async (t) => {
  const dir = configDir(loopbackSidecar());
  const sc = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => sc.proc.kill('SIGKILL'));
  await requests(sc, 5, 'a');
  sc.proc.kill('SIGTERM');
  t.equal(await sc.exited, 0);
  const evs = events(dir);
  t.ok(isCp(evs[evs.length - 1] as Ev), 'the last event is a checkpoint');
  t.same(evs.filter((e) => typeof e.sig === 'string').map((e) => e.event), evs.filter(isCp).map(() => 'checkpoint'), 'only checkpoints are signed');
  t.equal(evs.filter((e) => e.type === 'decision').length, 5);
  const v = await verify(dir);
  t.equal(v.code, 0, v.stderr);
  t.match(v.stdout, /^ok: \d+ events, seq 1\.\.\d+, chain and every signature valid \(\d+ checkpoints?\)\nhead hash [0-9a-f]{64}/);
  t.notMatch(v.stdout, /unsigned|recovery/);
});

t.test('SIGKILL with events unsigned: verify names the tail (exit 1), --allow-unsigned-tail accepts it, the restart signs it as recovered', async (t) => {
  const dir = configDir(loopbackSidecar());
  const sc = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => sc.proc.kill('SIGKILL'));
  // Stopped (SIGSTOP) right after a few requests, the file cannot change: kill only once its last event
  // is one the 100 ms checkpoint has not signed yet, else let it go on and try again.
  let tail: Ev[] = [];
  for (let round = 0; round < 20 && tail.length === 0; round++) {
    await requests(sc, 3, `k${round}-`);
    sc.proc.kill('SIGSTOP');
    const evs = events(dir);
    const lastCp = evs.map(isCp).lastIndexOf(true);
    if (lastCp >= 0 && !isCp(evs[evs.length - 1] as Ev)) tail = evs.slice(lastCp + 1);
    else sc.proc.kill('SIGCONT');
  }
  t.ok(tail.length > 0, `killed with ${tail.length} unsigned events on disk`);
  sc.proc.kill('SIGKILL');
  await sc.exited;
  t.ok(tail.every((e) => e.sig === undefined), 'none of them signed');
  const first = tail[0]?.seq as number;
  const last = tail[tail.length - 1]?.seq as number;
  const n = tail.length;
  const range = first === last ? `${first}` : `${first}\\.\\.${last}`; // "seq 9" or "seq 9..11"

  const strict = await verify(dir);
  t.equal(strict.code, 1, 'an unsigned tail fails by default');
  const sentence = `audit\\.jsonl: ${n} events? after the last checkpoint \\(seq ${range}\\) (is|are) not signed yet \\(the sidecar is running, or was killed\\)`;
  t.match(strict.stderr, new RegExp(`${sentence}; --allow-unsigned-tail accepts them`));
  const lenient = await verify(dir, '--allow-unsigned-tail');
  t.equal(lenient.code, 0, lenient.stderr);
  t.match(lenient.stdout, new RegExp(`^ok: ${last} events, seq 1\\.\\.${last}, chain and every signature valid up to seq ${first - 1} \\(\\d+ checkpoints?\\)\\nunsigned: \\S*${sentence}\\n`));

  const again = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => again.proc.kill('SIGKILL'));
  await requests(again, 2, 'b');
  again.proc.kill('SIGTERM');
  t.equal(await again.exited, 0);
  const evs = events(dir);
  const recovery = evs[last]; // the first event the new process wrote
  t.match(recovery, { seq: last + 1, type: 'lifecycle', event: 'checkpoint', recovered: true, first_seq: first, last_seq: last, events: n, sig: /./ }, 'the new process\'s first act: a recovered checkpoint over the tail');
  t.ok(evs.slice(last + 1).some((e) => e.event === 'start'), 'its start event after it');
  const v = await verify(dir);
  t.equal(v.code, 0, v.stderr);
  t.match(v.stdout, new RegExp(`^ok: \\d+ events, seq 1\\.\\.\\d+, chain and every signature valid \\(\\d+ checkpoints\\); ${n} events? \\(seq ${range}\\) signed at recovery after a kill, not when written\\n`));
});

t.test('signatures = "event": every event signed, as before; verify exits 0', async (t) => {
  const dir = configDir(loopbackSidecar() + '\n[audit]\nsignatures = "event"\n');
  const sc = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => sc.proc.kill('SIGKILL'));
  await requests(sc, 2, 'e');
  sc.proc.kill('SIGTERM');
  t.equal(await sc.exited, 0);
  const evs = events(dir);
  t.ok(evs.every((e) => typeof e.sig === 'string' && !isCp(e)), 'each event signed, no checkpoint');
  const v = await verify(dir);
  t.equal(v.code, 0, v.stderr);
  t.match(v.stdout, /^ok: \d+ events, seq 1\.\.\d+, chain and every signature valid \(\d+ events signed on their own\)\n/);
});
