/**
 * A small fake HashiCorp Vault on 127.0.0.1 for tests. TEST-ONLY: lives under test/ so src/ cannot
 * import it (tsconfig.json compiles src/ only).
 *
 * It speaks the subset of Vault's real HTTP API the sidecar uses, with Vault's response and error
 * shapes, so the client under test is the same code that talks to a real Vault:
 *   GET  /v1/{mount}/data/{path}        KV v2 read  → { data: { data, metadata } } | 404 { errors: [] }
 *   GET  /v1/auth/token/lookup-self     → { data: { ttl, renewable, expire_time, ... } }
 *   POST /v1/auth/token/renew-self      → { auth: { client_token, lease_duration, renewable, ... } }
 *   POST /v1/auth/{approle}/login       { role_id, secret_id } → { auth: {...} } | 400 invalid role or secret ID
 *   POST /v1/auth/{kubernetes}/login    { role, jwt }          → { auth: {...} } | 403 permission denied
 * Bad, expired or revoked tokens get 403 { errors: ["permission denied"] }. TTLs are whole seconds,
 * as in Vault, and really expire on the wall clock.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export type VaultEndpoint = 'read' | 'lookup-self' | 'renew-self' | 'login-approle' | 'login-kubernetes';

export interface FakeTokenOptions {
  /** Seconds; 0 = never expires (like a root token). Default 3600. */
  readonly ttl?: number;
  /** Default true. */
  readonly renewable?: boolean;
  /** Renewals never extend past creation + max_ttl seconds; 0 = no cap. Default 0. */
  readonly maxTtl?: number;
  /** KV paths (API form, "secret/data/x") this token may read; default: all. */
  readonly readable?: readonly string[];
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly namespace: string | undefined;
  readonly hasToken: boolean;
}

export interface FakeVault {
  readonly port: number;
  /** `http://127.0.0.1:PORT`, for [vault] address. */
  readonly address: string;
  createToken(opts?: FakeTokenOptions): string;
  /** Register (or replace) an AppRole role_id with its valid secret_ids. */
  setAppRole(roleId: string, secretIds: readonly string[], opts?: FakeTokenOptions): void;
  /** Register (or replace) a Kubernetes role with the service-account JWTs it accepts. */
  setKubernetesRole(role: string, jwts: readonly string[], opts?: FakeTokenOptions): void;
  /** Write a new KV v2 version at `path` (API form, "secret/data/stripe"). */
  setSecret(path: string, data: Record<string, unknown>): void;
  /** Soft-delete the current version (KV v2 `DELETE`): reads answer 404 with data null. */
  deleteSecret(path: string): void;
  revokeToken(token: string): void;
  /** Every token issued so far stops working (`vault token revoke` on all of them). */
  revokeAll(): void;
  count(endpoint: VaultEndpoint): number;
  /** KV reads of one path. */
  reads(path: string): number;
  readonly requests: readonly RecordedRequest[];
  /** Accept requests and never answer them (a hung Vault), until set back to false. */
  setHang(on: boolean): void;
  /** Vault down: stop listening and cut every connection. */
  stop(): Promise<void>;
  /** Vault back up, on the same port. */
  start(): Promise<void>;
  close(): Promise<void>;
}

interface TokenState {
  readonly ttl: number;
  renewable: boolean;
  readonly createdAt: number;
  /** Epoch ms; null = never. */
  expiresAt: number | null;
  readonly maxExpiresAt: number | null;
  readonly readable: ReadonlySet<string> | null;
  revoked: boolean;
  readonly meta: Record<string, string>;
}

interface KvVersion {
  readonly data: Record<string, unknown> | null;
  readonly created: string;
  deleted: string;
}

export interface FakeVaultOptions {
  /** When set, every request must carry this X-Vault-Namespace (tokens and mounts live in it). */
  readonly namespace?: string;
  readonly approleMount?: string;
  readonly kubernetesMount?: string;
}

