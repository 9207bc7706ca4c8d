#!/usr/bin/env node
// Stage 2 (Cedar) latency: p50/p99 of PolicyEngine.evaluate with 20 realistic policies over a realistic
// request mix, then a breakdown of where a cedar-wasm call spends its time.
//   npx tsc -p tsconfig.json && node bench/enforce-policy.mjs [--n 20000] [--no-breakdown]
// Runs against dist/. Figures move 10-20 % between runs on a shared box; compare within one run.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { PolicyEngine } from '../dist/enforce/policy/engine.js';
import { ActionCounters } from '../dist/enforce/counters.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const { values: args } = parseArgs({
  options: { n: { type: 'string', default: '20000' }, 'no-breakdown': { type: 'boolean', default: false } },
});
const N = Number(args.n);

// Every action class the shipped mapping packs produce (what the sidecar passes to PolicyEngine.load).
const classes = new Set();
for (const f of fs.readdirSync(path.join(ROOT, 'mappings'))) {
  if (!f.endsWith('.toml')) continue;
  for (const m of fs.readFileSync(path.join(ROOT, 'mappings', f), 'utf8').matchAll(/^action_class\s*=\s*"([^"]+)"/gm)) classes.add(m[1]);
}
const actionClasses = [...classes].sort();

// 20 policies: the shipped defaults (3) + 17 typical site rules.
const EXTRA = String.raw`
@id("rate.repo-delete") forbid (principal, action == Firma::Action::"github.repo.delete", resource) when { context.count_minute_class >= 3 };
@id("rate.global-minute") forbid (principal, action, resource) when { context.count_minute >= 600 };
@id("rate.global-hour") forbid (principal, action, resource) when { context.count_hour >= 10000 };
@id("rate.llm") forbid (principal, action in Firma::Action::"llm.*", resource) when { context.count_minute_class >= 300 };
@id("rate.slack-post") forbid (principal, action == Firma::Action::"slack.post", resource) when { context.count_hour_class >= 200 };
@id("rate.refunds-hour") forbid (principal, action == Firma::Action::"payments.refund", resource) when { context.count_hour_class >= 20 };
@id("body.refund-limit") forbid (principal, action == Firma::Action::"payments.refund", resource) when { context has body && context.body has amount && context.body.amount > 10000 };
@id("body.charge-currency") forbid (principal, action == Firma::Action::"payments.charge", resource) when { context has body && context.body has currency && context.body.currency != "usd" };
@id("time.payments-office-hours") forbid (principal, action in Firma::Action::"payments.*", resource) when { context.weekday == 0 || context.weekday == 6 || context.hour < 6 || context.hour >= 22 };
@id("time.no-weekend-merge") forbid (principal, action == Firma::Action::"github.pr.merge", resource) when { context.weekday == 0 || context.weekday == 6 };
@id("agent.report-bot-read-only") forbid (principal == Firma::Agent::"report-bot", action, resource) unless { context.method == "GET" || context.method == "HEAD" };
@id("agent.blocked") forbid (principal == Firma::Agent::"quarantined", action, resource);
@id("host.no-internal") forbid (principal, action, resource) when { resource.host like "*.internal.example.com" };
@id("path.secret-org") forbid (principal, action in Firma::Action::"github.*", resource) when { context.path like "/repos/secret-org/*" };
@id("allow.embeddings") permit (principal, action == Firma::Action::"llm.embed", resource);
@id("allow.pr-create-ci") permit (principal == Firma::Agent::"ci-bot", action == Firma::Action::"github.pr.create", resource);
@id("method.no-trace") forbid (principal, action, resource) when { context.method == "TRACE" };
`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'firma-bench-policy-'));
fs.copyFileSync(path.join(ROOT, 'policies', 'default.cedar'), path.join(dir, 'default.cedar'));
fs.writeFileSync(path.join(dir, 'site.cedar'), EXTRA);

const t0 = performance.now();
const engine = PolicyEngine.load({ dir, actionClasses });
const loadMs = performance.now() - t0;

