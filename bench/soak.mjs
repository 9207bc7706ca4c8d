#!/usr/bin/env node
// Firma Sidecar soak: N concurrent keep-alive connections through the built sidecar for T seconds, over
// HTTP (absolute-form) and over HTTPS (CONNECT + TLS with the sidecar's CA, MITM), one phase each.
// The reliability figures of issue 20: how fast new connections are accepted, connect latency,
// request rate, errors, listen-queue overflows and the sidecar's RSS. A benchmark, never a test.
//   npm run build && node bench/soak.mjs --connections 1000 --seconds 20
//   node bench/soak.mjs --help
// See bench/README.md "Soak (bench/soak.mjs)".
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { CLK_TCK, NCPU, canPin, cpuTicks, numberOption, quantile, readOptions, run, sleep, statusKb } from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(HERE);
const CLI = path.join(ROOT, 'dist', 'cli', 'firma.js');

const USAGE = `usage: node bench/soak.mjs [options]

  --connections N      concurrent keep-alive connections per phase (default 1000; capped by ulimit -n)
  --seconds T          length of each phase (default 60)
  --schemes LIST       phases, in order: http,https (default both)
  --direct-seconds T   per scheme, a phase of the same load straight at the upstream first, for the
                       latency the sidecar adds (default 10; 0 = none)
  --settle S           seconds after the connections close before the last RSS reading (default 10)
  --request-timeout MS one exchange (connect, CONNECT, TLS or a request) may take this long (default 10000)
  --proxy-port P       the sidecar's proxy port (default: a free ephemeral port)
  --admin-port P       the sidecar's admin port (default: a free ephemeral port)
  --no-pin             do not pin (default with >= 2 cores: sidecar on CPU 1, client + upstream on CPU 0)
  --json FILE          also write the figures as JSON
  --keep-tmp           keep the temporary folder (config, certs, sidecar log, audit log)
`;

