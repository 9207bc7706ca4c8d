/**
 * Per-host leaf certificates for TLS interception, minted on demand from the local CA and cached.
 *
 * Cheap by construction: ONE ECDSA P-256 leaf key pair is generated per process and reused for every
 * host; everything that does not depend on the host (SPKI, issuer Name, AKI/SKI/keyUsage/EKU/basic
 * constraints extensions, signature AlgorithmIdentifier, the key PEM) is prepared once in the constructor.
 * Minting a host is: random serial + validity + subject/SAN, one DER encode, one native ECDSA signature,
 * one tls.createSecureContext.
 *
 * Chain: only the leaf is sent. Clients that trust the local root already hold it (sending it would not
 * make anyone else trust it, only add bytes to every handshake and certificate parsing to every context).
 */
import crypto from 'node:crypto';
import tls from 'node:tls';
import type { CertificateAuthority } from './ca.js';
import type { Asn1 } from './der.js';
import { OID, der, derToPem, ecdsaSha256AlgorithmId, keyIdentifier, randomSerial, signCertificate } from './der.js';
import type { ParsedHost } from '../../core/host.js';
import { ipBytes } from '../../core/host.js';

const HOUR_MS = 60 * 60 * 1000;
/** RFC 5280 ub-common-name: longer hostnames go in the SAN only (subject left empty, SAN critical). */
const MAX_CN_LENGTH = 64;

export interface LeafCertificate {
  host: string;
  certPem: string;
  certDer: Buffer;
  notAfterMs: number;
  secureContext: tls.SecureContext;
}

export interface LeafCertificateOptions {
  /** Maximum number of cached hosts (LRU). Default 1024. */
  cacheSize?: number;
  /** Leaf validity. Default 24 h. */
  validityMs?: number;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
}

export class LeafCertificates {
  readonly stats = { minted: 0, cacheHits: 0, evictions: 0 };

  readonly #caKey: crypto.KeyObject;
  readonly #keyPem: string;
  readonly #cacheSize: number;
  readonly #validityMs: number;
  /** Re-mint when less than this much validity remains: 1 h, or half the validity if that is shorter. */
  readonly #renewBeforeMs: number;
  readonly #now: () => number;
  /** Map iteration order is insertion order: the first key is the least recently used. */
  readonly #cache = new Map<string, LeafCertificate>();

  // Host-independent TBS parts (encoded once, concatenated into every leaf).
  readonly #version: Asn1;
  readonly #sigAlg: Asn1;
  readonly #issuer: Asn1;
  readonly #spki: Asn1;
  readonly #emptyName: Asn1;
  readonly #constantExtensions: Asn1[];

  constructor(ca: CertificateAuthority, opts: LeafCertificateOptions = {}) {
    this.#caKey = ca.privateKey;
    this.#cacheSize = Math.max(1, Math.floor(opts.cacheSize ?? 1024));
    this.#validityMs = opts.validityMs ?? 24 * HOUR_MS;
    if (!(this.#validityMs > 0)) throw new RangeError('validityMs must be positive');
    this.#renewBeforeMs = Math.min(HOUR_MS, this.#validityMs / 2);
    this.#now = opts.now ?? Date.now;

    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.#keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;

    this.#version = der.ctx(0, true, [der.smallInt(2)]);
    this.#sigAlg = ecdsaSha256AlgorithmId();
    this.#issuer = der.parse(ca.subjectDer);
    this.#spki = der.parse(publicKey.export({ type: 'spki', format: 'der' }));
    this.#emptyName = der.seq([]);
    this.#constantExtensions = [
      // basicConstraints: empty SEQUENCE = cA FALSE.
      der.extension(OID.basicConstraints, true, der.seq([])),
      // keyUsage digitalSignature (bit 0) = 0x80, seven unused bits.
      der.extension(OID.keyUsage, true, der.bits(Buffer.from([0x80]), 7)),
      der.extension(OID.extKeyUsage, false, der.seq([der.oid(OID.serverAuth)])),
      // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }
      der.extension(OID.authorityKeyIdentifier, false, der.seq([der.ctx(0, false, ca.subjectKeyId)])),
      der.extension(OID.subjectKeyIdentifier, false, der.octets(keyIdentifier(publicKey))),
    ];
  }

  /** The TLS context presenting a certificate for `host` (from the cache, or freshly minted). */
  secureContextFor(host: ParsedHost): tls.SecureContext {
    return this.certificateFor(host).secureContext;
  }

  /**
   * The cached or freshly minted leaf for `host`. Minting is synchronous, so two CONNECTs to the same
   * new host in this process can never mint twice: the first call finishes (and caches) before any
   * other JavaScript runs. Single flight comes for free; do not make this async without adding it.
   */
  certificateFor(host: ParsedHost): LeafCertificate {
    const key = host.host;
    const now = this.#now();
    const cached = this.#cache.get(key);
    if (cached !== undefined) {
      this.#cache.delete(key);
      if (cached.notAfterMs - now > this.#renewBeforeMs) {
        this.#cache.set(key, cached); // move to most recently used
        this.stats.cacheHits++;
        return cached;
      }
    }
    const leaf = this.#mint(host, now);
    this.#cache.set(key, leaf);
    this.stats.minted++;
    while (this.#cache.size > this.#cacheSize) {
      const oldest = this.#cache.keys().next();
      if (oldest.done === true) break;
      this.#cache.delete(oldest.value);
      this.stats.evictions++;
    }
    return leaf;
  }

  /** Number of cached hosts. */
  get size(): number {
    return this.#cache.size;
  }

  #mint(host: ParsedHost, now: number): LeafCertificate {
    const notAfterMs = Math.floor((now + this.#validityMs) / 1000) * 1000;
    const ip = ipBytes(host);
    // GeneralName: dNSName [2] IA5String | iPAddress [7] OCTET STRING (4 or 16 bytes), both IMPLICIT.
    const generalName = ip === null ? der.ctx(2, false, Buffer.from(host.host, 'latin1')) : der.ctx(7, false, ip);
    const withCn = host.host.length <= MAX_CN_LENGTH;
    const subject = withCn
      ? der.seq([der.set([der.seq([der.oid(OID.commonName), der.utf8(host.host)])])])
      : this.#emptyName;
    const extensions = [
      // RFC 5280 4.2.1.6: SAN MUST be critical when the subject is empty.
      der.extension(OID.subjectAltName, !withCn, der.seq([generalName])),
      ...this.#constantExtensions,
    ];
    const tbs = der.seq([
      this.#version,
      der.uint(randomSerial()),
      this.#sigAlg,
      this.#issuer,
      der.seq([der.time(now - HOUR_MS), der.time(notAfterMs)]),
      subject,
      this.#spki,
      der.ctx(3, true, [der.seq(extensions)]),
    ]);
    const certDer = signCertificate(der.encode(tbs), this.#caKey);
    const certPem = derToPem(certDer);
    const secureContext = tls.createSecureContext({ key: this.#keyPem, cert: certPem });
    return { host: host.host, certPem, certDer, notAfterMs, secureContext };
  }
}
