// Where the sidecar's CPU per request goes: `node --cpu-prof` of the built sidecar, started by
// bench/candidate.sh with the whole pipeline on (mapping rule, its own capability token, the shipped
// Cedar policies, the audit log), under hey's keep-alive load (16 connections, 1 KiB GETs), as the shared
// harness drives it. Prints a table of µs/req by component (bench/README.md "Profile") and the top
// functions by self time. A benchmark: it asserts nothing.
//
//   npm run build && node bench/profile.mjs [--scheme https|http] [--seconds 10] [--pipeline full|plain]
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readOptions, numberOption, sleep, has, run, canPin, coreTicks, cpuTicks, statusKb, CLK_TCK } from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(HERE);
const USAGE = `usage: node bench/profile.mjs [options]
  --scheme https|http   what the load sends (https: CONNECT, then the sidecar MITMs; default https)
  --seconds S           measured load (default 10), after a 2 s warm-up
  --pipeline full|plain full: mapping hit, token, Cedar, audit (default); plain: unclassified passthrough
  --connections N       hey -c (default 16)
  --large               50 MiB downloads instead of 1 KiB GETs (hey -c 1, nginx upstream only)
  --upstream nginx|node nginx (as the shared harness; default when installed) or bench/upstream.mjs
  --top N               functions listed by self time (default 25)
  --json FILE           also write the figures as JSON
  --no-cpu-prof         run without the profiler (e.g. to count syscalls with perf/strace meanwhile)
  --keep-tmp            keep the temporary folder (config, profile, sidecar log, audit log)
  --no-pin              do not pin the sidecar to CPU 1 and the load to CPU 0`;
const args = readOptions({
  scheme: { type: 'string', default: 'https' },
  seconds: { type: 'string', default: '10' },
  pipeline: { type: 'string', default: 'full' },
  connections: { type: 'string', default: '16' },
  upstream: { type: 'string', default: has('nginx') ? 'nginx' : 'node' },
  top: { type: 'string', default: '25' },
  json: { type: 'string' },
  'keep-tmp': { type: 'boolean', default: false },
  'no-cpu-prof': { type: 'boolean', default: false },
  large: { type: 'boolean', default: false },
  'no-pin': { type: 'boolean', default: false },
}, USAGE);
const SECONDS = numberOption(args, 'seconds', 1, 600);
const CONNS = numberOption(args, 'connections', 1, 1000, { integer: true });
const TOP = numberOption(args, 'top', 0, 500, { integer: true });
if (!['http', 'https'].includes(args.scheme)) throw new Error('--scheme is http or https');
if (!['full', 'plain'].includes(args.pipeline)) throw new Error('--pipeline is full or plain');
if (!has('hey')) throw new Error('hey is not installed (apt-get install hey)');
if (!has('openssl')) throw new Error('openssl is not installed');
if (!['nginx', 'node'].includes(args.upstream)) throw new Error('--upstream is nginx or node');
// hey copies a non-default port into the TLS SNI ("127.0.0.1:8443"), which the sidecar refuses as bad_sni
// (so does squid): the https upstream listens on port 443 of an address of its own, which needs root.
const HTTPS_HOST = '127.0.0.77';
if (args.scheme === 'https' && process.getuid?.() !== 0) throw new Error('--scheme https needs root (the upstream listens on port 443; see the comment above)');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'firma-profile-'));
const pin = canPin(args['no-pin']);
const pinTo = (cpu) => (pin ? ['taskset', '-c', String(cpu)] : []);
const children = new Set();
const cleanup = () => {
  // nginx's master stops its worker on SIGTERM; SIGKILL would leave the worker holding the port.
  for (const c of children) c.kill(c.spawnargs.includes('nginx') ? 'SIGTERM' : 'SIGKILL');
  if (!args['keep-tmp']) fs.rmSync(tmp, { recursive: true, force: true });
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => process.exit(130));
const progress = (msg) => process.stderr.write(`profile: ${msg}\n`);

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function readyz(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write('GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    let got = '';
    s.on('data', (d) => (got += d));
    s.on('close', () => resolve(got.startsWith('HTTP/1.1 200')));
    s.on('error', () => resolve(false));
  });
}

