#!/usr/bin/env node
// Firma Sidecar loopback benchmark: the sidecar vs a direct connection, same client, same upstream.
//   npm run bench                         # build, then this script (~100 s)
//   node bench/run.mjs --help             # options
// See bench/README.md for what every figure means. Writes bench/results/latest.{json,md}.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import tls from 'node:tls';
import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Agent, ProxyAgent, request } from 'undici';
import { CLK_TCK, NCPU, canPin, coreTicks, cpuTicks as procTicks, has, numberOption, quantile, readOptions, run, sleep, statusKb } from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(HERE);
const SIDECAR_MAIN = path.join(ROOT, 'dist', 'cli', 'firma.js');
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

const USAGE = `usage: node bench/run.mjs [options]     (npm run bench -- [options])

  --log-level L       sidecar log_level: ${LEVELS.join('|')} (default warn; info = one line per request)
  --duration S        measured seconds per load phase (default 10)
  --warmup S          unmeasured seconds before each load phase (default 2)
  --concurrency N     keep-alive connections / in-flight requests of the load client (default 16)
  --max-requests N    request cap per load phase (default 300000)
  --configs LIST      sidecar configurations measured in extra keep-alive load phases, each in a fresh
                      sidecar process after the plain one's phases: limited (token bucket + injected
                      credential for the upstream), full (+ mapping rule, capability token, Cedar);
                      default limited,full; none = only the plain configuration
  --config-duration S measured seconds per load phase of those configurations (default 5)
  --config-warmup S   unmeasured seconds before each of them (default 2)
  --large-reps N      50 MiB downloads per scheme and path, median reported (default 3)
  --sse-reps N        SSE streams per scheme and path, median reported (default 2)
  --newhost-reps N    fresh host names / IPs per first-connection round, median reported; one round
                      right after start (cold process), one after the load phases (default 5, max 10)
  --wait-quiet S      before each phase wait up to S s for other processes to use < 15 % of a core
                      (default 10; 0 = never wait, never repeat)
  --quiet-budget S    total seconds the run may spend on such waits and on repeating a disturbed
                      load phase once (default 20: ~100 s quiet run + 20 s ≈ 2 min)
  --max-total S       abort the whole run after S seconds (default 180)
  --no-pin            do not pin (default with >= 2 cores: sidecar on CPU 1, client + upstream on CPU 0)
  --out DIR           results directory (default bench/results)
  --keep-tmp          keep the temporary directory (certs, configs, sidecar log)
`;

// ------------------------------------------------------------------------------------------ options
const args = readOptions({
      'log-level': { type: 'string', default: 'warn' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      concurrency: { type: 'string', default: '16' },
      'max-requests': { type: 'string', default: '300000' },
      configs: { type: 'string', default: 'limited,full' },
      'config-duration': { type: 'string', default: '5' },
      'config-warmup': { type: 'string', default: '2' },
      'large-reps': { type: 'string', default: '3' },
      'sse-reps': { type: 'string', default: '2' },
      'newhost-reps': { type: 'string', default: '5' },
      'max-total': { type: 'string', default: '180' },
      'wait-quiet': { type: 'string', default: '10' },
      'quiet-budget': { type: 'string', default: '20' },
      'no-pin': { type: 'boolean', default: false },
      out: { type: 'string', default: path.join(HERE, 'results') },
      'keep-tmp': { type: 'boolean', default: false },
}, USAGE);
const num = (name, min, max) => numberOption(args, name, min, max);
const OPT = {
  logLevel: args['log-level'],
  duration: num('duration', 0.5, 120),
  warmup: num('warmup', 0, 30),
  concurrency: Math.floor(num('concurrency', 1, 1024)),
  maxRequests: Math.floor(num('max-requests', 1, 10_000_000)),
  configs: args.configs === 'none' ? [] : [...new Set(args.configs.split(',').map((v) => v.trim()).filter(Boolean))],
  configDuration: num('config-duration', 0.5, 120),
  configWarmup: num('config-warmup', 0, 30),
  largeReps: Math.floor(num('large-reps', 1, 20)),
  sseReps: Math.floor(num('sse-reps', 1, 20)),
  newhostReps: Math.floor(num('newhost-reps', 1, 10)),
  maxTotal: num('max-total', 10, 3600),
  waitQuiet: num('wait-quiet', 0, 600),
  quietBudget: num('quiet-budget', 0, 3600),
  out: path.resolve(args.out),
  keepTmp: args['keep-tmp'],
};
if (OPT.configs.some((v) => !['limited', 'full'].includes(v))) {
  process.stderr.write('--configs must be a comma-separated list of limited, full (or none)\n');
  process.exit(2);
}
if (!LEVELS.includes(OPT.logLevel)) {
  process.stderr.write(`--log-level must be one of ${LEVELS.join(', ')}\n`);
  process.exit(2);
}
if (!fs.existsSync(SIDECAR_MAIN)) {
  process.stderr.write(`${SIDECAR_MAIN} is missing: build first (npm run build, or use npm run bench)\n`);
  process.exit(2);
}

// ------------------------------------------------------------------------------------------ helpers
const T0 = performance.now();
const progress = (msg) => process.stderr.write(`[${((performance.now() - T0) / 1000).toFixed(1).padStart(5)}s] ${msg}\n`);
const round = (v, d = 1) => (v === null || v === undefined || !Number.isFinite(v) ? null : Math.round(v * 10 ** d) / 10 ** d);
const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const PIN = canPin(args['no-pin']);

/** VmRSS / VmHWM in MiB. */
function procMem(pid) {
  const rss = statusKb(pid, 'VmRSS');
  const hwm = statusKb(pid, 'VmHWM');
  return { rss: rss === null ? null : rss / 1024, hwm: hwm === null ? null : hwm / 1024 };
}
/** Reset VmHWM to the current RSS (proc(5) clear_refs "5"); false if not permitted. */
function resetHwm(pid) {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}
// ------------------------------------------------------------------------------------------ lifecycle
const children = new Set();
let tmp = null;
function cleanup() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
  children.clear();
  if (tmp && !OPT.keepTmp) fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
const watchdog = setTimeout(() => {
  progress(`aborting: the run exceeded --max-total ${OPT.maxTotal} s`);
  process.exit(3);
}, OPT.maxTotal * 1000);

if (PIN) spawnSync('taskset', ['-a', '-cp', '0', String(process.pid)], { stdio: 'ignore' });
const pinTo = (cpu) => (PIN ? ['taskset', '-c', String(cpu)] : []);

// ------------------------------------------------------------------------------------------ certs
tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'firma-bench-'));
const EXTRA_IPS = Array.from({ length: 2 * OPT.newhostReps }, (_, i) => `127.0.0.${i + 2}`);
function makeUpstreamCerts() {
  const p = (f) => path.join(tmp, f);
  run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p('up-ca.key')]);
  run('openssl', ['req', '-x509', '-new', '-key', p('up-ca.key'), '-sha256', '-days', '2', '-subj', '/CN=firma bench upstream CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', p('up-ca.crt')]);
  run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p('up.key')]);
  run('openssl', ['req', '-new', '-key', p('up.key'), '-subj', '/CN=localhost', '-out', p('up.csr')]);
  const san = ['DNS:localhost', 'IP:127.0.0.1', ...EXTRA_IPS.map((ip) => `IP:${ip}`)].join(',');
  fs.writeFileSync(p('up.ext'), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`);
  run('openssl', ['x509', '-req', '-in', p('up.csr'), '-CA', p('up-ca.crt'), '-CAkey', p('up-ca.key'), '-CAcreateserial',
    '-days', '2', '-sha256', '-extfile', p('up.ext'), '-out', p('up.crt')]);
  return { caPath: p('up-ca.crt'), ca: fs.readFileSync(p('up-ca.crt'), 'utf8'), cert: p('up.crt'), key: p('up.key') };
}

// ------------------------------------------------------------------------------------------ children
function cleanEnv(extra) {
  const env = { ...process.env, ...extra };
  for (const k of Object.keys(env)) if (/^(https?|all|no)_proxy$/i.test(k)) delete env[k];
  return env;
}

async function startUpstream(certs) {
  const argv = [...pinTo(0), process.execPath, path.join(HERE, 'upstream.mjs')];
  const child = spawn(argv[0], argv.slice(1), {
    env: cleanEnv({ BENCH_UP_CERT: certs.cert, BENCH_UP_KEY: certs.key, BENCH_EXTRA_IPS: EXTRA_IPS.join(',') }),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  const info = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl !== -1) resolve(JSON.parse(buf.slice(0, nl)));
    });
    child.once('exit', (code) => reject(new Error(`upstream exited (${code}) before it was ready`)));
  });
  return { ...info, pid: child.pid };
}

/** LISTEN TCP ports owned by `pid`, from /proc (works when log_level hides the ready line). */
function listeningPorts(pid) {
  const inodes = new Set();
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      } catch {}
    }
  } catch {
    return [];
  }
  const ports = [];
  for (const file of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(`/proc/${pid}/net/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A' || !inodes.has(f[9])) continue;
      ports.push(parseInt(f[1].split(':')[1], 16));
    }
  }
  return ports;
}

