/**
 * The audit event contract (docs/audit.md). One JSON object per line; every event is hash-chained and signed
 * by the writer — each on its own, or by the checkpoint after it (docs/audit.md "Checkpoints") — so callers
 * only ever build an `AuditEventBody` (the event minus the integrity fields).
 */
import type { ApprovalAction as AuditApprovalAction, GrantRecord as AuditGrant } from '../core/approval.js';

export const AUDIT_EVENT_VERSION = 1;

export type AuditEventType = 'decision' | 'outcome' | 'approval' | 'lifecycle';
export type AuditDecision = 'allow' | 'deny' | 'passthrough' | 'require_approval';
export type AuditOutcomeError = 'timeout' | 'network' | 'invalid_request' | 'rate_limited' | 'credential' | 'shutdown';
/**
 * `requested` → one of `approved` | `denied` | `expired` (timed out) | `cancelled` (every waiting agent
 * disconnected) | `abandoned` (still open when the sidecar died; written at the next start). A standing grant is given by an `approved` event carrying `grant`; it ends with
 * `revoked` (by a person) or `expired`, both carrying the same `grant`.
 */
export type { ApprovalAction as AuditApprovalAction, GrantRecord as AuditGrant } from '../core/approval.js';
export { redactQuery } from '../core/redact.js';
export type AuditLifecycleEvent = 'start' | 'stop' | 'reload' | 'audit_recovered' | 'audit_failed' | 'audit_repaired';

/** Fields the writer assigns (seq, ts, chain, signature): never supplied by callers. */
export interface AuditIntegrity {
  readonly v: 1;
  /** Gapless from 1 across the whole log, rotated files included. */
  readonly seq: number;
  /** RFC 3339 UTC with milliseconds, e.g. 2026-11-22T10:00:00.123Z. */
  readonly ts: string;
  /** `hash` of the previous event; 64 zeros for the first event of the log. */
  readonly prev_hash: string;
  /** Lower-case hex SHA-256, see chain.ts. */
  readonly hash: string;
  /**
   * Base64 Ed25519 signature over the 32 raw bytes of `hash`. Absent with `[audit] signatures =
   * "checkpoint"`: the next checkpoint event's signature covers the event through the chain.
   */
  readonly sig?: string;
}

interface BodyCommon {
  readonly request_id: string | null;
  readonly agent_id: string | null;
}

export interface DecisionBody extends BodyCommon {
  readonly type: 'decision';
  readonly kind: 'request' | 'websocket' | 'tunnel';
  readonly method: string;
  readonly scheme: 'http' | 'https';
  readonly host: string;
  readonly port: number;
  /** Path with query values redacted (`redactQuery`): never raw query values, which may hold secrets. */
  readonly path: string;
  readonly action_class: string | null;
  readonly risk: string | null;
  readonly decision: AuditDecision;
  readonly stage: string;
  readonly reason: string;
  /** The mapping rule that classified the request, when one did. */
  readonly rule: string | null;
  readonly policy_ids: readonly string[];
  readonly policy_hash: string | null;
  /** Capability token id (`jti`), never the token. */
  readonly token_id: string | null;
  /** Monitor mode: the reason enforce mode would have denied, else null. */
  readonly would_deny: string | null;
  /** The approval this request waited for, or the one whose standing grant let it through. */
  readonly approval_id: string | null;
  /** A request to a declared MCP endpoint: the message that decided it (docs/audit.md "`decision` events"); null elsewhere. */
  readonly mcp: AuditMcp | null;
}

/** `calls`: how many JSON-RPC messages the request carried (a batch has more than one). */
export interface AuditMcp {
  readonly server: string;
  readonly method: string | null;
  readonly tool: string | null;
  readonly rpc_id: string | number | null;
  readonly calls: number;
}

/** An LLM call's usage (docs/llm.md "Usage"); snake_case as written, token counts and USD. */
export interface AuditUsage {
  readonly model: string | null;
  readonly input_tokens: number;
  readonly output_tokens: number;
  readonly cached_input_tokens: number;
  readonly cache_write_tokens: number;
  readonly cost_usd: number | null;
  readonly estimated: boolean;
}

