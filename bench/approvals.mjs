#!/usr/bin/env node
// Held requests: what holding costs and how fast an answer releases them. Starts a sidecar in-process
// (dist/) with the shipped default policies (high risk → @approval) and a loopback upstream, then:
//   1. N distinct held requests (N approvals): RSS and heap per held request, approvals API list time;
//   2. approve them all through the admin API: time until every held request has its 200;
//   3. J identical requests (one approval): one approve releases all J; time to the last 200.
// Usage: npm run build && node bench/approvals.mjs [--n 500] [--j 200]
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, ProxyAgent, request } from 'undici';
import pino from 'pino';
import { parseConfigText } from '../dist/config/index.js';
import { Sidecar } from '../dist/sidecar.js';

const { values: args } = parseArgs({ options: { n: { type: 'string', default: '500' }, j: { type: 'string', default: '200' } } });
const N = Number(args.n);
const J = Number(args.j);
const TOKEN = 'bench-admin-token';
process.env.FIRMA_BENCH_ADMIN = TOKEN;

const upstream = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => res.end('ok'));
});
await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
const upPort = upstream.address().port;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'firma-bench-approvals-'));
fs.mkdirSync(path.join(dir, 'mappings'));
fs.writeFileSync(path.join(dir, 'mappings', 'bench.toml'), `[[rules]]\nmethod = "POST"\nhost = "127.0.0.1"\naction_class = "payments.refund"\nrisk = "high"\n`);
fs.mkdirSync(path.join(dir, 'policies'));
fs.copyFileSync(new URL('../policies/default.cedar', import.meta.url), path.join(dir, 'policies', 'default.cedar'));
const toml = `
[sidecar]
log_level = "warn"
[sidecar.interceptor]
listen = "127.0.0.1:0"
[sidecar.admin]
listen = "127.0.0.1:0"
token_env = "FIRMA_BENCH_ADMIN"
[sidecar.capabilities]
required = false
[sidecar.reload]
watch = false
[sidecar.connector]
allow_private = ["127.0.0.1/32"]
[approvals]
max_pending = ${N + 10}
`;
const config = parseConfigText(toml, path.join(dir, 'firma.toml'), dir);
const sidecar = await Sidecar.start({ config, log: pino({ level: 'warn' }) });
const admin = `http://127.0.0.1:${sidecar.adminAddress.port}`;
const proxy = new ProxyAgent({ uri: `http://127.0.0.1:${sidecar.proxyAddress.port}`, connections: N + J + 10, headersTimeout: 600_000, bodyTimeout: 600_000 });
const adminAgent = new Agent({ connections: 16 });

const mib = () => process.memoryUsage();
const send = (body) => request(`http://127.0.0.1:${upPort}/refund`, { method: 'POST', dispatcher: proxy, body, headers: { 'content-type': 'application/json' } })
  .then(async (r) => { await r.body.text(); return r.statusCode; });
const pending = async () => JSON.parse(await (await request(`${admin}/approvals`, { dispatcher: adminAgent })).body.text()).pending;
const waitFor = async (check) => {
  for (let i = 0; i < 6000; i++) {
    const p = await pending();
    if (check(p)) return p;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('timed out waiting for the held requests');
};
const approve = (id) => request(`${admin}/approvals/${id}/approve`, { method: 'POST', dispatcher: adminAgent, headers: { authorization: `Bearer ${TOKEN}` }, body: '{}' })
  .then((r) => r.body.text());

// Warm up the path (TLS-free HTTP here: the cost measured is the hold, not interception).
await approveAll(await holdDistinct(20, 'warm'));
global.gc?.();
await new Promise((r) => setTimeout(r, 200));
const before = mib();

const t0 = performance.now();
const done = await holdDistinct(N, 'run');
const heldMs = performance.now() - t0;
const during = mib();
const l0 = performance.now();
await pending();
const listMs = performance.now() - l0;
const a0 = performance.now();
const statuses = await approveAll(done);
const releaseMs = performance.now() - a0;

const j0 = performance.now();
const joined = Array.from({ length: J }, () => send('{"amount":1}'));
const [one] = await waitFor((p) => p.length === 1 && p[0].waiting === J);
const joinMs = performance.now() - j0;
const r0 = performance.now();
await approve(one.id);
const joinedStatuses = await Promise.all(joined);
const joinReleaseMs = performance.now() - r0;

await sidecar.stop();
await proxy.close();
await adminAgent.close();
upstream.close();
fs.rmSync(dir, { recursive: true, force: true });

const ok = statuses.every((s) => s === 200) && joinedStatuses.every((s) => s === 200);
console.log(`held requests (${N} distinct, one approval each; Node ${process.version}):`);
console.log(`  all ${N} held after ${heldMs.toFixed(0)} ms; GET /approvals with ${N} pending: ${listMs.toFixed(1)} ms`);
console.log(`  RSS +${((during.rss - before.rss) / 1024 / N).toFixed(1)} KiB, heap +${((during.heapUsed - before.heapUsed) / 1024 / N).toFixed(1)} KiB per held request (sidecar + client in one process)`);
console.log(`  approve all ${N} via the API → every 200 back in ${releaseMs.toFixed(0)} ms (${(releaseMs / N).toFixed(2)} ms each, 16 admin connections)`);
console.log(`${J} identical requests → 1 approval (joined in ${joinMs.toFixed(0)} ms); one approve → all ${J} answered 200 in ${joinReleaseMs.toFixed(1)} ms`);
if (!ok) {
  console.error('some held request did not end with 200');
  process.exit(1);
}

async function holdDistinct(n, tag) {
  const calls = Array.from({ length: n }, (_, i) => send(JSON.stringify({ amount: i, tag })));
  const p = await waitFor((p) => p.length === n);
  return { calls, ids: p.map((x) => x.id) };
}
async function approveAll({ calls, ids }) {
  const queue = [...ids];
  await Promise.all(Array.from({ length: 16 }, async () => {
    for (let id = queue.pop(); id !== undefined; id = queue.pop()) await approve(id);
  }));
  return Promise.all(calls);
}
