import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { useUpstream } from '../helpers/upstream.js';
import { useTestSidecar } from '../helpers/sidecar.js';
import { curl } from '../helpers/clients.js';
import { exchange } from '../helpers/tunnel.js';
import type { LookupFunction } from '../../src/connector/ssrf/resolve.js';
import { findOriginalDestination, canonicalIp } from '../../src/intercept/transparent/original-dst.js';
import { UPSTREAM_NAME, callAndAdminRules } from '../helpers/rules.js';

/**
 * The transparent listener on loopback, without any redirect: clients connect to it directly, as an
 * iptables REDIRECT would make them. Nothing is rewritten here, so the kernel has no original port to
 * tell; the test hands the sidecar one (`originalDestination`), the way the conntrack lookup would.
 * The real redirect is proven in transparent-netns.test.ts.
 */

const NAME = UPSTREAM_NAME;
const RULES = `${callAndAdminRules(NAME)}
[[rules]]
host = "bypassed.test"
action_class = "demo.bypassed"
risk = "low"
`;

/** upstream.test and bypassed.test are 127.0.0.1; everything else does not resolve. */
const lookup: LookupFunction = (hostname, _opts, cb) => {
  if (hostname === NAME || hostname === 'bypassed.test') cb(null, [{ address: '127.0.0.1', family: 4 }]);
  else cb(Object.assign(new Error(`ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), []);
};

/** The port the fake kernel reports for the next connections (null: unknown). */
let originalPort: number | null = null;
const httpsUp = useUpstream(t, { tls: true });
const httpUp = useUpstream(t);
const sc = useTestSidecar(t, '', {
  rules: RULES,
  transparent: true,
  lookup,
  mitm: 'bypass_hosts = ["bypassed.test"]',
  originalDestination: async () => (originalPort === null ? null : { address: '127.0.0.1', port: originalPort }),
});

interface Ev {
  type: string;
  request_id: string | null;
  [k: string]: unknown;
}

function events(): Ev[] {
  return readFileSync(join(sc.dir, 'audit', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Ev);
}

/** Outcome events are written when the response has been streamed: wait for one, bounded. */
async function waitForEvent(pred: (e: Ev) => boolean): Promise<Ev | undefined> {
  for (let i = 0; i < 100; i++) {
    const found = events().find(pred);
    if (found !== undefined) return found;
    await new Promise((r) => setTimeout(r, 20));
  }
  return undefined;
}

function tlsToTransparent(servername: string | null): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port: sc.transparentPort!,
      ca: sc.caPem,
      // No servername on an IP host: Node then sends no SNI at all.
      ...(servername !== null ? { servername } : { checkServerIdentity: () => undefined }),
      ALPNProtocols: ['http/1.1'],
    });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
    s.once('close', () => reject(new Error('closed before the handshake completed')));
  });
}

/** The JSON object in a response (its body may be chunked: the object is taken from its braces). */
function bodyOf(response: string): Record<string, unknown> {
  const body = response.slice(response.indexOf('\r\n\r\n') + 4);
  return JSON.parse(body.slice(body.indexOf('{'), body.lastIndexOf('}') + 1)) as Record<string, unknown>;
}

t.test('the listener is on and named in the ready line', async (t) => {
  t.type(sc.transparentPort, 'number');
  const ready = sc.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((o) => o['msg'] === 'firma sidecar ready');
  t.equal(ready?.['transparent'], `127.0.0.1:${sc.transparentPort}`);
  t.equal(ready?.['transparent_original_port'], 'custom');
});

t.test('TLS: SNI is the target, MITM with a leaf for it signed by the sidecar CA, policy applies', async (t) => {
  originalPort = httpsUp.port;
  const s = await tlsToTransparent(NAME);
  t.equal(s.authorized, true, 'leaf verifies against the sidecar CA');
  t.equal(s.alpnProtocol, 'http/1.1');
  const leaf = s.getPeerX509Certificate()!;
  t.ok(leaf.checkHost(NAME), 'leaf names the SNI host');
  t.ok(leaf.checkIssued(new X509Certificate(sc.caPem)), 'issued by the sidecar CA');
  const ok = await exchange(s, `GET /echo?q=1 HTTP/1.1\r\nHost: ${NAME}:${httpsUp.port}\r\nConnection: close\r\n\r\n`);
  t.match(ok, /^HTTP\/1\.1 200 /);
  const echo = bodyOf(ok) as { url: string; headers: Record<string, string> };
  t.equal(echo.url, '/echo?q=1');
  t.equal(echo.headers['host'], `${NAME}:${httpsUp.port}`, 'upstream sees the host it was asked for');

  const s2 = await tlsToTransparent(NAME);
  const denied = await exchange(s2, `GET /admin/users HTTP/1.1\r\nHost: ${NAME}:${httpsUp.port}\r\nConnection: close\r\n\r\n`);
  t.match(denied, /^HTTP\/1\.1 403 /);
  const body = bodyOf(denied);
  t.match(body, { decision: 'deny', stage: 'policy' });
  t.match(denied, /x-firma-request-id: /i);

  // Events reach the file asynchronously: wait for the last one before reading them all.
  t.ok(await waitForEvent((e) => e.request_id === body['request_id']), 'deny recorded');
  const decisions = events().filter((e) => e.type === 'decision' && e['host'] === NAME && e['scheme'] === 'https');
  t.match(decisions, [
    { decision: 'allow', port: httpsUp.port, path: '/echo?q=REDACTED', action_class: 'demo.call', agent_id: 'local-agent' },
    { decision: 'deny', port: httpsUp.port, path: '/admin/users', action_class: 'demo.admin', request_id: body['request_id'] },
  ]);
  const outcome = await waitForEvent((e) => e.type === 'outcome' && e.request_id === decisions[0]?.request_id);
  t.match(outcome, { status: 200, error: null }, 'outcome of the allowed request recorded');
});

t.test('TLS: real curl, redirected-style (connects to the listener, SNI and Host name the upstream)', async (t) => {
  originalPort = httpsUp.port;
  const r = await curl(['--cacert', sc.caPath, '--connect-to', `${NAME}:${httpsUp.port}:127.0.0.1:${sc.transparentPort}`,
    `https://${NAME}:${httpsUp.port}/echo`]);
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.status, 200);
  const denied = await curl(['--cacert', sc.caPath, '--connect-to', `${NAME}:${httpsUp.port}:127.0.0.1:${sc.transparentPort}`,
    `https://${NAME}:${httpsUp.port}/admin/x`]);
  t.equal(denied.status, 403);
  t.equal((JSON.parse(denied.body) as { stage: string }).stage, 'policy');
});

t.test('TLS without SNI: refused (connection closed) and audited with the reason', async (t) => {
  originalPort = httpsUp.port;
  const before = httpsUp.requests();
  await t.rejects(tlsToTransparent(null));
  const ev = await waitForEvent((e) => e.type === 'decision' && e['reason'] === 'no_sni');
  t.match(ev, { decision: 'deny', stage: 'intercept', scheme: 'https', port: httpsUp.port, agent_id: 'local-agent' });
  t.ok(sc.logs.some((l) => l.includes('"reason":"no_sni"')), 'logged');
  t.equal(httpsUp.requests(), before, 'nothing sent upstream');
});

t.test('TLS with an SNI that is not a valid host name: refused and audited', async (t) => {
  await t.rejects(tlsToTransparent('bad..name'));
  const ev = await waitForEvent((e) => e.type === 'decision' && e['reason'] === 'bad_sni');
  t.ok(ev, 'bad_sni recorded');
});

t.test('TLS with no known original port: 443 is assumed, so a Host naming another port is refused', async (t) => {
  originalPort = null;
  const s = await tlsToTransparent(NAME);
  const res = await exchange(s, `GET /echo HTTP/1.1\r\nHost: ${NAME}:${httpsUp.port}\r\nConnection: close\r\n\r\n`);
  t.match(res, /^HTTP\/1\.1 400 /);
  t.equal(bodyOf(res)['reason'], 'host_mismatch');
  const s2 = await tlsToTransparent(NAME);
  const res2 = await exchange(s2, `GET /echo HTTP/1.1\r\nHost: ${NAME}\r\nConnection: close\r\n\r\n`);
  // Nothing listens on 127.0.0.1:443 here: the sidecar dialled upstream.test:443 and could not connect.
  t.match(res2, /^HTTP\/1\.1 502 /, 'dialled upstream.test:443');
  t.ok(await waitForEvent((e) => e.type === 'decision' && e['host'] === NAME && e['port'] === 443 && e['decision'] === 'allow'));
});

t.test('plain HTTP: the Host header is the target; policy applies; several requests on one connection', async (t) => {
  originalPort = httpUp.port;
  const r = await curl(['--connect-to', `${NAME}:${httpUp.port}:127.0.0.1:${sc.transparentPort}`,
    `http://${NAME}:${httpUp.port}/echo`, `http://${NAME}:${httpUp.port}/admin/x`]);
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.status, 403, 'second request denied');
  t.match(r.body, /"url":"\/echo"/, 'first request reached the upstream');
  t.ok(await waitForEvent((e) => e.type === 'decision' && e['path'] === '/admin/x' && e['scheme'] === 'http'), 'deny recorded');
  const decisions = events().filter((e) => e.type === 'decision' && e['host'] === NAME && e['scheme'] === 'http');
  t.match(decisions, [{ decision: 'allow', port: httpUp.port, path: '/echo' }, { decision: 'deny', path: '/admin/x' }]);
});