/** The sidecar's proxy listener answers a plain origin-form GET with its own 400 (x-firma-request-id). */
function isProxyPort(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (v) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(2000, () => done(false));
    s.on('error', () => done(false));
    s.on('connect', () => s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'));
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n\r\n')) done(/^HTTP\/1\.1 400/.test(buf) && /x-firma-request-id/i.test(buf));
    });
    s.on('end', () => done(false));
  });
}

/** Dotted config keys of the built CLI's `firma schema` ("sidecar.capabilities.required", "credentials.host"…). */
function schemaKeys(text) {
  const keys = new Set();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    return keys;
  }
  const walk = (node, prefix) => {
    if (!node || typeof node !== 'object') return;
    for (const [k, v] of Object.entries(node.properties ?? {})) {
      const key = prefix ? `${prefix}.${k}` : k;
      keys.add(key);
      walk(v, key);
    }
    if (node.items) walk(node.items, prefix);
  };
  walk(json, '');
  return keys;
}

/** Config keys differ between sidecar versions: ask the built CLI for its schema. */
function sidecarSchema() {
  const r = spawnSync(process.execPath, [SIDECAR_MAIN, 'schema'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout : '';
}
const SCHEMA = schemaKeys(sidecarSchema());

/** Sidecar configurations of the run (the first one gets every phase, the others the load phases only). */
const CONFIGS = {
  plain: { label: 'plain host', needs: [] },
  limited: {
    label: 'rate-limited + credential host',
    needs: ['sidecar.connector.hosts.rps', 'credentials.value_from_env', 'credentials.allow_plaintext'],
  },
  full: {
    label: 'full pipeline',
    needs: ['sidecar.mapping.rules_paths', 'sidecar.capabilities.required', 'sidecar.policy.dir', 'sidecar.connector.hosts.rps', 'credentials.value_from_env'],
  },
};
/** The random credential value the sidecar injects (from its environment, never in a file). */
const BENCH_KEY = crypto.randomBytes(24).toString('base64url');
const BENCH_AGENT = 'bench';
const q = (s) => JSON.stringify(s);

/**
 * The sidecar config for one bench configuration. Keys that only some sidecar versions have are added
 * when the built CLI's schema has them:
 * - connector.allow_private: the upstream is on 127.0.0.0/8, behind the SSRF guard otherwise.
 * - plain / limited: mapping.default_protected = false (+ the shipped mapping packs and policies) and
 *   capabilities.required = false: the bench's requests match no mapping rule, so they are allowed as
 *   unclassified traffic. The mapping lookup runs on every request; capability tokens and Cedar are not
 *   exercised.
 * - limited: + a token bucket that never runs dry and an injected credential for the upstream ports.
 * - full: + a mapping rule classifying 127.0.0.1 (bench.call, low), capabilities required (the client
 *   sends a token as proxy credentials), the shipped policies/default.cedar (copied): classification,
 *   stage 1 and stage 2 run on every request, then the bucket and the credential.
 * - audit.path into the bench's temporary folder.
 * `targets`: upstream and echo ports that get the bucket / credential.
 */
function sidecarConfig(variant, dir, targets) {
  const toml = [];
  const notes = [];
  const connector = [];
  if (SCHEMA.has('sidecar.connector.allow_private')) {
    connector.push('allow_private = ["127.0.0.0/8"]');
    notes.push('connector.allow_private = ["127.0.0.0/8"]');
  }
  if (SCHEMA.has('sidecar.mapping.default_protected')) {
    const mappings = path.join(ROOT, 'mappings');
    const shippedRules = fs.existsSync(mappings) ? [path.join(mappings, '*.toml')] : [];
    let policyDir = path.join(ROOT, 'policies');
    const rules = [...shippedRules];
    if (variant === 'full') {
      const ruleFile = path.join(dir, 'bench-rules.toml');
      fs.writeFileSync(ruleFile, `# generated by bench/run.mjs\n[[rules]]\nhost = "127.0.0.1"\naction_class = "bench.call"\nrisk = "low"\n`);
      rules.unshift(ruleFile);
      policyDir = path.join(dir, 'policies');
      fs.mkdirSync(policyDir, { recursive: true });
      fs.copyFileSync(path.join(ROOT, 'policies', 'default.cedar'), path.join(policyDir, 'default.cedar'));
    } else if (!fs.existsSync(policyDir)) {
      policyDir = path.join(dir, 'policies');
      fs.mkdirSync(policyDir, { recursive: true });
    }
    toml.push('[sidecar.mapping]', `default_protected = ${variant === 'full'}`);
    if (rules.length && SCHEMA.has('sidecar.mapping.rules_paths')) toml.push(`rules_paths = [${rules.map(q).join(', ')}]`);
    toml.push('[sidecar.policy]', `dir = ${q(policyDir)}`);
    if (variant === 'full') {
      notes.push('mapping rule host = "127.0.0.1" → bench.call (low) + shipped mapping packs; default_protected = true; policies/default.cedar');
    } else {
      notes.push(`mapping.default_protected = false (bench traffic is unclassified: allowed, mapping lookup only)${shippedRules.length ? ', shipped mapping packs' : ''}`);
    }
  }
  if (SCHEMA.has('sidecar.capabilities.required')) {
    toml.push('[sidecar.capabilities]', `required = ${variant === 'full'}`);
    notes.push(variant === 'full' ? `capabilities.required = true (token: agent ${BENCH_AGENT}, actions *, scope 127.0.0.1)` : 'capabilities.required = false');
  }
  if (variant !== 'plain') {
    for (const t of targets.filter((x) => x.limit)) toml.push('[[sidecar.connector.hosts]]', `host = ${q(t.authority)}`, 'rps = 1000000', 'burst = 1000000');
    for (const t of targets) {
      toml.push('[[credentials]]', `host = ${q(t.authority)}`, 'mode = "basic"', 'header = "Authorization"', 'value_from_env = "FIRMA_BENCH_KEY"', 'prefix = "Bearer "');
      if (t.plaintext) toml.push('allow_plaintext = true');
    }
    notes.push('connector.hosts rps = burst = 1000000 and [[credentials]] Authorization: Bearer $FIRMA_BENCH_KEY for the upstream ports (http: allow_plaintext)');
  }
  if (SCHEMA.has('audit.path')) {
    toml.push('[audit]', `path = ${q(path.join(dir, 'audit', 'audit.jsonl'))}`);
    notes.push('audit.path in the bench tmp folder');
  }
  return { connector: connector.join('\n'), toml: toml.join('\n'), notes };
}

async function startSidecar(variant, upstreamCaPath, targets) {
  const dir = path.join(tmp, variant === 'plain' ? 'sidecar' : `sidecar-${variant}`);
  fs.mkdirSync(dir);
  const config = path.join(dir, 'firma.toml');
  const extra = sidecarConfig(variant, dir, targets);
  fs.writeFileSync(
    config,
    `# generated by bench/run.mjs (${variant})
[sidecar]
log_level = "${OPT.logLevel}"
[sidecar.interceptor]
listen = "127.0.0.1:0"
[sidecar.interceptor.mitm]
ca_dir = "certs"
bypass_hosts = []
[sidecar.admin]
listen = "127.0.0.1:0"
[sidecar.connector]
default_timeout_ms = 30000
${extra.connector}
${extra.toml}
`,
  );
  let token = null;
  if (variant === 'full') {
    const r = spawnSync(
      process.execPath,
      [SIDECAR_MAIN, 'token', 'issue', '--agent', BENCH_AGENT, '--actions', '*', '--scope', '127.0.0.1', '--ttl', '1h', '--config', config],
      { cwd: dir, encoding: 'utf8', env: cleanEnv({ FIRMA_BENCH_KEY: BENCH_KEY }) },
    );
    token = r.stdout?.trim();
    if (r.status !== 0 || !token) throw new Error(`firma token issue failed (${r.status}): ${r.stderr}`);
  }
  const logPath = path.join(dir, 'sidecar.log');
  const logFd = fs.openSync(logPath, 'w');
  const argv = [...pinTo(1), process.execPath, SIDECAR_MAIN, 'start', '--config', config];
  const started = performance.now();
  const child = spawn(argv[0], argv.slice(1), {
    cwd: dir,
    env: cleanEnv({ NODE_EXTRA_CA_CERTS: upstreamCaPath, ...(variant === 'plain' ? {} : { FIRMA_BENCH_KEY: BENCH_KEY }) }),
    stdio: ['ignore', logFd, logFd],
  });
  fs.closeSync(logFd);
  children.add(child);
  let exited = null;
  child.once('exit', (code, signal) => (exited = `${code ?? signal}`));
  const caPath = path.join(dir, 'certs', 'ca.crt');
  const readyLineExpected = LEVELS.indexOf(OPT.logLevel) <= LEVELS.indexOf('info');
  const deadline = performance.now() + 20_000;
  let port = null;
  let how = null;
  while (port === null) {
    if (exited !== null) throw new Error(`sidecar (${variant}) exited (${exited}) before it was ready:\n${fs.readFileSync(logPath, 'utf8').slice(-2000)}`);
    if (performance.now() > deadline) throw new Error(`sidecar (${variant}) not ready after 20 s:\n${fs.readFileSync(logPath, 'utf8').slice(-2000)}`);
    const log = fs.readFileSync(logPath, 'utf8');
    const ready = log.split('\n').find((l) => l.includes('"msg":"firma sidecar ready"'));
    if (ready) {
      port = Number(JSON.parse(ready).proxy.split(':').pop());
      how = 'ready log line';
    } else if (!readyLineExpected && fs.existsSync(caPath)) {
      const ports = listeningPorts(child.pid);
      if (ports.length >= 2) {
        // No ready line below "info": the proxy listener is the one that answers like the proxy.
        for (const p of ports) if (await isProxyPort(p)) port = p;
        how = `/proc/${child.pid}/net/tcp (no ready line at log_level ${OPT.logLevel})`;
      }
    }
    if (port === null) await sleep(25);
  }
  const readyMs = performance.now() - started;
  const stop = async () => {
    if (exited !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([gone, sleep(3000)]);
    if (exited === null) child.kill('SIGKILL');
    children.delete(child);
  };
  return {
    variant,
    pid: child.pid,
    port,
    token,
    how,
    readyMs,
    extraConfig: extra.notes,
    config,
    logPath,
    caPath,
    ca: fs.readFileSync(caPath, 'utf8'),
    child,
    exited: () => exited,
    stop,
  };
}

/**
 * In-process echo origins (http + https with the upstream's certificate) that answer with the
 * Authorization header they received: the only way to see whether a configuration really injects the
 * credential (the bench upstream does not report request headers). Used outside the measured windows.
 */
async function startEcho(certs) {
  const handler = (req, res) => {
    const body = JSON.stringify({ authorization: req.headers.authorization ?? null });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  const listen = (server) => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
  const h = await listen(http.createServer(handler));
  const s = await listen(https.createServer({ cert: fs.readFileSync(certs.cert), key: fs.readFileSync(certs.key) }, handler));
  return { http: h.address().port, https: s.address().port, close: () => (h.close(), s.close(), h.closeAllConnections(), s.closeAllConnections()) };
}

// ------------------------------------------------------------------------------------------ measurement
function snapshot(pids) {
  return { at: performance.now(), cpus: coreTicks(), self: process.cpuUsage(), ticks: Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, procTicks(pid)])) };
}
/** CPU figures between two snapshots: per-core busy %, each tracked process's ticks, and "other" %. */
function cpuDelta(a, b) {
  const secs = (b.at - a.at) / 1000;
  const busyPct = b.cpus.map((c, i) => round((100 * (c.busy - a.cpus[i].busy)) / Math.max(1, c.total - a.cpus[i].total), 0));
  const procTicksAll = b.cpus.reduce((s, c, i) => s + (c.proc - a.cpus[i].proc), 0);
  const ticks = Object.fromEntries(Object.keys(b.ticks).map((k) => [k, b.ticks[k] - a.ticks[k]]));
  const selfTicks = ((b.self.user - a.self.user + b.self.system - a.self.system) / 1e6) * CLK_TCK;
  const ours = selfTicks + Object.values(ticks).reduce((s, v) => s + v, 0);
  const otherPct = round((100 * Math.max(0, procTicksAll - ours)) / (secs * CLK_TCK), 0);
  return { secs, busyPct, ticks, selfTicks, otherPct };
}

const QUIET_PCT = 15;
/** Seconds still available for quiet waits and repeats (--quiet-budget). */
let quietBudgetLeft = OPT.quietBudget;
/** Wait (bounded by --wait-quiet and what is left of --quiet-budget) until processes other than ours use < 15 % of a core. */
async function waitQuiet(label, pids) {
  if (OPT.waitQuiet <= 0) return { waited_s: 0, other_pct: null };
  const start = performance.now();
  const cap = Math.min(OPT.waitQuiet, Math.max(0, quietBudgetLeft));
  let lastSay = 0;
  for (;;) {
    const a = snapshot(pids);
    await sleep(500);
    const other = cpuDelta(a, snapshot(pids)).otherPct;
    const waited = (performance.now() - start) / 1000;
    const done = (msg) => {
      if (waited > 0.6) quietBudgetLeft -= waited - 0.5; // the first 0.5 s sample is always taken
      if (msg) progress(msg());
      return { waited_s: round(waited, 1), other_pct: other };
    };
    if (other < QUIET_PCT) return done(null);
    if (waited >= cap) return done(() => `  ${label}: still busy (other processes ${other}% of a core); quiet budget left ${round(Math.max(0, quietBudgetLeft), 0)} s; measuring anyway`);
    if (waited - lastSay >= 2) {
      progress(`  ${label}: waiting for quiet (other processes ${other}% of a core)`);
      lastSay = waited;
    }
  }
}

async function loadPhase({ url, dispatcher, sidecarPid, upstreamPid, expectBytes, warmup = OPT.warmup, duration = OPT.duration, otherPids = {} }) {
  const run1 = async (ms, cap, record) => {
    const deadline = performance.now() + ms;
    let issued = 0;
    const worker = async () => {
      while (issued < cap && performance.now() < deadline) {
        issued++;
        const s = performance.now();
        try {
          const { statusCode, body } = await request(url, { dispatcher });
          const buf = await body.arrayBuffer();
          if (statusCode === 200 && buf.byteLength === expectBytes) record?.ok(performance.now() - s);
          else record?.err(`status ${statusCode}, ${buf.byteLength} B`);
        } catch (err) {
          record?.err(`${err.code ?? err.name}: ${err.message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: OPT.concurrency }, worker));
  };
  if (warmup > 0) await run1(warmup * 1000, Infinity, null);
  const lat = new Float64Array(OPT.maxRequests);
  let ok = 0;
  let errors = 0;
  const samples = new Map();
  const pids = { ...otherPids, upstream: upstreamPid };
  if (sidecarPid) pids.sidecar = sidecarPid;
  if (sidecarPid) resetHwm(sidecarPid);
  const a = snapshot(pids);
  await run1(duration * 1000, OPT.maxRequests, {
    ok: (ms) => (lat[ok++] = ms),
    err: (msg) => {
      errors++;
      if (samples.size < 5 || samples.has(msg)) samples.set(msg, (samples.get(msg) ?? 0) + 1);
    },
  });
  const b = snapshot(pids);
  const cpu = cpuDelta(a, b);
  const sorted = lat.subarray(0, ok).sort();
  const res = {
    requests_ok: ok,
    errors,
    error_samples: [...samples].map(([msg, n]) => `${n}× ${msg}`),
    seconds: round(cpu.secs, 3),
    rps: round(ok / cpu.secs, 0),
    p50_ms: round(quantile(sorted, 0.5), 2),
    p90_ms: round(quantile(sorted, 0.9), 2),
    p99_ms: round(quantile(sorted, 0.99), 2),
    cpu_busy_pct: cpu.busyPct,
    other_procs_pct: cpu.otherPct,
    client_cpu_pct: round((100 * cpu.selfTicks) / (cpu.secs * CLK_TCK), 0),
    upstream_cpu_pct: round((100 * cpu.ticks.upstream) / (cpu.secs * CLK_TCK), 0),
  };
  if (sidecarPid) {
    res.sidecar_cpu_pct = round((100 * cpu.ticks.sidecar) / (cpu.secs * CLK_TCK), 0);
    res.sidecar_cpu_us_per_req = ok > 0 ? round((cpu.ticks.sidecar / CLK_TCK / ok) * 1e6, 1) : null;
    res.sidecar_peak_rss_mib = round(procMem(sidecarPid).hwm, 1);
  }
  if (PIN) {
    const [c0, c1] = cpu.busyPct;
    res.bound_by = sidecarPid && c1 >= 90 ? 'sidecar (CPU 1)' : c0 >= 90 ? 'client+upstream (CPU 0)' : 'latency';
  }
  return res;
}

async function download(url, dispatcher) {
  const s = performance.now();
  const { statusCode, body } = await request(url, { dispatcher });
  let bytes = 0;
  let ttfb = null;
  for await (const chunk of body) {
    if (ttfb === null) ttfb = performance.now() - s;
    bytes += chunk.length;
  }
  const secs = (performance.now() - s) / 1000;
  return { status: statusCode, bytes, seconds: round(secs, 4), ttfb_ms: round(ttfb, 2), mb_per_s: round(bytes / secs / 1e6, 1) };
}

async function largePhase({ url, dispatcher, sidecarPid, upstreamPid }) {
  await warm(url.replace(/\/large$/, '/small'), dispatcher);
  const pids = { upstream: upstreamPid };
  if (sidecarPid) pids.sidecar = sidecarPid;
  let sampled = 0;
  let hwmReset = false;
  const sampler = sidecarPid
    ? setInterval(() => {
        const { rss } = procMem(sidecarPid);
        if (rss > sampled) sampled = rss;
      }, 20)
    : null;
  if (sidecarPid) {
    hwmReset = resetHwm(sidecarPid);
    sampled = procMem(sidecarPid).rss;
  }
  const before = sidecarPid ? procMem(sidecarPid).rss : null;
  const a = snapshot(pids);
  const reps = [];
  for (let i = 0; i < OPT.largeReps; i++) reps.push(await download(url, dispatcher));
  const b = snapshot(pids);
  if (sampler) clearInterval(sampler);
  const cpu = cpuDelta(a, b);
  const res = {
    mb_per_s: median(reps.map((r) => r.mb_per_s)),
    reps,
    errors: reps.filter((r) => r.status !== 200 || r.bytes !== 50 * 1024 * 1024).length,
    other_procs_pct: cpu.otherPct,
  };
  if (sidecarPid) {
    const m = procMem(sidecarPid);
    res.sidecar_rss_before_mib = round(before, 1);
    res.sidecar_peak_rss_mib = round(Math.max(sampled, hwmReset ? m.hwm : 0), 1);
    res.sidecar_cpu_ms_per_download = round(((cpu.ticks.sidecar / CLK_TCK) * 1000) / OPT.largeReps, 0);
    res.peak_rss_source = hwmReset ? 'VmHWM reset via clear_refs + 20 ms VmRSS samples' : '20 ms VmRSS samples';
  }
  return res;
}

async function warm(url, dispatcher) {
  const { statusCode, body } = await request(url, { dispatcher });
  await body.arrayBuffer();
  if (statusCode !== 200) throw new Error(`warm-up GET ${url}: status ${statusCode}`);
}

const epochMs = () => performance.timeOrigin + performance.now();

/** One SSE stream on an established keep-alive connection (warmed by a GET first). */
async function sseOnce(url, dispatcher) {
  await warm(url.replace(/\/sse$/, '/small'), dispatcher);
  const s = performance.now();
  const { statusCode, body } = await request(url, { dispatcher });
  const headersMs = performance.now() - s;
  const events = [];
  let buf = '';
  for await (const chunk of body) {
    const now = performance.now();
    const recvEpoch = epochMs();
    buf += chunk.toString('utf8');
    let idx;
    while ((idx = buf.indexOf('\n\n')) !== -1) {
      const block = buf.slice(0, idx);
      buf = buf.slice(idx + 2);
      const m = /^data: (.*)$/m.exec(block);
      if (!m) continue;
      const d = JSON.parse(m[1]);
      events.push({ i: d.i, at_ms: now - s, delay_ms: recvEpoch - d.t });
    }
  }
  const delays = events.map((e) => e.delay_ms);
  return {
    status: statusCode,
    events: events.length,
    headers_ms: round(headersMs, 2),
    first_event_ms: round(events[0]?.at_ms, 2),
    last_event_ms: round(events.at(-1)?.at_ms, 2),
    event_delay_mean_ms: round(delays.reduce((a, b) => a + b, 0) / Math.max(1, delays.length), 3),
    event_delay_max_ms: round(Math.max(...delays), 3),
    max_gap_ms: round(Math.max(...events.slice(1).map((e, i) => e.at_ms - events[i].at_ms)), 2),
    at_ms: events.map((e) => round(e.at_ms, 2)),
  };
}

async function ssePhase(url, makeDispatcher) {
  const reps = [];
  for (let i = 0; i < OPT.sseReps; i++) {
    const d = makeDispatcher();
    try {
      reps.push(await sseOnce(url, d));
    } finally {
      await d.close().catch(() => undefined);
    }
  }
  const pick = (k) => round(median(reps.map((r) => r[k])), 3);
  return {
    first_event_ms: pick('first_event_ms'),
    headers_ms: pick('headers_ms'),
    last_event_ms: pick('last_event_ms'),
    event_delay_mean_ms: pick('event_delay_mean_ms'),
    event_delay_max_ms: pick('event_delay_max_ms'),
    max_gap_ms: pick('max_gap_ms'),
    errors: reps.filter((r) => r.status !== 200 || r.events !== 10).length,
    reps,
  };
}

// --- raw sockets for first-connection figures (fresh TCP each time, like an agent's first call)
function tcp(port, host) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}
function connectThrough(proxyPort, authority) {
  return tcp(proxyPort, '127.0.0.1').then(
    (s) =>
      new Promise((resolve, reject) => {
        let buf = '';
        const onData = (d) => {
          buf += d.toString('latin1');
          const end = buf.indexOf('\r\n\r\n');
          if (end === -1) return;
          s.off('data', onData);
          const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf)?.[1]);
          if (status !== 200) {
            s.destroy();
            reject(new Error(`CONNECT ${authority}: ${buf.split('\r\n')[0]}`));
            return;
          }
          if (end + 4 < buf.length) s.unshift(Buffer.from(buf.slice(end + 4), 'latin1'));
          resolve(s);
        };
        s.on('data', onData);
        s.once('error', reject);
        s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      }),
  );
}
function tlsOver(socket, { servername, host, ca }) {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket, ca, ALPNProtocols: ['http/1.1'], ...(servername ? { servername } : {}), ...(host ? { host } : {}) });
    t.once('secureConnect', () => resolve(t));
    t.once('error', reject);
  });
}
/** GET on a fresh connection; resolves when the whole body (content-length) has arrived. */
function getOver(sock, authority, p) {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = buf.subarray(0, end).toString('latin1');
      const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length - end - 4 >= len) resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]));
    });
    sock.once('error', reject);
    sock.once('end', () => reject(new Error('connection closed before the response')));
    sock.write(`GET ${p} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}
async function timed(fn) {
  const s = performance.now();
  const sock = await fn();
  const ms = performance.now() - s;
  return { ms, sock };
}

async function newHostPhase({ sidecar, upstream, upCa, names, ips }) {
  const res = { names: [], ips: [] };
  // (a) Fresh host NAMES, handshake only. The sidecar answers CONNECT with 200 and mints the leaf before
  // it dials anything, so newN.bench.local needs no DNS: we time TCP + CONNECT + TLS handshake (verified
  // against the sidecar CA) and close without a request. Then the same name on a new connection (cached leaf).
  for (const name of names) {
    const once = () =>
      timed(async () => tlsOver(await connectThrough(sidecar.port, `${name}:443`), { servername: name, ca: sidecar.ca }));
    const first = await once();
    first.sock.destroy();
    const again = await once();
    again.sock.destroy();
    res.names.push({ name, first_ms: round(first.ms, 2), cached_ms: round(again.ms, 2) });
  }
  // Direct baseline for (a): fresh TCP + TLS handshake to the upstream.
  const directHs = [];
  for (let i = 0; i < OPT.newhostReps; i++) {
    const r = await timed(async () => tlsOver(await tcp(upstream.https, '127.0.0.1'), { host: '127.0.0.1', ca: upCa }));
    r.sock.destroy();
    directHs.push(r.ms);
  }
  // (b) Fresh host IPs 127.0.0.2.. (each a distinct host to the sidecar, no DNS needed), full exchange:
  // TCP + CONNECT + TLS + GET /small answered by the upstream (the sidecar also dials the new origin).
  const ipGet = async (viaSidecar, ip) => {
    const authority = `${ip}:${upstream.https}`;
    const s = performance.now();
    const raw = viaSidecar ? await connectThrough(sidecar.port, authority) : await tcp(upstream.https, ip);
    const t = await tlsOver(raw, { host: ip, ca: viaSidecar ? sidecar.ca : upCa });
    const status = await getOver(t, authority, '/small');
    const ms = performance.now() - s;
    t.destroy();
    if (status !== 200) throw new Error(`GET https://${authority}/small: status ${status}`);
    return ms;
  };
  const directIp = [];
  for (const ip of ips) {
    const direct = await ipGet(false, ip);
    directIp.push(direct);
    const first = await ipGet(true, ip);
    const again = await ipGet(true, ip);
    res.ips.push({ ip, direct_ms: round(direct, 2), first_ms: round(first, 2), cached_ms: round(again, 2) });
  }
  res.name_handshake_first_ms = round(median(res.names.map((n) => n.first_ms)), 2);
  res.name_handshake_cached_ms = round(median(res.names.map((n) => n.cached_ms)), 2);
  res.direct_handshake_ms = round(median(directHs), 2);
  res.ip_get_first_ms = round(median(res.ips.map((n) => n.first_ms)), 2);
  res.ip_get_cached_ms = round(median(res.ips.map((n) => n.cached_ms)), 2);
  res.direct_ip_get_ms = round(median(directIp), 2);
  return res;
}

// ------------------------------------------------------------------------------------------ main
function sidecarWarnings(logPath) {
  const lines = fs.readFileSync(logPath, 'utf8').split('\n').filter(Boolean);
  const warn = [];
  const other = [];
  for (const l of lines) {
    let j = null;
    try {
      j = JSON.parse(l);
    } catch {
      other.push(l);
      continue;
    }
    if (j.level >= 40) warn.push(l);
  }
  return { lines: lines.length, warn_or_worse: warn.length, samples: [...warn.slice(0, 5), ...other.slice(0, 5)].map((l) => l.slice(0, 400)) };
}

function gitInfo() {
  const g = (a) => spawnSync('git', ['-C', ROOT, ...a], { encoding: 'utf8' });
  const head = g(['rev-parse', '--short', 'HEAD']).stdout?.trim() || null;
  const dirty = (g(['status', '--porcelain', '--', 'src']).stdout ?? '').trim().split('\n').filter(Boolean).length;
  return { commit: head, src_files_changed: dirty };
}

async function main() {
  progress(`tmp ${tmp}; pinning: ${PIN ? 'sidecar CPU 1, client + upstream CPU 0' : 'off'}; log_level ${OPT.logLevel}`);
  const certs = makeUpstreamCerts();
  const upstream = await startUpstream(certs);
  progress(`upstream http :${upstream.http}, https :${upstream.https} (+ ${upstream.ips.join(', ') || 'no extra IPs'})`);
  // Extra configurations: keep those the built sidecar's schema can express.
  const skipped = {};
  const variants = OPT.configs.filter((v) => {
    const missing = CONFIGS[v].needs.filter((k) => !SCHEMA.has(k));
    if (missing.length) skipped[v] = `config keys missing from \`firma schema\`: ${missing.join(', ')}`;
    return missing.length === 0;
  });
  for (const [v, why] of Object.entries(skipped)) progress(`skipping configuration "${CONFIGS[v].label}": ${why}`);
  const echo = variants.length ? await startEcho(certs) : null;
  const targets = [
    { authority: `127.0.0.1:${upstream.https}`, limit: true },
    { authority: `127.0.0.1:${upstream.http}`, limit: true, plaintext: true },
    ...(echo ? [{ authority: `127.0.0.1:${echo.https}` }, { authority: `127.0.0.1:${echo.http}`, plaintext: true }] : []),
  ];
  const sidecar = await startSidecar('plain', certs.caPath, targets);
  progress(`sidecar pid ${sidecar.pid} proxy :${sidecar.port} (found via ${sidecar.how}), ready in ${round(sidecar.readyMs, 0)} ms`);
  await sleep(1000);
  const idle = procMem(sidecar.pid);
  const results = {
    meta: {
      date: new Date().toISOString(),
      node: process.version,
      undici: JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'undici', 'package.json'), 'utf8')).version,
      cpus: NCPU,
      cpu_model: os.cpus()[0]?.model,
      kernel: os.release(),
      pinned: PIN,
      clk_tck: CLK_TCK,
      sidecar: { ...gitInfo(), log_level: OPT.logLevel, extra_config: sidecar.extraConfig, ready_ms: round(sidecar.readyMs, 0), port_found_via: sidecar.how },
      options: { ...OPT },
    },
    sidecar_rss: { idle_mib: round(idle.rss, 1), startup_hwm_mib: round(idle.hwm, 1) },
  };
  progress(`sidecar idle RSS ${round(idle.rss, 1)} MiB (startup peak ${round(idle.hwm, 1)} MiB)`);

  const base = { http: `http://127.0.0.1:${upstream.http}`, https: `https://127.0.0.1:${upstream.https}` };
  const sidecarUri = `http://127.0.0.1:${sidecar.port}`;
  // via: 'direct', 'sidecar' (the plain configuration) or a started sidecar object.
  const makeDispatcher = (scheme, via, connections) => {
    if (via === 'direct') return new Agent({ connections, ...(scheme === 'https' ? { connect: { ca: certs.ca } } : {}) });
    const sc = via === 'sidecar' ? sidecar : via;
    return new ProxyAgent({
      // The full-pipeline client sends its capability token as proxy credentials (Proxy-Authorization: Basic).
      uri: sc.token ? `http://${BENCH_AGENT}:${sc.token}@127.0.0.1:${sc.port}` : `http://127.0.0.1:${sc.port}`,
      connections,
      proxyTunnel: false, // http:// as absolute-form requests (like curl/hey); https:// always CONNECTs
      ...(scheme === 'https' ? { requestTls: { ca: sc.ca } } : {}),
    });
  };
  const paths = ['direct', 'sidecar'];
  const schemes = ['http', 'https'];

  // 1. first connection to a new host, cold: right after start (JIT cold, no upstream pool yet)
  const R = OPT.newhostReps;
  const pidsIdle = { upstream: upstream.pid, sidecar: sidecar.pid };
  const newHost = async (round, first) => {
    await waitQuiet(`new host (${round})`, pidsIdle);
    const names = Array.from({ length: R }, (_, i) => `new${first + i}.bench.local`);
    const ips = upstream.ips.slice(first - 1, first - 1 + R);
    const a = snapshot(pidsIdle);
    const r = await newHostPhase({ sidecar, upstream, upCa: certs.ca, names, ips });
    r.other_procs_pct = cpuDelta(a, snapshot(pidsIdle)).otherPct;
    progress(
      `new host (${round}): names: handshake first ${r.name_handshake_first_ms} ms, cached ${r.name_handshake_cached_ms} ms, direct ${r.direct_handshake_ms} ms; ` +
        `IPs: first GET ${r.ip_get_first_ms} ms, cached ${r.ip_get_cached_ms} ms, direct ${r.direct_ip_get_ms} ms`,
    );
    return r;
  };
  // The bench's own TLS client code is warmed on the upstream first, so "cold" is about the sidecar.
  for (let i = 0; i < 3; i++) {
    const t = await tlsOver(await tcp(upstream.https, '127.0.0.1'), { host: '127.0.0.1', ca: certs.ca });
    await getOver(t, `127.0.0.1:${upstream.https}`, '/small');
    t.destroy();
  }
  results.new_host = { cold: await newHost('cold process', 1) };

  // 2. SSE
  results.sse = {};
  await waitQuiet('SSE', pidsIdle);
  for (const scheme of schemes) {
    results.sse[scheme] = {};
    for (const via of paths) {
      const a = snapshot(pidsIdle);
      const r = await ssePhase(`${base[scheme]}/sse`, () => makeDispatcher(scheme, via, 1));
      r.other_procs_pct = cpuDelta(a, snapshot(pidsIdle)).otherPct;
      results.sse[scheme][via] = r;
      progress(`SSE ${scheme} ${via}: first event ${r.first_event_ms} ms, event delay mean ${r.event_delay_mean_ms} ms / max ${r.event_delay_max_ms} ms`);
    }
    const d = results.sse[scheme].direct;
    const s = results.sse[scheme].sidecar;
    results.sse[scheme].added = {
      first_event_ms: round(s.first_event_ms - d.first_event_ms, 2),
      event_delay_mean_ms: round(s.event_delay_mean_ms - d.event_delay_mean_ms, 3),
      event_delay_max_ms: round(s.event_delay_max_ms - d.event_delay_max_ms, 3),
      per_event_arrival_ms: s.reps[0].at_ms.map((t, i) => round(median(s.reps.map((r) => r.at_ms[i])) - median(d.reps.map((r) => r.at_ms[i])), 2)),
    };
  }

  // 3. 50 MiB downloads (before the load phases, so the sidecar's heap has not been grown by them)
  results.large = {};
  await waitQuiet('50 MiB downloads', pidsIdle);
  for (const scheme of schemes) {
    results.large[scheme] = {};
    for (const via of paths) {
      const d = makeDispatcher(scheme, via, 1);
      const r = await largePhase({ url: `${base[scheme]}/large`, dispatcher: d, sidecarPid: via === 'sidecar' ? sidecar.pid : null, upstreamPid: upstream.pid });
      await d.close();
      results.large[scheme][via] = r;
      progress(`50 MiB ${scheme} ${via}: ${r.mb_per_s} MB/s${via === 'sidecar' ? `, sidecar RSS ${r.sidecar_rss_before_mib} -> peak ${r.sidecar_peak_rss_mib} MiB` : ''}`);
    }
  }

  // 4. keep-alive load, 1 KiB GETs. One phase, repeated once if someone else was busy (quiet budget).
  const measureLoad = async ({ label, scheme, via, sidecarPid, pids, otherPids = {}, warmup = OPT.warmup, duration = OPT.duration }) => {
    const phase = async () => {
      const quiet = await waitQuiet(label, pids);
      const d = makeDispatcher(scheme, via, OPT.concurrency);
      progress(`${label}: warm-up ${warmup}s + ${duration}s @ c=${OPT.concurrency}`);
      const r = await loadPhase({ url: `${base[scheme]}/small`, dispatcher: d, sidecarPid, upstreamPid: upstream.pid, expectBytes: 1024, warmup, duration, otherPids });
      await d.close();
      progress(
        `  -> ${r.rps} req/s, p50 ${r.p50_ms} ms, p99 ${r.p99_ms} ms, errors ${r.errors}` +
          (sidecarPid ? `, sidecar ${r.sidecar_cpu_us_per_req} µs/req (${r.sidecar_cpu_pct}% CPU)` : '') +
          `, CPU0/1 busy ${r.cpu_busy_pct.join('/')}%, other procs ${r.other_procs_pct}%`,
      );
      return { ...r, warmup_s: warmup, duration_s: duration, waited_for_quiet_s: quiet.waited_s };
    };
    let r = await phase();
    const repeatCost = warmup + duration + 1;
    if (r.other_procs_pct >= QUIET_PCT && OPT.waitQuiet > 0 && quietBudgetLeft >= repeatCost) {
      quietBudgetLeft -= repeatCost;
      progress(`  other processes used ${r.other_procs_pct}% of a core; repeating once`);
      const again = await phase();
      r = again.other_procs_pct <= r.other_procs_pct ? { ...again, attempt: 2 } : { ...r, attempt: 1, repeat_other_procs_pct: again.other_procs_pct };
    }
    return r;
  };
  results.load = {};
  for (const scheme of schemes) {
    results.load[scheme] = {};
    for (const via of paths) {
      results.load[scheme][via] = await measureLoad({ label: `load ${scheme} ${via}`, scheme, via, sidecarPid: via === 'sidecar' ? sidecar.pid : null, pids: pidsIdle });
    }
  }
  // 5. first connection to a new host again, warm process (after load; comparable to the shared harness)
  results.new_host.warm = await newHost('warm process', R + 1);
  const end = procMem(sidecar.pid);
  results.sidecar_rss.after_load_mib = round(end.rss, 1);
  results.sidecar_rss.peak_load_mib = round(Math.max(...schemes.map((s) => results.load[s].sidecar.sidecar_peak_rss_mib ?? 0)), 1);
  if (sidecar.exited() !== null) throw new Error(`sidecar exited (${sidecar.exited()}) during the run`);
  results.sidecar_log = sidecarWarnings(sidecar.logPath);

  // 6. the same keep-alive load through other sidecar configurations (fresh process each, shorter phases)
  results.configs = {
    plain: { label: CONFIGS.plain.label, extra_config: sidecar.extraConfig },
  };
  results.load_by_config = {};
  for (const scheme of schemes) results.load_by_config[scheme] = { plain: results.load[scheme].sidecar };
  for (const v of Object.keys(skipped)) results.configs[v] = { label: CONFIGS[v].label, skipped: skipped[v] };
  for (const v of variants) {
    const cfg = { label: CONFIGS[v].label };
    results.configs[v] = cfg;
    let sc = null;
    try {
      sc = await startSidecar(v, certs.caPath, targets);
      progress(`sidecar "${cfg.label}" pid ${sc.pid} proxy :${sc.port}, ready in ${round(sc.readyMs, 0)} ms`);
      Object.assign(cfg, { extra_config: sc.extraConfig, ready_ms: round(sc.readyMs, 0), idle_rss_mib: round(procMem(sc.pid).rss, 1) });
      // Does this configuration really inject the credential? Asked of the echo origins, outside the windows.
      cfg.credential_injected = {};
      for (const scheme of schemes) {
        const d = makeDispatcher(scheme, sc, 1);
        try {
          const { statusCode, body } = await request(`${scheme}://127.0.0.1:${echo[scheme]}/echo`, { dispatcher: d });
          const text = await body.text();
          const got = statusCode === 200 ? JSON.parse(text).authorization : null;
          cfg.credential_injected[scheme] =
            statusCode !== 200 ? `status ${statusCode}: ${text.slice(0, 200)}` : got === `Bearer ${BENCH_KEY}` ? 'yes' : got === null ? 'no' : 'wrong value';
        } catch (err) {
          cfg.credential_injected[scheme] = `${err.code ?? err.name}: ${err.message}`;
        } finally {
          await d.close().catch(() => undefined);
        }
      }
      progress(`  credential injected (echo origin): http ${cfg.credential_injected.http}, https ${cfg.credential_injected.https}`);
      const pids = { upstream: upstream.pid, sidecar: sc.pid, plain: sidecar.pid };
      for (const scheme of schemes) {
        const r = await measureLoad({
          label: `load ${scheme} sidecar "${cfg.label}"`,
          scheme,
          via: sc,
          sidecarPid: sc.pid,
          pids,
          otherPids: { plain: sidecar.pid },
          warmup: OPT.configWarmup,
          duration: OPT.configDuration,
        });
        const plain = results.load[scheme].sidecar;
        r.added_cpu_us_per_req = round(r.sidecar_cpu_us_per_req - plain.sidecar_cpu_us_per_req, 1);
        r.rps_vs_plain = round(r.rps / plain.rps, 3);
        results.load_by_config[scheme][v] = r;
      }
      if (sc.exited() !== null) throw new Error(`exited (${sc.exited()}) during the run`);
      cfg.sidecar_log = sidecarWarnings(sc.logPath);
      const audit = path.join(path.dirname(sc.config), 'audit', 'audit.jsonl');
      cfg.audit_lines = fs.existsSync(audit) ? fs.readFileSync(audit, 'utf8').split('\n').filter(Boolean).length : null;
    } catch (err) {
      cfg.failed = String(err.message ?? err).slice(0, 2000);
      progress(`configuration "${cfg.label}" failed: ${cfg.failed}`);
    } finally {
      await sc?.stop();
    }
  }
  echo?.close();
  const audit = path.join(tmp, 'sidecar', 'audit', 'audit.jsonl');
  results.configs.plain.audit_lines = fs.existsSync(audit) ? fs.readFileSync(audit, 'utf8').split('\n').filter(Boolean).length : null;
  results.warnings = collectWarnings(results);
  return results;
}

function collectWarnings(r) {
  const w = [];
  for (const s of ['http', 'https'])
    for (const v of ['direct', 'sidecar']) {
      const l = r.load[s][v];
      if (l.errors > 0) w.push(`load ${s} ${v}: ${l.errors} errors (${l.error_samples.join('; ')})`);
      if (l.other_procs_pct > 15) w.push(`load ${s} ${v}: other processes used ~${l.other_procs_pct}% of a core; compare with care`);
      if (r.large[s][v].errors > 0) w.push(`50 MiB ${s} ${v}: ${r.large[s][v].errors} failed downloads`);
      if (r.large[s][v].other_procs_pct > 15) w.push(`50 MiB ${s} ${v}: other processes used ~${r.large[s][v].other_procs_pct}% of a core; compare with care`);
      if (r.sse[s][v].other_procs_pct > 15) w.push(`SSE ${s} ${v}: other processes used ~${r.sse[s][v].other_procs_pct}% of a core; compare with care`);
      if (r.sse[s][v].errors > 0) w.push(`SSE ${s} ${v}: ${r.sse[s][v].errors} streams without 10 events`);
    }
  for (const ph of ['cold', 'warm'])
    if (r.new_host[ph].other_procs_pct > 15) w.push(`new host (${ph}): other processes used ~${r.new_host[ph].other_procs_pct}% of a core; compare with care`);
  if (r.sidecar_log.warn_or_worse > 0) w.push(`sidecar logged ${r.sidecar_log.warn_or_worse} warn/error lines: ${r.sidecar_log.samples.slice(0, 2).join(' | ')}`);
  for (const [v, c] of Object.entries(r.configs ?? {})) {
    if (v === 'plain') continue;
    if (c.skipped) w.push(`configuration "${c.label}" not measured: ${c.skipped}`);
    if (c.failed) w.push(`configuration "${c.label}" failed: ${c.failed.split('\n').slice(0, 3).join(' ')}`);
    for (const s of ['http', 'https']) {
      const l = r.load_by_config?.[s]?.[v];
      if (!l) continue;
      if (l.errors > 0) w.push(`load ${s} "${c.label}": ${l.errors} errors (${l.error_samples.join('; ')})`);
      if (l.other_procs_pct > 15) w.push(`load ${s} "${c.label}": other processes used ~${l.other_procs_pct}% of a core; compare with care`);
      const inj = c.credential_injected?.[s];
      if (v === 'full' && inj !== 'yes') w.push(`"${c.label}" ${s}: credential injected = ${inj} (expected yes)`);
      if (v === 'limited' && inj !== 'yes' && inj !== 'no') w.push(`"${c.label}" ${s}: credential check: ${inj}`);
    }
    if (c.sidecar_log?.warn_or_worse > 0) w.push(`sidecar "${c.label}" logged ${c.sidecar_log.warn_or_worse} warn/error lines: ${c.sidecar_log.samples.slice(0, 2).join(' | ')}`);
  }
  return w;
}

function markdown(r) {
  const f = (v, d = 1) => (v === null || v === undefined ? '–' : Number(v).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: 0 }));
  const x = (a, b) => (a && b ? `${(a / b).toFixed(2)}×` : '–');
  const plus = (v, d = 2) => (v === null || v === undefined ? '–' : `${v >= 0 ? '+' : ''}${Number(v).toFixed(d)}`);
  const L = [];
  L.push(`## Firma Sidecar loopback bench — ${r.meta.date}`, '');
  L.push(
    `Node ${r.meta.node}, undici ${r.meta.undici}, ${r.meta.cpus}× ${r.meta.cpu_model}; sidecar ${r.meta.sidecar.commit}${r.meta.sidecar.src_files_changed ? ` (+${r.meta.sidecar.src_files_changed} changed src files)` : ''}, log_level ${r.meta.sidecar.log_level}. ` +
      (r.meta.pinned ? 'Sidecar pinned to CPU 1; client + upstream (node:http/https, separate processes) on CPU 0. ' : 'No CPU pinning. ') +
      `Load: undici, ${r.meta.options.concurrency} keep-alive connections, ${r.meta.options.warmup}s warm-up + ${r.meta.options.duration}s per phase.` +
      (r.meta.sidecar.extra_config.length ? ` Sidecar config beyond listeners/CA: ${r.meta.sidecar.extra_config.join('; ')}.` : ''),
    '',
  );
  L.push('| scheme | path | req/s | × direct | p50 ms | p99 ms | errors | sidecar CPU µs/req | sidecar CPU % | CPU0/CPU1 busy % | bound by | other procs % |');
  L.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |');
  for (const s of ['http', 'https']) {
    for (const v of ['direct', 'sidecar']) {
      const l = r.load[s][v];
      L.push(
        `| ${s}${s === 'https' && v === 'sidecar' ? ' (MITM)' : ''} | ${v} | ${f(l.rps, 0)} | ${x(l.rps, r.load[s].direct.rps)} | ${f(l.p50_ms, 2)} | ${f(l.p99_ms, 2)} | ${l.errors} | ${f(l.sidecar_cpu_us_per_req)} | ${f(l.sidecar_cpu_pct, 0)} | ${l.cpu_busy_pct.slice(0, 2).join(' / ')} | ${l.bound_by ?? '–'} | ${f(l.other_procs_pct, 0)} |`,
      );
    }
  }
  L.push('');
  const byCfg = r.load_by_config ?? {};
  const cfgNames = Object.keys(r.configs ?? {}).filter((v) => byCfg.https?.[v] || byCfg.http?.[v]);
  if (cfgNames.length > 1) {
    L.push(`### Sidecar configurations: keep-alive load, same run`, '');
    L.push(
      '*plain host* is the sidecar row above. The other configurations run in a fresh sidecar process each, after the ' +
        `plain one's phases, with shorter phases (${r.meta.options.configWarmup}s warm-up + ${r.meta.options.configDuration}s). ` +
        '*Δ µs/req* = sidecar CPU µs/req − plain host, same scheme. *credential injected* is asked of an echo origin through the same configuration.',
      '',
    );
    L.push('| scheme | sidecar configuration | req/s | × plain | p50 ms | p99 ms | errors | sidecar CPU µs/req | Δ µs/req vs plain | credential injected | sidecar CPU % | CPU0/CPU1 busy % | bound by | other procs % |');
    L.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: |');
    for (const s of ['https', 'http']) {
      for (const v of cfgNames) {
        const l = byCfg[s]?.[v];
        if (!l) continue;
        const c = r.configs[v];
        const plain = byCfg[s].plain;
        L.push(
          `| ${s}${s === 'https' ? ' (MITM)' : ''} | ${c.label} | ${f(l.rps, 0)} | ${x(l.rps, plain.rps)} | ${f(l.p50_ms, 2)} | ${f(l.p99_ms, 2)} | ${l.errors} | ${f(l.sidecar_cpu_us_per_req)} | ${v === 'plain' ? '–' : plus(l.sidecar_cpu_us_per_req - plain.sidecar_cpu_us_per_req, 1)} | ${v === 'plain' ? '– (none configured)' : c.credential_injected?.[s] ?? '–'} | ${f(l.sidecar_cpu_pct, 0)} | ${l.cpu_busy_pct.slice(0, 2).join(' / ')} | ${l.bound_by ?? '–'} | ${f(l.other_procs_pct, 0)} |`,
        );
      }
    }
    L.push('');
    for (const v of Object.keys(r.configs)) {
      const c = r.configs[v];
      if (v === 'plain') continue;
      const audit = c.audit_lines === null || c.audit_lines === undefined ? '' : `; audit log: ${c.audit_lines} lines`;
      L.push(`- **${c.label}**: ${c.skipped ? `not measured (${c.skipped})` : c.failed ? `FAILED: ${c.failed.split('\n')[0]}` : (c.extra_config ?? []).join('; ') + audit}`);
    }
    if (r.configs.limited?.credential_injected && Object.values(r.configs.limited.credential_injected).includes('no'))
      L.push(
        `- The *${r.configs.limited.label}* traffic is unclassified (default_protected = false), and the connector never injects a credential into unclassified ` +
          'traffic, so that row measures the token bucket (the credential is configured but not looked up); the *full pipeline* row (classified) includes the injection.',
      );
    L.push('');
  }
  L.push('| figure | direct | sidecar | sidecar − direct (or ×) |');
  L.push('| --- | ---: | ---: | ---: |');
  for (const s of ['http', 'https']) {
    const d = r.large[s].direct;
    const v = r.large[s].sidecar;
    L.push(`| 50 MiB download ${s}${s === 'https' ? ' (MITM)' : ''}, MB/s (median of ${r.meta.options.largeReps}) | ${f(d.mb_per_s)} | ${f(v.mb_per_s)} | ${x(v.mb_per_s, d.mb_per_s)} |`);
  }
  for (const s of ['http', 'https']) L.push(`| 50 MiB ${s}: sidecar CPU ms per download | – | ${f(r.large[s].sidecar.sidecar_cpu_ms_per_download, 0)} | |`);
  for (const s of ['http', 'https']) {
    const d = r.sse[s].direct;
    const v = r.sse[s].sidecar;
    L.push(`| SSE ${s}: first event ms (established conn.) | ${f(d.first_event_ms, 2)} | ${f(v.first_event_ms, 2)} | ${plus(r.sse[s].added.first_event_ms)} |`);
    L.push(`| SSE ${s}: per-event delay upstream→client, mean / max ms | ${f(d.event_delay_mean_ms, 3)} / ${f(d.event_delay_max_ms, 3)} | ${f(v.event_delay_mean_ms, 3)} / ${f(v.event_delay_max_ms, 3)} | ${plus(r.sse[s].added.event_delay_mean_ms, 3)} / ${plus(r.sse[s].added.event_delay_max_ms, 3)} |`);
  }
  for (const phase of ['warm', 'cold']) {
    const n = r.new_host[phase];
    const tag = phase === 'warm' ? 'warm process' : 'cold process, right after start';
    L.push(`| new HTTPS host name (${tag}): TCP+CONNECT+TLS handshake ms; direct: TCP+TLS | ${f(n.direct_handshake_ms, 2)} | ${f(n.name_handshake_first_ms, 2)} | ${plus(n.name_handshake_first_ms - n.direct_handshake_ms)} |`);
    L.push(`| same name, new connection (cached leaf) ms | ${f(n.direct_handshake_ms, 2)} | ${f(n.name_handshake_cached_ms, 2)} | ${plus(n.name_handshake_cached_ms - n.direct_handshake_ms)} |`);
    L.push(`| new HTTPS host IP (${tag}): TCP+CONNECT+TLS+GET /small ms | ${f(n.direct_ip_get_ms, 2)} | ${f(n.ip_get_first_ms, 2)} | ${plus(n.ip_get_first_ms - n.direct_ip_get_ms)} |`);
    L.push(`| same IP, new connection ms | ${f(n.direct_ip_get_ms, 2)} | ${f(n.ip_get_cached_ms, 2)} | ${plus(n.ip_get_cached_ms - n.direct_ip_get_ms)} |`);
  }
  const rs = r.sidecar_rss;
  L.push(`| sidecar RSS idle MiB | – | ${f(rs.idle_mib)} | |`);
  for (const s of ['http', 'https']) {
    const v = r.large[s].sidecar;
    L.push(`| sidecar RSS during 50 MiB ${s}: before → peak MiB | – | ${f(v.sidecar_rss_before_mib)} → ${f(v.sidecar_peak_rss_mib)} | ${plus(v.sidecar_peak_rss_mib - v.sidecar_rss_before_mib, 1)} |`);
  }
  L.push(`| sidecar RSS peak during load phases / after MiB | – | ${f(rs.peak_load_mib)} / ${f(rs.after_load_mib)} | |`);
  L.push('');
  L.push(`Sidecar log: ${r.sidecar_log.lines} lines, ${r.sidecar_log.warn_or_worse} at warn or above.`);
  if (r.warnings.length) {
    L.push('', '### Warnings', '', ...r.warnings.map((w) => `- ${w}`));
  }
  return L.join('\n') + '\n';
}

try {
  const results = await main();
  results.meta.total_s = round((performance.now() - T0) / 1000, 1);
  const md = markdown(results);
  fs.mkdirSync(OPT.out, { recursive: true });
  fs.writeFileSync(path.join(OPT.out, 'latest.json'), JSON.stringify(results, null, 2) + '\n');
  fs.writeFileSync(path.join(OPT.out, 'latest.md'), md);
  process.stdout.write(md);
  progress(`done in ${results.meta.total_s} s; wrote ${path.join(OPT.out, 'latest.json')} and latest.md`);
  clearTimeout(watchdog);
  cleanup();
  process.exit(results.warnings.some((w) => /errors|failed|without/.test(w)) ? 1 : 0);
} catch (err) {
  progress(`bench failed: ${err.stack ?? err}`);
  process.exit(1);
}
