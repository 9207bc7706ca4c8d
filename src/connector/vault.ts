/**
 * A HashiCorp Vault client for credential injection: KV v2 reads, authenticated by a token from the
 * environment, AppRole or Kubernetes service-account login. It speaks Vault's documented HTTP API
 * (nothing test-specific), so the same code runs against a real Vault.
 *
 * Secret hygiene: tokens, role/secret ids, JWTs and secret values never enter an error message, and no
 * error carries a `cause` — a JSON parse error or a socket error could quote the bytes it choked on.
 * Vault's own error strings are quoted (they are how an operator learns "permission denied" from
 * "sealed"), truncated and with every credential this client holds scrubbed out.
 */
import { readFile } from 'node:fs/promises';
import { Agent, request } from 'undici';
import type { FirmaConfig } from '../config/index.js';
import { FirmaError, errorCode } from '../core/errors.js';

export type VaultConfig = FirmaConfig['vault'];

/** A KV v2 field: `path` is the API path after /v1/ (e.g. `secret/data/stripe`). */
export interface VaultFieldRef {
  readonly path: string;
  readonly field: string;
}

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

export interface VaultClientOptions {
  /** Where token_env / role_id_env / secret_id_env are read; default process.env (read at each use). */
  readonly env?: NodeJS.ProcessEnv;
  /** Clock for cache and token expiry (epoch ms); default Date.now. */
  readonly now?: () => number;
}

/** A token and what Vault told us about its lifetime. */
interface Session {
  readonly token: string;
  /** Epoch ms after which Vault refuses the token; null = no TTL (e.g. a root token). */
  expiresAt: number | null;
  /** Lease Vault granted at the last login/lookup/renewal, ms (sizes the safety margin). */
  leaseMs: number;
  renewable: boolean;
  /** A renewal no longer extends the lease (the token's max TTL is near): stop renewing. */
  renewExhausted: boolean;
}

interface VaultReply {
  readonly status: number;
  /** Parsed JSON body, or null when it was empty or not JSON. */
  readonly body: unknown;
}

/** Vault answers are small; anything larger is not Vault, and is not buffered. */
const MAX_BODY_BYTES = 1024 * 1024;
/** Renew at this fraction of the lease (Vault Agent's LifetimeWatcher uses about the same). */
const RENEW_AT = 2 / 3;
/** Never spin: a maintenance timer waits at least this long. */
const MIN_TIMER_MS = 200;

export class VaultClient {
  readonly #cfg: VaultConfig;
  readonly #env: NodeJS.ProcessEnv;
  readonly #now: () => number;
  readonly #agent: Agent;
  readonly #base: string;
  readonly #cache = new Map<string, { readonly value: string; readonly expiresAt: number }>();
  /** In-flight KV reads by path, so N concurrent requests for one secret cost one HTTP read. */
  readonly #reads = new Map<string, Promise<Record<string, unknown>>>();
  #session: Session | null = null;
  /** In-flight login / lookup, so concurrent reads share one. */
  #establishing: Promise<Session> | null = null;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  /** Credentials used in the current call, scrubbed from any Vault error text we quote. */
  readonly #scrub = new Set<string>();

