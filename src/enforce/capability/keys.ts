/**
 * The Ed25519 key files of stage 1 (docs/architecture.md "Enforce", docs/commands.md `firma token`): the
 * signing key pair `firma token issue` creates and signs with, and the public key the verifier trusts.
 * Keys follow the CA's rules: created once with `wx` (never overwritten or silently regenerated), private
 * key 0600 and refused when group/world accessible.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FirmaError } from '../../core/errors.js';
import { writeExclusive } from '../../core/secure-files.js';

/** Reads an Ed25519 public key PEM (SPKI). Throws FIRMA_CAPABILITY_KEY_MISSING / _INVALID. */
export function readPublicKeyFile(file: string): crypto.KeyObject {
  let pem: Buffer;
  try {
    pem = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new FirmaError(
        'FIRMA_CAPABILITY_KEY_MISSING',
        `capability public key ${file} does not exist: run \`firma token issue\` once (it creates the key pair), ` +
          'or install the issuer\'s public key at that path',
      );
    }
    throw new FirmaError('FIRMA_CAPABILITY_KEY_INVALID', `cannot read capability public key ${file}: ${code ?? 'error'}`, { cause: err });
  }
  let key: crypto.KeyObject;
  try {
    key = crypto.createPublicKey(pem);
  } catch {
    throw new FirmaError('FIRMA_CAPABILITY_KEY_INVALID', `${file} is not a PEM public key`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new FirmaError('FIRMA_CAPABILITY_KEY_INVALID', `${file} is not an Ed25519 public key (PASETO v4.public needs Ed25519)`);
  }
  return key;
}

function statIfExists(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw new FirmaError('FIRMA_KEY_INVALID', `cannot access ${p}: ${code ?? 'error'}`, { cause: err });
  }
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Reads the Ed25519 signing key, refusing one that group or others could read. */
export function loadSigningKey(file: string): crypto.KeyObject {
  const st = statIfExists(file);
  if (st === null) throw new FirmaError('FIRMA_KEY_INVALID', `capability signing key ${file} does not exist`);
  if (!st.isFile()) throw new FirmaError('FIRMA_KEY_INVALID', `${file} is not a regular file`);
  if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
    throw new FirmaError(
      'FIRMA_KEY_INSECURE',
      `${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); ` +
        `fix with: chmod 600 ${shellQuote(file)}`,
    );
  }
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(fs.readFileSync(file));
  } catch {
    // No cause: parser errors about key files are not worth the risk of echoing key material.
    throw new FirmaError('FIRMA_KEY_INVALID', `${file} is not a readable PEM private key`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new FirmaError('FIRMA_KEY_INVALID', `${file} is not an Ed25519 key (PASETO v4.public needs Ed25519)`);
  }
  return key;
}

function spkiPem(key: crypto.KeyObject): string {
  return crypto.createPublicKey(key).export({ type: 'spki', format: 'pem' }) as string;
}

function makeParentDir(file: string): void {
  const dir = path.dirname(file);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new FirmaError('FIRMA_KEY_INVALID', `cannot create ${dir}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err });
  }
}

/** Writes the public half if absent, or checks that the existing public key belongs to `key`. */
function ensurePublicMatches(key: crypto.KeyObject, signingKeyFile: string, publicKeyFile: string): void {
  const expected = spkiPem(key);
  if (statIfExists(publicKeyFile) === null) {
    makeParentDir(publicKeyFile);
    try {
      writeExclusive(publicKeyFile, expected, 0o644);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new FirmaError('FIRMA_KEY_INVALID', `cannot create ${publicKeyFile}`, { cause: err });
      }
      // Created concurrently: fall through and compare.
    }
  }
  let actual: string;
  try {
    actual = crypto.createPublicKey(fs.readFileSync(publicKeyFile)).export({ type: 'spki', format: 'pem' }) as string;
  } catch {
    throw new FirmaError('FIRMA_KEY_INVALID', `${publicKeyFile} is not a readable PEM public key`);
  }
  if (actual !== expected) {
    throw new FirmaError(
      'FIRMA_KEY_MISMATCH',
      `${publicKeyFile} does not match the signing key ${signingKeyFile}: tokens would not verify. ` +
        `Remove ${publicKeyFile} to re-derive it from the signing key`,
    );
  }
}

/**
 * Creates the Ed25519 key pair if neither file exists (parent folders 0700, private PKCS#8 PEM 0600,
 * public SPKI PEM 0644), otherwise validates it (mode, type, halves match; a missing public half is
 * re-derived). Never overwrites. A public key without its signing key is refused (FIRMA_KEY_INCOMPLETE):
 * regenerating would silently invalidate every token verifiers trust.
 */
export function ensureSigningKey(signingKeyFile: string, publicKeyFile: string): { created: boolean } {
  if (statIfExists(signingKeyFile) !== null) {
    ensurePublicMatches(loadSigningKey(signingKeyFile), signingKeyFile, publicKeyFile);
    return { created: false };
  }
  if (statIfExists(publicKeyFile) !== null) {
    throw new FirmaError(
      'FIRMA_KEY_INCOMPLETE',
      `${publicKeyFile} exists but the signing key ${signingKeyFile} does not; refusing to create a new pair. ` +
        `Restore ${signingKeyFile}, or remove ${publicKeyFile} to start over (tokens issued so far stop verifying)`,
    );
  }
  makeParentDir(signingKeyFile);
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  try {
    writeExclusive(signingKeyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      // Another `firma token issue` won the race: use its key.
      ensurePublicMatches(loadSigningKey(signingKeyFile), signingKeyFile, publicKeyFile);
      return { created: false };
    }
    throw new FirmaError('FIRMA_KEY_INVALID', `cannot create ${signingKeyFile}`, { cause: err });
  }
  try {
    ensurePublicMatches(privateKey, signingKeyFile, publicKeyFile);
  } catch (err) {
    // Do not leave a lone signing key behind; we created it a moment ago.
    fs.rmSync(signingKeyFile, { force: true });
    throw err;
  }
  return { created: true };
}
