import type { Logger } from '../core/log.js';
import type { Verdict } from '../core/decision.js';
import type { SidecarReply } from '../core/reply.js';
import type { DispatchOutcome } from '../core/outcome.js';
import type { UsageReading } from '../core/llm.js';

/**
 * The one decision log line per request, written when it is over (smokescreen's canonical decision log;
 * docs/commands.md "Logs"): who, what, the verdict with its stage, reason, policies and
 * token id, and what the connector reported. `reply` is set when the sidecar answered itself; `started`
 * is 0 when the request never reached a stage (then no duration is logged).
 */
export function logRequest(log: Logger, decision: Verdict | null, reply: SidecarReply | null, outcome: DispatchOutcome | null, started: number, usage: UsageReading | null = null): void {
  if (!log.isLevelEnabled('info')) return;
  const e = decision?.envelope;
  const allowed = decision !== null && decision.verdict === 'allow' ? decision : null;
  log.info(
    {
      request_id: e?.requestId ?? reply?.requestId,
      agent_id: e?.agentId,
      method: e?.method,
      host: e?.target.host,
      port: e?.target.port,
      // Query values may carry secrets; the path alone is logged.
      path: e?.path ?? undefined,
      action_class: e?.actionClass ?? undefined,
      risk: e?.risk ?? undefined,
      rule: e?.ruleId ?? undefined,
      decision: reply?.decision ?? (allowed?.passthrough === true ? 'passthrough' : 'allow'),
      stage: reply?.stage,
      reason: reply?.reason,
      would_deny: allowed?.wouldDeny === null || allowed === null ? undefined : `${allowed.wouldDeny.stage}:${allowed.wouldDeny.reason}`,
      token_id: decision?.tokenId ?? undefined,
      policy_ids: decision !== null && decision.policyIds.length > 0 ? decision.policyIds : undefined,
      status: reply?.status ?? outcome?.status,
      error: outcome?.error ?? undefined,
      error_code: outcome?.errorCode ?? undefined,
      bytes_in: outcome?.bytesIn,
      bytes_out: outcome?.bytesOut,
      client_aborted: outcome?.clientAborted || undefined,
      credential_injected: outcome?.credentialInjected || undefined,
      waited_ms: outcome !== null && outcome.waitedMs > 0 ? Math.round(outcome.waitedMs) : undefined,
      // An LLM call (docs/llm.md "Usage"): its tokens and cost, or why they could not be read.
      llm_model: usage?.usage?.model ?? undefined,
      llm_tokens_in: usage?.usage?.inputTokens,
      llm_tokens_out: usage?.usage?.outputTokens,
      llm_cost_usd: usage?.usage?.costUsd ?? undefined,
      llm_estimated: usage?.usage?.estimated || undefined,
      llm_usage_unread: usage?.reason ?? undefined,
      duration_ms: started === 0 ? undefined : Math.round((performance.now() - started) * 100) / 100,
    },
    'request',
  );
}
