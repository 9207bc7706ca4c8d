/**
 * The LLM usage ledger and the budget stage (docs/llm.md "Budgets", "Policies on usage"), without
 * sockets: windows rolling at UTC boundaries with an injected clock, the rebuild from audit records, and
 * the Enforcer refusing (429, Retry-After) an LLM call past a budget, before a hold and after an approval.
 */
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LlmUsage } from '../../../src/core/llm.js';
import type { Envelope } from '../../../src/core/envelope.js';
import type { Held } from '../../../src/core/decision.js';
import { normalize } from '../../../src/normalize/normalize.js';
import { LlmHosts } from '../../../src/normalize/llm-hosts.js';
import { MemoryLedger } from '../../../src/enforce/budget/memory.js';
import { BudgetGate, duration, type BudgetRule } from '../../../src/enforce/budget/gate.js';
import type { UsageLedger } from '../../../src/enforce/budget/types.js';
import { Enforcer } from '../../../src/enforce/enforcer.js';
import { ActionCounters } from '../../../src/enforce/counters.js';
import { PolicyEngine } from '../../../src/enforce/policy/engine.js';
import { ApprovalQueue } from '../../../src/enforce/approval/queue.js';
import { denyReply } from '../../../src/pipeline/replies.js';
import { createPipeline } from '../../../src/pipeline/setup.js';
import { createLogger } from '../../../src/core/log.js';
import { shippedStages, rawRequest, AGENT } from '../../helpers/stages.js';

const usage = (input: number, output: number, cost: number | null = null, model = 'gpt-4o'): LlmUsage => ({
  model, inputTokens: input, outputTokens: output, cachedInputTokens: 0, cacheWriteTokens: 0, costUsd: cost, estimated: false,
});
const at = (iso: string): number => Date.parse(iso);
const rule = (over: Partial<BudgetRule>): BudgetRule => ({ agent: '*', window: 'day', maxTokens: null, maxCostUsd: null, place: 'firma.toml:12', ...over });

t.test('the memory ledger keeps fixed UTC windows that roll at their boundaries', async (t) => {
  const l = new MemoryLedger();
  l.record('a', usage(100, 20, 0.5), at('2026-03-01T10:59:59.900Z'));
  t.same(l.totals('a', at('2026-03-01T10:59:59.999Z')), { minute: { tokens: 120, costUsd: 0.5 }, hour: { tokens: 120, costUsd: 0.5 }, day: { tokens: 120, costUsd: 0.5 } });
  l.record('a', usage(10, 0, null), at('2026-03-01T11:00:00.000Z'));
  t.same(l.totals('a', at('2026-03-01T11:00:30Z')), { minute: { tokens: 10, costUsd: 0 }, hour: { tokens: 10, costUsd: 0 }, day: { tokens: 130, costUsd: 0.5 } }, 'a new hour and minute; the day goes on; a null cost adds nothing');
  t.same(l.totals('a', at('2026-03-01T11:01:00Z')).minute, { tokens: 0, costUsd: 0 }, 'the next minute starts at 0 without a record');
  t.same(l.totals('a', at('2026-03-02T00:00:00Z')).day, { tokens: 0, costUsd: 0 }, 'midnight UTC starts a new day');
  t.same(l.totals('b', at('2026-03-01T11:00:30Z')).day, { tokens: 0, costUsd: 0 }, 'agents are apart');
  l.record('a', usage(0, 0, null), at('2026-03-01T11:00:30Z'));
  t.equal(l.totals('a', at('2026-03-01T11:00:30Z')).day.tokens, 130, 'an empty usage counts nothing');
});

t.test('the memory ledger drops agents whose day has passed', async (t) => {
  const l = new MemoryLedger();
  for (let i = 0; i < 100; i++) l.record(`agent-${i}`, usage(1, 1), at('2026-03-01T23:00:00Z'));
  t.equal(l.size, 100);
  l.record('agent-0', usage(1, 1), at('2026-03-02T00:00:01Z'));
  t.equal(l.size, 1, 'the first record of a new day sweeps the old ones');
});

t.test('record never throws, whatever the usage holds', async (t) => {
  const l = new MemoryLedger();
  t.doesNotThrow(() => l.record('a', { ...usage(Number.NaN, -5), costUsd: Number.POSITIVE_INFINITY }, Date.now()));
  t.equal(l.totals('a', Date.now()).day.tokens, 0);
});

