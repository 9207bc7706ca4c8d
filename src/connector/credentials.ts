/**
 * Credential injection: which configured credential applies to an allowed request, and its value.
 * Runs after the decision and before dispatch (docs/architecture.md); the agent never holds the secret.
 *
 * Matching is exact and fails towards "no credential": a credential goes to the host (and port) it
 * names, and over plain http only when the entry says `allow_plaintext = true`.
 */
import type { FirmaConfig } from '../config/index.js';
import { FirmaError } from '../core/errors.js';
import type { Target } from '../core/envelope.js';
import { VaultClient, type VaultClientOptions } from './vault/client.js';
import { VaultError } from './vault/errors.js';

export type CredentialEntry = FirmaConfig['credentials'][number];

/** Why `match` said what it said (for log lines; carries no secret). */
export type MatchReason =
  | 'matched'
  /** No entry names this host. */
  | 'no_entry'
  /** Entries name this host, but for another port. */
  | 'port_mismatch'
  /** An entry matches host and port, but the request is plain http and the entry lacks allow_plaintext. */
  | 'plaintext_refused';

export interface CredentialMatch {
  readonly entry: CredentialEntry | null;
  readonly reason: MatchReason;
}

export interface ResolvedCredential {
  readonly header: string;
  readonly value: string;
  /** Lower-case names removed from the agent's request: `remove_headers` and `header` (built once per entry). */
  readonly removes: ReadonlySet<string>;
}

export const CREDENTIAL_UNAVAILABLE = 'FIRMA_CREDENTIAL_UNAVAILABLE';

export class CredentialError extends FirmaError {
  override readonly code: typeof CREDENTIAL_UNAVAILABLE;
  /** The configured host (as written), for logs. */
  readonly host: string;
  readonly source: 'env' | 'vault';
  /** The underlying typed cause (e.g. FIRMA_VAULT_UNREACHABLE), or null. Never a value. */
  readonly sourceCode: string | null;
  constructor(entry: CredentialEntry, why: string, sourceCode: string | null = null) {
    // The message names host, source and reason; never the value (and no `cause`, which could).
    super(CREDENTIAL_UNAVAILABLE, `the credential for ${entry.host.text} (${describeSource(entry)}) is unavailable: ${why}`);
    this.name = 'CredentialError';
    this.code = CREDENTIAL_UNAVAILABLE;
    this.host = entry.host.text;
    this.source = entry.mode === 'basic' ? 'env' : 'vault';
    this.sourceCode = sourceCode;
  }
}

export class CredentialInjector {
  /** Entries by canonical host; config forbids duplicate host+header, so lists are short. */
  readonly #byHost = new Map<string, CredentialEntry[]>();
  /** `basic` values, read once at construction (see the constructor comment). */
  readonly #basic = new Map<CredentialEntry, string>();
  readonly #removes = new Map<CredentialEntry, ReadonlySet<string>>();
  readonly #vault: VaultClient | null;

  /**
   * `basic` values are read from `env` here, once. A running process's environment cannot be changed
   * from outside, so re-reading per request would not let operators rotate anything (rotation is a
   * restart either way); reading now keeps the value the startup check saw, and a missing or
   * unusable variable stops startup instead of failing requests one by one.
   */
  constructor(entries: readonly CredentialEntry[], vault: VaultClient | null, env: NodeJS.ProcessEnv = process.env) {
    this.#vault = vault;
    for (const entry of entries) {
      const list = this.#byHost.get(entry.host.host);
      if (list === undefined) this.#byHost.set(entry.host.host, [entry]);
      else list.push(entry);
      this.#removes.set(entry, new Set([...entry.remove_headers, entry.header].map((h) => h.toLowerCase())));
      if (entry.mode === 'basic') {
        const name = entry.value_from_env;
        if (name === undefined) throw new CredentialError(entry, 'mode = "basic" needs value_from_env');
        const value = env[name];
        if (value === undefined || value === '') throw new CredentialError(entry, `environment variable ${name} is not set`);
        const bad = headerValueProblem(entry.prefix + value);
        if (bad !== null) throw new CredentialError(entry, `environment variable ${name} ${bad}`);
        this.#basic.set(entry, value);
      } else {
        if (entry.secret_path === undefined) throw new CredentialError(entry, 'mode = "vault" needs secret_path');
        if (vault === null) throw new CredentialError(entry, 'no Vault client was configured');
      }
    }
  }

