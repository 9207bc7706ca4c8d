/**
 * Usage read from LLM responses as they stream past (docs/llm.md "How usage is read"), without sockets:
 * every wire format in every chunking, compressed bodies, cut exchanges and what cannot be read.
 */
import t, { type Test } from 'tap';
import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import type { IncomingHttpHeaders } from 'node:http';
import { isDeepStrictEqual } from 'node:util';
import type { LlmFormat, UsageReading } from '../../../src/core/llm.js';
import { PriceTable } from '../../../src/normalize/llm/prices.js';
import { createUsageReader, MAX_REQUEST_SCAN, USAGE_REASONS } from '../../../src/normalize/llm/usage-reader.js';
import { MAX_SSE_LINE } from '../../../src/normalize/llm/sse-reader.js';
import { MAX_JSON_BODY } from '../../../src/normalize/llm/json-body.js';
import { anthropicJson, anthropicSse, chatJson, chatSse, embeddingsJson, responsesJson, responsesSse, type WireAnswer } from '../../helpers/llm-wire.js';

const prices = PriceTable.shipped();
const SSE = { 'content-type': 'text/event-stream; charset=utf-8' };
const JSON_TYPE = { 'content-type': 'application/json' };

interface Exchange {
  readonly format: LlmFormat;
  readonly body: Buffer;
  readonly headers?: IncomingHttpHeaders;
  readonly status?: number;
  readonly request?: Buffer;
  readonly complete?: boolean;
}

/** Feed the exchange cut at `cuts` (body offsets) and read its usage. */
async function read(x: Exchange, cuts: readonly number[] = []): Promise<UsageReading> {
  const reader = createUsageReader(x.format, prices);
  if (x.request !== undefined) reader.requestData(x.request);
  reader.responseStart(x.status ?? 200, x.headers ?? SSE);
  let at = 0;
  for (const cut of [...cuts, x.body.length]) {
    const chunk = Buffer.from(x.body.subarray(at, cut));
    reader.responseData(chunk);
    chunk.fill(0x7e); // the reader must not keep a chunk after it returns
    at = cut;
  }
  reader.end(x.complete ?? true);
  return reader.result();
}

/** A small deterministic PRNG (mulberry32): the same random chunkings on every run. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let r = Math.imul(a ^ (a >>> 15), 1 | a);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

function randomCuts(length: number, random: () => number): number[] {
  const cuts: number[] = [];
  for (let at = Math.floor(random() * 40); at < length; at += 1 + Math.floor(random() * 60)) cuts.push(at);
  return cuts;
}

/** Every split into two chunks, every byte on its own, and 50 random chunkings give the same reading. */
async function sameInEveryChunking(t: Test, x: Exchange, expected: UsageReading): Promise<void> {
  t.same(await read(x), expected, 'one chunk');
  const bad: number[] = [];
  for (let cut = 1; cut < x.body.length; cut++) {
    const got = await read(x, [cut]);
    if (!isDeepStrictEqual(got, expected)) bad.push(cut);
  }
  t.same(bad, [], `all ${x.body.length - 1} two-chunk splits`);
  t.same(await read(x, Array.from({ length: x.body.length - 1 }, (_, i) => i + 1)), expected, 'one byte a chunk');
  const random = prng(x.body.length);
  let same = 0;
  for (let i = 0; i < 50; i++) if (isDeepStrictEqual(await read(x, randomCuts(x.body.length, random)), expected)) same++;
  t.equal(same, 50, '50 random chunkings');
}

const hello: WireAnswer = {
  model: 'gpt-4o-2024-08-06',
  deltas: ['Hello', '!', ' How', ' can', ' I', ' help', ' you', ' today', '? ', 'Ça va ', '— 你好', ' 👋'],
  usage: { inputTokens: 1200, outputTokens: 17, cachedTokens: 1024 },
};
const usd = (input: number, cached: number, write: number, output: number, p: { input: number; cachedInput: number; cacheWrite: number; output: number }): number =>
  Math.round(((input - cached - write) * p.input + cached * p.cachedInput + write * p.cacheWrite + output * p.output) * 1e4) / 1e10;