const args = readOptions({
      connections: { type: 'string', default: '1000' },
      seconds: { type: 'string', default: '60' },
      schemes: { type: 'string', default: 'http,https' },
      settle: { type: 'string', default: '10' },
      'direct-seconds': { type: 'string', default: '10' },
      'request-timeout': { type: 'string', default: '10000' },
      'proxy-port': { type: 'string', default: '0' },
      'admin-port': { type: 'string', default: '0' },
      'no-pin': { type: 'boolean', default: false },
      json: { type: 'string' },
      'keep-tmp': { type: 'boolean', default: false },
}, USAGE);
const num = (name, min, max) => numberOption(args, name, min, max, { integer: true });
const OPT = {
  connections: num('connections', 1, 20_000),
  seconds: num('seconds', 1, 3600),
  schemes: [...new Set(args.schemes.split(',').map((s) => s.trim()).filter(Boolean))],
  settle: num('settle', 0, 600),
  directSeconds: num('direct-seconds', 0, 3600),
  requestTimeout: num('request-timeout', 100, 120_000),
  proxyPort: num('proxy-port', 0, 65535),
  adminPort: num('admin-port', 0, 65535),
};
if (OPT.schemes.length === 0 || OPT.schemes.some((s) => s !== 'http' && s !== 'https')) {
  process.stderr.write('--schemes must be http, https or http,https\n');
  process.exit(2);
}
if (!fs.existsSync(CLI)) {
  process.stderr.write(`${CLI} is missing: run npm run build first\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------- helpers
const T0 = performance.now();
const progress = (msg) => process.stderr.write(`[${((performance.now() - T0) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
const ms = (v) => (v === null ? '-' : `${v.toFixed(1)} ms`);
const sub = (a, b) => (a === null || b === null ? null : a - b);
const mib = (kb) => (kb === null ? '-' : `${(kb / 1024).toFixed(0)} MiB`);

const openFds = (pid) => {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
};

/** TcpExt ListenOverflows / ListenDrops (system-wide, since boot) from /proc/net/netstat. */
function listenCounters() {
  try {
    const lines = fs.readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'));
    const names = lines[0].split(/\s+/).slice(1);
    const values = lines[1].split(/\s+/).slice(1).map(Number);
    const get = (n) => values[names.indexOf(n)] ?? null;
    return { overflows: get('ListenOverflows'), drops: get('ListenDrops') };
  } catch {
    return { overflows: null, drops: null };
  }
}
/**
 * The accept queue of the LISTEN socket on 127.0.0.1:`port` right now: for a listener, rx_queue in
 * /proc/net/tcp is the number of connections the kernel completed that the process has not accepted.
 */
function acceptQueue(port) {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  try {
    for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[1] === local && f[3] === '0A') return parseInt(f[4].split(':')[1], 16);
    }
  } catch {}
  return null;
}
const delta = (a, b) => (a === null || b === null ? null : b - a);

/** The soft RLIMIT_NOFILE of this process (what `ulimit -n` says), inherited by the children. */
function fdLimit() {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return m === null || m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.once('error', reject);
  });
}

// ---------------------------------------------------------------------------------------- lifecycle
const children = new Set();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'firma-soak-'));
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  if (!args['keep-tmp']) fs.rmSync(tmp, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
// Everything is bounded: each phase, its settle time, start-up and stop, with room to spare.
const MAX_TOTAL_S = 60 + OPT.schemes.length * (OPT.seconds + OPT.settle + 30);
setTimeout(() => {
  progress(`aborting: the run exceeded ${MAX_TOTAL_S} s`);
  process.exit(3);
}, MAX_TOTAL_S * 1000).unref();

const pin = canPin(args['no-pin']);
if (pin) spawnSync('taskset', ['-a', '-cp', '0', String(process.pid)], { stdio: 'ignore' });
const pinTo = (cpu) => (pin ? ['taskset', '-c', String(cpu)] : []);
function start(argv, opts) {
  const child = spawn(argv[0], argv.slice(1), opts);
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

// The sidecar holds two sockets per connection (agent side and upstream side), the client and the
// upstream one each; every process inherits this soft limit, so N is capped to what it allows.
const limit = fdLimit();
const maxN = Math.floor((limit - 256) / 2);
let N = OPT.connections;
if (N > maxN) {
  progress(`ulimit -n is ${limit}: the sidecar needs about 2 x N + 256 descriptors; capping --connections ${N} to ${Math.max(1, maxN)}`);
  progress(`(raise it first, e.g. \`ulimit -n ${2 * N + 256}\`, to run ${N})`);
  N = Math.max(1, maxN);
}

// ---------------------------------------------------------------------------------------- upstream
function makeCert() {
  const key = path.join(tmp, 'upstream.key');
  const cert = path.join(tmp, 'upstream.crt');
  // Self-signed, so it is its own trust anchor: NODE_EXTRA_CA_CERTS = this file for the sidecar.
  run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
    '-days', '2', '-subj', '/CN=firma soak upstream', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost']);
  return { key, cert };
}

async function startUpstream(pki) {
  // bench/upstream.mjs: node:http + node:https on 127.0.0.1, /small answers 1 KiB with content-length.
  const child = start([...pinTo(0), process.execPath, path.join(HERE, 'upstream.mjs')], {
    env: { ...process.env, BENCH_UP_CERT: pki.cert, BENCH_UP_KEY: pki.key, BENCH_EXTRA_IPS: '', BENCH_LARGE_BYTES: '1024', BENCH_BACKLOG: '4096' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) resolve({ ...JSON.parse(buf.slice(0, buf.indexOf('\n'))), pid: child.pid });
    });
    child.once('exit', (code) => reject(new Error(`upstream exited (${code}) before it was ready`)));
  });
}

