/**
 * The sidecar's local certificate authority: one ECDSA P-256 key and a self-signed CA certificate in
 * `ca_dir` (`ca.crt` 0644, `ca.key` 0600 PKCS#8). Created once, then only ever loaded and validated; it is
 * never silently regenerated or overwritten.
 *
 * Certificates are DER-encoded by der.ts and signed with Node's native `crypto.sign` (ecdsa-with-SHA256;
 * Node emits DER signatures, which is what X.509 wants).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OID, der, derToPem, ecdsaSha256AlgorithmId, inspectCertificateDer, isP256, keyIdentifier, randomSerial, signCertificate } from './der.js';
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
