/**
 * DER building blocks for X.509 certificates, shared by the CA (ca.ts) and the leaf certificates
 * (leaf-certs.ts): the handful of X.690 DER types a certificate needs, each built as a Buffer, and signed
 * with Node's native `crypto.sign` (ecdsa-with-SHA256; Node emits DER signatures, which is what X.509
 * wants). Plus a minimal DER reader, to slice the subject Name and SKI out of a loaded certificate
 * verbatim. No ASN.1 library: node-forge's asn1 (used until 2026-12) cost ~6 MiB of resident memory
 * in every sidecar for these few encoders (bench/README.md "Memory"); the output is byte-identical.
 */
import crypto from 'node:crypto';

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


/** One encoded TLV (tag, length, value): every `der` builder returns complete DER, so nodes nest by concatenation. */
export type Asn1 = Buffer;

function tlv(tag: number, value: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), derLength(value.length), value]);
}

/** OBJECT IDENTIFIER contents (X.690 8.19): 40·a + b, then each arc in base 128, high bit = more to come. */
function oidContent(oid: string): Buffer {
  const arcs = oid.split('.').map(Number);
  const out: number[] = [];
  const push = (n: number): void => {
    const bytes = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) bytes.unshift((v & 0x7f) | 0x80);
    out.push(...bytes);
  };
  push(arcs[0]! * 40 + arcs[1]!);
  for (const a of arcs.slice(2)) push(a);
  return Buffer.from(out);
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

/** @internal */
export const der = {
  seq: (v: Asn1[]): Asn1 => tlv(0x30, Buffer.concat(v)),
  set: (v: Asn1[]): Asn1 => tlv(0x31, Buffer.concat(v)),
  oid: (oid: string): Asn1 => tlv(0x06, oidContent(oid)),
  bool: (v: boolean): Asn1 => tlv(0x01, Buffer.from([v ? 0xff : 0x00])),
  /** Non-negative INTEGER from big-endian bytes, minimally encoded as DER requires. */
  uint: (bytes: Buffer): Asn1 => tlv(0x02, minimalUnsigned(bytes)),
  /** Small non-negative INTEGER (a version number, a path length). */
  smallInt: (n: number): Asn1 => {
    const bytes = [n & 0xff];
    for (let v = n >>> 8; v > 0; v >>>= 8) bytes.unshift(v & 0xff);
    return tlv(0x02, minimalUnsigned(Buffer.from(bytes)));
  },
  octets: (b: Buffer): Asn1 => tlv(0x04, b),
  /** BIT STRING with the given number of unused trailing bits. */
  bits: (b: Buffer, unused = 0): Asn1 => tlv(0x03, Buffer.concat([Buffer.from([unused]), b])),
  utf8: (s: string): Asn1 => tlv(0x0c, Buffer.from(s, 'utf8')),
  /** Context-specific tag [n] (n < 31): primitive (IMPLICIT over a primitive type, raw contents) or constructed (EXPLICIT). */
  ctx: (n: number, constructed: boolean, v: Buffer | Asn1[]): Asn1 =>
    tlv(0x80 | (constructed ? 0x20 : 0) | n, Array.isArray(v) ? Buffer.concat(v) : v),
  /** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. Second precision, Z. */
  time: (ms: number): Asn1 => {
    const d = new Date(Math.floor(ms / 1000) * 1000);
    const y = d.getUTCFullYear();
    const rest = `${pad2(d.getUTCMonth() + 1)}${pad2(d.getUTCDate())}${pad2(d.getUTCHours())}${pad2(d.getUTCMinutes())}${pad2(d.getUTCSeconds())}Z`;
    return y >= 1950 && y < 2050
      ? tlv(0x17, Buffer.from(pad2(y % 100) + rest, 'latin1'))
      : tlv(0x18, Buffer.from(String(y).padStart(4, '0') + rest, 'latin1'));
  },
  /** DER produced elsewhere (SPKI, Name), embedded verbatim; checked to be exactly one TLV. */
  parse: (b: Buffer): Asn1 => {
    if (readTlv(b, 0, b.length).end !== b.length) throw new Error('trailing bytes after DER value');
    return b;
  },
  encode: (node: Asn1): Buffer => node,
  /** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
  extension: (oid: string, critical: boolean, value: Asn1): Asn1 => {
    const parts = [der.oid(oid)];
    if (critical) parts.push(der.bool(true)); // DER: DEFAULT values are omitted
    parts.push(der.octets(value));
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

const SKI_OID_DER = oidContent(OID.subjectKeyIdentifier);

export function inspectCertificateDer(certDer: Buffer): { subjectDer: Buffer; subjectKeyId: Buffer | null } {
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
