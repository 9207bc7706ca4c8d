/**
 * The wire formats of the LLM APIs whose usage the sidecar reads (docs/llm.md "How usage is read"),
 * shaped as the providers send them (field order, compact JSON, `event:` lines): for the unit tests of
 * the reader and the loopback fakes in llm-fakes.ts. Each builder takes the text to generate and the
 * token counts to report.
 */

export interface WireUsage {
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** OpenAI `cached_tokens`, Anthropic `cache_read_input_tokens`. */
  readonly cachedTokens?: number;
  /** Anthropic `cache_creation_input_tokens`. */
  readonly cacheWriteTokens?: number;
}

export interface WireAnswer {
  readonly model: string;
  /** The generated text, as the deltas a stream sends (joined for a JSON body). */
  readonly deltas: readonly string[];
  readonly usage: WireUsage;
}

const CREATED = 1741570283;

function sse(events: ReadonlyArray<readonly [string | null, unknown]>, done = false): string {
  const out = events.map(([event, data]) => `${event === null ? '' : `event: ${event}\n`}data: ${JSON.stringify(data)}\n\n`);
  return out.join('') + (done ? 'data: [DONE]\n\n' : '');
}

function chatUsage(u: WireUsage): unknown {
  return {
    prompt_tokens: u.inputTokens,
    completion_tokens: u.outputTokens,
    total_tokens: u.inputTokens + u.outputTokens,
    prompt_tokens_details: { cached_tokens: u.cachedTokens ?? 0, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
}

/** Chat Completions, `stream: false`. */
export function chatJson(a: WireAnswer, opts: { usage?: boolean } = {}): string {
  return JSON.stringify({
    id: 'chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT',
    object: 'chat.completion',
    created: CREATED,
    model: a.model,
    choices: [{ index: 0, message: { role: 'assistant', content: a.deltas.join(''), refusal: null, annotations: [] }, logprobs: null, finish_reason: 'stop' }],
    ...(opts.usage === false ? {} : { usage: chatUsage(a.usage) }),
    service_tier: 'default',
    system_fingerprint: 'fp_fc9f1d7035',
  }, null, 2);
}

/** Chat Completions, `stream: true`; the usage chunk only with `stream_options.include_usage`. */
export function chatSse(a: WireAnswer, opts: { includeUsage: boolean }): string {
  const base = { id: 'chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT', object: 'chat.completion.chunk', created: CREATED, model: a.model, service_tier: 'default', system_fingerprint: 'fp_fc9f1d7035' };
  const tail = opts.includeUsage ? { usage: null } : {};
  const chunk = (delta: unknown, finish: string | null): unknown => ({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...tail });
  const events: Array<[null, unknown]> = [[null, chunk({ role: 'assistant', content: '', refusal: null }, null)]];
  for (const d of a.deltas) events.push([null, chunk({ content: d }, null)]);
  events.push([null, chunk({}, 'stop')]);
  if (opts.includeUsage) events.push([null, { ...base, choices: [], usage: chatUsage(a.usage) }]);
  return sse(events, true);
}

function responseObject(a: WireAnswer, status: 'in_progress' | 'completed'): Record<string, unknown> {
  const done = status === 'completed';
  return {
    id: 'resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654', object: 'response', created_at: CREATED, status,
    background: false, error: null, incomplete_details: null, instructions: 'You are a helpful assistant.',
    max_output_tokens: null, model: a.model,
    output: done ? [{ id: 'msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654', type: 'message', status: 'completed', role: 'assistant',
      content: [{ type: 'output_text', annotations: [], logprobs: [], text: a.deltas.join('') }] }] : [],
    parallel_tool_calls: true, previous_response_id: null, reasoning: { effort: null, summary: null }, store: true, temperature: 1,
    text: { format: { type: 'text' }, verbosity: 'medium' }, tool_choice: 'auto', tools: [], top_p: 1, truncation: 'disabled',
    usage: done ? {
      input_tokens: a.usage.inputTokens, input_tokens_details: { cached_tokens: a.usage.cachedTokens ?? 0 },
      output_tokens: a.usage.outputTokens, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: a.usage.inputTokens + a.usage.outputTokens,
    } : null,
    user: null, metadata: {},
  };
}

/** The Responses API, `stream: false`. */
export function responsesJson(a: WireAnswer): string {
  return JSON.stringify(responseObject(a, 'completed'), null, 2);
}

/** The Responses API, `stream: true` (the usage is in `response.completed`). */
export function responsesSse(a: WireAnswer, opts: { completed?: boolean } = {}): string {
  const item = 'msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654';
  let seq = 0;
  const ev = (type: string, fields: Record<string, unknown>): [string, unknown] => [type, { type, sequence_number: seq++, ...fields }];
  const text = a.deltas.join('');
  const events: Array<[string, unknown]> = [
    ev('response.created', { response: responseObject(a, 'in_progress') }),
    ev('response.in_progress', { response: responseObject(a, 'in_progress') }),
    ev('response.output_item.added', { output_index: 0, item: { id: item, type: 'message', status: 'in_progress', content: [], role: 'assistant' } }),
    ev('response.content_part.added', { item_id: item, output_index: 0, content_index: 0, part: { type: 'output_text', annotations: [], logprobs: [], text: '' } }),
    ...a.deltas.map((delta) => ev('response.output_text.delta', { item_id: item, output_index: 0, content_index: 0, delta, logprobs: [] })),
    ev('response.output_text.done', { item_id: item, output_index: 0, content_index: 0, text, logprobs: [] }),
    ev('response.content_part.done', { item_id: item, output_index: 0, content_index: 0, part: { type: 'output_text', annotations: [], logprobs: [], text } }),
    ev('response.output_item.done', { output_index: 0, item: { id: item, type: 'message', status: 'completed', content: [{ type: 'output_text', annotations: [], logprobs: [], text }], role: 'assistant' } }),
  ];
  if (opts.completed !== false) events.push(ev('response.completed', { response: responseObject(a, 'completed') }));
  return sse(events);
}

/** Embeddings (`encoding_format: "float"`): the model and usage come after the vectors. */
export function embeddingsJson(model: string, inputTokens: number, vectors = 1, dimensions = 8): string {
  const data = Array.from({ length: vectors }, (_, index) => ({ object: 'embedding', index, embedding: Array.from({ length: dimensions }, (_, i) => Math.sin(index + i) / 10) }));
  return JSON.stringify({ object: 'list', data, model, usage: { prompt_tokens: inputTokens, total_tokens: inputTokens } });
}

function anthropicUsage(u: WireUsage, output: number): Record<string, unknown> {
  return {
    input_tokens: u.inputTokens, cache_creation_input_tokens: u.cacheWriteTokens ?? 0, cache_read_input_tokens: u.cachedTokens ?? 0,
    cache_creation: { ephemeral_5m_input_tokens: u.cacheWriteTokens ?? 0, ephemeral_1h_input_tokens: 0 },
    output_tokens: output, service_tier: 'standard',
  };
}

/** Messages, `stream: false`. */
export function anthropicJson(a: WireAnswer, opts: { usage?: boolean } = {}): string {
  return JSON.stringify({
    id: 'msg_013Zva2CMHLNnXjNJJKqJ2EF', type: 'message', role: 'assistant', model: a.model,
    content: [{ type: 'text', text: a.deltas.join('') }], stop_reason: 'end_turn', stop_sequence: null,
    ...(opts.usage === false ? {} : { usage: anthropicUsage(a.usage, a.usage.outputTokens) }),
  });
}

/** Messages, `stream: true`: message_start (input usage), text deltas, message_delta (output usage, cumulative). */
export function anthropicSse(a: WireAnswer, opts: { end?: 'complete' | 'after_start' } = {}): string {
  const start: Array<[string, unknown]> = [
    ['message_start', { type: 'message_start', message: { id: 'msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY', type: 'message', role: 'assistant', model: a.model,
      content: [], stop_reason: null, stop_sequence: null, usage: anthropicUsage(a.usage, 1) } }],
    ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }],
  ];
  const body: Array<[string, unknown]> = [
    ['ping', { type: 'ping' }],
    ...a.deltas.map((text): [string, unknown] => ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } }]),
    ['content_block_stop', { type: 'content_block_stop', index: 0 }],
    ['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: a.usage.outputTokens } }],
    ['message_stop', { type: 'message_stop' }],
  ];
  return sse(opts.end === 'after_start' ? start : [...start, ...body]);
}
