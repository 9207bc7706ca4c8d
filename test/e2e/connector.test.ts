import t from 'tap';
import net from 'node:net';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ProxyAgent, request } from 'undici';
import { startUpstream, useUpstream } from '../helpers/upstream.js';
import { startTestSidecar } from '../helpers/sidecar.js';
import { curl } from '../helpers/clients.js';

const up = useUpstream(t);
const tlsUp = useUpstream(t, { tls: true });

/** Every file under a folder, recursively (to prove a secret was never written anywhere). */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

t.test('timeouts: no answer → 504; refused port → 502; a long SSE that keeps talking is never cut', async (t) => {
  const sc = await startTestSidecar(`
[[sidecar.connector.hosts]]
host = "${up.hostPort}"
timeout_ms = 1000
`);
  t.teardown(() => sc.stop());
  const hang = await curl(['--proxy', sc.proxyUrl, `${up.origin}/hang`]);
  t.equal(hang.status, 504);
  const body = JSON.parse(hang.body) as Record<string, string>;
  t.equal(body['reason'], 'timeout');
  t.equal(body['stage'], 'connector');
  t.ok(hang.headers['x-firma-request-id']);

  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const refused = await curl(['--proxy', sc.proxyUrl, `http://127.0.0.1:${port}/`]);
  t.equal(refused.status, 502);
  const failed = JSON.parse(refused.body) as Record<string, unknown>;
  t.match(failed, { decision: 'allow', outcome: 'error', error_code: 'ECONNREFUSED', stage: 'connector', reason: 'network' },
    'allowed, then failed: the body says what happened beside the decision');
  t.match(failed['error'], { type: 'api_error', code: 'network', message: /^firma sidecar could not complete this request \(connector: network\)/ });

  // 3 s of events, 100 ms apart, on a host whose timeout is 1 s: the timeout bounds the wait for
  // headers, the idle gap bounds silence, nothing bounds a stream that keeps talking.
  const sse = await curl(['--proxy', sc.proxyUrl, `${up.origin}/sse?n=30&gap=100`]);
  t.equal(sse.exitCode, 0, sse.stderr);
  t.equal(sse.body.match(/^data: /gm)?.length, 30, 'all 30 events over 3 s');
});

t.test('timeout_ms bounds the connect too: an upstream that accepts TCP and never answers the TLS handshake → 504', async (t) => {
  // undici hands out its request controller only once a connected socket takes the request, so the
  // deadline must be enforced without it while the TLS handshake hangs.
  const held = new Set<net.Socket>();
  const mute = net.createServer((socket) => {
    held.add(socket); // accept, then never say a byte
  });
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  const port = (mute.address() as net.AddressInfo).port;
  t.teardown(() => {
    for (const s of held) s.destroy();
    return new Promise<void>((r) => mute.close(() => r()));
  });
  const sc = await startTestSidecar(`
[[sidecar.connector.hosts]]
host = "127.0.0.1:${port}"
timeout_ms = 500
`);
  t.teardown(() => sc.stop());
  const started = Date.now();
  const r = await curl(['--proxy', sc.proxyUrl, '--max-time', '20', '--cacert', sc.caPath, `https://127.0.0.1:${port}/`]);
  const took = Date.now() - started;
  t.equal(r.status, 504, r.stderr);
  t.equal((JSON.parse(r.body) as Record<string, string>)['reason'], 'timeout');
  t.ok(took < 15_000, `answered at the deadline, not at curl's own limit (${took} ms)`);
  t.ok(held.size >= 1, 'the upstream did see the connection');
  t.ok(sc.logs.some((l) => l.includes('"error":"timeout"')), 'logged as a timeout');
});

t.test('idle_timeout_ms cuts a body that goes silent', async (t) => {
  const sc = await startTestSidecar(`
[[sidecar.connector.hosts]]
host = "${up.hostPort}"
idle_timeout_ms = 300
`);
  t.teardown(() => sc.stop());
  const r = await curl(['--proxy', sc.proxyUrl, `${up.origin}/drip?n=3&gap=1000`]);
  t.not(r.exitCode, 0, 'the stream was cut');
  t.equal(r.status, 200, 'after the headers had gone out');
  t.ok(sc.logs.some((l) => l.includes('"error":"timeout"')), 'logged as a timeout');
});

