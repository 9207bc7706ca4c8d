import t from 'tap';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { CLI, spawnSidecar, writeDecisionFiles, type SidecarProcess } from '../helpers/sidecar.js';
import { upstreamPki } from '../helpers/pki.js';
import { UPSTREAM_NAME, callAndAdminRules } from '../helpers/rules.js';

/**
 * Transparent mode for real, in Linux network namespaces, laid out like a Kubernetes pod:
 *
 *   netns POD (agent + sidecar)                          netns UP (upstream)
 *   ┌─────────────────────────────────────────┐ veth     ┌────────────────────────────┐
 *   │ agent: curl as uid 65534, no proxy env  │──────────│ 10.77.0.2: https 443, 8443 │
 *   │ sidecar: uid 1337, transparent :15001   │ 10.77.0.1│            http 80, 9000   │
 *   │ iptables nat OUTPUT: uid 1337 → RETURN, │          └────────────────────────────┘
 *   │   tcp 80,443,8443 → REDIRECT :15001     │
 *   └─────────────────────────────────────────┘
 *
 * The agent dials the upstream's IP directly; the kernel hands the connection to the sidecar, which
 * MITMs it, decides, audits and dials the upstream itself (its own uid is exempt from the redirect,
 * the Istio pattern). The sidecar runs as uid 1337 with supplementary group 0, which is what lets it
 * read /proc/net/nf_conntrack (0440 root:root) for the original destination port.
 */

const SIDECAR_UID = 1337;
const AGENT_UID = 65534;
const POD_IP = '10.77.0.1';
const UP_IP = '10.77.0.2';
const NAME = UPSTREAM_NAME;
const TRANSPARENT_PORT = 15001;

const RULES = callAndAdminRules(NAME);

const UPSTREAM_SCRIPT = `
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
const [certPath, keyPath, ip] = process.argv.slice(2);
const tlsOpts = { cert: readFileSync(certPath), key: readFileSync(keyPath) };
const handler = (scheme, port) => (req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ upstream: 'netns', scheme, port, path: req.url, host: req.headers.host, from: req.socket.remoteAddress }));
  });
};
const servers = [
  [https.createServer(tlsOpts, handler('https', 443)), 443],
  [https.createServer(tlsOpts, handler('https', 8443)), 8443],
  [http.createServer(handler('http', 80)), 80],
  [http.createServer(handler('http', 9000)), 9000],
];
let listening = 0;
for (const [server, port] of servers) server.listen(port, ip, () => { if (++listening === servers.length) console.log('ready'); });
process.on('SIGTERM', () => process.exit(0));
`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<Run> {
  return new Promise((resolve) =>
    execFile(cmd, args, { encoding: 'utf8', timeout: timeoutMs }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr })));
}

async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Why this test cannot run here, or null. */
async function missingPrerequisite(): Promise<string | null> {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'needs root (ip netns, iptables); run the suite as root';
  if ((await run('ip', ['-V'])).code !== 0) return 'the `ip` command (Debian iproute2) is missing';
  if ((await run('iptables', ['--version'])).code !== 0) return 'the `iptables` command (Debian iptables) is missing; test/setup/ensure-deps.sh installs it';
  if ((await run('setpriv', ['--version'])).code !== 0) return 'the `setpriv` command (util-linux) is missing';
  const probe = `fprobe-${randomBytes(3).toString('hex')}`;
  const added = await run('ip', ['netns', 'add', probe]);
  if (added.code !== 0) return `\`ip netns add\` fails here: ${added.stderr.trim()}`;
  await run('ip', ['netns', 'del', probe]);
  return null;
}

const skip = await missingPrerequisite();
if (skip !== null) {
  t.plan(0, `skip: transparent mode in network namespaces: ${skip}`);
} else {
  await netnsTests();
}

