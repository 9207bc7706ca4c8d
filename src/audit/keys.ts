import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FirmaError } from '../core/errors.js';

export class AuditKeyError extends FirmaError {
  constructor(code: 'FIRMA_AUDIT_KEY_INSECURE' | 'FIRMA_AUDIT_KEY_INVALID', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'AuditKeyError';
  }
}

export interface AuditKeys {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** SPKI PEM: what `firma audit key` exports and `firma audit verify` needs. */
  readonly publicKeyPem: string;
  readonly privateKeyPath: string;
  readonly publicKeyPath: string;
}

/** File names inside the key dir (firma.toml `audit.key_dir`). */
export const AUDIT_PRIVATE_KEY_FILE = 'audit.key';
export const AUDIT_PUBLIC_KEY_FILE = 'audit.pub';

function isNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'ENOENT';
}
function isExists(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'EEXIST';
}

/**
 * Loads the Ed25519 audit key pair from `dir`, creating it on first use: private key PKCS#8 PEM 0600
 * (created with 'wx' so two starting processes never overwrite each other's key), public key SPKI PEM
 * 0644. A private key readable by group or others is refused: anyone who can read it can forge the log.
 * Synchronous on purpose: it runs once at start-up, before any request is served.
 */
export function loadOrCreateAuditKeys(dir: string): AuditKeys {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const privateKeyPath = join(dir, AUDIT_PRIVATE_KEY_FILE);
  const publicKeyPath = join(dir, AUDIT_PUBLIC_KEY_FILE);

  let privatePem: string;
  try {
    const st = statSync(privateKeyPath);
    if ((st.mode & 0o077) !== 0) {
      throw new AuditKeyError(
        'FIRMA_AUDIT_KEY_INSECURE',
        `audit private key ${privateKeyPath} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); fix with: chmod 600 ${privateKeyPath}`,
      );
    }
    privatePem = readFileSync(privateKeyPath, 'utf8');
  } catch (err: unknown) {
    if (!isNotFound(err)) throw err;
    const pair = generateKeyPairSync('ed25519');
    privatePem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    try {
      writeFileSync(privateKeyPath, privatePem, { mode: 0o600, flag: 'wx' });
    } catch (werr: unknown) {
      // Another process created it between our stat and write: use theirs.
      if (!isExists(werr)) throw werr;
      return loadOrCreateAuditKeys(dir);
    }
  }

  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(privatePem);
  } catch (err: unknown) {
    throw new AuditKeyError('FIRMA_AUDIT_KEY_INVALID', `audit private key ${privateKeyPath} is not a PEM private key`, { cause: err });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new AuditKeyError('FIRMA_AUDIT_KEY_INVALID', `audit private key ${privateKeyPath} is ${String(privateKey.asymmetricKeyType)}, expected ed25519`);
  }
  const publicKey = createPublicKey(privateKey);
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();

  // The public key is derived, so it is (re)written whenever missing or stale rather than trusted.
  let existing: string | null = null;
  try {
    existing = readFileSync(publicKeyPath, 'utf8');
  } catch (err: unknown) {
    if (!isNotFound(err)) throw err;
  }
  if (existing !== publicKeyPem) writeFileSync(publicKeyPath, publicKeyPem, { mode: 0o644 });

  return { privateKey, publicKey, publicKeyPem, privateKeyPath, publicKeyPath };
}

/**
 * A short name for an audit public key: `sha256:` and the first 32 hex digits of the SHA-256 of its
 * SPKI DER. The start event records it, so a verifier can tell "signed by another key" from an edited
 * line (docs/audit.md "Verifying").
 */
export function keyFingerprint(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return `sha256:${createHash('sha256').update(der).digest('hex').slice(0, 32)}`;
}