// Request mix (weights ≈ an agent fleet dominated by LLM calls).
const MIX = [
  [55, { actionClass: 'llm.chat', risk: 'low', method: 'POST', host: 'api.openai.com', path: '/v1/chat/completions' }],
  [8, { actionClass: 'llm.embed', risk: 'low', method: 'POST', host: 'api.openai.com', path: '/v1/embeddings' }],
  [12, { actionClass: 'github.read', risk: 'low', method: 'GET', host: 'api.github.com', path: '/repos/acme/app/pulls' }],
  [5, { actionClass: 'github.issue.create', risk: 'medium', method: 'POST', host: 'api.github.com', path: '/repos/acme/app/issues' }],
  [2, { actionClass: 'github.pr.merge', risk: 'high', method: 'PUT', host: 'api.github.com', path: '/repos/acme/app/pulls/7/merge' }],
  [1, { actionClass: 'github.repo.delete', risk: 'critical', method: 'DELETE', host: 'api.github.com', path: '/repos/acme/old' }],
  [8, { actionClass: 'slack.post', risk: 'medium', method: 'POST', host: 'slack.com', path: '/api/chat.postMessage' }],
  [5, { actionClass: 'payments.read', risk: 'low', method: 'GET', host: 'api.stripe.com', path: '/v1/charges' }],
  [2, { actionClass: 'payments.refund', risk: 'high', method: 'POST', host: 'api.stripe.com', path: '/v1/refunds', body: { amount: 2500, currency: 'usd' } }],
  [2, { actionClass: 'payments.charge', risk: 'high', method: 'POST', host: 'api.stripe.com', path: '/v1/charges', body: { amount: 900, currency: 'eur' } }],
];
const AGENTS = ['agent-1', 'agent-2', 'agent-3', 'ci-bot', 'report-bot'];
const pool = [];
for (const [w, req] of MIX) for (let i = 0; i < w; i++) pool.push(req);

const start = Date.UTC(2025, 0, 8, 9, 0, 0); // a Wednesday morning
let rng = 12345;
const rand = (n) => ((rng = (rng * 1103515245 + 12345) & 0x7fffffff) % n);
function input(i, counters) {
  const req = pool[rand(pool.length)];
  const agentId = AGENTS[rand(AGENTS.length)];
  const nowMs = start + i * 50; // 20 req/s over 5 agents
  return { agentId, actionClass: req.actionClass, risk: req.risk, method: req.method, host: req.host, path: req.path,
    nowMs, counts: counters.counts(agentId, req.actionClass, nowMs), body: req.body ?? null };
}

function percentiles(samples) {
  samples.sort((a, b) => a - b);
  const at = (q) => samples[Math.min(samples.length - 1, Math.floor(samples.length * q))];
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99) };
}
const fmt = (us) => `${us.toFixed(1).padStart(7)} µs`;
function line(name, { p50, p90, p99 }) {
  console.log(`${name.padEnd(62)} p50 ${fmt(p50)}   p90 ${fmt(p90)}   p99 ${fmt(p99)}`);
}
function time(name, fn, n = N) {
  for (let i = 0; i < Math.min(2000, n); i++) fn(i);
  const samples = new Array(n);
  for (let i = 0; i < n; i++) {
    const s = process.hrtime.bigint();
    fn(i);
    samples[i] = Number(process.hrtime.bigint() - s) / 1000;
  }
  const p = percentiles(samples);
  line(name, p);
  return p;
}

console.log(`cedar ${cedar.getCedarVersion()}, node ${process.version}, ${os.cpus().length} CPUs, load avg ${os.loadavg()[0].toFixed(2)}`);
console.log(`${engine.policyIds.length} policies, ${actionClasses.length} action classes; load (parse + validate + pre-parse every class) ${loadMs.toFixed(0)} ms`);

// ---------------------------------------------------------------------------------------- headline
// Counts come from ActionCounters at decision time (as in the pipeline), outside the timed region;
// allowed requests are recorded, so count rules see real, changing numbers.
function mixRun(name, eng) {
  const counters = new ActionCounters();
  const verdicts = {};
  rng = 12345;
  const samples = [];
  for (let i = 0; i < N + 2000; i++) {
    const inp = input(i, counters);
    const s = process.hrtime.bigint();
    const out = eng.evaluate(inp);
    const us = Number(process.hrtime.bigint() - s) / 1000;
    if (i >= 2000) samples.push(us);
    verdicts[out.reason] = (verdicts[out.reason] ?? 0) + 1;
    if (out.verdict === 'allow') counters.record(inp.agentId, inp.actionClass, inp.nowMs);
  }
  const slow = samples.filter((us) => us > 15).length / samples.length;
  const p = percentiles(samples);
  line(name, p);
  console.log(`  outcomes: ${Object.entries(verdicts).map(([r, c]) => `${r} ${c}`).join(', ')}; calls > 15 µs (a Cedar call, i.e. a memo miss): ${(slow * 100).toFixed(1)} %`);
  return { p, verdicts };
}
const head = mixRun('evaluate(): realistic mix, 20 policies (memo on, default)', engine);
console.log(`  target p50 <= 50 µs: ${head.p.p50 <= 50 ? 'met' : 'NOT met'}`);
const noMemo = PolicyEngine.load({ dir, actionClasses, memoSize: 0 });
const cold = mixRun('evaluate(): same mix, memoSize 0 (one Cedar call per request)', noMemo);
noMemo.close();
console.log(`  same outcomes with and without memo: ${JSON.stringify(head.verdicts) === JSON.stringify(cold.verdicts)}`);