// ---------------------------------------------------------------- upstream, sidecar
const key = path.join(tmp, 'upstream.key');
const cert = path.join(tmp, 'upstream.crt');
run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
  '-days', '2', '-subj', '/CN=firma profile upstream', '-addext', `subjectAltName=IP:127.0.0.1,IP:${HTTPS_HOST}`]);
// nginx answers /small with ~1/3 of the CPU the Node upstream needs, so hey + nginx on CPU 0 can keep
// the sidecar on CPU 1 saturated, as in the shared harness (its µs/req is lower when it is).
async function startUpstream() {
  if (args.upstream === 'nginx') {
    const httpPort = await freePort();
    const www = path.join(tmp, 'www');
    fs.mkdirSync(www);
    fs.writeFileSync(path.join(www, 'small'), Buffer.alloc(1024, 'x'));
    if (args.large) fs.writeFileSync(path.join(www, 'large'), (await import('node:crypto')).randomBytes(50 * 1024 * 1024));
    for (const d of ['body', 'proxy', 'fcgi', 'uwsgi', 'scgi']) fs.mkdirSync(path.join(tmp, `nginx-${d}`));
    const conf = path.join(tmp, 'nginx.conf');
    fs.writeFileSync(conf, `worker_processes 1;
${process.getuid?.() === 0 ? 'user root;' : ''}
pid ${tmp}/nginx.pid;
error_log ${tmp}/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${tmp}/nginx-body; proxy_temp_path ${tmp}/nginx-proxy;
  fastcgi_temp_path ${tmp}/nginx-fcgi; uwsgi_temp_path ${tmp}/nginx-uwsgi; scgi_temp_path ${tmp}/nginx-scgi;
  keepalive_timeout 120s; keepalive_requests 10000000; tcp_nodelay on;
  ssl_certificate ${cert}; ssl_certificate_key ${key}; ssl_protocols TLSv1.2 TLSv1.3;
  server {
    listen 127.0.0.1:${httpPort};
    ${args.scheme === 'https' ? `listen ${HTTPS_HOST}:443 ssl;` : ''}
    root ${www};
    location = /small { default_type text/plain; }
    location = /large { }
    location / { return 404; }
  }
}
`);
    const [cmd, ...argv] = [...pinTo(0), 'nginx', '-p', tmp, '-c', conf, '-g', 'daemon off;'];
    const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
    children.add(child);
    for (let i = 0; i < 100; i++) {
      const up = await new Promise((r) => net.connect(httpPort, '127.0.0.1').once('connect', function () { this.destroy(); r(true); }).once('error', () => r(false)));
      if (up) return { http: httpPort };
      if (child.exitCode !== null) break;
      await sleep(50);
    }
    throw new Error(`nginx did not start: ${fs.existsSync(`${tmp}/nginx-error.log`) ? fs.readFileSync(`${tmp}/nginx-error.log`, 'utf8') : ''}`);
  }
  const [upCmd, ...upArgs] = [...pinTo(0), process.execPath, path.join(HERE, 'upstream.mjs')];
  const upstream = spawn(upCmd, upArgs, {
    env: { ...process.env, BENCH_UP_CERT: cert, BENCH_UP_KEY: key, BENCH_LARGE_BYTES: '1024', BENCH_BACKLOG: '4096', ...(args.scheme === 'https' ? { BENCH_HTTPS_HOST: HTTPS_HOST, BENCH_HTTPS_PORT: '443' } : {}) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(upstream);
  return new Promise((resolve, reject) => {
    let buf = '';
    upstream.stdout.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) resolve(JSON.parse(buf.slice(0, buf.indexOf('\n'))));
    });
    upstream.once('exit', (code) => reject(new Error(`upstream exited (${code})`)));
  });
}
const ports = await startUpstream();