t.test('plain HTTP: missing Host → 400 + audit; Host on another port than dialled → 400', async (t) => {
  originalPort = httpUp.port;
  const before = httpUp.requests();
  for (const version of ['1.1', '1.0']) {
    const s = net.connect(sc.transparentPort!, '127.0.0.1');
    const res = await exchange(s, `GET /echo HTTP/${version}\r\nConnection: close\r\n\r\n`);
    t.match(res, /^HTTP\/1\.1 400 /, `HTTP/${version}`);
    const body = bodyOf(res);
    t.equal(body['reason'], 'missing_host');
    const ev = await waitForEvent((e) => e.request_id === body['request_id']);
    t.match(ev, { type: 'decision', decision: 'deny', stage: 'intercept', reason: 'missing_host' }, 'audited');
  }
  const s = net.connect(sc.transparentPort!, '127.0.0.1');
  const res = await exchange(s, `GET /echo HTTP/1.1\r\nHost: ${NAME}:1\r\nConnection: close\r\n\r\n`);
  t.equal(bodyOf(res)['reason'], 'host_mismatch');
  const s2 = net.connect(sc.transparentPort!, '127.0.0.1');
  const res2 = await exchange(s2, `GET /echo HTTP/1.1\r\nHost: bad..host\r\nConnection: close\r\n\r\n`);
  t.equal(bodyOf(res2)['reason'], 'bad_host');
  t.equal(httpUp.requests(), before, 'nothing sent upstream');
});

