import { randomBytes } from 'node:crypto';
import type { Held } from '../../core/decision.js';
import type { BodyValue, Envelope } from '../../core/envelope.js';
import { redactQuery } from '../../core/redact.js';

/**
 * The shapes the admin API, the CLI and the approvals page read (docs/commands.md), and the id and time
 * formats in them. Nothing here carries a header value or a query value.
 */

/** A pending approval as the API, CLI and page show it. No header values, no query values. */
export interface ApprovalView {
  readonly id: string;
  readonly state: 'pending' | 'approved' | 'denied' | 'expired' | 'cancelled';
  readonly agent_id: string;
  readonly method: string;
  /** scheme://host[:port]/path?key=REDACTED */
  readonly url: string;
  readonly host: string;
  readonly action_class: string;
  readonly risk: string | null;
  readonly policy_ids: readonly string[];
  /** Why approval is needed. */
  readonly reason: string;
  /** The body fields the mapping rule extracted (null when it extracts none). */
  readonly body_fields: Readonly<Record<string, BodyValue>> | null;
  /** The MCP call that is held, when the request went to a declared MCP endpoint; else null. */
  readonly mcp: McpCallView | null;
  readonly requested_at: string;
  readonly expires_at: string;
  /** Requests waiting on this approval (identical requests join it). */
  readonly waiting: number;
  readonly request_ids: readonly string[];
  /** Set once resolved. */
  readonly resolved_by: string | null;
  readonly resolution_reason: string | null;
}

/**
 * A held MCP call as approvers see it (docs/mcp.md "Approvals"): the server, the JSON-RPC method, the
 * exact tool name, and only the argument fields its tool rule opts into. Agent-sent text is cut to
 * `MCP_VIEW_MAX_CHARS` characters (an ellipsis marks the cut).
 */
export interface McpCallView {
  readonly server: string;
  readonly method: string | null;
  readonly tool: string | null;
  /** The opted-in argument fields and their values as strings; null when the tool rule names none. */
  readonly arguments: Readonly<Record<string, string>> | null;
}

/** The most characters of a tool name, method or argument value an approval view shows. */
export const MCP_VIEW_MAX_CHARS = 200;

/** `text` cut to `MCP_VIEW_MAX_CHARS` code points, the last one replaced by `…` when cut. */
export function boundedText(text: string): string {
  if (text.length <= MCP_VIEW_MAX_CHARS) return text;
  const points = Array.from(text);
  return points.length <= MCP_VIEW_MAX_CHARS ? text : `${points.slice(0, MCP_VIEW_MAX_CHARS - 1).join('')}…`;
}

/** The approval view of an envelope's MCP facts; null when the request was not an MCP call. */
export function mcpCallView(e: Envelope): McpCallView | null {
  const m = e.mcp;
  if (m === undefined || m === null) return null;
  let args: Record<string, string> | null = null;
  if (m.arguments !== null) {
    args = {};
    for (const [k, v] of Object.entries(m.arguments)) args[k] = boundedText(v);
  }
  return {
    server: m.server,
    method: m.method === null ? null : boundedText(m.method),
    tool: m.tool === null ? null : boundedText(m.tool),
    arguments: args,
  };
}

export interface GrantView {
  readonly id: string;
  readonly approval_id: string;
  readonly agent_id: string;
  readonly action_class: string;
  readonly host: string | null;
  readonly granted_by: string;
  readonly granted_at: string;
  readonly expires_at: string;
  /** Requests let through by it so far. */
  readonly uses: number;
}

export type ApprovalErrorCode = 'not_found' | 'already_resolved' | 'bad_input' | 'audit_unavailable';

export type ApprovalActionResult<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly code: ApprovalErrorCode; readonly message: string };

/** What changed, for live views (the page's event stream). */
export type ApprovalChange = 'pending' | 'resolved' | 'grant';

/** `apr_…` for approvals, `grt_…` for grants. */
export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(9).toString('base64url')}`;
}

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** The URL shown to approvers: query values redacted like the audit log's path. */
export function displayUrl(h: Held): string {
  const t = h.envelope.target;
  const defaultPort = t.scheme === 'https' ? 443 : 80;
  const host = t.kind === 'ipv6' ? `[${t.host}]` : t.host;
  const authority = t.port === defaultPort ? host : `${host}:${t.port}`;
  const path = h.envelope.path === null ? '' : redactQuery(h.envelope.path, h.envelope.query);
  return `${t.scheme}://${authority}${path}`;
}