const profDir = path.join(tmp, 'prof');
const proxyPort = await freePort();
const adminPort = await freePort();
const state = path.join(tmp, 'state');
const logPath = path.join(tmp, 'sidecar.log');
const logFd = fs.openSync(logPath, 'w');
const spawnedAt = performance.now();
const [scCmd, ...scArgs] = [...pinTo(1), 'bash', path.join(HERE, 'candidate.sh')];
const sidecar = spawn(scCmd, scArgs, {
  env: {
    ...process.env,
    BENCH_STATE_DIR: state,
    BENCH_PROXY_PORT: String(proxyPort),
    FIRMA_BENCH_ADMIN_PORT: String(adminPort),
    FIRMA_BENCH_PIPELINE: args.pipeline,
    FIRMA_BENCH_RULE_HOST: args.scheme === 'https' ? HTTPS_HOST : '127.0.0.1',
    // 250 µs sampling: ~40 k samples over a 10 s phase, enough for a stable split at ~1 % overhead.
    FIRMA_BENCH_NODE_FLAGS: args['no-cpu-prof'] ? '' : `--cpu-prof --cpu-prof-dir=${profDir} --cpu-prof-interval=250`,
    NODE_EXTRA_CA_CERTS: cert,
    HTTP_PROXY: '', HTTPS_PROXY: '', http_proxy: '', https_proxy: '',
  },
  stdio: ['ignore', logFd, logFd],
});
fs.closeSync(logFd);
children.add(sidecar);
let exited = null;
sidecar.once('exit', (code, signal) => (exited = code ?? signal));
const deadline = performance.now() + 30_000;
while (!(await readyz(adminPort))) {
  if (exited !== null || performance.now() > deadline) throw new Error(`sidecar not ready (exit ${exited}):\n${fs.readFileSync(logPath, 'utf8').slice(-2000)}`);
  await sleep(50);
}
// candidate.sh execs node: the bash pid is the sidecar's pid (taskset execs too).
const pid = sidecar.pid;

// ---------------------------------------------------------------- load
const resource = args.large ? 'large' : 'small';
if (args.large && args.upstream !== 'nginx') throw new Error('--large needs the nginx upstream');
const target = args.scheme === 'https' ? `https://${HTTPS_HOST}/${resource}` : `http://127.0.0.1:${ports.http}/${resource}`;
function hey(seconds) {
  const [cmd, ...pre] = [...pinTo(0), 'hey'];
  const r = spawnSync(cmd, [...pre, '-c', String(args.large ? 1 : CONNS), '-z', `${seconds}s`, '-x', `http://127.0.0.1:${proxyPort}`, target], {
    encoding: 'utf8', env: { ...process.env, GOMAXPROCS: '1' }, timeout: (seconds + 30) * 1000,
  });
  const ok = Number(/\[200\]\s+(\d+) responses/.exec(r.stdout ?? '')?.[1] ?? 0);
  const other = [...(r.stdout ?? '').matchAll(/\[(\d+)\]\s+(\d+) responses/g)].filter((m) => m[1] !== '200');
  const errors = /Error distribution:([\s\S]*)$/.exec(r.stdout ?? '')?.[1]?.trim() ?? '';
  return { ok, other: other.map((m) => `${m[1]}×${m[2]}`), errors };
}
progress(`sidecar pid ${pid} (pipeline ${args.pipeline}), load ${args.scheme} through it: 2 s warm-up, ${SECONDS} s measured`);
const rssIdleKb = statusKb(pid, 'VmRSS');
hey(2);
await sleep(500);
const t0 = performance.now();
const ticks0 = cpuTicks(pid);
const cores0 = coreTicks();
const load = hey(SECONDS);
const ticks1 = cpuTicks(pid);
const cores1 = coreTicks();
// Each core's busy share over the load, and the sidecar's share of one core: CPU 1 much busier than the
// sidecar means something else ran there (rerun on a quieter machine).
const busy = cores1.map((c, i) => Math.round((100 * (c.busy - cores0[i].busy)) / (c.total - cores0[i].total)));
const sidecarPct = Math.round((100 * (ticks1 - ticks0)) / CLK_TCK / ((performance.now() - t0) / 1000));
const mib = (kb) => (kb === null ? '-' : `${(kb / 1024).toFixed(0)} MiB`);
const cpuLine = `RSS idle ${mib(rssIdleKb)}, peak ${mib(statusKb(pid, 'VmHWM'))}; sidecar ${sidecarPct} % of a core; cores busy ${busy.map((b, i) => `CPU${i} ${b} %`).join(', ')}; load average ${os.loadavg()[0].toFixed(1)}`;
const t1 = performance.now();
if (load.ok === 0) throw new Error(`no 200 answers through the sidecar: ${load.other.join(' ')} ${load.errors}\n${fs.readFileSync(logPath, 'utf8').slice(-2000)}`);
await sleep(300);
sidecar.kill('SIGTERM');
await new Promise((r) => (exited !== null ? r() : sidecar.once('exit', r)));
children.delete(sidecar);