const gpt4o = prices.lookup('gpt-4o')?.price ?? { input: 0, cachedInput: 0, cacheWrite: 0, output: 0 };
const helloCost = usd(1200, 1024, 0, 17, gpt4o);
const helloUsage = { model: 'gpt-4o-2024-08-06', inputTokens: 1200, outputTokens: 17, cachedInputTokens: 1024, cacheWriteTokens: 0, costUsd: helloCost, estimated: false };

t.test('OpenAI Chat Completions: JSON body, and SSE with include_usage', async (t) => {
  t.equal(helloCost, (176 * 2.5 + 1024 * 1.25 + 17 * 10) / 1e6, 'the shipped gpt-4o price');
  await sameInEveryChunking(t, { format: 'openai', body: Buffer.from(chatJson(hello)), headers: JSON_TYPE }, { usage: helloUsage, reason: null });
  await sameInEveryChunking(t, { format: 'openai', body: Buffer.from(chatSse(hello, { includeUsage: true })) }, { usage: helloUsage, reason: null });
});

t.test('OpenAI Responses API: JSON body, and response.completed in a stream', async (t) => {
  await sameInEveryChunking(t, { format: 'openai', body: Buffer.from(responsesJson(hello)), headers: JSON_TYPE }, { usage: helloUsage, reason: null });
  await sameInEveryChunking(t, { format: 'openai', body: Buffer.from(responsesSse(hello)) }, { usage: helloUsage, reason: null });
});

t.test('OpenAI Embeddings: prompt tokens, no output; the model after the vectors', async (t) => {
  const body = Buffer.from(embeddingsJson('text-embedding-3-small', 8000, 2));
  const expected = { usage: { model: 'text-embedding-3-small', inputTokens: 8000, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0, costUsd: 8000 * 0.02 / 1e6, estimated: false }, reason: null };
  await sameInEveryChunking(t, { format: 'openai', body, headers: JSON_TYPE }, expected);
  const big = Buffer.from(embeddingsJson('text-embedding-3-large', 300_000, 200, 3072));
  t.ok(big.length > MAX_JSON_BODY, `a ${(big.length / 1048576).toFixed(1)} MiB body is over the JSON bound`);
  const got = await read({ format: 'openai', body: big, headers: JSON_TYPE }, randomCuts(big.length, prng(1)).filter((_, i) => i % 100 === 0));
  t.same(got.usage?.model, 'text-embedding-3-large', 'its tail is still read');
  t.equal(got.usage?.inputTokens, 300_000);
});

const claude: WireAnswer = {
  model: 'claude-sonnet-4-5-20250929',
  deltas: ['Hello', '! It', '\'s nice', ' to meet', ' you. ', 'Привет', ', мир!\n', '```js\nconst x = {"a": 1};\n```'],
  usage: { inputTokens: 25, outputTokens: 31, cachedTokens: 2000, cacheWriteTokens: 300 },
};
const sonnet = prices.lookup('claude-sonnet-4-5')?.price ?? { input: 0, cachedInput: 0, cacheWrite: 0, output: 0 };
const claudeUsage = { model: 'claude-sonnet-4-5-20250929', inputTokens: 2325, outputTokens: 31, cachedInputTokens: 2000, cacheWriteTokens: 300, costUsd: usd(2325, 2000, 300, 31, sonnet), estimated: false };

t.test('Anthropic Messages: JSON body, and message_start + message_delta in a stream', async (t) => {
  t.equal(claudeUsage.costUsd, Math.round((25 * 3 + 2000 * 0.3 + 300 * 3.75 + 31 * 15) * 1e4) / 1e10, 'input kinds priced apart');
  await sameInEveryChunking(t, { format: 'anthropic', body: Buffer.from(anthropicJson(claude)), headers: JSON_TYPE }, { usage: claudeUsage, reason: null });
  await sameInEveryChunking(t, { format: 'anthropic', body: Buffer.from(anthropicSse(claude)) }, { usage: claudeUsage, reason: null });
});

