/**
 * LLM usage read from the stream (docs/llm.md): the official `openai` and `@anthropic-ai/sdk` packages,
 * in an agent process set up as the README says (HTTPS_PROXY, NODE_EXTRA_CA_CERTS, EnvHttpProxyAgent),
 * call loopback fakes of both APIs through the sidecar, streaming on and off; the agent holds no key
 * (the sidecar injects it). Each call's outcome event carries the tokens the fake sent and the cost of
 * the shipped price table; a stream without usage is estimated and marked; a gzip body is read on the
 * side while the SDK gets it intact; a model the table does not price is counted in tokens only; the
 * first chunk of a stream reaches the agent before the upstream sends the second; `/metrics`,
 * `firma usage` and the log line show the same figures; the keys never appear in what the sidecar writes.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { ProxyAgent, request } from 'undici';
import { startTestSidecar } from '../helpers/sidecar.js';
import { runSdkAgent, type AgentRun } from '../helpers/sdk-agent.js';
import { fixture } from '../helpers/fixture.js';
import { useLlmFake, DEFAULT_ANSWER } from '../helpers/llm-fakes.js';
import { upstreamPki } from '../helpers/pki.js';
import { runFirma } from '../helpers/clients.js';
import { PriceTable } from '../../src/normalize/llm/prices.js';

const OPENAI_KEY = 'sk-openai-usage-5f1e07';
const ANTHROPIC_KEY = 'sk-ant-usage-c3a9d2';
process.env['FIRMA_USAGE_OPENAI_KEY'] = OPENAI_KEY;
process.env['FIRMA_USAGE_ANTHROPIC_KEY'] = ANTHROPIC_KEY;

const openaiUp = useLlmFake(t, { tls: true });
const anthropicUp = useLlmFake(t, { tls: true });

/**
 * An upstream whose stream sends its first event, then waits until the test says the agent has it
 * before sending the rest: if anything on the way held the first chunk back, the agent would never
 * receive it and the test would time out.
 */
