#!/usr/bin/env node
// What the metrics cost per request, in isolation (no sockets): the calls one dispatched request makes
// (decision, rate-limit grant, outcome with a duration observe) on src/admin/metrics.ts, against the same
// counts made with prom-client's bound children (`counter.labels(...).inc()`), which hash the label set
// on every call. Run after `npm run build`:  node bench/metrics.mjs
import { performance } from 'node:perf_hooks';
import { Counter, Histogram, Registry } from 'prom-client';
import { Metrics } from '../dist/admin/metrics.js';

const N = 2_000_000;
const target = { scheme: 'https', host: 'api.openai.com', kind: 'dns', port: 443 };
const hostKey = { host: 'api.openai.com', port: null, text: 'api.openai.com' };

function time(label, fn) {
  for (let i = 0; i < 200_000; i++) fn(i); // warm-up (JIT)
  const t0 = performance.now();
  for (let i = 0; i < N; i++) fn(i);
  const ns = ((performance.now() - t0) * 1e6) / N;
  console.log(`${label.padEnd(58)} ${ns.toFixed(0).padStart(5)} ns/request`);
  return ns;
}

const m = new Metrics({ hosts: [{ host: hostKey, rps: 100 }], defaultMetrics: false });
const ours = time('Metrics: decision + rate-limit grant + outcome (+ observe)', (i) => {
  m.decision('allow', 'policy', 'allowed');
  m.rateLimitGranted('api.openai.com', 0);
  m.outcome('request', target, 200, null, 40 + (i & 63));
});
time('Metrics: decision + outcome (unlimited host)', (i) => {
  m.decision('allow', 'policy', 'allowed');
  m.outcome('request', target, 200, null, 40 + (i & 63));
});

const r = new Registry();
const requests = new Counter({ name: 'r', help: 'h', labelNames: ['decision', 'stage', 'reason'], registers: [r] });
const responses = new Counter({ name: 'u', help: 'h', labelNames: ['host', 'class'], registers: [r] });
const wait = new Histogram({ name: 'w', help: 'h', labelNames: ['host'], registers: [r] });
const duration = new Histogram({ name: 'd', help: 'h', registers: [r] });
const allowed = requests.labels('allow', 'policy', 'allowed');
const ok = responses.labels('api.openai.com', '2xx');
const waitChild = wait.labels('api.openai.com');
const theirs = time('prom-client bound children, same four counts', (i) => {
  allowed.inc();
  waitChild.observe(0);
  ok.inc();
  duration.observe((40 + (i & 63)) / 1000);
});
console.log(`(${(theirs / ours).toFixed(1)}× cheaper; a scrape renders ${(await m.render()).length} bytes)`);