t.test('Anthropic message_delta: cumulative counts replace message_start\'s, absent or null ones do not', async (t) => {
  const start = { type: 'message_start', message: { model: 'claude-haiku-4-5-20251001', usage: { input_tokens: 10, cache_read_input_tokens: 100, cache_creation_input_tokens: 20, output_tokens: 1 } } };
  const stream = (usage: unknown): Buffer => Buffer.from(`event: message_start\ndata: ${JSON.stringify(start)}\n\nevent: message_delta\ndata: ${JSON.stringify({ type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage })}\n\n`);
  const counts = async (usage: unknown): Promise<unknown> => {
    const u = (await read({ format: 'anthropic', body: stream(usage) })).usage;
    return u && [u.inputTokens, u.cachedInputTokens, u.cacheWriteTokens, u.outputTokens];
  };
  t.same(await counts({ output_tokens: 50 }), [130, 100, 20, 50], 'output only (older API versions)');
  t.same(await counts({ input_tokens: null, cache_read_input_tokens: null, output_tokens: 50 }), [130, 100, 20, 50], 'nulls keep message_start\'s');
  t.same(await counts({ input_tokens: 12, cache_read_input_tokens: 100, cache_creation_input_tokens: 20, output_tokens: 50 }), [132, 100, 20, 50], 'cumulative counts replace them');
});

t.test('the samples of the providers\' documentation, verbatim (CRLF line ends, spaces after colons)', async (t) => {
  const anthropicDoc = [
    'event: message_start',
    'data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-1-20250805", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}',
    '', 'event: content_block_start', 'data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}',
    '', 'event: ping', 'data: {"type": "ping"}',
    '', 'event: content_block_delta', 'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}',
    '', 'event: content_block_delta', 'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}',
    '', 'event: content_block_stop', 'data: {"type": "content_block_stop", "index": 0}',
    '', 'event: message_delta', 'data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}',
    '', 'event: message_stop', 'data: {"type": "message_stop"}', '', '',
  ].join('\r\n');
  const opus = { model: 'claude-opus-4-1-20250805', inputTokens: 25, outputTokens: 15, cachedInputTokens: 0, cacheWriteTokens: 0, costUsd: (25 * 15 + 15 * 75) / 1e6, estimated: false };
  await sameInEveryChunking(t, { format: 'anthropic', body: Buffer.from(anthropicDoc) }, { usage: opus, reason: null });
  const chatDoc = 'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    + 'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}\n\n'
    + 'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    + 'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[],"usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}}\n\n';
  const mini = { model: 'gpt-4o-mini', inputTokens: 9, outputTokens: 12, cachedInputTokens: 0, cacheWriteTokens: 0, costUsd: Math.round((9 * 0.15 + 12 * 0.6) * 1e4) / 1e10, estimated: false };
  await sameInEveryChunking(t, { format: 'openai', body: Buffer.from(chatDoc) }, { usage: mini, reason: null });
});

t.test('no usage in the response: output estimated from the generated text, input 0', async (t) => {
  const answer: WireAnswer = { ...hello, deltas: ['The quick brown fox jumps over the lazy dog. '.repeat(20)] };
  const chat = await read({ format: 'openai', body: Buffer.from(chatSse(answer, { includeUsage: false })) });
  t.equal(chat.usage?.estimated, true);
  t.equal(chat.usage?.inputTokens, 0);
  t.ok(Math.abs((chat.usage?.outputTokens ?? 0) - 200) <= 20, `about 200 tokens (10 per sentence): ${chat.usage?.outputTokens}`);
  t.equal(chat.usage?.model, 'gpt-4o-2024-08-06');
  t.equal(chat.usage?.costUsd, (chat.usage?.outputTokens ?? 0) * 10 / 1e6);
  const estimate = chat.usage?.outputTokens;
  await sameInEveryChunking(t, { format: 'openai', body: Buffer.from(chatSse(answer, { includeUsage: false })) }, chat);
  t.equal((await read({ format: 'openai', body: Buffer.from(chatJson(answer, { usage: false })), headers: JSON_TYPE })).usage?.outputTokens, estimate, 'a JSON body: the same estimate');
  t.equal((await read({ format: 'openai', body: Buffer.from(responsesSse(answer, { completed: false })) })).usage?.outputTokens, estimate, 'Responses deltas: the same');
  t.equal((await read({ format: 'anthropic', body: Buffer.from(anthropicJson({ ...answer, model: 'claude-haiku-4-5' }, { usage: false })), headers: JSON_TYPE })).usage?.outputTokens, estimate, 'Anthropic JSON: the same');
  const empty = await read({ format: 'openai', body: Buffer.from(chatSse({ ...hello, deltas: [] }, { includeUsage: false })) });
  t.same(empty.usage && [empty.usage.outputTokens, empty.usage.estimated], [0, true], 'a stream that generated nothing: 0, estimated');
});