t.test('rebuild adds the records of the current UTC day only', async (t) => {
  const l = new MemoryLedger();
  async function* records() {
    yield { agentId: 'a', atMs: at('2026-03-01T23:59:59Z'), usage: usage(1000, 0, 9) };
    yield { agentId: 'a', atMs: at('2026-03-02T01:00:00Z'), usage: usage(100, 50, 1.25) };
    yield { agentId: 'a', atMs: at('2026-03-02T09:30:00Z'), usage: usage(10, 5, null) };
    yield { agentId: 'b', atMs: at('2026-03-02T09:59:00Z'), usage: usage(1, 1, 0.01) };
  }
  t.equal(await l.rebuild(records(), at('2026-03-02T10:00:00Z')), 3);
  const now = at('2026-03-02T10:00:00Z');
  t.same(l.totals('a', now).day, { tokens: 165, costUsd: 1.25 });
  t.same(l.totals('a', now).hour, { tokens: 0, costUsd: 0 }, 'no call this hour');
  t.equal(l.totals('b', now).day.tokens, 2);
});

t.test('duration reads as the message writes it', async (t) => {
  t.equal(duration(11_580), '3h13m');
  t.equal(duration(750), '12m30s');
  t.equal(duration(45), '45s');
});

const LLM: Envelope = normalize(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), shippedStages().snapshot.mapping, LlmHosts.BUILT_IN);

t.test('the gate: exact and "*" budgets both apply, each its own limit; Retry-After = the later window end', async (t) => {
  const l = new MemoryLedger();
  const gate = new BudgetGate({ ledger: l, policyReadsUsage: null, rules: [
    rule({ agent: '*', window: 'day', maxTokens: 2_000_000, place: 'firma.toml:12' }),
    rule({ agent: 'agent-a', window: 'minute', maxCostUsd: 1, place: 'firma.toml:18' }),
  ] });
  const now = at('2026-03-02T20:48:00Z');
  t.equal(gate.check(LLM, 'agent-a', l.totals('agent-a', now), now), null, 'nothing used');
  l.record('agent-a', usage(1_000_000, 0, 1.5), now);
  t.match(gate.check(LLM, 'agent-a', l.totals('agent-a', now), now), {
    status: 429, reason: 'budget_exceeded', retryAfterS: 60,
    message: 'agent agent-a has used $1.50 of $1.00 this minute (budget firma.toml:18); the window ends in 1m00s',
  });
  t.equal(gate.check(LLM, 'agent-b', l.totals('agent-b', now), now), null, 'the exact budget is agent-a\'s only');
  l.record('agent-a', usage(1_000_000, 140), now);
  t.match(gate.check(LLM, 'agent-a', l.totals('agent-a', now), now), {
    status: 429, retryAfterS: 3 * 3600 + 12 * 60,
    message: 'agent agent-a has used 2,000,140 of 2,000,000 tokens this day (budget firma.toml:12); the window ends in 3h12m',
  }, 'past both: the one that ends last is named');
  const plain = normalize(rawRequest('GET', 'api.github.com', '/user'), shippedStages().snapshot.mapping);
  t.equal(plain.llm, null, 'a request to another host carries no llm facts');
  t.notOk(gate.wants(plain, 'agent-a'), 'and needs no totals');
  t.equal(gate.check(plain, 'agent-a', l.totals('agent-a', now), now), null);
  t.equal(BudgetGate.create({ ledger: l, policyReadsUsage: null, rules: [] }), null, 'no budget, no usage-reading policy: no gate at all');
});

interface Built {
  readonly enforcer: Enforcer;
  readonly ledger: MemoryLedger;
  setNow(ms: number): void;
}

function build(t: { teardown(fn: () => void): void; fail(m: string): void }, opts: { rules: BudgetRule[]; mode?: 'enforce' | 'monitor'; defaultProtected?: boolean; ledger?: UsageLedger; approvals?: ApprovalQueue; policy?: PolicyEngine }): Built {
  const { setup } = shippedStages();
  t.teardown(() => setup.close());
  let now = at('2026-03-02T20:48:00Z');
  const ledger = new MemoryLedger();
  const policy = opts.policy ?? setup.rules.policy;
  const budgets = BudgetGate.create({
    rules: opts.rules,
    ledger: opts.ledger ?? ledger,
    policyReadsUsage: policy.readsLlmUsage ? (c) => policy.readsLlmUsageFor(c) : null,
  });
  const enforcer = new Enforcer({
    mode: opts.mode ?? 'enforce', defaultProtected: opts.defaultProtected ?? true, coversHost: () => true, capabilities: null, selfToken: null,
    policy, counters: new ActionCounters(), approvals: opts.approvals ?? null, budgets, now: () => now,
    onError: (err) => t.fail(String(err)),
  });
  return { enforcer, ledger, setNow: (ms) => void (now = ms) };
}

