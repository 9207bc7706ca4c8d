// What `[audit] fsync = "always"` costs a request: the decision event is fsynced before the request goes
// upstream (group commit: one fsync per batch). A real `firma start` per setting, a local HTTP upstream,
// undici through the proxy at concurrency 1 and C; prints req/s, p50/p99 latency and requests per fsync.
// Usage: npm run build && node bench/audit-fsync.mjs [seconds=5] [concurrency=32]   (figures: docs/audit.md "Durability")
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { ProxyAgent, request } from 'undici';

const SECONDS = Number(process.argv[2] ?? 5);
const CONC = Number(process.argv[3] ?? 32);
const CLI = fileURLToPath(new URL('../dist/cli/firma.js', import.meta.url));
const POLICY = readFileSync(fileURLToPath(new URL('../policies/default.cedar', import.meta.url)), 'utf8');

const upstream = http.createServer((req, res) => req.resume().on('end', () => res.end('ok')));
await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
const upPort = upstream.address().port;

const freePort = () => new Promise((res) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => res(port));
  });
});

async function sidecar(fsync) {
  const dir = mkdtempSync(join(tmpdir(), 'firma-fsync-bench-'));
  mkdirSync(join(dir, 'mappings'));
  mkdirSync(join(dir, 'policies'));
  writeFileSync(join(dir, 'mappings', 'bench.toml'), '[[rules]]\nhost = "*"\naction_class = "bench.call"\nrisk = "low"\n');
  writeFileSync(join(dir, 'policies', 'default.cedar'), POLICY);
  const [proxyPort, adminPort] = [await freePort(), await freePort()];
  // log_level "warn": no line per request, so the figures are the audit's and the proxy's alone.
  writeFileSync(join(dir, 'firma.toml'), `[sidecar]\nlog_level = "warn"\n[sidecar.interceptor]\nlisten = "127.0.0.1:${proxyPort}"\n[sidecar.admin]\nlisten = "127.0.0.1:${adminPort}"\n` +
    `[sidecar.connector]\nallow_private = ["127.0.0.1/32"]\n[sidecar.mapping]\nrules_paths = ["mappings/*.toml"]\n[sidecar.policy]\ndir = "policies"\n[sidecar.capabilities]\nrequired = false\n[audit]\nfsync = "${fsync}"\n`);
  const proc = spawn(process.execPath, [CLI, 'start'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env } });
  const admin = `http://127.0.0.1:${adminPort}`;
  for (let i = 0; ; i++) {
    if (i > 200) throw new Error('sidecar not ready in 20 s');
    const ok = await fetch(`${admin}/readyz`).then((r) => r.ok, () => false);
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { dir, proc, proxy: `http://127.0.0.1:${proxyPort}`, admin };
}

async function batches(admin) {
  const text = await (await fetch(`${admin}/metrics`)).text();
  return Number(/^firma_audit_write_duration_seconds_count (\d+)/m.exec(text)?.[1] ?? NaN);
}

async function load(proxy, conc) {
  const agent = new ProxyAgent({ uri: proxy, connections: conc });
  const lat = [];
  const until = performance.now() + SECONDS * 1000;
  const warm = performance.now() + 1000;
  await Promise.all(Array.from({ length: conc }, async () => {
    while (performance.now() < until) {
      const t0 = performance.now();
      const r = await request(`http://127.0.0.1:${upPort}/x`, { dispatcher: agent });
      await r.body.text();
      if (t0 > warm) lat.push(performance.now() - t0);
    }
  }));
  await agent.close();
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))].toFixed(2);
  return { n: lat.length, rps: Math.round(lat.length / (SECONDS - 1)), p50: q(0.5), p99: q(0.99) };
}

const rows = [];
for (const fsync of ['interval', 'always']) {
  const sc = await sidecar(fsync);
  for (const conc of [1, CONC]) {
    const b0 = await batches(sc.admin);
    const r = await load(sc.proxy, conc);
    const b1 = await batches(sc.admin);
    // Each request writes a decision and an outcome; the batch count includes warm-up requests.
    rows.push({ fsync, conc, ...r, batches: b1 - b0 });
  }
  sc.proc.kill('SIGTERM');
  await new Promise((r) => sc.proc.on('exit', r));
  rmSync(sc.dir, { recursive: true, force: true });
}
upstream.close();
console.log('fsync     conc   req/s   p50 ms   p99 ms   write batches (fsyncs with "always")');
for (const r of rows) console.log(`${r.fsync.padEnd(9)} ${String(r.conc).padStart(4)} ${String(r.rps).padStart(7)} ${r.p50.padStart(8)} ${r.p99.padStart(8)}   ${r.batches}`);