export async function startFakeVault(opts: FakeVaultOptions = {}): Promise<FakeVault> {
  const approleMount = opts.approleMount ?? 'approle';
  const kubernetesMount = opts.kubernetesMount ?? 'kubernetes';
  const tokens = new Map<string, TokenState>();
  const approles = new Map<string, { secretIds: Set<string>; opts: FakeTokenOptions }>();
  const k8sRoles = new Map<string, { jwts: Set<string>; opts: FakeTokenOptions }>();
  const kv = new Map<string, KvVersion[]>();
  const counts = new Map<VaultEndpoint, number>();
  const readsByPath = new Map<string, number>();
  const requests: RecordedRequest[] = [];
  let hang = false;
  const held = new Set<ServerResponse>();

  const bump = (e: VaultEndpoint): void => {
    counts.set(e, (counts.get(e) ?? 0) + 1);
  };

  function issue(opts: FakeTokenOptions, meta: Record<string, string>): string {
    const token = `hvs.${randomBytes(24).toString('base64url')}`;
    const now = Date.now();
    const ttl = opts.ttl ?? 3600;
    const maxTtl = opts.maxTtl ?? 0;
    tokens.set(token, {
      ttl,
      renewable: opts.renewable ?? true,
      createdAt: now,
      expiresAt: ttl === 0 ? null : now + ttl * 1000,
      maxExpiresAt: maxTtl === 0 ? null : now + maxTtl * 1000,
      readable: opts.readable === undefined ? null : new Set(opts.readable),
      revoked: false,
      meta,
    });
    return token;
  }

  function live(token: string | undefined): TokenState | null {
    if (token === undefined) return null;
    const t = tokens.get(token);
    if (t === undefined || t.revoked) return null;
    if (t.expiresAt !== null && Date.now() >= t.expiresAt) return null;
    return t;
  }

  /** Remaining whole seconds, truncated the way Vault reports a TTL. */
  const remaining = (t: TokenState): number => (t.expiresAt === null ? 0 : Math.max(0, Math.floor((t.expiresAt - Date.now()) / 1000)));

  function send(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
  const denied = (res: ServerResponse): void => send(res, 403, { errors: ['permission denied'] });
  const envelope = (extra: Record<string, unknown>): Record<string, unknown> => ({
    request_id: randomUUID(),
    lease_id: '',
    renewable: false,
    lease_duration: 0,
    data: null,
    wrap_info: null,
    warnings: null,
    auth: null,
    mount_type: '',
    ...extra,
  });
  const authBlock = (token: string, t: TokenState, lease: number): Record<string, unknown> => ({
    client_token: token,
    accessor: randomBytes(12).toString('base64url'),
    policies: ['default'],
    token_policies: ['default'],
    metadata: t.meta,
    lease_duration: lease,
    renewable: t.renewable,
    entity_id: '',
    token_type: 'service',
    orphan: true,
    mfa_requirement: null,
    num_uses: 0,
  });

  async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    try {
      const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
      return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
    } catch {
      return {};
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://vault');
    const path = decodeURIComponent(url.pathname);
    const nsHeader = req.headers['x-vault-namespace'];
    const namespace = typeof nsHeader === 'string' ? nsHeader : undefined;
    const tokenHeader = req.headers['x-vault-token'];
    const token = typeof tokenHeader === 'string' ? tokenHeader : undefined;
    requests.push({ method, path, namespace, hasToken: token !== undefined });
    const body = method === 'POST' ? await readJson(req) : {};

    let endpoint: VaultEndpoint | null = null;
    if (method === 'GET' && path === '/v1/auth/token/lookup-self') endpoint = 'lookup-self';
    else if ((method === 'POST' || method === 'PUT') && path === '/v1/auth/token/renew-self') endpoint = 'renew-self';
    else if ((method === 'POST' || method === 'PUT') && path === `/v1/auth/${approleMount}/login`) endpoint = 'login-approle';
    else if ((method === 'POST' || method === 'PUT') && path === `/v1/auth/${kubernetesMount}/login`) endpoint = 'login-kubernetes';
    else if (method === 'GET' && /^\/v1\/[^/]+\/data\/.+/.test(path)) endpoint = 'read';
    if (endpoint !== null) bump(endpoint);
    const kvPath = path.slice('/v1/'.length);
    if (endpoint === 'read') readsByPath.set(kvPath, (readsByPath.get(kvPath) ?? 0) + 1);

    if (hang) {
      held.add(res);
      res.on('close', () => held.delete(res));
      return;
    }
    // Wrong or missing namespace: the token and the mounts do not exist there.
    const nsOk = opts.namespace === undefined || namespace === opts.namespace;

    switch (endpoint) {
      case 'lookup-self': {
        const t = nsOk ? live(token) : null;
        if (t === null || token === undefined) return denied(res);
        return send(
          res,
          200,
          envelope({
            data: {
              accessor: randomBytes(12).toString('base64url'),
              creation_time: Math.floor(t.createdAt / 1000),
              creation_ttl: t.ttl,
              display_name: 'token',
              entity_id: '',
              expire_time: t.expiresAt === null ? null : new Date(t.expiresAt).toISOString(),
              explicit_max_ttl: 0,
              id: token,
              issue_time: new Date(t.createdAt).toISOString(),
              meta: t.meta,
              num_uses: 0,
              orphan: true,
              path: 'auth/token/create',
              policies: ['default'],
              renewable: t.renewable,
              ttl: remaining(t),
              type: 'service',
            },
          }),
        );
      }
      case 'renew-self': {
        const t = nsOk ? live(token) : null;
        if (t === null || token === undefined) return denied(res);
        if (!t.renewable || t.expiresAt === null) return send(res, 400, { errors: ['lease is not renewable'] });
        // Vault grants the token's TTL again, or what is left before max_ttl (with a warning).
        let next = Date.now() + t.ttl * 1000;
        let lease = t.ttl;
        const warnings: string[] = [];
        if (t.maxExpiresAt !== null && next > t.maxExpiresAt) {
          next = t.maxExpiresAt;
          t.expiresAt = next;
          lease = remaining(t);
          warnings.push('TTL of the token exceeded the effective max_ttl; TTL value is capped accordingly');
        }
        t.expiresAt = next;
        return send(res, 200, envelope({ auth: authBlock(token, t, lease), warnings: warnings.length > 0 ? warnings : null }));
      }
      case 'login-approle': {
        if (!nsOk) return send(res, 404, { errors: [`no handler for route "auth/${approleMount}/login". route entry not found.`] });
        const roleId = body['role_id'];
        const secretId = body['secret_id'];
        const role = typeof roleId === 'string' ? approles.get(roleId) : undefined;
        if (role === undefined || typeof secretId !== 'string' || !role.secretIds.has(secretId)) {
          return send(res, 400, { errors: ['invalid role or secret ID'] });
        }
        const issued = issue(role.opts, { role_name: 'firma' });
        const t = tokens.get(issued) as TokenState;
        return send(res, 200, envelope({ auth: authBlock(issued, t, t.ttl) }));
      }
      case 'login-kubernetes': {
        if (!nsOk) return send(res, 404, { errors: [`no handler for route "auth/${kubernetesMount}/login". route entry not found.`] });
        const roleName = body['role'];
        const jwt = body['jwt'];
        const role = typeof roleName === 'string' ? k8sRoles.get(roleName) : undefined;
        if (role === undefined) return send(res, 400, { errors: [`invalid role name "${String(roleName)}"`] });
        if (typeof jwt !== 'string' || !role.jwts.has(jwt)) return denied(res);
        const issued = issue(role.opts, { role: String(roleName), service_account_name: 'firma' });
        const t = tokens.get(issued) as TokenState;
        return send(res, 200, envelope({ auth: authBlock(issued, t, t.ttl) }));
      }
      case 'read': {
        const t = nsOk ? live(token) : null;
        if (t === null) return denied(res);
        if (t.readable !== null && !t.readable.has(kvPath)) return denied(res);
        const versions = kv.get(kvPath);
        const current = versions?.[versions.length - 1];
        if (versions === undefined || current === undefined) return send(res, 404, { errors: [] });
        const metadata = {
          created_time: current.created,
          custom_metadata: null,
          deletion_time: current.deleted,
          destroyed: false,
          version: versions.length,
        };
        if (current.data === null) return send(res, 404, envelope({ data: { data: null, metadata } }));
        return send(res, 200, envelope({ data: { data: current.data, metadata }, mount_type: 'kv' }));
      }
      default:
        return send(res, 404, { errors: [`no handler for route "${path.replace(/^\/v1\//, '')}". route entry not found.`] });
    }
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) send(res, 500, { errors: ['internal error'] });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let listening = true;

  async function stop(): Promise<void> {
    if (!listening) return;
    listening = false;
    for (const res of held) res.destroy();
    held.clear();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  return {
    port,
    address: `http://127.0.0.1:${port}`,
    createToken: (o = {}) => issue(o, {}),
    setAppRole(roleId, secretIds, o = {}) {
      approles.set(roleId, { secretIds: new Set(secretIds), opts: o });
    },
    setKubernetesRole(role, jwts, o = {}) {
      k8sRoles.set(role, { jwts: new Set(jwts), opts: o });
    },
    setSecret(path, data) {
      const versions = kv.get(path) ?? [];
      versions.push({ data: { ...data }, created: new Date().toISOString(), deleted: '' });
      kv.set(path, versions);
    },
    deleteSecret(path) {
      const versions = kv.get(path);
      const current = versions?.[versions.length - 1];
      if (versions === undefined || current === undefined) return;
      versions[versions.length - 1] = { data: null, created: current.created, deleted: new Date().toISOString() };
    },
    revokeToken(token) {
      const t = tokens.get(token);
      if (t !== undefined) t.revoked = true;
    },
    revokeAll() {
      for (const t of tokens.values()) t.revoked = true;
    },
    count: (e) => counts.get(e) ?? 0,
    reads: (p) => readsByPath.get(p) ?? 0,
    requests,
    setHang(on) {
      hang = on;
      if (!on) {
        for (const res of held) res.destroy();
        held.clear();
      }
    },
    stop,
    async start() {
      if (listening) return;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
      listening = true;
    },
    close: stop,
  };
}
