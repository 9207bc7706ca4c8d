import type { FirmaConfig } from '../../config/index.js';
import { VaultAuth } from './auth.js';
import { VaultError, VaultErrorQuoter, closedError } from './errors.js';
import { VaultHttp } from './http.js';
import { field, isRecord } from './json.js';
import { VaultLease } from './lease.js';

/**
 * A HashiCorp Vault client for credential injection: KV v2 reads, authenticated by a token from the
 * environment, AppRole or Kubernetes service-account login (auth.ts), the token kept renewed
 * (lease.ts). It speaks Vault's documented HTTP API (http.ts), so the same code runs against a real
 * Vault. No error it raises quotes a credential or a secret value (errors.ts).
 */

export type VaultConfig = FirmaConfig['vault'];

/** A KV v2 field: `path` is the API path after /v1/ (e.g. `secret/data/stripe`). */
export interface VaultFieldRef {
  readonly path: string;
  readonly field: string;
}

export interface VaultClientOptions {
  /** Where token_env / role_id_env / secret_id_env are read; default process.env (read at each use). */
  readonly env?: NodeJS.ProcessEnv;
  /** Clock for cache and token expiry (epoch ms); default Date.now. */
  readonly now?: () => number;
}

export class VaultClient {
  readonly #cfg: VaultConfig;
  readonly #now: () => number;
  readonly #http: VaultHttp;
  readonly #quote: VaultErrorQuoter;
  readonly #auth: VaultAuth;
  readonly #lease: VaultLease;
  readonly #cache = new Map<string, { readonly value: string; readonly expiresAt: number }>();
  /** In-flight KV reads by path, so N concurrent requests for one secret cost one HTTP read. */
  readonly #reads = new Map<string, Promise<Record<string, unknown>>>();

  constructor(cfg: VaultConfig, opts: VaultClientOptions = {}) {
    this.#cfg = cfg;
    this.#now = opts.now ?? Date.now;
    this.#http = new VaultHttp(cfg);
    this.#quote = new VaultErrorQuoter(() => [
      this.#lease.current?.token,
      cfg.auth === 'token' ? this.#auth.envToken() : undefined,
    ]);
    this.#auth = new VaultAuth(cfg, opts.env ?? process.env, this.#now, this.#http, this.#quote);
    this.#lease = new VaultLease(this.#auth, this.#now, () => this.#http.closed);
  }

  /** The value of one KV v2 field; cached for cache_ttl_ms, fetched once per path however many ask. */
  async readField(ref: VaultFieldRef): Promise<string> {
    if (this.#http.closed) throw closedError();
    const key = `${ref.path}#${ref.field}`;
    const hit = this.#cache.get(key);
    if (hit !== undefined && this.#now() < hit.expiresAt) return hit.value;

    let flight = this.#reads.get(ref.path);
    if (flight === undefined) {
      flight = this.#readPath(ref.path).finally(() => this.#reads.delete(ref.path));
      this.#reads.set(ref.path, flight);
    }
    const data = await flight;
    const raw = Object.hasOwn(data, ref.field) ? data[ref.field] : undefined;
    if (raw === undefined) {
      throw new VaultError('FIRMA_VAULT_FIELD_MISSING', `Vault secret ${ref.path} has no field "${ref.field}"`);
    }
    if (typeof raw !== 'string' || raw === '') {
      const got = typeof raw === 'string' ? 'an empty string' : raw === null ? 'null' : `a ${Array.isArray(raw) ? 'list' : typeof raw}`;
      throw new VaultError('FIRMA_VAULT_FIELD_INVALID', `Vault secret ${ref.path} field "${ref.field}" is ${got}, not a non-empty string`);
    }
    if (this.#cfg.cache_ttl_ms > 0 && !this.#http.closed) {
      this.#cache.set(key, { value: raw, expiresAt: this.#now() + this.#cfg.cache_ttl_ms });
    }
    return raw;
  }

  /** Stop renewal timers, forget cached values and tokens, close connections. Idempotent. */
  async close(): Promise<void> {
    if (this.#http.closed) return;
    const closing = this.#http.close();
    this.#lease.close();
    this.#cache.clear();
    this.#quote.inFlight.clear();
    await closing;
  }

  async #readPath(path: string): Promise<Record<string, unknown>> {
    let session = await this.#lease.acquire();
    let reply = await this.#http.call('GET', path, session.token, null, `read of ${path}`);
    if (reply.status === 401 || reply.status === 403) {
      // Revoked or expired under us (or the token in the env was rotated): one fresh token, one retry.
      this.#lease.drop(session);
      if (this.#cfg.auth !== 'token' || this.#auth.envToken() !== session.token) {
        session = await this.#lease.acquire();
        reply = await this.#http.call('GET', path, session.token, null, `read of ${path}`);
      }
    }
    if (reply.status === 200) {
      const data = field(field(reply.body, 'data'), 'data');
      if (data === null && isRecord(field(reply.body, 'data'))) {
        // A soft-deleted KV v2 version comes back with data: null and its deletion_time in metadata.
        throw new VaultError('FIRMA_VAULT_NOT_FOUND', `Vault secret ${path}: the current version is deleted`, 200);
      }
      if (!isRecord(data)) {
        throw new VaultError('FIRMA_VAULT_BAD_RESPONSE', `Vault read of ${path} returned no data.data object (is the mount KV version 2?)`, 200);
      }
      return data;
    }
    if (reply.status === 404) {
      throw new VaultError('FIRMA_VAULT_NOT_FOUND', `no Vault secret at ${path} (HTTP 404${this.#quote.errors(reply.body)})`, 404);
    }
    if (reply.status === 401 || reply.status === 403) {
      const expired = session.expiresAt !== null && this.#now() >= session.expiresAt ? '; the token TTL has run out' : '';
      throw new VaultError(
        'FIRMA_VAULT_AUTH',
        `Vault refused the read of ${path} (HTTP ${reply.status}${this.#quote.errors(reply.body)}): the ${this.#auth.tokenSource()} was rejected or its policy does not allow this path${expired}`,
        reply.status,
      );
    }
    throw this.#quote.status(reply, `read of ${path}`);
  }
}
