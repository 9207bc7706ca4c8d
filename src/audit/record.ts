import type { Logger } from '../core/log.js';
import type { Verdict, Held } from '../core/decision.js';
import type { DispatchOutcome } from '../core/outcome.js';
import type { SidecarReply } from '../core/reply.js';
import type { AuditWriter } from './writer.js';
import type { AuditDecision, AuditEventBody, AuditLifecycleEvent, AuditUsage, DecisionBody, OutcomeBody } from './events.js';
import type { ApprovalStep } from '../core/approval.js';
import { redactQuery } from '../core/redact.js';
import type { RequestMetrics } from '../core/metrics.js';
import type { McpCallLabels } from '../core/envelope.js';
import type { LlmUsage, UsageReading } from '../core/llm.js';

const AUDIT_UNAVAILABLE: SidecarReply = {
  status: 503,
  decision: 'deny',
  stage: 'audit',
  reason: 'audit_unavailable',
  message: '',
  requestId: '',
};

/** The metric labels of every MCP call the request carried (a batch counts each call, with the request's decision). */
function labelsOf(d: Verdict): readonly McpCallLabels[] | null {
  const m = d.envelope.mcp;
  return m === null || m === undefined ? null : m.callLabels;
}

/**
 * Turns what the pipeline decided and what the connector reported into audit events (docs/audit.md), and is
 * the one place that knows their field names. Events carry no header values, no token and no
 * credential: only ids, classes, reasons and sizes.
 */
export class AuditRecorder {
  readonly #writer: AuditWriter;
  readonly #log: Logger | null;
  readonly #metrics: RequestMetrics | null;

  /**
   * `metrics` counts every decision and outcome from the very labels written to the audit log, so the
   * `/metrics` counters and the log cannot disagree about what happened.
   */
  constructor(writer: AuditWriter, opts: { stdout?: Logger | null; metrics?: RequestMetrics | null } = {}) {
    this.#writer = writer;
    this.#log = opts.stdout ?? null;
    this.#metrics = opts.metrics ?? null;
  }

  get available(): boolean {
    return this.#writer.available;
  }

  get headHash(): string {
    return this.#writer.headHash;
  }

  /** The fingerprint of the key that signs this log (docs/audit.md "Verifying"). */
  get keyFingerprint(): string {
    return this.#writer.keyFingerprint;
  }

  #append(body: AuditEventBody, counted = true, mcpLabels: readonly McpCallLabels[] | null = null): boolean {
    // Counted whether or not the log takes the event: the request was decided (or refused) either way.
    if (counted && body.type === 'decision') {
      this.#metrics?.decision(body.decision, body.stage, body.reason);
      if (body.mcp !== null && mcpLabels !== null) {
        for (const l of mcpLabels) this.#metrics?.mcpCall?.(body.mcp.server, l.method, l.tool, body.decision);
      }
    }
    const ok = this.#writer.append(body);
    if (ok && this.#log !== null) this.#log.info({ audit: body }, 'audit');
    return ok;
  }

  /**
   * The decision event, written before anything is dispatched. Returns false when the audit log cannot
   * take it: the caller must then not dispatch (fail closed).
   */
  decision(d: Verdict, reply: SidecarReply | null = null): boolean {
    if (d.verdict === 'allow' && !this.#writer.available) {
      // Fail closed: while the log cannot be written nothing is dispatched. The refusal itself is
      // queued (written when the log recovers, in order) and counted, so the gap is explained in the log.
      this.#append(this.#decisionBody(d, AUDIT_UNAVAILABLE), true, labelsOf(d));
      this.#writer.noteRefused();
      return false;
    }
    const ok = this.#append(this.#decisionBody(d, reply), true, labelsOf(d));
    if (!ok && d.verdict === 'allow') this.#writer.noteRefused();
    return ok;
  }

  /**
   * With `[audit] fsync = "always"`: resolves true once the decision just recorded is on disk, false
   * when writing failed first (then it must not be dispatched); null when fsync is "interval" or
   * "never" and nothing is waited for (docs/audit.md "Durability").
   */
  committed(): Promise<boolean> | null {
    const durable = this.#writer.durable();
    if (durable === null) return null;
    return durable.then((ok) => {
      if (!ok) this.#writer.noteRefused();
      return ok;
    });
  }

