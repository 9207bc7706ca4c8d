// Micro-benchmark: the CPU that reading LLM usage adds to an exchange (docs/llm.md "How usage is read"):
// a streamed completion of 500 SSE events (one event a chunk, as the providers write them) and a 16 KiB
// JSON body, through the usage reader, against the same loop over the chunks with a tap that does
// nothing, in CPU time (user + system, all threads). "relay path" is what the tap methods cost inline;
// "to result" adds the end of the reading (a JSON body is read at its end; zlib's output arrives after
// it). Run after `npm run build`: node bench/llm-usage.mjs [--rounds 2000]
import { gzipSync } from 'node:zlib';
import { PriceTable } from '../dist/normalize/llm/prices.js';
import { createUsageReader } from '../dist/normalize/llm/usage-reader.js';

const roundsArg = process.argv.indexOf('--rounds');
const ROUNDS = roundsArg === -1 ? 2000 : Number(process.argv[roundsArg + 1]);
const prices = PriceTable.shipped();
const words = 'The sidecar reads usage from the stream as it passes, without holding a chunk or delaying a byte. '.split(' ');
const delta = (i) => (i % 7 === 0 ? ' ' : '') + words[i % words.length] + ' ';
const text = (n) => Array.from({ length: n }, (_, i) => delta(i));
const request = Buffer.from(JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Tell me about the sidecar. '.repeat(40) }], stream: true }));

function sse(events) {
  return events.map(([event, data]) => Buffer.from(`${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`));
}

function chatStream(n, includeUsage) {
  const base = { id: 'chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT', object: 'chat.completion.chunk', created: 1741570283, model: 'gpt-4o-2024-08-06', service_tier: 'default', system_fingerprint: 'fp_fc9f1d7035' };
  const u = includeUsage ? { usage: null } : {};
  const events = text(n - 2).map((content) => [null, { ...base, choices: [{ index: 0, delta: { content }, logprobs: null, finish_reason: null }], ...u }]);
  events.push([null, { ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }], ...u }]);
  if (includeUsage) events.push([null, { ...base, choices: [], usage: { prompt_tokens: 412, completion_tokens: 498, total_tokens: 910, prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 } } }]);
  return [...sse(events), Buffer.from('data: [DONE]\n\n')];
}

