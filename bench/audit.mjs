// Audit writer: what `append` costs the event loop per event (the request's critical path), and how
// many events per second the writer sustains to disk (hash chain, Ed25519 signature, batched writes),
// for each `[audit] signatures` setting: "event" (each event signed) and "checkpoint" (the default).
// Usage: node bench/audit.mjs [events=20000] [per_tick=50] [signatures=event,checkpoint]
// On one pinned core (`taskset -c 1 node bench/audit.mjs`) the signer runs inline, on the event loop:
// "event loop busy" is then what the log costs a request's thread, signatures included. With more
// CPUs the signatures of "event" are made on a worker thread ("process CPU" still counts them).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditWriter } from '../dist/audit/writer.js';

const N = Number(process.argv[2] ?? 20_000);
const PER_TICK = Number(process.argv[3] ?? 50);
const MODES = (process.argv[4] ?? 'event,checkpoint').split(',');
const dir = mkdtempSync(join(tmpdir(), 'firma-audit-bench-'));
const body = (i) => ({
  type: 'decision', request_id: `req-${i}`, agent_id: 'agent-1', kind: 'request', method: 'POST', scheme: 'https',
  host: 'api.openai.com', port: 443, path: '/v1/chat/completions', action_class: 'llm.chat', risk: 'low',
  decision: 'allow', stage: 'policy', reason: 'allowed', rule: 'openai.chat', policy_ids: ['default.allow-low-medium'],
  policy_hash: 'bafcc38ec5dcd663320aa778d5da484582c62b9020ed0e8adbff6b237984fad2', token_id: null, would_deny: null, approval_id: null,
});

async function run(label, signatures) {
  const w = AuditWriter.open({ path: join(dir, `${label}.jsonl`), keyDir: join(dir, 'keys'), fsync: 'interval', maxFileBytes: 1 << 30, signatures });
  // warm up
  for (let i = 0; i < 500; i++) w.append(body(i));
  await w.flush();
  let appendNs = 0n;
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i += PER_TICK) {
    const a = process.hrtime.bigint();
    for (let j = 0; j < PER_TICK; j++) w.append(body(i + j));
    appendNs += process.hrtime.bigint() - a;
    await new Promise((r) => setImmediate(r));
  }
  await w.flush();
  const totalS = Number(process.hrtime.bigint() - t0) / 1e9;
  // Event-loop time spent while the N events were appended, signed (inline on one CPU) and written.
  const busyMs = performance.eventLoopUtilization(elu0).active;
  const cpu = process.cpuUsage(cpu0);
  await w.close();
  return { appendUs: Number(appendNs) / 1e3 / N, busyUs: (busyMs * 1e3) / N, cpuUs: (cpu.user + cpu.system) / N, eventsPerS: N / totalS };
}

const { availableParallelism } = await import('node:os');
console.log(`audit writer, ${N} events, ${PER_TICK} per tick, ${availableParallelism()} CPU(s) (signer ${availableParallelism() > 1 ? 'on a worker' : 'inline'}), best of 3:`);
for (const mode of MODES) {
  const rounds = [];
  for (let r = 0; r < 3; r++) rounds.push(await run(`${mode}-r${r}`, mode));
  const best = (k, f) => f(...rounds.map((x) => x[k]));
  console.log(`signatures = "${mode}":`);
  console.log(`  append() on the event loop: ${best('appendUs', Math.min).toFixed(1)} µs/event`);
  console.log(`  event loop busy:            ${best('busyUs', Math.min).toFixed(1)} µs/event (append, signing when inline, writing)`);
  console.log(`  process CPU:                ${best('cpuUs', Math.min).toFixed(1)} µs/event (all threads)`);
  console.log(`  sustained to disk:          ${Math.round(best('eventsPerS', Math.max))} events/s`);
}
rmSync(dir, { recursive: true, force: true });
