import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { execFileSync } from 'node:child_process';
import { hasOpenssl } from '../helpers/pki.js';
import { initCa, type CertificateAuthority } from '../../src/intercept/tls/ca.js';
import { LeafCertificates } from '../../src/intercept/tls/leaf-certs.js';
import { parseHost, type ParsedHost } from '../../src/core/host.js';

function host(s: string): ParsedHost {
  const h = parseHost(s);
  if (h === null) throw new Error(`bad host ${s}`);
  return h;
}

let ca: CertificateAuthority;
let caDir: string;
t.before(() => {
  caDir = path.join(t.testdir(), 'certs');
  ca = initCa(caDir).ca;
});

t.test('DNS leaf verifies against the CA', async (t) => {
  const leaves = new LeafCertificates(ca);
  const leaf = leaves.certificateFor(host('API.Example.com'));
  const x = new crypto.X509Certificate(leaf.certPem);
  t.ok(x.verify(ca.x509.publicKey), 'signature verifies with the CA key');
  t.ok(x.checkIssued(ca.x509), 'issued by the CA (issuer name + AKI)');
  t.equal(x.ca, false);
  t.equal(x.subject, 'CN=api.example.com');
  t.equal(x.issuer, ca.x509.subject);
  t.equal(x.subjectAltName, 'DNS:api.example.com');
  t.equal(x.checkHost('api.example.com'), 'api.example.com');
  t.equal(x.checkHost('other.example.com'), undefined);
  t.same(x.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'EKU serverAuth');
  const notBefore = Date.parse(x.validFrom);
  const notAfter = Date.parse(x.validTo);
  t.ok(Math.abs(Date.now() - 3600_000 - notBefore) < 5_000, 'notBefore = now - 1h');
  t.ok(Math.abs(Date.now() + 24 * 3600_000 - notAfter) < 5_000, 'notAfter = now + 24h');
  t.equal(leaf.host, 'api.example.com');
  t.equal(x.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
});

t.test('IP leaves carry iPAddress SANs', async (t) => {
  const leaves = new LeafCertificates(ca);
  const v4 = new crypto.X509Certificate(leaves.certificateFor(host('10.1.2.3')).certPem);
  t.equal(v4.subject, 'CN=10.1.2.3');
  t.equal(v4.subjectAltName, 'IP Address:10.1.2.3');
  t.equal(v4.checkIP('10.1.2.3'), '10.1.2.3');
  t.ok(v4.verify(ca.x509.publicKey));

  const v6 = new crypto.X509Certificate(leaves.certificateFor(host('2001:DB8::1')).certPem);
  t.equal(v6.subject, 'CN=2001:db8::1');
  t.match(v6.subjectAltName ?? '', /^IP Address:2001:DB8:0:0:0:0:0:1$/i);
  t.equal(v6.checkIP('2001:db8::1'), '2001:db8::1');
  t.ok(v6.verify(ca.x509.publicKey));
});

t.test('a name longer than 64 characters goes in a critical SAN with an empty subject', async (t) => {
  const long = `${'a'.repeat(60)}.example.com`;
  const leaves = new LeafCertificates(ca);
  const x = new crypto.X509Certificate(leaves.certificateFor(host(long)).certPem);
  t.notOk(x.subject, 'empty subject');
  t.equal(x.subjectAltName, `DNS:${long}`);
  t.ok(x.verify(ca.x509.publicKey));
  if (hasOpenssl()) {
    const text = execFileSync('openssl', ['x509', '-noout', '-text'], { input: x.toString(), encoding: 'utf8' });
    t.match(text, /X509v3 Subject Alternative Name: critical/);
  }
});

t.test('serials are positive 16-byte values', async (t) => {
  const leaves = new LeafCertificates(ca, { cacheSize: 10 });
  const seen = new Set<string>();
  let bad = 0;
  for (let i = 0; i < 200; i++) {
    const leaf = leaves.certificateFor(host(`s${i}.example.com`));
    // Read the INTEGER content bytes straight from the DER: 30 L 30 L A0 03 02 01 02 02 len ...
    const der = leaf.certDer;
    let p = 0;
    const skipHeader = (): void => {
      const l = der[p + 1]!;
      p += 2 + (l & 0x80 ? l & 0x7f : 0);
    };
    skipHeader(); // Certificate
    skipHeader(); // TBSCertificate
    p += 5; // [0] { INTEGER 2 }
    if (der[p] !== 0x02) bad++;
    const len = der[p + 1]!;
    const serial = der.subarray(p + 2, p + 2 + len);
    if (len < 1 || len > 16 || serial[0]! >= 0x80 || serial.every((b) => b === 0)) bad++;
    if (len > 1 && serial[0] === 0 && serial[1]! < 0x80) bad++; // DER: minimal encoding
    seen.add(serial.toString('hex'));
    const x = new crypto.X509Certificate(leaf.certPem);
    t.equal(BigInt(`0x${x.serialNumber}`) > 0n, true, `serial ${i} positive`);
  }
  t.equal(bad, 0, 'every serial positive, non-zero, minimally encoded');
  t.equal(seen.size, 200, 'all distinct');
});

t.test('openssl verify accepts the leaf', { skip: hasOpenssl() ? false : 'openssl not installed' }, async (t) => {
  const dir = t.testdir();
  const leaves = new LeafCertificates(ca);
  for (const name of ['api.example.com', '127.0.0.1', '::1']) {
    const leafPath = path.join(dir, 'leaf.pem');
    fs.writeFileSync(leafPath, leaves.certificateFor(host(name)).certPem);
    const args = ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', ca.certPath];
    args.push(name.includes(':') || /^\d/.test(name) ? '-verify_ip' : '-verify_hostname', name, leafPath);
    const out = execFileSync('openssl', args, { encoding: 'utf8' });
    t.match(out, /: OK\n$/, `openssl verify ${name}`);
  }
  const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', path.join(dir, 'leaf.pem')], { encoding: 'utf8' });
  t.match(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
  t.match(text, /X509v3 Key Usage: critical\n\s+Digital Signature\n/);
  t.match(text, /X509v3 Extended Key Usage: \n\s+TLS Web Server Authentication\n/);
  const aki = /X509v3 Authority Key Identifier: \n\s+(?:keyid:)?(\S+)/.exec(text)?.[1];
  t.equal(aki?.replace(/:/g, '').toLowerCase(), ca.subjectKeyId.toString('hex'), 'AKI = CA SKI');
  t.match(text, /X509v3 Subject Key Identifier: \n/);
});

async function handshake(
  leaves: LeafCertificates,
  servername: string,
): Promise<{ authorized: boolean; error: Error | null; peerSubject: string; alpn: string | false | null }> {
  const server = tls.createServer({
    SNICallback: (name, cb) => {
      const h = parseHost(name);
      if (h === null) return cb(new Error('bad SNI'));
      cb(null, leaves.secureContextFor(h));
    },
    ALPNProtocols: ['h2', 'http/1.1'],
  });
  server.on('secureConnection', (s) => s.end('hi'));
  server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  try {
    return await new Promise((resolve) => {
      const sock = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem, servername, ALPNProtocols: ['http/1.1'] });
      sock.on('secureConnect', () => {
        resolve({
          authorized: sock.authorized,
          error: sock.authorizationError ?? null,
          peerSubject: sock.getPeerX509Certificate()?.subject ?? '',
          alpn: sock.alpnProtocol,
        });
        sock.destroy();
      });
      sock.on('error', (error) => resolve({ authorized: false, error, peerSubject: '', alpn: false }));
    });
  } finally {
    server.close();
  }
}

