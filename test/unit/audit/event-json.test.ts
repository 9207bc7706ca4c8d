import t from 'tap';
import { canonicalJson } from '../../../src/audit/chain.js';
import { canonicalEventJson } from '../../../src/audit/event-json.js';

// The planned serialiser must give exactly the canonical text of { ...body, ...integrity } without
// hash and sig, whatever the event looks like: the verifier recomputes hashes with canonicalJson.
function expected(body: Record<string, unknown>, integrity: Record<string, unknown>): string {
  const { hash: _h, sig: _s, ...rest } = { ...body, ...integrity };
  return canonicalJson(rest);
}

const integrity = (seq: number): Record<string, unknown> => ({ v: 1, seq, ts: '2026-12-04T01:00:00.000Z', prev_hash: 'ab'.repeat(32) });

const decision = (i: number): Record<string, unknown> => ({
  type: 'decision', request_id: `req-${i}`, agent_id: 'agent "quoted" \\ é ✓', kind: 'request', method: 'GET', scheme: 'https',
  host: 'api.example.com', port: 443, path: `/v1/x?q=REDACTED&n=${i}`, action_class: i % 2 === 0 ? 'demo.call' : null, risk: 'low',
  decision: 'allow', stage: 'policy', reason: 'allowed', rule: 'rules.toml:1', policy_ids: ['a', 'b\u0001'], policy_hash: null,
  token_id: null, would_deny: null, approval_id: null,
});
const outcome = (i: number): Record<string, unknown> => ({
  type: 'outcome', request_id: `req-${i}`, agent_id: 'a', status: 200, error: null, error_code: null, response_hash: 'sha256:00',
  bytes_in: 0, bytes_out: i * 1024, duration_ms: i / 7, credential_injected: i % 3 === 0, approval_id: null,
});
const approval = (i: number): Record<string, unknown> => ({
  type: 'approval', request_id: null, agent_id: 'a', approval_id: `ap-${i}`, action: 'approved', approver: 'ops',
  reason: null, grant: { id: 'g1', minutes: 5, nested: { z: 1, a: [true, -0, 1e21] } },
});
const lifecycle = (i: number): Record<string, unknown> => ({ type: 'lifecycle', event: 'start', detail: `n=${i}`, request_id: null, agent_id: null });

t.test('same text as the generic canonical JSON for every event shape, many times (plans are reused)', async (t) => {
  let checked = 0;
  for (let i = 0; i < 50; i++) {
    for (const make of [decision, outcome, approval, lifecycle]) {
      const body = make(i);
      const integ = integrity(i + 1);
      t.equal(canonicalEventJson(body, integ), expected(body, integ));
      checked++;
    }
  }
  t.equal(checked, 200);
});

t.test('a value left out (undefined), a key clash with the integrity fields, hash and sig in the body', async (t) => {
  const withUndefined = { ...decision(1), rule: undefined };
  t.equal(canonicalEventJson(withUndefined, integrity(1)), expected(withUndefined, integrity(1)));
  const clash = { ...outcome(1), seq: 999, v: 7 };
  t.equal(canonicalEventJson(clash, integrity(2)), expected(clash, integrity(2)), 'the integrity fields win');
  t.notOk(canonicalEventJson(clash, integrity(2)).includes('999'));
  const sealed = { ...lifecycle(1), hash: 'x', sig: 'y' };
  t.equal(canonicalEventJson(sealed, integrity(3)), expected(sealed, integrity(3)), 'hash and sig are never hashed');
  t.notOk(canonicalEventJson(sealed, integrity(3)).includes('"sig"'));
});

t.test('the same keys in another order, and more shapes than the cache keeps', async (t) => {
  const reordered = Object.fromEntries(Object.entries(decision(2)).reverse());
  t.equal(canonicalEventJson(reordered, integrity(4)), expected(reordered, integrity(4)));
  for (let n = 0; n < 40; n++) {
    const body: Record<string, unknown> = { type: 'lifecycle', request_id: null, agent_id: null };
    for (let k = 0; k <= n; k++) body[`extra_${String.fromCharCode(97 + (k % 26))}${k}`] = k % 2 === 0 ? `v${k}` : k;
    t.equal(canonicalEventJson(body, integrity(n)), expected(body, integrity(n)), `shape ${n}`);
  }
});