// ---------------------------------------------------------------------------------------- sidecar
async function startSidecar(pki) {
  const dir = path.join(tmp, 'sidecar');
  fs.mkdirSync(path.join(dir, 'mappings'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'mappings', 'soak.toml'), '[[rules]]\nhost = "*"\naction_class = "test.call"\nrisk = "low"\n');
  const proxyPort = OPT.proxyPort || (await freePort());
  const adminPort = OPT.adminPort || (await freePort());
  fs.writeFileSync(path.join(dir, 'firma.toml'), `# generated by bench/soak.mjs
[sidecar]
log_level = "warn"
drain_timeout_ms = 2000
[sidecar.interceptor]
listen = "127.0.0.1:${proxyPort}"
[sidecar.interceptor.mitm]
ca_dir = "certs"
[sidecar.admin]
listen = "127.0.0.1:${adminPort}"
[sidecar.connector]
allow_private = ["127.0.0.1/32"]
[sidecar.mapping]
rules_paths = ["mappings/*.toml"]
[sidecar.policy]
dir = ${JSON.stringify(path.join(ROOT, 'policies'))}
[sidecar.capabilities]
required = false
`);
  const logPath = path.join(dir, 'sidecar.log');
  const logFd = fs.openSync(logPath, 'w');
  const child = start([...pinTo(1), process.execPath, CLI, 'start', '--config', path.join(dir, 'firma.toml')], {
    cwd: dir,
    env: { ...process.env, NODE_EXTRA_CA_CERTS: pki.cert, HTTP_PROXY: '', HTTPS_PROXY: '', http_proxy: '', https_proxy: '' },
    stdio: ['ignore', logFd, logFd],
  });
  fs.closeSync(logFd);
  let exited = null;
  child.once('exit', (code, signal) => (exited = code ?? signal));
  // log_level warn writes no ready line: /readyz on the admin listener says when it serves.
  const deadline = performance.now() + 30_000;
  while (!(await readyz(adminPort))) {
    if (exited !== null || performance.now() > deadline) throw new Error(`sidecar not ready (exit ${exited}):\n${fs.readFileSync(logPath, 'utf8').slice(-2000)}`);
    await sleep(50);
  }
  const stop = async () => {
    if (exited !== null) return exited;
    const gone = new Promise((r) => child.once('exit', (code, signal) => r(code ?? signal)));
    child.kill('SIGTERM');
    return Promise.race([gone, sleep(10_000).then(() => 'did not exit in 10 s')]);
  };
  return { pid: child.pid, proxyPort, dir, logPath, ca: fs.readFileSync(path.join(dir, 'certs', 'ca.crt')), stop };
}

function readyz(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write('GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    let buf = '';
    s.setTimeout(1000, () => s.destroy());
    s.on('data', (d) => (buf += d));
    s.on('error', () => undefined);
    s.on('close', () => resolve(buf.startsWith('HTTP/1.1 200')));
  });
}

// ---------------------------------------------------------------------------------------- client
/**
 * One byte stream and its HTTP/1.1 answers, read by hand: the client must cost far less than the
 * sidecar, and time the first byte of each answer exactly. `next()` resolves with the status of the
 * next whole response (content-length or chunked), `onFirst` at its first byte.
 */
function reader(sock) {
  let buf = Buffer.alloc(0);
  let want = null;
  let dead = null;
  const check = () => {
    if (want === null || buf.length === 0) return;
    if (!want.seen) {
      want.seen = true;
      want.onFirst?.(performance.now());
    }
    const end = buf.indexOf('\r\n\r\n');
    if (end === -1) return;
    const head = buf.subarray(0, end).toString('latin1');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
    const len = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    let total;
    if (len !== null) total = end + 4 + Number(len[1]);
    else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
      const z = buf.indexOf('\r\n0\r\n\r\n', end);
      if (z === -1) return;
      total = z + 7;
    } else if (want.headOnly) total = end + 4;
    else return; // delimited by the close: counted when it comes
    if (buf.length < total) return;
    buf = buf.subarray(total);
    const w = want;
    want = null;
    clearTimeout(w.timer);
    w.resolve(status);
  };
  const fail = (kind) => {
    dead ??= kind;
    if (want === null) return;
    const w = want;
    want = null;
    clearTimeout(w.timer);
    w.reject(new Error(dead));
  };
  const onData = (d) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    check();
  };
  const onError = (e) => fail(e.code === 'ECONNRESET' ? 'reset' : e.code ?? 'socket_error');
  const onClose = () => fail('closed');
  sock.on('data', onData);
  sock.on('error', onError);
  sock.on('close', onClose);
  return {
    /** Stop reading (the socket is handed to TLS); errors stay swallowed. */
    detach() {
      sock.off('data', onData);
      sock.off('close', onClose);
    },
    next(timeoutMs, { onFirst, headOnly = false } = {}) {
      if (dead !== null) return Promise.reject(new Error(dead));
      return new Promise((resolve, reject) => {
        want = { resolve, reject, onFirst, headOnly, seen: false, timer: setTimeout(() => fail('timeout'), timeoutMs) };
        check();
      });
    },
  };
}

