/**
 * Per-agent LLM usage per fixed UTC window, in this process (docs/llm.md "Budgets"): three
 * windows per agent, each reset when a call lands in a later window. Bounded by the agents active today:
 * once a day has passed, agents with nothing in it are dropped.
 */
import type { LlmUsage } from '../../core/llm.js';
import { NO_USAGE, WINDOWS, ZERO, costOf, tokensOf, windowStart, type BudgetWindow, type UsageLedger, type UsageRecord, type UsageTotals, type WindowTotal } from './types.js';

interface WindowCell {
  start: number;
  tokens: number;
  costUsd: number;
}

type AgentCells = Record<BudgetWindow, WindowCell>;

export class MemoryLedger implements UsageLedger {
  readonly local = true;
  readonly #agents = new Map<string, AgentCells>();
  /** The day the last sweep ran in: agents are swept once per new day, O(agents) then, O(1) otherwise. */
  #sweptDay = -1;

  record(agentId: string, usage: LlmUsage, nowMs: number): void {
    try {
      const tokens = tokensOf(usage);
      const cost = costOf(usage);
      if (tokens === 0 && cost === 0) return;
      this.#sweep(nowMs);
      let cells = this.#agents.get(agentId);
      if (cells === undefined) {
        cells = { minute: { start: -1, tokens: 0, costUsd: 0 }, hour: { start: -1, tokens: 0, costUsd: 0 }, day: { start: -1, tokens: 0, costUsd: 0 } };
        this.#agents.set(agentId, cells);
      }
      for (const w of WINDOWS) {
        const cell = cells[w];
        const start = windowStart(w, nowMs);
        // A call in a later window starts it afresh; one in an earlier window (a rebuild replaying the
        // day out of order) counts only in the windows it shares with the current one.
        if (start > cell.start) {
          cell.start = start;
          cell.tokens = 0;
          cell.costUsd = 0;
        }
        if (start === cell.start) {
          cell.tokens += tokens;
          cell.costUsd += cost;
        }
      }
    } catch {
      // Never throws (UsageLedger.record): a count that cannot be added is not worth failing a response.
    }
  }

  totals(agentId: string, nowMs: number): UsageTotals {
    const cells = this.#agents.get(agentId);
    if (cells === undefined) return NO_USAGE;
    return { minute: current(cells.minute, 'minute', nowMs), hour: current(cells.hour, 'hour', nowMs), day: current(cells.day, 'day', nowMs) };
  }

  /** Add every call of today's UTC day from `records` (the audit log's outcome events, oldest first). */
  async rebuild(records: AsyncIterable<UsageRecord>, nowMs: number): Promise<number> {
    const day = windowStart('day', nowMs);
    let n = 0;
    for await (const r of records) {
      if (r.atMs < day || r.atMs > nowMs) continue;
      this.record(r.agentId, r.usage, r.atMs);
      n++;
    }
    return n;
  }

  /** Agents held (for tests of the bound). */
  get size(): number {
    return this.#agents.size;
  }

  #sweep(nowMs: number): void {
    const day = windowStart('day', nowMs);
    if (day === this.#sweptDay) return;
    this.#sweptDay = day;
    for (const [agent, cells] of this.#agents) if (cells.day.start < day) this.#agents.delete(agent);
  }

  async close(): Promise<void> {
    this.#agents.clear();
  }
}

function current(cell: WindowCell, w: BudgetWindow, nowMs: number): WindowTotal {
  return cell.start === windowStart(w, nowMs) ? { tokens: cell.tokens, costUsd: cell.costUsd } : ZERO;
}
