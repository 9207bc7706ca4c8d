import type { ReplyReason } from './reasons.js';

/**
 * Every error the sidecar raises on purpose is a FirmaError with a stable `code` from the catalogue
 * below, so callers branch on codes rather than on message text (undici's lib/core/errors.js and
 * fastify's convention). Messages are for humans and must never contain secret material.
 *
 * The catalogue (docs/errors.md) says what each code means and where it shows. The constructor takes
 * only its keys, so an uncatalogued code does not compile; test/unit/core/catalogue.test.ts also fails
 * on a code no source file raises any more.
 */
export class FirmaError extends Error {
  readonly code: FirmaErrorCode;
  constructor(code: FirmaErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FirmaError';
    this.code = code;
  }
}

/** Narrowing helper for `catch (err: unknown)` blocks; any error's code (Node's and undici's too). */
export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

/**
 * A failure shaped as Node reports a system call's (`code` such as ETIMEDOUT or ENOTFOUND, `syscall`),
 * for the places the sidecar stands in for one (its own connect deadline, its resolver wrapper). Those
 * codes are the operating system's, not ours, so they are never FirmaErrors.
 */
export function systemError<T extends Record<string, unknown>>(code: string, syscall: string, message: string, extra?: T, cause?: unknown): Error & { code: string; syscall: string } & T {
  const err = new Error(message, cause === undefined ? undefined : { cause });
  return Object.assign(err, { code, syscall }, extra);
}

/** One entry of the catalogue. Plain sentences: docs/errors.md shows them as table cells. */
export interface FirmaErrorCodeInfo {
  readonly meaning: string;
  /** The reply the agent gets when it happens during a request (its status and reason); null when none does. */
  readonly reply: { readonly status: number; readonly reasons: readonly ReplyReason[] } | null;
  /** What the process or the CLI does with it. */
  readonly effect: string;
}

const START = '`firma start` exits 1 ("firma: cannot start: …"); a reload is rejected and the running configuration keeps serving.';
const START_ONLY = '`firma start` exits 1 ("firma: cannot start: …").';
const TOKEN_ISSUE = '`firma token issue` prints the message and exits 1.';
const CA_CLI = '`firma ca init` or `firma ca export` prints the message and exits 1; `firma start` exits 1.';
const DISPATCH_502 = { status: 502, reasons: ['network'] } as const;
const VAULT_CAUSE = { reply: { status: 502, reasons: ['credential'] }, effect: 'The cause of a FIRMA_CREDENTIAL_UNAVAILABLE; its message is in the reply.' } as const;

