/**
 * Budgets end to end (docs/llm.md "Budgets"): agents on the official SDKs call a loopback OpenAI fake
 * through the sidecar, which reads each call's usage from the response and refuses the next call once an
 * agent's window total reached its budget: 429 `budget_exceeded`, `Retry-After` = seconds to the window's
 * end, a RateLimitError the SDK shows with the sidecar's sentence. A budget in dollars works the same
 * way on the shipped prices; every agent has its own total under `agent = "*"`. Two replicas on one real
 * redis-server share one total, and a replica restarted on it still refuses.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestSidecar, type TestSidecar } from '../helpers/sidecar.js';
import { useLlmFake, DEFAULT_ANSWER } from '../helpers/llm-fakes.js';
import { runSdkAgent, type AgentRun } from '../helpers/sdk-agent.js';
import { freePort, RedisServer } from '../helpers/redis.js';
import { fixture } from '../helpers/fixture.js';

const KEY = 'sk-budget-real-81c0aa';
process.env['FIRMA_BUDGET_OPENAI_KEY'] = KEY;
// 30 input + 10 output tokens per call.
const up = useLlmFake(t, { tls: true, answer: { ...DEFAULT_ANSWER, model: 'gpt-4o', inputTokens: 30, outputTokens: 10 } });
const redis = fixture(t, async () => {
  const server = new RedisServer(await freePort());
  await server.start();
  return server;
}, (s) => s.kill());

const llmHost = (): string => `
[[llm.hosts]]
host = "127.0.0.1:${up.port}"
format = "openai"

[[credentials]]
host = "127.0.0.1:${up.port}"
header = "Authorization"
prefix = "Bearer "
mode = "basic"
value_from_env = "FIRMA_BUDGET_OPENAI_KEY"
`;

/**
 * An agent calling chat completions `n` times in a row (through the replicas in turn), stopping at the
 * first error; prints how many calls went through and the error the SDK threw.
 */
function callUntilRefused(agent: string, sidecars: readonly TestSidecar[], n: number): Promise<AgentRun> {
  const proxies = sidecars.map((s) => `http://${agent}:x@127.0.0.1:${s.proxyPort}`);
  // Each test sidecar has a CA of its own (replicas of a deployment share one): the agent trusts them all.
  const bundle = join(mkdtempSync(join(tmpdir(), 'firma-cas-')), 'cas.pem');
  writeFileSync(bundle, sidecars.map((s) => s.caPem).join('\n'));
  return runSdkAgent({ proxyUrl: proxies[0] as string, caPath: bundle, openaiPort: up.port }, `
import { ProxyAgent } from 'undici';
const replicas = ${JSON.stringify(proxies)}.map((uri) => new OpenAI({ apiKey: 'sk-placeholder', baseURL: 'https://127.0.0.1:${up.port}/v1', maxRetries: 0, fetch: undiciFetch, fetchOptions: { dispatcher: new ProxyAgent({ uri }) } }));
let ok = 0; let refused = null;
for (let i = 0; i < ${n} && refused === null; i++) {
  try { await replicas[i % replicas.length].chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }); ok++; }
  catch (e) { refused = sdkError(e); }
}
console.log(JSON.stringify({ ok, refused }));
`);
}

interface Refusal {
  name: string;
  status: number;
  message: string;
  error: { type: string; code: string } | null;
  headers: Record<string, string> | null;
}

function checkRetryAfter(t: Test, refused: Refusal, windowMs: number): void {
  const retry = Number(refused.headers?.['retry-after']);
  const toEnd = Math.ceil((windowMs - (Date.now() % windowMs)) / 1000);
  t.ok(retry >= 1 && retry <= toEnd + 1 && retry >= toEnd - 30, `Retry-After ${retry} s ≈ the window's end in ${toEnd} s`);
}

t.test('a token budget: calls go through until the total reaches it, then a 429 the SDK shows as a RateLimitError', async (t) => {
  const sc = await startTestSidecar(`${llmHost()}
[[budgets]]
agent = "*"
window = "day"
max_tokens = 100
`);
  t.teardown(() => sc.stop());
  const r = await callUntilRefused('alice', [sc], 10);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.out['ok'], 3, '40 + 40 + 40: the third call starts at 80 (< 100) and goes through; the fourth is refused');
  const refused = r.out['refused'] as Refusal;
  t.match(refused, { name: 'RateLimitError', status: 429, error: { type: 'rate_limit_error', code: 'budget_exceeded' } }, 'e.error: the sidecar’s error object, in OpenAI’s vocabulary');
  t.match(refused.message, /agent alice has used 120 of 100 tokens this day \(budget firma\.toml:\d+\); the window ends in/, 'the SDK’s message is the sidecar’s sentence');
  checkRetryAfter(t, refused, 86_400_000);
  t.equal(up.requests.filter((q) => q.headers['authorization'] === `Bearer ${KEY}`).length >= 3, true, 'the calls that went through carried the injected key');

  const bob = await callUntilRefused('bob', [sc], 2);
  t.same(bob.out, { ok: 2, refused: null }, 'agent = "*": bob has a total of his own');
});

t.test('a dollar budget on the shipped prices: $25 a day, crossed, refused', async (t) => {
  // gpt-4o at the shipped table's price: 30 input + 10 output tokens cost a few ten-thousandths of a dollar;
  // a budget of two calls' worth shows the same rule in dollars.
  const sc = await startTestSidecar(`${llmHost()}
[[budgets]]
agent = "*"
window = "day"
max_cost_usd = 25.0

[[budgets]]
agent = "carol"
window = "hour"
max_cost_usd = 0.0003
`);
  t.teardown(() => sc.stop());
  const r = await callUntilRefused('carol', [sc], 10);
  t.equal(r.code, 0, r.stderr);
  const refused = r.out['refused'] as Refusal;
  t.ok((r.out['ok'] as number) >= 1, `${String(r.out['ok'])} call(s) before the hour's $0.0003 ran out`);
  t.match(refused, { status: 429, error: { code: 'budget_exceeded' } });
  t.match(refused.message, /agent carol has used \$0\.\d+ of \$0\.0003 this hour/);
  checkRetryAfter(t, refused, 3_600_000);
  const dave = await callUntilRefused('dave', [sc], 3);
  t.same(dave.out, { ok: 3, refused: null }, 'under the $25 a day of everyone else');
});

t.test('two replicas on one redis-server share one budget; a replica restarted on it still refuses', async (t) => {
  const config = `${llmHost()}
[redis]
url = "${redis.url}"
key_prefix = "firma-budget-e2e"

[[budgets]]
agent = "*"
window = "day"
max_tokens = 100
`;
  const a = await startTestSidecar(config);
  const b = await startTestSidecar(config);
  t.teardown(() => Promise.all([a.stop(), b.stop()]));
  const r = await callUntilRefused('erin', [a, b], 10);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.out['ok'], 3, `calls on a, b, a: one total of 120 tokens across both (${JSON.stringify(r.out['refused'])})`);
  t.match(r.out['refused'], { status: 429, error: { code: 'budget_exceeded' } }, 'refused on b, which served one of them');

  await a.stop();
  const again = await startTestSidecar(config);
  t.teardown(() => again.stop());
  const after = await callUntilRefused('erin', [again], 1);
  t.match(after.out, { ok: 0, refused: { status: 429, error: { code: 'budget_exceeded' } } }, 'the restarted replica reads the total from Redis');
});
