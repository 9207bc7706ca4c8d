/**
 * The sidecar's local certificate authority: one ECDSA P-256 key and a self-signed CA certificate in
 * `ca_dir` (`ca.crt` 0644, `ca.key` 0600 PKCS#8). Created once, then only ever loaded and validated; it is
 * never silently regenerated or overwritten.
 *
 * Certificates are encoded with `forge.asn1` (forge's high-level certificate API only handles RSA keys)
 * and signed with Node's native `crypto.sign` (ecdsa-with-SHA256; Node emits DER signatures, which is
 * what X.509 wants). The small DER building blocks below are shared with leaf-certs.ts.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import forge from 'node-forge';
import { FirmaError } from '../../core/errors.js';
import { writeExclusive } from '../../core/secure-files.js';

export interface CertificateAuthority {
  dir: string;
  certPath: string;
  certPem: string;
  certDer: Buffer;
  privateKey: crypto.KeyObject;
  x509: crypto.X509Certificate;
  /** The encoded subject Name of the CA certificate: used verbatim as the issuer of leaf certificates. */
  subjectDer: Buffer;
  subjectKeyId: Buffer;
  fingerprint256: string;
}

export const CA_CERT_FILE = 'ca.crt';
export const CA_KEY_FILE = 'ca.key';

const HOUR_MS = 60 * 60 * 1000;
const CA_VALIDITY_YEARS = 10;

// ---------------------------------------------------------------------------------------------------
// DER building blocks (internal; shared with leaf-certs.ts)
// ---------------------------------------------------------------------------------------------------

const asn1 = forge.asn1;
const UNIVERSAL = asn1.Class.UNIVERSAL;
const CONTEXT = asn1.Class.CONTEXT_SPECIFIC;
const T = asn1.Type;

export type Asn1 = forge.asn1.Asn1;

