import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../core/log.js';
import type { ApprovalQueue } from '../enforce/approval/queue.js';
import type { ApprovalActionResult } from '../enforce/approval/views.js';
import type { AdminTokens } from './auth.js';
import { APPROVALS_PAGE_CSS, APPROVALS_PAGE_HTML, APPROVALS_PAGE_JS } from './approvals-page.js';

/** Largest JSON body a mutation accepts. */
const MAX_BODY_BYTES = 16 * 1024;
/** SSE comment sent this often so proxies and browsers keep an idle stream open. */
const HEARTBEAT_MS = 15_000;
/** Ids are `apr_…` / `grt_…` from base64url: anything else is a 404 without a lookup. */
const ID = /^[A-Za-z0-9_-]{1,64}$/;

export interface ApprovalsApiOptions {
  readonly queue: ApprovalQueue;
  readonly tokens: AdminTokens;
  readonly log: Logger;
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function sendStatic(res: ServerResponse, type: string, text: string): void {
  res.writeHead(200, {
    'content-type': type,
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    // Everything the page needs comes from this origin; nothing inline, no framing.
    'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  });
  res.end(text);
}

function readJson(req: IncomingMessage): Promise<{ ok: true; value: Record<string, unknown> } | { ok: false; message: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) over = true;
      else chunks.push(c);
    });
    req.on('error', () => resolve({ ok: false, message: 'the request body could not be read' }));
    req.on('end', () => {
      if (over) return resolve({ ok: false, message: `the request body is over ${MAX_BODY_BYTES} bytes` });
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') return resolve({ ok: true, value: {} });
      try {
        const v: unknown = JSON.parse(text);
        if (typeof v === 'object' && v !== null && !Array.isArray(v)) return resolve({ ok: true, value: v as Record<string, unknown> });
      } catch {
        // fall through
      }
      resolve({ ok: false, message: 'the request body must be a JSON object' });
    });
  });
}

const STATUS: Record<string, number> = { not_found: 404, already_resolved: 409, bad_input: 400, audit_unavailable: 503 };

function sendResult<T>(res: ServerResponse, r: ApprovalActionResult<T>): void {
  if (r.ok) send(res, 200, r.value);
  else send(res, STATUS[r.code] ?? 400, { error: r.code, message: r.message });
}

/**
 * The approvals API and page on the admin listener. Reads are open to whoever reaches the admin
 * listener (keep it on loopback or behind a NetworkPolicy); every mutation needs a bearer token, whose
 * configured name is the approver the audit records. The page sends the token as a header, never a
 * cookie, so another site cannot make a browser approve anything (no CSRF).
 */
export class ApprovalsApi {
  readonly #o: ApprovalsApiOptions;
  readonly #streams = new Set<ServerResponse>();

  constructor(opts: ApprovalsApiOptions) {
    this.#o = opts;
  }

  /** Whether `path` belongs to this API. */
  handles(path: string): boolean {
    return path === '/approvals' || path.startsWith('/approvals/') || path === '/grants' || path.startsWith('/grants/');
  }

