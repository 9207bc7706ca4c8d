import type { Envelope, Identity, BodyValue } from '../core/envelope.js';
import type { ApprovalGrantFacts, Denied, DecisionFacts, Held, Permitted, Stage, Verdict, WouldDeny } from '../core/decision.js';
import type { ApprovalQueue } from './approval/queue.js';
import type { CapabilityVerifier } from './capability/verifier.js';
import type { CapabilityCheck } from './capability/check.js';
import type { PolicyEngine } from './policy/engine.js';
import type { McpInput } from './policy/verdict.js';
import type { ActionCounters } from './counters.js';
import type { BudgetGate, BudgetRefusal } from './budget/gate.js';
import type { UsageTotals } from './budget/types.js';

function allow(
  envelope: Envelope,
  identity: Identity,
  facts: DecisionFacts,
  passthrough: boolean,
  wouldDeny: WouldDeny | null,
  approval: ApprovalGrantFacts | null = null,
): Permitted {
  return { verdict: 'allow', envelope, identity, passthrough, wouldDeny, approval, ...facts };
}

export interface EnforcerOptions {
  readonly mode: 'enforce' | 'monitor';
  readonly defaultProtected: boolean;
  /** Whether a mapping rule names this host (normalize's MappingTable.coversHost). */
  readonly coversHost: (host: string) => boolean;
  /** Stage 1; null when `[sidecar.capabilities] required = false`. */
  readonly capabilities: CapabilityVerifier | null;
  /** The sidecar's own token, for requests that bring none. Secret. */
  readonly selfToken: string | null;
  readonly policy: PolicyEngine;
  readonly counters: ActionCounters;
  /** The approval stage; null: a request that needs approval is denied (`approval_required`). */
  readonly approvals?: ApprovalQueue | null;
  /** The budget stage (docs/llm.md "Budgets"); null when no budget is set and no policy reads usage. */
  readonly budgets?: BudgetGate | null;
  readonly now?: () => number;
  /** Where an unexpected exception inside a stage is reported (the agent only sees `internal_error`). */
  readonly onError: (err: unknown, requestId: string) => void;
}

/**
 * The enforce stage's entry: stage 1 (capability) then stage 2 (Cedar policy) on a normalized envelope
 * (docs/architecture.md "Enforce"). Same envelope + same policies + same counts → same verdict. Any
 * exception is a deny (fail closed). In monitor mode every deny becomes a permit that carries what
 * would have been refused. It never dispatches: the pipeline issues the Allowed the connector takes.
 */
export class Enforcer {
  readonly #o: EnforcerOptions;
  readonly #now: () => number;

  constructor(opts: EnforcerOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  get mode(): 'enforce' | 'monitor' {
    return this.#o.mode;
  }

  /**
   * Whether a tunnel to `host` opened without a token could carry no request stage 1 would let
   * through. Asked on CONNECT, where a 407 still reaches the client as a proxy answer it can act on;
   * inside the tunnel the same 407 would look like the origin's.
   */
  tunnelNeedsToken(host: string): boolean {
    return this.#o.mode === 'enforce' && this.#o.capabilities !== null && this.#o.selfToken === null
      && (this.#o.defaultProtected || this.#o.coversHost(host));
  }

  get policyHash(): string {
    return this.#o.policy.policyHash;
  }

  /** The envelope with the body fields a rule asked for. */
  withBody(envelope: Envelope, values: Readonly<Record<string, BodyValue>>): Envelope {
    return { ...envelope, body: values };
  }

  /** A refusal before the stages ran (body over the limit, not JSON…), subject to monitor mode. */
  refuse(envelope: Envelope, identity: Identity, stage: Stage, reason: string, message: string, status: 400 | 403 = 403): Verdict {
    return this.#finish(envelope, identity, this.#deny(envelope, stage, reason, message, status, EMPTY_FACTS));
  }

  /**
   * Stage 1 then stage 2. Returns synchronously when stage 1 answers from its cache. `Held`: a policy
   * requires a person's approval; the caller holds the request and calls `awaitApproval`.
   */
  decide(envelope: Envelope, identity: Identity): Verdict | Held | Promise<Verdict | Held> {
    try {
      if (envelope.actionClass === null) {
        if (this.#o.defaultProtected) {
          return this.#finish(envelope, identity, this.#deny(envelope, 'mapping', 'unclassified',
            `no mapping rule classifies ${envelope.method} ${envelope.target.host}${envelope.normalizedPath}, and unmapped traffic is denied (default_protected)`,
            403, EMPTY_FACTS));
        }
        return this.#passthrough(envelope, identity);
      }
      const caps = this.#o.capabilities;
      if (caps === null) return this.#stage2(envelope, identity, null);
      const token = identity.token ?? this.#o.selfToken;
      const check = caps.check({
        agentId: identity.agentId,
        token,
        actionClass: envelope.actionClass,
        host: envelope.target.host,
        path: envelope.normalizedPath,
      });
      if (check instanceof Promise) {
        return check.then(
          (c) => this.#afterStage1(envelope, identity, c, token),
          (err: unknown) => this.#internal(envelope, 'capability', err),
        );
      }
      return this.#afterStage1(envelope, identity, check, token);
    } catch (err) {
      return this.#internal(envelope, 'policy', err);
    }
  }

