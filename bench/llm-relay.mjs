// What relaying a streamed completion costs the sidecar, to set the usage reader's cost against
// (bench/README.md "LLM usage"): a loopback upstream writes a Chat Completions stream of 500 SSE events,
// one write each, and a client fetches it through the built sidecar (HTTP, absolute-form), several at a
// time; the sidecar's CPU time (utime + stime, all threads) is divided by the streams relayed. The
// usage reader is not wired into the relay yet: this is the cost it is compared with.
//
//   npm run build && node bench/llm-relay.mjs [--seconds 5] [--concurrency 4] [--events 500]
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProxyAgent, request } from 'undici';
import { CLK_TCK, canPin, cpuTicks, numberOption, readOptions, sleep } from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(path.dirname(HERE), 'dist', 'cli', 'firma.js');
const USAGE = `usage: node bench/llm-relay.mjs [--seconds S] [--concurrency N] [--events N] [--no-pin]\n`;
const args = readOptions({
  seconds: { type: 'string', default: '5' },
  concurrency: { type: 'string', default: '4' },
  events: { type: 'string', default: '500' },
  'no-pin': { type: 'boolean', default: false },
}, USAGE);
const SECONDS = numberOption(args, 'seconds', 1, 120);
const CONC = numberOption(args, 'concurrency', 1, 64, { integer: true });
const EVENTS = numberOption(args, 'events', 1, 100_000, { integer: true });
if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
const pin = canPin(args['no-pin']);
if (pin) spawnSync('taskset', ['-a', '-cp', '0', String(process.pid)], { stdio: 'ignore' });

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'firma-llm-relay-'));
let sidecar = null;
process.on('exit', () => {
  sidecar?.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

const base = { id: 'chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT', object: 'chat.completion.chunk', created: 1741570283, model: 'gpt-4o-2024-08-06', service_tier: 'default', system_fingerprint: 'fp_fc9f1d7035' };
const events = Array.from({ length: EVENTS }, (_, i) => Buffer.from(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { content: ` word${i % 50}` }, logprobs: null, finish_reason: null }], usage: null })}\n\n`));
const upstream = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
    let i = 0;
    const next = () => {
      if (i === events.length) {
        res.end('data: [DONE]\n\n');
        return;
      }
      res.write(events[i++], () => setImmediate(next));
    };
    next();
  });
});
await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
const upPort = upstream.address().port;
const freePort = () => new Promise((r) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => r(port)); }); });
const proxyPort = await freePort();
const adminPort = await freePort();
// Monitor mode: the shipped policies would deny a POST to an unmapped host; decided and audited all the same.
fs.writeFileSync(path.join(tmp, 'firma.toml'), `[sidecar]
log_level = "warn"
mode = "monitor"
[sidecar.interceptor]
listen = "127.0.0.1:${proxyPort}"
[sidecar.interceptor.mitm]
ca_dir = "certs"
[sidecar.admin]
listen = "127.0.0.1:${adminPort}"
[sidecar.connector]
allow_private = ["127.0.0.1/32"]
[sidecar.capabilities]
required = false
[sidecar.policy]
dir = ${JSON.stringify(path.join(path.dirname(HERE), 'policies'))}
`);
const argv = [CLI, 'start', '--config', path.join(tmp, 'firma.toml')];
sidecar = spawn(...(pin ? ['taskset', ['-c', '1', process.execPath, ...argv]] : [process.execPath, argv]), {
  cwd: tmp, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, HTTP_PROXY: '', HTTPS_PROXY: '', http_proxy: '', https_proxy: '' },
});
for (let i = 0; ; i++) {
  const ok = await request(`http://127.0.0.1:${adminPort}/readyz`).then((r) => r.body.text().then(() => r.statusCode === 200), () => false);
  if (ok) break;
  if (i > 300 || sidecar.exitCode !== null) throw new Error('the sidecar did not become ready');
  await sleep(50);
}

const proxied = new ProxyAgent({ uri: `http://127.0.0.1:${proxyPort}`, proxyTunnel: false, connections: CONC });
const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }], stream: true });
let chunks = 0;
async function stream() {
  const r = await request(`http://127.0.0.1:${upPort}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, dispatcher: proxied });
  for await (const c of r.body) if (c.length > 0) chunks++;
  if (r.statusCode !== 200) throw new Error(`status ${r.statusCode}`);
}
const loop = async (until) => {
  let n = 0;
  while (performance.now() < until) {
    await stream();
    n++;
  }
  return n;
};
await Promise.all(Array.from({ length: CONC }, () => loop(performance.now() + 1000))); // warm-up
chunks = 0;
const c0 = cpuTicks(sidecar.pid);
const t0 = performance.now();
const counts = await Promise.all(Array.from({ length: CONC }, () => loop(t0 + SECONDS * 1000)));
const c1 = cpuTicks(sidecar.pid);
const streams = counts.reduce((a, b) => a + b, 0);
const cpuUs = ((c1 - c0) / CLK_TCK) * 1e6;
console.table([{
  events: EVENTS,
  streams,
  'streams/s': (streams / ((performance.now() - t0) / 1000)).toFixed(1),
  'client chunks/stream': (chunks / streams).toFixed(0),
  'sidecar CPU µs/stream': (cpuUs / streams).toFixed(0),
  'sidecar CPU µs/event': (cpuUs / streams / EVENTS).toFixed(2),
}]);
process.exit(0);
