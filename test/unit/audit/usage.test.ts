/**
 * LLM usage read back from audit files (docs/llm.md "firma usage"): rotated files included,
 * lines that do not parse skipped; `firma usage` totals with --since, --by and --agent; the budget
 * ledger rebuilt from today's events; `firma audit tail` showing tokens and cost.
 */
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditFileSet } from '../../../src/audit/files.js';
import { readUsageRecords, usageText } from '../../../src/audit/usage-records.js';
import { formatEventLine, formatRequestLine } from '../../../src/audit/tail.js';
import type { AuditEvent, DecisionEvent, OutcomeEvent } from '../../../src/audit/events.js';
import { MemoryLedger } from '../../../src/enforce/budget/memory.js';
import { sinceMs, usageTable, usageTotals } from '../../../src/cli/commands/usage.js';
import { runFirma } from '../../helpers/clients.js';

let seq = 0;
function outcome(agent: string, ts: string, usage: Record<string, unknown> | null | undefined): string {
  const e: Record<string, unknown> = {
    v: 1, seq: ++seq, ts, type: 'outcome', request_id: `req-${seq}`, agent_id: agent, status: 200, error: null, error_code: null,
    response_hash: null, bytes_in: 10, bytes_out: 20, duration_ms: 5, credential_injected: false, approval_id: null, prev_hash: 'x', hash: 'y',
  };
  if (usage !== undefined) e.usage = usage;
  return JSON.stringify(e);
}
const u = (model: string | null, input: number, output: number, cost: number | null, estimated = false) => ({
  model, input_tokens: input, output_tokens: output, cached_input_tokens: 0, cache_write_tokens: 0, cost_usd: cost, estimated,
});

/** A log: two rotated files and the live one, with noise, non-LLM outcomes and a torn line. */
function writeLog(now: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'firma-usage-'));
  const iso = (agoMs: number) => new Date(now - agoMs).toISOString();
  writeFileSync(join(dir, 'audit.jsonl.1'), [
    outcome('agent-a', iso(3 * 86_400_000), u('gpt-4o', 5000, 500, 0.5)),
    outcome('agent-a', iso(2 * 3_600_000), u('gpt-4o', 1000, 100, 0.01)),
  ].join('\n') + '\n');
  writeFileSync(join(dir, 'audit.jsonl.2'), [
    '{"v":1,"type":"decision","usage":{"not":"an outcome"}}',
    outcome('agent-b', iso(3_600_000), u('claude-sonnet-4-5', 200, 50, null, true)),
    'not json at all "usage":{',
  ].join('\n') + '\n');
  writeFileSync(join(dir, 'audit.jsonl'), [
    outcome('agent-a', iso(60_000), u('gpt-4o-mini', 300, 30, 0.002)),
    outcome('agent-a', iso(30_000), null),
    outcome('agent-c', iso(20_000), undefined),
    outcome('agent-b', iso(10_000), u('claude-sonnet-4-5', 100, 10, 0.003)),
    '{"v":1,"seq":99,"ts":"', // torn
  ].join('\n'));
  return dir;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

const NOW = Date.parse('2026-03-02T12:30:00Z');

t.test('outcome usage from every file of the log, in chain order; lines that do not parse skipped', async (t) => {
  const dir = writeLog(NOW);
  const records = await collect(readUsageRecords(auditFileSet(dir)));
  t.same(records.map((r) => `${r.agentId} ${r.usage.model} ${r.usage.inputTokens}`), [
    'agent-a gpt-4o 5000', 'agent-a gpt-4o 1000', 'agent-b claude-sonnet-4-5 200', 'agent-a gpt-4o-mini 300', 'agent-b claude-sonnet-4-5 100',
  ], 'null and absent usage count nothing');
  t.same(records[2]?.usage, { model: 'claude-sonnet-4-5', inputTokens: 200, outputTokens: 50, cachedInputTokens: 0, cacheWriteTokens: 0, costUsd: null, estimated: true });
  t.equal((await collect(readUsageRecords(auditFileSet(dir), NOW - 86_400_000))).length, 4, 'sinceMs skips older events');
  t.same(await collect(readUsageRecords([join(dir, 'missing.jsonl')])), [], 'a file that is not there gives nothing');
});

t.test('the ledger rebuilt from the audit log holds today\'s totals', async (t) => {
  const dir = writeLog(NOW);
  const ledger = new MemoryLedger();
  t.equal(await ledger.rebuild(readUsageRecords(auditFileSet(dir)), NOW), 4, 'the call three days ago is not today\'s');
  t.same(ledger.totals('agent-a', NOW).day, { tokens: 1100 + 330, costUsd: 0.012 });
  t.same(ledger.totals('agent-a', NOW).hour, { tokens: 330, costUsd: 0.002 });
  t.same(ledger.totals('agent-b', NOW).day, { tokens: 250 + 110, costUsd: 0.003 });
});

