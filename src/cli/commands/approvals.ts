import { request } from 'undici';
import type { FirmaConfig } from '../../config/index.js';
import type { ApprovalView, GrantView } from '../../enforce/approval/views.js';

export interface ApprovalsFlags {
  readonly admin?: string | undefined;
  readonly reason?: string | undefined;
  readonly 'grant-minutes'?: string | undefined;
  readonly 'grant-host'?: boolean | undefined;
}

export type CommandResult = { readonly ok: true; readonly out: string } | { readonly ok: false; readonly message: string; readonly code: number };

/** The admin listener's base URL from config (a wildcard address is reached on loopback). */
export function adminBaseUrl(config: FirmaConfig, flag: string | undefined): string {
  if (flag !== undefined) return flag.replace(/\/+$/, '');
  const { host, port } = config.sidecar.admin.listen;
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
}

function waited(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60}s`;
}

function formatPending(a: ApprovalView): string {
  const fields = a.body_fields === null ? '' : `  body: ${Object.entries(a.body_fields).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ')}`;
  const m = a.mcp ?? null;
  const mcp = m === null ? '' : `  mcp: ${m.server} ${m.method ?? '-'}${m.tool === null ? '' : ` ${JSON.stringify(m.tool)}`}` +
    `${m.arguments === null ? '' : ` ${Object.entries(m.arguments).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ')}`}`;
  return `${a.id}  ${a.agent_id}  ${a.method} ${a.url}  ${a.action_class} (${a.risk ?? '-'})  waiting ${waited(a.requested_at)}` +
    `${a.waiting > 1 ? ` x${a.waiting}` : ''}  policies: ${a.policy_ids.join(',')}${fields}${mcp}`;
}

function formatGrant(g: GrantView): string {
  return `${g.id}  ${g.agent_id}  ${g.action_class}  host=${g.host ?? 'any'}  by=${g.granted_by}  until ${g.expires_at}  uses=${g.uses}`;
}

/**
 * `firma approvals list | approve ID | deny ID | grants | revoke GRANT_ID`: the admin API from the
 * command line. The token comes from the environment variable named by [sidecar.admin] token_env.
 */
export async function approvalsCommand(config: FirmaConfig, sub: string | undefined, args: readonly string[], flags: ApprovalsFlags): Promise<CommandResult> {
  const base = adminBaseUrl(config, flags.admin);
  const tokenEnv = config.sidecar.admin.token_env;
  const token = process.env[tokenEnv] ?? '';
  const call = async (method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (method === 'POST') {
      headers['content-type'] = 'application/json';
      if (token !== '') headers['authorization'] = `Bearer ${token}`;
    }
    const res = await request(`${base}${path}`, {
      method,
      headers,
      body: method === 'POST' ? JSON.stringify(body ?? {}) : null,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    const text = await res.body.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      json = { message: text.slice(0, 200) };
    }
    return { status: res.statusCode, json };
  };
  const failed = (r: { status: number; json: Record<string, unknown> }): CommandResult => {
    let message = typeof r.json['message'] === 'string' ? r.json['message'] : `HTTP ${r.status}`;
    if (r.status === 401 && token === '') message += ` (${tokenEnv} is not set in this shell)`;
    return { ok: false, message, code: 1 };
  };
  try {
    switch (sub) {
      case 'list':
      case undefined: {
        const r = await call('GET', '/approvals');
        if (r.status !== 200) return failed(r);
        const pending = (r.json['pending'] ?? []) as ApprovalView[];
        const grants = (r.json['grants'] ?? []) as GrantView[];
        const lines = pending.length === 0 ? ['no request is waiting for approval'] : pending.map(formatPending);
        if (grants.length > 0) lines.push('', 'standing grants:', ...grants.map(formatGrant));
        return { ok: true, out: lines.join('\n') + '\n' };
      }
      case 'grants': {
        const r = await call('GET', '/grants');
        if (r.status !== 200) return failed(r);
        const grants = (r.json['grants'] ?? []) as GrantView[];
        return { ok: true, out: (grants.length === 0 ? 'no standing grants' : grants.map(formatGrant).join('\n')) + '\n' };
      }
      case 'approve':
      case 'deny':
      case 'revoke': {
        const id = args[0];
        if (id === undefined) return { ok: false, message: `firma approvals ${sub}: ${sub === 'revoke' ? 'GRANT_ID' : 'ID'} is required`, code: 2 };
        const enc = encodeURIComponent(id);
        if (sub === 'revoke') {
          const r = await call('POST', `/grants/${enc}/revoke`);
          return r.status === 200 ? { ok: true, out: `revoked grant ${id}\n` } : failed(r);
        }
        if (sub === 'deny') {
          const r = await call('POST', `/approvals/${enc}/deny`, { reason: flags.reason });
          return r.status === 200 ? { ok: true, out: `denied ${id}\n` } : failed(r);
        }
        const body: Record<string, unknown> = { reason: flags.reason };
        if (flags['grant-minutes'] !== undefined) {
          const m = Number(flags['grant-minutes']);
          if (!Number.isInteger(m) || m < 1) return { ok: false, message: '--grant-minutes: expected a whole number of minutes', code: 2 };
          body['grant_minutes'] = m;
          if (flags['grant-host'] === true) body['grant_host'] = true;
        } else if (flags['grant-host'] === true) {
          return { ok: false, message: '--grant-host needs --grant-minutes', code: 2 };
        }
        const r = await call('POST', `/approvals/${enc}/approve`, body);
        if (r.status !== 200) return failed(r);
        const grant = r.json['grant'] as GrantView | null;
        const approval = r.json['approval'] as ApprovalView;
        return {
          ok: true,
          out: `approved ${id} (${approval.waiting} waiting request${approval.waiting === 1 ? '' : 's'} released)` +
            (grant === null ? '' : `; grant ${grant.id} for ${grant.agent_id} ${grant.action_class} host=${grant.host ?? 'any'} until ${grant.expires_at}`) + '\n',
        };
      }
      default:
        return { ok: false, message: `firma approvals: unknown subcommand ${JSON.stringify(sub)}`, code: 2 };
    }
  } catch (err) {
    return { ok: false, message: `cannot reach the admin API at ${base}: ${(err as Error).message}`, code: 1 };
  }
}
