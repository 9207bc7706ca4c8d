/**
 * The loopback LLM fakes (test/helpers/llm-fakes.ts) speak the APIs well enough for the official SDKs,
 * called directly (no sidecar), and their bytes (gzip too, in small chunks) read back to the usage they
 * were told to report (docs/llm.md "How usage is read").
 */
import t from 'tap';
import http from 'node:http';
import https from 'node:https';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import type { LlmFormat, UsageReading } from '../../src/core/llm.js';
import { PriceTable } from '../../src/normalize/llm/prices.js';
import { createUsageReader } from '../../src/normalize/llm/usage-reader.js';
import { useLlmFake, DEFAULT_ANSWER } from '../helpers/llm-fakes.js';
import { upstreamPki } from '../helpers/pki.js';

const fake = useLlmFake(t);
const tlsFake = useLlmFake(t, { tls: true });
const messages = [{ role: 'user' as const, content: 'Say hello' }];

t.test('the openai SDK: chat (JSON, stream with and without usage), responses, embeddings', async (t) => {
  fake.setAnswer({ ...DEFAULT_ANSWER, inputTokens: 11, outputTokens: 6, cachedTokens: 3 });
  const openai = new OpenAI({ apiKey: 'sk-test-key', baseURL: `${fake.origin}/v1`, maxRetries: 0 });
  const chat = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
  t.equal(chat.choices[0]?.message.content, 'Hello from the fake model.');
  t.same([chat.model, chat.usage?.prompt_tokens, chat.usage?.completion_tokens, chat.usage?.prompt_tokens_details?.cached_tokens], ['gpt-4o-mini', 11, 6, 3]);
  let text = '';
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of await openai.chat.completions.create({ model: 'gpt-4o', messages, stream: true, stream_options: { include_usage: true } })) {
    text += chunk.choices[0]?.delta.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  t.equal(text, 'Hello from the fake model.');
  t.equal(usage?.completion_tokens, 6, 'the usage chunk, asked for');
  let sawUsage = false;
  for await (const chunk of await openai.chat.completions.create({ model: 'gpt-4o', messages, stream: true })) if (chunk.usage) sawUsage = true;
  t.notOk(sawUsage, 'no usage chunk unless asked');
  const response = await openai.responses.create({ model: 'gpt-4.1', input: 'Say hello' });
  t.same([response.output_text, response.usage?.input_tokens, response.usage?.output_tokens], ['Hello from the fake model.', 11, 6]);
  let completed: number | undefined;
  let deltas = '';
  for await (const event of await openai.responses.create({ model: 'gpt-4.1', input: 'Say hello', stream: true })) {
    if (event.type === 'response.output_text.delta') deltas += event.delta;
    if (event.type === 'response.completed') completed = event.response.usage?.output_tokens;
  }
  t.same([deltas, completed], ['Hello from the fake model.', 6]);
  const embeddings = await openai.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
  t.same([embeddings.data.length, embeddings.data[0]?.embedding.length, embeddings.usage.prompt_tokens], [2, 8, 11], 'base64 vectors decoded by the SDK');
  const last = fake.requests.at(-1);
  t.equal(last?.headers['authorization'], 'Bearer sk-test-key', 'the key the client sent is recorded');
  t.equal(last?.json?.['model'], 'text-embedding-3-small');
});