export interface OutcomeBody extends BodyCommon {
  readonly type: 'outcome';
  readonly status: number | null;
  readonly error: AuditOutcomeError | null;
  readonly error_code: string | null;
  /** `sha256:<hex>` of the response body bytes as streamed, or null when no body was relayed. */
  readonly response_hash: string | null;
  readonly bytes_in: number;
  readonly bytes_out: number;
  readonly duration_ms: number;
  /** Whether a credential was injected; never its value. */
  readonly credential_injected: boolean;
  /** As in the request's decision event. */
  readonly approval_id: string | null;
  /** An LLM call's usage; null for any other response, and for an LLM response that could not be read. Absent in logs written before it existed. */
  readonly usage?: AuditUsage | null;
  /** Why an LLM response's usage could not be read (docs/llm.md "Reason codes"); present only then. */
  readonly usage_unread?: string;
}

export interface ApprovalBody extends BodyCommon {
  readonly type: 'approval';
  readonly approval_id: string;
  readonly action: AuditApprovalAction;
  /** The approver's configured name (never their token); null when no person acted (timeout, disconnect). */
  readonly approver: string | null;
  readonly reason: string | null;
  /** A standing grant given, revoked or expired; null otherwise. */
  readonly grant: AuditGrant | null;
}

export interface LifecycleBody extends BodyCommon {
  readonly type: 'lifecycle';
  readonly event: AuditLifecycleEvent;
  readonly detail: string | null;
}

/**
 * A signed event over the unsigned events `first_seq..last_seq` just before it (docs/audit.md
 * "Checkpoints"); sealed by the writer only (checkpoint.ts), never by callers.
 */
export interface CheckpointBody extends BodyCommon {
  readonly type: 'lifecycle';
  readonly event: 'checkpoint';
  /** `seq 40..51 (12 events)`, with `, signed at recovery, not when written` when `recovered`. */
  readonly detail: string;
  readonly first_seq: number;
  readonly last_seq: number;
  readonly events: number;
  /** Signed by the next start, over events a killed run left unsigned, not when they were written. */
  readonly recovered: boolean;
}

/** What callers pass to `AuditWriter.append`. */
export type AuditEventBody = DecisionBody | OutcomeBody | ApprovalBody | LifecycleBody;
/** What the writer seals: callers' events and its own checkpoints. */
export type SealedBody = AuditEventBody | CheckpointBody;

export type DecisionEvent = AuditIntegrity & DecisionBody;
export type OutcomeEvent = AuditIntegrity & OutcomeBody;
export type ApprovalEvent = AuditIntegrity & ApprovalBody;
export type LifecycleEvent = AuditIntegrity & LifecycleBody;
export type CheckpointEvent = AuditIntegrity & CheckpointBody;
export type AuditEvent = DecisionEvent | OutcomeEvent | ApprovalEvent | LifecycleEvent | CheckpointEvent;

/** Fields each type must carry, for the verifier (a line missing one is reported, not guessed at). */
export const REQUIRED_FIELDS: { readonly [K in AuditEventType]: readonly string[] } = {
  decision: ['kind', 'method', 'scheme', 'host', 'port', 'path', 'action_class', 'risk', 'decision', 'stage', 'reason', 'rule', 'policy_ids', 'policy_hash', 'token_id', 'would_deny', 'approval_id'],
  outcome: ['status', 'error', 'error_code', 'response_hash', 'bytes_in', 'bytes_out', 'duration_ms', 'credential_injected', 'approval_id'],
  approval: ['approval_id', 'action', 'approver', 'reason', 'grant'],
  lifecycle: ['event', 'detail'],
};

/** `sig` is not among them: with checkpoints, events carry none. */
export const COMMON_FIELDS: readonly string[] = ['v', 'seq', 'ts', 'type', 'request_id', 'agent_id', 'prev_hash', 'hash'];
export const CHECKPOINT_FIELDS: readonly string[] = ['first_seq', 'last_seq', 'events', 'recovered', 'sig'];