  handle(req: IncomingMessage, res: ServerResponse, path: string): void {
    const method = req.method ?? 'GET';
    const parts = path.split('/').filter((p) => p !== '');
    const read = method === 'GET' || method === 'HEAD';
    if (parts[0] === 'approvals' && parts.length === 1 && read) return send(res, 200, this.#o.queue.list());
    if (parts[0] === 'grants' && parts.length === 1 && read) return send(res, 200, { grants: this.#o.queue.grants() });
    if (parts[0] === 'approvals' && parts.length === 2 && read) {
      const id = parts[1] as string;
      if (id === 'ui') return sendStatic(res, 'text/html; charset=utf-8', APPROVALS_PAGE_HTML);
      if (id === 'ui.js') return sendStatic(res, 'text/javascript; charset=utf-8', APPROVALS_PAGE_JS);
      if (id === 'ui.css') return sendStatic(res, 'text/css; charset=utf-8', APPROVALS_PAGE_CSS);
      if (id === 'events') return this.#stream(req, res);
      const view = ID.test(id) ? this.#o.queue.get(id) : null;
      return view === null ? send(res, 404, { error: 'not_found', message: `no approval ${id}` }) : send(res, 200, view);
    }
    const mutation =
      method === 'POST' &&
      parts.length === 3 &&
      ((parts[0] === 'approvals' && (parts[2] === 'approve' || parts[2] === 'deny')) || (parts[0] === 'grants' && parts[2] === 'revoke'));
    if (!mutation) {
      const known = parts.length <= 3 && (parts[0] === 'approvals' || parts[0] === 'grants');
      return send(res, known ? 405 : 404, known ? { error: 'method_not_allowed' } : { error: 'not_found' });
    }
    void this.#mutate(req, res, parts as [string, string, string]);
  }

  /** Close the live event streams (the admin listener is closing). */
  close(): void {
    for (const s of this.#streams) s.end();
    this.#streams.clear();
  }

  async #mutate(req: IncomingMessage, res: ServerResponse, [kind, id, action]: [string, string, string]): Promise<void> {
    const approver = this.#o.tokens.identify(req.headers.authorization);
    if (approver === null) {
      req.resume();
      const message = this.#o.tokens.configured
        ? 'a valid admin token is required: Authorization: Bearer <token>'
        : 'no admin token is configured (set the environment variable named by [sidecar.admin] token_env), so changes are refused';
      return send(res, 401, { error: 'unauthorized', message }, { 'www-authenticate': 'Bearer realm="firma-admin"' });
    }
    const body = await readJson(req);
    if (!body.ok) return send(res, 400, { error: 'bad_input', message: body.message });
    const b = body.value;
    const reason = b['reason'];
    if (reason !== undefined && typeof reason !== 'string') return send(res, 400, { error: 'bad_input', message: 'reason: expected a string' });
    if (!ID.test(id)) return send(res, 404, { error: 'not_found', message: `no ${kind === 'grants' ? 'grant' : 'approval'} ${id}` });
    const q = this.#o.queue;
    if (kind === 'grants') {
      const r = q.revokeGrant(id, approver);
      if (r.ok) this.#o.log.info({ grant_id: id, by: approver }, 'grant revoked');
      return sendResult(res, r);
    }
    if (action === 'deny') {
      const r = q.deny(id, approver, reason);
      if (r.ok) this.#o.log.info({ approval_id: id, by: approver }, 'approval denied');
      return sendResult(res, r);
    }
    const minutes = b['grant_minutes'];
    const host = b['grant_host'];
    if (minutes !== undefined && typeof minutes !== 'number') return send(res, 400, { error: 'bad_input', message: 'grant_minutes: expected a number' });
    if (host !== undefined && typeof host !== 'boolean') return send(res, 400, { error: 'bad_input', message: 'grant_host: expected true or false' });
    if (host === true && minutes === undefined) return send(res, 400, { error: 'bad_input', message: 'grant_host needs grant_minutes' });
    const r = q.approve(id, approver, { grantMinutes: minutes, grantHost: host, reason });
    if (r.ok) this.#o.log.info({ approval_id: id, by: approver, grant_id: r.value.grant?.id }, 'approval approved');
    return sendResult(res, r);
  }

  /** Server-sent events: one `change` event whenever the pending set or the grants change. */
  #stream(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write(`retry: 2000\nevent: change\ndata: {"pending":${this.#o.queue.pendingCount}}\n\n`);
    this.#streams.add(res);
    const unsubscribe = this.#o.queue.subscribe((change) => {
      res.write(`event: change\ndata: {"change":"${change}","pending":${this.#o.queue.pendingCount}}\n\n`);
    });
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
    heartbeat.unref();
    req.socket.setTimeout(0);
    res.on('close', () => {
      clearInterval(heartbeat);
      unsubscribe();
      this.#streams.delete(res);
    });
  }
}
