import t from 'tap';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { WRITE_COALESCE_BYTES, WRITE_COALESCE_MS, WritePace } from '../../../src/audit/write-pace.js';
import type { AuditEventBody } from '../../../src/audit/events.js';
import { AuditWriter, type AuditWriterOptions } from '../../../src/audit/writer.js';

// docs/audit.md "Durability": while events keep coming the log is written once per WRITE_COALESCE_MS
// (or per WRITE_COALESCE_BYTES), not once per event-loop turn; never delayed with fsync "always", for a
// flush or close, or after a quiet spell.

t.test('the pace: at once after a quiet spell, then one write per window; a full queue or urgency goes at once', async (t) => {
  const pace = new WritePace();
  t.equal(pace.delay(100, false, 1000), 0, 'nothing written yet: at once');
  pace.wrote(1000);
  t.equal(pace.delay(100, false, 1000.5), WRITE_COALESCE_MS - 0.5, 'just wrote: wait for the rest of the window');
  t.equal(pace.delay(100, false, 1000 + WRITE_COALESCE_MS), 0, 'window over');
  t.equal(pace.delay(WRITE_COALESCE_BYTES, false, 1000.5), 0, 'a full batch goes at once');
  t.equal(pace.delay(100, true, 1000.5), 0, 'a flush or close goes at once');
});

function decision(i: number): AuditEventBody {
  return {
    type: 'decision', kind: 'request', request_id: `req-${i}`, agent_id: 'a', method: 'GET', scheme: 'https', host: 'api.example.com',
    port: 443, path: '/x', action_class: 'demo.call', risk: 'low', decision: 'allow', stage: 'policy', reason: 'allowed', rule: 'r.toml:1',
    policy_ids: ['p'], policy_hash: 'h', token_id: null, would_deny: null, approval_id: null, mcp: null,
  };
}

async function writeInTicks(fsync: AuditWriterOptions['fsync'], n: number): Promise<{ batches: number; lines: number; ms: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'firma-pace-'));
  let batches = 0;
  const w = AuditWriter.open({
    path: join(dir, 'audit.jsonl'), keyDir: join(dir, 'keys'), fsync, maxFileBytes: 1 << 30,
    metrics: { auditWritten: () => batches++, auditWriteFailed: () => undefined },
  });
  // One event per event-loop turn, as requests finishing one by one append them.
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    t.ok(w.append(decision(i)));
    await tick();
  }
  const ms = performance.now() - started;
  await w.close();
  return { ms, batches, lines: readFileSync(join(dir, 'audit.jsonl'), 'utf8').split('\n').length - 1 };
}

t.test('events appended one per turn are written in far fewer batches; every one is in the file', async (t) => {
  const n = 2000;
  const paced = await writeInTicks('never', n);
  t.ok(paced.lines >= n, `all ${n} events written (${paced.lines} lines with start and checkpoints)`);
  // At most one write starts per window (plus the first, and the one at close); a full batch of
  // WRITE_COALESCE_BYTES may go earlier, which 2,000 events of ~500 bytes allow ~15 times.
  const bound = Math.ceil(paced.ms / WRITE_COALESCE_MS) + 2 + Math.ceil((n * 600) / WRITE_COALESCE_BYTES);
  t.ok(paced.batches <= bound, `${paced.batches} batches for ${n} events in ${paced.ms.toFixed(0)} ms (at most ${bound})`);
  t.ok(paced.batches < n / 10, 'far fewer batches than events');
});
