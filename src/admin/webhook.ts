import { createRequire } from 'node:module';
import type { Logger } from '../core/log.js';
import type { ApprovalView, McpCallView } from '../enforce/approval/views.js';
import { errorCode } from '../core/errors.js';

export interface WebhookOptions {
  /** Slack-compatible incoming webhook. Often a secret itself: only its origin is ever logged. */
  readonly url: string;
  readonly timeoutMs: number;
  /** The approvals page, linked from the message. */
  readonly pageUrl: string;
  readonly log: Logger;
}

/**
 * Announces each new approval once with a POST of Slack-compatible JSON (`text`, plus the fields for
 * other receivers). Fire and forget: bounded by a timeout, never retried (a retry could announce twice),
 * and a failure is only logged — it never holds, approves or denies anything.
 */
export function webhookNotifier(opts: WebhookOptions): (view: ApprovalView) => void {
  const origin = new URL(opts.url).origin;
  // Loaded only when a webhook is configured: undici's full index costs memory (bench/README.md "Memory").
  const { request } = createRequire(import.meta.url)('undici') as typeof import('undici');
  return (view) => {
    const text = slackEscape(
      `Firma: agent ${view.agent_id} is waiting for approval of ${view.method} ${view.url} ` +
      `(${view.action_class}, ${view.risk ?? 'unknown'} risk; ${view.policy_ids.join(', ')}). ` +
      mcpSentence(view.mcp) +
      `Approve or deny: ${opts.pageUrl}#${view.id}`,
    );
    const payload = JSON.stringify({
      text,
      approval_id: view.id,
      agent_id: view.agent_id,
      method: view.method,
      url: view.url,
      action_class: view.action_class,
      risk: view.risk,
      policy_ids: view.policy_ids,
      mcp: view.mcp,
      expires_at: view.expires_at,
      page: `${opts.pageUrl}#${view.id}`,
    });
    const signal = AbortSignal.timeout(opts.timeoutMs);
    request(opts.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: payload,
      signal,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
    }).then(
      async (res) => {
        await res.body.dump();
        if (res.statusCode >= 300) opts.log.warn({ webhook: origin, status: res.statusCode, approval_id: view.id }, 'approval webhook refused');
      },
      (err: unknown) => opts.log.warn({ webhook: origin, code: errorCode(err), approval_id: view.id }, 'approval webhook failed'),
    );
  };
}

/**
 * The held MCP call in the message (docs/mcp.md "Approvals"): server, method, the exact tool name and
 * the opted-in arguments, quoted as JSON strings so agent-sent text cannot pass for the message's own.
 */
function mcpSentence(m: McpCallView | null): string {
  if (m === null) return '';
  const tool = m.tool === null ? '' : ` tool ${JSON.stringify(m.tool)}`;
  const args = m.arguments === null ? '' : ` with ${Object.entries(m.arguments).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}`;
  return `MCP server ${m.server}, ${m.method ?? 'no method'}${tool}${args}. `;
}

/** Slack reads `<…>` as links and mentions and `&` as an entity: the three are escaped in `text`. */
function slackEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
