/**
 * The iptables init script, run for real in network namespaces: it redirects an agent UID's TCP 80/443
 * to the transparent port and leaves the sidecar UID alone; it refuses bad settings.
 */
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { loadConfig } from '../../../src/config/index.js';
import { REPO } from '../../helpers/sidecar.js';
import { containersOf, envValue, findKind, k8sConfigFile, k8sDocuments, netnsSkip, podSpec, repoPath, run, securityContext } from '../../helpers/deploy.js';

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