if (!args['no-breakdown']) {
  // -------------------------------------------------------------------------------------- breakdown
  console.log('\nper action class (evaluate, fixed input):');
  for (const [, req] of MIX.slice(0, 10)) {
    const inp = { ...input(0, new ActionCounters()), ...req, body: req.body ?? null };
    time(`  ${req.actionClass} (${req.risk})`, () => engine.evaluate(inp), Math.min(N, 10000));
  }

  console.log('\nraw cedar-wasm calls (same 20 policies), to see where the time goes:');
  const P = { type: 'Firma::Agent', id: 'agent-1' };
  const A = { type: 'Firma::Action', id: 'llm.chat' };
  const R = { type: 'Firma::Resource', id: 'api.openai.com/v1/chat/completions' };
  const fullCtx = { method: 'POST', path: '/v1/chat/completions', host: 'api.openai.com', risk: 'low', hour: 9, weekday: 3,
    count_minute: 12, count_hour: 340, count_minute_class: 8, count_hour_class: 210 };
  const ents = [{ uid: R, attrs: { host: 'api.openai.com', path: '/v1/chat/completions' }, parents: [] },
    { uid: A, attrs: {}, parents: [{ type: 'Firma::Action', id: 'llm.*' }] }];
  const allText = fs.readFileSync(path.join(dir, 'default.cedar'), 'utf8') + EXTRA;
  const one = 'permit (principal, action, resource) when { context.risk == "low" };';
  cedar.preparseSchema('bench-schema', engine.schemaText);
  cedar.preparsePolicySet('bench-20', { staticPolicies: allText });
  cedar.preparsePolicySet('bench-1', { staticPolicies: one });
  cedar.preparsePolicySet('bench-0', { staticPolicies: {} });
  const call = (pset, extra = {}, context = fullCtx, entities = ents) => () =>
    cedar.statefulIsAuthorized({ principal: P, action: A, resource: R, context, preparsedPolicySetId: pset, entities, ...extra });
  const n = Math.min(N, 10000);
  time('  isAuthorized, policies + schema re-parsed every call', () => cedar.isAuthorized({ principal: P, action: A, resource: R,
    context: fullCtx, schema: engine.schemaText, validateRequest: true, policies: { staticPolicies: allText }, entities: ents }), Math.min(n, 1000));
  time('  pre-parsed 20, schema + validateRequest, full ctx, 2 entities', call('bench-20', { preparsedSchemaName: 'bench-schema', validateRequest: true }), n);
  time('  pre-parsed 20, no schema, full ctx, 2 entities', call('bench-20'), n);
  time('  pre-parsed 20, no schema, full ctx, no entities*', call('bench-20', {}, fullCtx, []), n);
  time('  pre-parsed 1, no schema, full ctx, no entities', call('bench-1', {}, fullCtx, []), n);
  time('  pre-parsed 1, no schema, { risk } only, no entities', call('bench-1', {}, { risk: 'low' }, []), n);
  time('  pre-parsed 0, no schema, empty ctx, no entities (call floor)', call('bench-0', {}, {}, []), n);
  time('  pre-parsed 0, no schema, full ctx (context conversion)', call('bench-0', {}, fullCtx, []), n);
  time('  pre-parsed 0, no schema, empty ctx, 2 entities (entities)', call('bench-0', {}, {}, ents), n);
  console.log('  * without the action entity `action in "llm.*"` cannot match: shown for cost only.');
}
engine.close();
fs.rmSync(dir, { recursive: true, force: true });