function waitEvent(emitter, ok, timeoutMs, kind) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timeout')), timeoutMs);
    emitter.once(ok, () => {
      clearTimeout(timer);
      resolve();
    });
    emitter.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' ? e.code : kind));
    });
  });
}

/** Rethrow an error with the step it happened in (`request: timeout`). */
const stage = (name) => (err) => {
  throw new Error(`${name}: ${err.message}`);
};

/** One agent: keep a connection open and send requests back to back until the phase ends; reconnect after an error. */
async function agent(ph, i) {
  let initial = true;
  while (!ph.stopping) {
    const opened = performance.now();
    const raw = net.connect(ph.direct ? ph.upstreamPort : ph.proxyPort, '127.0.0.1');
    ph.sockets.add(raw);
    let sock = raw;
    const firstByte = (t) => {
      ph.connectMs.push(t - opened);
      if (initial && t - ph.startedAt <= 1000) ph.answeredFirstSecond++;
    };
    try {
      raw.setNoDelay(true);
      await waitEvent(raw, 'connect', ph.timeout, 'connect').catch(stage('connect'));
      ph.tcpMs.push(performance.now() - opened);
      if (initial && performance.now() - ph.startedAt <= 1000) ph.tcpFirstSecond++;
      let first = true;
      if (ph.scheme === 'https' && ph.direct) {
        sock = tls.connect({ socket: raw, ca: ph.ca, host: '127.0.0.1', ALPNProtocols: ['http/1.1'] });
        await waitEvent(sock, 'secureConnect', ph.timeout, 'tls').catch(stage('tls'));
      } else if (ph.scheme === 'https') {
        const r = reader(raw);
        raw.write(`CONNECT ${ph.authority} HTTP/1.1\r\nHost: ${ph.authority}\r\n\r\n`);
        const status = await r.next(ph.timeout, { onFirst: firstByte, headOnly: true }).catch(stage('CONNECT'));
        if (status !== 200) throw new Error(`connect_${status}`);
        r.detach();
        first = false;
        sock = tls.connect({ socket: raw, ca: ph.ca, host: '127.0.0.1', ALPNProtocols: ['http/1.1'] });
        await waitEvent(sock, 'secureConnect', ph.timeout, 'tls').catch(stage('tls'));
      }
      const r = reader(sock);
      while (!ph.stopping) {
        const sent = performance.now();
        sock.write(ph.request);
        const status = await r.next(ph.timeout, first ? { onFirst: firstByte } : {}).catch(stage(first ? 'first request' : 'request'));
        first = false;
        if (status === 200) {
          ph.requests++;
          ph.requestMs.push(performance.now() - sent);
        }
        else ph.count(`status_${status}`);
      }
    } catch (err) {
      if (!ph.stopping) ph.count(err.message);
    } finally {
      initial = false;
      sock.destroy();
      raw.destroy();
      ph.sockets.delete(raw);
    }
    if (!ph.stopping) await sleep(100 + (i % 100)); // back off a little, spread the reconnects
  }
}

