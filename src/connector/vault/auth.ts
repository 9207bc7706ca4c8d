import { readFile } from 'node:fs/promises';
import type { FirmaConfig } from '../../config/index.js';
import { errorCode } from '../../core/errors.js';
import { VaultError, badShape, type VaultErrorQuoter } from './errors.js';
import type { VaultHttp, VaultReply } from './http.js';
import { field } from './json.js';

/**
 * The Vault auth methods (docs/configuration.md, [vault]): a token from the environment (looked up to
 * learn its lease), AppRole or Kubernetes service-account login, and renewal of the token in hand.
 * Login inputs are read at every use, so a value rotated by the operator is picked up at once.
 */

type VaultConfig = FirmaConfig['vault'];

/** A token and what Vault told us about its lifetime. */
export interface Session {
  readonly token: string;
  /** Epoch ms after which Vault refuses the token; null = no TTL (e.g. a root token). */
  expiresAt: number | null;
  /** Lease Vault granted at the last login/lookup/renewal, ms (sizes the safety margin). */
  leaseMs: number;
  renewable: boolean;
  /** A renewal no longer extends the lease (the token's max TTL is near): stop renewing. */
  renewExhausted: boolean;
}

export class VaultAuth {
  readonly #cfg: VaultConfig;
  readonly #env: NodeJS.ProcessEnv;
  readonly #now: () => number;
  readonly #http: VaultHttp;
  readonly #quote: VaultErrorQuoter;

  constructor(cfg: VaultConfig, env: NodeJS.ProcessEnv, now: () => number, http: VaultHttp, quote: VaultErrorQuoter) {
    this.#cfg = cfg;
    this.#env = env;
    this.#now = now;
    this.#http = http;
    this.#quote = quote;
  }

  get method(): VaultConfig['auth'] {
    return this.#cfg.auth;
  }

  envToken(): string | undefined {
    const v = this.#env[this.#cfg.token_env];
    return v === undefined || v === '' ? undefined : v;
  }

  /** The token from the environment (vault auth = "token"); FIRMA_VAULT_AUTH when it is not set. */
  requireEnvToken(): string {
    const token = this.envToken();
    if (token === undefined) {
      throw new VaultError('FIRMA_VAULT_AUTH', `environment variable ${this.#cfg.token_env} is not set (vault auth = "token", token_env)`);
    }
    return token;
  }

  tokenSource(): string {
    return this.#cfg.auth === 'token' ? `token from ${this.#cfg.token_env}` : `${this.#cfg.auth} login token`;
  }

  /** Lookup (token auth) or login (AppRole, Kubernetes). */
  establish(): Promise<Session> {
    return this.#cfg.auth === 'token' ? this.#lookupEnvToken() : this.#login();
  }

  /** Same token, longer life: Vault's answer to renew-self. */
  async renewSelf(token: string): Promise<Session> {
    const what = 'token renew-self';
    const reply = await this.#http.call('POST', 'auth/token/renew-self', token, {}, what);
    if (reply.status !== 200) throw this.#quote.status(reply, what);
    return this.#authSession(reply.body, what);
  }

