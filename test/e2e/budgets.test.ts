/**
 * Budgets through a running sidecar (docs/llm.md "Budgets"): without Redis, the day's usage is
 * rebuilt from the audit log at start, so an agent that spent its budget before a restart is refused
 * (429 budget_exceeded, Retry-After, a rate-limit error the SDKs read) on its next LLM call; a host that
 * is no LLM API is not affected.
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditWriter } from '../../src/audit/writer.js';
import type { AuditEventBody } from '../../src/audit/events.js';
import { curl } from '../helpers/clients.js';
import { startTestSidecar } from '../helpers/sidecar.js';
import { useUpstream } from '../helpers/upstream.js';

const up = useUpstream(t);

function llmOutcome(i: number, agent: string, input: number, output: number): AuditEventBody {
  return {
    type: 'outcome', request_id: `old-${i}`, agent_id: agent, status: 200, error: null, error_code: null, response_hash: null,
    bytes_in: 10, bytes_out: 20, duration_ms: 5, credential_injected: false, approval_id: null,
    usage: { model: 'gpt-4o', input_tokens: input, output_tokens: output, cached_input_tokens: 0, cache_write_tokens: 0, cost_usd: 0.01, estimated: false },
  } as unknown as AuditEventBody;
}

t.test('a restart keeps the day\'s usage: the next LLM call over budget is refused with 429 and Retry-After', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firma-budget-audit-'));
  const path = join(dir, 'audit', 'audit.jsonl');
  const keyDir = join(dir, 'keys');
  // What a previous run recorded today: 900 + 200 tokens for local-agent, some for another agent.
  const w = AuditWriter.open({ path, keyDir, fsync: 'never', maxFileBytes: 1 << 30, signatures: 'checkpoint' });
  w.append(llmOutcome(1, 'local-agent', 800, 100));
  w.append(llmOutcome(2, 'other-agent', 5000, 5000));
  w.append(llmOutcome(3, 'local-agent', 150, 50));
  await w.close();

  const sc = await startTestSidecar(`
[audit]
path = "${path}"
key_dir = "${keyDir}"

[[llm.hosts]]
host = "127.0.0.1:${up.port}"
format = "openai"

[[budgets]]
agent = "*"
window = "day"
max_tokens = 1000
`);
  t.teardown(() => sc.stop());
  const r = await curl(['-x', sc.proxyUrl, '-X', 'POST', '-d', '{"model":"gpt-4o"}', `http://127.0.0.1:${up.port}/v1/chat/completions`]);
  t.equal(r.status, 429, r.body);
  const body = JSON.parse(r.body) as { stage: string; reason: string; message: string; error: { type: string; code: string } };
  t.match(body, { stage: 'budget', reason: 'budget_exceeded', error: { type: 'rate_limit_error', code: 'budget_exceeded' } });
  t.match(body.message, /^agent local-agent has used 1,100 of 1,000 tokens this day \(budget firma\.toml:\d+\); the window ends in \d+h\d\dm|^agent local-agent has used 1,100 of 1,000 tokens this day \(budget firma\.toml:\d+\); the window ends in \d+m\d\ds/);
  const retry = Number(r.headers['retry-after']);
  const toMidnight = Math.ceil((86_400_000 - (Date.now() % 86_400_000)) / 1000);
  t.ok(retry > 0 && retry <= toMidnight + 1 && retry >= toMidnight - 60, `Retry-After ${retry} ≈ seconds to 00:00 UTC (${toMidnight})`);
  const other = await curl(['-x', sc.proxyUrl, `http://localhost:${up.port}/echo`]);
  t.equal(other.status, 200, 'the same upstream under a name that is no LLM host is not budgeted');
  t.ok(sc.logs.some((l) => l.includes('LLM usage of today rebuilt from the audit log') && l.includes('"calls":3')), 'the rebuild is logged');
});