t.test('a cut exchange counts what was read', async (t) => {
  const afterStart = await read({ format: 'anthropic', body: Buffer.from(anthropicSse(claude, { end: 'after_start' })), complete: false });
  t.same(afterStart.usage && [afterStart.usage.inputTokens, afterStart.usage.outputTokens, afterStart.usage.estimated], [2325, 1, true], 'message_start: input kept, output estimated');
  const full = Buffer.from(anthropicSse(claude));
  const midway = full.subarray(0, full.indexOf('content_block_stop'));
  const cut = await read({ format: 'anthropic', body: midway, complete: false });
  t.equal(cut.usage?.inputTokens, 2325);
  t.equal(cut.usage?.estimated, true);
  t.ok((cut.usage?.outputTokens ?? 0) > 10, `the deltas read are estimated: ${cut.usage?.outputTokens}`);
  const chat = Buffer.from(chatSse(hello, { includeUsage: true }));
  const chatCut = await read({ format: 'openai', body: chat.subarray(0, chat.indexOf('"usage":{')), complete: false });
  t.same(chatCut.usage && [chatCut.usage.inputTokens, chatCut.usage.estimated], [0, true], 'chat cut before its usage chunk: estimated');
  const json = Buffer.from(chatJson(hello));
  t.same(await read({ format: 'openai', body: json.subarray(0, 100), headers: JSON_TYPE, complete: false }), { usage: null, reason: 'cut' }, 'a JSON body cut: nothing');
  const r = createUsageReader('openai', prices);
  r.end(false);
  t.same(await r.result(), { usage: null, reason: 'cut' }, 'cut before the response started');
  t.same(await read({ format: 'openai', body: Buffer.alloc(0), complete: false }), { usage: null, reason: 'cut' }, 'a stream cut before its first byte');
  t.same(await read({ format: 'openai', body: Buffer.from(': keep-alive\n\n'), complete: true }), { usage: null, reason: 'not_generation' }, 'a stream that ended with nothing in it');
  const whole = await read({ format: 'openai', body: chat, complete: false });
  t.same(whole, { usage: helloUsage, reason: null }, 'cut after the usage chunk: the usage');
});

t.test('what cannot be read: usage null and a reason from the fixed set', async (t) => {
  const body = Buffer.from(chatJson(hello));
  const reason = async (x: Partial<Exchange>): Promise<string | null> => (await read({ format: 'openai', body, headers: JSON_TYPE, ...x })).reason;
  t.equal(await reason({ status: 429 }), 'status_4xx');
  t.equal(await reason({ status: 503 }), 'status_5xx');
  t.equal(await reason({ status: 304 }), 'status_other');
  t.equal(await reason({ headers: { 'content-type': 'text/html' } }), 'content_type');
  t.equal(await reason({ headers: {} }), 'content_type', 'no content type');
  t.equal(await reason({ headers: { ...JSON_TYPE, 'content-encoding': 'zstd' } }), 'encoding');
  t.equal(await reason({ headers: { ...JSON_TYPE, 'content-encoding': 'gzip, br' } }), 'encoding', 'stacked codings');
  t.equal(await reason({ headers: { ...JSON_TYPE, 'content-encoding': 'gzip' } }), 'decode_error', 'not gzip at all');
  t.equal(await reason({ body: Buffer.from('{"choices": [') }), 'malformed');
  t.equal(await reason({ body: Buffer.from('{"usage": {"prompt_tokens": "many"}}') }), 'malformed', 'usage fields that are not counts');
  t.equal(await reason({ body: Buffer.from('{"object":"list","data":[{"id":"gpt-4o","object":"model"}]}') }), 'not_generation', 'a models list');
  t.equal(await reason({ body: Buffer.alloc(MAX_JSON_BODY + 10, 0x20) }), 'too_large');
  const long = Buffer.concat([Buffer.from('data: {"choices":[{"delta":{"content":"'), Buffer.alloc(MAX_SSE_LINE, 0x61), Buffer.from('"}}]}\n\n')]);
  t.equal(await reason({ body: long, headers: SSE }), 'line_too_long');
  const longThenUsage = Buffer.concat([long, Buffer.from(chatSse(hello, { includeUsage: true }))]);
  t.same((await read({ format: 'openai', body: longThenUsage }, [100, MAX_SSE_LINE / 2])).usage, helloUsage, 'an over-long line does not matter when usage follows');
  const badLine = Buffer.from('data: {"usage": {"prompt_tokens": 1, \n\n');
  t.equal(await reason({ body: badLine, headers: SSE }), 'malformed', 'a usage event that is not JSON');
  for (const r of ['status_4xx', 'content_type', 'encoding', 'decode_error', 'malformed', 'not_generation', 'too_large', 'line_too_long', 'cut', 'status_5xx', 'status_other']) {
    t.ok((USAGE_REASONS as readonly string[]).includes(r), `${r} is a documented reason`);
  }
});