function anthropicStream(n) {
  const events = [['message_start', { type: 'message_start', message: { id: 'msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5-20250929', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 412, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 } } }]];
  for (const t of text(n - 3)) events.push(['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: t } }]);
  events.push(['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 497 } }]);
  events.push(['message_stop', { type: 'message_stop' }]);
  return sse(events);
}

function responsesStream(n) {
  const item = 'msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654';
  const deltas = text(n - 2);
  const response = (status, usage) => ({ id: 'resp_67c9', object: 'response', created_at: 1741570283, status, model: 'gpt-4.1-2025-04-14', output: status === 'completed' ? [{ id: item, type: 'message', role: 'assistant', content: [{ type: 'output_text', text: deltas.join('') }] }] : [], usage });
  const events = [['response.created', { type: 'response.created', sequence_number: 0, response: response('in_progress', null) }]];
  deltas.forEach((d, i) => events.push(['response.output_text.delta', { type: 'response.output_text.delta', sequence_number: i + 1, item_id: item, output_index: 0, content_index: 0, delta: d }]));
  events.push(['response.completed', { type: 'response.completed', sequence_number: n, response: response('completed', { input_tokens: 412, input_tokens_details: { cached_tokens: 0 }, output_tokens: 498, total_tokens: 910 }) }]);
  return sse(events);
}

function chatJson(bytes) {
  const body = { id: 'chatcmpl-1', object: 'chat.completion', created: 1741570283, model: 'gpt-4o-2024-08-06', choices: [{ index: 0, message: { role: 'assistant', content: '', refusal: null }, finish_reason: 'stop' }], usage: { prompt_tokens: 412, completion_tokens: 3900, total_tokens: 4312, prompt_tokens_details: { cached_tokens: 0 } } };
  body.choices[0].message.content = text(4000).join('').slice(0, bytes - JSON.stringify(body, null, 2).length);
  const buf = Buffer.from(JSON.stringify(body, null, 2));
  return [buf.subarray(0, 8192), buf.subarray(8192)]; // two reads of a socket
}

const noop = { requestData() {}, responseStart() {}, responseData() {}, end() {} };
const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8' };
const JSON_HEADERS = { 'content-type': 'application/json' };

/** One completion: the relay's loop over the chunks, showing each to `tap`. */
function relay(tap, chunks, headers) {
  tap.requestData(request);
  tap.responseStart(200, headers);
  for (const c of chunks) tap.responseData(c);
  tap.end(true);
}

/** CPU µs (user + system, every thread: zlib runs on the pool) per call of `fn`: the least of 15 batches (others' work only adds). */
async function cpu(fn, rounds) {
  for (let i = 0; i < Math.min(500, rounds); i++) await fn();
  const per = Math.max(1, Math.floor(rounds / 15));
  const samples = [];
  for (let b = 0; b < 15; b++) {
    const start = process.cpuUsage();
    for (let i = 0; i < per; i++) await fn();
    const used = process.cpuUsage(start);
    samples.push((used.user + used.system) / per);
  }
  return Math.min(...samples);
}

/** µs of the tap calls alone (timed around the synchronous relay loop; the reading's end awaited untimed), least of 15 batches. */
async function syncPart(format, chunks, headers, rounds) {
  const per = Math.max(1, Math.floor(rounds / 15));
  const samples = [];
  for (let b = 0; b < 16; b++) {
    let ns = 0n;
    for (let i = 0; i < per; i++) {
      const r = createUsageReader(format, prices);
      const start = process.hrtime.bigint();
      relay(r, chunks, headers);
      ns += process.hrtime.bigint() - start;
      await r.result();
    }
    if (b > 0) samples.push(Number(ns) / 1000 / per); // the first batch warms up
  }
  const loop = [];
  for (let b = 0; b < 15; b++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < per; i++) relay(noop, chunks, headers);
    loop.push(Number(process.hrtime.bigint() - start) / 1000 / per);
  }
  return Math.min(...samples) - Math.min(...loop);
}

const cases = [
  ['chat stream, include_usage', 'openai', chatStream(500, true), SSE_HEADERS],
  ['chat stream, no usage (estimated)', 'openai', chatStream(500, false), SSE_HEADERS],
  ['Responses API stream', 'openai', responsesStream(500), SSE_HEADERS],
  ['Anthropic stream', 'anthropic', anthropicStream(500), SSE_HEADERS],
  ['chat JSON body, 16 KiB', 'openai', chatJson(16 * 1024), JSON_HEADERS],
];
const joined = Buffer.concat(chatStream(500, true));
const eightEvents = Array.from({ length: 63 }, (_, i) => joined.subarray(Math.floor((i * joined.length) / 63), Math.floor(((i + 1) * joined.length) / 63)));
cases.push(['chat stream, ~8 events a chunk (cut anywhere)', 'openai', eightEvents, SSE_HEADERS]);
const gz = gzipSync(joined);
const gzChunks = Array.from({ length: 500 }, (_, i) => gz.subarray(Math.floor((i * gz.length) / 500), Math.floor(((i + 1) * gz.length) / 500)));
cases.push(['chat stream, gzip (500 chunks)', 'openai', gzChunks, { ...SSE_HEADERS, 'content-encoding': 'gzip' }]);

const rows = [];
for (const [name, format, chunks, headers] of cases) {
  const bytes = chunks.reduce((a, c) => a + c.length, 0);
  const check = createUsageReader(format, prices);
  relay(check, chunks, headers);
  const reading = await check.result();
  if (reading.usage === null) throw new Error(`${name}: no usage (${reading.reason})`);
  const base = await cpu(() => relay(noop, chunks, headers), ROUNDS);
  const inline = await syncPart(format, chunks, headers, ROUNDS);
  const total = await cpu(() => {
    const r = createUsageReader(format, prices);
    relay(r, chunks, headers);
    return r.result();
  }, ROUNDS);
  rows.push({
    case: name,
    chunks: chunks.length,
    KiB: (bytes / 1024).toFixed(1),
    'loop µs': base.toFixed(1),
    'reader µs, relay path': inline.toFixed(1),
    'reader µs, to result': (total - base).toFixed(1),
    'µs/KiB': ((total - base) / (bytes / 1024)).toFixed(2),
    'µs/chunk': ((total - base) / chunks.length).toFixed(3),
    tokens: `${reading.usage.outputTokens}${reading.usage.estimated ? ' (est.)' : ''}`,
  });
}
console.table(rows);
