import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { CedarValueJson, EntityJson } from '@cedar-policy/cedar-wasm/nodejs';
import { ConfigError } from '../../../src/config/index.js';
import { ActionCounters } from '../../../src/enforce/counters.js';
import type { ActionCounts } from '../../../src/enforce/counters.js';
import { actionGroupsOf, firmaSchemaText, DEFAULT_BODY_FIELDS } from '../../../src/enforce/policy/schema.js';
import { PolicyEngine } from '../../../src/enforce/policy/engine.js';
import type { PolicyInput, PolicyOutcome } from '../../../src/enforce/policy/verdict.js';

import type { Test } from '../../helpers/expect.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CLASSES = ['llm.chat', 'github.read', 'github.repo.delete', 'payments.refund', 'payments.charge', 'payments.read', 'slack.post'];
const ZERO: ActionCounts = { minute: 0, hour: 0, minuteClass: 0, hourClass: 0 };
// Wednesday 2025-01-08 10:00:00 UTC
const WED_10 = Date.UTC(2025, 0, 8, 10, 0, 0);

function input(over: Partial<PolicyInput> = {}): PolicyInput {
  return {
    agentId: 'agent-1',
    actionClass: 'llm.chat',
    risk: 'low',
    method: 'POST',
    host: 'api.openai.com',
    path: '/v1/chat/completions',
    nowMs: WED_10,
    counts: ZERO,
    body: null,
    ...over,
  };
}

/** A fresh folder with these files; returns its path. */
function policyDir(t: Test, files: Record<string, string>): string {
  return t.testdir(files);
}

function load(t: Test, files: Record<string, string>, opts: { actionClasses?: readonly string[] | null; memoSize?: number } = {}): PolicyEngine {
  const engine = PolicyEngine.load({
    dir: policyDir(t, files),
    ...(opts.actionClasses === null ? {} : { actionClasses: opts.actionClasses ?? CLASSES }),
    ...(opts.memoSize === undefined ? {} : { memoSize: opts.memoSize }),
  });
  t.teardown(() => engine.close());
  return engine;
}

