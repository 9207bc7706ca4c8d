import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { useUpstream } from '../helpers/upstream.js';
import { startTestSidecar, type TestSidecar } from '../helpers/sidecar.js';
import { curl, type CurlResult, runFirma, type CliRun } from '../helpers/clients.js';
import { ApprovalQueue } from '../../src/enforce/approval/queue.js';
import type { Held } from '../../src/core/decision.js';
import { issueToken, revokeToken } from '../../src/enforce/capability/tokens.js';

const TOKEN_ENV = 'FIRMA_TEST_APPROVER_TOKEN';
const TOKEN = 'approver-secret-7f3a9c2e';
const ALICE_ENV = 'FIRMA_TEST_ALICE_TOKEN';
const ALICE_TOKEN = 'alice-secret-0b8d1e44';
process.env[TOKEN_ENV] = TOKEN;
process.env[ALICE_ENV] = ALICE_TOKEN;

const up = useUpstream(t);
const tlsUp = useUpstream(t, { tls: true });

/** GET /echo is low risk (allowed); POST /echo is a high-risk refund (needs approval by the default policies). */
const RULES = `
[[rules]]
method = "GET"
host = "127.0.0.1"
path = "/echo"
action_class = "demo.read"
risk = "low"

[[rules]]
method = "POST"
host = "127.0.0.1"
path = "/echo"
action_class = "payments.refund"
risk = "high"
body_fields = ["amount"]
`;

const ADMIN = `
token_env = "${TOKEN_ENV}"
token_identity = "ops-oncall"
approvers = [{ name = "alice", token_env = "${ALICE_ENV}" }]
`;

async function start(approvals = '', sidecar = ''): Promise<TestSidecar> {
  return startTestSidecar(`\n[approvals]\n${approvals}\n`, { rules: RULES, sidecar, adminExtra: ADMIN });
}

interface Ev {
  type: string;
  [k: string]: unknown;
}