/** The same load straight at the upstream (no sidecar): the request latency the sidecar's figures are compared with. */
async function directPhase(scheme, upstream, pki) {
  const port = scheme === 'http' ? upstream.http : upstream.https;
  const authority = `127.0.0.1:${port}`;
  const ph = newPhase(scheme, { direct: true, upstreamPort: port, authority, ca: fs.readFileSync(pki.cert), request: `GET /small HTTP/1.1\r\nHost: ${authority}\r\n\r\n` });
  progress(`${scheme} direct: ${N} connections for ${OPT.directSeconds} s`);
  ph.startedAt = performance.now();
  const agents = Array.from({ length: N }, (_, i) => agent(ph, i));
  await sleep(OPT.directSeconds * 1000);
  ph.stopping = true;
  for (const s of ph.sockets) s.destroy();
  await Promise.race([Promise.all(agents), sleep(5000)]);
  const req = [...ph.requestMs].sort((a, b) => a - b);
  return { requests: ph.requests, p50: quantile(req, 0.5), p99: quantile(req, 0.99), errors: ph.errors };
}

function newPhase(scheme, extra) {
  return {
    scheme,
    direct: false,
    timeout: OPT.requestTimeout,
    stopping: false,
    sockets: new Set(),
    connectMs: [],
    tcpMs: [],
    requestMs: [],
    answeredFirstSecond: 0,
    tcpFirstSecond: 0,
    requests: 0,
    errors: {},
    count(kind) {
      this.errors[kind] = (this.errors[kind] ?? 0) + 1;
    },
    startedAt: 0,
    ...extra,
  };
}

async function phase(scheme, sidecar, upstream, direct) {
  const port = scheme === 'http' ? upstream.http : upstream.https;
  const authority = `127.0.0.1:${port}`;
  const ph = newPhase(scheme, {
    proxyPort: sidecar.proxyPort,
    authority,
    ca: sidecar.ca,
    request: scheme === 'http' ? `GET http://${authority}/small HTTP/1.1\r\nHost: ${authority}\r\n\r\n` : `GET /small HTTP/1.1\r\nHost: ${authority}\r\n\r\n`,
  });
  const before = listenCounters();
  const rssIdle = statusKb(sidecar.pid, 'VmRSS');
  try {
    fs.writeFileSync(`/proc/${sidecar.pid}/clear_refs`, '5'); // VmHWM := VmRSS (proc(5)), so the peak is this phase's
  } catch {}
  let rssPeak = rssIdle ?? 0;
  let fdPeak = 0;
  let queuePeak = 0;
  const sampler = setInterval(() => {
    queuePeak = Math.max(queuePeak, acceptQueue(sidecar.proxyPort) ?? 0);
    rssPeak = Math.max(rssPeak, statusKb(sidecar.pid, 'VmRSS') ?? 0);
    fdPeak = Math.max(fdPeak, openFds(sidecar.pid) ?? 0);
  }, 250);
  const cpu0 = { sidecar: cpuTicks(sidecar.pid), client: cpuTicks(process.pid), upstream: cpuTicks(upstream.pid) };
  progress(`${scheme}: opening ${N} connections for ${OPT.seconds} s`);
  ph.startedAt = performance.now();
  const agents = Array.from({ length: N }, (_, i) => agent(ph, i));
  await sleep(OPT.seconds * 1000);
  const elapsed = (performance.now() - ph.startedAt) / 1000;
  const cpu1 = { sidecar: cpuTicks(sidecar.pid), client: cpuTicks(process.pid), upstream: cpuTicks(upstream.pid) };
  ph.stopping = true;
  for (const s of ph.sockets) s.destroy();
  await Promise.race([Promise.all(agents), sleep(5000)]);
  clearInterval(sampler);
  const after = listenCounters();
  const hwm = statusKb(sidecar.pid, 'VmHWM');
  progress(`${scheme}: connections closed; RSS again in ${OPT.settle} s`);
  await sleep(OPT.settle * 1000);
  const connect = [...ph.connectMs].sort((a, b) => a - b);
  const req = [...ph.requestMs].sort((a, b) => a - b);
  const tcp = [...ph.tcpMs].sort((a, b) => a - b);
  const pct = (a, b) => (a === null || b === null ? null : Math.round(((b - a) / CLK_TCK / elapsed) * 100));
  return {
    scheme,
    connections: N,
    seconds: Math.round(elapsed * 10) / 10,
    answeredFirstSecond: ph.answeredFirstSecond,
    tcpFirstSecond: ph.tcpFirstSecond,
    connectP50: quantile(connect, 0.5),
    connectP99: quantile(connect, 0.99),
    connectMax: connect.at(-1) ?? null,
    tcpP99: quantile(tcp, 0.99),
    connectsMeasured: connect.length,
    requests: ph.requests,
    rps: Math.round(ph.requests / elapsed),
    requestP50: quantile(req, 0.5),
    requestP99: quantile(req, 0.99),
    direct,
    errors: ph.errors,
    listenOverflows: delta(before.overflows, after.overflows),
    listenDrops: delta(before.drops, after.drops),
    rssIdleKb: rssIdle,
    rssPeakKb: Math.max(rssPeak, hwm ?? 0),
    rssAfterKb: statusKb(sidecar.pid, 'VmRSS'),
    fdPeak,
    queuePeak,
    cpu: { sidecar: pct(cpu0.sidecar, cpu1.sidecar), client: pct(cpu0.client, cpu1.client), upstream: pct(cpu0.upstream, cpu1.upstream) },
  };
}

