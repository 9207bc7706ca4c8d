import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { hasOpenssl } from '../helpers/pki.js';
import { buildCaCertificate, caEnvLines, initCa, loadCa } from '../../src/intercept/tls/ca.js';
import { derToPem } from '../../src/intercept/tls/der.js';
import { modeOf, expectCode, type Test } from '../helpers/expect.js';

function freshDir(t: Test): string {
  return path.join(t.testdir(), 'certs');
}

t.test('init creates the CA with the right modes, and a second init loads it', async (t) => {
  const dir = freshDir(t);
  const first = initCa(dir);
  t.equal(first.created, true);
  t.equal(modeOf(dir), 0o700, 'dir 0700');
  t.equal(modeOf(path.join(dir, 'ca.key')), 0o600, 'key 0600');
  t.equal(modeOf(path.join(dir, 'ca.crt')), 0o644, 'cert 0644');
  t.match(fs.readFileSync(path.join(dir, 'ca.key'), 'utf8'), /^-{5}BEGIN PRIVATE KEY-{5}\n/, 'PKCS#8 PEM');

  const { ca } = first;
  t.equal(ca.certPath, path.join(dir, 'ca.crt'));
  t.equal(ca.certPem, fs.readFileSync(ca.certPath, 'utf8'));
  const x = new crypto.X509Certificate(ca.certPem);
  t.equal(x.ca, true, 'ca flag');
  t.ok(x.verify(x.publicKey), 'self-signed signature verifies');
  t.ok(x.checkIssued(x), 'self-issued');
  t.ok(x.checkPrivateKey(ca.privateKey), 'key matches');
  t.equal(ca.privateKey.asymmetricKeyType, 'ec');
  t.equal(ca.privateKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.match(x.subject, /^O=Firma Sidecar\nCN=Firma Sidecar CA \S+ \d{4}-\d{2}-\d{2}$/);
  t.equal(x.subject, x.issuer);
  const serial = Buffer.from(x.serialNumber, 'hex');
  t.ok(serial.length >= 15 && serial.length <= 16 && serial[0]! < 0x80, 'positive serial of ~16 bytes');
  const notBefore = Date.parse(x.validFrom);
  const notAfter = Date.parse(x.validTo);
  t.ok(Math.abs(Date.now() - 3600_000 - notBefore) < 60_000, 'notBefore = now - 1h');
  const tenYears = new Date();
  tenYears.setUTCFullYear(tenYears.getUTCFullYear() + 10);
  t.ok(Math.abs(tenYears.getTime() - notAfter) < 60_000, 'notAfter = now + 10y');
  t.equal(ca.subjectKeyId.length, 20);
  t.equal(ca.fingerprint256, x.fingerprint256);
  t.equal(ca.certDer.toString('base64'), x.raw.toString('base64'));
  // subjectDer is the encoded Name: a SEQUENCE that contains the CN bytes.
  t.equal(ca.subjectDer[0], 0x30);
  t.ok(ca.subjectDer.includes(Buffer.from('Firma Sidecar CA ')));

  const second = initCa(dir);
  t.equal(second.created, false);
  t.equal(second.ca.fingerprint256, ca.fingerprint256, 'same CA');
  t.equal(loadCa(dir).fingerprint256, ca.fingerprint256);
});

t.test('openssl agrees on the extensions', { skip: hasOpenssl() ? false : 'openssl not installed' }, async (t) => {
  const { ca } = initCa(freshDir(t));
  const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', ca.certPath], { encoding: 'utf8' });
  t.match(text, /Version: 3 \(0x2\)/);
  t.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
  t.match(text, /ASN1 OID: prime256v1/);
  t.match(text, /X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0\n/);
  t.match(text, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
  t.match(text, /X509v3 Subject Key Identifier: \n\s+([0-9A-F]{2}:){19}[0-9A-F]{2}\n/);
  const ski = /X509v3 Subject Key Identifier: \n\s+(\S+)/.exec(text)?.[1];
  t.equal(ski?.replace(/:/g, '').toLowerCase(), ca.subjectKeyId.toString('hex'), 'SKI matches');
  // RFC 5280 method 1, computed independently: SHA-1 over the EC point (last 65 bytes of the SPKI).
  const spki = ca.x509.publicKey.export({ type: 'spki', format: 'der' });
  t.equal(crypto.createHash('sha1').update(spki.subarray(spki.length - 65)).digest('hex'), ca.subjectKeyId.toString('hex'));
  // strict DER parse
  execFileSync('openssl', ['asn1parse', '-in', ca.certPath, '-strictpem'], { stdio: 'ignore' });
  t.pass('asn1parse');
});

t.test('insecure key mode is refused with the exact fix', async (t) => {
  const dir = freshDir(t);
  initCa(dir);
  const keyPath = path.join(dir, 'ca.key');
  for (const mode of [0o644, 0o640, 0o604, 0o660]) {
    fs.chmodSync(keyPath, mode);
    const msg = expectCode(t, () => loadCa(dir), 'FIRMA_CA_INSECURE', [`chmod 600 '${keyPath}'`]);
    t.notMatch(msg, /PRIVATE KEY/);
    expectCode(t, () => initCa(dir), 'FIRMA_CA_INSECURE');
  }
  fs.chmodSync(keyPath, 0o400);
  t.ok(loadCa(dir), '0400 is fine');
  fs.chmodSync(keyPath, 0o600);
});

t.test('missing, partial and corrupt CAs are errors and never regenerated', async (t) => {
  const empty = freshDir(t);
  fs.mkdirSync(empty, { recursive: true });
  expectCode(t, () => loadCa(empty), 'FIRMA_CA_MISSING', [empty]);
  t.same(fs.readdirSync(empty), [], 'loadCa never creates anything');

  t.test('only the key', async (t) => {
    const dir = freshDir(t);
    initCa(dir);
    fs.rmSync(path.join(dir, 'ca.crt'));
    const keyBefore = fs.readFileSync(path.join(dir, 'ca.key'));
    expectCode(t, () => initCa(dir), 'FIRMA_CA_CORRUPT', [path.join(dir, 'ca.crt')]);
    expectCode(t, () => loadCa(dir), 'FIRMA_CA_CORRUPT');
    t.same(fs.readFileSync(path.join(dir, 'ca.key')), keyBefore, 'key untouched');
    t.notOk(fs.existsSync(path.join(dir, 'ca.crt')), 'cert not recreated');
  });

  t.test('only the cert', async (t) => {
    const dir = freshDir(t);
    initCa(dir);
    fs.rmSync(path.join(dir, 'ca.key'));
    const certBefore = fs.readFileSync(path.join(dir, 'ca.crt'));
    expectCode(t, () => initCa(dir), 'FIRMA_CA_CORRUPT', [path.join(dir, 'ca.key')]);
    t.same(fs.readFileSync(path.join(dir, 'ca.crt')), certBefore, 'cert untouched');
    t.notOk(fs.existsSync(path.join(dir, 'ca.key')), 'key not recreated');
  });

  t.test('corrupt cert', async (t) => {
    const dir = freshDir(t);
    initCa(dir);
    const certPath = path.join(dir, 'ca.crt');
    fs.writeFileSync(certPath, '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
    expectCode(t, () => loadCa(dir), 'FIRMA_CA_CORRUPT', [certPath]);
    expectCode(t, () => initCa(dir), 'FIRMA_CA_CORRUPT');
    fs.writeFileSync(certPath, 'hello');
    expectCode(t, () => loadCa(dir), 'FIRMA_CA_CORRUPT', [certPath]);
  });

  t.test('corrupt key: message has no key material', async (t) => {
    const dir = freshDir(t);
    initCa(dir);
    const keyPath = path.join(dir, 'ca.key');
    const pem = fs.readFileSync(keyPath, 'utf8');
    const broken = pem.replace(/[A-Za-z0-9]{20}/, 'AAAAAAAAAAAAAAAAAAAA');
    fs.writeFileSync(keyPath, broken.slice(0, 60));
    const msg = expectCode(t, () => loadCa(dir), 'FIRMA_CA_CORRUPT', [keyPath]);
    for (const line of pem.split('\n').filter((l) => l.length > 16 && !l.startsWith('-----'))) {
      t.notOk(msg.includes(line.slice(0, 16)), 'no key text in message');
    }
  });

  t.test('mismatched key', async (t) => {
    const a = freshDir(t);
    const b = path.join(t.testdir(), 'other');
    initCa(a);
    initCa(b);
    fs.copyFileSync(path.join(b, 'ca.key'), path.join(a, 'ca.key'));
    fs.chmodSync(path.join(a, 'ca.key'), 0o600);
    expectCode(t, () => loadCa(a), 'FIRMA_CA_CORRUPT', ['does not match', path.join(a, 'ca.key')]);
  });

  t.test('RSA key is refused', async (t) => {
    const dir = freshDir(t);
    initCa(dir);
    const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    fs.writeFileSync(path.join(dir, 'ca.key'), rsa.export({ type: 'pkcs8', format: 'pem' }));
    expectCode(t, () => loadCa(dir), 'FIRMA_CA_CORRUPT', ['P-256']);
  });

  t.test('a leaf (non-CA) certificate is refused', { skip: hasOpenssl() ? false : 'openssl not installed' }, async (t) => {
    const dir = freshDir(t);
    const { ca } = initCa(dir);
    // A self-signed end-entity certificate for the same key (cA FALSE), made with openssl.
    const keyPath = path.join(dir, 'ca.key');
    const certPath = path.join(dir, 'ca.crt');
    const out = execFileSync(
      'openssl',
      ['req', '-new', '-x509', '-key', keyPath, '-subj', '/CN=not a ca', '-days', '1', '-addext', 'basicConstraints=critical,CA:FALSE'],
      { encoding: 'utf8' },
    );
    fs.writeFileSync(certPath, out);
    expectCode(t, () => loadCa(dir), 'FIRMA_CA_CORRUPT', ['not a CA']);
    t.ok(ca);
  });

  t.test('expired CA', async (t) => {
    const dir = freshDir(t);
    initCa(dir);
    const key = crypto.createPrivateKey(fs.readFileSync(path.join(dir, 'ca.key')));
    const der = buildCaCertificate(key, {
      notBeforeMs: Date.now() - 20 * 86400_000,
      notAfterMs: Date.now() - 10 * 86400_000,
      commonName: 'expired',
    });
    fs.writeFileSync(path.join(dir, 'ca.crt'), derToPem(der));
    expectCode(t, () => loadCa(dir), 'FIRMA_CA_CORRUPT', ['expired']);
    expectCode(t, () => initCa(dir), 'FIRMA_CA_CORRUPT', ['expired']);
  });
});

t.test('never overwrites an existing key file', async (t) => {
  const dir = freshDir(t);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(dir, 'ca.key'), 'precious', { mode: 0o600 });
  expectCode(t, () => initCa(dir), 'FIRMA_CA_CORRUPT');
  t.equal(fs.readFileSync(path.join(dir, 'ca.key'), 'utf8'), 'precious');
});

t.test('caEnvLines', async (t) => {
  t.same(caEnvLines('/etc/firma/ca.crt'), [
    "export SSL_CERT_FILE='/etc/firma/ca.crt'",
    "export REQUESTS_CA_BUNDLE='/etc/firma/ca.crt'",
    "export NODE_EXTRA_CA_CERTS='/etc/firma/ca.crt'",
    "export CURL_CA_BUNDLE='/etc/firma/ca.crt'",
  ]);
  const weird = "/tmp/it's a $(dir)/ca.crt";
  const line = caEnvLines(weird)[0]!;
  t.equal(line, `export SSL_CERT_FILE='/tmp/it'\\''s a $(dir)/ca.crt'`);
  const echoed = execFileSync('sh', ['-c', `${line}; printf %s "$SSL_CERT_FILE"`], { encoding: 'utf8' });
  t.equal(echoed, weird, 'the shell sees the exact path');
  t.ok(caEnvLines('rel/ca.crt')[0]!.includes(path.resolve('rel/ca.crt')), 'relative paths are made absolute');
});

t.test('key identifiers: SHA-1 of the EC point, computed without a JWK export (Node 20 deadlock)', async (t) => {
  const { keyIdentifier } = await import('../../src/intercept/tls/der.js');
  const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x ?? '', 'base64url'), Buffer.from(jwk.y ?? '', 'base64url')]);
  t.equal(keyIdentifier(publicKey).toString('hex'), crypto.createHash('sha1').update(point).digest('hex'), 'RFC 5280 method 1');
  t.throws(() => keyIdentifier(crypto.generateKeyPairSync('ed25519').publicKey), /P-256/);

  // On Node 20.20, fresh EC keys + JWK exports under GC pressure deadlock the main thread within
  // a second or two (this hung `firma ca init` in CI). The built module must survive the same loop.
  const ca = path.join(import.meta.dirname, '..', '..', 'dist', 'intercept', 'tls', 'der.js');
  const script = `
    import crypto from 'node:crypto';
    import { keyIdentifier } from ${JSON.stringify(ca)};
    const end = Date.now() + 2000;
    let n = 0;
    while (Date.now() < end) {
      const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
      for (let i = 0; i < 50; i++) keyIdentifier(publicKey);
      n++;
    }
    console.log(n);`;
  const out = execFileSync(process.execPath, ['--max-semi-space-size=1', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  t.ok(Number(out) > 0, `${out.trim()} keys, no deadlock`);
});