function events(sc: TestSidecar): Ev[] {
  return readFileSync(join(sc.dir, 'audit', 'audit.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Ev);
}

function body(r: CurlResult): Record<string, unknown> {
  return JSON.parse(r.body) as Record<string, unknown>;
}

async function admin(sc: TestSidecar, method: 'GET' | 'POST', path: string, opts: { token?: string | null; body?: unknown } = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const token = opts.token === undefined ? TOKEN : opts.token;
  if (token !== null) headers['authorization'] = `Bearer ${token}`;
  const res = await request(`${sc.adminUrl}${path}`, { method, headers, body: method === 'POST' ? JSON.stringify(opts.body ?? {}) : null });
  const text = await res.body.text();
  return { status: res.statusCode, json: JSON.parse(text) as Record<string, unknown> };
}

interface Pending {
  id: string;
  waiting: number;
  url: string;
  [k: string]: unknown;
}

/** Wait (bounded) until `n` approvals are pending with `waiting` requests in all; returns them. */
async function pendingWhen(sc: TestSidecar, check: (p: Pending[]) => boolean): Promise<Pending[]> {
  let last: Pending[] = [];
  for (let i = 0; i < 200; i++) {
    last = (await admin(sc, 'GET', '/approvals')).json['pending'] as Pending[];
    if (check(last)) return last;
    await new Promise((r) => setTimeout(r, 25));
  }
  return last;
}

function refund(sc: TestSidecar, amount: number, extra: string[] = []): Promise<CurlResult> {
  return curl(['--proxy', sc.proxyUrl, '-X', 'POST', '-H', 'content-type: application/json', '--data', JSON.stringify({ amount }), ...extra, `${up.origin}/echo`]);
}

const firma = (args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<CliRun> => runFirma(args, cwd, { ...process.env, ...env });

t.test('held request completes after approval via the API; events link the approval', async (t) => {
  const sc = await start();
  t.teardown(() => sc.stop());
  const low = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo`]);
  t.equal(low.status, 200, 'low risk passes without a prompt');
  const held = refund(sc, 250);
  const [p] = await pendingWhen(sc, (p) => p.length === 1);
  t.ok(p, 'the request is pending');
  if (p === undefined) return;
  t.match(p, {
    agent_id: 'local-agent',
    method: 'POST',
    url: `http://${up.hostPort}/echo`,
    action_class: 'payments.refund',
    risk: 'high',
    policy_ids: ['default.approve-high'],
    body_fields: { amount: 250 },
    waiting: 1,
    state: 'pending',
  });
  const scrape = async (): Promise<string> => (await request(`${sc.adminUrl}/metrics`)).body.text();
  t.match(await scrape(), /^firma_approvals_pending 1$/m, '/metrics shows the held request');
  const one = await admin(sc, 'GET', `/approvals/${p.id}`);
  t.equal(one.status, 200);
  t.equal(one.json['id'], p.id);
  const ok = await admin(sc, 'POST', `/approvals/${p.id}/approve`, { body: { reason: 'refund ticket 4411' } });
  t.equal(ok.status, 200, JSON.stringify(ok.json));
  const r = await held;
  t.equal(r.status, 200, 'the held call finishes with the upstream answer');
  t.equal(r.headers['x-upstream'], 'echo');
  t.equal(JSON.parse(r.body)['method'], 'POST');
  const after = await scrape();
  t.match(after, /^firma_approvals_pending 0$/m);
  t.match(after, /^firma_requests_total\{decision="allow",stage="approval",reason="approved"\} 1$/m, 'the final decision is counted once');
  t.notMatch(after, /decision="require_approval"/, 'the hold itself is not a request decision');
  const again = await admin(sc, 'POST', `/approvals/${p.id}/approve`);
  t.equal(again.status, 409, 'a second approve is refused: it is already approved');
  t.equal((await admin(sc, 'GET', `/approvals/${p.id}`)).json['state'], 'approved');

  await sc.stop();
  const ev = events(sc);
  const mine = ev.filter((e) => e['approval_id'] === p.id);
  t.same(mine.map((e) => (e.type === 'decision' ? `decision:${String(e['decision'])}` : e.type === 'approval' ? `approval:${String(e['action'])}` : e.type)), [
    'decision:require_approval',
    'approval:requested',
    'approval:approved',
    'decision:allow',
    'outcome',
  ], 'held → requested → approved → allowed → outcome, all linked by the approval id');
  const approved = mine.find((e) => e['action'] === 'approved');
  t.equal(approved?.['approver'], 'ops-oncall', 'the approver is the token\'s configured identity');
  t.equal(approved?.['reason'], 'refund ticket 4411');
  const allow = mine.find((e) => e['decision'] === 'allow');
  t.same([allow?.['stage'], allow?.['reason']], ['approval', 'approved']);
  const v = await firma(['audit', 'verify', join(sc.dir, 'audit', 'audit.jsonl'), '--public-key', join(sc.dir, 'keys', 'audit.pub')], sc.dir);
  t.equal(v.code, 0, v.stderr);
  const all = readFileSync(join(sc.dir, 'audit', 'audit.jsonl'), 'utf8') + sc.logs.join('\n');
  t.notOk(all.includes(TOKEN) || all.includes(ALICE_TOKEN), 'no admin token in the audit log or the logs');
});

t.test('approval via the CLI, denial via the CLI, and HTTPS (MITM) requests are held the same way', async (t) => {
  const sc = await start();
  t.teardown(() => sc.stop());
  const adminFlag = ['--admin', sc.adminUrl, '--config', join(sc.dir, 'firma.toml')];
  const held = curl(['--proxy', sc.proxyUrl, '--cacert', sc.caPath, '-X', 'POST', '--data', '{"amount":5}', '-H', 'content-type: application/json', `${tlsUp.origin}/echo`]);
  const [p] = await pendingWhen(sc, (p) => p.length === 1);
  if (p === undefined) return t.fail('not pending');
  const list = await firma(['approvals', 'list', ...adminFlag], sc.dir);
  t.equal(list.code, 0, list.stderr);
  t.match(list.stdout, new RegExp(`${p.id}\\s+local-agent\\s+POST https://127\\.0\\.0\\.1:${tlsUp.port}/echo\\s+payments\\.refund \\(high\\)`));
  t.match(list.stdout, /body: amount=5/);
  const noToken = await firma(['approvals', 'approve', p.id, ...adminFlag], sc.dir, { [TOKEN_ENV]: '' });
  t.equal(noToken.code, 1);
  t.match(noToken.stderr, /admin token.*FIRMA_TEST_APPROVER_TOKEN is not set/s, 'says which variable is missing');
  const ok = await firma(['approvals', 'approve', p.id, ...adminFlag], sc.dir, {});
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, `approved ${p.id} (1 waiting request released)`);
  t.equal((await held).status, 200);

  const held2 = refund(sc, 9000);
  const [q] = await pendingWhen(sc, (p) => p.length === 1);
  if (q === undefined) return t.fail('not pending');
  const wrong = await firma(['approvals', 'deny', q.id, ...adminFlag], sc.dir, { [TOKEN_ENV]: 'not-a-token' });
  t.equal(wrong.code, 1, 'an unknown token is refused');
  t.match(wrong.stderr, /valid admin token is required/);
  // alice is a second configured approver: her token, put in the variable the CLI reads, acts as alice.
  const no = await firma(['approvals', 'deny', q.id, '--reason', 'too large', ...adminFlag], sc.dir, { [TOKEN_ENV]: ALICE_TOKEN });
  t.equal(no.code, 0, no.stderr);
  t.match(no.stdout, `denied ${q.id}`);
  const r = await held2;
  t.equal(r.status, 403, 'denied → 403');
  t.match(body(r), { decision: 'deny', stage: 'approval', reason: 'approval_denied', message: 'denied by alice: too large' });
  t.equal(r.headers['x-firma-request-id'], body(r)['request_id']);
  const unknown = await firma(['approvals', 'approve', 'apr_nope', ...adminFlag], sc.dir);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, 'no approval apr_nope');
});