// ---------------------------------------------------------------------------------------- main
function report(results, meta) {
  const rows = [
    ['new connections answered in the first second', (r) => `${r.answeredFirstSecond} / ${r.connections} (TCP established: ${r.tcpFirstSecond})`],
    ['connect latency p50 / p99 / max (open → first answer byte)', (r) => `${ms(r.connectP50)} / ${ms(r.connectP99)} / ${ms(r.connectMax)} (${r.connectsMeasured} connects)`],
    ['TCP connect p99', (r) => ms(r.tcpP99)],
    ['requests, rate', (r) => `${r.requests} in ${r.seconds} s, ${r.rps} req/s`],
    ['request latency p50 / p99 (sidecar; direct; added)', (r) => `${ms(r.requestP50)} / ${ms(r.requestP99)}${r.direct === null ? '' : `; ${ms(r.direct.p50)} / ${ms(r.direct.p99)}; +${ms(sub(r.requestP50, r.direct.p50))} / +${ms(sub(r.requestP99, r.direct.p99))}`}`],
    ['audit: decisions / outcomes (200) / decisions with no outcome', (r) => (r.audit === undefined ? '-' : `${r.audit.decisions} / ${r.audit.outcomes} (${r.audit.ok}) / ${r.audit.unmatched}`)],
    ['answers 200 the client read with no 200 outcome in the audit', (r) => (r.audit === undefined ? '-' : String(Math.max(0, r.requests - r.audit.ok)))],
    ['errors', (r) => (Object.keys(r.errors).length === 0 ? '0' : Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(', '))],
    ['listen queue overflows / drops (TcpExt, system-wide)', (r) => `${r.listenOverflows ?? '-'} / ${r.listenDrops ?? '-'}`],
    ['proxy listener accept queue, peak (sampled)', (r) => String(r.queuePeak)],
    ['sidecar RSS idle → peak → settled', (r) => `${mib(r.rssIdleKb)} → ${mib(r.rssPeakKb)} → ${mib(r.rssAfterKb)} (${OPT.settle} s after close)`],
    ['sidecar open fds, peak', (r) => String(r.fdPeak)],
    ['CPU % of a core: sidecar / client / upstream', (r) => `${r.cpu.sidecar} / ${r.cpu.client} / ${r.cpu.upstream}`],
  ];
  const lines = [
    `# Soak: ${N} keep-alive connections x ${OPT.seconds} s per scheme`,
    '',
    `node ${process.version}, ${NCPU} CPUs, ulimit -n ${meta.limit}, ${pin ? 'sidecar on CPU 1, client + upstream on CPU 0' : 'not pinned'}; sidecar RSS at start ${mib(meta.rssStartKb)}; stop: exit ${meta.exit}`,
    '',
    `| | ${results.map((r) => r.scheme).join(' | ')} |`,
    `| --- | ${results.map(() => '---').join(' | ')} |`,
    ...rows.map(([label, f]) => `| ${label} | ${results.map(f).join(' | ')} |`),
  ];
  if (meta.sidecarWarnings > 0) lines.push('', `The sidecar logged ${meta.sidecarWarnings} warn/error line(s) (${meta.logPath}${args['keep-tmp'] ? '' : ', removed; --keep-tmp keeps it'}).`);
  return lines.join('\n');
}

