/**
 * Shared readers for the deployment tests (test/e2e/deploy/): typed accessors over parsed YAML, the
 * Dockerfile as stages, the Kubernetes manifests, and the commands those tests run.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { type FirmaConfig } from '../../src/config/index.js';
import { CLI, REPO } from './sidecar.js';
// ---------------------------------------------------------------------------------------------------
// Small typed accessors over parsed YAML (unknown until checked).

export type Obj = Record<string, unknown>;
export function obj(v: unknown, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${what}: expected a mapping, got ${JSON.stringify(v)}`);
  return v as Obj;
}
export function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`${what}: expected a list, got ${JSON.stringify(v)}`);
  return v;
}
export function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new Error(`${what}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}
export const optArr = (v: unknown, what: string): unknown[] => (v === undefined ? [] : arr(v, what));

export const repoPath = (...p: string[]): string => join(REPO, ...p);
export const readText = (...p: string[]): string => readFileSync(repoPath(...p), 'utf8');

export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: opts.cwd ?? REPO, env: { ...process.env, ...opts.env }, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
export const hasCommand = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;

/** The variable names `firma ca export --env` prints (run for real on a fresh CA). */
export function caExportEnvNames(): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'firma-deploy-ca-'));
  writeFileSync(join(dir, 'firma.toml'), '[sidecar.interceptor.mitm]\nca_dir = "certs"\n');
  const init = run(process.execPath, [CLI, 'ca', 'init', '--config', join(dir, 'firma.toml')]);
  if (init.status !== 0) throw new Error(`firma ca init failed: ${init.stderr}`);
  const out = run(process.execPath, [CLI, 'ca', 'export', '--env', '--config', join(dir, 'firma.toml')]);
  if (out.status !== 0) throw new Error(`firma ca export --env failed: ${out.stderr}`);
  return out.stdout
    .trim()
    .split('\n')
    .map((line) => {
      const m = /^export ([A-Z_][A-Z0-9_]*)=/.exec(line);
      if (m === null) throw new Error(`unexpected line from ca export --env: ${line}`);
      return m[1]!;
    })
    .sort();
}

// ---------------------------------------------------------------------------------------------------
// The Dockerfile, as stages of instructions (continuations joined, comments dropped).

export interface Instruction {
  readonly op: string;
  readonly args: string;
}
export interface Stage {
  readonly name: string;
  readonly from: string;
  readonly instructions: Instruction[];
}
export function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (current === '' && (line.trim() === '' || line.trimStart().startsWith('#'))) continue;
    if (line.trimStart().startsWith('#')) continue; // a comment inside a continuation
    if (line.endsWith('\\')) {
      current += line.slice(0, -1) + ' ';
      continue;
    }
    logical.push((current + line).trim());
    current = '';
  }
  const stages: Stage[] = [];
  for (const l of logical) {
    const m = /^(\S+)\s+(.*)$/.exec(l);
    if (m === null) continue;
    const op = m[1]!.toUpperCase();
    const args = m[2]!;
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      stages.push({ from: f?.[1] ?? args, name: f?.[2] ?? String(stages.length), instructions: [] });
    } else if (stages.length > 0) {
      stages[stages.length - 1]!.instructions.push({ op, args });
    }
  }
  return stages;
}
/** The sources of a COPY (without --from: paths in the build context). */
export function copySources(args: string): { from: string | null; sources: string[]; dest: string } {
  const words = args.split(/\s+/);
  let from: string | null = null;
  const rest: string[] = [];
  for (const w of words) {
    if (w.startsWith('--from=')) from = w.slice('--from='.length);
    else if (!w.startsWith('--')) rest.push(w);
  }
  return { from, sources: rest.slice(0, -1), dest: rest[rest.length - 1] ?? '' };
}

// ---------------------------------------------------------------------------------------------------
// Kubernetes objects.