  constructor(cfg: VaultConfig, opts: VaultClientOptions = {}) {
    this.#cfg = cfg;
    this.#env = opts.env ?? process.env;
    this.#now = opts.now ?? Date.now;
    const url = new URL(cfg.address);
    // Keep a path prefix (Vault behind a reverse proxy at /vault), drop trailing slashes.
    this.#base = `${url.origin}${url.pathname.replace(/\/+$/, '')}/v1/`;
    this.#agent = new Agent({
      connect: { timeout: cfg.timeout_ms },
      headersTimeout: cfg.timeout_ms,
      bodyTimeout: cfg.timeout_ms,
    });
  }

  /** The value of one KV v2 field; cached for cache_ttl_ms, fetched once per path however many ask. */
  async readField(ref: VaultFieldRef): Promise<string> {
    this.#assertOpen();
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
    if (this.#cfg.cache_ttl_ms > 0 && !this.#closed) {
      this.#cache.set(key, { value: raw, expiresAt: this.#now() + this.#cfg.cache_ttl_ms });
    }
    return raw;
  }

  /** Stop renewal timers, forget cached values and tokens, close connections. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearTimer();
    this.#cache.clear();
    this.#session = null;
    this.#scrub.clear();
    await this.#agent.close();
  }

  // ------------------------------------------------------------------------------------------------
  // KV v2

  async #readPath(path: string): Promise<Record<string, unknown>> {
    let session = await this.#acquire();
    let reply = await this.#call('GET', path, session.token, null, `read of ${path}`);
    if (reply.status === 401 || reply.status === 403) {
      // Revoked or expired under us (or the token in the env was rotated): one fresh token, one retry.
      this.#drop(session);
      if (this.#cfg.auth !== 'token' || this.#envToken() !== session.token) {
        session = await this.#acquire();
        reply = await this.#call('GET', path, session.token, null, `read of ${path}`);
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
      throw new VaultError('FIRMA_VAULT_NOT_FOUND', `no Vault secret at ${path} (HTTP 404${this.#vaultErrors(reply.body)})`, 404);
    }
    if (reply.status === 401 || reply.status === 403) {
      const expired = session.expiresAt !== null && this.#now() >= session.expiresAt ? '; the token TTL has run out' : '';
      throw new VaultError(
        'FIRMA_VAULT_AUTH',
        `Vault refused the read of ${path} (HTTP ${reply.status}${this.#vaultErrors(reply.body)}): the ${this.#tokenSource()} was rejected or its policy does not allow this path${expired}`,
        reply.status,
      );
    }
    throw this.#statusError(reply, `read of ${path}`);
  }

  // ------------------------------------------------------------------------------------------------
  // Tokens

  /** A token believed valid now: the current one, or a fresh lookup/login shared by all callers. */
  async #acquire(): Promise<Session> {
    this.#assertOpen();
    const current = this.#session;
    if (this.#cfg.auth === 'token') {
      // The env var is read at every use: a token rotated in the environment is picked up at once.
      const token = this.#envToken();
      if (token === undefined) {
        throw new VaultError('FIRMA_VAULT_AUTH', `environment variable ${this.#cfg.token_env} is not set (vault auth = "token", token_env)`);
      }
      if (current !== null && current.token === token) return current;
    } else if (current !== null && this.#usable(current)) {
      return current;
    }
    this.#establishing ??= this.#establish().finally(() => {
      this.#establishing = null;
    });
    return this.#establishing;
  }

  /** Lookup (token auth) or login (AppRole, Kubernetes); installs the session and its renewal timer. */
  async #establish(): Promise<Session> {
    const session = this.#cfg.auth === 'token' ? await this.#lookupEnvToken() : await this.#login();
    if (this.#closed) throw closedError();
    this.#install(session);
    return session;
  }

  async #lookupEnvToken(): Promise<Session> {
    const token = this.#envToken();
    if (token === undefined) {
      throw new VaultError('FIRMA_VAULT_AUTH', `environment variable ${this.#cfg.token_env} is not set (vault auth = "token", token_env)`);
    }
    const what = 'token lookup-self';
    const reply = await this.#call('GET', 'auth/token/lookup-self', token, null, what);
    if (reply.status === 401 || reply.status === 403) {
      throw new VaultError(
        'FIRMA_VAULT_AUTH',
        `Vault rejected the ${this.#tokenSource()} (${what}, HTTP ${reply.status}${this.#vaultErrors(reply.body)})`,
        reply.status,
      );
    }
    if (reply.status !== 200) throw this.#statusError(reply, what);
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
    for (const s of secrets) this.#scrub.add(s);
    let reply: VaultReply;
    try {
      reply = await this.#call('POST', loginPath, null, payload, what);
    } finally {
      for (const s of secrets) this.#scrub.delete(s);
    }
    if (reply.status === 400 || reply.status === 401 || reply.status === 403) {
      throw new VaultError('FIRMA_VAULT_AUTH', `Vault refused the ${what} (HTTP ${reply.status}${this.#vaultErrors(reply.body, secrets)})`, reply.status);
    }
    if (reply.status !== 200) throw this.#statusError(reply, what, secrets);
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

  #install(session: Session): void {
    this.#clearTimer();
    this.#session = session;
    this.#schedule(session);
  }

  /** Forget a token Vault refused, unless another caller already replaced it. */
  #drop(session: Session): void {
    if (this.#session !== session) return;
    this.#session = null;
    this.#clearTimer();
  }

  /** Still comfortably before expiry (leave a margin for the request in flight and clock skew). */
  #usable(s: Session): boolean {
    if (s.expiresAt === null) return true;
    const margin = Math.min(1000, s.leaseMs / 10);
    return this.#now() < s.expiresAt - margin;
  }

  /** Renew (or re-login) at 2/3 of the remaining lease, so a slow or briefly down Vault still has slack. */
  #schedule(session: Session): void {
    if (session.expiresAt === null || this.#closed) return;
    const canRenew = session.renewable && !session.renewExhausted;
    // With token auth there is nothing to fall back on once renewal stops: the token just runs out.
    if (!canRenew && this.#cfg.auth === 'token') return;
    const remaining = session.expiresAt - this.#now();
    const delay = Math.max(MIN_TIMER_MS, Math.floor(remaining * RENEW_AT));
    this.#timer = setTimeout(() => void this.#maintain(session), delay);
    // A renewal timer must never keep the process alive on its own.
    this.#timer.unref();
  }

  async #maintain(session: Session): Promise<void> {
    this.#timer = null;
    if (this.#closed || this.#session !== session) return;
    try {
      if (session.renewable && !session.renewExhausted) {
        try {
          await this.#renew(session);
          return;
        } catch (err: unknown) {
          // A login method can fall back to a fresh login; token auth has nothing else to try.
          if (this.#cfg.auth === 'token') throw err;
        }
      }
      if (this.#cfg.auth === 'token') return;
      this.#establishing ??= this.#establish().finally(() => {
        this.#establishing = null;
      });
      await this.#establishing;
    } catch {
      // Vault down or refusing: keep the token in hand while it lasts and try again closer to its
      // expiry (2/3 of what is left each time). Past that, the next read logs in (or fails) on demand
      // and reports why to its caller.
      if (!this.#closed && this.#session === session && this.#usable(session)) this.#schedule(session);
    }
  }

  async #renew(session: Session): Promise<void> {
    const before = session.expiresAt === null ? Infinity : session.expiresAt - this.#now();
    const what = 'token renew-self';
    const reply = await this.#call('POST', 'auth/token/renew-self', session.token, {}, what);
    if (reply.status !== 200) throw this.#statusError(reply, what);
    const renewed = this.#authSession(reply.body, what);
    if (this.#closed || this.#session !== session) return;
    // Same token, longer life. When Vault grants no more than was left, the max TTL is reached:
    // further renewals are pointless, so re-login (login methods) or let it run out (token auth).
    // A lease of 0 here is "nothing left" (not "never expires", which only a lookup can say).
    session.renewExhausted = renewed.leaseMs <= before;
    if (renewed.leaseMs > 0) {
      session.expiresAt = renewed.expiresAt;
      session.leaseMs = renewed.leaseMs;
    }
    session.renewable = renewed.renewable;
    this.#schedule(session);
  }

  #clearTimer(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  // ------------------------------------------------------------------------------------------------
  // Inputs

  #envToken(): string | undefined {
    const v = this.#env[this.#cfg.token_env];
    return v === undefined || v === '' ? undefined : v;
  }

  #tokenSource(): string {
    return this.#cfg.auth === 'token' ? `token from ${this.#cfg.token_env}` : `${this.#cfg.auth} login token`;
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

  // ------------------------------------------------------------------------------------------------
  // HTTP

  /** One Vault API call, bounded by timeout_ms end to end (connect, headers and body). */
  async #call(method: 'GET' | 'POST', apiPath: string, token: string | null, payload: object | null, what: string): Promise<VaultReply> {
    this.#assertOpen();
    const headers: Record<string, string> = { accept: 'application/json' };
    if (token !== null) headers['x-vault-token'] = token;
    if (this.#cfg.namespace !== '') headers['x-vault-namespace'] = this.#cfg.namespace;
    if (payload !== null) headers['content-type'] = 'application/json';
    const url = this.#base + apiPath.split('/').map(encodeURIComponent).join('/');
    const signal = AbortSignal.timeout(this.#cfg.timeout_ms);
    let status: number;
    let text: string;
    try {
      const res = await request(url, {
        method,
        headers,
        ...(payload !== null ? { body: JSON.stringify(payload) } : {}),
        dispatcher: this.#agent,
        signal,
      });
      status = res.statusCode;
      text = await readCapped(res.body);
    } catch (err: unknown) {
      if (err instanceof VaultError) throw err;
      const why = signal.aborted ? `no answer within ${this.#cfg.timeout_ms} ms` : (innerCode(err) ?? 'connection failed');
      throw new VaultError('FIRMA_VAULT_UNREACHABLE', `Vault at ${this.#cfg.address} is unreachable (${what}: ${why})`);
    }
    let body: unknown = null;
    if (text !== '') {
      try {
        body = JSON.parse(text) as unknown;
      } catch {
        // Not JSON (a proxy's HTML error page?): the status still tells what happened.
        body = null;
      }
    }
    return { status, body };
  }

  #statusError(reply: VaultReply, what: string, secrets: readonly string[] = []): VaultError {
    const hint = reply.status === 503 ? ' (sealed or standby?)' : reply.status === 429 ? ' (rate limited)' : '';
    if (reply.status >= 200 && reply.status < 300) return badShape(what, `HTTP ${reply.status}`);
    return new VaultError('FIRMA_VAULT_SERVER', `Vault ${what} failed: HTTP ${reply.status}${hint}${this.#vaultErrors(reply.body, secrets)}`, reply.status);
  }

  /** `: msg; msg` from Vault's `{ "errors": [...] }`, scrubbed and bounded; "" when there are none. */
  #vaultErrors(body: unknown, extra: readonly string[] = []): string {
    const errors = field(body, 'errors');
    if (!Array.isArray(errors)) return '';
    let text = errors.filter((e): e is string => typeof e === 'string').join('; ');
    const secrets = [...this.#scrub, ...extra];
    if (this.#session !== null) secrets.push(this.#session.token);
    const envToken = this.#cfg.auth === 'token' ? this.#envToken() : undefined;
    if (envToken !== undefined) secrets.push(envToken);
    for (const s of secrets) if (s.length >= 4) text = text.split(s).join('[redacted]');
    text = text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
    if (text.length > 200) text = `${text.slice(0, 200)}…`;
    return text === '' ? '' : `: ${text}`;
  }

  #assertOpen(): void {
    if (this.#closed) throw closedError();
  }
}

function closedError(): VaultError {
  return new VaultError('FIRMA_VAULT_CLOSED', 'the Vault client is closed');
}

function badShape(what: string, expected: string): VaultError {
  return new VaultError('FIRMA_VAULT_BAD_RESPONSE', `Vault ${what} returned an unexpected response (${expected})`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `obj[key]` for an unknown JSON value; undefined when it is not an object or lacks the key. */
function field(obj: unknown, key: string): unknown {
  return isRecord(obj) && Object.hasOwn(obj, key) ? obj[key] : undefined;
}

/** The informative code of a socket error that undici may have wrapped (ECONNREFUSED, ENOTFOUND...). */
function innerCode(err: unknown): string | undefined {
  const code = errorCode(err);
  const cause = typeof err === 'object' && err !== null ? (err as { cause?: unknown }).cause : undefined;
  const causeCode = errorCode(cause);
  if ((code === undefined || code === 'UND_ERR_SOCKET') && causeCode !== undefined) return causeCode;
  return code;
}

async function readCapped(body: AsyncIterable<Uint8Array> & { destroy(err?: Error): unknown }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > MAX_BODY_BYTES) {
      body.destroy();
      throw new VaultError('FIRMA_VAULT_BAD_RESPONSE', `Vault response larger than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks).toString('utf8');
}