t.test('token bucket: rps 20, burst 5 — 60 requests at once are dispatched at the bucket rate', async (t) => {
  const arrivals: number[] = [];
  const timed = http.createServer((_req, res) => {
    arrivals.push(performance.now());
    res.end('ok');
  });
  await new Promise<void>((r) => timed.listen(0, '127.0.0.1', r));
  const port = (timed.address() as net.AddressInfo).port;
  t.teardown(() => new Promise<void>((r) => timed.close(() => r())));
  const sc = await startTestSidecar(`
[[sidecar.connector.hosts]]
host = "127.0.0.1:${port}"
rps = 20
burst = 5
timeout_ms = 10000
`);
  t.teardown(() => sc.stop());
  const dispatcher = new ProxyAgent({ uri: sc.proxyUrl, proxyTunnel: false, connections: 64 });
  t.teardown(() => dispatcher.close());
  const statuses = await Promise.all(
    Array.from({ length: 60 }, async () => {
      const res = await request(`http://127.0.0.1:${port}/`, { dispatcher });
      await res.body.text();
      return res.statusCode;
    }),
  );
  t.same([...new Set(statuses)], [200], 'every request went through (waits fit in the timeout)');
  arrivals.sort((a, b) => a - b);
  const first = arrivals[0] as number;
  const rel = arrivals.map((a) => a - first);
  // Over any 1 s window no more than rps + burst = 25 dispatched.
  let maxInWindow = 0;
  for (let i = 0; i < rel.length; i++) {
    let j = i;
    while (j < rel.length && (rel[j] as number) - (rel[i] as number) < 1000) j++;
    maxInWindow = Math.max(maxInWindow, j - i);
  }
  t.ok(maxInWindow <= 25, `at most rps + burst in any 1 s window (saw ${maxInWindow})`);
  // 5 at once, then 55 at 20/s: the last goes out ~2.75 s after the first.
  const span = rel[rel.length - 1] as number;
  t.ok(span >= 2500 && span < 4500, `55 after the burst at ~20/s (last after ${span.toFixed(0)} ms)`);
  const sustained = 55 / (span / 1000);
  t.ok(Math.abs(sustained - 20) / 20 < 0.15, `sustained rate ≈ rps (${sustained.toFixed(1)}/s)`);
  t.ok(sc.logs.some((l) => /"waited_ms":\d+/.test(l)), 'waits are logged');
});

t.test('no token within the host timeout → 429 with Retry-After', async (t) => {
  const sc = await startTestSidecar(`
[[sidecar.connector.hosts]]
host = "${up.hostPort}"
rps = 1
burst = 1
timeout_ms = 1
`);
  t.teardown(() => sc.stop());
  // The first request takes the one token (its 1 ms budget may then run out connecting: 504).
  const first = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo`]);
  t.not(first.status, 429, 'the burst token is there');
  const second = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo`]);
  t.equal(second.status, 429);
  t.equal(second.headers['retry-after'], '1');
  const body = JSON.parse(second.body) as Record<string, string>;
  t.equal(body['reason'], 'rate_limited');
  t.match(body['message'], /1\/s, burst 1/);
});