t.test('the anthropic SDK: messages (JSON and stream), gzip streams too', async (t) => {
  fake.setAnswer({ ...DEFAULT_ANSWER, inputTokens: 20, outputTokens: 9, cachedTokens: 100, cacheWriteTokens: 5 });
  const anthropic = new Anthropic({ apiKey: 'sk-ant-test', baseURL: fake.origin, maxRetries: 0 });
  const message = await anthropic.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 64, messages });
  t.same([message.model, message.usage.input_tokens, message.usage.output_tokens, message.usage.cache_read_input_tokens], ['claude-sonnet-4-5', 20, 9, 100]);
  const final = await anthropic.messages.stream({ model: 'claude-haiku-4-5', max_tokens: 64, messages }).finalMessage();
  t.same([final.content[0]?.type === 'text' ? final.content[0].text : null, final.usage.output_tokens], ['Hello from the fake model.', 9]);
  const sent = fake.requests.at(-1)?.headers;
  t.match(sent?.['x-api-key'] ?? sent?.['authorization'], /sk-ant-test$/, 'the key is recorded (x-api-key, or a bearer token in newer SDKs)');
  fake.setAnswer({ ...DEFAULT_ANSWER, gzip: true, chunkBytes: 3 });
  const zipped = await anthropic.messages.stream({ model: 'claude-haiku-4-5', max_tokens: 64, messages }).finalMessage();
  t.equal(zipped.usage.output_tokens, DEFAULT_ANSWER.outputTokens, 'a gzip stream the SDK decodes');
});

/** POST `body` to the fake and feed the raw response bytes (not decoded) through a usage reader. */
function readThroughTap(origin: string, path: string, format: LlmFormat, body: unknown, tls: boolean): Promise<{ reading: UsageReading; chunks: number }> {
  const payload = Buffer.from(JSON.stringify(body));
  const reader = createUsageReader(format, PriceTable.shipped());
  reader.requestData(payload);
  return new Promise((resolve, reject) => {
    const options = { method: 'POST', headers: { 'content-type': 'application/json' }, ...(tls ? { ca: upstreamPki().caPem } : {}) };
    const req = (tls ? https : http).request(`${origin}${path}`, options, (res) => {
      let chunks = 0;
      reader.responseStart(res.statusCode ?? 0, res.headers);
      res.on('data', (c: Buffer) => {
        chunks++;
        reader.responseData(c);
      });
      res.on('end', () => {
        reader.end(true);
        void reader.result().then((reading) => resolve({ reading, chunks }));
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

t.test('the fakes\' bytes read back to the usage they report (HTTPS, gzip, small chunks)', async (t) => {
  tlsFake.setAnswer({ ...DEFAULT_ANSWER, inputTokens: 300, outputTokens: 40, cachedTokens: 100, gzip: true, chunkBytes: 5 });
  const chat = await readThroughTap(tlsFake.origin, '/v1/chat/completions', 'openai', { model: 'gpt-4o', messages, stream: true, stream_options: { include_usage: true } }, true);
  t.ok(chat.chunks > 20, `${chat.chunks} chunks`);
  t.same(chat.reading.usage && [chat.reading.usage.model, chat.reading.usage.inputTokens, chat.reading.usage.outputTokens, chat.reading.usage.cachedInputTokens, chat.reading.usage.estimated],
    ['gpt-4o', 300, 40, 100, false]);
  const noUsage = await readThroughTap(tlsFake.origin, '/v1/chat/completions', 'openai', { model: 'gpt-4o', messages, stream: true }, true);
  t.same(noUsage.reading.usage && [noUsage.reading.usage.inputTokens, noUsage.reading.usage.estimated], [0, true], 'no include_usage: estimated');
  tlsFake.setAnswer({ ...DEFAULT_ANSWER, inputTokens: 12, outputTokens: 34, cacheWriteTokens: 8 });
  const claude = await readThroughTap(tlsFake.origin, '/v1/messages', 'anthropic', { model: 'claude-opus-4-5', max_tokens: 64, messages, stream: true }, true);
  t.same(claude.reading.usage && [claude.reading.usage.inputTokens, claude.reading.usage.outputTokens, claude.reading.usage.cacheWriteTokens, claude.reading.usage.costUsd],
    [20, 34, 8, (12 * 5 + 8 * 6.25 + 34 * 25) / 1e6]);
  tlsFake.setAnswer({ ...DEFAULT_ANSWER, status: 429 });
  const limited = await readThroughTap(tlsFake.origin, '/v1/responses', 'openai', { model: 'gpt-4.1', input: 'x' }, true);
  t.same(limited.reading, { usage: null, reason: 'status_4xx' });
});
