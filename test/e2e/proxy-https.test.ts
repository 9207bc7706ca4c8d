import t from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { dirname, join } from 'node:path';
import { ProxyAgent, request } from 'undici';
import { useUpstream } from '../helpers/upstream.js';
import { useTestSidecar } from '../helpers/sidecar.js';
import { curl, python } from '../helpers/clients.js';
import { openConnect, tlsThroughProxy, exchange } from '../helpers/tunnel.js';
import { upstreamPki } from '../helpers/pki.js';

const up = useUpstream(t, { tls: true });
// localhost is tunnelled blind; 127.0.0.1 is intercepted.
const sc = useTestSidecar(t, '', { mitm: 'bypass_hosts = ["localhost"]' });

function bodyOf(response: string): Record<string, unknown> {
  return JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
}

t.test('curl: HTTPS through CONNECT, MITM with the sidecar CA', async (t) => {
  const r = await curl(['--proxy', sc.proxyUrl, '--cacert', sc.caPath, '-H', 'X-Kept: 1', `${up.origin}/echo?x=y`]);
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.status, 200);
  const echo = JSON.parse(r.body) as { url: string; headers: Record<string, string> };
  t.equal(echo.url, '/echo?x=y');
  t.equal(echo.headers['x-kept'], '1');
  t.notOk('proxy-authorization' in echo.headers);
  // Without the sidecar CA the client must refuse: proves the leaf is the sidecar's, not the upstream's.
  const untrusted = await curl(['--proxy', sc.proxyUrl, '--cacert', upstreamPki().caPath, `${up.origin}/echo`]);
  t.not(untrusted.exitCode, 0, 'upstream CA alone does not verify the MITM leaf');
});

t.test('Node undici ProxyAgent over HTTPS (agent identity in the proxy URL)', async (t) => {
  const dispatcher = new ProxyAgent({
    uri: `http://node-agent:tok3n-abc@127.0.0.1:${sc.proxyPort}`,
    requestTls: { ca: sc.caPem },
  });
  const res = await request(`${up.origin}/echo`, { dispatcher, method: 'POST', body: JSON.stringify({ a: 1 }) });
  t.equal(res.statusCode, 200);
  const echo = (await res.body.json()) as { method: string; bodyBytes: number; headers: Record<string, string> };
  t.equal(echo.method, 'POST');
  t.equal(echo.bodyBytes, 7);
  t.notOk('proxy-authorization' in echo.headers);
  await dispatcher.close();
  t.ok(sc.logs.some((l) => l.includes('"agent_id":"node-agent"')), 'tunnel identity applies to requests inside it');
  t.notOk(sc.logs.some((l) => l.includes('tok3n-abc')), 'token never logged');
});

t.test('Python requests with HTTPS_PROXY and REQUESTS_CA_BUNDLE', async (t) => {
  const r = await python(
    [
      'import requests',
      `r = requests.get("${up.origin}/echo?from=python", timeout=10)`,
      'print(r.status_code)',
      'print(r.json()["url"])',
    ].join('\n'),
    { HTTPS_PROXY: `http://py-agent:pytoken@127.0.0.1:${sc.proxyPort}`, REQUESTS_CA_BUNDLE: sc.caPath },
  );
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.stdout.trim(), '200\n/echo?from=python');
});

t.test('Host header ≠ CONNECT target inside the tunnel → 400 and nothing sent upstream', async (t) => {
  const before = up.requests();
  const s = await tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: sc.caPem });
  const res = await exchange(s, 'GET /echo HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n');
  t.match(res, /^HTTP\/1\.1 400 /);
  t.equal(bodyOf(res)['reason'], 'host_mismatch');
  const s2 = await tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: sc.caPem });
  const res2 = await exchange(s2, `GET https://evil.example/echo HTTP/1.1\r\nHost: ${up.hostPort}\r\nConnection: close\r\n\r\n`);
  t.equal(bodyOf(res2)['reason'], 'host_mismatch', 'absolute URI naming another host');
  const s3 = await tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: sc.caPem });
  const res3 = await exchange(s3, `GET /echo HTTP/1.1\r\nHost: ${up.hostPort}\r\nHost: evil.example\r\nConnection: close\r\n\r\n`);
  t.match(res3, /^HTTP\/1\.1 400 /, 'two Host headers, even one naming the target');
  t.equal(bodyOf(res3)['reason'], 'duplicate_host');
  t.equal(up.requests(), before, 'upstream never contacted');
});

t.test('SNI naming another host than the CONNECT target → 400 on every request', async (t) => {
  const s = await tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: sc.caPem, servername: 'other.example' });
  const res = await exchange(s, 'GET /echo HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n');
  t.match(res, /^HTTP\/1\.1 400 /);
  t.equal(bodyOf(res)['reason'], 'sni_mismatch');
});

t.test('a CONNECT host that is not a host name → 400, and no file is written anywhere', async (t) => {
  const caDir = dirname(sc.caPath);
  const before = readdirSync(caDir).sort();
  const parentBefore = readdirSync(dirname(caDir)).sort();
  for (const bad of ['../../x:443', '..%2f..%2fx:443', 'a/b:443', 'exa mple.com:443', 'example.com', 'example.com:0', 'example.com:99999']) {
    const { socket, head } = await openConnect(sc.proxyPort, bad);
    socket.destroy();
    t.match(head, /^HTTP\/1\.1 400 /, `${bad} refused`);
  }
  t.same(readdirSync(caDir).sort(), before, 'CA folder unchanged');
  t.same(readdirSync(dirname(caDir)).sort(), parentBefore, 'its parent unchanged');
});

