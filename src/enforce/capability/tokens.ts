/**
 * The issuing side of stage 1, used by `firma token issue` / `firma token revoke` (docs/commands.md):
 * minting PASETO v4.public capability tokens, and appending to the revocation list.
 *
 * The claim grammar (action patterns, scope) lives in scope.ts so the issuer can never mint a token the
 * verifier would read differently; the key pair is handled in keys.ts.
 * Tokens are secrets: they are returned to the caller only, never logged or put into an error.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PublicProtocol } from 'paseto';
import { SecretKeyFromCryptoKey, SignFactory } from 'paseto/v4/public';
import { AGENT_ID } from '../../config/validators.js';
import { FirmaError } from '../../core/errors.js';
import { ensureSigningKey, loadSigningKey } from './keys.js';
import { parseRevocationList } from './revocation.js';
import { MAX_ACTIONS, isValidActionPattern, isValidTokenId, parseScope } from './scope.js';

const SECOND_MS = 1000;
const UNIT_MS = { s: SECOND_MS, m: 60 * SECOND_MS, h: 3600 * SECOND_MS, d: 86_400 * SECOND_MS } as const;
/** A capability is a standing grant; a year is already long. Re-issue rather than mint forever-tokens. */
export const MAX_TOKEN_TTL_MS = 365 * UNIT_MS.d;

function invalidInput(message: string): FirmaError {
  return new FirmaError('FIRMA_TOKEN_INVALID_INPUT', message);
}

/** `30s`, `15m`, `1h`, `7d` → milliseconds. Throws FIRMA_TOKEN_INVALID_INPUT. */
export function parseDuration(text: string): number {
  const m = /^([1-9][0-9]{0,8})([smhd])$/.exec(text.trim());
  if (m === null) {
    const shown = JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
    throw invalidInput(`invalid duration ${shown}: use a whole number and a unit, e.g. 30s, 15m, 1h, 7d`);
  }
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}

export interface IssueTokenOptions {
  readonly signingKeyFile: string;
  readonly publicKeyFile: string;
  /** `sub`: the agent id the token is bound to. */
  readonly agent: string;
  /** Action-class patterns: `*`, `payments.refund`, `llm.*`. */
  readonly actions: readonly string[];
  /** `HOST`, `*.example.com` or `HOST/PATH-PREFIX`. */
  readonly scope: string;
  /** Lifetime; whole seconds, 1 s .. 365 d. */
  readonly ttlMs: number;
  readonly now?: Date;
}

export interface IssuedToken {
  /** Secret: hand it to the agent, never log it. */
  readonly token: string;
  readonly jti: string;
  readonly exp: Date;
  /** The scope as written into the token (canonical form). */
  readonly scope: string;
  /** True when this call created the key pair (the CLI should say where the public key is). */
  readonly keyCreated: boolean;
}

function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Mints a PASETO v4.public capability token, creating the key pair on first use. */
export async function issueToken(opts: IssueTokenOptions): Promise<IssuedToken> {
  if (typeof opts.agent !== 'string' || !AGENT_ID.test(opts.agent)) {
    throw invalidInput('agent id must be 1-128 characters of A-Z a-z 0-9 . _ : @ -');
  }
  if (!Array.isArray(opts.actions) || opts.actions.length === 0) throw invalidInput('at least one action pattern is required (e.g. llm.*)');
  const actions = [...new Set(opts.actions.map((a) => (typeof a === 'string' ? a.trim() : '')))];
  if (actions.length > MAX_ACTIONS) throw invalidInput(`at most ${MAX_ACTIONS} action patterns per token`);
  for (const a of actions) {
    if (!isValidActionPattern(a)) {
      throw invalidInput(
        `invalid action pattern ${JSON.stringify(a.slice(0, 130))}: use *, an action class like payments.refund, ` +
          'or a prefix ending in .* like llm.* (lowercase a-z 0-9 _ - segments; * only as a whole last segment)',
      );
    }
  }
  const scope = parseScope(typeof opts.scope === 'string' ? opts.scope.trim() : '');
  if ('error' in scope) throw invalidInput(scope.error);
  const ttl = opts.ttlMs;
  if (!Number.isSafeInteger(ttl) || ttl < SECOND_MS || ttl > MAX_TOKEN_TTL_MS) {
    throw invalidInput('ttl must be between 1s and 365d');
  }
  const nowMs = (opts.now ?? new Date()).getTime();
  if (!Number.isFinite(nowMs)) throw invalidInput('now must be a valid date');

  const { created } = ensureSigningKey(opts.signingKeyFile, opts.publicKeyFile);
  const keyObject = loadSigningKey(opts.signingKeyFile);
  const pkcs8 = keyObject.export({ type: 'pkcs8', format: 'der' });
  // Extractable only because paseto derives the public half via JWK export on Node 20 (no getPublicKey).
  const cryptoKey = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, true, ['sign']);
  const secretKey = await SecretKeyFromCryptoKey(cryptoKey);

  // Whole seconds, like PASETO's own registered-claim format; exp is what the verifier will enforce.
  const iatMs = Math.floor(nowMs / SECOND_MS) * SECOND_MS;
  const expMs = iatMs + Math.floor(ttl / SECOND_MS) * SECOND_MS;
  const jti = crypto.randomBytes(16).toString('base64url');
  const claims = { jti, sub: opts.agent, actions, scope: scope.text, iat: isoSeconds(iatMs), exp: isoSeconds(expMs) };
  const token = await new PublicProtocol(SignFactory).Sign(secretKey, claims, { now: new Date(iatMs) });
  return { token, jti, exp: new Date(expMs), scope: scope.text, keyCreated: created };
}

/**
 * Appends `jti` to the revocation list (one id per line) in a single O_APPEND write, creating the file
 * 0644 (and its folder 0700) if needed. Idempotent: an id already listed is not added again.
 */
export function revokeToken(revocationFile: string, jti: string): { added: boolean } {
  if (typeof jti !== 'string' || !isValidTokenId(jti.trim())) {
    // Never echo the input: an operator may paste the token itself by mistake.
    const hint = typeof jti === 'string' && jti.startsWith('v4.') ? ' (that looks like a token; pass its id, shown by `firma token issue`)' : '';
    throw invalidInput(`token id must be 1-128 characters of A-Z a-z 0-9 _ -${hint}`);
  }
  const id = jti.trim();
  let existing = '';
  try {
    existing = fs.readFileSync(revocationFile, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new FirmaError('FIRMA_REVOCATION_WRITE_FAILED', `cannot read ${revocationFile}: ${code ?? 'error'}`, { cause: err });
  }
  if (parseRevocationList(existing).has(id)) return { added: false };
  try {
    fs.mkdirSync(path.dirname(revocationFile), { recursive: true, mode: 0o700 });
    // A hand-edited file may lack its final newline; never glue our id onto someone else's line.
    const line = existing !== '' && !existing.endsWith('\n') ? `\n${id}\n` : `${id}\n`;
    const fd = fs.openSync(revocationFile, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o644);
    try {
      fs.writeSync(fd, line);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    throw new FirmaError('FIRMA_REVOCATION_WRITE_FAILED', `cannot append to ${revocationFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, {
      cause: err,
    });
  }
  return { added: true };
}
