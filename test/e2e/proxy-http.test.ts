import t from 'tap';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProxyAgent, request } from 'undici';
import { useUpstream } from '../helpers/upstream.js';
import { REPO, useTestSidecar } from '../helpers/sidecar.js';
import { curl, python } from '../helpers/clients.js';
import { openConnect, exchange } from '../helpers/tunnel.js';

const up = useUpstream(t);
const sc = useTestSidecar(t);

/** Send raw bytes to the proxy port and collect everything until it closes. */
function raw(port: number, data: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(data));
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.on('error', reject);
    s.setTimeout(5000, () => {
      s.destroy();
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
}

function jsonBody(text: string): Record<string, unknown> {
  return JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
}

t.test('curl: plain HTTP through the proxy reaches the upstream', async (t) => {
  const r = await curl(['--proxy', sc.proxyUrl, '-H', 'X-Agent-Header: kept', `${up.origin}/echo?q=1`]);
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.status, 200);
  t.equal(r.headers['x-upstream'], 'echo');
  const echo = JSON.parse(r.body) as { method: string; url: string; headers: Record<string, string> };
  t.equal(echo.method, 'GET');
  t.equal(echo.url, '/echo?q=1', 'origin-form path and query forwarded unchanged');
  t.equal(echo.headers['x-agent-header'], 'kept');
  t.equal(echo.headers['host'], up.hostPort, 'Host names the upstream');
});

t.test('Proxy-Authorization and hop-by-hop headers never reach the upstream', async (t) => {
  const r = await curl([
    '--proxy', `http://agent-7:secret-token-value@127.0.0.1:${sc.proxyPort}`,
    '-H', 'Connection: keep-alive, X-Hop',
    '-H', 'X-Hop: drop-me',
    '-H', 'Keep-Alive: timeout=5',
    '-H', 'TE: trailers',
    '-H', 'Proxy-Connection: keep-alive',
    `${up.origin}/echo`,
  ]);
  t.equal(r.status, 200, r.stderr);
  const echo = JSON.parse(r.body) as { headers: Record<string, string> };
  for (const h of ['proxy-authorization', 'x-hop', 'keep-alive', 'te', 'proxy-connection']) {
    t.notOk(h in echo.headers, `${h} not forwarded`);
  }
  t.notMatch(r.body, /secret-token-value/);
  t.notOk(sc.logs.some((l) => l.includes('secret-token-value')), 'token never logged');
  t.ok(sc.logs.some((l) => l.includes('"agent_id":"agent-7"')), 'agent id from Proxy-Authorization is logged');
});

t.test('upstream status, reason and headers pass through unchanged (any status)', async (t) => {
  for (const code of [201, 404, 418, 500, 503]) {
    const r = await curl(['--proxy', sc.proxyUrl, `${up.origin}/status/${code}`]);
    t.equal(r.status, code);
    t.equal(r.headers['x-upstream'], 'status');
    t.equal(r.headers['set-cookie'], 'a=1; Path=/, b=2; Path=/', 'both Set-Cookie headers');
    t.equal(r.body, `status ${code}\n`);
    t.notOk('x-firma-request-id' in r.headers, 'upstream responses are not decorated');
  }
});

t.test('request bodies stream upstream intact (5 MiB upload, chunked and sized)', async (t) => {
  const body = randomBytes(5 * 1024 * 1024);
  const file = join(sc.dir, 'upload.bin');
  writeFileSync(file, body);
  const sha = createHash('sha256').update(body).digest('hex');
  const sized = await curl(['--proxy', sc.proxyUrl, '--data-binary', `@${file}`, `${up.origin}/echo`]);
  t.equal(sized.status, 200, sized.stderr);
  const echo1 = JSON.parse(sized.body) as { bodyBytes: number; bodySha256: string };
  t.equal(echo1.bodyBytes, body.length);
  t.equal(echo1.bodySha256, sha);
  const chunked = await curl(['--proxy', sc.proxyUrl, '-H', 'Transfer-Encoding: chunked', '--data-binary', `@${file}`, `${up.origin}/echo`]);
  const echo2 = JSON.parse(chunked.body) as { bodyBytes: number; bodySha256: string; headers: Record<string, string> };
  t.equal(echo2.bodySha256, sha, 'chunked upload arrives intact');
  t.equal(echo2.headers['transfer-encoding'], 'chunked', 'sent upstream chunked, unbuffered');
});