  /** The credential for this target, or null. See `explain` for why. */
  match(target: Target): CredentialEntry | null {
    return this.explain(target).entry;
  }

  /** `match` with its reason, for log lines. */
  explain(target: Target): CredentialMatch {
    const list = this.#byHost.get(target.host);
    if (list === undefined) return { entry: null, reason: 'no_entry' };
    let reason: MatchReason = 'port_mismatch';
    for (const entry of list) {
      const port = entry.host.port ?? (target.scheme === 'https' ? 443 : 80);
      if (port !== target.port) continue;
      // An https-only credential must never go out in clear text, whatever port it names.
      if (target.scheme === 'http' && !entry.allow_plaintext) {
        reason = 'plaintext_refused';
        continue;
      }
      return { entry, reason: 'matched' };
    }
    return { entry: null, reason };
  }

  /**
   * Every matching entry (config allows several headers for one host, e.g. Authorization and
   * X-Api-Key); `match` returns the first of these.
   */
  matchAll(target: Target): CredentialEntry[] {
    const list = this.#byHost.get(target.host) ?? [];
    return list.filter((entry) => {
      const port = entry.host.port ?? (target.scheme === 'https' ? 443 : 80);
      return port === target.port && (target.scheme === 'https' || entry.allow_plaintext);
    });
  }

  /** Header and value to inject; rejects with CredentialError (safe message) when it cannot be had. */
  async resolve(entry: CredentialEntry): Promise<ResolvedCredential> {
    if (entry.mode === 'basic') {
      const value = this.#basic.get(entry);
      if (value === undefined) throw new CredentialError(entry, 'not a configured credential entry');
      return { header: entry.header, value: entry.prefix + value, removes: this.#removesOf(entry) };
    }
    const ref = entry.secret_path;
    if (ref === undefined || this.#vault === null) throw new CredentialError(entry, 'no Vault secret_path or client');
    let secret: string;
    try {
      secret = await this.#vault.readField(ref);
    } catch (err: unknown) {
      // VaultError messages are written to be safe (path, field, status; never a token or value).
      if (err instanceof VaultError) throw new CredentialError(entry, err.message, err.code);
      throw new CredentialError(entry, 'unexpected error reading Vault', null);
    }
    const value = entry.prefix + secret;
    const bad = headerValueProblem(value);
    if (bad !== null) throw new CredentialError(entry, `the Vault field ${bad}`, 'FIRMA_VAULT_FIELD_INVALID');
    return { header: entry.header, value, removes: this.#removesOf(entry) };
  }

  #removesOf(entry: CredentialEntry): ReadonlySet<string> {
    return this.#removes.get(entry) ?? new Set([entry.header.toLowerCase()]);
  }
}

/**
 * Build the injector for a validated config. The Vault client exists only when some entry uses it
 * (no Vault traffic, timers or sockets otherwise). `injector` is null when no credentials are configured.
 */
export function createCredentialInjector(
  config: Pick<FirmaConfig, 'credentials' | 'vault'>,
  opts: VaultClientOptions = {},
): { injector: CredentialInjector | null; close: () => Promise<void> } {
  if (config.credentials.length === 0) return { injector: null, close: async () => {} };
  const vault = config.credentials.some((c) => c.mode === 'vault') ? new VaultClient(config.vault, opts) : null;
  try {
    const injector = new CredentialInjector(config.credentials, vault, opts.env ?? process.env);
    return { injector, close: async () => vault?.close() };
  } catch (err: unknown) {
    void vault?.close();
    throw err;
  }
}

function describeSource(entry: CredentialEntry): string {
  if (entry.mode === 'basic') return `env ${entry.value_from_env ?? '?'}`;
  const ref = entry.secret_path;
  return ref === undefined ? 'vault' : `vault ${ref.path}#${ref.field}`;
}

/**
 * Why a value cannot be an HTTP header value (RFC 9110 field-value: no CR, LF, NUL or other controls
 * except tab), or null. Checked here so a bad secret fails as a credential error, not as a malformed
 * upstream request — and so CR/LF can never smuggle a header.
 */
function headerValueProblem(value: string): string | null {
  return /[\x00-\x08\x0a-\x1f\x7f]/.test(value) ? 'contains control characters not allowed in an HTTP header value' : null;
}
