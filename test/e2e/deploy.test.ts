/**
 * Deployment files (Dockerfile, docker-compose.yml, deploy/demo, deploy/k8s) agree with each other and
 * with the configs they mount, and the parts that can run here do run:
 *   - every firma.toml under deploy/ passes `firma check`;
 *   - the CA trust variables are the ones `firma ca export --env` prints;
 *   - ports, paths, UIDs and env names line up across compose, Kubernetes, the Dockerfile and firma.toml;
 *   - the iptables init script, run for real in network namespaces, redirects an agent UID's TCP 80/443
 *     to the transparent port and leaves the sidecar UID alone;
 *   - deploy/k8s/create-secrets.sh makes the Secrets the Deployment mounts;
 *   - the demo agent, against the demo upstream and a sidecar on the demo firma.toml, gets its
 *     allowed, denied and held calls.
 * Docker has no engine here and no compose plugin: files are parsed with the `yaml` package (and
 * `docker compose config` is used as well when the plugin exists).
 */
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { parse as parseToml, stringify as stringifyToml } from 'smol-toml';
import { loadConfig, parseConfigText, type FirmaConfig } from '../../src/config/index.js';
import { loadCa } from '../../src/intercept/tls/ca.js';
import { createLogger } from '../../src/core/log.js';
import { Sidecar } from '../../src/sidecar.js';
import type { LookupFunction } from '../../src/connector/ssrf/resolve.js';
import { CLI, REPO } from '../helpers/sidecar.js';

// ---------------------------------------------------------------------------------------------------
// Small typed accessors over parsed YAML (unknown until checked).

type Obj = Record<string, unknown>;
function obj(v: unknown, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${what}: expected a mapping, got ${JSON.stringify(v)}`);
  return v as Obj;
}
function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`${what}: expected a list, got ${JSON.stringify(v)}`);
  return v;
}
function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new Error(`${what}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}
const optArr = (v: unknown, what: string): unknown[] => (v === undefined ? [] : arr(v, what));

const repoPath = (...p: string[]): string => join(REPO, ...p);
const readText = (...p: string[]): string => readFileSync(repoPath(...p), 'utf8');

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: opts.cwd ?? REPO, env: { ...process.env, ...opts.env }, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
const hasCommand = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;