t.test('usage totals by agent or model, --agent, --since', async (t) => {
  const dir = writeLog(NOW);
  const files = auditFileSet(dir);
  const byAgent = await usageTotals(readUsageRecords(files, sinceMs('24h', NOW) as number), 'agent', undefined);
  t.same(byAgent.map((r) => [r.key, r.calls, r.input, r.output, Number(r.costUsd.toFixed(6)), r.unpriced, r.estimated]), [
    ['agent-a', 2, 1300, 130, 0.012, 0, 0],
    ['agent-b', 2, 300, 60, 0.003, 1, 1],
  ]);
  const byModel = await usageTotals(readUsageRecords(files, sinceMs('7d', NOW) as number), 'model', 'agent-a');
  t.same(byModel.map((r) => [r.key, r.calls, r.input]), [['gpt-4o', 2, 6000], ['gpt-4o-mini', 1, 300]]);
  t.equal(sinceMs('90m', NOW), NOW - 5_400_000);
  t.equal(sinceMs('2026-03-01', NOW), Date.parse('2026-03-01'));
  t.equal(sinceMs('yesterday', NOW), null);
  t.equal(usageTable(byAgent, 'agent'), [
    'AGENT    CALLS  INPUT  OUTPUT  COST_USD  UNPRICED  ESTIMATED',
    'agent-a      2  1,300     130   $0.0120         0          0',
    'agent-b      2    300      60   $0.0030         1          1',
    'total        4  1,600     190   $0.0150         1          1',
    '',
  ].join('\n'));
  t.equal(usageTable([], 'model'), 'no LLM usage in the audit log for this selection\n');
});

t.test('firma usage on audit files (the built CLI)', async (t) => {
  const dir = writeLog(Date.now());
  const r = await runFirma(['usage', '--by', 'model', '--since', '7d', dir], dir);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^MODEL\s+CALLS\s+INPUT\s+OUTPUT\s+COST_USD\s+UNPRICED\s+ESTIMATED\n/);
  t.match(r.stdout, /\ngpt-4o\s+2\s+6,000\s+600\s+\$0\.5100\s+0\s+0\n/);
  t.match(r.stdout, /\ntotal\s+5\s+/);
  const one = await runFirma(['usage', '--agent', 'agent-b', join(dir, 'audit.jsonl')], dir);
  t.match(one.stdout, /\nagent-b\s+2\s+300\s+60\s+\$0\.0030\s+1\s+1\n/, 'a base path expands to its rotated files');
  const bad = await runFirma(['usage', '--by', 'host', dir], dir);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--by is "agent" or "model"/);
});

t.test('firma audit tail shows an LLM call\'s tokens and cost', async (t) => {
  const o = JSON.parse(outcome('agent-a', '2026-03-02T12:00:00.000Z', u('gpt-4o', 1200, 340, 0.0123, true))) as OutcomeEvent;
  t.equal(usageText(o), '  llm gpt-4o in=1200 out=~340 $0.0123');
  t.match(formatEventLine(o as AuditEvent), /200 {2}in=10B out=20B {2}5ms {2}llm gpt-4o in=1200 out=~340 \$0\.0123 {2}req=req-\d+$/);
  const plain = JSON.parse(outcome('agent-a', '2026-03-02T12:00:00.000Z', null)) as OutcomeEvent;
  t.equal(usageText(plain), '', 'no usage, nothing added');
  const d = {
    v: 1, seq: 1, ts: '2026-03-02T12:00:00.000Z', type: 'decision', request_id: o.request_id, agent_id: 'agent-a', kind: 'request', method: 'POST',
    scheme: 'https', host: 'api.openai.com', port: 443, path: '/v1/chat/completions', action_class: 'llm.chat', risk: 'medium', decision: 'allow',
    stage: 'policy', reason: 'allowed', rule: null, policy_ids: [], policy_hash: null, token_id: null, would_deny: null, approval_id: null, mcp: null,
    prev_hash: 'x', hash: 'y',
  } as unknown as DecisionEvent;
  t.match(formatRequestLine(d, o), /→ 200 {2}in=10B out=20B {2}5ms {2}llm gpt-4o in=1200 out=~340 \$0\.0123 {2}req=/);
  t.equal(usageText({ usage: u(null, 5, 1, null) }), '  llm - in=5 out=1 no price');
});
