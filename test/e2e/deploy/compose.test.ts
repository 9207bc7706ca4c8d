/**
 * docker-compose.yml agrees with deploy/demo/firma.toml. Docker has no engine here and no compose
 * plugin: the file is parsed with the `yaml` package (and `docker compose config` is used as well when
 * the plugin exists).
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join, posix } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../../src/config/index.js';
import { REPO } from '../../helpers/sidecar.js';
import { type Obj, arr, caExportEnvNames, demoConfigFile, hasCommand, inSubnet, obj, optArr, readText, repoPath, run, str } from '../../helpers/deploy.js';

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