t.test('compressed bodies are decoded on the side: gzip, br, deflate (zlib and raw)', async (t) => {
  const sse = Buffer.from(chatSse(hello, { includeUsage: true }));
  const json = Buffer.from(anthropicJson(claude));
  const codings: Array<[string, (b: Buffer) => Buffer]> = [['gzip', gzipSync], ['br', brotliCompressSync], ['deflate', deflateSync], ['deflate', deflateRawSync]];
  for (const [coding, compress] of codings) {
    const body = compress(sse);
    const headers = { ...SSE, 'content-encoding': coding };
    t.same(await read({ format: 'openai', body, headers }), { usage: helloUsage, reason: null }, `${coding} SSE in one chunk`);
    t.same(await read({ format: 'openai', body, headers }, randomCuts(body.length, prng(7))), { usage: helloUsage, reason: null }, `${coding} SSE in small chunks`);
    t.same(await read({ format: 'anthropic', body: compress(json), headers: { ...JSON_TYPE, 'content-encoding': coding.toUpperCase() } }), { usage: claudeUsage, reason: null }, `${coding} JSON`);
  }
  const gz = gzipSync(sse);
  const corrupt = Buffer.from(gz);
  corrupt.fill(0x55, 20, 60);
  t.same(await read({ format: 'openai', body: corrupt, headers: { ...SSE, 'content-encoding': 'gzip' } }), { usage: null, reason: 'decode_error' }, 'bad gzip');
  const cut = await read({ format: 'anthropic', body: gzipSync(Buffer.from(anthropicSse(claude))).subarray(0, 200), headers: { ...SSE, 'content-encoding': 'gzip' }, complete: false });
  t.equal(cut.reason, null, 'a cut gzip stream: what was decoded counts');
  const bomb = gzipSync(Buffer.alloc(80 * 1024 * 1024, 0x20));
  t.equal(await read({ format: 'openai', body: bomb, headers: { ...SSE, 'content-encoding': 'gzip' } }).then((r) => r.reason), 'too_large', 'decoding is bounded');
});

t.test('the model: from the response, else the request body\'s top-level "model"', async (t) => {
  const noModel = Buffer.from('data: {"choices":[{"delta":{"content":"Hi there"}}]}\n\ndata: [DONE]\n\n');
  const request = Buffer.from(JSON.stringify({ messages: [{ role: 'user', content: 'say "model": "x"' }], tools: [{ name: 'f', parameters: { properties: { model: { type: 'string' } } } }], model: 'gpt-4.1-mini' }));
  const reader = createUsageReader('openai', prices);
  for (let i = 0; i < request.length; i += 7) reader.requestData(request.subarray(i, i + 7));
  reader.responseStart(200, SSE);
  reader.responseData(noModel);
  reader.end(true);
  t.equal((await reader.result()).usage?.model, 'gpt-4.1-mini', 'the request\'s model, read in 7-byte chunks');
  const late = Buffer.concat([Buffer.from(`{"messages":[{"role":"user","content":"${'x'.repeat(MAX_REQUEST_SCAN)}"}],`), Buffer.from('"model":"gpt-4o"}')]);
  t.equal((await read({ format: 'openai', body: noModel, request: late })).usage?.model, null, 'past the first 64 KiB it is not looked for');
  t.equal((await read({ format: 'openai', body: noModel })).usage?.model, null, 'neither says');
});

