/**
 * The budget stage (docs/llm.md "Budgets"): after stage 2 permits an LLM call (or asks for an
 * approval), and again after an approval, an agent whose total in a window has reached one of its
 * budgets is refused with 429 `budget_exceeded` and a Retry-After of the seconds to that window's end.
 * A budget for the agent's id and every `"*"` budget apply, each with its own limit. The totals are read
 * only for a request that a budget or a usage-reading policy needs them for.
 */
import type { Envelope } from '../../core/envelope.js';
import type { FirmaConfig } from '../../config/index.js';
import { budgetPlaces } from '../../config/llm-checks.js';
import { WINDOW_MS, windowStart, type BudgetWindow, type UsageLedger, type UsageTotals } from './types.js';
import { groupedInteger, usd } from '../../core/numbers.js';

export interface BudgetRule {
  /** An agent id, or "*" (every agent, each its own total). */
  readonly agent: string;
  readonly window: BudgetWindow;
  readonly maxTokens: number | null;
  readonly maxCostUsd: number | null;
  /** Where it is written (`firma.toml:12`), for the refusal message. */
  readonly place: string;
}

/** A refusal of the budget stage, as the Enforcer turns it into a deny. */
export interface BudgetRefusal {
  readonly status: 429 | 503;
  readonly reason: 'budget_exceeded' | 'shared_state_unavailable';
  readonly message: string;
  readonly retryAfterS: number;
}

export interface BudgetGateOptions {
  readonly rules: readonly BudgetRule[];
  readonly ledger: UsageLedger;
  /**
   * Whether a policy that can apply to this action class reads `context.llm_*`; null when no policy
   * reads them at all (then nothing is asked per request).
   */
  readonly policyReadsUsage: ((actionClass: string) => boolean) | null;
}

export class BudgetGate {
  readonly #byAgent: ReadonlyMap<string, readonly BudgetRule[]>;
  readonly #everyAgent: readonly BudgetRule[];
  readonly #ledger: UsageLedger;
  readonly #policyReads: ((actionClass: string) => boolean) | null;

  constructor(opts: BudgetGateOptions) {
    const byAgent = new Map<string, BudgetRule[]>();
    const every: BudgetRule[] = [];
    for (const r of opts.rules) {
      if (r.agent === '*') every.push(r);
      else byAgent.set(r.agent, [...(byAgent.get(r.agent) ?? []), r]);
    }
    this.#byAgent = byAgent;
    this.#everyAgent = every;
    this.#ledger = opts.ledger;
    this.#policyReads = opts.policyReadsUsage;
  }

  /** The gate a config needs: null when no budget is set and no policy reads usage (nothing to do per request). */
  static create(opts: BudgetGateOptions): BudgetGate | null {
    return opts.rules.length === 0 && opts.policyReadsUsage === null ? null : new BudgetGate(opts);
  }

  /** Whether a budget limits this agent's LLM calls. */
  limits(envelope: Envelope, agentId: string): boolean {
    const llm = envelope.llm;
    return llm !== null && llm !== undefined && (this.#everyAgent.length > 0 || this.#byAgent.has(agentId));
  }

  /** Whether deciding this request needs the agent's totals: a budget limits it, or a policy reads them. */
  wants(envelope: Envelope, agentId: string): boolean {
    if (this.limits(envelope, agentId)) return true;
    const reads = this.#policyReads;
    return reads !== null && envelope.actionClass !== null && reads(envelope.actionClass);
  }

  totals(agentId: string, nowMs: number): UsageTotals | null | Promise<UsageTotals | null> {
    return this.#ledger.totals(agentId, nowMs);
  }

  /**
   * The refusal for this request, or null: totals that could not be read refuse (503, fail closed);
   * past a budget that limits the call, 429 with the budget that ends last (the agent must wait for it).
   */
  check(envelope: Envelope, agentId: string, totals: UsageTotals | null, nowMs: number): BudgetRefusal | null {
    if (totals === null) {
      return {
        status: 503,
        reason: 'shared_state_unavailable',
        message: 'the shared LLM usage totals (Redis) cannot be read, so calls a budget or policy counts are refused until they can',
        retryAfterS: 1,
      };
    }
    if (!this.limits(envelope, agentId)) return null;
    let worst: { rule: BudgetRule; used: string; endMs: number } | null = null;
    for (const list of [this.#byAgent.get(agentId) ?? NONE, this.#everyAgent]) {
      for (const rule of list) {
        const used = overBy(rule, totals);
        if (used === null) continue;
        const endMs = windowStart(rule.window, nowMs) + WINDOW_MS[rule.window];
        if (worst === null || endMs > worst.endMs) worst = { rule, used, endMs };
      }
    }
    if (worst === null) return null;
    const seconds = Math.max(1, Math.ceil((worst.endMs - nowMs) / 1000));
    return {
      status: 429,
      reason: 'budget_exceeded',
      message: `agent ${agentId} has used ${worst.used} this ${worst.rule.window} (budget ${worst.rule.place}); the window ends in ${duration(seconds)}`,
      retryAfterS: seconds,
    };
  }
}

const NONE: readonly BudgetRule[] = [];

/** "2,000,140 of 2,000,000 tokens" / "$25.03 of $25.00" when the rule's total is reached, else null. */
function overBy(rule: BudgetRule, totals: UsageTotals): string | null {
  const t = totals[rule.window];
  if (rule.maxTokens !== null && t.tokens >= rule.maxTokens) return `${groupedInteger(t.tokens)} of ${groupedInteger(rule.maxTokens)} tokens`;
  if (rule.maxCostUsd !== null && t.costUsd >= rule.maxCostUsd) return `${usd(t.costUsd)} of ${usd(rule.maxCostUsd)}`;
  return null;
}

/** 11580 → "3h13m", 750 → "12m30s", 45 → "45s". */
export function duration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m${String(s).padStart(2, '0')}s`;
  return `${s}s`;
}

/** The `[[budgets]]` of a validated config as rules, each named by where it is written. */
export function budgetRulesOf(config: Pick<FirmaConfig, 'budgets' | 'source'>): BudgetRule[] {
  const places = budgetPlaces(config.source.path, config.budgets.length);
  return config.budgets.map((b, i) => ({
    agent: b.agent,
    window: b.window,
    maxTokens: b.max_tokens ?? null,
    maxCostUsd: b.max_cost_usd ?? null,
    place: places[i] ?? `budgets[${i}]`,
  }));
}