const pki = makeCert();
const upstream = await startUpstream(pki);
const sidecar = await startSidecar(pki);
progress(`sidecar pid ${sidecar.pid} on 127.0.0.1:${sidecar.proxyPort}, upstream http ${upstream.http} https ${upstream.https}`);
await sleep(1000);
const rssStartKb = statusKb(sidecar.pid, 'VmRSS');
const results = [];
for (const scheme of OPT.schemes) {
  const direct = OPT.directSeconds > 0 ? await directPhase(scheme, upstream, pki) : null;
  results.push(await phase(scheme, sidecar, upstream, direct));
}
const exit = await sidecar.stop();
// Every answer the client read must be in the audit log: per scheme, decision and outcome events (the
// live file and rotated ones), outcomes with status 200 against the client's count of 200s.
const auditDir = path.join(sidecar.dir, 'audit');
const perScheme = new Map(OPT.schemes.map((sch) => [sch, { decisions: 0, outcomes: 0, ok: 0, unmatched: 0 }]));
const open = new Map();
// Oldest first: rotated files audit.jsonl.1, .2, … then the live file (an outcome must follow its decision).
const rotation = (n) => (n === 'audit.jsonl' ? Infinity : Number(n.slice('audit.jsonl.'.length)));
const auditFiles = fs.existsSync(auditDir) ? fs.readdirSync(auditDir).filter((n) => /^audit\.jsonl(\.\d+)?$/.test(n)).sort((a, b) => rotation(a) - rotation(b)) : [];
for (const f of auditFiles) {
  for (const line of fs.readFileSync(path.join(auditDir, f), 'utf8').split('\n')) {
    if (line === '') continue;
    const e = JSON.parse(line);
    if (e.type === 'decision' && perScheme.has(e.scheme)) {
      perScheme.get(e.scheme).decisions++;
      open.set(e.request_id, e.scheme);
    } else if (e.type === 'outcome' && open.has(e.request_id)) {
      const a = perScheme.get(open.get(e.request_id));
      open.delete(e.request_id);
      a.outcomes++;
      if (e.status === 200) a.ok++;
    }
  }
}
for (const sch of open.values()) perScheme.get(sch).unmatched++;
for (const r of results) r.audit = perScheme.get(r.scheme);
const log = fs.existsSync(sidecar.logPath) ? fs.readFileSync(sidecar.logPath, 'utf8') : '';
// The admin-token notice is a start-up warning every run has (no token is configured here).
const sidecarWarnings = log.split('\n').filter((l) => /"level":(40|50|60)/.test(l) && !l.includes('no admin token set')).length;
if (sidecarWarnings > 0) progress(`sidecar log (last lines):\n${log.trim().split('\n').slice(-5).join('\n')}`);
process.stdout.write(`${report(results, { limit, rssStartKb, exit, sidecarWarnings, logPath: sidecar.logPath })}\n`);
if (args.json) fs.writeFileSync(args.json, `${JSON.stringify({ connections: N, seconds: OPT.seconds, limit, rssStartKb, results }, null, 2)}\n`);
process.exit(0);
