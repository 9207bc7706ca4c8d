// LLM row of `npm run bench`: streamed chat completions (OpenAI's SSE shape, N chunks then a usage
// chunk) through the built sidecar, once to a host declared in `[[llm.hosts]]` (usage read from the
// stream as it passes) and once to the same upstream on a host that is not (usage not read), and
// direct. Reports the sidecar's CPU µs per completion with reading on and off, and the time to the
// first chunk added by the sidecar (docs/llm.md "Cost"). A benchmark: it asserts nothing.
//
//   npm run build && node bench/llm.mjs [--seconds 5] [--concurrency 8] [--chunks 500] [--ttfc-reps 200]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, ProxyAgent, request } from 'undici';
import { CLK_TCK, canPin, cpuTicks, freePort, numberOption, quantile, readOptions, startBuiltSidecar } from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(path.dirname(HERE), 'dist', 'cli', 'firma.js');
const USAGE = 'usage: node bench/llm.mjs [--seconds S] [--concurrency N] [--chunks N] [--ttfc-reps N] [--rounds N] [--no-pin] [--json FILE]\n';
const args = readOptions({
  seconds: { type: 'string', default: '5' },
  concurrency: { type: 'string', default: '8' },
  chunks: { type: 'string', default: '500' },
  'ttfc-reps': { type: 'string', default: '200' },
  rounds: { type: 'string', default: '3' },
  json: { type: 'string' },
  'no-pin': { type: 'boolean', default: false },
}, USAGE);
const SECONDS = numberOption(args, 'seconds', 1, 120);
const CONC = numberOption(args, 'concurrency', 1, 256, { integer: true });
const CHUNKS = numberOption(args, 'chunks', 1, 100_000, { integer: true });
const TTFC_REPS = numberOption(args, 'ttfc-reps', 10, 10_000, { integer: true });
const ROUNDS = numberOption(args, 'rounds', 1, 20, { integer: true });
if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
const pin = canPin(args['no-pin']);
if (pin) spawnSync('taskset', ['-a', '-cp', '0', String(process.pid)], { stdio: 'ignore' });

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'firma-llm-bench-'));
let sidecar = null;
process.on('exit', () => {
  sidecar?.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

// One streamed completion as the OpenAI API sends it with stream_options.include_usage: a role chunk,
// CHUNKS content chunks, a finish chunk, the usage chunk, [DONE]. `?first` sends the first event, then
// the rest 20 ms later (time to first chunk is measured on it).
const ID = 'chatcmpl-bench';
const event = (delta, extra = '') => `data: {"id":"${ID}","object":"chat.completion.chunk","created":1764800000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":${delta},"finish_reason":null}]${extra}}\n\n`;
const EVENTS = [
  event('{"role":"assistant","content":""}'),
  ...Array.from({ length: CHUNKS }, (_, i) => event(`{"content":" tok${i}"}`)),
  `data: {"id":"${ID}","object":"chat.completion.chunk","created":1764800000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n`,
  `data: {"id":"${ID}","object":"chat.completion.chunk","created":1764800000,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":${CHUNKS},"total_tokens":${120 + CHUNKS}}}\n\n`,
  'data: [DONE]\n\n',
].map((e) => Buffer.from(e));
const STREAM_BYTES = EVENTS.reduce((n, e) => n + e.length, 0);

// One event per write, the next on the following turn of the event loop: as a provider streams tokens
// (one event, one TCP segment), not coalesced into a few large chunks, which would hide the per-chunk cost.
function writeFrom(res, i) {
  if (res.destroyed) return;
  if (i === EVENTS.length) {
    res.end();
    return;
  }
  res.write(EVENTS[i]);
  setImmediate(writeFrom, res, i + 1);
}

function serve(req, res) {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    if (req.url.endsWith('?first')) {
      res.write(EVENTS[0]);
      setTimeout(writeFrom, 20, res, 1);
      return;
    }
    writeFrom(res, 0);
  });
}
// Two listeners on one server: the sidecar reads usage on the first (declared) and not on the second.
const upstream = http.createServer({ keepAliveTimeout: 60_000 }, serve);
const other = http.createServer({ keepAliveTimeout: 60_000 }, serve);
await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
await new Promise((r) => other.listen(0, '127.0.0.1', r));
const llmPort = upstream.address().port;
const plainPort = other.address().port;