t.test('plain HTTP: a WebSocket upgrade is decided on and relayed like any request', async (t) => {
  originalPort = httpUp.port;
  const upgrade = (host: string): string =>
    `GET /ws HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
  const head = await new Promise<string>((resolve, reject) => {
    const s = net.connect(sc.transparentPort!, '127.0.0.1', () => s.write(upgrade(`${NAME}:${httpUp.port}`)));
    s.once('data', (c: Buffer) => {
      resolve(c.toString('latin1'));
      s.destroy();
    });
    s.once('error', reject);
  });
  t.match(head, /^HTTP\/1\.1 101 /);
  t.ok(await waitForEvent((e) => e.type === 'decision' && e['kind'] === 'websocket' && e['host'] === NAME && e['decision'] === 'allow'));
  const missing = await exchange(net.connect(sc.transparentPort!, '127.0.0.1'), upgrade('').replace('Host: \r\n', ''));
  t.match(missing, /^HTTP\/1\.1 400 /);
  t.match(missing, /missing_host/);
});

t.test('neither TLS nor HTTP → 400 not_tls', async (t) => {
  const s = net.connect(sc.transparentPort!, '127.0.0.1');
  const res = await exchange(s, 'SSH-2.0-OpenSSH_9.2\r\n');
  t.match(res, /^HTTP\/1\.1 400 /);
  t.equal(bodyOf(res)['reason'], 'not_tls');
});

t.test('a bypassed SNI is tunnelled blind to SNI:port after the host-level decision', async (t) => {
  originalPort = httpsUp.port;
  // The upstream's own certificate (no MITM) does not name bypassed.test, so verify against it by hand.
  const s = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port: sc.transparentPort!, servername: 'bypassed.test', rejectUnauthorized: false });
    c.once('secureConnect', () => resolve(c));
    c.once('error', reject);
  });
  const leaf = s.getPeerX509Certificate()!;
  t.notOk(leaf.checkIssued(new X509Certificate(sc.caPem)), 'not the sidecar CA: the upstream answered itself');
  t.ok(leaf.checkHost('upstream.test'), "the upstream's own certificate");
  const res = await exchange(s, `GET /echo HTTP/1.1\r\nHost: bypassed.test\r\nConnection: close\r\n\r\n`);
  t.match(res, /^HTTP\/1\.1 200 /);
  const ev = await waitForEvent((e) => e.type === 'decision' && e['host'] === 'bypassed.test');
  t.match(ev, { decision: 'allow', kind: 'tunnel', port: httpsUp.port, action_class: 'demo.bypassed' });
});

t.test('loop guard: a redirected connection whose target is the transparent listener itself is refused', async (t) => {
  originalPort = sc.transparentPort;
  const s = net.connect(sc.transparentPort!, '127.0.0.1');
  const res = await exchange(s, `GET /echo HTTP/1.1\r\nHost: ${NAME}:${sc.transparentPort}\r\nConnection: close\r\n\r\n`);
  t.match(res, /^HTTP\/1\.1 403 /);
  t.match(bodyOf(res), { stage: 'connector' });
});

t.test('conntrack parsing: reply tuple → original destination', async (t) => {
  const table = [
    'ipv4     2 tcp      6 431999 ESTABLISHED src=10.199.7.1 dst=10.199.7.2 sport=50710 dport=8443 src=127.0.0.1 dst=10.199.7.1 sport=15001 dport=50710 [ASSURED] mark=0 zone=0 use=2',
    'ipv4     2 tcp      6 117 SYN_SENT src=10.0.0.5 dst=10.0.0.9 sport=40000 dport=80 [UNREPLIED] src=10.0.0.9 dst=10.0.0.5 sport=80 dport=40000 mark=0 use=1',
    'ipv4     2 tcp      6 431999 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=40001 dport=15001 src=127.0.0.1 dst=127.0.0.1 sport=15001 dport=40001 [ASSURED] mark=0 use=1',
    'ipv6     10 tcp      6 431999 ESTABLISHED src=fd00:0000:0000:0000:0000:0000:0000:0001 dst=fd00:0000:0000:0000:0000:0000:0000:0002 sport=50000 dport=443 src=0000:0000:0000:0000:0000:0000:0000:0001 dst=fd00:0000:0000:0000:0000:0000:0000:0001 sport=15001 dport=50000 [ASSURED] mark=0 use=2',
    'ipv4     2 udp      17 29 src=10.199.7.1 dst=10.199.7.2 sport=50711 dport=53 src=127.0.0.1 dst=10.199.7.1 sport=15001 dport=50711 mark=0 use=1',
  ].join('\n') + '\n';
  t.same(findOriginalDestination(table, { address: '127.0.0.1', port: 15001 }, { address: '10.199.7.1', port: 50710 }), { address: '10.199.7.2', port: 8443 });
  t.same(findOriginalDestination(table, { address: '::ffff:127.0.0.1', port: 15001 }, { address: '::ffff:10.199.7.1', port: 50710 }),
    { address: '10.199.7.2', port: 8443 }, 'IPv4 seen through a dual-stack socket');
  t.same(findOriginalDestination(table, { address: '::1', port: 15001 }, { address: 'fd00::1', port: 50000 }), { address: 'fd00::2', port: 443 }, 'IPv6');
  t.equal(findOriginalDestination(table, { address: '127.0.0.1', port: 15001 }, { address: '127.0.0.1', port: 40001 }), null, 'not rewritten: a direct connection');
  t.equal(findOriginalDestination(table, { address: '127.0.0.1', port: 15001 }, { address: '10.199.7.1', port: 50711 }), null, 'udp ignored');
  t.equal(findOriginalDestination(table, { address: '127.0.0.1', port: 15001 }, { address: '10.199.7.9', port: 50710 }), null, 'another client');
  t.equal(findOriginalDestination('', { address: '127.0.0.1', port: 15001 }, { address: '10.199.7.1', port: 50710 }), null);
  t.equal(canonicalIp('0000:0000:0000:0000:0000:ffff:0a00:0001'), '10.0.0.1');
  t.equal(canonicalIp('not-an-ip'), null);
});
