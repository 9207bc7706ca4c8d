/**
 * What the benches (run.mjs, soak.mjs) share: their command line, a few statistics, and readings of a
 * process from /proc. Linux only, like the benches.
 */
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';

/** Parse `options` (node:util parseArgs); a bad flag prints the usage and exits 2, `--help` prints it and exits 0. */
export function readOptions(options, usage) {
  let args;
  try {
    args = parseArgs({ options: { ...options, help: { type: 'boolean', short: 'h', default: false } } }).values;
  } catch (err) {
    process.stderr.write(`${err.message}\n\n${usage}`);
    process.exit(2);
  }
  if (args.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  return args;
}

/** `--name` as a number in [min, max] (an integer with `integer`), or exit 2 saying so. */
export function numberOption(args, name, min, max, { integer = false } = {}) {
  const v = Number(args[name]);
  if (!(integer ? Number.isInteger(v) : Number.isFinite(v)) || v < min || v > max) {
    process.stderr.write(`--${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}]\n`);
    process.exit(2);
  }
  return v;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const quantile = (sorted, q) => (sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]);
export const has = (bin) => spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;

/** Run a command to completion; its stdout, or a throw naming it. */
export function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

export const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;
export const NCPU = os.availableParallelism?.() ?? os.cpus().length;
/** Pin the proxy and the load to separate cores: two cores or more, taskset present, not --no-pin. */
export const canPin = (noPin) => !noPin && NCPU >= 2 && has('taskset');

/** Per-CPU [busy, total] ticks from /proc/stat (busy = user+nice+system+irq+softirq+steal). */
export function coreTicks() {
  const out = [];
  for (const line of fs.readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (!m) continue;
    const v = m[2].trim().split(/\s+/).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    out[Number(m[1])] = { busy: user + nice + system + irq + softirq + steal, proc: user + nice + system, total: v.slice(0, 8).reduce((a, b) => a + b, 0) };
  }
  return out;
}

/** utime + stime of a process (all its threads) in clock ticks (proc(5) stat fields 14, 15), or null once gone. */
export function cpuTicks(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return null;
  }
}

/** A field (kB) of /proc/<pid>/status, e.g. VmRSS; null once the process is gone. */
export function statusKb(pid, key) {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  }
}

/** A free TCP port on 127.0.0.1 (closed again at once: the caller binds it next). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * `firma start --config <config>` of the built CLI from `cwd` (pinned to CPU 1 with `pin`, the load on
 * CPU 0), with no proxy variables; resolves once the admin listener on `adminPort` answers /readyz 200.
 */
export async function startBuiltSidecar({ cli, config, cwd, adminPort, pin }) {
  const argv = [cli, 'start', '--config', config];
  const proc = spawn(...(pin ? ['taskset', ['-c', '1', process.execPath, ...argv]] : [process.execPath, argv]), {
    cwd, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, HTTP_PROXY: '', HTTPS_PROXY: '', http_proxy: '', https_proxy: '' },
  });
  for (let i = 0; ; i++) {
    const ok = await fetch(`http://127.0.0.1:${adminPort}/readyz`).then((r) => r.arrayBuffer().then(() => r.status === 200), () => false);
    if (ok) return proc;
    if (i > 300 || proc.exitCode !== null) throw new Error('the sidecar did not become ready');
    await sleep(50);
  }
}