t.test('10 concurrent CONNECTs to one new host mint one certificate; serials are positive', async (t) => {
  const host = 'fresh-host.example.test';
  const sockets = await Promise.all(
    Array.from({ length: 10 }, () => tlsThroughProxy(sc.proxyPort, `${host}:443`, { ca: sc.caPem, servername: host })),
  );
  const fingerprints = new Set(sockets.map((s) => s.getPeerX509Certificate()?.fingerprint256));
  t.equal(fingerprints.size, 1, 'one certificate served to all ten');
  for (const s of sockets) {
    t.equal(s.authorized, true);
    s.destroy();
  }
  const serials: string[] = [];
  let positive = 0;
  for (let i = 0; i < 40; i++) {
    const h = `serial-${i}.example.test`;
    const s = await tlsThroughProxy(sc.proxyPort, `${h}:443`, { ca: sc.caPem, servername: h });
    const cert = s.getPeerX509Certificate() as X509Certificate;
    serials.push(cert.serialNumber);
    t.ok(cert.checkHost(h), 'SAN names the host');
    // Read the DER INTEGER itself (Node's serialNumber string hides the sign): Go rejects negatives.
    const tbs = forge.asn1.fromDer(cert.raw.toString('binary')).value[0] as forge.asn1.Asn1;
    const serialBytes = (tbs.value as forge.asn1.Asn1[])[1]?.value as string;
    if ((serialBytes.charCodeAt(0) & 0x80) === 0 && /[^\0]/.test(serialBytes)) positive++;
    s.destroy();
  }
  t.equal(positive, 40, 'every DER serial is positive and non-zero');
  t.equal(new Set(serials).size, serials.length, 'serials unique');
});

t.test('nested CONNECT and non-TLS, non-HTTP bytes on a MITM tunnel → 400', async (t) => {
  const s = await tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: sc.caPem });
  const nested = await exchange(s, `CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n`);
  t.match(nested, /^HTTP\/1\.1 400 /);
  t.equal(bodyOf(nested)['reason'], 'nested_connect');
  const { socket, head } = await openConnect(sc.proxyPort, up.hostPort);
  t.match(head, /^HTTP\/1\.1 200/);
  const ssh = await exchange(socket, 'SSH-2.0-OpenSSH_9.2\r\n');
  t.match(ssh, /^HTTP\/1\.1 400 /);
  t.equal(bodyOf(ssh)['reason'], 'not_tls');
});

t.test('bypass_hosts: tunnelled blind (upstream certificate), SNI must match the CONNECT host', async (t) => {
  const authority = `localhost:${up.port}`;
  const s = await tlsThroughProxy(sc.proxyPort, authority, { ca: upstreamPki().caPem, servername: 'localhost' });
  const issuer = s.getPeerX509Certificate()?.issuer ?? '';
  t.match(issuer, /Firma Test Upstream CA/, 'the upstream’s own certificate: not decrypted');
  const res = await exchange(s, `GET /echo HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`);
  t.match(res, /^HTTP\/1\.1 200 /);
  // Same CONNECT, but the ClientHello names another host: the tunnel is cut before any byte goes up.
  const before = up.requests();
  await t.rejects(tlsThroughProxy(sc.proxyPort, authority, { ca: upstreamPki().caPem, servername: 'evil.example' }));
  t.equal(up.requests(), before);
  t.ok(sc.logs.some((l) => l.includes('"reason":"sni_mismatch"')), 'refusal logged with its reason');
  // No SNI at all (servername '' makes Node omit it): a shared front would pick its default site.
  await t.rejects(tlsThroughProxy(sc.proxyPort, authority, { ca: upstreamPki().caPem, servername: '', rejectUnauthorized: false }));
  t.equal(up.requests(), before);
  t.ok(sc.logs.some((l) => l.includes('"reason":"sni_missing"')), 'a ClientHello without SNI is refused');
  // curl, the way a user would see it.
  const r = await curl(['--proxy', sc.proxyUrl, '--cacert', upstreamPki().caPath, `https://localhost:${up.port}/echo`]);
  t.equal(r.status, 200, r.stderr);
});

t.test('HTTPS upstream unreachable → 502 JSON from inside the tunnel', async (t) => {
  const r = await curl(['--proxy', sc.proxyUrl, '--cacert', sc.caPath, 'https://127.0.0.1:1/']);
  t.equal(r.status, 502);
  const body = JSON.parse(r.body) as Record<string, string>;
  t.equal(body['reason'], 'network');
  t.equal(r.headers['x-firma-request-id'], body['request_id']);
});

t.test('a ClientHello whose server name is not a host name (hey sends "127.0.0.1:18443") is audited and logged, then closed', async (t) => {
  const before = up.requests();
  await t.rejects(tlsThroughProxy(sc.proxyPort, up.hostPort, { ca: sc.caPem, servername: '127.0.0.1:18443' }), 'no handshake');
  const audit = join(sc.dir, 'audit', 'audit.jsonl');
  let event: Record<string, unknown> | undefined;
  for (let i = 0; i < 100 && event === undefined; i++) {
    event = readFileSync(audit, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((e) => e['reason'] === 'bad_sni');
    if (event === undefined) await new Promise((r) => setTimeout(r, 20));
  }
  t.match(event, { type: 'decision', decision: 'deny', stage: 'intercept', reason: 'bad_sni', method: 'CONNECT', host: '127.0.0.1', port: up.port });
  t.ok(sc.logs.some((l) => l.includes('"reason":"bad_sni"')), 'one log line');
  t.equal(up.requests(), before, 'nothing sent upstream');
});