let releaseRest: () => void = () => undefined;
const gated = fixture(t, async () => {
  const server = https.createServer({ key: upstreamPki().keyPem, cert: upstreamPki().certPem }, (req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}\n\n');
      releaseRest = () => {
        res.write('data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}\n\n');
        res.end('data: [DONE]\n\n');
      };
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}, (g) => new Promise<void>((r) => g.server.close(() => r())));

const sc = fixture(t, () => startTestSidecar(`
[[llm.hosts]]
host = "127.0.0.1:${openaiUp.port}"
format = "openai"

[[llm.hosts]]
host = "127.0.0.1:${gated.port}"
format = "openai"

[[llm.hosts]]
host = "127.0.0.1:${anthropicUp.port}"
format = "anthropic"

[[credentials]]
host = "127.0.0.1:${openaiUp.port}"
header = "Authorization"
prefix = "Bearer "
mode = "basic"
value_from_env = "FIRMA_USAGE_OPENAI_KEY"

[[credentials]]
host = "127.0.0.1:${anthropicUp.port}"
header = "x-api-key"
mode = "basic"
value_from_env = "FIRMA_USAGE_ANTHROPIC_KEY"
`), (s) => s.stop());

interface Usage {
  model: string | null;
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  cache_write_tokens: number;
  cost_usd: number | null;
  estimated: boolean;
}
interface Outcome {
  type: string;
  request_id: string;
  agent_id: string;
  status: number;
  usage?: Usage | null;
  usage_unread?: string;
}

function outcomes(): Outcome[] {
  const text = readFileSync(join(sc.dir, 'audit', 'audit.jsonl'), 'utf8');
  return text.split('\n').filter((l) => l.includes('"type":"outcome"')).map((l) => JSON.parse(l) as Outcome);
}

/** The outcome events written since `before` (a count of earlier ones), once the audit has them. */
async function newOutcomes(before: number, n: number): Promise<Outcome[]> {
  await sc.sidecar.audit.flush();
  const all = outcomes();
  if (all.length < before + n) throw new Error(`expected ${n} new outcome events, got ${all.length - before}`);
  return all.slice(before);
}

const prices = PriceTable.shipped();
/** USD the way docs/llm.md "Prices" says: uncached input, cached input, cache writes and output, per million. */
function expectedCost(model: string, input: number, output: number, cached = 0, cacheWrite = 0): number {
  const p = prices.lookup(model)?.price;
  if (p === undefined) throw new Error(`${model} is not in the shipped table`);
  return ((input - cached - cacheWrite) * p.input + cached * p.cachedInput + cacheWrite * p.cacheWrite + output * p.output) / 1e6;
}

/** An agent process with the SDKs, named usage-agent, holding no key. */
const runAgent = (body: string): Promise<AgentRun> =>
  runSdkAgent({ proxyUrl: `http://usage-agent:x@127.0.0.1:${sc.proxyPort}`, caPath: sc.caPath, openaiPort: openaiUp.port, anthropicPort: anthropicUp.port }, body);

t.test('openai chat completions, JSON and streamed with include_usage: the tokens the API sent, priced', async (t) => {
  openaiUp.setAnswer({ ...DEFAULT_ANSWER, model: 'gpt-4o-mini-2024-07-18', inputTokens: 1200, outputTokens: 340, cachedTokens: 1000 });
  const before = outcomes().length;
  const r = await runAgent(`
const json = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });
const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'hi' }] });
let usage = null; let said = '';
for await (const c of stream) { said += c.choices[0]?.delta?.content ?? ''; if (c.usage) usage = c.usage; }
console.log(JSON.stringify({ json: json.usage, said, usage }));
`);
  t.equal(r.code, 0, r.stderr);
  t.match(r.out['json'], { prompt_tokens: 1200, completion_tokens: 340, total_tokens: 1540, prompt_tokens_details: { cached_tokens: 1000 } }, 'the SDK got the body as the API sent it');
  t.equal(r.out['said'], DEFAULT_ANSWER.deltas.join(''), 'and the whole stream');
  const [a, b] = await newOutcomes(before, 2);
  const cost = expectedCost('gpt-4o-mini', 1200, 340, 1000);
  for (const [label, o] of [['JSON', a], ['stream', b]] as const) {
    t.match(o, { agent_id: 'usage-agent', status: 200, usage: { model: 'gpt-4o-mini-2024-07-18', input_tokens: 1200, output_tokens: 340, cached_input_tokens: 1000, cache_write_tokens: 0, estimated: false } }, `${label}: tokens as sent`);
    t.ok(Math.abs((o?.usage?.cost_usd ?? -1) - cost) < 1e-9, `${label}: cost ${o?.usage?.cost_usd} = ${cost} from the shipped table`);
  }
  t.equal(openaiUp.requests.at(-1)?.headers['authorization'], `Bearer ${OPENAI_KEY}`, 'the key the sidecar injected, not the agent’s placeholder');
});

t.test('a stream without usage: output tokens estimated from the text and marked', async (t) => {
  openaiUp.setAnswer({ ...DEFAULT_ANSWER, model: 'gpt-4o', deltas: Array.from({ length: 40 }, (_, i) => ` word${i}`) });
  const before = outcomes().length;
  const r = await runAgent(`
const stream = await openai.chat.completions.create({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] });
console.log(JSON.stringify({ said: await text(stream) }));
`);
  t.equal(r.code, 0, r.stderr);
  const [o] = await newOutcomes(before, 1);
  t.match(o?.usage, { model: 'gpt-4o', input_tokens: 0, estimated: true }, 'no input count without usage; estimated');
  const out = o?.usage?.output_tokens ?? 0;
  t.ok(out >= 40 && out <= 160, `40 words estimated as ${out} tokens`);
  t.ok((o?.usage?.cost_usd ?? 0) > 0, 'priced on the estimate');
});

t.test('the Responses API (streamed) and embeddings', async (t) => {
  openaiUp.setAnswer({ ...DEFAULT_ANSWER, model: 'gpt-4.1', inputTokens: 90, outputTokens: 12 });
  const before = outcomes().length;
  const r = await runAgent(`
const stream = await openai.responses.create({ model: 'gpt-4.1', input: 'hi', stream: true });
let done = null;
for await (const e of stream) if (e.type === 'response.completed') done = e.response.usage;
const emb = await openai.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
console.log(JSON.stringify({ done, emb: emb.usage, vectors: emb.data.length }));
`);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.out['vectors'], 2);
  const [resp, emb] = await newOutcomes(before, 2);
  t.match(resp?.usage, { model: 'gpt-4.1', input_tokens: 90, output_tokens: 12, estimated: false }, 'response.completed');
  t.match(emb?.usage, { input_tokens: 90, output_tokens: 0, estimated: false }, 'embeddings: input only');
  t.ok(Math.abs((emb?.usage?.cost_usd ?? -1) - expectedCost(emb?.usage?.model ?? 'text-embedding-3-small', 90, 0)) < 1e-9, 'embeddings priced');
});