/** @internal */
export const OID = {
  commonName: '2.5.4.3',
  organizationName: '2.5.4.10',
  ecPublicKey: '1.2.840.10045.2.1',
  prime256v1: '1.2.840.10045.3.1.7',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

/** Binary-string <-> Buffer (forge works on "binary" strings, one char per byte). */
export function toBinary(b: Buffer): string {
  return b.toString('latin1');
}
export function fromBinary(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

/** @internal */
export const der = {
  seq: (v: Asn1[]): Asn1 => asn1.create(UNIVERSAL, T.SEQUENCE, true, v),
  set: (v: Asn1[]): Asn1 => asn1.create(UNIVERSAL, T.SET, true, v),
  oid: (oid: string): Asn1 => asn1.create(UNIVERSAL, T.OID, false, asn1.oidToDer(oid).getBytes()),
  bool: (v: boolean): Asn1 => asn1.create(UNIVERSAL, T.BOOLEAN, false, v ? '\xff' : '\x00'),
  /** Non-negative INTEGER from big-endian bytes, minimally encoded as DER requires. */
  uint: (bytes: Buffer): Asn1 => asn1.create(UNIVERSAL, T.INTEGER, false, toBinary(minimalUnsigned(bytes))),
  smallInt: (n: number): Asn1 => asn1.create(UNIVERSAL, T.INTEGER, false, asn1.integerToDer(n).getBytes()),
  octets: (b: Buffer): Asn1 => asn1.create(UNIVERSAL, T.OCTETSTRING, false, toBinary(b)),
  /** BIT STRING with the given number of unused trailing bits. */
  bits: (b: Buffer, unused = 0): Asn1 =>
    asn1.create(UNIVERSAL, T.BITSTRING, false, String.fromCharCode(unused) + toBinary(b)),
  utf8: (s: string): Asn1 => asn1.create(UNIVERSAL, T.UTF8, false, toBinary(Buffer.from(s, 'utf8'))),
  /** Context-specific tag [n], primitive (IMPLICIT over a primitive type) or constructed (EXPLICIT). */
  ctx: (n: number, constructed: boolean, v: string | Asn1[]): Asn1 =>
    asn1.create(CONTEXT, n as forge.asn1.Type, constructed, v),
  /** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. Second precision, Z. */
  time: (ms: number): Asn1 => {
    const d = new Date(Math.floor(ms / 1000) * 1000);
    const y = d.getUTCFullYear();
    return y >= 1950 && y < 2050
      ? asn1.create(UNIVERSAL, T.UTCTIME, false, asn1.dateToUtcTime(d))
      : asn1.create(UNIVERSAL, T.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(d));
  },
  /** Re-hydrates DER produced elsewhere (SPKI, Name) so it can be embedded in a forge tree. */
  parse: (b: Buffer): Asn1 => asn1.fromDer(toBinary(b)),
  encode: (node: Asn1): Buffer => fromBinary(asn1.toDer(node).getBytes()),
  /** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
  extension: (oid: string, critical: boolean, value: Asn1): Asn1 => {
    const parts = [der.oid(oid)];
    if (critical) parts.push(der.bool(true)); // DER: DEFAULT values are omitted
    parts.push(asn1.create(UNIVERSAL, T.OCTETSTRING, false, asn1.toDer(value).getBytes()));
    return der.seq(parts);
  },
};

function minimalUnsigned(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0 && bytes[i + 1]! < 0x80) i++;
  if (bytes[i]! >= 0x80) return Buffer.concat([Buffer.from([0]), bytes.subarray(i)]);
  return i === 0 ? bytes : bytes.subarray(i);
}

/** ecdsa-with-SHA256 AlgorithmIdentifier; parameters MUST be absent (RFC 5758 3.2). */
export function ecdsaSha256AlgorithmId(): Asn1 {
  return der.seq([der.oid(OID.ecdsaWithSha256)]);
}

/**
 * 16 random bytes, top bit cleared (so the INTEGER is positive without a 0x00 pad) and never all-zero.
 * Encoded minimally by der.uint (a leading 0x00 byte followed by < 0x80 is stripped), so the first
 * content byte is always < 0x80.
 */
export function randomSerial(): Buffer {
  const b = crypto.randomBytes(16);
  b[0] = b[0]! & 0x7f;
  if (b.every((x) => x === 0)) b[15] = 1;
  return b;
}

/** DER of SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } up to the BIT STRING's first content byte. */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

/**
 * The subjectPublicKey BIT STRING contents (the uncompressed EC point), for key identifiers.
 * Read from the SPKI DER, not a JWK export: on Node 20 `export({ format: 'jwk' })` of an EC key can
 * deadlock the main thread (it holds the key's mutex while allocating, and a GC run then destroys a
 * key-generation job that takes the same mutex; reproduced on 20.20.2 with generateKeyPairSync +
 * JWK export in a loop).
 */
function ecPoint(publicKey: crypto.KeyObject): Buffer {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const point = spki.subarray(P256_SPKI_PREFIX.length);
  if (spki.length !== P256_SPKI_PREFIX.length + 65 || !spki.subarray(0, P256_SPKI_PREFIX.length).equals(P256_SPKI_PREFIX) || point[0] !== 4) {
    throw new Error('expected an EC P-256 public key');
  }
  return point;
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING value. */
export function keyIdentifier(publicKey: crypto.KeyObject): Buffer {
  return crypto.createHash('sha1').update(ecPoint(publicKey)).digest();
}

export function isP256(key: crypto.KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/** DER length octets. */
function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0x81, n]);
  if (n < 0x10000) return Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.from([0x83, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
}

let sigAlgDer: Buffer | undefined;

/**
 * Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }, signed
 * with the issuer's ECDSA P-256 key. The outer wrapping is done on Buffers so the TBS is encoded once.
 */
export function signCertificate(tbsDer: Buffer, issuerKey: crypto.KeyObject): Buffer {
  const sig = crypto.sign('sha256', tbsDer, issuerKey); // DER ECDSA-Sig-Value
  sigAlgDer ??= der.encode(ecdsaSha256AlgorithmId());
  const bitHeader = Buffer.concat([Buffer.from([0x03]), derLength(sig.length + 1), Buffer.from([0])]);
  const bodyLen = tbsDer.length + sigAlgDer.length + bitHeader.length + sig.length;
  return Buffer.concat([Buffer.from([0x30]), derLength(bodyLen), tbsDer, sigAlgDer, bitHeader, sig]);
}

export function derToPem(derBytes: Buffer, label = 'CERTIFICATE'): string {
  const b64 = derBytes.toString('base64');
  let out = `-----BEGIN ${label}-----\n`;
  for (let i = 0; i < b64.length; i += 64) out += b64.slice(i, i + 64) + '\n';
  return out + `-----END ${label}-----\n`;
}

// ---------------------------------------------------------------------------------------------------
// CA certificate
// ---------------------------------------------------------------------------------------------------

function caCommonName(nowMs: number): string {
  const short = (os.hostname().split('.')[0] ?? '').replace(/[^A-Za-z0-9_-]/g, '').slice(0, 32) || 'localhost';
  // "Firma Sidecar CA " (17) + host (<= 32) + " yyyy-mm-dd" (11) stays under the 64-char CN bound.
  return `Firma Sidecar CA ${short} ${new Date(nowMs).toISOString().slice(0, 10)}`;
}

/** @internal Builds the self-signed CA certificate DER. Exposed for tests (e.g. an already-expired CA). */
export function buildCaCertificate(
  privateKey: crypto.KeyObject,
  opts: { notBeforeMs: number; notAfterMs: number; commonName: string },
): Buffer {
  const publicKey = crypto.createPublicKey(privateKey);
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const ski = keyIdentifier(publicKey);
  const name = der.seq([
    der.set([der.seq([der.oid(OID.organizationName), der.utf8('Firma Sidecar')])]),
    der.set([der.seq([der.oid(OID.commonName), der.utf8(opts.commonName)])]),
  ]);
  const extensions = [
    // cA TRUE, pathLenConstraint 0: may only sign end-entity certificates.
    der.extension(OID.basicConstraints, true, der.seq([der.bool(true), der.smallInt(0)])),
    // keyCertSign (bit 5) + cRLSign (bit 6) = 0b0000_0110, one unused trailing bit.
    der.extension(OID.keyUsage, true, der.bits(Buffer.from([0x06]), 1)),
    der.extension(OID.subjectKeyIdentifier, false, der.octets(ski)),
  ];
  const tbs = der.seq([
    der.ctx(0, true, [der.smallInt(2)]), // v3
    der.uint(randomSerial()),
    ecdsaSha256AlgorithmId(),
    name, // issuer
    der.seq([der.time(opts.notBeforeMs), der.time(opts.notAfterMs)]),
    name, // subject
    der.parse(spki),
    der.ctx(3, true, [der.seq(extensions)]),
  ]);
  return signCertificate(der.encode(tbs), privateKey);
}

// ---------------------------------------------------------------------------------------------------
// Minimal DER reader (to slice the subject Name and SKI out of a loaded certificate verbatim)
// ---------------------------------------------------------------------------------------------------

interface Tlv {
  tag: number;
  start: number;
  valueStart: number;
  end: number;
}

function readTlv(buf: Buffer, off: number, limit: number): Tlv {
  if (off + 2 > limit) throw new Error('truncated DER');
  const tag = buf[off]!;
  let len = buf[off + 1]!;
  let p = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3 || p + n > limit) throw new Error('bad DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    p += n;
  }
  if (p + len > limit) throw new Error('truncated DER');
  return { tag, start: off, valueStart: p, end: p + len };
}

function children(buf: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let p = parent.valueStart; p < parent.end; ) {
    const c = readTlv(buf, p, parent.end);
    out.push(c);
    p = c.end;
  }
  return out;
}

const SKI_OID_DER = fromBinary(asn1.oidToDer(OID.subjectKeyIdentifier).getBytes());

function inspectCertificateDer(certDer: Buffer): { subjectDer: Buffer; subjectKeyId: Buffer | null } {
  const cert = readTlv(certDer, 0, certDer.length);
  const tbs = children(certDer, cert)[0];
  if (tbs === undefined || tbs.tag !== 0x30) throw new Error('no TBSCertificate');
  const fields = children(certDer, tbs);
  const base = fields[0]?.tag === 0xa0 ? 1 : 0; // optional [0] version
  const subject = fields[base + 4];
  if (subject === undefined || subject.tag !== 0x30) throw new Error('no subject');
  let subjectKeyId: Buffer | null = null;
  const extsWrapper = fields.find((f) => f.tag === 0xa3);
  if (extsWrapper !== undefined) {
    const exts = children(certDer, extsWrapper)[0];
    if (exts !== undefined) {
      for (const ext of children(certDer, exts)) {
        const parts = children(certDer, ext);
        const id = parts[0];
        const value = parts[parts.length - 1];
        if (id === undefined || value === undefined || value.tag !== 0x04) continue;
        if (!certDer.subarray(id.valueStart, id.end).equals(SKI_OID_DER)) continue;
        const inner = readTlv(certDer, value.valueStart, value.end);
        if (inner.tag === 0x04) subjectKeyId = Buffer.from(certDer.subarray(inner.valueStart, inner.end));
      }
    }
  }
  return { subjectDer: Buffer.from(certDer.subarray(subject.start, subject.end)), subjectKeyId };
}

// ---------------------------------------------------------------------------------------------------
// Load / init
// ---------------------------------------------------------------------------------------------------

function statIfExists(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new FirmaError('FIRMA_CA_CORRUPT', `cannot access ${p}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, {
      cause: err,
    });
  }
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Loads and validates the CA in `dir`. Never creates or modifies anything.
 * Throws FirmaError FIRMA_CA_MISSING / FIRMA_CA_INSECURE / FIRMA_CA_CORRUPT. Messages name the file and
 * never include key material.
 */
export function loadCa(dir: string): CertificateAuthority {
  const certPath = path.join(dir, CA_CERT_FILE);
  const keyPath = path.join(dir, CA_KEY_FILE);
  const certStat = statIfExists(certPath);
  const keyStat = statIfExists(keyPath);
  if (certStat === null && keyStat === null) {
    throw new FirmaError('FIRMA_CA_MISSING', `no CA in ${dir}: neither ${certPath} nor ${keyPath} exists`);
  }
  if (certStat === null || keyStat === null) {
    const present = certStat === null ? keyPath : certPath;
    const missing = certStat === null ? certPath : keyPath;
    throw new FirmaError(
      'FIRMA_CA_CORRUPT',
      `incomplete CA: ${present} exists but ${missing} does not; refusing to regenerate. ` +
        `Restore ${missing}, or remove ${present} to create a new CA (agents must then trust the new one)`,
    );
  }
  if (!keyStat.isFile()) throw new FirmaError('FIRMA_CA_CORRUPT', `${keyPath} is not a regular file`);
  if (!certStat.isFile()) throw new FirmaError('FIRMA_CA_CORRUPT', `${certPath} is not a regular file`);
  if (process.platform !== 'win32' && (keyStat.mode & 0o077) !== 0) {
    throw new FirmaError(
      'FIRMA_CA_INSECURE',
      `${keyPath} is accessible by group or others (mode ${(keyStat.mode & 0o777).toString(8).padStart(4, '0')}); ` +
        `fix with: chmod 600 ${shellQuote(keyPath)}`,
    );
  }

  let certPem: string;
  let x509: crypto.X509Certificate;
  try {
    certPem = fs.readFileSync(certPath, 'utf8');
    if (!certPem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate');
    x509 = new crypto.X509Certificate(certPem);
  } catch (err) {
    throw new FirmaError('FIRMA_CA_CORRUPT', `${certPath} is not a readable PEM certificate`, { cause: err });
  }

  let privateKey: crypto.KeyObject;
  try {
    privateKey = crypto.createPrivateKey(fs.readFileSync(keyPath));
  } catch {
    // No cause: parser errors for key files are not worth the risk of echoing anything about the key.
    throw new FirmaError('FIRMA_CA_CORRUPT', `${keyPath} is not a readable PEM private key`);
  }
  if (!isP256(privateKey)) {
    throw new FirmaError('FIRMA_CA_CORRUPT', `${keyPath} is not an ECDSA P-256 key (the only CA key type supported)`);
  }
  const certSpki = x509.publicKey.export({ type: 'spki', format: 'der' });
  const keySpki = crypto.createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  if (!certSpki.equals(keySpki)) {
    throw new FirmaError('FIRMA_CA_CORRUPT', `${keyPath} does not match the certificate in ${certPath}`);
  }
  if (!x509.ca) throw new FirmaError('FIRMA_CA_CORRUPT', `${certPath} is not a CA certificate (basicConstraints cA is not set)`);
  const now = Date.now();
  const notAfter = Date.parse(x509.validTo);
  const notBefore = Date.parse(x509.validFrom);
  if (!(notAfter > now)) throw new FirmaError('FIRMA_CA_CORRUPT', `${certPath} expired on ${x509.validTo}`);
  if (!(notBefore <= now + HOUR_MS)) {
    throw new FirmaError('FIRMA_CA_CORRUPT', `${certPath} is not valid until ${x509.validFrom} (check the clock)`);
  }

  const certDer = Buffer.from(x509.raw);
  let info: { subjectDer: Buffer; subjectKeyId: Buffer | null };
  try {
    info = inspectCertificateDer(certDer);
  } catch (err) {
    throw new FirmaError('FIRMA_CA_CORRUPT', `${certPath}: cannot read the certificate structure`, { cause: err });
  }
  return {
    dir,
    certPath,
    certPem: derToPem(certDer),
    certDer,
    privateKey,
    x509,
    subjectDer: info.subjectDer,
    subjectKeyId: info.subjectKeyId ?? keyIdentifier(x509.publicKey),
    fingerprint256: x509.fingerprint256,
  };
}


/**
 * Loads the CA in `dir`, creating it (and `dir`, mode 0700) if neither file exists. Never regenerates:
 * if only one of ca.crt / ca.key exists this throws FIRMA_CA_CORRUPT.
 */
export function initCa(dir: string): { ca: CertificateAuthority; created: boolean } {
  const certPath = path.join(dir, CA_CERT_FILE);
  const keyPath = path.join(dir, CA_KEY_FILE);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new FirmaError('FIRMA_CA_CORRUPT', `cannot create the CA directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, {
      cause: err,
    });
  }
  if (statIfExists(certPath) !== null || statIfExists(keyPath) !== null) {
    return { ca: loadCa(dir), created: false };
  }

  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const notAfter = new Date(now);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CA_VALIDITY_YEARS);
  const certDer = buildCaCertificate(privateKey, {
    notBeforeMs: now - HOUR_MS,
    notAfterMs: notAfter.getTime(),
    commonName: caCommonName(now),
  });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;

  try {
    writeExclusive(keyPath, keyPem, 0o600);
  } catch (err) {
    throw new FirmaError('FIRMA_CA_CORRUPT', `cannot create ${keyPath} (created concurrently?)`, { cause: err });
  }
  try {
    writeExclusive(certPath, derToPem(certDer), 0o644);
  } catch (err) {
    // Do not leave a lone key behind (that would block the next init); we created it a moment ago.
    fs.rmSync(keyPath, { force: true });
    throw new FirmaError('FIRMA_CA_CORRUPT', `cannot create ${certPath}`, { cause: err });
  }
  return { ca: loadCa(dir), created: true };
}

/**
 * Shell lines that make common clients trust the CA.
 *
 * NODE_EXTRA_CA_CERTS *adds* to Node's bundle, but SSL_CERT_FILE (OpenSSL-based clients, Python's ssl,
 * httpx, Go on Linux), REQUESTS_CA_BUNDLE (Python requests) and CURL_CA_BUNDLE (curl) *replace* the
 * system bundle for those clients. That is acceptable here: all agent traffic goes through the sidecar,
 * which presents certificates from this CA and itself verifies upstream servers against the system store.
 * Anything the agent reaches without the proxy would fail verification (fail closed, which is intended).
 */
export function caEnvLines(certPath: string): string[] {
  const q = shellQuote(path.resolve(certPath));
  return [
    `export SSL_CERT_FILE=${q}`,
    `export REQUESTS_CA_BUNDLE=${q}`,
    `export NODE_EXTRA_CA_CERTS=${q}`,
    `export CURL_CA_BUNDLE=${q}`,
  ];
}