  /**
   * The approval stage: wait (the request held open) for a person's answer. `bodyHash` lets identical
   * requests share one approval; `signal` aborts when the agent disconnects. Never rejects.
   */
  async awaitApproval(held: Held, opts: { bodyHash: string | null; signal: AbortSignal }): Promise<Verdict> {
    const queue = this.#o.approvals ?? null;
    const facts: DecisionFacts = { tokenId: held.tokenId, policyIds: held.policyIds, policyHash: held.policyHash, approvalId: null };
    if (queue === null) return this.#deny(held.envelope, 'approval', 'approval_required', held.message, 403, facts);
    try {
      const r = await queue.wait(held, opts);
      if (r.kind === 'approved') {
        // Minutes may have passed: a token revoked or expired meanwhile denies, whatever the approver said.
        const recheck = await this.#recheckCapability(held);
        if (recheck !== null) return this.#deny(held.envelope, 'capability', recheck.reason, recheck.message, 403, { ...facts, approvalId: r.approvalId });
        // …and so may the agent's LLM usage: other calls may have spent its budget while this one waited.
        const over = await this.#recheckBudget(held);
        if (over !== null) return this.#overBudget(held.envelope, over, { ...facts, approvalId: r.approvalId }, ' (checked again after the approval)');
        this.#o.counters.record(held.identity.agentId, held.envelope.actionClass as string, this.#now());
        return allow(held.envelope, held.identity, { ...facts, approvalId: r.approvalId }, false, null, { via: r.via, approver: r.approver });
      }
      const status = r.reason === 'audit_unavailable' ? 503 : 403;
      return this.#deny(held.envelope, r.reason === 'audit_unavailable' ? 'audit' : 'approval', r.reason, r.message, status, { ...facts, approvalId: r.approvalId });
    } catch (err) {
      return this.#internal(held.envelope, 'approval', err);
    }
  }