t.test('anthropic messages, JSON and streamed: input with cache reads and writes, output from message_delta', async (t) => {
  // Anthropic's input_tokens are the uncached ones; cache reads and writes come beside them.
  anthropicUp.setAnswer({ ...DEFAULT_ANSWER, model: 'claude-sonnet-4-5-20250929', inputTokens: 500, outputTokens: 150, cachedTokens: 1500, cacheWriteTokens: 300 });
  const before = outcomes().length;
  const r = await runAgent(`
const json = await anthropic.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 200, messages: [{ role: 'user', content: 'hi' }] });
const stream = anthropic.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 200, messages: [{ role: 'user', content: 'hi' }] });
const final = await stream.finalMessage();
console.log(JSON.stringify({ json: json.usage, final: final.usage }));
`);
  t.equal(r.code, 0, r.stderr);
  t.match(r.out['final'], { output_tokens: 150 }, 'the SDK assembled the stream');
  const seen = await newOutcomes(before, 2);
  const cost = expectedCost('claude-sonnet-4-5', 2300, 150, 1500, 300);
  for (const o of seen) {
    t.match(o.usage, { model: 'claude-sonnet-4-5-20250929', input_tokens: 2300, output_tokens: 150, cached_input_tokens: 1500, cache_write_tokens: 300, estimated: false });
    t.ok(Math.abs((o.usage?.cost_usd ?? -1) - cost) < 1e-9, `cost ${o.usage?.cost_usd} = ${cost}`);
  }
  t.equal(anthropicUp.requests.at(-1)?.headers['x-api-key'], ANTHROPIC_KEY, 'the injected key');
});

t.test('a gzip body is read on the side; the SDK gets it intact', async (t) => {
  openaiUp.setAnswer({ ...DEFAULT_ANSWER, model: 'gpt-4o', inputTokens: 77, outputTokens: 5, gzip: true });
  const before = outcomes().length;
  const r = await runAgent(`
const json = await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
const stream = await openai.chat.completions.create({ model: 'gpt-4o', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'hi' }] });
console.log(JSON.stringify({ json: json.usage, said: await text(stream) }));
`);
  t.equal(r.code, 0, r.stderr);
  t.match(r.out['json'], { prompt_tokens: 77, completion_tokens: 5 }, 'the agent decoded the gzip body itself');
  t.equal(r.out['said'], DEFAULT_ANSWER.deltas.join(''));
  for (const o of await newOutcomes(before, 2)) t.match(o.usage, { input_tokens: 77, output_tokens: 5, estimated: false });
});

t.test('a model the price table does not list: tokens counted, cost null', async (t) => {
  openaiUp.setAnswer({ ...DEFAULT_ANSWER, model: 'house-model-7b', inputTokens: 10, outputTokens: 20 });
  const before = outcomes().length;
  const r = await runAgent(`
const json = await openai.chat.completions.create({ model: 'house-model-7b', messages: [{ role: 'user', content: 'hi' }] });
console.log(JSON.stringify({ usage: json.usage }));
`);
  t.equal(r.code, 0, r.stderr);
  const [o] = await newOutcomes(before, 1);
  t.same(o?.usage, { model: 'house-model-7b', input_tokens: 10, output_tokens: 20, cached_input_tokens: 0, cache_write_tokens: 0, cost_usd: null, estimated: false });
  t.ok(sc.logs.some((l) => l.includes('house-model-7b') && l.includes('"level":40')), 'warned about the model once');
});