t.test('timeout → 403 approval_timeout, audited as expired', async (t) => {
  const sc = await start('timeout_ms = 1000');
  t.teardown(() => sc.stop());
  const r = await refund(sc, 1);
  t.equal(r.status, 403);
  t.match(body(r), { stage: 'approval', reason: 'approval_timeout' });
  await sc.stop();
  const ev = events(sc);
  t.ok(ev.some((e) => e.type === 'approval' && e['action'] === 'expired' && e['approver'] === null), 'expired event');
  t.ok(ev.some((e) => e.type === 'decision' && e['reason'] === 'approval_timeout' && typeof e['approval_id'] === 'string'), 'the final decision links the approval');
});

t.test('identical requests fold into one approval and all complete; a different body gets its own', async (t) => {
  const sc = await start();
  t.teardown(() => sc.stop());
  const a = refund(sc, 70);
  const b = refund(sc, 70);
  const c = refund(sc, 71);
  const pending = await pendingWhen(sc, (p) => p.length === 2 && p.reduce((n, x) => n + x.waiting, 0) === 3);
  t.equal(pending.length, 2, 'two approvals for three requests');
  const shared = pending.find((p) => p.waiting === 2);
  const single = pending.find((p) => p.waiting === 1);
  if (shared === undefined || single === undefined) return t.fail(JSON.stringify(pending));
  t.equal((await admin(sc, 'POST', `/approvals/${shared.id}/approve`)).status, 200);
  const [ra, rb] = await Promise.all([a, b]);
  t.equal(ra.status, 200);
  t.equal(rb.status, 200, 'both identical requests complete on one approval');
  t.equal((await admin(sc, 'POST', `/approvals/${single.id}/deny`)).status, 200);
  t.equal((await c).status, 403);
  await sc.stop();
  const requested = events(sc).filter((e) => e.type === 'approval' && e['action'] === 'requested');
  t.equal(requested.length, 2, 'one requested event per approval, not per request');
});