t.test('SSRF guard: every private class is refused with 403 and a reason; allowlisted loopback works', async (t) => {
  const answers: Record<string, { address: string; family: 4 | 6 }> = {
    'rfc1918.test': { address: '10.1.2.3', family: 4 },
    'loopback.test': { address: '127.0.0.1', family: 4 },
    'cgnat.test': { address: '100.64.0.7', family: 4 },
    'linklocal.test': { address: '169.254.10.10', family: 4 },
    'metadata.test': { address: '169.254.169.254', family: 4 },
    'zero.test': { address: '0.0.0.0', family: 4 },
    'multicast.test': { address: '224.0.0.251', family: 4 },
    'mapped.test': { address: '::ffff:127.0.0.1', family: 6 },
    'nat64.test': { address: '64:ff9b::a9fe:a9fe', family: 6 },
    'sixtofour.test': { address: '2002:a00:1::1', family: 6 },
    'v6loop.test': { address: '::1', family: 6 },
    'ula.test': { address: 'fd12:3456::1', family: 6 },
  };
  const lookups: string[] = [];
  const sc = await startTestSidecar('', {
    // Only 127.0.0.1 on the upstream's port is allowed: the name "loopback.test" on another port is not.
    connector: `allow_private = ["127.0.0.1/32:${up.port}", "169.254.169.254/32"]`,
    lookup: ((hostname: string, _opts: unknown, cb: (err: Error | null, addrs: Array<{ address: string; family: number }>) => void) => {
      lookups.push(hostname);
      const a = answers[hostname];
      if (a === undefined) cb(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), []);
      else cb(null, [a]);
    }) as never,
  });
  t.teardown(() => sc.stop());
  for (const [name, a] of Object.entries(answers)) {
    if (name === 'loopback.test') continue;
    const r = await curl(['--proxy', sc.proxyUrl, `http://${name}:${up.port}/echo`]);
    t.equal(r.status, 403, `${name} (${a.address}) refused`);
    const body = JSON.parse(r.body) as Record<string, string>;
    t.equal(body['stage'], 'connector');
    t.match(body['message'], a.address.includes(':') ? /resolved to/ : new RegExp(a.address.replace(/\./g, '\\.')), 'the message names the address');
    if (name === 'metadata.test' || name === 'nat64.test') t.equal(body['reason'], 'metadata_address', 'metadata stays denied though 169.254.169.254/32 is allowlisted');
  }
  const ok = await curl(['--proxy', sc.proxyUrl, `http://loopback.test:${up.port}/echo`]);
  t.equal(ok.status, 200, 'allowlisted address:port passes');
  const otherPort = await curl(['--proxy', sc.proxyUrl, `http://loopback.test:${tlsUp.port}/echo`]);
  t.equal(otherPort.status, 403, 'the same address on a port the rule does not name is refused');
  const missing = await curl(['--proxy', sc.proxyUrl, `http://nx.test:${up.port}/`]);
  t.equal(missing.status, 502, 'a name that does not resolve is unreachable, not denied');
  t.match(missing.body, /ENOTFOUND/);
  // Blind tunnels go through the same guard.
  const tunnelSc = await startTestSidecar('', {
    mitm: 'bypass_hosts = ["rfc1918.test"]',
    lookup: ((hostname: string, _o: unknown, cb: (e: Error | null, a: Array<{ address: string; family: number }>) => void) =>
      cb(null, [answers[hostname] ?? { address: '10.9.9.9', family: 4 }])) as never,
  });
  t.teardown(() => tunnelSc.stop());
  const blind = await curl(['--proxy', tunnelSc.proxyUrl, '--cacert', tunnelSc.caPath, `https://rfc1918.test:${tlsUp.port}/`]);
  t.equal(blind.status, 0, 'curl sees the CONNECT refused');
  t.match(blind.stderr, /403/);
});

t.test('DNS rebinding: one lookup per connection, the vetted address is the one dialled', async (t) => {
  let calls = 0;
  const sc = await startTestSidecar('', {
    connector: `allow_private = ["127.0.0.1/32:${up.port}"]`,
    // First answer is the allowed address; any later lookup would answer a private one.
    lookup: ((_h: string, _o: unknown, cb: (e: Error | null, a: Array<{ address: string; family: number }>) => void) => {
      calls++;
      cb(null, [calls === 1 ? { address: '127.0.0.1', family: 4 } : { address: '10.0.0.1', family: 4 }]);
    }) as never,
  });
  t.teardown(() => sc.stop());
  const r = await curl(['--proxy', sc.proxyUrl, `http://rebind.test:${up.port}/echo`]);
  t.equal(r.status, 200);
  t.equal(calls, 1, 'resolved exactly once for the connection');
  const echo = JSON.parse(r.body) as { headers: Record<string, string> };
  t.equal(echo.headers['host'], `rebind.test:${up.port}`, 'Host keeps the name; the socket went to the vetted IP');
});

t.test('loops to the sidecar itself are refused', async (t) => {
  const sc = await startTestSidecar('', { connector: 'allow_private = ["127.0.0.1/32"]' });
  t.teardown(() => sc.stop());
  const r = await curl(['--proxy', sc.proxyUrl, `http://127.0.0.1:${sc.proxyPort}/`]);
  t.equal(r.status, 403);
  t.equal((JSON.parse(r.body) as Record<string, string>)['reason'], 'loop');
  const admin = await curl(['--proxy', sc.proxyUrl, `${sc.adminUrl}/healthz`]);
  t.equal(admin.status, 403, 'the admin listener too');
});