t.test('Node undici ProxyAgent over plain HTTP: CONNECT-tunnelled (its default) and absolute-form', async (t) => {
  for (const proxyTunnel of [true, false]) {
    const dispatcher = new ProxyAgent({ uri: sc.proxyUrl, proxyTunnel });
    const res = await request(`${up.origin}/echo`, { dispatcher, method: 'PUT', body: 'hello' });
    t.equal(res.statusCode, 200, `proxyTunnel=${proxyTunnel}`);
    const echo = (await res.body.json()) as { method: string; bodyBytes: number; headers: Record<string, string> };
    t.equal(echo.method, 'PUT');
    t.equal(echo.bodyBytes, 5);
    t.equal(echo.headers['host'], up.hostPort);
    await dispatcher.close();
  }
});

t.test('plain HTTP inside a CONNECT tunnel is enforced per request, to the CONNECT target only', async (t) => {
  const { socket, head } = await openConnect(sc.proxyPort, up.hostPort);
  t.match(head, /^HTTP\/1\.1 200/);
  const res = await exchange(socket, 'GET /echo HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n');
  t.match(res, /^HTTP\/1\.1 400 /);
  t.match(res, /host_mismatch/);
});

t.test('Host header that differs from the absolute URL is a 400 with a JSON body', async (t) => {
  const r = await curl(['--proxy', sc.proxyUrl, '-H', 'Host: evil.example', `${up.origin}/echo`]);
  t.equal(r.status, 400);
  t.ok(r.headers['x-firma-request-id'], 'x-firma-request-id header');
  const body = JSON.parse(r.body) as Record<string, string>;
  t.equal(body['decision'], 'deny');
  t.equal(body['stage'], 'intercept');
  t.equal(body['reason'], 'host_mismatch');
  t.equal(body['request_id'], r.headers['x-firma-request-id']);
});

