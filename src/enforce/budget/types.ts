/**
 * The per-agent LLM usage ledger's shapes (docs/llm.md "Budgets"): totals of tokens and dollars
 * per fixed UTC window, kept in memory or in Redis.
 */
import type { LlmUsage } from '../../core/llm.js';

export type BudgetWindow = 'minute' | 'hour' | 'day';
export const WINDOWS: readonly BudgetWindow[] = ['minute', 'hour', 'day'];

export const WINDOW_MS: Readonly<Record<BudgetWindow, number>> = Object.freeze({ minute: 60_000, hour: 3_600_000, day: 86_400_000 });

/** Start (epoch ms) of the fixed UTC window `nowMs` falls in: epoch ms are UTC, and a day has no leap seconds in them. */
export function windowStart(window: BudgetWindow, nowMs: number): number {
  const size = WINDOW_MS[window];
  return Math.floor(nowMs / size) * size;
}

/** One window's totals: input + output tokens, and USD of the calls whose model had a price. */
export interface WindowTotal {
  readonly tokens: number;
  readonly costUsd: number;
}

/** An agent's totals in the windows `nowMs` falls in. */
export type UsageTotals = Readonly<Record<BudgetWindow, WindowTotal>>;

export const ZERO: WindowTotal = Object.freeze({ tokens: 0, costUsd: 0 });
export const NO_USAGE: UsageTotals = Object.freeze({ minute: ZERO, hour: ZERO, day: ZERO });

/** What a ledger adds from one call: tokens = input + output; cost only when the price table knew the model. */
export function tokensOf(usage: LlmUsage): number {
  const n = usage.inputTokens + usage.outputTokens;
  return Number.isFinite(n) && n > 0 ? Math.round(n) : 0;
}

export function costOf(usage: LlmUsage): number {
  const c = usage.costUsd;
  return c !== null && Number.isFinite(c) && c > 0 ? c : 0;
}

/** One call's usage as read back from the audit log (a rebuild after a restart). */
export interface UsageRecord {
  readonly agentId: string;
  /** When the call ended (the outcome event's `ts`), epoch ms. */
  readonly atMs: number;
  readonly usage: LlmUsage;
}

/**
 * The ledger the budget stage reads and the pipeline adds to. `totals` answers null when the shared
 * state cannot be read (Redis unreachable with `on_error = "deny"`): the caller fails closed.
 */
export interface UsageLedger {
  /** Add one call's usage at `nowMs`. Never throws, never waits: a failure is logged, not raised. */
  record(agentId: string, usage: LlmUsage, nowMs: number): void;
  totals(agentId: string, nowMs: number): UsageTotals | null | Promise<UsageTotals | null>;
  /** True when totals live only in this process (then the composition root rebuilds them from the audit log at start). */
  readonly local: boolean;
  close(): Promise<void>;
}