t.test('tool calls, several choices, thinking: all generated text is counted for an estimate', async (t) => {
  const args = '{"location":"Paris, France","unit":"celsius"}';
  const base = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'gpt-4.1' };
  const pieces = args.match(/.{1,5}/g) ?? [];
  const toolStream = [
    { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: null, tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '' } }] }, finish_reason: null }] },
    ...pieces.map((p) => ({ ...base, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: p } }] }, finish_reason: null }] })),
  ].map((c) => `data: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n';
  const tools = await read({ format: 'openai', body: Buffer.from(toolStream) });
  const { TextCounts } = await import('../../../src/normalize/llm/text-counts.js');
  const direct = new TextCounts();
  direct.addText(args);
  t.equal(tools.usage?.outputTokens, direct.estimateTokens(), 'the arguments of a streamed tool call, as if counted whole');
  await sameInEveryChunking(t, { format: 'openai', body: Buffer.from(toolStream) }, tools);
  const two = [0, 1].map((index) => ({ ...base, choices: [{ index, delta: { content: 'same words here' }, finish_reason: null }] }));
  const twoChoices = await read({ format: 'openai', body: Buffer.from(`data: ${JSON.stringify({ ...base, choices: two.flatMap((c) => c.choices) })}\n\n`) });
  const one = await read({ format: 'openai', body: Buffer.from(`data: ${JSON.stringify(two[0])}\n\n`) });
  t.equal(twoChoices.usage?.outputTokens, 2 * (one.usage?.outputTokens ?? 0), 'n = 2: both choices are generated (and billed)');
  const thinking = ['event: message_start', `data: ${JSON.stringify({ type: 'message_start', message: { model: 'claude-opus-4-5', usage: { input_tokens: 9, output_tokens: 1 } } })}`, '',
    'event: content_block_delta', `data: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'Let me think about the weather.' } })}`, '',
    'event: content_block_delta', `data: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds' } })}`, '',
    'event: content_block_delta', `data: ${JSON.stringify({ type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: '{"city": "Paris"}' } })}`, '', ''].join('\n');
  const cut = await read({ format: 'anthropic', body: Buffer.from(thinking), complete: false });
  const expected = new TextCounts();
  expected.addText('Let me think about the weather.');
  expected.addText('{"city": "Paris"}');
  t.same(cut.usage && [cut.usage.inputTokens, cut.usage.outputTokens, cut.usage.estimated], [9, expected.estimateTokens(), true], 'thinking and tool input count, a signature does not');
});

t.test('whatever the bytes, the tap never throws and the reading settles', async (t) => {
  const random = prng(99);
  const samples = [chatSse(hello, { includeUsage: true }), anthropicSse(claude), responsesSse(hello), chatJson(hello)].map((s) => Buffer.from(s));
  let settled = 0;
  const unknown: string[] = [];
  for (let i = 0; i < 300; i++) {
    const body = Buffer.from(samples[i % samples.length] as Buffer);
    for (let k = 0; k < 20; k++) body[Math.floor(random() * body.length)] = Math.floor(random() * 256); // corrupt some bytes
    const headers = [SSE, JSON_TYPE, { ...SSE, 'content-encoding': 'gzip' }, { ...JSON_TYPE, 'content-encoding': 'br' }][i % 4] as IncomingHttpHeaders;
    for (const format of ['openai', 'anthropic'] as const) {
      const reading = await read({ format, body, headers, request: body.subarray(0, 100), complete: random() < 0.8 }, randomCuts(body.length, random));
      if (reading.usage === null && !(USAGE_REASONS as readonly string[]).includes(reading.reason)) unknown.push(reading.reason);
      settled++;
    }
  }
  t.equal(settled, 600, '600 corrupted exchanges read, none threw');
  t.same(unknown, [], 'each gave a usage or a documented reason');
});