t.test('standing grant: the next 3 requests pass without a prompt; revoked, the next one asks again', async (t) => {
  const sc = await start();
  t.teardown(() => sc.stop());
  const first = refund(sc, 1);
  const [p] = await pendingWhen(sc, (p) => p.length === 1);
  if (p === undefined) return t.fail('not pending');
  const g = await admin(sc, 'POST', `/approvals/${p.id}/approve`, { body: { grant_minutes: 30, grant_host: true } });
  t.equal(g.status, 200, JSON.stringify(g.json));
  const grant = g.json['grant'] as Record<string, unknown>;
  t.match(grant, { agent_id: 'local-agent', action_class: 'payments.refund', host: '127.0.0.1', granted_by: 'ops-oncall', uses: 0 });
  t.equal((await first).status, 200);
  for (let i = 0; i < 3; i++) {
    const r = await refund(sc, 100 + i);
    t.equal(r.status, 200, `request ${i + 1} passes on the grant`);
  }
  t.same((await admin(sc, 'GET', '/approvals')).json['pending'], [], 'no prompt was created');
  const listed = (await admin(sc, 'GET', '/grants')).json['grants'] as Array<Record<string, unknown>>;
  t.equal(listed[0]?.['uses'], 3, 'the grant counts its uses');
  const tooLong = await admin(sc, 'POST', `/approvals/${p.id}/approve`, { body: { grant_minutes: 100000 } });
  t.equal(tooLong.status, 409, 'already approved');

  const revoked = await admin(sc, 'POST', `/grants/${String(grant['id'])}/revoke`, { token: ALICE_TOKEN });
  t.equal(revoked.status, 200, 'any configured approver may revoke');
  t.same((await admin(sc, 'GET', '/grants')).json['grants'], []);
  const after = refund(sc, 5);
  const [r2] = await pendingWhen(sc, (p) => p.length === 1);
  t.ok(r2, 'after revoking, the next request asks again');
  if (r2 !== undefined) t.equal((await admin(sc, 'POST', `/approvals/${r2.id}/deny`, { token: ALICE_TOKEN })).status, 200);
  t.equal((await after).status, 403);
  await sc.stop();
  const ev = events(sc).filter((e) => e.type === 'approval');
  const given = ev.find((e) => e['action'] === 'approved' && e['grant'] !== null);
  t.match(given?.['grant'], { id: grant['id'], agent_id: 'local-agent', action_class: 'payments.refund', host: '127.0.0.1' }, 'the grant is audited when given');
  t.ok(ev.some((e) => e['action'] === 'revoked' && e['approver'] === 'alice'), 'and when revoked, by whom');
  const viaGrant = events(sc).filter((e) => e.type === 'decision' && e['reason'] === 'grant');
  t.equal(viaGrant.length, 3, 'the three requests are recorded as allowed by the grant');
  t.ok(viaGrant.every((e) => e['approval_id'] === p.id && e['stage'] === 'approval'), 'linked to the approval that gave the grant');
  const denied = ev.find((e) => e['action'] === 'denied');
  t.equal(denied?.['approver'], 'alice');
});

t.test('an approval the audit log cannot record is refused (503) and the request stays held', async (t) => {
  let writable = false;
  const queue = new ApprovalQueue({
    timeoutMs: 60_000,
    maxPending: 10,
    maxGrantMinutes: 60,
    audit: { held: () => true, approval: (step) => step.action !== 'approved' || writable },
  });
  const gone = new AbortController();
  const waiting = queue.wait(heldFor('agent-a', 'payments.refund', 'api.stripe.com'), { bodyHash: 'x', signal: gone.signal });
  const [p] = queue.list().pending;
  if (p === undefined) return t.fail('not pending');
  t.match(queue.approve(p.id, 'bob', { grantMinutes: 10 }), { ok: false, code: 'audit_unavailable' });
  t.equal(queue.list().pending.length, 1, 'still held');
  t.equal(queue.list().grants.length, 0, 'no grant made');
  writable = true;
  t.ok(queue.approve(p.id, 'bob').ok, 'approved once the log takes it');
  t.match(await waiting, { kind: 'approved', approver: 'bob' });
});

t.test('grants expire on the clock, cover only their agent, action class and host', async (t) => {
  let now = 1_000_000;
  const steps: string[] = [];
  const queue = new ApprovalQueue({
    timeoutMs: 60_000,
    maxPending: 10,
    maxGrantMinutes: 60,
    now: () => now,
    audit: {
      held: () => true,
      approval: (s) => {
        steps.push(`${s.action}${s.grant ? `:${s.grant.id}` : ''}`);
        return true;
      },
    },
  });
  const held = heldFor('agent-a', 'payments.refund', 'api.stripe.com');
  const gone = new AbortController();
  const waiting = queue.wait(held, { bodyHash: 'x', signal: gone.signal });
  const [p] = queue.list().pending;
  if (p === undefined) return t.fail('not pending');
  t.match(queue.approve(p.id, 'bob', { grantMinutes: 61 }), { ok: false, code: 'bad_input' }, 'over max_grant_minutes');
  const r = queue.approve(p.id, 'bob', { grantMinutes: 10, grantHost: true });
  t.ok(r.ok);
  t.match(await waiting, { kind: 'approved', approver: 'bob' });
  t.ok(queue.useGrant('agent-a', 'payments.refund', 'api.stripe.com'), 'covered');
  t.equal(queue.useGrant('agent-b', 'payments.refund', 'api.stripe.com'), null, 'another agent is not');
  t.equal(queue.useGrant('agent-a', 'payments.charge', 'api.stripe.com'), null, 'another action class is not');
  t.equal(queue.useGrant('agent-a', 'payments.refund', 'api.other.com'), null, 'another host is not');
  now += 10 * 60_000 - 1;
  t.ok(queue.useGrant('agent-a', 'payments.refund', 'api.stripe.com'), 'still valid just before the end');
  now += 1;
  t.equal(queue.useGrant('agent-a', 'payments.refund', 'api.stripe.com'), null, 'expired');
  t.same(queue.grants(), []);
  t.match(steps, ['requested', /^approved:grt_/, /^expired:grt_/], 'given and expired are audited');
});