t.test('credentials from env: injected after allow, exact host only, replacing the agent header, never leaked', async (t) => {
  const secret = `sk-test-${randomBytes(18).toString('hex')}`;
  process.env['FIRMA_TEST_UPSTREAM_KEY'] = secret;
  t.teardown(() => {
    delete process.env['FIRMA_TEST_UPSTREAM_KEY'];
  });
  const sc = await startTestSidecar(`
[[credentials]]
host = "127.0.0.1:${tlsUp.port}"
mode = "basic"
header = "Authorization"
value_from_env = "FIRMA_TEST_UPSTREAM_KEY"
prefix = "Bearer "

[[credentials]]
host = "127.0.0.1:${up.port}"
mode = "basic"
header = "X-Api-Key"
value_from_env = "FIRMA_TEST_UPSTREAM_KEY"
`);
  t.teardown(() => sc.stop());
  const r = await curl(['--proxy', sc.proxyUrl, '--cacert', sc.caPath, '-H', 'Authorization: Bearer agent-own-token', `${tlsUp.origin}/echo`]);
  t.equal(r.status, 200, r.stderr);
  const echo = JSON.parse(r.body) as { headers: Record<string, string>; rawHeaders: string[] };
  t.equal(echo.headers['authorization'], `Bearer ${secret}`, 'the upstream sees the injected credential');
  t.equal(echo.rawHeaders.filter((h) => h.toLowerCase() === 'authorization').length, 1, 'replaced, not added');
  // Plain http to a host whose entry does not say allow_plaintext: nothing injected.
  const plain = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo`]);
  const plainEcho = JSON.parse(plain.body) as { headers: Record<string, string> };
  t.notOk('x-api-key' in plainEcho.headers, 'never injected over plain http without allow_plaintext');
  // Another port on the same host: not the exact host, nothing injected.
  const other = await startUpstream({ tls: true });
  t.teardown(() => other.close());
  const o = await curl(['--proxy', sc.proxyUrl, '--cacert', sc.caPath, `${other.origin}/echo`]);
  t.notOk('authorization' in (JSON.parse(o.body) as { headers: Record<string, string> }).headers, 'other port: no credential');
  t.ok(sc.logs.some((l) => l.includes('"credential_injected":true')), 'the log says a credential was injected');
  // The secret is nowhere the sidecar writes: logs, responses, files.
  t.notOk(sc.logs.some((l) => l.includes(secret)), 'not in any log line');
  t.notOk(plain.body.includes(secret) || o.body.includes(secret), 'not in responses to the agent');
  for (const f of filesUnder(sc.dir)) t.notOk(readFileSync(f).includes(secret), `not in ${f}`);
});

t.test('a basic credential whose environment variable is missing is a startup error naming it', async (t) => {
  await t.rejects(
    startTestSidecar(`
[[credentials]]
host = "api.example.com"
mode = "basic"
value_from_env = "FIRMA_TEST_DEFINITELY_UNSET"
`),
    /the credential for api\.example\.com \(env FIRMA_TEST_DEFINITELY_UNSET\) is .*not set/,
  );
});

t.test('a bypassed (blind) tunnel never fetches a credential it cannot inject: Vault down does not break it', async (t) => {
  const { upstreamPki } = await import('../helpers/pki.js');
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const vaultPort = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const sc = await startTestSidecar(`
[[credentials]]
host = "localhost:${tlsUp.port}"
mode = "vault"
secret_path = "secret/data/x#k"

[vault]
address = "http://127.0.0.1:${vaultPort}"
timeout_ms = 300
`, { mitm: 'bypass_hosts = ["localhost"]' });
  t.teardown(() => sc.stop());
  const r = await curl(['--proxy', sc.proxyUrl, '--cacert', upstreamPki().caPath, `https://localhost:${tlsUp.port}/echo`]);
  t.equal(r.status, 200, `tunnelled blind although Vault is unreachable: ${r.stderr}`);
  t.notOk('authorization' in (JSON.parse(r.body) as { headers: Record<string, string> }).headers, 'nothing injected');
});
