import type { LlmAccounting, LlmFacts, LlmUsage, UsageReader } from '../core/llm.js';
import type { Logger } from '../core/log.js';
import { createUsageReader } from '../normalize/llm/usage-reader.js';
import type { PriceTable } from '../normalize/llm/prices.js';
import type { UsageLedger } from '../enforce/budget/types.js';

/** Model names warned about as unpriced, at most: an agent sending made-up names cannot grow it. */
const MAX_WARNED_MODELS = 1000;

/**
 * The LLM side of a snapshot (docs/llm.md "Usage"): a usage reader per call, priced by this snapshot's
 * table, and the ledger every snapshot shares, which the budget stage reads before the next call.
 */
export class UsageAccounting implements LlmAccounting {
  readonly #prices: PriceTable;
  readonly #ledger: UsageLedger;
  readonly #log: Logger;
  readonly #warned = new Set<string>();

  constructor(prices: PriceTable, ledger: UsageLedger, log: Logger) {
    this.#prices = prices;
    this.#ledger = ledger;
    this.#log = log;
  }

  reader(llm: LlmFacts): UsageReader {
    return createUsageReader(llm.format, this.#prices);
  }

  record(agentId: string, usage: LlmUsage): void {
    this.#ledger.record(agentId, usage, Date.now());
    if (usage.costUsd === null && usage.model !== null) this.#unpriced(usage.model);
  }

  /** Once per model name: its calls count in tokens only (docs/llm.md "Prices"). */
  #unpriced(model: string): void {
    if (this.#warned.has(model) || this.#warned.size >= MAX_WARNED_MODELS) return;
    this.#warned.add(model);
    this.#log.warn({ model, prices: this.#prices.file }, 'the price table has no price for this model: its calls count in tokens only (add it to [llm] prices_file)');
  }
}