t.test('a real TLS handshake with SNICallback is authorized', async (t) => {
  const leaves = new LeafCertificates(ca);
  const r = await handshake(leaves, 'api.example.com');
  t.equal(r.error, null);
  t.equal(r.authorized, true, 'client trusts the leaf via the CA');
  t.equal(r.peerSubject, 'CN=api.example.com');
  t.equal(r.alpn, 'http/1.1');
  const again = await handshake(leaves, 'api.example.com');
  t.equal(again.authorized, true);
  t.same(leaves.stats, { minted: 1, cacheHits: 1, evictions: 0 });
  // The client rejects a different CA (sanity: "authorized" is not vacuous).
  const other = initCa(path.join(t.testdir(), 'other')).ca;
  const strangers = new LeafCertificates(other);
  const bad = await handshake(strangers, 'api.example.com');
  t.equal(bad.authorized, false);
  t.ok(bad.error);
});

t.test('curl trusts the leaf through the CA bundle', async (t) => {
  try {
    execFileSync('curl', ['--version'], { stdio: 'ignore' });
  } catch {
    return;
  }
  const leaves = new LeafCertificates(ca);
  const server = tls.createServer({
    SNICallback: (name, cb) => cb(null, leaves.secureContextFor(host(name))),
  });
  server.on('secureConnection', (s) => {
    s.on('data', () => s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  try {
    const out = await new Promise<string>((resolve, reject) => {
      import('node:child_process').then(({ execFile }) =>
        execFile(
          'curl',
          ['-sS', '--cacert', ca.certPath, '--resolve', `api.example.com:${port}:127.0.0.1`, `https://api.example.com:${port}/`],
          (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout)),
        ),
      );
    });
    t.equal(out, 'ok');
  } finally {
    server.close();
  }
});

t.test('single flight: concurrent requests for a new host mint once', async (t) => {
  const leaves = new LeafCertificates(ca);
  const h = host('burst.example.com');
  const contexts = await Promise.all(Array.from({ length: 10 }, async () => leaves.secureContextFor(h)));
  t.equal(leaves.stats.minted, 1);
  t.equal(leaves.stats.cacheHits, 9);
  t.ok(contexts.every((c) => c === contexts[0]), 'same context object');
});

t.test('LRU eviction', async (t) => {
  const leaves = new LeafCertificates(ca, { cacheSize: 3 });
  const a = leaves.secureContextFor(host('a.example.com'));
  leaves.secureContextFor(host('b.example.com'));
  leaves.secureContextFor(host('c.example.com'));
  t.equal(leaves.secureContextFor(host('a.example.com')), a, 'a hit, now most recent');
  leaves.secureContextFor(host('d.example.com')); // evicts b (least recently used)
  t.same(leaves.stats, { minted: 4, cacheHits: 1, evictions: 1 });
  t.equal(leaves.size, 3);
  t.equal(leaves.secureContextFor(host('a.example.com')), a, 'a survived');
  t.equal(leaves.stats.cacheHits, 2);
  leaves.secureContextFor(host('b.example.com')); // re-minted, evicts c
  t.same(leaves.stats, { minted: 5, cacheHits: 2, evictions: 2 });
  // Canonical keys: different spellings of one host share an entry.
  leaves.secureContextFor(host('B.EXAMPLE.COM.'));
  t.same(leaves.stats, { minted: 5, cacheHits: 3, evictions: 2 });
});

t.test('re-mint when less than an hour of validity remains', async (t) => {
  let now = Date.now();
  const leaves = new LeafCertificates(ca, { now: () => now });
  const first = leaves.certificateFor(host('clock.example.com'));
  now += 22 * 3600_000; // 2 h left
  t.equal(leaves.certificateFor(host('clock.example.com')), first, 'still cached with 2 h left');
  now += 1.5 * 3600_000; // 30 min left
  const second = leaves.certificateFor(host('clock.example.com'));
  t.not(second, first, 're-minted');
  t.ok(second.notAfterMs > first.notAfterMs);
  t.same(leaves.stats, { minted: 2, cacheHits: 1, evictions: 0 });
  const x = new crypto.X509Certificate(second.certPem);
  t.ok(Math.abs(Date.parse(x.validTo) - (now + 24 * 3600_000)) < 2000, 'new validity from the injected clock');
  t.equal(leaves.size, 1);
});

t.test('custom validity', async (t) => {
  const leaves = new LeafCertificates(ca, { validityMs: 7 * 24 * 3600_000 });
  const x = new crypto.X509Certificate(leaves.certificateFor(host('week.example.com')).certPem);
  t.ok(Math.abs(Date.parse(x.validTo) - (Date.now() + 7 * 24 * 3600_000)) < 5000);
  t.throws(() => new LeafCertificates(ca, { validityMs: 0 }));
});

t.test('one leaf key for all hosts', async (t) => {
  const leaves = new LeafCertificates(ca);
  const k1 = new crypto.X509Certificate(leaves.certificateFor(host('one.example.com')).certPem).publicKey;
  const k2 = new crypto.X509Certificate(leaves.certificateFor(host('two.example.com')).certPem).publicKey;
  t.ok(k1.equals(k2));
});