const proxyPort = await freePort();
const adminPort = await freePort();
fs.writeFileSync(path.join(tmp, 'rules.toml'), `[[rules]]
host = "127.0.0.1"
path = "/v1/chat/completions"
method = "POST"
action_class = "llm.chat"
risk = "low"
`);
fs.writeFileSync(path.join(tmp, 'firma.toml'), `[sidecar]
log_level = "warn"
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
[sidecar.mapping]
rules_paths = ["rules.toml"]
[sidecar.policy]
dir = ${JSON.stringify(path.join(path.dirname(HERE), 'policies'))}

[[llm.hosts]]
host = "127.0.0.1:${llmPort}"
format = "openai"
`);
sidecar = await startBuiltSidecar({ cli: CLI, config: path.join(tmp, 'firma.toml'), cwd: tmp, adminPort, pin });

const BODY = JSON.stringify({ model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'Say hello.' }] });
// A fresh object per request: undici's ProxyAgent (absolute-form) writes `host` into the headers object it
// is given, so a shared one would carry one origin's Host to the next (the sidecar refuses: host_mismatch).
const headers = () => ({ 'content-type': 'application/json', accept: 'text/event-stream' });
const completion = async (port, dispatcher, query = '') => {
  const r = await request(`http://127.0.0.1:${port}/v1/chat/completions${query}`, { method: 'POST', headers: headers(), body: BODY, dispatcher });
  let bytes = 0;
  let head = '';
  for await (const c of r.body) {
    if (bytes < 400) head += c.toString('utf8', 0, 400);
    bytes += c.length;
  }
  if (r.statusCode !== 200 || bytes !== STREAM_BYTES) throw new Error(`status ${r.statusCode}, ${bytes} of ${STREAM_BYTES} bytes: ${head.slice(0, 300)}`);
};

let firstError = null;
async function throughput(label, port, dispatcher, measurePid) {
  let n = 0;
  let errors = 0;
  const run = async (until, record) => {
    while (performance.now() < until) {
      try {
        await completion(port, dispatcher);
        if (record) n++;
      } catch (err) {
        if (errors++ === 0) firstError ??= `${label}: ${err.message}`;
      }
    }
  };
  await Promise.all(Array.from({ length: CONC }, () => run(performance.now() + 1000, false))); // warm-up
  const t0 = performance.now();
  const c0 = measurePid ? cpuTicks(measurePid) : null;
  await Promise.all(Array.from({ length: CONC }, () => run(t0 + SECONDS * 1000, true)));
  const elapsed = (performance.now() - t0) / 1000;
  const c1 = measurePid ? cpuTicks(measurePid) : null;
  return { label, completions: n, perSecond: Math.round(n / elapsed), errors, cpuUs: c0 === null ? null : ((c1 - c0) / CLK_TCK) * 1e6 / n };
}

/** Time from sending the request to the first chunk of the body, one completion at a time. */
async function firstChunk(port, dispatcher) {
  const times = [];
  for (let i = 0; i < TTFC_REPS; i++) {
    const t = performance.now();
    const r = await request(`http://127.0.0.1:${port}/v1/chat/completions?first`, { method: 'POST', headers: headers(), body: BODY, dispatcher });
    let first = null;
    for await (const c of r.body) if (first === null && c.length > 0) first = performance.now() - t;
    if (first !== null) times.push(first);
  }
  return times.sort((a, b) => a - b);
}