t.test('origin-form requests to the proxy port and https:// absolute-form are refused with 400', async (t) => {
  const direct = await raw(sc.proxyPort, 'GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  t.match(direct, /^HTTP\/1\.1 400 /);
  t.equal(jsonBody(direct)['reason'], 'not_a_proxy_request');
  const https = await raw(sc.proxyPort, `GET https://127.0.0.1:${up.port}/echo HTTP/1.1\r\nHost: 127.0.0.1:${up.port}\r\n\r\n`);
  t.equal(jsonBody(https)['reason'], 'use_connect');
  const userinfo = await raw(sc.proxyPort, `GET http://user:pw@127.0.0.1:${up.port}/ HTTP/1.1\r\nHost: 127.0.0.1:${up.port}\r\n\r\n`);
  t.equal(jsonBody(userinfo)['reason'], 'bad_request_target');
  const badHost = await raw(sc.proxyPort, 'GET http://../../x/ HTTP/1.1\r\nHost: ../../x\r\n\r\n');
  t.equal(jsonBody(badHost)['reason'], 'bad_host');
});

t.test('malformed requests get a 400 JSON answer and the sidecar keeps serving', async (t) => {
  const garbage = await raw(sc.proxyPort, 'THIS IS NOT HTTP\r\n\r\n');
  t.match(garbage, /^HTTP\/1\.1 400 /);
  const body = jsonBody(garbage);
  t.equal(body['reason'], 'malformed_request');
  t.type(body['request_id'], 'string');
  const smuggle = await raw(
    sc.proxyPort,
    `POST ${up.origin}/echo HTTP/1.1\r\nHost: ${up.hostPort}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
  );
  t.match(smuggle, /^HTTP\/1\.1 400 /, 'CL + TE together is rejected');
  const huge = await raw(sc.proxyPort, `GET ${up.origin}/echo HTTP/1.1\r\nHost: ${up.hostPort}\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
  t.match(huge, /^HTTP\/1\.1 431 /);
  const bad = await raw(sc.proxyPort, 'GET http://127.0.0.1:1/ HTTP/1.1\r\nProxy-Authorization: Bearer x\r\nHost: 127.0.0.1:1\r\n\r\n');
  t.match(bad, /^HTTP\/1\.1 407 /, 'non-Basic Proxy-Authorization → 407');
  t.match(bad, /proxy-authenticate: Basic realm="firma"/i);
  const noHost = await raw(sc.proxyPort, `GET ${up.origin}/echo HTTP/1.1\r\nConnection: close\r\n\r\n`);
  t.match(noHost, /^HTTP\/1\.1 400 /, 'HTTP/1.1 without Host → 400');
  t.match(noHost, /x-firma-request-id: /i);
  t.equal(jsonBody(noHost)['reason'], 'missing_host', 'our JSON answer, not Node\'s bare 400');
  const before = up.requests();
  const twoHosts = await raw(sc.proxyPort, `GET ${up.origin}/echo HTTP/1.1\r\nHost: ${up.hostPort}\r\nHost: ${up.hostPort}\r\n\r\n`);
  t.match(twoHosts, /^HTTP\/1\.1 400 /, 'two Host headers → 400, even when both name the target');
  t.equal(jsonBody(twoHosts)['reason'], 'duplicate_host');
  t.equal(up.requests(), before, 'nothing sent upstream');
  t.ok(sc.logs.some((l) => l.includes('"reason":"duplicate_host"')), 'logged');
  const http10 = await raw(sc.proxyPort, `GET ${up.origin}/echo HTTP/1.0\r\n\r\n`);
  t.match(http10, /^HTTP\/1\.[01] 200 /, 'HTTP/1.0 without Host: the absolute URI names the target');
  const ok = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo`]);
  t.equal(ok.status, 200, 'still serving');
});

t.test('unreachable upstream → 502 JSON; internal error text never leaks', async (t) => {
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const r = await curl(['--proxy', sc.proxyUrl, `http://127.0.0.1:${port}/`]);
  t.equal(r.status, 502);
  const body = JSON.parse(r.body) as Record<string, string>;
  t.equal(body['stage'], 'connector');
  t.equal(body['reason'], 'network');
  t.match(body['message'], /ECONNREFUSED/);
  t.notMatch(r.body, /at .*\.js:\d+/, 'no stack trace');
});

t.test('Python requests POST through the proxy: the README’s NoDelay adapter sets TCP_NODELAY on the proxy connection', async (t) => {
  // The README's own snippet, so the documented fix is the tested one.
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const snippet = /\*\*Python `requests` and Nagle\.\*\*[\s\S]*?```python\n([\s\S]*?)```/.exec(readme)?.[1];
  t.ok(snippet !== undefined, 'the README has the snippet');
  const script = `${snippet}
import json, urllib3.connection
seen = []
original = urllib3.connection.HTTPConnection._new_conn
def recording(self):
    sock = original(self)
    seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return sock
urllib3.connection.HTTPConnection._new_conn = recording
proxies = {"http": "${sc.proxyUrl}"}
plain = requests.Session().post("${up.origin}/echo", data=b"x" * 100, proxies=proxies)
fixed = session.post("${up.origin}/echo", data=b"x" * 100, proxies=proxies)
print(json.dumps({"status": [plain.status_code, fixed.status_code], "nodelay": [1 if v else 0 for v in seen], "bytes": fixed.json()["bodyBytes"]}))
`;
  const r = await python(script, {});
  t.equal(r.exitCode, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { status: number[]; nodelay: number[]; bytes: number };
  t.same(out.status, [200, 200]);
  t.equal(out.bytes, 100, 'the body went through');
  t.same(out.nodelay, [0, 1], 'a plain Session leaves Nagle on for the proxy connection; the adapter turns it off');
});