t.test('agent disconnect cancels the approval; shutdown denies what is pending', async (t) => {
  const sc = await start();
  t.teardown(() => sc.stop());
  const child: ChildProcess = spawn('curl', ['-sS', '--noproxy', '', '--proxy', sc.proxyUrl, '-X', 'POST', '--data', '{"amount":3}', '-H', 'content-type: application/json', `${up.origin}/echo`]);
  const [p] = await pendingWhen(sc, (p) => p.length === 1);
  if (p === undefined) return t.fail('not pending');
  child.kill('SIGKILL');
  const after = await pendingWhen(sc, (p) => p.length === 0);
  t.same(after, [], 'the approval is gone once the agent hung up');
  t.equal((await admin(sc, 'GET', `/approvals/${p.id}`)).json['state'], 'cancelled');
  t.equal((await admin(sc, 'POST', `/approvals/${p.id}/approve`)).status, 409, 'a cancelled approval cannot be approved');

  const held = refund(sc, 4);
  await pendingWhen(sc, (p) => p.length === 1);
  await sc.stop();
  const r = await held;
  t.equal(r.status, 403);
  t.match(body(r), { stage: 'approval', reason: 'shutdown' });
  const ev = events(sc);
  t.ok(ev.some((e) => e.type === 'approval' && e['action'] === 'cancelled' && e['approval_id'] === p.id && e['reason'] === 'agent_disconnected'), 'cancel audited');
  t.ok(ev.some((e) => e.type === 'approval' && e['action'] === 'denied' && e['reason'] === 'shutdown'), 'shutdown denial audited');
  // The stop event, then the checkpoint that signs it and everything since the one before (docs/audit.md "Checkpoints").
  t.same(ev.slice(-2).map((e) => e['event']), ['stop', 'checkpoint'], 'and all of it before the stop event');
});

t.test('mutations need a valid token (401), reads do not; bad input is a 400', async (t) => {
  const sc = await start();
  t.teardown(() => sc.stop());
  const held = refund(sc, 6);
  const [p] = await pendingWhen(sc, (p) => p.length === 1);
  if (p === undefined) return t.fail('not pending');
  for (const token of [null, 'wrong-token', '']) {
    const r = await admin(sc, 'POST', `/approvals/${p.id}/approve`, { token });
    t.equal(r.status, 401, `token ${JSON.stringify(token)} → 401`);
  }
  const raw = await request(`${sc.adminUrl}/approvals/${p.id}/deny`, { method: 'POST', headers: { authorization: `Basic ${TOKEN}` } });
  t.equal(raw.statusCode, 401, 'only Bearer');
  t.match(raw.headers['www-authenticate'], /^Bearer/);
  await raw.body.dump();
  t.equal((await admin(sc, 'POST', '/grants/grt_x/revoke', { token: null })).status, 401);
  t.equal((await admin(sc, 'POST', `/approvals/${p.id}/approve`, { body: { grant_minutes: 'ten' } })).status, 400);
  t.equal((await admin(sc, 'POST', `/approvals/${p.id}/approve`, { body: { grant_host: true } })).status, 400, 'grant_host without minutes');
  const notJson = await request(`${sc.adminUrl}/approvals/${p.id}/deny`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: 'deny!' });
  t.equal(notJson.statusCode, 400);
  await notJson.body.dump();
  t.equal((await admin(sc, 'GET', '/approvals/apr_unknown')).status, 404);
  const get = await request(`${sc.adminUrl}/approvals/${p.id}/approve`);
  t.equal(get.statusCode, 405, 'GET on a mutation is not allowed');
  await get.body.dump();
  t.equal((await admin(sc, 'GET', '/approvals')).status, 200, 'reading needs no token');
  t.equal((await admin(sc, 'POST', `/approvals/${p.id}/deny`)).status, 200);
  t.equal((await held).status, 403);
});