async function netnsTests(): Promise<void> {
  const sfx = randomBytes(3).toString('hex');
  const POD = `firma-pod-${sfx}`;
  const UP = `firma-up-${sfx}`;
  const VPOD = `fvp${sfx}`;
  const VUP = `fvu${sfx}`;
  const etcNetns = join('/etc/netns', POD);
  const work = mkdtempSync(join(tmpdir(), 'firma-netns-'));
  let upstream: ChildProcess | null = null;
  let sidecar: SidecarProcess | null = null;

  // Registered before anything is created, so a failure half-way still removes everything.
  t.teardown(async () => {
    for (const proc of [sidecar?.proc, upstream]) {
      if (proc === undefined || proc === null || proc.exitCode !== null) continue;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await run('ip', ['netns', 'del', POD]);
    await run('ip', ['netns', 'del', UP]);
    rmSync(etcNetns, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  // ------------------------------------------------------------------ topology
  await must('ip', ['netns', 'add', POD]);
  await must('ip', ['netns', 'add', UP]);
  await must('ip', ['link', 'add', VPOD, 'type', 'veth', 'peer', 'name', VUP]);
  await must('ip', ['link', 'set', VPOD, 'netns', POD]);
  await must('ip', ['link', 'set', VUP, 'netns', UP]);
  await must('ip', ['-n', POD, 'addr', 'add', `${POD_IP}/30`, 'dev', VPOD]);
  await must('ip', ['-n', UP, 'addr', 'add', `${UP_IP}/30`, 'dev', VUP]);
  for (const [ns, dev] of [[POD, VPOD], [UP, VUP]] as const) {
    await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await must('ip', ['-n', ns, 'link', 'set', dev, 'up']);
  }
  // The pod's own name resolution (`ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts).
  mkdirSync(etcNetns, { recursive: true });
  writeFileSync(join(etcNetns, 'hosts'), `127.0.0.1 localhost\n${UP_IP} ${NAME}\n`);
  // What the init container of the Kubernetes manifests installs: every TCP connection to 80/443 (and
  // 8443, to show the original port) goes to the sidecar, except the sidecar's own.
  const ipt = (args: string[]): Promise<string> => must('ip', ['netns', 'exec', POD, 'iptables', '-t', 'nat', ...args]);
  await ipt(['-A', 'OUTPUT', '-p', 'tcp', '-m', 'owner', '--uid-owner', String(SIDECAR_UID), '-j', 'RETURN']);
  await ipt(['-A', 'OUTPUT', '-p', 'tcp', '-d', '127.0.0.0/8', '-j', 'RETURN']);
  await ipt(['-A', 'OUTPUT', '-p', 'tcp', '-m', 'multiport', '--dports', '80,443,8443', '-j', 'REDIRECT', '--to-ports', String(TRANSPARENT_PORT)]);

  // ------------------------------------------------------------------ upstream in its own namespace
  const pki = upstreamPki();
  writeFileSync(join(work, 'upstream.mjs'), UPSTREAM_SCRIPT);
  writeFileSync(join(work, 'srv.crt'), pki.certPem);
  writeFileSync(join(work, 'srv.key'), pki.keyPem, { mode: 0o600 });
  const up = spawn('ip', ['netns', 'exec', UP, process.execPath, join(work, 'upstream.mjs'), join(work, 'srv.crt'), join(work, 'srv.key'), UP_IP], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  upstream = up;
  const upErr: string[] = [];
  up.stderr?.on('data', (c: Buffer) => upErr.push(c.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`upstream not ready in 10 s: ${upErr.join('')}`)), 10_000);
    createInterface({ input: up.stdout! }).on('line', (line) => {
      if (line === 'ready') {
        clearTimeout(timer);
        resolve();
      }
    });
    up.once('exit', (code) => reject(new Error(`upstream exited with ${code}: ${upErr.join('')}`)));
  });

  // ------------------------------------------------------------------ sidecar in the pod, uid 1337
  const scDir = join(work, 'sidecar');
  mkdirSync(scDir);
  writeFileSync(join(scDir, 'upstream-ca.pem'), pki.caPem);
  writeFileSync(join(scDir, 'firma.toml'), `
[sidecar]
log_level = "info"
drain_timeout_ms = 1000
[sidecar.interceptor]
listen = "127.0.0.1:0"
transparent_listen = "0.0.0.0:${TRANSPARENT_PORT}"
[sidecar.interceptor.mitm]
ca_dir = "certs"
[sidecar.admin]
listen = "127.0.0.1:0"
[sidecar.connector]
allow_private = ["${UP_IP}/32"]
${writeDecisionFiles(scDir, { rules: RULES })}
`);
  chownTree(scDir, SIDECAR_UID, SIDECAR_UID);
  chmodSync(work, 0o755);
  sidecar = await spawnSidecar(['start', '--config', join(scDir, 'firma.toml')], {
    cwd: scDir,
    env: { NODE_EXTRA_CA_CERTS: join(scDir, 'upstream-ca.pem') },
    prefix: ['ip', 'netns', 'exec', POD, 'setpriv', `--reuid=${SIDECAR_UID}`, `--regid=${SIDECAR_UID}`, '--groups=0'],
  });
  const sc = sidecar;
  // The agent is another user: it may read the CA certificate and nothing else of the sidecar's.
  const agentCa = join(work, 'firma-ca.pem');
  writeFileSync(agentCa, readFileSync(join(scDir, 'certs', 'ca.crt')), { mode: 0o644 });
  const caPem = readFileSync(agentCa, 'utf8');

  /** A command run by the agent: inside the pod, as uid 65534, with no proxy settings at all. */
  const agent = (cmd: string[]): Promise<Run> =>
    run('ip', ['netns', 'exec', POD, 'setpriv', `--reuid=${AGENT_UID}`, `--regid=${AGENT_UID}`, '--clear-groups', 'env', '-i', 'PATH=/usr/bin:/bin', ...cmd]);
  const MARK = '\n__status__';
  const agentCurl = async (args: string[]): Promise<{ status: number; body: string; stderr: string; code: number }> => {
    const r = await agent(['curl', '-sS', '--max-time', '15', '-w', `${MARK}%{http_code}`, ...args]);
    const at = r.stdout.lastIndexOf(MARK);
    return { status: at === -1 ? 0 : Number(r.stdout.slice(at + MARK.length)), body: at === -1 ? r.stdout : r.stdout.slice(0, at), stderr: r.stderr, code: r.code };
  };
  interface Ev {
    type: string;
    request_id: string | null;
    [k: string]: unknown;
  }
  const events = (): Ev[] => {
    const text = readFileSync(join(scDir, 'audit', 'audit.jsonl'), 'utf8').trim();
    return text === '' ? [] : text.split('\n').map((l) => JSON.parse(l) as Ev);
  };
  const waitForEvent = async (pred: (e: Ev) => boolean): Promise<Ev | undefined> => {
    for (let i = 0; i < 100; i++) {
      const found = events().find(pred);
      if (found !== undefined) return found;
      await new Promise((r) => setTimeout(r, 50));
    }
    return undefined;
  };

  t.test('the sidecar runs in the pod with the transparent listener, reading original ports from conntrack', async (t) => {
    const ready = sc.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((o) => o['msg'] === 'firma sidecar ready');
    t.equal(ready?.['transparent'], `0.0.0.0:${TRANSPARENT_PORT}`);
    t.equal(ready?.['transparent_original_port'], 'conntrack');
  });

  t.test('agent HTTPS straight to the upstream IP: redirected, MITM, allowed → 200 with the upstream body', async (t) => {
    const r = await agentCurl(['--cacert', agentCa, '--resolve', `${NAME}:443:${UP_IP}`, `https://${NAME}/v1/items?token=abc`]);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.status, 200);
    const body = JSON.parse(r.body) as Record<string, unknown>;
    t.match(body, { upstream: 'netns', scheme: 'https', port: 443, path: '/v1/items?token=abc', host: NAME });
    t.equal(body['from'], POD_IP, 'the upstream was reached from the pod (by the sidecar)');
    const dec = await waitForEvent((e) => e.type === 'decision' && e['path'] === '/v1/items?token=REDACTED');
    t.match(dec, { decision: 'allow', scheme: 'https', host: NAME, port: 443, kind: 'request', action_class: 'demo.call', agent_id: 'local-agent' });
    const out = await waitForEvent((e) => e.type === 'outcome' && e.request_id === dec?.request_id);
    t.match(out, { status: 200, error: null });
  });

  t.test('agent HTTPS to a denied path → 403 from the sidecar, never reaches the upstream', async (t) => {
    const r = await agentCurl(['--cacert', agentCa, '--resolve', `${NAME}:443:${UP_IP}`, `https://${NAME}/admin/users`]);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.status, 403);
    const body = JSON.parse(r.body) as Record<string, unknown>;
    t.match(body, { decision: 'deny', stage: 'policy' });
    const dec = await waitForEvent((e) => e.request_id === body['request_id']);
    t.match(dec, { type: 'decision', decision: 'deny', scheme: 'https', host: NAME, port: 443, path: '/admin/users', action_class: 'demo.admin' });
    t.notOk(events().some((e) => e.type === 'outcome' && e.request_id === body['request_id']), 'no dispatch');
  });

  t.test('agent plain HTTP to the upstream IP: Host is the target, allowed and denied', async (t) => {
    const ok = await agentCurl(['--resolve', `${NAME}:80:${UP_IP}`, `http://${NAME}/ping`]);
    t.equal(ok.status, 200, ok.stderr);
    t.match(JSON.parse(ok.body), { upstream: 'netns', scheme: 'http', port: 80, path: '/ping' });
    const denied = await agentCurl(['--resolve', `${NAME}:80:${UP_IP}`, `http://${NAME}/admin/x`]);
    t.equal(denied.status, 403);
    t.ok(await waitForEvent((e) => e.type === 'decision' && e['scheme'] === 'http' && e['port'] === 80 && e['path'] === '/admin/x' && e['decision'] === 'deny'));
    // The bare IP as Host: a host like any other, unclassified here, so denied by the mapping stage.
    const byIp = await agentCurl([`http://${UP_IP}/ping`]);
    t.equal(byIp.status, 403);
    t.match(JSON.parse(byIp.body), { stage: 'mapping' });
  });

  t.test('original port: a redirected connection to :8443 is dialled on :8443', async (t) => {
    const r = await agentCurl(['--cacert', agentCa, '--resolve', `${NAME}:8443:${UP_IP}`, `https://${NAME}:8443/alt`]);
    t.equal(r.status, 200, r.stderr);
    t.match(JSON.parse(r.body), { port: 8443, path: '/alt', host: `${NAME}:8443` });
    t.ok(await waitForEvent((e) => e.type === 'decision' && e['port'] === 8443 && e['path'] === '/alt' && e['decision'] === 'allow'));
  });

  t.test('the agent cannot reach the upstream past the sidecar on a redirected port', async (t) => {
    // Whatever name or verification the agent uses, :443 on the upstream IP answers with the sidecar's leaf.
    const script = `const s=require('tls').connect({host:'${UP_IP}',port:443,servername:'${NAME}',rejectUnauthorized:false},()=>{process.stdout.write(s.getPeerCertificate(true).raw.toString('base64'));s.destroy()});s.on('error',e=>{console.error(e.message);process.exit(2)})`;
    const r = await agent([process.execPath, '-e', script]);
    t.equal(r.code, 0, r.stderr);
    const leaf = new X509Certificate(Buffer.from(r.stdout, 'base64'));
    t.ok(leaf.checkIssued(new X509Certificate(caPem)), "the leaf is the sidecar's");
    t.notOk(leaf.checkIssued(new X509Certificate(pki.caPem)), "not the upstream's own");
    // curl -k to the bare IP sends no SNI: the sidecar cannot tell the target and refuses (audited).
    const noSni = await agentCurl(['-k', `https://${UP_IP}/`]);
    t.not(noSni.code, 0, 'refused');
    t.ok(await waitForEvent((e) => e.type === 'decision' && e['reason'] === 'no_sni' && e['port'] === 443), 'no_sni audited');
    // The agent cannot lift the redirect: it has no CAP_NET_ADMIN.
    const flush = await agent(['iptables', '-t', 'nat', '-F']);
    t.not(flush.code, 0, 'iptables refused to the agent');
    // A port that is not redirected goes straight out: that is what a NetworkPolicy must close (README).
    const direct = await agentCurl([`http://${UP_IP}:9000/direct`]);
    t.equal(direct.status, 200);
    t.match(JSON.parse(direct.body), { port: 9000, from: POD_IP });
    t.notOk(events().some((e) => e['path'] === '/direct'), 'not seen by the sidecar');
  });

  t.test('the audit log verifies', async (t) => {
    const r = await run(process.execPath, [CLI, 'audit', 'verify', '--config', join(scDir, 'firma.toml')]);
    t.equal(r.code, 0, r.stdout + r.stderr);
  });

  t.test('without read access to conntrack the port is the protocol default (the documented limitation)', async (t) => {
    const first = sc.proc;
    const exited = new Promise((r) => first.once('exit', r));
    first.kill('SIGTERM');
    await exited;
    // The same sidecar without supplementary group 0: /proc/net/nf_conntrack (0440 root:root) is unreadable.
    const second = await spawnSidecar(['start', '--config', join(scDir, 'firma.toml')], {
      cwd: scDir,
      env: { NODE_EXTRA_CA_CERTS: join(scDir, 'upstream-ca.pem') },
      prefix: ['ip', 'netns', 'exec', POD, 'setpriv', `--reuid=${SIDECAR_UID}`, `--regid=${SIDECAR_UID}`, '--clear-groups'],
    });
    sidecar = second;
    const logged = second.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    t.equal(logged.find((o) => o['msg'] === 'firma sidecar ready')?.['transparent_original_port'], 'protocol_default');
    t.match(logged.find((o) => o['code'] === 'EACCES'), { level: 40, conntrack: '/proc/net/nf_conntrack' }, 'warned, naming why');
    const ok = await agentCurl(['--cacert', agentCa, '--resolve', `${NAME}:443:${UP_IP}`, `https://${NAME}/still`]);
    t.equal(ok.status, 200, ok.stderr);
    const plain = await agentCurl(['--resolve', `${NAME}:80:${UP_IP}`, `http://${NAME}/still`]);
    t.equal(plain.status, 200, plain.stderr);
    // :8443 reaches the sidecar as if it were :443; the Host header (upstream.test:8443) then disagrees.
    const alt = await agentCurl(['--cacert', agentCa, '--resolve', `${NAME}:8443:${UP_IP}`, `https://${NAME}:8443/alt`]);
    t.equal(alt.status, 400);
    t.match(JSON.parse(alt.body), { reason: 'host_mismatch' });
  });
}

function chownTree(dir: string, uid: number, gid: number): void {
  chownSync(dir, uid, gid);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) chownTree(p, uid, gid);
    else chownSync(p, uid, gid);
  }
}
