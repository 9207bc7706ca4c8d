/**
 * What stage 2 is asked and what it answers (docs/architecture.md "Enforce"): one request's facts in, allow /
 * deny / approval out with the determining policy ids. Every failure is a `policy_error` deny (fail closed).
 */
import type { Risk } from '../../core/envelope.js';
import type { ActionCounts } from '../counters.js';
import type { UsageTotals } from '../budget/types.js';

export type PolicyVerdict = 'allow' | 'deny' | 'approval';
export type PolicyReason = 'policy_allow' | 'policy_deny' | 'no_permit' | 'approval_required' | 'policy_error';

export interface PolicyInput {
  readonly agentId: string;
  readonly actionClass: string;
  readonly risk: Risk;
  readonly method: string;
  readonly host: string;
  readonly path: string;
  readonly nowMs: number;
  readonly counts: ActionCounts;
  /** Body fields the mapping rule opted into; null when it opted into none. */
  readonly body: Readonly<Record<string, string | number | boolean | null>> | null;
  /** The MCP message (docs/mcp.md "Policies"); null off an MCP endpoint. */
  readonly mcp?: McpInput | null;
  /**
   * The agent's LLM usage in the current UTC windows (`context.llm_*`; docs/llm.md
   * "Policies on usage"); read only when a policy reads it, else null.
   */
  readonly llm?: UsageTotals | null;
}

export interface McpInput {
  readonly method: string;
  readonly tool: string;
  readonly arguments: Readonly<Record<string, string>>;
}

export interface PolicyOutcome {
  readonly verdict: PolicyVerdict;
  readonly reason: PolicyReason;
  /** The determining policies: satisfied forbids (deny), satisfied permits (allow), `@approval` permits (approval), erroring policies (policy_error). Sorted. */
  readonly policyIds: readonly string[];
  /** For `policy_error`: what went wrong, for logs (never shown to the agent). */
  readonly detail?: string;
}

export const EMPTY: readonly string[] = Object.freeze([]);
export const NO_PERMIT: PolicyOutcome = Object.freeze({ verdict: 'deny', reason: 'no_permit', policyIds: EMPTY });

export function policyError(detail: string, policyIds: readonly string[] = EMPTY): PolicyOutcome {
  return { verdict: 'deny', reason: 'policy_error', policyIds, detail };
}
