/**
 * What the body readers gather while a response passes (the usage fields found so far, the counts of
 * generated text), and how it becomes the one `UsageReading` of the exchange
 * (docs/llm.md "How usage is read"). The provider shapes of `usage` are read here, for streams and JSON bodies alike.
 */
import type { LlmFormat, LlmUsage, UsageReading } from '../../core/llm.js';
import type { PriceTable } from './prices.js';
import { TextCounts } from './text-counts.js';

/**
 * Why a response gave no usage (docs/llm.md "Reason codes"): a fixed set, usable as a metric label. A
 * response that carries no usage but generated text is not among them: its usage is estimated.
 */
export const USAGE_REASONS = [
  'status_4xx',
  'status_5xx',
  'status_other',
  'content_type',
  'encoding',
  'decode_error',
  'too_large',
  'line_too_long',
  'malformed',
  'not_generation',
  'cut',
] as const;
export type UsageReason = (typeof USAGE_REASONS)[number];

/** A model name longer than this is not a model name (it is not kept). */
export const MAX_MODEL_LENGTH = 200;

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A token count: a non-negative safe integer; absent or null is 0; anything else is not a count. */
function count(v: unknown): number | null {
  if (v === undefined || v === null) return 0;
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null;
}

export class UsageDraft {
  model: string | null = null;
  inputTokens = 0;
  cachedInputTokens = 0;
  cacheWriteTokens = 0;
  outputTokens = 0;
  /** Anthropic's `input_tokens`: the input neither read from nor written to the cache. */
  private anthropicInput = 0;
  /** The input counts came from a `usage` (else they are 0: input is not estimated). */
  hasInput = false;
  /** The output count came from a final `usage` (else it is estimated from `text`). */
  hasOutput = false;
  /** Something of a generation was seen: a usage, a model, a text delta (a models list is not one). */
  generation = false;
  /** The reader gave up: no usage is reported, whatever was read. */
  failure: UsageReason | null = null;
  readonly text = new TextCounts();

  fail(reason: UsageReason): void {
    if (this.failure === null) this.failure = reason;
  }

  /** The model a response (or `response`/`message`) object names, when not known yet. */
  takeModel(v: unknown): void {
    if (this.model === null && typeof v === 'string' && v !== '' && v.length <= MAX_MODEL_LENGTH) {
      this.model = v;
      this.generation = true;
    }
  }

  /**
   * Apply one `usage` object in the `format`'s shape. `final` is false for Anthropic's `message_start`,
   * whose output count is only the first token's. False when the object is not a usage (malformed).
   */
  takeUsage(format: LlmFormat, usage: unknown, final: boolean): boolean {
    if (!isObject(usage)) return false;
    return format === 'openai' ? this.takeOpenAi(usage) : this.takeAnthropic(usage, final);
  }

  /** Chat Completions and Embeddings (`prompt_tokens`), or the Responses API (`input_tokens`). */
  private takeOpenAi(u: Json): boolean {
    const chat = Object.hasOwn(u, 'prompt_tokens');
    const input = count(chat ? u['prompt_tokens'] : u['input_tokens']);
    const output = count(chat ? u['completion_tokens'] : u['output_tokens']);
    const details = chat ? u['prompt_tokens_details'] : u['input_tokens_details'];
    const cached = count(isObject(details) ? details['cached_tokens'] : undefined);
    if (input === null || output === null || cached === null) return false;
    if (!chat && !Object.hasOwn(u, 'input_tokens')) return false;
    this.inputTokens = input;
    this.cachedInputTokens = Math.min(cached, input);
    this.cacheWriteTokens = 0;
    this.outputTokens = output;
    this.hasInput = true;
    this.hasOutput = true;
    this.generation = true;
    return true;
  }

  /** Messages: the three input kinds are billed apart and summed into `inputTokens`. */
  private takeAnthropic(u: Json, final: boolean): boolean {
    const input = count(u['input_tokens']);
    const read = count(u['cache_read_input_tokens']);
    const write = count(u['cache_creation_input_tokens']);
    const output = count(u['output_tokens']);
    if (input === null || read === null || write === null || output === null) return false;
    // message_delta repeats the input counts (cumulative) in newer API versions and leaves them out, or
    // null, in older ones: a count only replaces what message_start said when it is there.
    const given = (key: string): boolean => typeof u[key] === 'number';
    if (given('input_tokens') || !this.hasInput) this.anthropicInput = input;
    if (given('cache_read_input_tokens') || !this.hasInput) this.cachedInputTokens = read;
    if (given('cache_creation_input_tokens') || !this.hasInput) this.cacheWriteTokens = write;
    this.inputTokens = this.anthropicInput + this.cachedInputTokens + this.cacheWriteTokens;
    this.hasInput = this.hasInput || given('input_tokens');
    if (final) {
      this.outputTokens = output;
      this.hasOutput = true;
    } else if (!this.hasOutput) {
      this.outputTokens = output;
    }
    this.generation = true;
    return true;
  }

  /**
   * The reading of the exchange. `complete` false: it was cut, and what was read so far counts (a
   * stream cut after Anthropic's message_start keeps its input tokens).
   */
  finish(prices: PriceTable, fallbackModel: () => string | null): UsageReading {
    if (this.failure !== null) return { usage: null, reason: this.failure };
    if (!this.generation && this.text.empty) return { usage: null, reason: 'not_generation' };
    const estimated = !this.hasOutput;
    const outputTokens = estimated ? Math.max(this.outputTokens, this.text.estimateTokens()) : this.outputTokens;
    const draft = {
      model: this.model ?? fallbackModel(),
      inputTokens: this.inputTokens,
      outputTokens,
      cachedInputTokens: this.cachedInputTokens,
      cacheWriteTokens: this.cacheWriteTokens,
      estimated,
    };
    const usage: LlmUsage = { ...draft, costUsd: prices.cost(draft) };
    return { usage, reason: null };
  }
}