  /**
   * The `require_approval` decision event of a request that is now held, linked to its approval. False
   * when the log cannot take it: the request must then not be held (fail closed).
   */
  held(h: Held, approvalId: string): boolean {
    // Not counted in firma_requests_total: the request's final decision is (the hold is firma_approvals_pending).
    if (this.#writer.available && this.#append(this.#decisionBody(h, null, approvalId), false)) return true;
    this.#writer.noteRefused();
    return false;
  }

  /** An approval's step (docs/audit.md `approval` event). False when the log cannot take it. */
  approval(step: ApprovalStep): boolean {
    return this.#append({
      type: 'approval',
      request_id: step.requestId,
      agent_id: step.agentId,
      approval_id: step.approvalId,
      action: step.action,
      approver: step.approver,
      reason: step.reason,
      grant: step.grant ?? null,
    });
  }

  #decisionBody(d: Verdict | Held, reply: SidecarReply | null, heldFor: string | null = null): DecisionBody {
    const e = d.envelope;
    let verdict: AuditDecision;
    let stage: string;
    let reason: string;
    if (d.verdict === 'hold') {
      verdict = 'require_approval';
      stage = 'approval';
      reason = 'approval_required';
    } else if (d.verdict === 'allow') {
      verdict = d.passthrough ? 'passthrough' : 'allow';
      stage = d.approval !== null ? 'approval' : 'policy';
      reason = d.approval !== null ? d.approval.via : d.passthrough ? 'unclassified_passthrough' : 'allowed';
    } else {
      verdict = d.stage === 'approval' && d.reason === 'approval_required' ? 'require_approval' : 'deny';
      stage = d.stage;
      reason = d.reason;
    }
    const body: DecisionBody = {
      type: 'decision',
      request_id: e.requestId,
      agent_id: e.agentId,
      kind: e.kind,
      method: e.method,
      scheme: e.target.scheme,
      host: e.target.host,
      port: e.target.port,
      path: e.path === null ? '' : redactQuery(e.path, e.query),
      action_class: e.actionClass,
      risk: e.risk,
      decision: reply !== null && reply.decision === 'deny' ? 'deny' : verdict,
      stage: reply?.stage ?? stage,
      reason: reply?.reason ?? reason,
      rule: e.ruleId,
      policy_ids: d.policyIds,
      policy_hash: d.policyHash,
      token_id: d.tokenId,
      would_deny: d.verdict === 'allow' && d.wouldDeny !== null ? `${d.wouldDeny.stage}:${d.wouldDeny.reason}` : null,
      approval_id: heldFor ?? d.approvalId,
      mcp: e.mcp === null || e.mcp === undefined
        ? null
        : { server: e.mcp.server, method: e.mcp.method, tool: e.mcp.tool, rpc_id: e.mcp.rpcId, calls: e.mcp.rpcIds.length },
    };
    return body;
  }

  /** A request refused before it could be classified (malformed, bad CONNECT target, bad credentials). */
  refused(reply: SidecarReply, what: { method?: string; host?: string; port?: number; scheme?: 'http' | 'https'; agentId?: string | null } = {}): void {
    this.#append({
      type: 'decision',
      request_id: reply.requestId,
      agent_id: what.agentId ?? null,
      kind: 'request',
      method: what.method ?? '',
      scheme: what.scheme ?? 'http',
      host: what.host ?? '',
      port: what.port ?? 0,
      path: '',
      action_class: null,
      risk: null,
      decision: 'deny',
      stage: reply.stage,
      reason: reply.reason,
      rule: null,
      policy_ids: [],
      policy_hash: null,
      token_id: null,
      would_deny: null,
      approval_id: null,
      mcp: null,
    });
  }

  /**
   * The outcome event, when the response has finished streaming or the dispatch failed. `usage`: what
   * was read of an LLM call's response (docs/llm.md "Usage"); null for every other request.
   */
  outcome(d: Verdict, o: DispatchOutcome, durationMs: number, usage: UsageReading | null = null): void {
    this.#metrics?.outcome(d.envelope.kind, d.envelope.target, o.upstreamStatus, o.error, durationMs);
    if (usage !== null) {
      if (usage.usage !== null) this.#metrics?.llmUsage?.(d.envelope.agentId, usage.usage);
      else this.#metrics?.llmUsageUnread?.(usage.reason);
    }
    const body = outcomeBody(d, o, durationMs, usage === null || usage.usage === null ? null : auditUsage(usage.usage));
    // Rare (an LLM response the reader could not read): the one shape with `usage_unread`.
    if (usage !== null && usage.usage === null) this.#append({ ...body, usage_unread: usage.reason });
    else this.#append(body);
  }

  lifecycle(event: AuditLifecycleEvent, detail: string | null = null): void {
    this.#append({ type: 'lifecycle', request_id: null, agent_id: null, event, detail });
  }

  flush(): Promise<void> {
    return this.#writer.flush();
  }

  close(): Promise<void> {
    return this.#writer.close();
  }
}

/** Built field by field, in one fixed key order (audit/event-json.ts plans per shape). */
function outcomeBody(d: Verdict, o: DispatchOutcome, durationMs: number, usage: AuditUsage | null): OutcomeBody {
  return {
    type: 'outcome',
    request_id: d.envelope.requestId,
    agent_id: d.envelope.agentId,
    status: o.status,
    error: o.error,
    error_code: o.errorCode,
    response_hash: o.responseHash,
    bytes_in: o.bytesIn,
    bytes_out: o.bytesOut,
    duration_ms: Math.round(durationMs * 100) / 100,
    credential_injected: o.credentialInjected,
    approval_id: d.approvalId,
    usage,
  };
}

/** Cost rounded to 1e-10 USD, so float noise of the price arithmetic never reaches the log. */
function auditUsage(u: LlmUsage): AuditUsage {
  return {
    model: u.model,
    input_tokens: u.inputTokens,
    output_tokens: u.outputTokens,
    cached_input_tokens: u.cachedInputTokens,
    cache_write_tokens: u.cacheWriteTokens,
    cost_usd: u.costUsd === null ? null : Math.round(u.costUsd * 1e10) / 1e10,
    estimated: u.estimated,
  };
}