function loadError(t: Test, files: Record<string, string>, actionClasses: readonly string[] = CLASSES): ConfigError {
  try {
    PolicyEngine.load({ dir: policyDir(t, files), actionClasses });
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

const DEFAULT_TEXT = fs.readFileSync(path.join(ROOT, 'policies', 'default.cedar'), 'utf8');

t.test('shipped default policies: low/medium allow, high approval, critical deny', async (t) => {
  const engine = PolicyEngine.load({ dir: path.join(ROOT, 'policies'), actionClasses: CLASSES });
  t.teardown(() => engine.close());
  t.same(engine.policyIds, ['default.allow-low-medium', 'default.approve-high', 'default.deny-critical']);
  t.same(engine.warnings, []);
  t.same(engine.evaluate(input({ risk: 'low' })), { verdict: 'allow', reason: 'policy_allow', policyIds: ['default.allow-low-medium'] });
  t.same(engine.evaluate(input({ risk: 'medium' })), { verdict: 'allow', reason: 'policy_allow', policyIds: ['default.allow-low-medium'] });
  t.same(engine.evaluate(input({ risk: 'high' })), { verdict: 'approval', reason: 'approval_required', policyIds: ['default.approve-high'] });
  t.same(engine.evaluate(input({ risk: 'critical' })), { verdict: 'deny', reason: 'policy_deny', policyIds: ['default.deny-critical'] });
  // Classes the mapping did not announce are decided too (plans are built on demand).
  t.equal(engine.evaluate(input({ actionClass: 'something.new', risk: 'low' })).verdict, 'allow');
  t.match(engine.policyHash, /^[0-9a-f]{64}$/);
});

t.test('the examples file validates when its classes exist (and is not loaded by default)', async (t) => {
  const examples = fs.readFileSync(path.join(ROOT, 'policies', 'examples.cedar.txt'), 'utf8');
  const engine = load(t, { 'default.cedar': DEFAULT_TEXT, 'examples.cedar': examples });
  t.ok(engine.policyIds.includes('example.refund-limit'));
  t.same(engine.warnings, []);
});

t.test('forbid wins over permit', async (t) => {
  const engine = load(t, {
    'p.cedar': `
      @id("allow-all") permit (principal, action, resource);
      @id("no-deletes") forbid (principal, action == Firma::Action::"github.repo.delete", resource);
      @id("no-deletes-2") forbid (principal, action in Firma::Action::"github.*", resource) when { context.method == "DELETE" };
    `,
  });
  t.same(engine.evaluate(input({ actionClass: 'github.repo.delete', method: 'DELETE' })),
    { verdict: 'deny', reason: 'policy_deny', policyIds: ['no-deletes', 'no-deletes-2'] });
  t.same(engine.evaluate(input({ actionClass: 'github.read', method: 'GET' })),
    { verdict: 'allow', reason: 'policy_allow', policyIds: ['allow-all'] });
  // forbid also wins over an @approval permit
  const e2 = load(t, { 'p.cedar': '@approval permit (principal, action, resource);\n@id("f") forbid (principal, action, resource) when { context.risk == "high" };' });
  t.same(e2.evaluate(input({ risk: 'high' })), { verdict: 'deny', reason: 'policy_deny', policyIds: ['f'] });
});

t.test('@approval permit → approval with its id; ids default to file:line', async (t) => {
  const engine = load(t, {
    'a.cedar': [
      '// comment line',
      '@approval("finance must agree")',
      'permit (principal, action == Firma::Action::"payments.refund", resource);',
      '',
      'permit (principal, action == Firma::Action::"payments.read", resource);',
      '@id("refund-too") permit (principal, action in Firma::Action::"payments.*", resource) when { context.method == "POST" };',
    ].join('\n'),
  });
  t.same(engine.policyIds, ['a.cedar:2', 'a.cedar:5', 'refund-too']);
  // Any determining permit with @approval makes it an approval, naming only the @approval ones.
  t.same(engine.evaluate(input({ actionClass: 'payments.refund' })),
    { verdict: 'approval', reason: 'approval_required', policyIds: ['a.cedar:2'] });
  t.same(engine.evaluate(input({ actionClass: 'payments.read', method: 'GET' })),
    { verdict: 'allow', reason: 'policy_allow', policyIds: ['a.cedar:5'] });
});

t.test('no permit → deny no_permit', async (t) => {
  const engine = load(t, { 'p.cedar': 'permit (principal, action == Firma::Action::"llm.chat", resource) when { context.risk == "low" };' });
  t.same(engine.evaluate(input({ risk: 'medium' })), { verdict: 'deny', reason: 'no_permit', policyIds: [] });
  t.same(engine.evaluate(input({ actionClass: 'slack.post' })), { verdict: 'deny', reason: 'no_permit', policyIds: [] });
  const empty = load(t, { 'README.md': 'no policies here' });
  t.same(empty.policyIds, []);
  t.same(empty.evaluate(input()), { verdict: 'deny', reason: 'no_permit', policyIds: [] });
});

t.test('schema errors are reported with file, line, column and policy id', async (t) => {
  const b = [
    '// second file',
    '@id("ok") permit (principal, action, resource);',
    '',
    '@id("wrong-type")',
    'forbid (principal, action, resource)',
    '  when { context.hour == "noon" };',
    'forbid (principal, action, resource) when { resource.owner == "x" };',
    'permit (principal, action == Firma::Action::"paymnets.refund", resource);',
    'forbid (principal, action, resource) when { context.body.amount > 100 };',
  ].join('\n');
  const err = loadError(t, { 'a.cedar': '@id("fine") permit (principal, action, resource) when { context.foo == 1 };\n', 'b.cedar': b });
  t.equal(err.code, 'FIRMA_CONFIG_INVALID');
  const where = err.errors.map((i) => `${path.basename(i.file)}:${i.line}:${i.col}: ${i.key}`);
  t.same(where, [
    'a.cedar:1:57: fine', // context.foo: unknown attribute
    'b.cedar:6:10: wrong-type', // Long == String
    'b.cedar:7:45: ', // resource.owner: unknown entity attribute (no @id: the location alone names it)
    'b.cedar:8:30: ', // unknown action (typo)
    'b.cedar:9:45: ', // optional attribute read without `has`
    'b.cedar:9:45: ',
  ]);
  t.match(err.errors[0]?.message, /attribute `foo`/);
  t.match(err.errors[1]?.message, /Long and String|String and Long/);
  t.match(err.errors[3]?.message, /unrecognized action/);
  t.match(err.errors[4]?.message, /optional attribute/);
  t.match(err.message, /b\.cedar:6:10: wrong-type: /);
});

t.test('validate() says "success" with validationErrors: still a load failure', async (t) => {
  const text = '@id("p") permit (principal, action, resource) when { context.hour == "noon" };';
  const raw = cedar.validate({ schema: firmaSchemaText({ actionClasses: CLASSES, bodyFields: DEFAULT_BODY_FIELDS }), policies: { staticPolicies: text } });
  t.equal(raw.type, 'success', 'cedar-wasm reports success…');
  t.ok(raw.type === 'success' && raw.validationErrors.length > 0, '…with validation errors');
  const err = loadError(t, { 'p.cedar': text });
  t.equal(err.errors.length, 1);
  t.equal(err.errors[0]?.key, 'p');
});

t.test('syntax errors: position in the file, all files reported', async (t) => {
  const err = loadError(t, {
    'a.cedar': '// ünïcödé 😀 comment before the error\npermit (principal, action, resource)\n  when { context.risk === "low" };\n',
    'b.cedar': '@id("x") permit (principal, action resource);',
    'c.cedar': 'permit (principal, action, resource);',
  });
  const where = err.errors.map((i) => `${path.basename(i.file)}:${i.line}:${i.col}: ${i.key}`);
  t.same(where, ['a.cedar:3:25: ', 'b.cedar:1:36: x']);
  t.match(err.errors[0]?.message, /unexpected token `=`/);
});

t.test('templates, duplicate ids and a missing folder are errors', async (t) => {
  const tpl = loadError(t, { 't.cedar': 'permit (principal == ?principal, action, resource);' });
  t.equal(tpl.errors[0]?.line, 1);
  const dup = loadError(t, { 'a.cedar': '@id("same") permit (principal, action, resource);', 'b.cedar': '\n@id("same") forbid (principal, action, resource);' });
  t.equal(dup.errors.length, 1);
  t.match(dup.errors[0], { line: 2, key: 'same', message: /duplicate policy id \(also .*a\.cedar:1\)/ });
  t.throws(() => PolicyEngine.load({ dir: path.join(t.testdir(), 'nope') }), { code: 'FIRMA_CONFIG_INVALID', message: /policy folder does not exist/ });
});

t.test('without actionClasses the named actions are declared (conditions still type-checked)', async (t) => {
  const engine = load(t, { 'p.cedar': 'permit (principal, action in Firma::Action::"x.*", resource);' }, { actionClasses: null });
  t.equal(engine.evaluate(input({ actionClass: 'x.y.z' })).verdict, 'allow');
  t.equal(engine.evaluate(input({ actionClass: 'xy' })).verdict, 'deny');
  t.throws(() => PolicyEngine.load({ dir: policyDir(t, { 'p.cedar': 'permit (principal, action, resource) when { context.nope };' }) }),
    { code: 'FIRMA_CONFIG_INVALID' });
});

t.test('action groups: prefix.* covers every class under it', async (t) => {
  t.same(actionGroupsOf('github.repo.delete'), ['github.repo.*', 'github.*']);
  t.same(actionGroupsOf('llm'), []);
  const engine = load(t, {
    'p.cedar': [
      '@id("gh") permit (principal, action in Firma::Action::"github.*", resource);',
      // `action` in a condition needs the action entity and its groups at request time
      '@id("cond") forbid (principal, action, resource) when { action in Firma::Action::"github.repo.*" && context.method == "DELETE" };',
    ].join('\n'),
  });
  t.equal(engine.evaluate(input({ actionClass: 'github.read', method: 'GET' })).verdict, 'allow');
  t.same(engine.evaluate(input({ actionClass: 'github.repo.delete', method: 'DELETE' })).policyIds, ['cond']);
  t.equal(engine.evaluate(input({ actionClass: 'slack.post' })).reason, 'no_permit');
});

t.test('action-count rule: at most 3 github.repo.delete per minute', async (t) => {
  const engine = load(t, {
    'default.cedar': DEFAULT_TEXT,
    'rate.cedar': '@id("delete-rate") forbid (principal, action == Firma::Action::"github.repo.delete", resource) when { context.count_minute_class >= 3 };',
  });
  const counters = new ActionCounters();
  const attempt = (agentId: string, nowMs: number): PolicyOutcome => {
    const counts = counters.counts(agentId, 'github.repo.delete', nowMs);
    const out = engine.evaluate(input({ agentId, actionClass: 'github.repo.delete', risk: 'medium', method: 'DELETE', nowMs, counts }));
    if (out.verdict === 'allow') counters.record(agentId, 'github.repo.delete', nowMs);
    return out;
  };
  const verdicts = [0, 1000, 2000, 3000, 4000].map((dt) => attempt('a', WED_10 + dt).verdict);
  t.same(verdicts, ['allow', 'allow', 'allow', 'deny', 'deny']);
  t.same(attempt('a', WED_10 + 4000).policyIds, ['delete-rate']);
  t.equal(attempt('b', WED_10 + 4000).verdict, 'allow', 'counts are per agent');
  // Other classes do not use up the class budget.
  counters.record('a', 'llm.chat', WED_10 + 5000);
  t.equal(attempt('a', WED_10 + 59_999).verdict, 'deny', 'still within the minute of the first delete');
  t.equal(attempt('a', WED_10 + 60_000).verdict, 'allow', 'the first delete left the window');
});

t.test('body rule: payments.refund with amount > 100 denied', async (t) => {
  const engine = load(t, {
    'p.cedar': [
      '@id("allow") permit (principal, action, resource);',
      '@id("refund-limit") forbid (principal, action == Firma::Action::"payments.refund", resource)',
      '  when { context has body && context.body has amount && context.body.amount > 100 };',
      '@id("currency") forbid (principal, action, resource) when { context has body && context.body has currency && context.body.currency != "usd" };',
    ].join('\n'),
  });
  const refund = (body: PolicyInput['body']): PolicyOutcome => engine.evaluate(input({ actionClass: 'payments.refund', risk: 'high', body }));
  t.same(refund({ amount: 101 }), { verdict: 'deny', reason: 'policy_deny', policyIds: ['refund-limit'] });
  t.same(refund({ amount: 100 }), { verdict: 'allow', reason: 'policy_allow', policyIds: ['allow'] });
  t.same(refund({ amount: 5000, currency: 'eur' }).policyIds, ['currency', 'refund-limit']);
  t.equal(refund({ amount: '250' }).verdict, 'deny', 'a decimal string counts as a Long');
  t.match(refund({ amount: 'lots' }), { verdict: 'deny', reason: 'policy_error', detail: /amount is not a Long/ });
  t.match(refund({ amount: 1.5 }), { verdict: 'deny', reason: 'policy_error' });
  t.equal(refund({ amount: null }).verdict, 'allow', 'null is absent');
  t.equal(refund({}).verdict, 'allow', 'field absent');
  t.equal(refund(null).verdict, 'allow', 'no body');
  t.equal(refund({ unrelated: 'x', amount: 3 }).verdict, 'allow', 'undeclared fields are ignored');
  // a body on another class only matters to rules that apply to it
  t.equal(engine.evaluate(input({ actionClass: 'payments.charge', body: { amount: 1_000_000 } })).verdict, 'allow');
});

t.test('body fields: undeclared ones are impossible (an error), extra typed ones and dotted names work', async (t) => {
  // Under a `has` guard an undeclared field validates but can never be true: a forbid that never fires.
  const typo = loadError(t, { 'p.cedar': '@id("typo") forbid (principal, action, resource) when { context has body && context.body has amont && context.body.amont > 100 };' });
  t.match(typo.errors, [{ line: 1, key: 'typo', message: /policy is impossible.*can never apply/ }]);
  const files = {
    'p.cedar': [
      '@id("live") permit (principal, action, resource) when { context has body && context.body has live && context.body.live };',
      '@id("gold") forbid (principal, action, resource) when { context has body && context.body has "metadata.tier" && context.body["metadata.tier"] == "gold" };',
    ].join('\n'),
  };
  t.throws(() => PolicyEngine.load({ dir: policyDir(t, files), actionClasses: CLASSES }), { code: 'FIRMA_CONFIG_INVALID' });
  const engine = PolicyEngine.load({ dir: policyDir(t, files), actionClasses: CLASSES, bodyFields: { live: 'Boolean', 'metadata.tier': 'String' } });
  t.teardown(() => engine.close());
  t.equal(engine.evaluate(input({ body: { live: true } })).verdict, 'allow');
  t.equal(engine.evaluate(input({ body: { live: false } })).verdict, 'deny');
  t.same(engine.evaluate(input({ body: { live: true, 'metadata.tier': 'gold' } })).policyIds, ['gold']);
  t.equal(engine.evaluate(input({ body: { live: 'yes' } })).reason, 'policy_error');
});

t.test('hour / weekday rule (UTC)', async (t) => {
  const engine = load(t, {
    'p.cedar': [
      '@id("allow") permit (principal, action, resource);',
      '@id("office-hours") forbid (principal, action in Firma::Action::"payments.*", resource)',
      '  when { context.weekday == 0 || context.weekday == 6 || context.hour < 8 || context.hour >= 18 };',
    ].join('\n'),
  });
  const at = (iso: string): string => engine.evaluate(input({ actionClass: 'payments.charge', nowMs: Date.parse(iso) })).verdict;
  t.equal(at('2025-01-08T10:00:00Z'), 'allow', 'Wednesday 10:00');
  t.equal(at('2025-01-08T07:59:59Z'), 'deny', 'Wednesday 07:59');
  t.equal(at('2025-01-08T18:00:00Z'), 'deny', 'Wednesday 18:00');
  t.equal(at('2025-01-11T10:00:00Z'), 'deny', 'Saturday');
  t.equal(at('2025-01-12T10:00:00Z'), 'deny', 'Sunday');
  t.equal(at('2025-01-13T08:00:00Z'), 'allow', 'Monday 08:00');
  t.equal(engine.evaluate(input({ nowMs: Date.parse('2025-01-12T03:00:00Z') })).verdict, 'allow', 'other classes unaffected');
});

t.test('evaluation errors fail closed with policy_error', async (t) => {
  const engine = load(t, {
    'p.cedar': '@id("allow") permit (principal, action, resource);\n@id("overflow") forbid (principal, action, resource) when { context.count_hour * 9223372036854775807 > 5 };',
  });
  t.same(engine.evaluate(input()), { verdict: 'allow', reason: 'policy_allow', policyIds: ['allow'] }, 'count 0: no overflow');
  t.match(engine.evaluate(input({ counts: { ...ZERO, hour: 2 } })), { verdict: 'deny', reason: 'policy_error', policyIds: ['overflow'], detail: /overflow/ });
  engine.close();
  t.match(engine.evaluate(input()), { verdict: 'deny', reason: 'policy_error', detail: /closed/ });
});

t.test('determinism: the same input 1,000 times gives the same outcome', async (t) => {
  const files = {
    'default.cedar': DEFAULT_TEXT,
    'rate.cedar': '@id("rate") forbid (principal, action, resource) when { context.count_minute >= 10 };',
  };
  for (const memoSize of [undefined, 0]) {
    const engine = load(t, files, memoSize === undefined ? {} : { memoSize });
    for (const inp of [input({ risk: 'low' }), input({ risk: 'high' }), input({ risk: 'critical' }), input({ counts: { ...ZERO, minute: 12 } })]) {
      const first = JSON.stringify(engine.evaluate(inp));
      let same = 0;
      for (let i = 0; i < 1000; i++) if (JSON.stringify(engine.evaluate(inp)) === first) same++;
      t.equal(same, 1000, `memoSize ${String(memoSize)}: ${first}`);
    }
  }
});

t.test('policyHash: stable, changes with a policy, not with comments or formatting', async (t) => {
  const files = { 'default.cedar': DEFAULT_TEXT };
  const a = load(t, files);
  const b = load(t, files);
  t.equal(a.policyHash, b.policyHash);
  const reformatted = load(t, { 'default.cedar': `// another comment\n${DEFAULT_TEXT.replace(/\n\n/g, '\n\n\n')}` });
  t.equal(reformatted.policyHash, a.policyHash);
  const changed = load(t, { 'default.cedar': DEFAULT_TEXT.replace('"critical"', '"high"') });
  t.not(changed.policyHash, a.policyHash);
  const renamed = load(t, { 'default.cedar': DEFAULT_TEXT.replace('default.deny-critical', 'deny-critical') });
  t.not(renamed.policyHash, a.policyHash);
  // same dir, file edited between loads
  const dir = policyDir(t, files);
  const h1 = PolicyEngine.load({ dir, actionClasses: CLASSES });
  fs.appendFileSync(path.join(dir, 'default.cedar'), '\nforbid (principal, action, resource) when { context.method == "TRACE" };\n');
  const h2 = PolicyEngine.load({ dir, actionClasses: CLASSES });
  t.not(h1.policyHash, h2.policyHash);
  h1.close();
  h2.close();
});

// The engine splits, rewrites and memoises; compare it against one plain Cedar call over the whole set
// with the full context, both entities and the schema, on random inputs.
t.test('equivalence with a single full Cedar call (random inputs)', async (t) => {
  const text = [
    '@id("allow") permit (principal, action, resource) when { context.risk == "low" || context.risk == "medium" };',
    '@id("approve") @approval permit (principal, action, resource) when { context.risk == "high" && context.method == "POST" };',
    '@id("crit") forbid (principal, action, resource) when { context.risk == "critical" };',
    '@id("big") forbid (principal, action in Firma::Action::"payments.*", resource) when { context.count_hour_class * 4611686018427387904 > 9007199254740993 };',
    '@id("rate") forbid (principal, action in Firma::Action::"github.*", resource) when { context.count_minute_class >= 3 };',
    '@id("global") forbid (principal, action, resource) when { context.count_minute > 7 || context.count_hour > 30 };',
    '@id("body") forbid (principal, action == Firma::Action::"payments.refund", resource) when { context has body && context.body has amount && context.body.amount > 100 };',
    '@id("time") forbid (principal, action in Firma::Action::"payments.*", resource) when { context.hour < 8 || context.weekday == 0 };',
    '@id("bot") forbid (principal == Firma::Agent::"bot", action, resource) unless { context.method == "GET" };',
    '@id("host") forbid (principal, action, resource) when { resource.host like "*.internal" };',
    '@id("vip") permit (principal == Firma::Agent::"vip", action, resource) when { context.risk == "critical" };',
    '@id("cond") @approval permit (principal, action, resource) when { action in Firma::Action::"payments.*" && context.path like "/v1/*" };',
    '@id("ctx") permit (principal, action, resource) when { context.host == "api.github.com" && context has body };',
    '@id("spend") forbid (principal, action == Firma::Action::"llm.chat", resource) when { context.llm_tokens_day > 1500 || context.llm_cost_hour.greaterThan(decimal("2.5")) };',
  ].join('\n');
  const schema = firmaSchemaText({ actionClasses: CLASSES, bodyFields: DEFAULT_BODY_FIELDS });
  // memo off, a tiny memo (constant eviction) and the default
  const engines = [load(t, { 'p.cedar': text }, { memoSize: 0 }), load(t, { 'p.cedar': text }, { memoSize: 16 }), load(t, { 'p.cedar': text })];
  const ids = (engines[0] as PolicyEngine).policyIds;
  const staticPolicies: Record<string, string> = {};
  const parts = cedar.policySetTextToParts(text);
  if (parts.type !== 'success') throw new Error('parts');
  for (const p of parts.policies) {
    const m = /@id\("([^"]+)"\)/.exec(p);
    staticPolicies[m?.[1] ?? ''] = p;
  }
  t.same(Object.keys(staticPolicies).sort(), ids);
  let seed = 7;
  const rand = (n: number): number => { // mulberry32
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) % n;
  };
  cedar.preparseSchema('test-schema', schema);
  t.same(cedar.preparsePolicySet('test-all', { staticPolicies }), { type: 'success' });
  const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)] as T;
  const approvals = new Set(['approve', 'cond']);
  let mismatches = 0;
  const seen = new Set<string>();
  for (let i = 0; i < 1500; i++) {
    const inp = input({
      agentId: pick(['a', 'bot', 'vip']),
      actionClass: pick(CLASSES),
      risk: pick(['low', 'medium', 'high', 'critical'] as const),
      method: pick(['GET', 'POST']),
      host: pick(['api.github.com', 'x.internal', 'api.stripe.com', 'api.openai.com']),
      path: pick(['/v1/refunds', '/repos/a/b']),
      nowMs: WED_10 + rand(7) * 86_400_000 + rand(24) * 3_600_000,
      counts: { minute: rand(9), hour: rand(33), minuteClass: rand(5), hourClass: rand(4) },
      body: pick<PolicyInput['body']>([null, { amount: 50 }, { amount: 500, currency: 'usd' }, {}]),
      llm: { minute: { tokens: 0, costUsd: 0 }, hour: { tokens: rand(900), costUsd: rand(300) / 100 }, day: { tokens: rand(2000), costUsd: rand(900) / 100 } },
    });
    const llm = inp.llm as NonNullable<PolicyInput['llm']>;
    const d = new Date(inp.nowMs);
    const context: Record<string, CedarValueJson> = {
      method: inp.method, path: inp.path, host: inp.host, risk: inp.risk, hour: d.getUTCHours(), weekday: d.getUTCDay(),
      count_minute: inp.counts.minute, count_hour: inp.counts.hour, count_minute_class: inp.counts.minuteClass, count_hour_class: inp.counts.hourClass,
      llm_tokens_hour: llm.hour.tokens, llm_tokens_day: llm.day.tokens,
      llm_cost_hour: { __extn: { fn: 'decimal', arg: llm.hour.costUsd.toFixed(4) } }, llm_cost_day: { __extn: { fn: 'decimal', arg: llm.day.costUsd.toFixed(4) } },
    };
    if (inp.body !== null) context.body = inp.body as Record<string, CedarValueJson>;
    const resource = { type: 'Firma::Resource', id: inp.host + inp.path };
    const entities: EntityJson[] = [{ uid: resource, attrs: { host: inp.host, path: inp.path }, parents: [] }];
    const answer = cedar.statefulIsAuthorized({
      principal: { type: 'Firma::Agent', id: inp.agentId }, action: { type: 'Firma::Action', id: inp.actionClass }, resource,
      context, preparsedSchemaName: 'test-schema', validateRequest: true, preparsedPolicySetId: 'test-all', entities,
    });
    if (answer.type !== 'success') throw new Error(JSON.stringify(answer.errors));
    const { decision, diagnostics } = answer.response;
    const reasons = [...diagnostics.reason].sort();
    const errored = diagnostics.errors.map((e) => e.policyId).sort();
    const expected: PolicyOutcome = decision === 'deny' && reasons.length > 0
      ? { verdict: 'deny', reason: 'policy_deny', policyIds: reasons }
      : errored.length > 0
        ? { verdict: 'deny', reason: 'policy_error', policyIds: errored }
        : decision === 'deny'
          ? { verdict: 'deny', reason: 'no_permit', policyIds: [] }
          : reasons.some((r) => approvals.has(r))
            ? { verdict: 'approval', reason: 'approval_required', policyIds: reasons.filter((r) => approvals.has(r)) }
            : { verdict: 'allow', reason: 'policy_allow', policyIds: reasons };
    seen.add(expected.reason);
    for (const engine of engines) {
      const got = engine.evaluate(inp);
      const gotCore = { verdict: got.verdict, reason: got.reason, policyIds: got.policyIds };
      if (JSON.stringify(gotCore) !== JSON.stringify(expected)) {
        mismatches++;
        if (mismatches < 5) t.same(gotCore, expected, JSON.stringify(inp));
      }
    }
  }
  t.equal(mismatches, 0);
  t.same([...seen].sort(), ['approval_required', 'no_permit', 'policy_allow', 'policy_deny', 'policy_error'], 'every outcome was exercised');
});