  async #lookupEnvToken(): Promise<Session> {
    const token = this.requireEnvToken();
    const what = 'token lookup-self';
    const reply = await this.#http.call('GET', 'auth/token/lookup-self', token, null, what);
    if (reply.status === 401 || reply.status === 403) {
      throw new VaultError(
        'FIRMA_VAULT_AUTH',
        `Vault rejected the ${this.tokenSource()} (${what}, HTTP ${reply.status}${this.#quote.errors(reply.body)})`,
        reply.status,
      );
    }
    if (reply.status !== 200) throw this.#quote.status(reply, what);
    const data = field(reply.body, 'data');
    const ttl = field(data, 'ttl');
    if (typeof ttl !== 'number' || ttl < 0) throw badShape(what, 'data.ttl');
    const session = this.#newSession(token, ttl, field(data, 'renewable') === true);
    // ttl 0 with an expire_time is a token in its last second (Vault truncates), not an immortal one.
    if (ttl === 0 && typeof field(data, 'expire_time') === 'string') session.expiresAt = this.#now();
    return session;
  }

  async #login(): Promise<Session> {
    const cfg = this.#cfg;
    let mount: string;
    let payload: Record<string, string>;
    if (cfg.auth === 'approle') {
      mount = cfg.approle_mount;
      // Re-read at every login: an operator may have rotated the secret_id since the last one.
      const role_id = await this.#credential('role_id', cfg.role_id_env, cfg.role_id_file);
      const secret_id = await this.#credential('secret_id', cfg.secret_id_env, cfg.secret_id_file);
      payload = { role_id, secret_id };
    } else {
      mount = cfg.kubernetes_mount;
      // Kubernetes rotates the projected service-account token; an old JWT may already be refused.
      const jwt = await this.#credential('jwt', undefined, cfg.kubernetes_jwt_file);
      payload = { role: cfg.kubernetes_role, jwt };
    }
    const loginPath = `auth/${mount.replace(/^\/+|\/+$/g, '')}/login`;
    const what = `${cfg.auth === 'approle' ? 'AppRole' : 'Kubernetes'} login at ${loginPath}`;
    const secrets = Object.entries(payload).filter(([k]) => k !== 'role').map(([, v]) => v);
    for (const s of secrets) this.#quote.inFlight.add(s);
    let reply: VaultReply;
    try {
      reply = await this.#http.call('POST', loginPath, null, payload, what);
    } finally {
      for (const s of secrets) this.#quote.inFlight.delete(s);
    }
    if (reply.status === 400 || reply.status === 401 || reply.status === 403) {
      throw new VaultError('FIRMA_VAULT_AUTH', `Vault refused the ${what} (HTTP ${reply.status}${this.#quote.errors(reply.body, secrets)})`, reply.status);
    }
    if (reply.status !== 200) throw this.#quote.status(reply, what, secrets);
    return this.#authSession(reply.body, what);
  }

  /** `{ auth: { client_token, lease_duration, renewable } }`, the answer to a login or renew-self. */
  #authSession(body: unknown, what: string): Session {
    const auth = field(body, 'auth');
    const token = field(auth, 'client_token');
    const lease = field(auth, 'lease_duration');
    if (typeof token !== 'string' || token === '') throw badShape(what, 'auth.client_token');
    if (typeof lease !== 'number' || lease < 0) throw badShape(what, 'auth.lease_duration');
    return this.#newSession(token, lease, field(auth, 'renewable') === true);
  }

  #newSession(token: string, ttlSeconds: number, renewable: boolean): Session {
    const leaseMs = ttlSeconds * 1000;
    // ttl 0 is Vault's "never expires" (root tokens); nothing to renew.
    return { token, expiresAt: ttlSeconds === 0 ? null : this.#now() + leaseMs, leaseMs, renewable, renewExhausted: false };
  }

  /** A login input from an env var or a file (trimmed: files usually end in a newline). */
  async #credential(name: string, envName: string | undefined, file: string | undefined): Promise<string> {
    if (envName !== undefined) {
      const v = this.#env[envName];
      if (v === undefined || v === '') throw new VaultError('FIRMA_VAULT_AUTH', `environment variable ${envName} (${name}) is not set`);
      return v;
    }
    if (file === undefined) throw new VaultError('FIRMA_VAULT_AUTH', `no source configured for the Vault ${name}`);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err: unknown) {
      throw new VaultError('FIRMA_VAULT_AUTH', `cannot read the Vault ${name} file ${file} (${errorCode(err) ?? 'read error'})`);
    }
    const v = text.trim();
    if (v === '') throw new VaultError('FIRMA_VAULT_AUTH', `the Vault ${name} file ${file} is empty`);
    return v;
  }
}
