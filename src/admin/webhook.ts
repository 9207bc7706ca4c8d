import { createRequire } from 'node:module';
import type { Logger } from '../core/log.js';
import type { ApprovalView } from '../enforce/approval/views.js';
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
    const text =
      `Firma: agent ${view.agent_id} is waiting for approval of ${view.method} ${view.url} ` +
      `(${view.action_class}, ${view.risk ?? 'unknown'} risk; ${view.policy_ids.join(', ')}). ` +
      `Approve or deny: ${opts.pageUrl}#${view.id}`;
    const payload = JSON.stringify({
      text,
      approval_id: view.id,
      agent_id: view.agent_id,
      method: view.method,
      url: view.url,
      action_class: view.action_class,
      risk: view.risk,
      policy_ids: view.policy_ids,
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
