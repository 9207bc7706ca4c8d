/**
 * Every connection state has a bound (docs/listeners.md "Connection bounds"), tried with small
 * configured bounds so each case ends in well under a second:
 *   - a MITM'd tunnel with TLS up and no request, and headers trickled inside a tunnel → 408, closed;
 *   - a CONNECT that never sends a ClientHello, and a TLS handshake stalled after the ClientHello → closed;
 *   - plain HTTP headers trickled → 408 at the bound (it used to take the bound plus Node's 30 s check);
 *   - past max_connections / max_connections_per_client → 503 too_many_connections at once, /healthz fine.
 * Each hit is counted in firma_connection_bounds_total{bound} and logged.
 */
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { startTestSidecar, type TestSidecar } from '../helpers/sidecar.js';
import { useUpstream } from '../helpers/upstream.js';
import { openConnect, tlsThroughProxy } from '../helpers/tunnel.js';
import { parseExposition, valueOf } from '../helpers/prom-text.js';
import type { Test } from '../helpers/expect.js';

const up = useUpstream(t, { tls: true });
const BOUNDS = 'handshake_timeout_ms = 400\nheaders_timeout_ms = 400\nkeep_alive_timeout_ms = 400';

async function sidecar(t: Test, interceptor: string): Promise<TestSidecar> {
  const sc = await startTestSidecar('', { interceptor });
  t.teardown(() => sc.stop());
  return sc;
}

/** Everything the peer sends until it closes; rejects if it stays open past `ms`. */
function untilClosed(s: net.Socket | tls.TLSSocket, ms = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => reject(new Error(`still open after ${ms} ms`)), ms);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => undefined);
    s.once('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
}

async function bounds(sc: TestSidecar, bound: string): Promise<number> {
  const res = await request(`${sc.adminUrl}/metrics`);
  return valueOf(parseExposition(await res.body.text()), 'firma_connection_bounds_total', { bound });
}

function auditReasons(sc: TestSidecar): string[] {
  return readFileSync(join(sc.dir, 'audit', 'audit.jsonl'), 'utf8').trim().split('\n')
    .map((l) => (JSON.parse(l) as { reason?: string }).reason ?? '');
}

/** The bytes of a real ClientHello for `servername`, captured from Node's TLS client. */
function captureClientHello(): Promise<Buffer> {
  return new Promise((resolve) => {
    const server = net.createServer((s) => {
      s.once('data', (chunk: Buffer) => {
        resolve(chunk);
        s.destroy();
        server.close();
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      tls.connect({ host: '127.0.0.1', port, servername: 'upstream.test', rejectUnauthorized: false }).on('error', () => undefined);
    });
  });
}

t.test('inside a MITM tunnel: no request, or headers trickled → 408 and closed at headers_timeout_ms', async (t) => {
  const sc = await sidecar(t, BOUNDS);
  const idle = await tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: sc.caPem });
  t.match(await untilClosed(idle), /^HTTP\/1\.1 408 /, 'TLS up, no request: 408, then closed');

  const trickle = await tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: sc.caPem });
  trickle.write(`GET /echo HTTP/1.1\r\nHost: ${up.hostPort}\r\n`);
  const drip = setInterval(() => trickle.write('X-Slow: 1\r\n'), 50);
  const answer = await untilClosed(trickle);
  clearInterval(drip);
  t.match(answer, /^HTTP\/1\.1 408 /, 'headers trickled: 408, then closed');
  t.ok(auditReasons(sc).includes('request_timeout'), 'recorded in the audit log');
  t.ok(await bounds(sc, 'headers_timeout') >= 2, 'counted');
  t.ok(sc.logs.some((l) => l.includes('"bound":"headers_timeout"')), 'logged');
});

t.test('a CONNECT with no ClientHello, and a handshake stalled after it → closed at handshake_timeout_ms', async (t) => {
  const sc = await sidecar(t, BOUNDS);
  const { socket: silent, head } = await openConnect(sc.proxyPort, up.hostPort);
  t.match(head, /^HTTP\/1\.1 200 /);
  t.equal(await untilClosed(silent), '', 'closed without a byte');

  const hello = await captureClientHello();
  const { socket: stalled } = await openConnect(sc.proxyPort, up.hostPort);
  stalled.write(hello); // and never answer the ServerHello
  await untilClosed(stalled);
  t.pass('the stalled handshake was closed');
  for (let i = 0; i < 100 && !auditReasons(sc).includes('handshake_timeout'); i++) await new Promise((r) => setTimeout(r, 20));
  t.ok(auditReasons(sc).includes('handshake_timeout'), 'recorded in the audit log');
  t.ok(await bounds(sc, 'handshake_timeout') >= 2, 'both counted');
});

t.test('plain HTTP headers trickled → 408 at headers_timeout_ms', async (t) => {
  const sc = await sidecar(t, BOUNDS);
  const s = net.connect(sc.proxyPort, '127.0.0.1');
  s.write(`GET ${up.origin}/echo HTTP/1.1\r\nHost: ${up.hostPort}\r\n`);
  const drip = setInterval(() => s.write('X-Slow: 1\r\n'), 50);
  const answer = await untilClosed(s, 3000);
  clearInterval(drip);
  t.match(answer, /^HTTP\/1\.1 408 /);
});

t.test('past max_connections a new connection gets 503 at once; /healthz still answers', async (t) => {
  const sc = await sidecar(t, 'max_connections = 3');
  const held = await Promise.all([0, 1, 2].map(() => new Promise<net.Socket>((resolve) => {
    const s = net.connect(sc.proxyPort, '127.0.0.1', () => resolve(s));
  })));
  t.teardown(() => held.forEach((s) => s.destroy()));
  await new Promise((r) => setTimeout(r, 50)); // the sidecar has accepted them
  const fourth = net.connect(sc.proxyPort, '127.0.0.1');
  const answer = await untilClosed(fourth);
  t.match(answer, /^HTTP\/1\.1 503 /);
  t.match(answer, /retry-after: 1/i);
  t.match(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)), { reason: 'too_many_connections', stage: 'intercept' });
  const health = await request(`${sc.adminUrl}/healthz`);
  t.equal(health.statusCode, 200, 'the admin listener is not counted');
  await health.body.text();
  t.equal(await bounds(sc, 'max_connections'), 1);

  held[0]?.destroy();
  await new Promise((r) => setTimeout(r, 50));
  const again = net.connect(sc.proxyPort, '127.0.0.1');
  again.write(`GET ${up.origin.replace('https', 'http')}/x HTTP/1.1\r\nHost: ${up.hostPort}\r\nConnection: close\r\n\r\n`);
  t.notMatch(await untilClosed(again), /too_many_connections/, 'a slot freed is used again');
});

t.test('max_connections_per_client bounds one source address', async (t) => {
  const sc = await sidecar(t, 'max_connections = 100\nmax_connections_per_client = 2');
  const held = await Promise.all([0, 1].map(() => new Promise<net.Socket>((resolve) => {
    const s = net.connect(sc.proxyPort, '127.0.0.1', () => resolve(s));
  })));
  t.teardown(() => held.forEach((s) => s.destroy()));
  await new Promise((r) => setTimeout(r, 50));
  const third = await untilClosed(net.connect(sc.proxyPort, '127.0.0.1'));
  t.match(third, /^HTTP\/1\.1 503 [\s\S]*max_connections_per_client/);
  t.equal(await bounds(sc, 'max_connections_per_client'), 1);
});