t.test('without a configured token every mutation is refused, with a message saying why', async (t) => {
  const sc = await startTestSidecar('', { rules: RULES, adminExtra: 'token_env = "FIRMA_TEST_UNSET_TOKEN"' });
  t.teardown(() => sc.stop());
  const r = await admin(sc, 'POST', '/approvals/apr_x/approve', { token: '' });
  t.equal(r.status, 401);
  t.match(String(r.json['message']), /no admin token is configured/);
  t.ok(sc.logs.some((l) => l.includes('no admin token set')), 'warned at startup');
});

t.test('webhook: exactly one POST per approval, Slack-compatible, with a link to the page; a dead webhook blocks nothing', async (t) => {
  const posts: Array<Record<string, unknown>> = [];
  const hook = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      posts.push({ method: req.method, type: req.headers['content-type'], ...(JSON.parse(text) as Record<string, unknown>) });
      res.end('ok');
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => hook.close(() => r())));
  const hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/services/T000/B000/XXXXSECRETPATH`;
  const sc = await start(`webhook_url = "${hookUrl}"
webhook_timeout_ms = 2000
page_url = "https://approvals.example.com/approvals/ui"`);
  t.teardown(() => sc.stop());
  const a = refund(sc, 42, ['-H', 'x-note: one']);
  const b = refund(sc, 42);
  const [p] = await pendingWhen(sc, (p) => p.length === 1 && p[0]?.waiting === 2);
  if (p === undefined) return t.fail('not pending');
  for (let i = 0; i < 100 && posts.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(posts.length, 1, 'one POST for one approval (two requests joined it)');
  t.match(posts[0], {
    method: 'POST',
    type: 'application/json',
    approval_id: p.id,
    agent_id: 'local-agent',
    action_class: 'payments.refund',
    page: `https://approvals.example.com/approvals/ui#${p.id}`,
  });
  t.match(String(posts[0]?.['text']), new RegExp(`local-agent.*POST http://${up.hostPort}/echo.*payments\.refund.*https://approvals\.example\.com/approvals/ui#${p.id}`));
  await admin(sc, 'POST', `/approvals/${p.id}/approve`);
  t.same([(await a).status, (await b).status], [200, 200]);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(posts.length, 1, 'no further POST on approval');
  await sc.stop();

  // A webhook that never answers: the request is still held and approvable; the failure is logged without the secret path.
  const silent = http.createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    silent.closeAllConnections();
    return new Promise<void>((r) => silent.close(() => r()));
  });
  const deadUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/hooks/SECRETPART`;
  const sc2 = await start(`webhook_url = "${deadUrl}"
