#!/usr/bin/env node
// The whole decision path, as the interceptor calls it: classify (77 shipped mapping rules) → stage 1
// (capability, cached after first use) → stage 2 (Cedar, 20 policies: the defaults + bench/enforce-policy's
// 17 site rules). Reports p50/p99 µs of classify+decide over a realistic request mix.
//   npx tsc -p tsconfig.json && node bench/enforce.mjs [--n 20000]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { MappingTable } from '../dist/normalize/mapping.js';
import { PolicyEngine } from '../dist/enforce/policy/engine.js';
import { ActionCounters } from '../dist/enforce/counters.js';
import { CapabilityVerifier } from '../dist/enforce/capability/verifier.js';
import { issueToken } from '../dist/enforce/capability/tokens.js';
import { Enforcer } from '../dist/enforce/enforcer.js';
import { normalize } from '../dist/normalize/normalize.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const { values: args } = parseArgs({ options: { n: { type: 'string', default: '20000' } } });
const N = Number(args.n);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'firma-bench-enforce-'));
fs.mkdirSync(path.join(dir, 'policies'));
fs.copyFileSync(path.join(ROOT, 'policies', 'default.cedar'), path.join(dir, 'policies', 'default.cedar'));
const site = fs.readFileSync(path.join(ROOT, 'bench', 'enforce-policy.mjs'), 'utf8').match(/const EXTRA = String\.raw`([\s\S]*?)`;/)?.[1];
if (site === undefined) throw new Error('bench/enforce-policy.mjs: EXTRA policies not found');
fs.writeFileSync(path.join(dir, 'policies', 'site.cedar'), site);

const mapping = MappingTable.load([path.join(ROOT, 'mappings', '*.toml')]);
const policy = PolicyEngine.load({ dir: path.join(dir, 'policies'), actionClasses: mapping.actionClasses });
const keys = { signingKeyFile: path.join(dir, 'keys', 'cap.key'), publicKeyFile: path.join(dir, 'keys', 'cap.pub') };
// 200 agents, one token per agent and host (a token's scope is one host): the fleet stays under the
// site policies' rate limits, so the run measures allows as well as denies.
const AGENTS = 200;
const HOSTS = ['api.openai.com', 'api.anthropic.com', 'api.github.com', 'api.stripe.com', 'slack.com'];
const tokens = new Map();
for (let a = 0; a < AGENTS; a++) {
  for (const host of HOSTS) {
    const { token } = await issueToken({ ...keys, agent: `agent-${a}`, actions: ['*'], scope: host, ttlMs: 3_600_000 });
    tokens.set(`agent-${a} ${host}`, token);
  }
}
const verifier = CapabilityVerifier.create({ publicKeyFile: keys.publicKeyFile, revocationFile: path.join(dir, 'keys', 'revoked.txt') });
const enforcer = new Enforcer({
  mode: 'enforce',
  defaultProtected: true,
  coversHost: (host) => mapping.coversHost(host),
  capabilities: verifier,
  selfToken: null,
  policy,
  counters: new ActionCounters(),
  onError: (err) => console.error(err),
});

const MIX = [
  [55, 'POST', 'api.openai.com', '/v1/chat/completions'],
  [10, 'POST', 'api.anthropic.com', '/v1/messages'],
  [8, 'POST', 'api.openai.com', '/v1/embeddings'],
  [10, 'GET', 'api.github.com', '/repos/acme/app/pulls/12'],
  [5, 'POST', 'api.github.com', '/repos/acme/app/issues/3/comments'],
  [5, 'GET', 'api.stripe.com', '/v1/charges/ch_123'],
  [4, 'POST', 'slack.com', '/api/chat.postMessage'],
  [3, 'DELETE', 'api.github.com', '/repos/acme/app'],
];
const weights = MIX.flatMap(([w, ...req]) => Array.from({ length: w }, () => req));
const target = (host) => ({ scheme: 'https', host, kind: 'dns', port: 443 });

function once(i) {
  const [method, host, p] = weights[i % weights.length];
  const agentId = `agent-${i % AGENTS}`;
  const identity = { agentId, token: tokens.get(`${agentId} ${host}`), source: 'proxy-authorization' };
  const raw = { requestId: String(i), kind: 'request', identity, method, target: target(host), pathAndQuery: p };
  return enforcer.decide(normalize(raw, mapping), identity);
}

// Warm: first use verifies the token (~0.4 ms), later ones hit the cache.
for (let i = 0; i < AGENTS * weights.length; i++) await once(i);
const samples = new Float64Array(N);
const verdicts = {};
for (let i = 0; i < N; i++) {
  const t0 = performance.now();
  const d = await once(i);
  samples[i] = (performance.now() - t0) * 1000;
  const k = d.verdict === 'allow' ? 'allow' : `${d.stage}:${d.reason}`;
  verdicts[k] = (verdicts[k] ?? 0) + 1;
}
samples.sort();
const q = (p) => samples[Math.min(N - 1, Math.floor(p * N))].toFixed(1);
console.log(`| enforce() (classify + stage 1 + stage 2) | ${mapping.ruleCount} rules, ${policy.policyIds.length} policies | p50 ${q(0.5)} µs | p90 ${q(0.9)} µs | p99 ${q(0.99)} µs | n=${N} |`);
console.log(`verdicts: ${JSON.stringify(verdicts)}`);
verifier.close();