// ---------------------------------------------------------------- the profile
if (args['no-cpu-prof']) {
  console.log(`${load.ok} answers 200 (${(load.ok / ((t1 - t0) / 1000)).toFixed(0)} req/s); sidecar CPU (all threads, /proc) ${(((ticks1 - ticks0) / CLK_TCK) * 1e6 / load.ok).toFixed(0)} µs/req; ${cpuLine}`);
  process.exit(0);
}
const file = fs.readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
if (file === undefined) throw new Error(`no .cpuprofile written in ${profDir}`);
const prof = JSON.parse(fs.readFileSync(path.join(profDir, file), 'utf8'));
// Samples of the measured window only. The profile's clock starts when node starts (≈ spawn), so the
// window is placed by our own clock with 200 ms trimmed off each side.
const winStart = (t0 - spawnedAt + 200) * 1000;
const winEnd = (t1 - spawnedAt - 200) * 1000;
const leafCat = new Map();
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

/** Component of firma's or a library's frame by where its code lives; null for node internals. */
function component(url) {
  if (url.startsWith('wasm://')) return 'Cedar (WASM)';
  if (url.includes('/cedar-wasm/')) return 'Cedar (JS glue)';
  if (url.includes('/sodium-native/')) return 'audit: Ed25519 signatures';
  if (url.includes('/undici/') || url.includes('internal/deps/undici')) return 'undici (upstream client)';
  if (url.includes('/pino') || url.includes('sonic-boom') || url.includes('/dist/core/log')) return 'log line (pino)';
  if (url.includes('prom-client') || url.includes('/dist/admin/metrics')) return 'metrics';
  if (url.includes('paseto') || url.includes('/dist/enforce/capability')) return 'stage 1: capability token';
  if (url.includes('/dist/enforce/policy')) return 'stage 2: Cedar (firma side)';
  if (url.includes('/dist/audit/')) return 'audit: canonical JSON, hash chain, queue, write';
  if (url.includes('/dist/normalize/') || url.includes('/dist/pipeline/') || url.includes('/dist/enforce/')) return 'pipeline: normalize, enforce, orchestration';
  if (url.includes('/dist/connector/')) return 'connector (firma side, incl. response hash)';
  if (url.includes('/dist/intercept/')) return 'intercept (firma side)';
  if (url.includes('/dist/core/')) return 'core helpers';
  if (url.includes('/node_modules/')) return 'other libraries';
  return null;
}
/** Node internals that are a cost of their own, whoever called them. */
function ownInternal(url) {
  if (/_tls_|internal\/tls/.test(url)) return 'node: TLS (JS side)';
  if (/_http_/.test(url)) return 'node: HTTP server (parser callbacks, IncomingMessage, ServerResponse)';
  if (/node:net|stream_base_commons/.test(url)) return 'node: net (socket reads/writes, JS side)';
  if (/internal\/streams|node:stream/.test(url)) return 'node: streams';
  return null;
}
const WRITES = new Set(['writev', 'writeBuffer', 'writeLatin1String', 'writeUtf8String', 'writeAsciiString', 'writeUcs2String']);
/**
 * Each sample's component: V8's own buckets; native socket writes (TLS encryption happens inside them on
 * a TLSSocket); node internals with a cost of their own (TLS, HTTP, net, streams); any other frame goes
 * to the innermost firma or library frame above it (so the SHA-256 of the audit chain counts for the
 * audit, a socket write undici makes for undici unless it is a native write).
 */