webhook_timeout_ms = 300`);
  t.teardown(() => sc2.stop());
  const c = refund(sc2, 1);
  const [q] = await pendingWhen(sc2, (p) => p.length === 1);
  if (q === undefined) return t.fail('not pending');
  for (let i = 0; i < 100 && !sc2.logs.some((l) => l.includes('approval webhook failed')); i++) await new Promise((r) => setTimeout(r, 20));
  t.ok(sc2.logs.some((l) => l.includes('approval webhook failed')), 'the failure is logged');
  t.notOk(sc2.logs.some((l) => l.includes('SECRETPART')), 'without the webhook path (often a secret)');
  t.same((await admin(sc2, 'GET', '/approvals')).json['pending'], [q], 'the request is still waiting, neither approved nor denied');
  await admin(sc2, 'POST', `/approvals/${q.id}/approve`);
  t.equal((await c).status, 200);
});

t.test('monitor mode never holds: it allows and reports approval_required', async (t) => {
  const sc = await start('', 'mode = "monitor"');
  t.teardown(() => sc.stop());
  const r = await refund(sc, 1);
  t.equal(r.status, 200);
  t.match(r.headers['x-firma-would-deny'], /approval/);
  t.same((await admin(sc, 'GET', '/approvals')).json['pending'], []);
});

function heldFor(agentId: string, actionClass: string, host: string): Held {
  return {
    verdict: 'hold',
    message: 'needs approval',
    tokenId: null,
    policyIds: ['p'],
    policyHash: 'h',
    approvalId: null,
    identity: { agentId, token: null, source: 'default' },
    envelope: {
      requestId: 'r1',
      kind: 'request',
      agentId,
      method: 'POST',
      target: { scheme: 'https', host, kind: 'dns', port: 443 },
      path: '/v1/refunds',
      query: null,
      normalizedPath: '/v1/refunds',
      actionClass,
      risk: 'high',
      ruleId: null,
      bodyFields: [],
      body: null,
    },
  };
}

t.test('a token revoked while its request waits is denied even when the approval comes', async (t) => {
  const sc = await startTestSidecar('', { rules: RULES, adminExtra: ADMIN, capabilities: 'required = true' });
  t.teardown(() => sc.stop());
  const keys = join(sc.dir, 'keys');
  const issued = await issueToken({
    signingKeyFile: join(keys, 'capability.key'),
    publicKeyFile: join(keys, 'capability.pub'),
    agent: 'agent-r',
    actions: ['*'],
    scope: '127.0.0.1',
    ttlMs: 3_600_000,
  });
  const proxy = `http://agent-r:${issued.token}@127.0.0.1:${sc.proxyPort}`;
  const held = curl(['--proxy', proxy, '-X', 'POST', '-H', 'content-type: application/json', '--data', '{"amount":8}', `${up.origin}/echo`]);
  const [p] = await pendingWhen(sc, (p) => p.length === 1);
  if (p === undefined) return t.fail('not pending');
  revokeToken(join(keys, 'revoked.txt'), issued.jti);
  // A low-risk call with the same token shows when the revocation has been picked up.
  let reason = '';
  for (let i = 0; i < 50 && reason !== 'token_revoked'; i++) {
    const r = await curl(['--proxy', proxy, `${up.origin}/echo`]);
    reason = r.status === 200 ? '' : String(body(r)['reason']);
    if (reason !== 'token_revoked') await new Promise((res) => setTimeout(res, 100));
  }
  t.equal(reason, 'token_revoked');
  t.equal((await admin(sc, 'POST', `/approvals/${p.id}/approve`)).status, 200);
  const r = await held;
  t.equal(r.status, 403, 'not sent: the capability was checked again');
  t.match(body(r), { stage: 'capability', reason: 'token_revoked' });
  t.match(String(body(r)['message']), 'checked again after the approval');
});

t.test('CLI grants: approve --grant-minutes --grant-host, `approvals grants` lists it, `approvals revoke` ends it', async (t) => {
  const sc = await start();
  t.teardown(() => sc.stop());
  const flags = ['--admin', sc.adminUrl, '--config', join(sc.dir, 'firma.toml')];
  const held = refund(sc, 12);
  const [p] = await pendingWhen(sc, (p) => p.length === 1);
  if (p === undefined) return t.fail('not pending');
  const bad = await firma(['approvals', 'approve', p.id, '--grant-host', ...flags], sc.dir);
  t.equal(bad.code, 2, '--grant-host alone is a usage error');
  const ok = await firma(['approvals', 'approve', p.id, '--grant-minutes', '20', '--grant-host', '--reason', 'batch of refunds', ...flags], sc.dir);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /approved apr_\S+ \(1 waiting request released\); grant (grt_\S+) for local-agent payments\.refund host=127\.0\.0\.1 until \S+Z/);
  t.equal((await held).status, 200);
  const grantId = /grant (grt_\S+)/.exec(ok.stdout)?.[1] ?? '';
  const listed = await firma(['approvals', 'grants', ...flags], sc.dir);
  t.match(listed.stdout, new RegExp(`^${grantId}\\s+local-agent\\s+payments\\.refund\\s+host=127\\.0\\.0\\.1\\s+by=ops-oncall`, 'm'));
  t.equal((await refund(sc, 13)).status, 200, 'the grant lets the next one through');
  const revoked = await firma(['approvals', 'revoke', grantId, ...flags], sc.dir);
  t.equal(revoked.code, 0, revoked.stderr);
  t.match(revoked.stdout, `revoked grant ${grantId}`);
  t.match((await firma(['approvals', 'grants', ...flags], sc.dir)).stdout, /^no standing grants$/m);
  const again = await firma(['approvals', 'revoke', grantId, ...flags], sc.dir);
  t.equal(again.code, 1);
  t.match(again.stderr, `no active grant ${grantId}`);
});