export const FIRMA_ERROR_CODES = Object.freeze({
  // Configuration (src/config and the rule loaders that report through ConfigError).
  FIRMA_CONFIG_INVALID: {
    meaning: 'firma.toml, a mapping file, the Cedar schema or a policy is invalid; every issue is listed as file:line:col: key: message.',
    reply: null,
    effect: 'Every command that reads the config (and `firma check`) prints the issues and exits 1; a reload is rejected and the running configuration keeps serving.',
  },

  // Capability tokens and their keys (src/enforce).
  FIRMA_TOKEN_FILE_UNREADABLE: { meaning: 'The sidecar\'s own [sidecar.capabilities] token_file cannot be read.', reply: null, effect: START },
  FIRMA_CAPABILITY_KEY_MISSING: { meaning: 'Capabilities are required but the capability public key file does not exist.', reply: null, effect: START },
  FIRMA_CAPABILITY_KEY_INVALID: { meaning: 'The capability public key cannot be read, is not PEM, or is not Ed25519.', reply: null, effect: START },
  FIRMA_CAPABILITY_REVOCATION_UNREADABLE: {
    meaning: 'The revocation file exists but cannot be read when the verifier starts (later read failures keep the list already loaded).',
    reply: null,
    effect: START,
  },
  FIRMA_TOKEN_INVALID_INPUT: {
    meaning: 'An argument of `firma token issue` or `firma token revoke` is invalid: agent id, actions, scope, ttl or token id.',
    reply: null,
    effect: 'The command prints the message and exits 1.',
  },
  FIRMA_KEY_INVALID: {
    meaning: 'The capability signing key pair is missing, unreadable, not Ed25519, or cannot be created.',
    reply: null,
    effect: `${TOKEN_ISSUE} When start or a reload creates the pair (required = true, neither file exists) and cannot: ${START}`,
  },
  FIRMA_KEY_INSECURE: { meaning: 'The capability signing key is readable by group or others (the message gives the chmod).', reply: null, effect: TOKEN_ISSUE },
  FIRMA_KEY_MISMATCH: { meaning: 'The capability public key file does not belong to the signing key: tokens would not verify.', reply: null, effect: TOKEN_ISSUE },
  FIRMA_KEY_INCOMPLETE: { meaning: 'The public key exists without its signing key; a new pair is not created (it would invalidate every token).', reply: null, effect: TOKEN_ISSUE },
  FIRMA_REVOCATION_WRITE_FAILED: { meaning: '`firma token revoke` cannot read or append to the revocation file.', reply: null, effect: '`firma token revoke` exits 1.' },

  // Cedar policies (src/enforce/policy/).
  FIRMA_POLICY_INTERNAL: {
    meaning: 'Cedar refused to pre-parse a subset of policies that had validated (a bug, not a policy mistake).',
    reply: { status: 403, reasons: ['policy_error'] },
    effect: `For an action class the mapping announces: ${START} For another class, at its first request: that request is denied.`,
  },

  // The audit log (src/audit).
  FIRMA_AUDIT_KEY_INSECURE: { meaning: 'The audit private key is readable by group or others (the message gives the chmod).', reply: null, effect: START_ONLY },
  FIRMA_AUDIT_KEY_INVALID: { meaning: 'The audit private key is not a PEM private key, or not Ed25519.', reply: null, effect: START_ONLY },
  FIRMA_AUDIT_CORRUPT: {
    meaning: 'The last complete line of the existing audit file is too long or not a valid event (edited, or signed by another key): the chain is not continued. A torn last line (no newline) is not this: it is moved aside.',
    reply: null,
    effect: `${START_ONLY} Run \`firma audit verify\` to see what is wrong with the line.`,
  },
  FIRMA_AUDIT_OPEN: { meaning: 'The audit file cannot be opened for appending.', reply: null, effect: START_ONLY },
  FIRMA_AUDIT_REPAIR: {
    meaning: 'The torn last line of the audit file cannot be cut off (the file cannot be opened for writing or truncated, e.g. a read-only file system).',
    reply: null,
    effect: `${START_ONLY} \`firma audit repair\` exits 1 the same way.`,
  },
  FIRMA_AUDIT_UNAVAILABLE: {
    meaning: 'At stop, queued audit events could not be written (while running, the same condition refuses requests with audit_unavailable).',
    reply: null,
    effect: 'Logged ("audit log not fully written at stop"); the stop completes.',
  },

  // Credentials and Vault (src/connector/credentials.ts, vault.ts).
  FIRMA_CREDENTIAL_UNAVAILABLE: {
    meaning: 'A credential entry\'s value cannot be obtained: its variable is unset or unusable, or Vault failed (one of the FIRMA_VAULT_* causes).',
    reply: { status: 502, reasons: ['credential'] },
    effect: `Found at start (mode = "basic" values are read once, then): ${START} At request time (mode = "vault"): that request gets the reply, and the audit outcome's error_code is this code.`,
  },
  FIRMA_VAULT_UNREACHABLE: { meaning: 'Vault refused or reset the connection, failed DNS or TLS, or gave no complete answer within [vault] timeout_ms.', ...VAULT_CAUSE },
  FIRMA_VAULT_AUTH: { meaning: 'No usable Vault token: the token, AppRole id or Kubernetes JWT source is missing or empty, the login was refused, or the token was rejected (401/403).', ...VAULT_CAUSE },
  FIRMA_VAULT_NOT_FOUND: { meaning: 'No secret at that KV v2 path (404), or its current version is deleted.', ...VAULT_CAUSE },
  FIRMA_VAULT_FIELD_MISSING: { meaning: 'The secret exists but has no such field.', ...VAULT_CAUSE },
  FIRMA_VAULT_FIELD_INVALID: { meaning: 'The field is not a non-empty string, or holds characters a header value cannot carry.', ...VAULT_CAUSE },
  FIRMA_VAULT_SERVER: { meaning: 'Vault answered with another status: sealed or standby (503), rate limited (429), 5xx, 400.', ...VAULT_CAUSE },
  FIRMA_VAULT_BAD_RESPONSE: { meaning: 'Vault answered 2xx but not in the documented shape (or over the size bound).', ...VAULT_CAUSE },
  FIRMA_VAULT_CLOSED: { meaning: 'The Vault client was closed (the sidecar is stopping, or a reload replaced it).', ...VAULT_CAUSE },

  // Rate limits (src/connector/rate-limit*.ts).
  FIRMA_RATE_LIMIT_CONFIG: { meaning: 'A rate-limit bucket has rps <= 0 or burst < 1 (the config schema refuses such values first).', reply: null, effect: START },
  FIRMA_RATE_LIMIT_UNKNOWN_BUCKET: {
    meaning: 'A request asked for a rate-limit bucket that is not configured: refused rather than unlimited.',
    reply: DISPATCH_502,
    effect: 'The request is not dispatched ("dispatch failed" logged); a bypassed tunnel is closed.',
  },
  FIRMA_RATE_LIMIT_REDIS_REPLY: {
    meaning: 'The Redis rate-limit script answered in an unexpected shape: treated as Redis being down.',
    reply: { status: 503, reasons: ['limiter_unavailable'] },
    effect: 'Logged once as rate_limit_redis_down; [redis] on_error decides (deny: the reply; local: per-replica buckets).',
  },

  // Upstream dispatch (src/connector).
  FIRMA_DESTINATION_DENIED: {
    meaning: 'The SSRF guard refused the address the host resolved to; the reply\'s reason says which class (private_address, metadata_address, …).',
    reply: { status: 403, reasons: ['private_address', 'reserved_address', 'metadata_address', 'loop', 'unresolvable', 'destination_denied'] },
    effect: 'Nothing is sent upstream; the audit outcome\'s error_code is this code (error network).',
  },
  FIRMA_UPSTREAM_DEADLINE: {
    meaning: 'The host\'s timeout_ms passed before the upstream sent response headers (connect included).',
    reply: { status: 504, reasons: ['timeout'] },
    effect: 'The request is aborted; the audit outcome\'s error_code is this code.',
  },
  FIRMA_DIAL_FAILED: { meaning: 'Opening the upstream socket threw something that is not an Error.', reply: DISPATCH_502, effect: 'The audit outcome\'s error_code is this code.' },
  FIRMA_DIAL_UNSUPPORTED: { meaning: 'undici asked the guarded connector to upgrade an existing socket (a proxy agent); never done by the sidecar itself.', reply: DISPATCH_502, effect: 'The audit outcome\'s error_code is this code.' },
  FIRMA_DIAL_INVALID_PORT: { meaning: 'undici passed an upstream port outside 1-65535.', reply: DISPATCH_502, effect: 'The audit outcome\'s error_code is this code.' },
  FIRMA_INVALID_ADDRESS: { meaning: 'classifyAddress() was given something that is not an IP address (a programming error).', reply: null, effect: 'Thrown to the caller; the request path never calls it with a name.' },
  FIRMA_NOT_ALLOWED: {
    meaning: 'The connector was handed an Allowed decision the pipeline did not issue (a forged value).',
    reply: DISPATCH_502,
    effect: 'Nothing is sent upstream; the failure is logged as a bug.',
  },
  FIRMA_CLIENT_CLOSED: { meaning: 'The agent closed its connection mid-exchange: the abort reason given to undici.', reply: null, effect: 'Never reported: the audit outcome has no error (status 499 when no upstream status) and the log line says client_aborted.' },
  FIRMA_SHUTDOWN_CUT: {
    meaning: 'The sidecar was stopping and the exchange was still running when drain_timeout_ms passed: the drain closed its connection.',
    reply: null,
    effect: 'The agent\'s connection is closed mid-answer; the audit outcome\'s error is shutdown with this code, and the stop lifecycle event counts the cuts.',
  },
  FIRMA_DISPATCH_ABANDONED: { meaning: 'The abort reason for a request already answered before undici could start it.', reply: null, effect: 'Never reported.' },

  // The local CA (src/intercept/tls/ca.ts).
  FIRMA_CA_MISSING: { meaning: 'No CA in ca_dir: neither ca.crt nor ca.key exists.', reply: null, effect: '`firma ca export` exits 1 and says to run `firma ca init` (`firma start` creates the CA instead).' },
  FIRMA_CA_CORRUPT: {
    meaning: 'The CA is incomplete, unreadable, not a matching ECDSA P-256 CA pair, expired or not yet valid, or its files cannot be created.',
    reply: null,
    effect: CA_CLI,
  },
  FIRMA_CA_INSECURE: { meaning: 'The CA key is readable by group or others (the message gives the chmod).', reply: null, effect: CA_CLI },
} satisfies Record<string, FirmaErrorCodeInfo>);

export type FirmaErrorCode = keyof typeof FIRMA_ERROR_CODES;