t.test('the Enforcer refuses an LLM call past its budget with 429 and Retry-After; other calls pay nothing', async (t) => {
  const b = build(t, { rules: [rule({ maxTokens: 1000 })] });
  t.match(await b.enforcer.decide(LLM, AGENT), { verdict: 'allow' });
  b.ledger.record(AGENT.agentId, usage(900, 100), at('2026-03-02T20:48:00Z'));
  const v = await b.enforcer.decide(LLM, AGENT);
  t.match(v, { verdict: 'deny', stage: 'budget', reason: 'budget_exceeded', status: 429, retryAfterS: 3 * 3600 + 12 * 60, policyIds: ['default.allow-low-medium'] });
  if (v.verdict !== 'deny') return;
  const reply = denyReply(v);
  t.match(reply, { status: 429, stage: 'budget', reason: 'budget_exceeded', headers: { 'retry-after': String(3 * 3600 + 12 * 60) } });
  t.match(await b.enforcer.decide(normalize(rawRequest('GET', 'api.github.com', '/user'), shippedStages().snapshot.mapping), AGENT), { verdict: 'allow' }, 'a non-LLM request is not counted against it');
  t.match(await b.enforcer.decide(LLM, { ...AGENT, agentId: 'agent-b' }), { verdict: 'allow' }, '"*": each agent its own total');
  b.setNow(at('2026-03-03T00:00:00Z'));
  t.match(await b.enforcer.decide(LLM, AGENT), { verdict: 'allow' }, 'a new UTC day: allowed again');
});

t.test('a policy deny still wins; monitor mode reports the budget as a would-deny', async (t) => {
  const b = build(t, { rules: [rule({ maxTokens: 1 })] });
  b.ledger.record(AGENT.agentId, usage(5, 0), at('2026-03-02T20:48:00Z'));
  const del = normalize(rawRequest('DELETE', 'api.github.com', '/repos/o/r'), shippedStages().snapshot.mapping, LlmHosts.BUILT_IN);
  t.match(await b.enforcer.decide({ ...del, llm: { host: 'api.github.com', format: 'openai' } }, AGENT), { verdict: 'deny', stage: 'policy', reason: 'policy_deny' });
  const m = build(t, { rules: [rule({ maxTokens: 1 })], mode: 'monitor' });
  m.ledger.record(AGENT.agentId, usage(5, 0), at('2026-03-02T20:48:00Z'));
  t.match(await m.enforcer.decide(LLM, AGENT), { verdict: 'allow', wouldDeny: { stage: 'budget', reason: 'budget_exceeded' } });
});

t.test('over budget: no hold is created; under budget the hold is rechecked after the approval', async (t) => {
  // api.stripe.com refunds are held by the shipped policies; made an LLM host here to reach the hold.
  const refunds = normalize(rawRequest('POST', 'api.stripe.com', '/v1/refunds'), shippedStages().snapshot.mapping);
  const envelope: Envelope = { ...refunds, llm: { host: 'api.stripe.com', format: 'openai' } };
  const approvals = new ApprovalQueue({ timeoutMs: 60_000, maxPending: 10, maxGrantMinutes: 60, audit: { held: () => true, approval: () => true } });
  const b = build(t, { rules: [rule({ maxTokens: 1000 })], approvals });
  const held = await b.enforcer.decide(envelope, AGENT);
  t.match(held, { verdict: 'hold' }, 'under budget: held for a person');
  const waiting = b.enforcer.awaitApproval(held as Held, { bodyHash: null, signal: new AbortController().signal });
  // Other calls spend the budget while this one waits.
  b.ledger.record(AGENT.agentId, usage(1000, 0), at('2026-03-02T20:48:00Z'));
  const pending = approvals.list().pending[0];
  t.ok(pending, 'pending');
  approvals.approve(pending!.id, 'alice');
  t.match(await waiting, { verdict: 'deny', stage: 'budget', reason: 'budget_exceeded', status: 429, message: /checked again after the approval/ });
  t.match(await b.enforcer.decide(envelope, AGENT), { verdict: 'deny', stage: 'budget', reason: 'budget_exceeded' }, 'over budget: refused before any hold');
  t.equal(approvals.list().pending.length, 0, 'nobody was asked');
});

