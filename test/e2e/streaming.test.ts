import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProxyAgent, request } from 'undici';
import { useUpstream } from '../helpers/upstream.js';
import { spawnSidecar, configDir, loopbackSidecar, type SidecarProcess } from '../helpers/sidecar.js';
import { curl } from '../helpers/clients.js';
import { tlsThroughProxy } from '../helpers/tunnel.js';

/** VmRSS / VmHWM of a process, in MiB. */
function memory(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

const up = useUpstream(t, { tls: true });
let sc: SidecarProcess;
let dir: string;
let proxyUrl: string;
let caPem: string;

t.before(async () => {
  dir = configDir(loopbackSidecar());
  sc = await spawnSidecar(['start'], { cwd: dir });
  proxyUrl = `http://127.0.0.1:${sc.proxyPort}`;
  caPem = readFileSync(join(dir, 'certs', 'ca.crt'), 'utf8');
});
t.teardown(async () => {
  sc.proc.kill('SIGKILL');
});

t.test('SSE streams through HTTPS MITM event by event (first event long before the last)', async (t) => {
  const dispatcher = new ProxyAgent({ uri: proxyUrl, requestTls: { ca: caPem } });
  const start = performance.now();
  const res = await request(`${up.origin}/sse?n=10&gap=100`, { dispatcher });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], 'text/event-stream');
  const arrivals: number[] = [];
  for await (const chunk of res.body) {
    const text = (chunk as Buffer).toString('utf8');
    for (const _m of text.matchAll(/^data: /gm)) arrivals.push(performance.now() - start);
  }
  await dispatcher.close();
  t.equal(arrivals.length, 10, 'all ten events arrive');
  const first = arrivals[0] as number;
  const last = arrivals[9] as number;
  // The upstream spaces events 100 ms apart; a buffering proxy would deliver them all at ~1000 ms.
  t.ok(last - first > 700, `events arrive spread out (first ${first.toFixed(0)} ms, last ${last.toFixed(0)} ms)`);
});

t.test('50 MiB and 200 MiB downloads over HTTPS: intact, and the sidecar does not buffer them', async (t) => {
  const before = memory(sc.proc.pid as number);
  for (const mib of [50, 200]) {
    const r = await curl(['--proxy', proxyUrl, '--cacert', join(dir, 'certs', 'ca.crt'), '-o', '/dev/null', `${up.origin}/bytes?mib=${mib}`]);
    t.equal(r.exitCode, 0, `curl completes the ${mib} MiB body (it exits 18 on a short one) ${r.stderr}`);
    t.equal(r.status, 200);
    t.equal(r.headers['content-length'], String(mib * 2 ** 20));
    const after = memory(sc.proc.pid as number);
    t.comment(`${mib} MiB: sidecar RSS ${before.rss.toFixed(0)} MiB idle, peak ${after.hwm.toFixed(0)} MiB`);
    // Garbage from passing chunks comes and goes; a proxy that buffers grows by the body size.
    t.ok(after.hwm - before.rss < 48, `peak RSS grew by less than 48 MiB for a ${mib} MiB body`);
  }
});

t.test('a client that stops reading makes the sidecar stop reading the upstream', async (t) => {
  const s = await tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: caPem });
  const before = up.bytesWritten();
  s.write(`GET /bytes?mib=300 HTTP/1.1\r\nHost: ${up.hostPort}\r\n\r\n`);
  // Read the first bytes, then stop reading entirely.
  await new Promise<void>((resolve) => s.once('data', () => resolve()));
  s.pause();
  await new Promise((r) => setTimeout(r, 1500));
  const stalled = up.bytesWritten() - before;
  const mem = memory(sc.proc.pid as number);
  t.comment(`upstream wrote ${(stalled / 2 ** 20).toFixed(1)} MiB of 300 while the client was paused; sidecar RSS ${mem.rss.toFixed(0)} MiB`);
  t.ok(stalled < 64 * 2 ** 20, 'upstream is held back by backpressure (socket buffers only)');
  await new Promise((r) => setTimeout(r, 500));
  t.equal(up.bytesWritten() - before, stalled, 'and stays held back');
  s.destroy();
  // The sidecar is still healthy for others.
  const ok = await curl(['--proxy', proxyUrl, '--cacert', join(dir, 'certs', 'ca.crt'), `${up.origin}/echo`]);
  t.equal(ok.status, 200);
});
