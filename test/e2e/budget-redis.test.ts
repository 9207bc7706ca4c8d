/**
 * The shared LLM usage ledger against a real redis-server (docs/llm.md "Budgets"): two ledgers
 * (two replicas) on one Redis see one total, exact under concurrent records; a new ledger (a restarted
 * replica) loses nothing; keys expire after their window; Redis down refuses (503) unless on_error = "local".
 */
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { freePort, RedisServer } from '../helpers/redis.js';
import type { LlmUsage } from '../../src/core/llm.js';
import { RedisLedger, type RedisLedgerConfig } from '../../src/enforce/budget/redis.js';
import { BudgetGate } from '../../src/enforce/budget/gate.js';
import { windowStart, type UsageLedger, type UsageTotals } from '../../src/enforce/budget/types.js';
import { Enforcer } from '../../src/enforce/enforcer.js';
import { ActionCounters } from '../../src/enforce/counters.js';
import { normalize } from '../../src/normalize/normalize.js';
import { LlmHosts } from '../../src/normalize/llm-hosts.js';
import { shippedStages, rawRequest, AGENT } from '../helpers/stages.js';

const usage = (input: number, output: number, cost: number | null): LlmUsage => ({
  model: 'gpt-4o', inputTokens: input, outputTokens: output, cachedInputTokens: 0, cacheWriteTokens: 0, costUsd: cost, estimated: false,
});

async function until(ledger: UsageLedger, agent: string, done: (t: UsageTotals) => boolean): Promise<UsageTotals | null> {
  let last: UsageTotals | null = null;
  for (let i = 0; i < 200; i++) {
    last = await ledger.totals(agent, Date.now());
    if (last !== null && done(last)) return last;
    await sleep(10);
  }
  return last;
}

t.test('two replicas share one total, exact under concurrent records; a restart loses nothing', async (t) => {
  const server = new RedisServer(await freePort());
  await server.start();
  t.teardown(() => server.kill());
  const cfg: RedisLedgerConfig = { url: server.url, key_prefix: 'firma-test', on_error: 'deny', timeout_ms: 500 };
  const a = new RedisLedger(cfg);
  const b = new RedisLedger(cfg);
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  t.ok(await a.ready());
  t.ok(await b.ready());
  const now = Date.now();
  for (let i = 0; i < 500; i++) {
    a.record('agent-a', usage(3, 1, 0.001), now);
    b.record('agent-a', usage(2, 0, 0.0005), now);
  }
  const total = await until(a, 'agent-a', (x) => x.day.tokens >= 3000);
  t.equal(total?.day.tokens, 3000, '500 × 4 + 500 × 2 tokens, none lost');
  t.equal(total?.hour.tokens, 3000);
  t.ok(Math.abs((total?.day.costUsd ?? 0) - 0.75) < 1e-9, `cost adds up: ${total?.day.costUsd}`);
  t.same(await b.totals('agent-a', Date.now()), total, 'the other replica reads the same total');
  t.same((await b.totals('agent-b', Date.now()))?.day, { tokens: 0, costUsd: 0 }, 'agents are apart');

  const restarted = new RedisLedger(cfg);
  t.teardown(() => restarted.close());
  t.ok(await restarted.ready());
  t.equal((await restarted.totals('agent-a', Date.now()))?.day.tokens, 3000, 'a new replica finds the totals in Redis');

  const probe = new Redis(server.url);
  t.teardown(() => probe.disconnect());
  const key = `firma-test:llm:minute:${windowStart('minute', now)}:{agent-a}`;
  t.same(await probe.hgetall(key), { tokens: '3000', cost: String(await probe.hget(key, 'cost')) });
  const ttl = await probe.pttl(key);
  t.ok(ttl > 0 && ttl <= 120_000, `the minute key expires after its window (+60 s): pttl ${ttl}`);
  const dayTtl = await probe.pttl(`firma-test:llm:day:${windowStart('day', now)}:{agent-a}`);
  t.ok(dayTtl > 0 && dayTtl <= 86_460_000, `the day key too: pttl ${dayTtl}`);
});

t.test('Redis down: the budget stage refuses with 503 shared_state_unavailable; on_error = "local" uses this replica\'s totals', async (t) => {
  const server = new RedisServer(await freePort());
  await server.start();
  const deny = new RedisLedger({ url: server.url, key_prefix: 'firma-test', on_error: 'deny', timeout_ms: 200 });
  const local = new RedisLedger({ url: server.url, key_prefix: 'firma-test', on_error: 'local', timeout_ms: 200 });
  t.teardown(async () => {
    await deny.close();
    await local.close();
  });
  t.ok(await deny.ready());
  t.ok(await local.ready());
  local.record('agent-a', usage(700, 300, null), Date.now());
  t.equal((await until(local, 'agent-a', (x) => x.day.tokens >= 1000))?.day.tokens, 1000);
  await server.kill();
  await sleep(100);
  t.equal(await deny.totals('agent-a', Date.now()), null, 'deny: no totals');
  t.equal((await local.totals('agent-a', Date.now()))?.day.tokens, 1000, 'local: this replica\'s own totals');

  const { setup, snapshot } = shippedStages();
  t.teardown(() => setup.close());
  const enforcer = (ledger: UsageLedger) => new Enforcer({
    mode: 'enforce', defaultProtected: true, coversHost: () => true, capabilities: null, selfToken: null,
    policy: setup.rules.policy, counters: new ActionCounters(), approvals: null,
    budgets: BudgetGate.create({ ledger, policyReadsUsage: null, rules: [{ agent: '*', window: 'day', maxTokens: 1000, maxCostUsd: null, place: 'firma.toml:3' }] }),
    onError: (err) => t.fail(String(err)),
  });
  const llm = normalize(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), snapshot.mapping, LlmHosts.BUILT_IN);
  t.match(await enforcer(deny).decide(llm, AGENT), { verdict: 'deny', stage: 'budget', reason: 'shared_state_unavailable', status: 503, retryAfterS: 1 });
  t.match(await enforcer(local).decide(llm, AGENT), { verdict: 'deny', stage: 'budget', reason: 'budget_exceeded', status: 429 }, 'local: over its own total');
  const other = normalize(rawRequest('GET', 'api.github.com', '/user'), snapshot.mapping, LlmHosts.BUILT_IN);
  t.match(await enforcer(deny).decide(other, AGENT), { verdict: 'allow' }, 'a request no budget applies to does not need Redis');
});