t.test('shared totals that cannot be read refuse (503, Retry-After: 1); monitor mode reports them', async (t) => {
  const down: UsageLedger = { local: false, record: () => {}, totals: () => Promise.resolve(null), close: async () => {} };
  const b = build(t, { rules: [rule({ maxTokens: 1000 })], ledger: down });
  const v = await b.enforcer.decide(LLM, AGENT);
  t.match(v, { verdict: 'deny', stage: 'budget', reason: 'shared_state_unavailable', status: 503, retryAfterS: 1 });
  if (v.verdict === 'deny') t.match(denyReply(v).headers, { 'retry-after': '1' });
  t.match(await b.enforcer.decide(normalize(rawRequest('GET', 'api.github.com', '/user'), shippedStages().snapshot.mapping), AGENT), { verdict: 'allow' }, 'a request no budget applies to never asks');
  const m = build(t, { rules: [rule({ maxTokens: 1000 })], ledger: down, mode: 'monitor' });
  t.match(await m.enforcer.decide(LLM, AGENT), { verdict: 'allow', wouldDeny: { stage: 'budget', reason: 'shared_state_unavailable' } });
});

t.test('Cedar reads context.llm_tokens_* as Long and context.llm_cost_* as decimal, only when a policy does', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firma-llm-policy-'));
  writeFileSync(join(dir, 'usage.cedar'), `
@id("allow")
permit (principal, action, resource);
@id("tokens")
forbid (principal, action == Firma::Action::"llm.chat", resource) when { context.llm_tokens_day >= 1000 };
@id("cost")
forbid (principal, action == Firma::Action::"llm.chat", resource) when { context.llm_cost_hour.greaterThan(decimal("1.5")) };
`);
  const { snapshot } = shippedStages();
  const policy = PolicyEngine.load({ dir, actionClasses: [...snapshot.mapping.actionClasses] });
  t.teardown(() => policy.close());
  t.ok(policy.readsLlmUsage);
  t.ok(policy.readsLlmUsageFor('llm.chat'));
  t.notOk(policy.readsLlmUsageFor('github.read'), 'only the classes those policies reach');
  t.equal(LLM.actionClass, 'llm.chat');
  const b = build(t, { rules: [], policy });
  t.match(await b.enforcer.decide(LLM, AGENT), { verdict: 'allow' });
  b.ledger.record(AGENT.agentId, usage(10, 0, 1.50004), at('2026-03-02T20:48:00Z'));
  t.match(await b.enforcer.decide(LLM, AGENT), { verdict: 'allow' }, '$1.50004 is decimal("1.5000"): not greater');
  b.ledger.record(AGENT.agentId, usage(10, 0, 0.0001), at('2026-03-02T20:48:00Z'));
  t.match(await b.enforcer.decide(LLM, AGENT), { verdict: 'deny', stage: 'policy', policyIds: ['cost'] });
  b.setNow(at('2026-03-02T21:00:00Z'));
  t.match(await b.enforcer.decide(LLM, AGENT), { verdict: 'allow' }, 'a new hour');
  b.ledger.record(AGENT.agentId, usage(980, 0), at('2026-03-02T21:00:00Z'));
  t.match(await b.enforcer.decide(LLM, AGENT), { verdict: 'deny', stage: 'policy', policyIds: ['tokens'] });
});

t.test('unclassified traffic let through (default_protected = false) is held to the budget too', async (t) => {
  const b = build(t, { rules: [rule({ window: 'hour', maxTokens: 10 })], defaultProtected: false });
  const unmapped = normalize(rawRequest('POST', 'api.openai.com', '/v9/something-new'), shippedStages().snapshot.mapping, LlmHosts.BUILT_IN);
  t.equal(unmapped.actionClass, null);
  t.match(await b.enforcer.decide(unmapped, AGENT), { verdict: 'allow', passthrough: true });
  b.ledger.record(AGENT.agentId, usage(10, 0), at('2026-03-02T20:48:00Z'));
  t.match(await b.enforcer.decide(unmapped, AGENT), { verdict: 'deny', stage: 'budget', reason: 'budget_exceeded', retryAfterS: 12 * 60 });
  t.match(await b.enforcer.decide(normalize(rawRequest('GET', 'unknown.example', '/'), shippedStages().snapshot.mapping), AGENT), { verdict: 'allow', passthrough: true }, 'not an LLM host');
});

t.test('a reload keeps the usage ledger (a budget is not reset); a given ledger is used as it is', async (t) => {
  const { setup, config } = shippedStages();
  t.teardown(() => setup.close());
  const next = createPipeline(config, createLogger('silent'), { previous: setup });
  t.teardown(() => next.close());
  t.equal(next.ledger, setup.ledger);
  const mine = new MemoryLedger();
  const given = createPipeline(config, createLogger('silent'), { ledger: mine });
  t.teardown(() => given.close());
  t.equal(given.ledger, mine);
});
