/**
 * What the sidecar knows of an LLM call (docs/llm.md): which API shape a host speaks, the usage read
 * from its response as it streams past, and the side-channel through which the connector shows the
 * pipeline the bytes of an exchange without holding or delaying any of them.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** The response shapes usage is read from (`[[llm.hosts]] format`). */
export type LlmFormat = 'openai' | 'anthropic';

/** Set on the envelope of a request to a `[[llm.hosts]]` host (docs/llm.md "Hosts"). */
export interface LlmFacts {
  /** The host as configured (lowercase, with `:port` when not the scheme's default). */
  readonly host: string;
  readonly format: LlmFormat;
}

/** One LLM call's usage, as the outcome event records it (docs/llm.md "Usage"). */
export interface LlmUsage {
  /** The model the response names, else the request's `model`; null when neither says. */
  readonly model: string | null;
  /** Every input token billed, cached or not. */
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** Of `inputTokens`, those billed at the cached-input price (OpenAI `cached_tokens`, Anthropic `cache_read_input_tokens`). */
  readonly cachedInputTokens: number;
  /** Of `inputTokens`, those written to the provider's prompt cache (Anthropic `cache_creation_input_tokens`), billed at its cache-write price. */
  readonly cacheWriteTokens: number;
  /** USD from the price table; null when the model is not in it (counted in tokens only). */
  readonly costUsd: number | null;
  /** Output tokens were estimated: the response carried no usage. */
  readonly estimated: boolean;
}

/** What reading one response gave: its usage, or why there is none (recorded beside `usage: null`). */
export type UsageReading =
  | { readonly usage: LlmUsage; readonly reason: null }
  | { readonly usage: null; readonly reason: string };

/**
 * Sees an exchange's bytes on the side, as they pass (docs/llm.md "How usage is read"). Every method is
 * synchronous and must not throw, hold a chunk after it returns, or do more than bounded work per byte:
 * the connector calls it inline on the relay path and never waits for it.
 */
export interface ExchangeTap {
  /** A chunk of the request body as it goes upstream (the part the pipeline already read comes first). */
  requestData(chunk: Buffer): void;
  /** The final response's status and headers (1xx are not shown), before any body byte. */
  responseStart(status: number, headers: IncomingHttpHeaders): void;
  /** A chunk of the response body as relayed to the agent (decoded from chunked framing, not from gzip/br). */
  responseData(chunk: Buffer): void;
  /** The exchange ended: `complete` false when it was cut (a failure, the agent closing). */
  end(complete: boolean): void;
}

/** An ExchangeTap that reads one LLM response's usage; `result` resolves once it was ended, and never rejects. */
export interface UsageReader extends ExchangeTap {
  result(): Promise<UsageReading>;
}

/** What the pipeline asks of the LLM side of a snapshot (docs/llm.md): a reader per call, and where usage counts. */
export interface LlmAccounting {
  /** A fresh reader for one call to `llm`. */
  reader(llm: LlmFacts): UsageReader;
  /** Count a finished call's usage toward the agent's budgets and totals; never throws. */
  record(agentId: string, usage: LlmUsage): void;
}