function categoryOf(id) {
  const cached = leafCat.get(id);
  if (cached !== undefined) return cached;
  const leaf = byId.get(id).callFrame;
  let cat = null;
  if (leaf.functionName === '(garbage collector)') cat = 'GC';
  else if (leaf.functionName === '(program)') cat = 'native outside JS (libuv, syscalls, TLS decrypt on read, HTTP parser)';
  else if (leaf.functionName === '(idle)') cat = 'idle';
  else if (leaf.url === '' && WRITES.has(leaf.functionName)) {
    let tls = false;
    for (let up = parent.get(id); up !== undefined && !tls; up = parent.get(up)) tls = /_tls_|internal\/tls/.test(byId.get(up).callFrame.url);
    cat = tls ? 'TLS encrypt + socket write (native)' : 'socket write (native)';
  } else {
    cat = component(leaf.url) ?? ownInternal(leaf.url);
    for (let up = parent.get(id); cat === null && up !== undefined; up = parent.get(up)) cat = component(byId.get(up).callFrame.url);
    cat ??= leaf.url === '' ? `node: native ${leaf.functionName}` : 'node: other internals (events, timers, microtasks)';
  }
  leafCat.set(id, cat);
  return cat;
}

const totals = new Map();
const selfFn = new Map();
let t = prof.startTime;
let busyUs = 0;
for (let i = 0; i < prof.samples.length; i++) {
  t += prof.timeDeltas[i];
  const rel = t - prof.startTime;
  if (rel < winStart || rel > winEnd) continue;
  const dt = prof.timeDeltas[i + 1] ?? prof.timeDeltas[i];
  const id = prof.samples[i];
  const cat = categoryOf(id);
  if (cat === 'idle') continue;
  busyUs += dt;
  totals.set(cat, (totals.get(cat) ?? 0) + dt);
  const f = byId.get(id).callFrame;
  const name = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}${f.url ? `:${f.lineNumber + 1}` : ''}`;
  selfFn.set(name, (selfFn.get(name) ?? 0) + dt);
}
const requests = load.ok * ((winEnd - winStart) / 1e6) / ((t1 - t0) / 1000);
const cpuUsPerReq = ((ticks1 - ticks0) / CLK_TCK) * 1e6 / load.ok;
const rows = [...totals].sort((a, b) => b[1] - a[1]).map(([cat, us]) => ({ component: cat, us_per_req: us / requests, share: us / busyUs }));

const out = [];
out.push(`### Profile: ${args.scheme === 'https' ? 'HTTPS MITM' : 'HTTP forward'}, pipeline ${args.pipeline}, hey -c ${CONNS}, ${args.upstream} upstream, ${SECONDS} s`);
out.push('');
out.push(`${load.ok} answers 200 (${(load.ok / ((t1 - t0) / 1000)).toFixed(0)} req/s)${load.other.length ? `, others ${load.other.join(' ')}` : ''}; sidecar CPU (all threads, /proc) ${cpuUsPerReq.toFixed(0)} µs/req; main thread busy in the profile ${(busyUs / requests).toFixed(0)} µs/req; ${cpuLine}.`);
out.push('');
out.push('| component | µs/req | share |');
out.push('| --- | ---: | ---: |');
for (const r of rows) out.push(`| ${r.component} | ${r.us_per_req.toFixed(1)} | ${(r.share * 100).toFixed(1)} % |`);
if (TOP > 0) {
  out.push('');
  out.push(`Top ${TOP} functions by self time (µs/req):`);
  out.push('');
  out.push('| function | µs/req |');
  out.push('| --- | ---: |');
  for (const [name, us] of [...selfFn].sort((a, b) => b[1] - a[1]).slice(0, TOP)) out.push(`| \`${name}\` | ${(us / requests).toFixed(1)} |`);
}
console.log(out.join('\n'));
if (args.json) fs.writeFileSync(args.json, JSON.stringify({ scheme: args.scheme, pipeline: args.pipeline, requests: load.ok, cpu_us_per_req: cpuUsPerReq, busy_us_per_req: busyUs / requests, rows }, null, 2));
if (args['keep-tmp']) progress(`kept ${tmp}`);
process.exit(0); // the 'exit' handler stops nginx (a child keeps the event loop alive otherwise)