t.test('schema text parses and declares classes and groups', async (t) => {
  const text = firmaSchemaText({ actionClasses: ['a.b.c', 'a', 'llm.batch', 'llm.batch.read'], bodyFields: { 'x.y': 'String' } });
  t.same(cedar.checkParseSchema(text), { type: 'success' });
  t.match(text, /action "a\.b\.\*" in \["a\.\*"\];/);
  t.match(text, /action "llm\.batch\.read" in \["llm\.batch\.\*"\] appliesTo/);
  t.match(text, /"x\.y"\?: String,/);
  t.throws(() => firmaSchemaText({ actionClasses: ['bad"name'], bodyFields: {} }), { code: 'FIRMA_CONFIG_INVALID' });
});

t.test('ActionCounters: sliding windows, per class, eviction', async (t) => {
  const c = new ActionCounters();
  t.same(c.counts('nobody', 'x', WED_10), ZERO);
  t.equal(c.size, 0, 'asking does not create state');
  c.record('a', 'x', WED_10);
  c.record('a', 'x', WED_10 + 500);
  c.record('a', 'y', WED_10 + 30_000);
  t.same(c.counts('a', 'x', WED_10 + 30_000), { minute: 3, hour: 3, minuteClass: 2, hourClass: 2 });
  t.same(c.counts('a', 'y', WED_10 + 59_999), { minute: 3, hour: 3, minuteClass: 1, hourClass: 1 });
  t.same(c.counts('a', 'x', WED_10 + 60_000), { minute: 1, hour: 3, minuteClass: 0, hourClass: 2 }, 'the second-0 events left the minute');
  t.same(c.counts('a', 'x', WED_10 + 90_000), { minute: 0, hour: 3, minuteClass: 0, hourClass: 2 });
  t.same(c.counts('a', 'x', WED_10 + 3_600_000), { minute: 0, hour: 0, minuteClass: 0, hourClass: 0 }, 'an hour later (minute granularity)');
  t.same(c.counts('a', 'x', WED_10 + 10), { minute: 0, hour: 0, minuteClass: 0, hourClass: 0 }, 'time going backwards does not resurrect counts');
  // Many events in one second, then a jump of more than a window.
  for (let i = 0; i < 1000; i++) c.record('b', 'x', WED_10 + 7_200_000);
  t.same(c.counts('b', 'x', WED_10 + 7_200_999), { minute: 1000, hour: 1000, minuteClass: 1000, hourClass: 1000 });
  t.same(c.counts('b', 'x', WED_10 + 7_200_000 + 120_000).minute, 0);
  // Recording sweeps (at most once a minute) agents with nothing in the last hour.
  t.equal(c.size, 1, '"a" (idle for more than an hour) was dropped when "b" recorded');
  c.record('c', 'x', WED_10 + 7_200_000 + 3_000_000);
  t.equal(c.size, 2, '"b" is still within its hour');
  c.record('c', 'x', WED_10 + 7_200_000 + 3_700_000);
  t.equal(c.size, 1, '"b" dropped');
  t.same(c.counts('c', 'x', WED_10 + 7_200_000 + 3_700_000), { minute: 1, hour: 2, minuteClass: 1, hourClass: 2 });
});
