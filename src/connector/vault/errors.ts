import { FirmaError } from '../../core/errors.js';
import { field } from './json.js';

/**
 * The Vault client's errors (docs/errors.md). Secret hygiene: tokens, role/secret ids, JWTs and secret
 * values never enter an error message, and no error carries a `cause` — a JSON parse error or a socket
 * error could quote the bytes it choked on. Vault's own error strings are quoted (they are how an
 * operator learns "permission denied" from "sealed"), truncated and with every credential the client
 * holds scrubbed out.
 */

export type VaultErrorCode =
  /** Connection refused/reset, DNS, TLS, or no complete answer within timeout_ms. */
  | 'FIRMA_VAULT_UNREACHABLE'
  /** No usable token: env var/file missing, login refused, token or policy rejected (401/403). */
  | 'FIRMA_VAULT_AUTH'
  /** No secret at that KV v2 path (404), or its current version is deleted. */
  | 'FIRMA_VAULT_NOT_FOUND'
  /** The secret exists but has no such field. */
  | 'FIRMA_VAULT_FIELD_MISSING'
  /** The field is not a non-empty string (a credential must be one). */
  | 'FIRMA_VAULT_FIELD_INVALID'
  /** Vault answered with another status: sealed/standby (503), rate limited (429), 5xx, 400. */
  | 'FIRMA_VAULT_SERVER'
  /** 2xx, but not the documented response shape. */
  | 'FIRMA_VAULT_BAD_RESPONSE'
  /** close() was called. */
  | 'FIRMA_VAULT_CLOSED';

export class VaultError extends FirmaError {
  override readonly code: VaultErrorCode;
  /** Vault's HTTP status when it answered; null when it did not (or the call was never made). */
  readonly status: number | null;
  constructor(code: VaultErrorCode, message: string, status: number | null = null) {
    // No `cause`, on purpose: see the module comment.
    super(code, message);
    this.name = 'VaultError';
    this.code = code;
    this.status = status;
  }
}

export function closedError(): VaultError {
  return new VaultError('FIRMA_VAULT_CLOSED', 'the Vault client is closed');
}

export function badShape(what: string, expected: string): VaultError {
  return new VaultError('FIRMA_VAULT_BAD_RESPONSE', `Vault ${what} returned an unexpected response (${expected})`);
}

/** Quotes Vault's error strings into our messages with every credential in play scrubbed out. */
export class VaultErrorQuoter {
  /** Credentials used in the current call, scrubbed from any Vault error text we quote. */
  readonly inFlight = new Set<string>();
  /** The credentials held right now (the session token, the token from the environment). */
  readonly #held: () => readonly (string | undefined)[];

  constructor(held: () => readonly (string | undefined)[]) {
    this.#held = held;
  }

  /** An answer with an unexpected status, as a VaultError (a 2xx is a bad shape). */
  status(reply: { readonly status: number; readonly body: unknown }, what: string, secrets: readonly string[] = []): VaultError {
    const hint = reply.status === 503 ? ' (sealed or standby?)' : reply.status === 429 ? ' (rate limited)' : '';
    if (reply.status >= 200 && reply.status < 300) return badShape(what, `HTTP ${reply.status}`);
    return new VaultError('FIRMA_VAULT_SERVER', `Vault ${what} failed: HTTP ${reply.status}${hint}${this.errors(reply.body, secrets)}`, reply.status);
  }

  /** `: msg; msg` from Vault's `{ "errors": [...] }`, scrubbed and bounded; "" when there are none. */
  errors(body: unknown, extra: readonly string[] = []): string {
    const errors = field(body, 'errors');
    if (!Array.isArray(errors)) return '';
    let text = errors.filter((e): e is string => typeof e === 'string').join('; ');
    const secrets = [...this.inFlight, ...extra];
    for (const s of this.#held()) if (s !== undefined) secrets.push(s);
    for (const s of secrets) if (s.length >= 4) text = text.split(s).join('[redacted]');
    text = text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
    if (text.length > 200) text = `${text.slice(0, 200)}…`;
    return text === '' ? '' : `: ${text}`;
  }
}