/** The variable names `firma ca export --env` prints (run for real on a fresh CA). */
function caExportEnvNames(): string[] {
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

interface Instruction {
  readonly op: string;
  readonly args: string;
}
interface Stage {
  readonly name: string;
  readonly from: string;
  readonly instructions: Instruction[];
}
function parseDockerfile(text: string): Stage[] {
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
function copySources(args: string): { from: string | null; sources: string[]; dest: string } {
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

function k8sDocuments(): Obj[] {
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
function findKind(docs: Obj[], kind: string): Obj {
  const d = docs.find((x) => x.kind === kind);
  if (d === undefined) throw new Error(`no ${kind} in deploy/k8s`);
  return d;
}
interface Container {
  readonly name: string;
  readonly c: Obj;
}
function podSpec(deployment: Obj): Obj {
  return obj(obj(obj(deployment.spec, 'spec').template, 'template').spec, 'pod spec');
}
function containersOf(spec: Obj, key: 'initContainers' | 'containers'): Container[] {
  return optArr(spec[key], key).map((c, i) => {
    const o = obj(c, `${key}[${i}]`);
    return { name: str(o.name, `${key}[${i}].name`), c: o };
  });
}
function envOf(c: Obj): Map<string, Obj> {
  const m = new Map<string, Obj>();
  for (const e of optArr(c.env, 'env')) {
    const o = obj(e, 'env entry');
    m.set(str(o.name, 'env name'), o);
  }
  return m;
}
function envValue(c: Obj, name: string): string {
  const e = envOf(c).get(name);
  if (e === undefined) throw new Error(`env ${name} missing`);
  return str(e.value, `env ${name}.value`);
}
function securityContext(c: Obj): Obj {
  return obj(c.securityContext, 'securityContext');
}
function mounts(c: Obj): Array<{ name: string; mountPath: string; readOnly: boolean }> {
  return optArr(c.volumeMounts, 'volumeMounts').map((m) => {
    const o = obj(m, 'volumeMount');
    return { name: str(o.name, 'mount name'), mountPath: str(o.mountPath, 'mountPath'), readOnly: o.readOnly === true };
  });
}
function volumesOf(spec: Obj): Map<string, Obj> {
  const m = new Map<string, Obj>();
  for (const v of arr(spec.volumes, 'volumes')) {
    const o = obj(v, 'volume');
    m.set(str(o.name, 'volume name'), o);
  }
  return m;
}
/** The container port a probe targets (by name or number). */
function probePort(c: Obj, probe: string): { path: string; port: number } {
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
function mountFor(c: Obj, path: string): { name: string; mountPath: string; readOnly: boolean } | undefined {
  return mounts(c)
    .filter((m) => path === m.mountPath || path.startsWith(m.mountPath + '/'))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
}

const k8sConfigFile = repoPath('deploy', 'k8s', 'config', 'firma.toml');
const demoConfigFile = repoPath('deploy', 'demo', 'firma.toml');
/** Where the pod sees deploy/k8s/config/firma.toml, and what that maps back to here. */
const POD_CONFIG_DIR = '/etc/firma/config';
function podPath(config: FirmaConfig, localPath: string): string {
  // Relative paths of the k8s firma.toml resolve against deploy/k8s/config here and /etc/firma/config in
  // the pod; absolute ones are pod paths already.
  if (!localPath.startsWith(REPO + '/')) return localPath;
  return posix.join(POD_CONFIG_DIR, posix.relative(config.baseDir, localPath));
}

// ---------------------------------------------------------------------------------------------------

t.test('every firma.toml under deploy/ passes `firma check`', async (t) => {
  const files = readdirSync(repoPath('deploy'), { recursive: true, encoding: 'utf8' })
    .filter((f) => posix.basename(f) === 'firma.toml')
    .map((f) => repoPath('deploy', f));
  t.ok(files.includes(k8sConfigFile) && files.includes(demoConfigFile), `found ${files.join(', ')}`);
  for (const f of files) {
    const r = run(process.execPath, [CLI, 'check', '--config', f]);
    t.equal(r.status, 0, `firma check ${f}: ${r.stdout}${r.stderr}`);
    t.match(r.stdout, /: ok — [1-9]\d* mapping rules/, `${f} loads mapping rules`);
  }
});

t.test('Dockerfile: multi-stage, npm ci --omit=dev without scripts, non-root, tini, healthcheck on /healthz', async (t) => {
  const stages = parseDockerfile(readText('Dockerfile'));
  const runtime = stages[stages.length - 1]!;
  t.equal(runtime.name, 'runtime', 'the runtime stage is last (the default build target)');
  const byName = new Map(stages.map((s) => [s.name, s]));

  // Build stage: npm ci (scripts off: prepare would run tsc before the sources are copied) + npm run build.
  const build = byName.get('build');
  t.ok(build, 'a build stage');
  const buildRuns = build!.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
  t.ok(buildRuns.some((r) => /\bnpm ci\b/.test(r) && r.includes('--ignore-scripts')), 'build: npm ci --ignore-scripts');
  t.ok(buildRuns.some((r) => /\bnpm run build\b/.test(r)), 'build: npm run build');

  // node_modules of the runtime come from a stage that installs production dependencies only.
  const copies = runtime.instructions.filter((i) => i.op === 'COPY').map((i) => copySources(i.args));
  const modules = copies.find((c) => c.from !== null && c.sources.some((s) => s.endsWith('node_modules')));
  t.ok(modules, 'runtime copies node_modules from another stage');
  const depsRuns = byName.get(modules!.from!)!.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
  t.ok(
    depsRuns.some((r) => /\bnpm ci\b/.test(r) && r.includes('--omit=dev') && r.includes('--ignore-scripts')),
    `${modules!.from}: npm ci --omit=dev --ignore-scripts (prepare needs tsc, a dev dependency)`,
  );
  const dist = copies.find((c) => c.from === 'build');
  t.ok(dist && dist.sources.some((s) => s.endsWith('/dist')), 'runtime copies dist/ from the build stage');

  // Every build-context path COPYd exists and is not excluded by .dockerignore.
  const ignore = readText('.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const contextSources = stages.flatMap((s) => s.instructions.filter((i) => i.op === 'COPY').map((i) => copySources(i.args))).filter((c) => c.from === null);
  const sources = contextSources.flatMap((c) => c.sources);
  for (const want of ['dist', 'mappings', 'policies', 'firma.toml']) {
    t.ok(
      sources.some((s) => posix.basename(s) === want) || copies.some((c) => c.sources.some((s) => posix.basename(s) === want)),
      `runtime gets ${want}`,
    );
  }
  for (const src of sources) {
    t.ok(existsSync(repoPath(src)), `COPY source ${src} exists`);
    const excludedBy = ignore.find((p) => !p.includes('*') && (src === p || src.startsWith(p + '/')));
    t.equal(excludedBy, undefined, `COPY source ${src} is not excluded by .dockerignore`);
  }
  for (const secret of ['certs', 'keys', 'audit', 'node_modules', 'dist', '.git']) t.ok(ignore.includes(secret), `.dockerignore keeps ${secret} out`);

  // Non-root, the UID the k8s redirect exempts.
  const users = runtime.instructions.filter((i) => i.op === 'USER').map((i) => i.args.trim());
  const user = users[users.length - 1];
  t.ok(user !== undefined && /^\d+(:\d+)?$/.test(user), `numeric USER (${user}): Kubernetes runAsNonRoot can verify it`);
  t.not(Number(user!.split(':')[0]), 0, 'USER is not root');

  const expose = runtime.instructions.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map(Number));
  const k8s = loadConfig(k8sConfigFile, REPO);
  const shipped = loadConfig(repoPath('firma.toml'), REPO);
  for (const port of [k8s.sidecar.interceptor.listen.port, k8s.sidecar.interceptor.transparent_listen!.port, k8s.sidecar.admin.listen.port, shipped.sidecar.interceptor.listen.port, shipped.sidecar.admin.listen.port]) {
    t.ok(expose.includes(port), `EXPOSE ${port}`);
  }

  const entry = runtime.instructions.filter((i) => i.op === 'ENTRYPOINT').map((i) => JSON.parse(i.args) as string[])[0];
  t.ok(entry !== undefined && entry[0]!.endsWith('/tini') && entry.includes('--'), 'tini is PID 1 (signals forwarded, zombies reaped)');
  t.ok(runtime.instructions.some((i) => i.op === 'RUN' && /apt-get install[^&]*\btini\b/.test(i.args)), 'tini is installed');
  const cmd = runtime.instructions.filter((i) => i.op === 'CMD').map((i) => JSON.parse(i.args) as string[])[0];
  t.ok(cmd !== undefined && cmd.includes('/app/firma.toml'), 'default command runs the shipped firma.toml');

  const health = runtime.instructions.find((i) => i.op === 'HEALTHCHECK');
  t.ok(health && /CMD \["node"/.test(health.args), 'HEALTHCHECK runs node (no curl in slim images)');
  const healthEnv = runtime.instructions.filter((i) => i.op === 'ENV').map((i) => i.args).find((a) => a.startsWith('FIRMA_HEALTH_URL='));
  t.equal(healthEnv, `FIRMA_HEALTH_URL=http://127.0.0.1:${shipped.sidecar.admin.listen.port}/healthz`, 'healthcheck URL = the shipped admin listener /healthz');

  const init = byName.get('iptables-init');
  t.ok(init, 'an iptables-init stage for the Kubernetes init container');
  t.ok(init!.instructions.some((i) => i.op === 'COPY' && i.args.includes('deploy/k8s/firma-iptables.sh')), 'it carries deploy/k8s/firma-iptables.sh');
});

t.test('docker-compose.yml: demo services agree with deploy/demo/firma.toml', async (t) => {
  let compose: Obj;
  if (hasCommand('docker') && run('docker', ['compose', 'version']).status === 0) {
    const r = run('docker', ['compose', '-f', 'docker-compose.yml', 'config', '--format', 'json']);
    t.equal(r.status, 0, `docker compose config: ${r.stderr}`);
    compose = obj(JSON.parse(r.stdout), 'compose config');
  } else {
    t.comment('no docker compose plugin here: parsing docker-compose.yml with the yaml package');
    compose = obj(parseYaml(readText('docker-compose.yml'), { merge: true }), 'docker-compose.yml');
  }
  const services = obj(compose.services, 'services');
  const svc = (name: string): Obj => obj(services[name], `service ${name}`);
  const sidecar = svc('sidecar');
  const agent = svc('agent');
  const upstream = svc('upstream');
  const ca = svc('ca');
  const env = (s: Obj, name: string): string => str(obj(s.environment, 'environment')[name], `environment ${name}`);
  /** Short-syntax volumes as {source, target}; bind sources resolved against the repo. */
  const volumes = (s: Obj): Array<{ source: string; target: string; bind: boolean; readOnly: boolean }> =>
    optArr(s.volumes, 'volumes').map((v) => {
      if (typeof v === 'string') {
        const [source, target, mode] = v.split(':');
        const bind = source!.startsWith('.') || source!.startsWith('/');
        return { source: bind ? repoPath(source!) : source!, target: target!, bind, readOnly: mode === 'ro' };
      }
      const o = obj(v, 'volume');
      const bind = o.type === 'bind';
      return { source: str(o.source, 'source'), target: str(o.target, 'target'), bind, readOnly: o.read_only === true };
    });

  // The sidecar runs the demo config, mounted from deploy/demo.
  const command = arr(sidecar.command, 'sidecar.command').map((c) => str(c, 'command'));
  const configArg = command[command.indexOf('--config') + 1]!;
  const configMount = volumes(sidecar).find((v) => v.bind && configArg.startsWith(v.target + '/'));
  t.ok(configMount, `the sidecar's --config ${configArg} is in a bind mount`);
  const configHere = join(configMount!.source, configArg.slice(configMount!.target.length + 1));
  t.equal(configHere, demoConfigFile, 'it is deploy/demo/firma.toml');
  t.equal(env(sidecar, 'FIRMA_CONFIG'), configArg, 'FIRMA_CONFIG names the same file (so `firma approvals …` in the container finds it)');
  const demo = loadConfig(demoConfigFile, REPO);

  for (const s of Object.values(services)) {
    for (const v of volumes(obj(s, 'service'))) {
      if (v.bind) t.ok(existsSync(v.source), `bind mount source ${v.source} exists`);
      else t.ok(Object.hasOwn(obj(compose.volumes, 'volumes'), v.source), `named volume ${v.source} is declared`);
    }
  }

  // Ports: the agent's proxy and admin URLs, the published port and the healthcheck match the config.
  const proxyPort = demo.sidecar.interceptor.listen.port;
  const adminPort = demo.sidecar.admin.listen.port;
  t.equal(demo.sidecar.interceptor.listen.host, '0.0.0.0', 'proxy listens beyond loopback (the agent is another container)');
  t.equal(demo.sidecar.admin.listen.host, '0.0.0.0', 'admin listens beyond loopback (healthcheck, published port)');
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY']) {
    const u = new URL(env(agent, name));
    t.equal(u.hostname, 'sidecar', `${name} names the sidecar service`);
    t.equal(Number(u.port), proxyPort, `${name} port = [sidecar.interceptor] listen port`);
  }
  t.equal(Number(new URL(env(agent, 'FIRMA_ADMIN_URL')).port), adminPort, 'FIRMA_ADMIN_URL port = admin listen port');
  const published = optArr(sidecar.ports, 'ports').map((p) => (typeof p === 'string' ? p : `${String(obj(p, 'port').host_ip)}:${String(obj(p, 'port').published)}:${String(obj(p, 'port').target)}`));
  t.ok(published.some((p) => p === `127.0.0.1:${adminPort}:${adminPort}`), `admin port published on the host's loopback only (${published.join(', ')})`);
  const hc = arr(obj(sidecar.healthcheck, 'healthcheck').test, 'healthcheck.test').map((x) => str(x, 'test')).join(' ');
  t.match(hc, `http://127.0.0.1:${adminPort}/readyz`, 'healthcheck: /readyz on the admin port');
  t.equal(env(sidecar, 'FIRMA_HEALTH_URL'), `http://127.0.0.1:${adminPort}/healthz`, 'image HEALTHCHECK URL follows the admin port');
  t.ok(obj(sidecar.environment, 'environment')[demo.sidecar.admin.token_env] !== undefined, `sidecar gets ${demo.sidecar.admin.token_env} (config token_env)`);
  t.equal(obj(agent.environment, 'environment')[demo.sidecar.admin.token_env], undefined, 'the agent does not get the admin token');

  // Order: CA first, the agent only once the sidecar is ready.
  t.equal(obj(obj(sidecar.depends_on, 'depends_on').ca, 'ca').condition, 'service_completed_successfully');
  t.equal(obj(obj(agent.depends_on, 'depends_on').sidecar, 'sidecar').condition, 'service_healthy', 'agent waits for a healthy sidecar');

  // Writable state is in volumes (root filesystem read-only); the CA dir is shared with the ca service.
  t.equal(sidecar.read_only, true, 'sidecar: read-only root filesystem');
  const sidecarVolume = (path: string): string | undefined => volumes(sidecar).find((v) => !v.bind && (path === v.target || path.startsWith(v.target + '/')))?.source;
  const certsVolume = sidecarVolume(demo.sidecar.interceptor.mitm.ca_dir);
  t.ok(certsVolume, `ca_dir ${demo.sidecar.interceptor.mitm.ca_dir} is a volume`);
  t.ok(sidecarVolume(posix.dirname(demo.audit.path)), 'audit dir is a volume');
  t.ok(sidecarVolume(demo.audit.key_dir), 'audit key dir is a volume');
  t.ok(volumes(ca).some((v) => v.source === certsVolume && v.target === demo.sidecar.interceptor.mitm.ca_dir), 'the ca service writes the same volume at the same path');
  const caScript = arr(ca.command, 'ca.command').map((c) => str(c, 'command')).join(' ');
  t.match(caScript, 'firma ca init --config ' + configArg, 'ca service runs `firma ca init` on the demo config');

  // The agent trusts the CA: exactly the variables `firma ca export --env` prints, pointing at a ca.crt
  // from a volume that holds only the public certificate.
  const names = caExportEnvNames();
  const agentEnv = obj(agent.environment, 'environment');
  const trustPaths = new Set(names.map((n) => str(agentEnv[n], `agent ${n}`)));
  t.equal(trustPaths.size, 1, `${names.join(', ')} all set to one file`);
  const caCrt = [...trustPaths][0]!;
  const caMount = volumes(agent).find((v) => caCrt.startsWith(v.target + '/'));
  t.ok(caMount && !caMount.bind && caMount.readOnly, 'agent reads ca.crt from a read-only named volume');
  t.not(caMount!.source, certsVolume, 'not the sidecar certs volume (that one has ca.key)');
  const caPublish = volumes(ca).find((v) => v.source === caMount!.source);
  t.ok(caPublish && caScript.includes(`${demo.sidecar.interceptor.mitm.ca_dir}/ca.crt ${caPublish.target}/ca.crt`), 'the ca service copies ca.crt (only) into it');

  // The agent's only network has no route out; the upstream is reachable by the sidecar only, on the
  // address and port the demo config allows past the SSRF guard.
  const networks = obj(compose.networks, 'networks');
  const agentNets = Object.keys(obj(agent.networks, 'agent.networks'));
  t.same(agentNets, ['agents'], 'agent is on the agents network only');
  t.equal(obj(networks.agents, 'agents').internal, true, 'agents network is internal');
  t.notOk(Object.keys(obj(upstream.networks, 'upstream.networks')).includes('agents'), 'upstream is not on the agents network');
  const upstreamIp = str(obj(obj(upstream.networks, 'n').upstream, 'upstream net').ipv4_address, 'ipv4_address');
  const subnet = str(obj(arr(obj(obj(networks.upstream, 'upstream').ipam, 'ipam').config, 'ipam.config')[0], 'ipam').subnet, 'subnet');
  const upstreamPort = Number(env(upstream, 'DEMO_UPSTREAM_PORT'));
  t.equal(Number(new URL(env(agent, 'DEMO_UPSTREAM_URL')).port), upstreamPort, 'agent targets the upstream port');
  t.equal(new URL(env(agent, 'DEMO_UPSTREAM_URL')).hostname, 'upstream', 'agent targets the upstream service name (the mapping rules host)');
  t.ok(inSubnet(upstreamIp, subnet), `${upstreamIp} is in ${subnet}`);
  t.ok(demo.sidecar.connector.allow_private.some((r) => r.text === `${subnet}:${upstreamPort}`), `allow_private has ${subnet}:${upstreamPort}`);

  // The demo scripts the services run exist.
  for (const s of [upstream, agent]) {
    const script = arr(s.command, 'command').map((c) => str(c, 'command')).find((c) => c.endsWith('.mjs'))!;
    const m = volumes(s).find((v) => v.bind && script.startsWith(v.target + '/'))!;
    t.ok(existsSync(join(m.source, script.slice(m.target.length + 1))), `${script} exists`);
  }
  t.not(agent.user, undefined, 'agent runs as a named non-root user');
  t.not(agent.user, '1337', 'agent does not run as the sidecar UID');
});

function inSubnet(ip: string, cidr: string): boolean {
  const toInt = (a: string): number => a.split('.').reduce((n, x) => n * 256 + Number(x), 0);
  const [net, bits] = cidr.split('/');
  const mask = Number(bits) === 0 ? 0 : 2 ** 32 - 2 ** (32 - Number(bits));
  return (toInt(ip) & mask) >>> 0 === (toInt(net!) & mask) >>> 0;
}

t.test('deploy/k8s: manifests agree with config/firma.toml, the Dockerfile and each other', async (t) => {
  if (hasCommand('kubectl')) {
    const r = run('kubectl', ['kustomize', repoPath('deploy', 'k8s')]);
    t.equal(r.status, 0, `kubectl kustomize: ${r.stderr}`);
    const kinds = parseAllDocuments(r.stdout).map((d) => obj(d.toJS(), 'doc').kind);
    t.same([...kinds].sort(), ['ConfigMap', 'ConfigMap', 'ConfigMap', 'Deployment', 'NetworkPolicy', 'ServiceAccount'], 'kustomize builds every object');
  } else t.comment('kubectl not installed: kustomize build not checked');

  const docs = k8sDocuments();
  const deployment = findKind(docs, 'Deployment');
  const spec = podSpec(deployment);
  const inits = containersOf(spec, 'initContainers');
  const mains = containersOf(spec, 'containers');
  const all = [...inits, ...mains];
  const get = (name: string): Obj => all.find((c) => c.name === name)!.c;
  const firma = get('firma');
  const iptables = get('firma-iptables');
  const caSetup = get('firma-ca-setup');
  const agent = get('agent');
  const config = loadConfig(k8sConfigFile, REPO);

  // Order and the native sidecar.
  t.same(inits.map((c) => c.name), ['firma-iptables', 'firma-ca-setup', 'firma'], 'init order: rules, CA copy, then the sidecar');
  t.equal(firma.restartPolicy, 'Always', 'the sidecar is a native sidecar (init container, restartPolicy Always)');
  t.same(mains.map((c) => c.name), ['agent']);
  t.equal(obj(findKind(docs, 'ServiceAccount').metadata, 'md').name, spec.serviceAccountName, 'the pod uses the ServiceAccount');
  t.equal(spec.automountServiceAccountToken, false, 'no API token mounted');

  // UIDs: the redirect exempts exactly the UID the sidecar runs as, which is the image's USER.
  const sidecarUid = Number(securityContext(firma).runAsUser);
  t.equal(Number(envValue(iptables, 'FIRMA_PROXY_UID')), sidecarUid, 'FIRMA_PROXY_UID = the firma container runAsUser');
  const dockerUser = parseDockerfile(readText('Dockerfile')).at(-1)!.instructions.filter((i) => i.op === 'USER').at(-1)!.args;
  t.equal(Number(dockerUser.split(':')[0]), sidecarUid, 'and = the image USER');
  t.equal(Number(securityContext(caSetup).runAsUser), sidecarUid, 'firma-ca-setup writes the CA copy as that UID');
  const agentUid = Number(securityContext(agent).runAsUser);
  t.not(agentUid, sidecarUid, 'the agent does not run as the exempt UID');
  t.not(agentUid, 0, 'the agent is not root');

  // The redirect goes to the transparent listener; 80 and 443 are redirected.
  const transparent = config.sidecar.interceptor.transparent_listen;
  t.ok(transparent, 'transparent_listen is set');
  t.equal(Number(envValue(iptables, 'FIRMA_REDIRECT_TO_PORT')), transparent!.port, 'FIRMA_REDIRECT_TO_PORT = transparent_listen port');
  t.same(envValue(iptables, 'FIRMA_REDIRECT_PORTS').split(',').map(Number).sort(), [443, 80], 'redirects 80 and 443');
  const named = (c: Obj, n: string): number => Number(optArr(c.ports, 'ports').map((p) => obj(p, 'port')).find((p) => p.name === n)?.containerPort);
  t.equal(named(firma, 'transparent'), transparent!.port, 'container port "transparent" = transparent_listen');
  t.equal(named(firma, 'proxy'), config.sidecar.interceptor.listen.port, 'container port "proxy" = listen');
  t.equal(named(firma, 'admin'), config.sidecar.admin.listen.port, 'container port "admin" = admin listen');
  t.equal(config.sidecar.interceptor.listen.host, '127.0.0.1', 'explicit proxy on loopback (shared inside the pod only)');
  t.equal(config.sidecar.admin.listen.host, '0.0.0.0', 'admin on the pod IP: kubelet probes reach it');

  // Capabilities: NET_ADMIN/NET_RAW in the iptables init container only; every container drops ALL.
  for (const { name, c } of all) {
    const caps = obj(securityContext(c).capabilities, `${name} capabilities`);
    t.same(caps.drop, ['ALL'], `${name}: drops ALL capabilities`);
    t.same(caps.add ?? [], name === 'firma-iptables' ? ['NET_ADMIN', 'NET_RAW'] : [], `${name}: added capabilities`);
    t.equal(securityContext(c).allowPrivilegeEscalation, false, `${name}: no privilege escalation`);
    t.equal(securityContext(c).readOnlyRootFilesystem, true, `${name}: read-only root filesystem`);
    if (name !== 'firma-iptables') t.equal(securityContext(c).runAsNonRoot, true, `${name}: runAsNonRoot`);
  }
  t.equal(spec.shareProcessNamespace, false, 'process namespaces not shared');

  // Probes on the admin listener.
  t.same(probePort(firma, 'readinessProbe'), { path: '/readyz', port: config.sidecar.admin.listen.port }, 'readiness: /readyz on admin');
  t.same(probePort(firma, 'startupProbe'), { path: '/readyz', port: config.sidecar.admin.listen.port }, 'startup: /readyz on admin (the agent starts after it)');
  t.same(probePort(firma, 'livenessProbe'), { path: '/healthz', port: config.sidecar.admin.listen.port }, 'liveness: /healthz on admin');

  // Files: the config the sidecar runs is this firma.toml, and every path in it is mounted right.
  const args = arr(firma.args, 'args').map((a) => str(a, 'arg'));
  const configPath = args[args.indexOf('--config') + 1]!;
  t.equal(configPath, `${POD_CONFIG_DIR}/firma.toml`);
  const vols = volumesOf(spec);
  const volumeOf = (c: Obj, path: string): { volume: Obj; readOnly: boolean } => {
    const m = mountFor(c, path);
    if (m === undefined) throw new Error(`${path} is not on a mounted volume`);
    return { volume: vols.get(m.name)!, readOnly: m.readOnly };
  };
  const kustomization = obj(parseYaml(readText('deploy', 'k8s', 'kustomization.yaml')), 'kustomization');
  const generated = new Map(
    arr(kustomization.configMapGenerator, 'configMapGenerator').map((g) => {
      const o = obj(g, 'generator');
      return [str(o.name, 'name'), arr(o.files, 'files').map((f) => str(f, 'file'))] as const;
    }),
  );
  for (const files of generated.values()) for (const f of files) t.ok(existsSync(repoPath('deploy', 'k8s', f)), `ConfigMap file ${f} exists`);
  /** The ConfigMap behind a pod path, and that it carries the local file(s). */
  const configMapFor = (path: string, localFiles: string[]): void => {
    const { volume, readOnly } = volumeOf(firma, path);
    const name = str(obj(volume.configMap, `${path} volume configMap`).name, 'configMap name');
    t.ok(readOnly, `${path}: mounted read-only`);
    const files = generated.get(name) ?? [];
    for (const lf of localFiles) t.ok(files.map((f) => repoPath('deploy', 'k8s', f)).includes(lf), `ConfigMap ${name} carries ${lf}`);
  };
  configMapFor(configPath, [k8sConfigFile]);
  const rulesFiles = config.sidecar.mapping.rules_paths.flatMap((p) => {
    const dir = posix.dirname(p);
    return readdirSync(dir).filter((f) => f.endsWith('.toml')).map((f) => join(dir, f));
  });
  t.ok(rulesFiles.length > 0, 'mapping files exist beside the config');
  for (const p of config.sidecar.mapping.rules_paths) configMapFor(podPath(config, posix.dirname(p)) + '/x.toml', rulesFiles.filter((f) => f.startsWith(posix.dirname(p))));
  const policyFiles = readdirSync(config.sidecar.policy.dir).filter((f) => f.endsWith('.cedar')).map((f) => join(config.sidecar.policy.dir, f));
  configMapFor(podPath(config, config.sidecar.policy.dir) + '/x.cedar', policyFiles);
  // The copies kustomize needs (it reads nothing above deploy/k8s) stay the repo's files.
  for (const f of [...generated.get('firma-mappings')!, ...generated.get('firma-policies')!]) {
    t.equal(readText('deploy', 'k8s', f), readText(f), `deploy/k8s/${f} is the same as ${f}: update both`);
  }

  // Writable paths are emptyDirs; secrets are Secret volumes.
  for (const path of [config.sidecar.interceptor.mitm.ca_dir, config.audit.path, config.audit.key_dir, config.sidecar.capabilities.revocation_file]) {
    const { volume, readOnly } = volumeOf(firma, podPath(config, path));
    t.ok(volume.emptyDir !== undefined && !readOnly, `${path}: on a writable emptyDir`);
  }
  const capability = new Set<string>();
  for (const path of [config.sidecar.capabilities.public_key_file, config.sidecar.capabilities.token_file]) {
    const { volume } = volumeOf(firma, podPath(config, path));
    const secret = obj(volume.secret, `${path} secret`);
    capability.add(`${str(secret.secretName, 'secretName')}/${posix.basename(path)}`);
  }
  t.same([...capability].sort(), ['firma-capability/capability.pub', 'firma-capability/token'], 'capability key and token from the Secret');

  // The CA: firma-ca-setup copies ca.crt + ca.key from the Secret into the sidecar's ca_dir emptyDir.
  const caDir = podPath(config, config.sidecar.interceptor.mitm.ca_dir);
  const setupScript = arr(caSetup.command, 'command').map((c) => str(c, 'command')).join(' ');
  const caSecretMount = mounts(caSetup).find((m) => vols.get(m.name)?.secret !== undefined)!;
  for (const f of ['ca.crt', 'ca.key']) t.match(setupScript, `${caSecretMount.mountPath}/${f} ${caDir}/${f}`, `firma-ca-setup installs ${f} into ca_dir`);
  t.match(setupScript, `-m 0600 ${caSecretMount.mountPath}/ca.key`, 'ca.key ends up 0600 (the sidecar refuses group-readable keys)');
  t.equal(mountFor(caSetup, caDir)?.name, mountFor(firma, caDir)?.name, 'firma-ca-setup and the sidecar share the ca_dir volume');
  const secretItems = (volName: string): string[] =>
    arr(obj(vols.get(volName)!.secret, 'secret').items, 'items').map((i) => str(obj(i, 'item').key, 'key')).sort();
  t.same(secretItems(caSecretMount.name), ['ca.crt', 'ca.key']);

  // The agent: ca.crt only, the trust variables of `firma ca export --env`, proxy env, no admin token.
  const names = caExportEnvNames();
  const agentEnvNames = [...envOf(agent).keys()];
  const trust = new Set(names.map((n) => envValue(agent, n)));
  t.equal(trust.size, 1, `agent: ${names.join(', ')} set to one file`);
  const agentCa = [...trust][0]!;
  const agentCaMount = mountFor(agent, agentCa)!;
  t.same(secretItems(agentCaMount.name), ['ca.crt'], 'the agent mounts ca.crt only');
  t.equal(str(obj(vols.get(agentCaMount.name)!.secret, 's').secretName, 'secretName'), str(obj(vols.get(caSecretMount.name)!.secret, 's').secretName, 'secretName'), 'from the same Secret');
  t.equal(posix.basename(agentCa), 'ca.crt');
  for (const m of mounts(agent)) {
    const secret = vols.get(m.name)?.secret;
    if (secret !== undefined) t.notOk(secretItems(m.name).includes('ca.key'), `agent volume ${m.name} has no ca.key`);
    t.not(m.name, mountFor(firma, config.audit.path)!.name, 'agent does not mount the audit log');
  }
  for (const n of ['HTTPS_PROXY', 'HTTP_PROXY']) {
    const u = new URL(envValue(agent, n));
    t.equal(`${u.hostname}:${Number(u.port)}`, `${config.sidecar.interceptor.listen.host}:${config.sidecar.interceptor.listen.port}`, `${n} = the explicit proxy listener`);
  }
  t.match(envValue(agent, 'NO_PROXY'), /127\.0\.0\.1/);
  t.notOk(agentEnvNames.includes(config.sidecar.admin.token_env), 'agent has no admin token');
  const tokenRef = obj(obj(envOf(firma).get(config.sidecar.admin.token_env)?.valueFrom, 'valueFrom').secretKeyRef, 'secretKeyRef');
  t.same(tokenRef, { name: 'firma-admin', key: 'token' }, `sidecar ${config.sidecar.admin.token_env} from Secret firma-admin`);

  // NetworkPolicy: selects this pod; egress DNS + TCP 443 only, no private ranges; ingress admin only.
  const np = obj(findKind(docs, 'NetworkPolicy').spec, 'np spec');
  t.same(obj(np.podSelector, 'podSelector').matchLabels, obj(obj(obj(obj(deployment.spec, 's').template, 't').metadata, 'm').labels, 'labels'), 'NetworkPolicy selects the agent pod');
  t.same(np.policyTypes, ['Egress', 'Ingress']);
  const egressPorts = arr(np.egress, 'egress').flatMap((e) => arr(obj(e, 'egress rule').ports, 'ports').map((p) => `${String(obj(p, 'p').protocol)}/${String(obj(p, 'p').port)}`));
  t.same(egressPorts.sort(), ['TCP/443', 'TCP/53', 'UDP/53'], 'egress: DNS and TCP 443, nothing else');
  const blocks = arr(np.egress, 'egress').flatMap((e) => arr(obj(e, 'rule').to, 'to').map((x) => obj(x, 'peer').ipBlock).filter((b) => b !== undefined));
  for (const b of blocks) t.ok(arr(obj(b, 'ipBlock').except, 'except').includes('169.254.0.0/16'), 'metadata range excluded');
  const ingressPorts = arr(np.ingress, 'ingress').flatMap((e) => arr(obj(e, 'rule').ports, 'ports').map((p) => Number(obj(p, 'p').port)));
  t.same(ingressPorts, [config.sidecar.admin.listen.port], 'ingress: the admin port only');
});

t.test('deploy/k8s/create-secrets.sh makes the Secrets the Deployment mounts', { skip: hasCommand('kubectl') ? false : 'kubectl is not installed (it renders the Secret manifests)' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firma-secrets-'));
  const r = run('sh', [repoPath('deploy', 'k8s', 'create-secrets.sh'), 'agents'], {
    env: { FIRMA_SECRETS_OUT: join(dir, 'out'), FIRMA_SIGNING_DIR: join(dir, 'signing') },
    cwd: dir,
  });
  t.equal(r.status, 0, `create-secrets.sh: ${r.stderr}`);
  const secrets = new Map<string, Record<string, Buffer>>();
  for (const f of readdirSync(join(dir, 'out'))) {
    const s = obj(parseYaml(readFileSync(join(dir, 'out', f), 'utf8')), f);
    t.equal(obj(s.metadata, 'metadata').namespace, 'agents', `${f}: in the namespace given`);
    const data = obj(s.data, 'data');
    secrets.set(str(obj(s.metadata, 'metadata').name, 'name'), Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(str(v, k), 'base64')])));
  }
  // Every Secret key the Deployment references exists.
  const spec = podSpec(findKind(k8sDocuments(), 'Deployment'));
  const wanted: string[] = [];
  for (const v of volumesOf(spec).values()) {
    if (v.secret === undefined) continue;
    const s = obj(v.secret, 'secret');
    const name = str(s.secretName, 'secretName');
    const items = optArr(s.items, 'items').map((i) => str(obj(i, 'i').key, 'key'));
    for (const k of items.length > 0 ? items : ['capability.pub', 'token']) wanted.push(`${name}/${k}`);
  }
  for (const c of [...containersOf(spec, 'initContainers'), ...containersOf(spec, 'containers')]) {
    for (const e of envOf(c.c).values()) {
      const ref = (e.valueFrom as Obj | undefined)?.secretKeyRef as Obj | undefined;
      if (ref !== undefined) wanted.push(`${str(ref.name, 'name')}/${str(ref.key, 'key')}`);
    }
  }
  for (const w of new Set(wanted)) {
    const [name, key] = w.split('/');
    t.ok(secrets.get(name!)?.[key!]?.length, `Secret ${w} is made`);
  }
  // The CA pair loads as the sidecar would load it after firma-ca-setup (0600 key).
  const caDir = join(dir, 'ca');
  mkdirSync(caDir);
  writeFileSync(join(caDir, 'ca.crt'), secrets.get('firma-ca')!['ca.crt']!);
  writeFileSync(join(caDir, 'ca.key'), secrets.get('firma-ca')!['ca.key']!, { mode: 0o600 });
  t.doesNotThrow(() => loadCa(caDir), 'ca.crt and ca.key belong together');
  t.match(secrets.get('firma-capability')!.token!.toString(), /^v4\.public\./, 'a PASETO v4.public token');
  t.ok(existsSync(join(dir, 'signing', 'capability.key')), 'the signing key stays in FIRMA_SIGNING_DIR');
  t.notOk([...secrets.values()].some((s) => Object.keys(s).includes('capability.key')), 'no Secret carries the signing key');

  // The pod's file layout, for real: in a private mount + network namespace, /etc holds exactly what the
  // manifest mounts under /etc/firma (ConfigMaps from the generator files, Secrets from these manifests,
  // group-readable by the fsGroup as the kubelet leaves them) and /var/lib/firma the emptyDirs. Then
  // firma-ca-setup's command and the sidecar's args run as the manifest's UID, and /readyz must pass.
  const podSkip = process.getuid?.() !== 0 ? 'needs root' : !hasCommand('unshare') || !hasCommand('setpriv') || !hasCommand('ip') ? 'needs unshare, setpriv and ip' : false;
  t.test('the sidecar starts on the Deployment\'s mounts, Secrets and UID', { skip: podSkip }, async (t) => {
    const pod = podSpec(findKind(k8sDocuments(), 'Deployment'));
    const vols = volumesOf(pod);
    const inits = containersOf(pod, 'initContainers');
    const firma = inits.find((c) => c.name === 'firma')!.c;
    const caSetup = inits.find((c) => c.name === 'firma-ca-setup')!.c;
    const uid = Number(securityContext(firma).runAsUser);
    const fsGroup = Number(obj(pod.securityContext, 'pod securityContext').fsGroup);
    const kustomization = obj(parseYaml(readText('deploy', 'k8s', 'kustomization.yaml')), 'kustomization');
    const generated = new Map(arr(kustomization.configMapGenerator, 'g').map((g) => [str(obj(g, 'g').name, 'name'), arr(obj(g, 'g').files, 'files').map((f) => str(f, 'f'))] as const));
    const etc = join(dir, 'etc');
    const emptyDirs: string[] = [];
    for (const m of [...mounts(caSetup), ...mounts(firma)]) {
      const v = vols.get(m.name)!;
      if (v.emptyDir !== undefined) {
        t.ok(m.mountPath.startsWith('/var/lib/firma/'), `emptyDir ${m.mountPath} under /var/lib/firma`);
        emptyDirs.push(m.mountPath);
        continue;
      }
      t.ok(m.mountPath.startsWith('/etc/firma/'), `${m.mountPath} under /etc/firma`);
      const target = join(etc, m.mountPath.slice('/etc/'.length));
      mkdirSync(target, { recursive: true });
      if (v.configMap !== undefined) {
        for (const f of generated.get(str(obj(v.configMap, 'cm').name, 'name'))!) writeFileSync(join(target, posix.basename(f)), readText('deploy', 'k8s', f));
      } else {
        const sec = obj(v.secret, 'secret');
        const data = secrets.get(str(sec.secretName, 'secretName'))!;
        const items = optArr(sec.items, 'items').map((i) => str(obj(i, 'i').key, 'key'));
        for (const k of items.length > 0 ? items : Object.keys(data)) {
          const f = join(target, k);
          writeFileSync(f, data[k]!);
          run('chown', [`0:${fsGroup}`, f]);
          run('chmod', ['0440', f]); // defaultMode | the kubelet's fsGroup read bits
        }
      }
    }
    const args = arr(firma.args, 'args').map((a) => str(a, 'arg'));
    const config = loadConfig(k8sConfigFile, REPO);
    const script = `set -eu
unset NODE_OPTIONS NODE_EXTRA_CA_CERTS
ip link set lo up
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /var/lib
for d in $EMPTY_DIRS; do mkdir -p "$d"; chown "$FIRMA_UID:$FS_GROUP" "$d"; chmod 2770 "$d"; done
mount --bind "$POD_ETC" /etc
setpriv --reuid="$FIRMA_UID" --regid="$FIRMA_UID" --groups="$FS_GROUP" /bin/sh -c "$CA_SETUP"
echo "KEYMODE $(stat -c '%a %u' /var/lib/firma/certs/ca.key)"
setpriv --reuid="$FIRMA_UID" --regid="$FIRMA_UID" --groups="$FS_GROUP" "$NODE" "$CLI" $FIRMA_ARGS >"$LOG" 2>&1 &
pid=$!
i=0
until "$NODE" -e "fetch('http://127.0.0.1:$ADMIN_PORT/readyz').then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))"; do
  i=$((i+1)); if [ "$i" -ge 150 ] || ! kill -0 "$pid" 2>/dev/null; then echo NOTREADY; kill "$pid" 2>/dev/null || true; exit 1; fi; sleep 0.2
done
echo READY
"$NODE" -e "fetch('http://127.0.0.1:$ADMIN_PORT/healthz').then(r=>console.log('HEALTHZ '+r.status))"
"$NODE" -e "require('http').request({host:'127.0.0.1',port:$PROXY_PORT,path:'http://unmapped.example/x',headers:{host:'unmapped.example'}},r=>{let b='';r.on('data',c=>b+=c);r.on('end',()=>console.log('PROXY '+r.statusCode+' '+JSON.parse(b).reason))}).end()"
kill -TERM "$pid"
set +e; wait "$pid"; echo "EXIT $?"
`;
    const log = join(dir, 'sidecar.log');
    const r = spawnSync('unshare', ['-m', '-n', 'sh', '-c', script], {
      encoding: 'utf8',
      timeout: 90_000,
      // The script unsets this runner's Node settings: tap's --import hooks (added to every child) would
      // write into .tap as the sidecar UID, and NODE_EXTRA_CA_CERTS names a file under the hidden /etc.
      env: {
        ...process.env,
        EMPTY_DIRS: emptyDirs.join(' '),
        FIRMA_UID: String(uid),
        FS_GROUP: String(fsGroup),
        POD_ETC: etc,
        CA_SETUP: arr(caSetup.command, 'command').map((c) => str(c, 'c')).at(-1)!,
        NODE: process.execPath,
        CLI,
        FIRMA_ARGS: args.join(' '),
        LOG: log,
        ADMIN_PORT: String(config.sidecar.admin.listen.port),
        PROXY_PORT: String(config.sidecar.interceptor.listen.port),
      },
    });
    const sidecarLog = existsSync(log) ? readFileSync(log, 'utf8') : '';
    t.equal(r.status, 0, `pod simulation: ${r.stdout}${r.stderr}\n${sidecarLog}`);
    t.match(r.stdout, `KEYMODE 600 ${uid}`, 'firma-ca-setup leaves ca.key 0600, owned by the sidecar UID');
    t.match(r.stdout, 'READY', '/readyz 200 with the pod layout');
    t.match(r.stdout, 'HEALTHZ 200');
    t.match(r.stdout, 'PROXY 403 unclassified', 'the explicit proxy decides (an unmapped host is denied)');
    t.match(r.stdout, 'EXIT 0', 'SIGTERM: drained and exited 0');
  });
});

// ---------------------------------------------------------------------------------------------------
// The iptables init script, for real, in network namespaces.

function netnsSkip(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and iptables)';
  for (const cmd of ['ip', 'iptables', 'ip6tables', 'setpriv']) {
    if (!hasCommand(cmd)) return `needs ${cmd} (Debian: iproute2, iptables, util-linux; test/setup/ensure-deps.sh installs them)`;
  }
  return false;
}

t.test('firma-iptables.sh redirects the agent UID to the transparent port and exempts the sidecar UID', { skip: netnsSkip() }, async (t) => {
  const spec = podSpec(findKind(k8sDocuments(), 'Deployment'));
  const inits = containersOf(spec, 'initContainers');
  const iptables = inits.find((c) => c.name === 'firma-iptables')!.c;
  const sidecarUid = Number(securityContext(inits.find((c) => c.name === 'firma')!.c).runAsUser);
  const agentUid = Number(securityContext(containersOf(spec, 'containers').find((c) => c.name === 'agent')!.c).runAsUser);
  const transparent = loadConfig(k8sConfigFile, REPO).sidecar.interceptor.transparent_listen!;

  const tag = `${process.pid % 100000}`;
  const pod = `fdpod${tag}`;
  const world = `fdworld${tag}`;
  const ipq = (...args: string[]): void => {
    const r = run('ip', args);
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
  };
  const children: ChildProcess[] = [];
  t.teardown(() => {
    for (const c of children) c.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', pod]);
    spawnSync('ip', ['netns', 'del', world]);
  });
  ipq('netns', 'add', pod);
  ipq('netns', 'add', world);
  ipq('link', 'add', `fdv${tag}a`, 'type', 'veth', 'peer', 'name', `fdv${tag}b`);
  ipq('link', 'set', `fdv${tag}a`, 'netns', pod);
  ipq('link', 'set', `fdv${tag}b`, 'netns', world);
  ipq('-n', pod, 'addr', 'add', '10.203.0.2/24', 'dev', `fdv${tag}a`);
  ipq('-n', world, 'addr', 'add', '10.203.0.1/24', 'dev', `fdv${tag}b`);
  ipq('-n', pod, 'addr', 'add', 'fd7a:f12a::2/64', 'dev', `fdv${tag}a`, 'nodad');
  ipq('-n', world, 'addr', 'add', 'fd7a:f12a::1/64', 'dev', `fdv${tag}b`, 'nodad');
  for (const [ns, dev] of [[pod, `fdv${tag}a`], [world, `fdv${tag}b`]] as const) {
    ipq('-n', ns, 'link', 'set', 'lo', 'up');
    ipq('-n', ns, 'link', 'set', dev, 'up');
  }

  // The init container, as the manifest configures it; twice, as a restarted init container would.
  const scriptEnv = Object.fromEntries(['FIRMA_PROXY_UID', 'FIRMA_REDIRECT_TO_PORT', 'FIRMA_REDIRECT_PORTS'].map((n) => [n, envValue(iptables, n)]));
  for (let i = 0; i < 2; i++) {
    const r = run('ip', ['netns', 'exec', pod, 'sh', repoPath('deploy', 'k8s', 'firma-iptables.sh')], { env: scriptEnv });
    t.equal(r.status, 0, `firma-iptables.sh run ${i + 1}: ${r.stderr}`);
  }
  const rules = run('ip', ['netns', 'exec', pod, 'iptables', '-t', 'nat', '-S']).stdout;
  t.equal(rules.split('\n').filter((l) => l === '-A OUTPUT -p tcp -j FIRMA_OUTPUT').length, 1, 'hooked into OUTPUT once after two runs');

  // Servers: "world" answers on 80, 443 and 8443 (IPv4 and IPv6); the "sidecar" listens on the
  // transparent address as the sidecar UID.
  const serve = async (ns: string, uid: number, host: string, port: number, name: string): Promise<void> => {
    const code = `const s=require('net').createServer(c=>c.end(${JSON.stringify(name)}+':'+c.localPort));s.listen(${port},${JSON.stringify(host)},()=>console.log('up'))`;
    const child = spawn('ip', ['netns', 'exec', ns, 'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} on ${port} did not start`)), 15_000);
      createInterface({ input: child.stdout! }).on('line', (l) => {
        if (l === 'up') {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on('exit', (c) => {
        clearTimeout(timer);
        reject(new Error(`${name} on ${port} exited ${c}`));
      });
    });
  };
  for (const port of [80, 443, 8443]) await serve(world, 0, '::', port, 'world');
  await serve(pod, sidecarUid, transparent.host, transparent.port, 'sidecar');

  const connectAs = (uid: number, host: string, port: number): string => {
    const code = `const s=require('net').connect({host:${JSON.stringify(host)},port:${port}});let d='';s.on('data',c=>d+=c);s.on('end',()=>{console.log(d);process.exit(0)});s.on('error',e=>{console.log('error:'+e.code);process.exit(0)});setTimeout(()=>{console.log('timeout');process.exit(0)},5000)`;
    return run('ip', ['netns', 'exec', pod, 'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, '-e', code]).stdout.trim();
  };
  t.equal(connectAs(agentUid, '10.203.0.1', 443), `sidecar:${transparent.port}`, 'agent UID → TCP 443 lands on the transparent listener');
  t.equal(connectAs(agentUid, '10.203.0.1', 80), `sidecar:${transparent.port}`, 'agent UID → TCP 80 lands on the transparent listener');
  t.equal(connectAs(sidecarUid, '10.203.0.1', 443), 'world:443', 'sidecar UID → TCP 443 leaves untouched (no loop)');
  t.equal(connectAs(sidecarUid, '10.203.0.1', 80), 'world:80', 'sidecar UID → TCP 80 leaves untouched');
  t.equal(connectAs(agentUid, '127.0.0.1', transparent.port), `sidecar:${transparent.port}`, 'loopback is not redirected');
  // Honest limits (README threat model): other ports are not redirected; the NetworkPolicy blocks them.
  t.equal(connectAs(agentUid, '10.203.0.1', 8443), 'world:8443', 'other ports are NOT redirected (the NetworkPolicy is what drops them)');
  // IPv6: the transparent listener is IPv4, so the agent's 80/443 over IPv6 are refused, not open.
  t.match(connectAs(agentUid, 'fd7a:f12a::1', 443), /^error:ECONN(RESET|REFUSED)$/, 'agent UID → IPv6 443 is refused');
  t.equal(connectAs(sidecarUid, 'fd7a:f12a::1', 443), 'world:443', 'sidecar UID → IPv6 443 leaves');
});

t.test('firma-iptables.sh refuses bad settings', async (t) => {
  for (const [env, want] of [
    [{ FIRMA_PROXY_UID: '0' }, /must not be 0/],
    [{ FIRMA_PROXY_UID: 'firma' }, /must be a number/],
    [{ FIRMA_REDIRECT_PORTS: '80;443' }, /comma-separated/],
    [{ FIRMA_REDIRECT_TO_PORT: '15001x' }, /must be a number/],
  ] as const) {
    // Validation runs before any iptables call, so an iptables that fails loudly proves nothing ran.
    const r = run('sh', [repoPath('deploy', 'k8s', 'firma-iptables.sh')], { env: { ...env, FIRMA_IPTABLES: 'false', FIRMA_IP6TABLES: 'false' } });
    t.equal(r.status, 1, `${JSON.stringify(env)} exits 1`);
    t.match(r.stderr, want);
  }
});

// ---------------------------------------------------------------------------------------------------
// The demo, for real: upstream.mjs, a sidecar on deploy/demo/firma.toml, agent.mjs.

t.test('demo: agent.mjs through a sidecar on the demo firma.toml gets allowed, denied and held calls', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firma-demo-'));
  // Upstream, on an ephemeral loopback port.
  const upstream = spawn(process.execPath, [repoPath('deploy', 'demo', 'upstream.mjs')], {
    env: { ...process.env, DEMO_UPSTREAM_HOST: '127.0.0.1', DEMO_UPSTREAM_PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    upstream.kill('SIGTERM');
  });
  const upstreamLines: string[] = [];
  const upstreamPort = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('demo upstream did not start')), 15_000);
    createInterface({ input: upstream.stdout! }).on('line', (l) => {
      upstreamLines.push(l);
      const m = /^listening on .*:(\d+)$/.exec(l);
      if (m !== null) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });

  // The demo config with only what cannot be the same here changed: loopback ephemeral listeners,
  // temporary writable paths, loopback allowed past the SSRF guard (compose uses a private subnet), and a
  // shorter hold. Mapping rules and policies are the demo's own files.
  const demoToml = parseToml(readText('deploy', 'demo', 'firma.toml')) as Record<string, Record<string, unknown>>;
  const sidecarT = demoToml.sidecar as Record<string, Record<string, unknown>>;
  sidecarT.interceptor!.listen = '127.0.0.1:0';
  (sidecarT.interceptor!.mitm as Record<string, unknown>).ca_dir = join(dir, 'certs');
  sidecarT.admin!.listen = '127.0.0.1:0';
  sidecarT.mapping!.rules_paths = [repoPath('deploy', 'demo', 'mappings', '*.toml')];
  sidecarT.policy!.dir = repoPath('deploy', 'demo', 'policies');
  sidecarT.connector!.allow_private = ['127.0.0.1/32'];
  demoToml.audit!.path = join(dir, 'audit', 'audit.jsonl');
  demoToml.audit!.key_dir = join(dir, 'keys');
  demoToml.audit!.stdout = false;
  demoToml.approvals!.timeout_ms = 30_000;
  const file = join(dir, 'firma.toml');
  const text = stringifyToml(demoToml);
  writeFileSync(file, text);
  const config = parseConfigText(text, file, dir);
  // "upstream" (the compose service name the mapping rules use) is this loopback upstream here.
  const lookup: LookupFunction = (hostname, _options, cb) => {
    if (hostname === 'upstream') cb(null, [{ address: '127.0.0.1', family: 4 }]);
    else cb(Object.assign(new Error(`ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), []);
  };
  const adminToken = 'demo-test-admin-token';
  process.env[config.sidecar.admin.token_env] = adminToken;
  const logs: string[] = [];
  const log = createLogger('info', {
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        logs.push(chunk.toString('utf8'));
        cb();
      },
    }),
  });
  const sidecar = await Sidecar.start({ config, log, lookup });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await sidecar.stop();
  };
  t.teardown(stop);
  const adminUrl = `http://127.0.0.1:${sidecar.adminAddress.port}`;

  // The agent, as compose runs it, with the addresses of this test.
  const agent = spawn(process.execPath, [repoPath('deploy', 'demo', 'agent.mjs')], {
    env: {
      ...process.env,
      HTTP_PROXY: `http://127.0.0.1:${sidecar.proxyAddress.port}`,
      DEMO_UPSTREAM_URL: `http://upstream:${upstreamPort}`,
      FIRMA_ADMIN_URL: adminUrl,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const agentOut: string[] = [];
  agent.stdout!.on('data', (c: Buffer) => agentOut.push(c.toString()));
  agent.stderr!.on('data', (c: Buffer) => agentOut.push(c.toString()));
  const exited = new Promise<number | null>((r) => agent.on('exit', (code) => r(code)));

  // Act as the approver while the agent runs: approve whatever is held (the refund).
  let approved = 0;
  let done = false;
  void exited.then(() => {
    done = true;
  });
  for (let i = 0; i < 600 && !done; i++) {
    const res = await fetch(`${adminUrl}/approvals`, { headers: { authorization: `Bearer ${adminToken}` } }).catch(() => null);
    if (res !== null && res.ok) {
      const body = (await res.json()) as { pending?: Array<{ id?: string; approval_id?: string }> };
      for (const p of body.pending ?? []) {
        const id = p.id ?? p.approval_id;
        if (id === undefined) continue;
        const a = await fetch(`${adminUrl}/approvals/${encodeURIComponent(id)}/approve`, {
          method: 'POST',
          headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
          body: '{}',
        });
        if (a.ok) approved++;
      }
    } else if (res !== null) await res.arrayBuffer();
    await new Promise((r) => setTimeout(r, 100));
  }
  const code = await exited;
  const out = agentOut.join('');
  t.equal(code, 0, `agent.mjs exits 0 (every call as expected):\n${out}`);
  t.match(out, /as expected {2}GET \/tickets\/42 +→ 200 from the upstream/, 'allowed: the upstream answered');
  t.match(out, /as expected {2}DELETE \/tickets\/42 +→ 403 deny \(stage policy, reason policy_deny\)/, 'denied by the Cedar forbid');
  t.match(out, /as expected {2}GET \/admin\/export +→ 403 deny \(stage \w+, reason unclassified\)/, 'denied: no mapping rule');
  t.equal(approved, 1, 'the refund was held and approved once through the admin API');
  t.match(out, /POST \/tickets\/42\/refund +→ 200 from the upstream/, 'held, approved, then sent');

  // What reached the upstream: the read, the refund only if approved, never the delete or the unmapped call.
  await new Promise((r) => setTimeout(r, 50));
  const received = upstreamLines.filter((l) => l.startsWith('upstream received'));
  t.ok(received.includes('upstream received GET /tickets/42'), 'upstream saw the allowed read');
  t.notOk(received.some((l) => l.includes('DELETE') || l.includes('/admin')), `denied calls never reached it (${received.join('; ')})`);
  t.ok(received.some((l) => l.includes('/refund')), 'the approved refund reached it');

  // The audit log recorded the decisions.
  await stop();
  const events = readFileSync(config.audit.path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; decision?: string; reason?: string; path?: string });
  const decisions = events.filter((e) => e.type === 'decision').map((e) => `${e.decision}:${e.reason}:${e.path}`);
  t.ok(decisions.includes('allow:allowed:/tickets/42'), `audit: allow (${decisions.join(', ')})`);
  t.ok(decisions.includes('deny:policy_deny:/tickets/42'), 'audit: policy deny');
  t.ok(decisions.includes('deny:unclassified:/admin/export'), 'audit: unclassified deny');
  t.ok(decisions.includes('require_approval:approval_required:/tickets/42/refund'), 'audit: the refund was held');
  t.ok(decisions.includes('allow:approved:/tickets/42/refund'), 'audit: then allowed on approval');
});
