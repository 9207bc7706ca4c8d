/**
 * LLM usage counters for `GET /metrics` (docs/llm.md "Metrics"): tokens by agent, model and kind,
 * and cost by agent and model, added once per LLM call whose usage was read.
 *
 * Cardinality is bounded: agent ids and model names come from requests and responses, so each label keeps
 * at most MAX_AGENTS / MAX_MODELS distinct values (the first seen), later ones are "other"; a model name
 * is lowercased, characters outside `a-z 0-9 . _ : / -` become `_`, and it is cut at 64 characters; no
 * model is "unknown". `kind` is `input` (every input token, cached or not), `output`, and the parts of
 * input billed differently: `cached_input` and `cache_write`.
 */
import { Counter, type Registry } from 'prom-client';
import type { LlmUsage } from '../core/llm.js';

export type { LlmUsage };

export const MAX_AGENTS = 200;
export const MAX_MODELS = 100;
export const OTHER_LABEL = 'other';
export const UNKNOWN_MODEL = 'unknown';
const MODEL_LENGTH = 64;

/** A model name as a label value (before the cap). */
export function modelLabel(model: string | null): string {
  if (model === null || model === '') return UNKNOWN_MODEL;
  return model.toLowerCase().replace(/[^a-z0-9._:/-]/g, '_').slice(0, MODEL_LENGTH);
}

/** Label values of a bounded set: the first `max` seen keep their name, later ones are "other". */
class BoundedLabels {
  readonly #seen = new Set<string>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  label(value: string): string {
    if (this.#seen.has(value)) return value;
    if (this.#seen.size >= this.#max) return OTHER_LABEL;
    this.#seen.add(value);
    return value;
  }
}

export class LlmUsageMetrics {
  readonly #tokens: Counter<'agent' | 'model' | 'kind'>;
  readonly #cost: Counter<'agent' | 'model'>;
  readonly #unread: Counter<'reason'>;
  readonly #agents = new BoundedLabels(MAX_AGENTS);
  readonly #models = new BoundedLabels(MAX_MODELS);

  constructor(registry: Registry) {
    const registers = [registry];
    this.#tokens = new Counter({
      name: 'firma_llm_tokens_total',
      help: 'LLM tokens used, by agent, model and kind (input = every input token; cached_input and cache_write are parts of it; output).',
      labelNames: ['agent', 'model', 'kind'] as const,
      registers,
    });
    this.#cost = new Counter({
      name: 'firma_llm_cost_usd_total',
      help: 'LLM cost in US dollars from the price table, by agent and model (calls to a model without a price add nothing).',
      labelNames: ['agent', 'model'] as const,
      registers,
    });
    this.#unread = new Counter({
      name: 'firma_llm_usage_unread_total',
      help: 'LLM responses whose usage could not be read, by reason (docs/llm.md "Reason codes"); the call itself went through.',
      labelNames: ['reason'] as const,
      registers,
    });
  }

  /** An LLM response without readable usage; `reason` is one of a fixed set (bounded label). */
  unread(reason: string): void {
    this.#unread.inc({ reason });
  }

  /** One LLM call's usage. Never throws. */
  record(agentId: string, usage: LlmUsage): void {
    try {
      const agent = this.#agents.label(agentId);
      const model = this.#models.label(modelLabel(usage.model));
      this.#add(agent, model, 'input', usage.inputTokens);
      this.#add(agent, model, 'output', usage.outputTokens);
      this.#add(agent, model, 'cached_input', usage.cachedInputTokens);
      this.#add(agent, model, 'cache_write', usage.cacheWriteTokens);
      const cost = usage.costUsd;
      if (cost !== null && Number.isFinite(cost) && cost > 0) this.#cost.inc({ agent, model }, cost);
    } catch {
      // A metric that cannot be added is not worth failing a response for.
    }
  }

  #add(agent: string, model: string, kind: string, n: number): void {
    if (Number.isFinite(n) && n > 0) this.#tokens.inc({ agent, model, kind }, n);
  }
}