t.test('an error answer from the API is recorded without usage, with the reason', async (t) => {
  openaiUp.setAnswer({ ...DEFAULT_ANSWER, status: 500 });
  const before = outcomes().length;
  const r = await runAgent(`
try { await openai.chat.completions.create({ model: 'gpt-4o', messages: [] }); console.log('{}'); } catch (e) { console.log(JSON.stringify({ status: e.status })); }
`);
  openaiUp.setAnswer(DEFAULT_ANSWER);
  t.equal(r.out['status'], 500, 'the agent saw the API’s own error');
  const [o] = await newOutcomes(before, 1);
  t.equal(o?.usage, null);
  t.type(o?.usage_unread, 'string', `usage_unread: ${o?.usage_unread}`);
});

t.test('the first chunk of a stream reaches the agent before the upstream sends the next one', async (t) => {
  const dispatcher = new ProxyAgent({ uri: sc.proxyUrl, requestTls: { ca: sc.caPem } });
  t.teardown(() => dispatcher.close());
  const before = outcomes().length;
  const res = await request(`https://127.0.0.1:${gated.port}/v1/chat/completions`, {
    method: 'POST', dispatcher, headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true }, messages: [] }),
  });
  t.equal(res.statusCode, 200);
  let text = '';
  for await (const chunk of res.body) {
    if (text === '') releaseRest(); // only now does the upstream write the rest
    text += (chunk as Buffer).toString('utf8');
  }
  t.match(text, /"content":"Hi"[\s\S]*\[DONE\]/, 'the first event arrived on its own, then the rest');
  const [o] = await newOutcomes(before, 1);
  t.match(o?.usage, { model: 'gpt-4o-mini', input_tokens: 11, output_tokens: 3, estimated: false });
});

t.test('/metrics, the log line, `firma usage` and `firma audit tail` show the same calls; the keys appear nowhere', async (t) => {
  const metrics = await (await fetch(`${sc.adminUrl}/metrics`)).text();
  t.match(metrics, /firma_llm_tokens_total\{agent="usage-agent",model="gpt-4o-mini-2024-07-18",kind="input"\} 2400/, 'input tokens of the two gpt-4o-mini calls');
  t.match(metrics, /firma_llm_cost_usd_total\{agent="usage-agent",model="claude-sonnet-4-5-20250929"\} [0-9.]+/);
  const line = sc.logs.find((l) => l.includes('"llm_tokens_out":340'));
  t.ok(line !== undefined, 'the request log line carries the tokens');
  await sc.sidecar.audit.flush();
  const u = await runFirma(['usage', '--by', 'model', join(sc.dir, 'audit', 'audit.jsonl')], sc.dir);
  t.equal(u.code, 0, u.stderr);
  t.match(u.stdout, /claude-sonnet-4-5-20250929/);
  t.match(u.stdout, /house-model-7b/);
  const tail = await runFirma(['audit', 'tail', '--agent', 'usage-agent', '--config', join(sc.dir, 'firma.toml')], sc.dir);
  t.equal(tail.code, 0, tail.stderr);
  t.match(tail.stdout, /llm gpt-4o-mini-2024-07-18 in=1200 out=340 \$0\.0003/, '`firma audit tail` shows the call\'s tokens and cost');
  t.match(tail.stdout, /llm gpt-4o in=0 out=~\d+ /, 'and marks an estimate');
  const everything = [readFileSync(join(sc.dir, 'audit', 'audit.jsonl'), 'utf8'), sc.logs.join('\n'), metrics, u.stdout, tail.stdout].join('\n');
  t.notOk(everything.includes(OPENAI_KEY), 'the OpenAI key is in no audit event, log line, metric or report');
  t.notOk(everything.includes(ANTHROPIC_KEY), 'nor the Anthropic key');
});