export function k8sDocuments(): Obj[] {
  const kustomization = obj(parseYaml(readText('deploy', 'k8s', 'kustomization.yaml')), 'kustomization.yaml');
  const docs: Obj[] = [];
  for (const r of arr(kustomization.resources, 'resources')) {
    const file = repoPath('deploy', 'k8s', str(r, 'resource'));
    for (const d of parseAllDocuments(readFileSync(file, 'utf8'))) {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
      const v: unknown = d.toJS();
      if (v !== null) docs.push(obj(v, file));
    }
  }
  return docs;
}
export function findKind(docs: Obj[], kind: string): Obj {
  const d = docs.find((x) => x.kind === kind);
  if (d === undefined) throw new Error(`no ${kind} in deploy/k8s`);
  return d;
}
export interface Container {
  readonly name: string;
  readonly c: Obj;
}
export function podSpec(deployment: Obj): Obj {
  return obj(obj(obj(deployment.spec, 'spec').template, 'template').spec, 'pod spec');
}
export function containersOf(spec: Obj, key: 'initContainers' | 'containers'): Container[] {
  return optArr(spec[key], key).map((c, i) => {
    const o = obj(c, `${key}[${i}]`);
    return { name: str(o.name, `${key}[${i}].name`), c: o };
  });
}
export function envOf(c: Obj): Map<string, Obj> {
  const m = new Map<string, Obj>();
  for (const e of optArr(c.env, 'env')) {
    const o = obj(e, 'env entry');
    m.set(str(o.name, 'env name'), o);
  }
  return m;
}
export function envValue(c: Obj, name: string): string {
  const e = envOf(c).get(name);
  if (e === undefined) throw new Error(`env ${name} missing`);
  return str(e.value, `env ${name}.value`);
}
export function securityContext(c: Obj): Obj {
  return obj(c.securityContext, 'securityContext');
}
export function mounts(c: Obj): Array<{ name: string; mountPath: string; readOnly: boolean }> {
  return optArr(c.volumeMounts, 'volumeMounts').map((m) => {
    const o = obj(m, 'volumeMount');
    return { name: str(o.name, 'mount name'), mountPath: str(o.mountPath, 'mountPath'), readOnly: o.readOnly === true };
  });
}
export function volumesOf(spec: Obj): Map<string, Obj> {
  const m = new Map<string, Obj>();
  for (const v of arr(spec.volumes, 'volumes')) {
    const o = obj(v, 'volume');
    m.set(str(o.name, 'volume name'), o);
  }
  return m;
}
/** The container port a probe targets (by name or number). */
export function probePort(c: Obj, probe: string): { path: string; port: number } {
  const http = obj(obj(c[probe], probe).httpGet, `${probe}.httpGet`);
  const p = http.port;
  let port: number;
  if (typeof p === 'number') port = p;
  else {
    const named = optArr(c.ports, 'ports')
      .map((x) => obj(x, 'port'))
      .find((x) => x.name === p);
    if (named === undefined) throw new Error(`${probe}: no container port named ${String(p)}`);
    port = Number(named.containerPort);
  }
  return { path: str(http.path, `${probe}.path`), port };
}
/** The mount that holds `path` (the longest mountPath that is a prefix of it). */
export function mountFor(c: Obj, path: string): { name: string; mountPath: string; readOnly: boolean } | undefined {
  return mounts(c)
    .filter((m) => path === m.mountPath || path.startsWith(m.mountPath + '/'))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
}

export const k8sConfigFile = repoPath('deploy', 'k8s', 'config', 'firma.toml');
export const demoConfigFile = repoPath('deploy', 'demo', 'firma.toml');
/** Where the pod sees deploy/k8s/config/firma.toml, and what that maps back to here. */
export const POD_CONFIG_DIR = '/etc/firma/config';
export function podPath(config: FirmaConfig, localPath: string): string {
  // Relative paths of the k8s firma.toml resolve against deploy/k8s/config here and /etc/firma/config in
  // the pod; absolute ones are pod paths already.
  if (!localPath.startsWith(REPO + '/')) return localPath;
  return posix.join(POD_CONFIG_DIR, posix.relative(config.baseDir, localPath));
}

export function inSubnet(ip: string, cidr: string): boolean {
  const toInt = (a: string): number => a.split('.').reduce((n, x) => n * 256 + Number(x), 0);
  const [net, bits] = cidr.split('/');
  const mask = Number(bits) === 0 ? 0 : 2 ** 32 - 2 ** (32 - Number(bits));
  return (toInt(ip) & mask) >>> 0 === (toInt(net!) & mask) >>> 0;
}

export function netnsSkip(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and iptables)';
  for (const cmd of ['ip', 'iptables', 'ip6tables', 'setpriv']) {
    if (!hasCommand(cmd)) return `needs ${cmd} (Debian: iproute2, iptables, util-linux; test/setup/ensure-deps.sh installs them)`;
  }
  return false;
}
