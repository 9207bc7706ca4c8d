import type { AuditDecision, AuditEvent } from './events.js';

export interface TailFilter {
  readonly decision?: AuditDecision | string;
  readonly agent?: string;
  readonly host?: string;
}

const short = (id: string | null): string => (id === null ? '-' : id.length > 8 ? `${id.slice(0, 8)}…` : id);

/**
 * One readable line per event for `firma audit tail`, fields separated by two spaces, e.g.
 * `2026-11-22T10:00:00.123Z  deny  agent-7  POST api.stripe.com/v1/refunds  payments.refund/high  policy:limit.refunds  req=ab12cd34…`.
 */
export function formatEventLine(e: AuditEvent): string {
  const agent = e.agent_id ?? '-';
  const req = `req=${short(e.request_id)}`;
  switch (e.type) {
    case 'decision': {
      const port = (e.scheme === 'https' && e.port === 443) || (e.scheme === 'http' && e.port === 80) ? '' : `:${e.port}`;
      const cls = `${e.action_class ?? 'unclassified'}/${e.risk ?? '-'}`;
      const why = `${e.stage}:${e.rule ?? e.reason}`;
      const monitor = e.would_deny === null ? '' : `  would_deny=${e.would_deny}`;
      return `${e.ts}  ${e.decision}  ${agent}  ${e.method} ${e.host}${port}${e.path}  ${cls}  ${why}${monitor}  ${req}`;
    }
    case 'outcome': {
      const result = e.error === null ? String(e.status ?? '-') : `${e.error}${e.error_code === null ? '' : `(${e.error_code})`}`;
      const cred = e.credential_injected ? '  cred' : '';
      return `${e.ts}  outcome  ${agent}  ${result}  in=${e.bytes_in}B out=${e.bytes_out}B  ${e.duration_ms}ms${cred}  ${req}`;
    }
    case 'approval':
      return `${e.ts}  approval  ${agent}  ${e.action} ${e.approval_id}  by=${e.approver ?? '-'}${e.reason === null ? '' : `  ${e.reason}`}  ${req}`;
    case 'lifecycle':
      return `${e.ts}  lifecycle  ${e.event}${e.detail === null ? '' : `  ${e.detail}`}`;
  }
}

/**
 * Tail filters. `decision` and `host` only match decision events (the others carry neither field; a
 * caller wanting the outcomes too can follow their `request_id`); `host` is case-insensitive.
 */
export function filterEvent(e: AuditEvent, f: TailFilter): boolean {
  if (f.agent !== undefined && e.agent_id !== f.agent) return false;
  if (f.decision !== undefined && (e.type !== 'decision' || e.decision !== f.decision)) return false;
  if (f.host !== undefined && (e.type !== 'decision' || e.host.toLowerCase() !== f.host.toLowerCase())) return false;
  return true;
}