const direct = new Agent({ connections: CONC });
const viaSidecar = () => new ProxyAgent({ uri: `http://127.0.0.1:${proxyPort}`, proxyTunnel: false, connections: CONC });
const proxiedPlain = viaSidecar();
const proxiedLlm = viaSidecar();
// Alternating phases, the median of each kind: a drift in the machine's speed hits both alike.
const offs = [];
const ons = [];
for (let round = 0; round < ROUNDS; round++) {
  offs.push(await throughput('sidecar, usage not read', plainPort, proxiedPlain, sidecar.pid));
  ons.push(await throughput('sidecar, usage read', llmPort, proxiedLlm, sidecar.pid));
}
const byCpu = (rows) => [...rows].sort((a, b) => a.cpuUs - b.cpuUs)[rows.length >> 1];
const off = byCpu(offs);
const on = byCpu(ons);
const ttfc = { direct: await firstChunk(llmPort, direct), off: await firstChunk(plainPort, proxiedPlain), on: await firstChunk(llmPort, proxiedLlm) };

// Every completion to the declared host was recorded with its usage: count them in the audit log.
const stopped = new Promise((r) => sidecar.once('exit', r));
sidecar.kill('SIGTERM');
await stopped;
const auditFile = path.join(tmp, 'audit', 'audit.jsonl');
let withUsage = 0;
let outcomes = 0;
for (const line of fs.existsSync(auditFile) ? fs.readFileSync(auditFile, 'utf8').split('\n') : []) {
  if (!line.includes('"type":"outcome"')) continue;
  outcomes++;
  if (line.includes(`"output_tokens":${CHUNKS}}`)) withUsage++; // canonical JSON: the last key of usage
}
const f = (v, digits = 2) => (v === null || v === undefined ? '–' : v.toFixed(digits));
const offUs = off.cpuUs;
const p = (a, q) => quantile(a, q);
const out = [
  `### LLM streaming (OpenAI SSE, ${CHUNKS} chunks + usage, ${STREAM_BYTES} bytes, HTTP), ${CONC} keep-alive connections, ${ROUNDS} × ${SECONDS} s per kind, alternating`,
  '',
  '| path | completions/s | errors | sidecar CPU µs/completion (median; each round) |',
  '| --- | ---: | ---: | ---: |',
  ...[[off, offs], [on, ons]].map(([r, all]) => `| ${r.label} | ${r.perSecond} | ${all.reduce((n, x) => n + x.errors, 0)} | ${f(r.cpuUs, 0)} (${all.map((x) => f(x.cpuUs, 0)).join(', ')}) |`),
  '',
  `Reading usage: ${f(on.cpuUs - offUs, 0)} µs per completion (${f(((on.cpuUs - offUs) / offUs) * 100, 1)}% of the sidecar's CPU for it).`,
  '',
  `| time to first chunk (${TTFC_REPS} sequential) | p50 ms | p99 ms | added p50 ms |`,
  '| --- | ---: | ---: | ---: |',
  `| direct | ${f(p(ttfc.direct, 0.5))} | ${f(p(ttfc.direct, 0.99))} | |`,
  `| sidecar, usage not read | ${f(p(ttfc.off, 0.5))} | ${f(p(ttfc.off, 0.99))} | +${f(p(ttfc.off, 0.5) - p(ttfc.direct, 0.5))} |`,
  `| sidecar, usage read | ${f(p(ttfc.on, 0.5))} | ${f(p(ttfc.on, 0.99))} | +${f(p(ttfc.on, 0.5) - p(ttfc.direct, 0.5))} |`,
  '',
  `Audit: ${withUsage} of ${outcomes} outcome events carry the stream's usage (the completions to the declared host; live file only).`,
];
if (firstError !== null) out.push('', `First error: ${firstError}`);
console.log(out.join('\n'));
if (args.json) fs.writeFileSync(args.json, JSON.stringify({ concurrency: CONC, seconds: SECONDS, chunks: CHUNKS, offs, ons, ttfc }, null, 2));
await direct.close();
await proxiedPlain.close();
await proxiedLlm.close();
upstream.close();
other.close();
process.exit(0);