  /** Stage 1 again for a request that waited: null when the capability still holds. */
  async #recheckCapability(held: Held): Promise<{ reason: string; message: string } | null> {
    const caps = this.#o.capabilities;
    if (caps === null) return null;
    const c = await caps.check({
      agentId: held.identity.agentId,
      token: held.identity.token ?? this.#o.selfToken,
      actionClass: held.envelope.actionClass as string,
      host: held.envelope.target.host,
      path: held.envelope.normalizedPath,
    });
    return c.ok ? null : { reason: c.reason, message: `${c.message} (checked again after the approval)` };
  }

  /** Unclassified traffic let through (default_protected = false): still held to the agent's LLM budgets. */
  #passthrough(envelope: Envelope, identity: Identity): Verdict | Promise<Verdict> {
    const gate = this.#o.budgets ?? null;
    if (gate === null || !gate.limits(envelope, identity.agentId)) return allow(envelope, identity, EMPTY_FACTS, true, null);
    const checked = (totals: UsageTotals | null): Verdict => {
      const over = gate.check(envelope, identity.agentId, totals, this.#now());
      return over === null ? allow(envelope, identity, EMPTY_FACTS, true, null) : this.#finish(envelope, identity, this.#overBudget(envelope, over, EMPTY_FACTS));
    };
    const totals = gate.totals(identity.agentId, this.#now());
    return totals instanceof Promise ? totals.then(checked, (err: unknown) => this.#internal(envelope, 'policy', err)) : checked(totals);
  }

  /** The budget stage again for a request that waited: null when its budgets still allow it. */
  async #recheckBudget(held: Held): Promise<BudgetRefusal | null> {
    const gate = this.#o.budgets ?? null;
    if (gate === null || !gate.limits(held.envelope, held.identity.agentId)) return null;
    const totals = await gate.totals(held.identity.agentId, this.#now());
    return gate.check(held.envelope, held.identity.agentId, totals, this.#now());
  }

  #overBudget(envelope: Envelope, r: BudgetRefusal, facts: DecisionFacts, suffix = ''): Denied {
    return { ...this.#deny(envelope, 'budget', r.reason, r.message + suffix, r.status, facts), retryAfterS: r.retryAfterS };
  }

  /**
   * Stage 2 with the agent's LLM usage when a budget or a policy needs it (docs/llm.md "Budgets"):
   * read once (one Redis round trip when shared), given to Cedar and to the budget check alike. Other
   * requests go straight to stage 2.
   */
  #stage2(envelope: Envelope, identity: Identity, tokenId: string | null): Verdict | Held | Promise<Verdict | Held> {
    const gate = this.#o.budgets ?? null;
    if (gate === null || !gate.wants(envelope, identity.agentId)) return this.#policyStage(envelope, identity, tokenId, null, null);
    const totals = gate.totals(identity.agentId, this.#now());
    if (totals instanceof Promise) {
      return totals.then(
        (t) => this.#withUsage(gate, envelope, identity, tokenId, t),
        (err: unknown) => this.#internal(envelope, 'policy', err),
      );
    }
    return this.#withUsage(gate, envelope, identity, tokenId, totals);
  }

  #withUsage(gate: BudgetGate, envelope: Envelope, identity: Identity, tokenId: string | null, totals: UsageTotals | null): Verdict | Held {
    try {
      const refusal = gate.check(envelope, identity.agentId, totals, this.#now());
      if (totals === null) {
        const facts: DecisionFacts = { tokenId, policyIds: [], policyHash: null, approvalId: null };
        return this.#finish(envelope, identity, this.#overBudget(envelope, refusal as BudgetRefusal, facts));
      }
      return this.#policyStage(envelope, identity, tokenId, totals, refusal);
    } catch (err) {
      return this.#internal(envelope, 'policy', err);
    }
  }

  #afterStage1(envelope: Envelope, identity: Identity, c: CapabilityCheck, token: string | null): Verdict | Held | Promise<Verdict | Held> {
    try {
      if (!c.ok) {
        // No identity at all is a 407, so clients that support it can ask for proxy credentials.
        const status = c.reason === 'token_missing' && token === null ? 407 : 403;
        return this.#finish(envelope, identity, this.#deny(envelope, 'capability', c.reason, c.message, status, {
          tokenId: c.tokenId,
          policyIds: [],
          policyHash: null,
          approvalId: null,
        }));
      }
      return this.#stage2(envelope, identity, c.tokenId);
    } catch (err) {
      return this.#internal(envelope, 'capability', err);
    }
  }

  /** Stage 2, then the budget: a call the policies permit (or hold) is refused past its budget. */
  #policyStage(envelope: Envelope, identity: Identity, tokenId: string | null, usage: UsageTotals | null, overBudget: BudgetRefusal | null): Verdict | Held {
    const actionClass = envelope.actionClass as string;
    const now = this.#now();
    const counts = this.#o.counters.counts(identity.agentId, actionClass, now);
    const outcome = this.#o.policy.evaluate({
      agentId: identity.agentId,
      actionClass,
      risk: envelope.risk ?? 'critical',
      method: envelope.method,
      host: envelope.target.host,
      path: envelope.normalizedPath,
      nowMs: now,
      counts,
      body: envelope.body,
      mcp: mcpInput(envelope),
      llm: usage,
    });
    const facts: DecisionFacts = { tokenId, policyIds: outcome.policyIds, policyHash: this.#o.policy.policyHash, approvalId: null };
    // Before a hold is created: nobody should be asked to approve a call its budget refuses anyway.
    if (overBudget !== null && outcome.verdict !== 'deny') return this.#finish(envelope, identity, this.#overBudget(envelope, overBudget, facts));
    if (outcome.verdict === 'allow') {
      this.#o.counters.record(identity.agentId, actionClass, now);
      return allow(envelope, identity, facts, false, null);
    }
    if (outcome.verdict === 'approval') {
      const message = `${actionClass} (${envelope.risk ?? 'unknown'} risk) needs a human's approval (${outcome.policyIds.join(', ')})`;
      // Monitor mode never holds a request: it reports what enforce mode would have waited for.
      if (this.#o.mode === 'monitor') return this.#finish(envelope, identity, this.#deny(envelope, 'approval', 'approval_required', message, 403, facts));
      const grant = this.#o.approvals?.useGrant(identity.agentId, actionClass, envelope.target.host) ?? null;
      if (grant !== null) {
        this.#o.counters.record(identity.agentId, actionClass, now);
        return allow(envelope, identity, { ...facts, approvalId: grant.approvalId }, false, null, { via: 'grant', approver: grant.grantedBy });
      }
      return { verdict: 'hold', envelope, identity, message, ...facts };
    }
    const message = outcome.reason === 'no_permit'
      ? `no policy permits ${actionClass} for agent ${identity.agentId}`
      : outcome.reason === 'policy_error'
        ? 'the policies could not be evaluated, so the request was denied'
        : `denied by policy ${outcome.policyIds.join(', ')}`;
    return this.#finish(envelope, identity, this.#deny(envelope, 'policy', outcome.reason, message, 403, facts));
  }

  #deny(envelope: Envelope, stage: Stage, reason: string, message: string, status: Denied['status'], facts: DecisionFacts): Denied {
    return { verdict: 'deny', envelope, stage, reason, message, status, ...facts };
  }

  /** Monitor mode turns a deny into an allow that remembers it; enforce mode keeps the deny. */
  #finish(envelope: Envelope, identity: Identity, denied: Denied): Verdict {
    if (this.#o.mode === 'enforce') return denied;
    if (envelope.actionClass !== null) this.#o.counters.record(identity.agentId, envelope.actionClass, this.#now());
    return allow(
      envelope,
      identity,
      { tokenId: denied.tokenId, policyIds: denied.policyIds, policyHash: denied.policyHash, approvalId: null },
      envelope.actionClass === null,
      { stage: denied.stage, reason: denied.reason, policyIds: denied.policyIds },
    );
  }

  #internal(envelope: Envelope, stage: Stage, err: unknown): Verdict {
    this.#o.onError(err, envelope.requestId);
    // Fail closed even in monitor mode: an evaluation that broke says nothing about the request.
    return this.#deny(envelope, stage, 'internal_error', 'the sidecar could not evaluate this request, so it was denied', 403, EMPTY_FACTS);
  }
}

const NO_ARGUMENTS: Readonly<Record<string, string>> = Object.freeze({});

/** What Cedar sees of an MCP message as `context.mcp` (docs/mcp.md "Policies"). */
function mcpInput(envelope: Envelope): McpInput | null {
  const m = envelope.mcp;
  if (m === null || m === undefined) return null;
  return { method: m.method ?? '', tool: m.tool ?? '', arguments: m.arguments ?? NO_ARGUMENTS };
}

const EMPTY_FACTS: DecisionFacts = { tokenId: null, policyIds: [], policyHash: null, approvalId: null };

/** A deny for a request whose classification or decision threw; never an allow, in any mode. */
export function deniedOnInternalError(envelope: Envelope, stage: 'mapping' | 'policy' = 'mapping'): Denied {
  return {
    verdict: 'deny',
    envelope,
    stage,
    reason: 'internal_error',
    message: stage === 'mapping'
      ? 'the sidecar could not classify this request, so it was denied'
      : 'the sidecar could not decide on this request, so it was denied',
    status: 403,
    ...EMPTY_FACTS,
  };
}
