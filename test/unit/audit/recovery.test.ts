import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent, AuditEventBody } from '../../../src/audit/events.js';
import { openApprovals } from '../../../src/audit/open-approvals.js';
import { verifyAuditFiles } from '../../../src/audit/verify.js';
import { AuditWriter, type AuditWriterOptions } from '../../../src/audit/writer.js';

// Recovery of the audit log (docs/audit.md "Torn last line", "Fail closed", "Durability", "Approvals
// in the log"): a torn tail moved aside at open, whole lines only after a failed write, the outage's
// refusals counted in audit_recovered, group commit with fsync "always", approvals closed as abandoned.

const tmp = (): string => mkdtempSync(join(tmpdir(), 'firma-recovery-'));

function setup(extra: Partial<AuditWriterOptions> = {}): { dir: string; path: string; opts: AuditWriterOptions; pub: () => string } {
  const dir = tmp();
  const path = join(dir, 'audit', 'audit.jsonl');
  const keyDir = join(dir, 'keys');
  const opts: AuditWriterOptions = { path, keyDir, fsync: 'never', maxFileBytes: 1 << 30, ...extra };
  return { dir, path, opts, pub: () => readFileSync(join(keyDir, 'audit.pub'), 'utf8') };
}

function decision(i: number): AuditEventBody {
  return {
    type: 'decision', kind: 'request', request_id: `req-${i}`, agent_id: 'agent-1', method: 'GET', scheme: 'https', host: 'api.example.com',
    port: 443, path: `/v1/items/${i}`, action_class: 'demo.call', risk: 'low', decision: 'allow', stage: 'policy', reason: 'allowed',
    rule: 'demo.toml:1', policy_ids: ['p1'], policy_hash: 'abc', token_id: null, would_deny: null, approval_id: null, mcp: null,
  };
}
const approval = (id: string, action: 'requested' | 'approved' | 'denied', req: string): AuditEventBody => ({
  type: 'approval', request_id: req, agent_id: 'agent-1', approval_id: id, action, approver: null, reason: null, grant: null,
});
const lifecycle = (event: 'start' | 'stop'): AuditEventBody => ({ type: 'lifecycle', event, detail: null, request_id: null, agent_id: null });

async function writeAll(opts: AuditWriterOptions, bodies: AuditEventBody[]): Promise<void> {
  const w = AuditWriter.open(opts);
  for (const b of bodies) if (!w.append(b)) throw new Error('append refused');
  await w.close();
}
const events = (p: string): AuditEvent[] => readFileSync(p, 'utf8').split('\n').slice(0, -1).map((l) => JSON.parse(l) as AuditEvent);
/** The events without the writer's checkpoints (signatures = "checkpoint", the default; checkpoint.test.ts). */
const bodies = (evs: AuditEvent[]): AuditEvent[] => evs.filter((e) => !(e.type === 'lifecycle' && e.event === 'checkpoint'));

t.test('a torn last line is moved aside at open (0600, same bytes), recorded with its hash, and the chain verifies', async (t) => {
  const s = setup();
  await writeAll(s.opts, Array.from({ length: 10 }, (_, i) => decision(i + 1)));
  const fragment = '{"action_class":"demo.call","agent_id":"agent-1","appr';
  writeFileSync(s.path, readFileSync(s.path, 'utf8') + fragment);
  // 10 decisions and the checkpoint the close wrote (seq 11), then the fragment.
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: false, line: 12, problem: /truncated last line.*firma audit repair/ }, 'verify names it and the fix');
  const w = AuditWriter.open(s.opts);
  t.equal(w.recovery.torn.length, 1);
  const torn = w.recovery.torn[0];
  const sha = `sha256:${createHash('sha256').update(fragment).digest('hex')}`;
  t.match(torn, { file: s.path, bytes: fragment.length, sha256: sha, notSaved: null });
  const moved = torn?.movedTo ?? '';
  t.match(moved, /audit\.jsonl\.torn-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$/);
  t.equal(readFileSync(moved, 'utf8'), fragment, 'the fragment is kept byte for byte');
  t.equal(statSync(moved).mode & 0o777, 0o600);
  t.ok(w.append(decision(11)));
  await w.close();
  const evs = events(s.path);
  t.same(evs.map((e) => e.seq), Array.from({ length: 14 }, (_, i) => i + 1), 'the chain goes on from the last whole event');
  t.match(evs[11], { type: 'lifecycle', event: 'audit_repaired', detail: `torn last line of audit.jsonl after seq 11: ${fragment.length} bytes ${sha}, moved to ${moved.slice(moved.lastIndexOf('/') + 1)}` });
  t.match(evs[13], { event: 'checkpoint', first_seq: 12, last_seq: 13 }, 'the repair and the new event are signed by the closing checkpoint');
  const v = verifyAuditFiles([s.path], s.pub());
  t.match(v, { ok: true, events: 14, repairs: [{ seq: 12, line: 12, detail: /torn last line/ }], unsignedTail: null });
  t.same(readdirSync(join(s.dir, 'audit')).filter((n) => !n.startsWith('audit.jsonl.torn-')), ['audit.jsonl'], 'the fragment is not taken for a rotated file');
  t.match(verifyAuditFiles([join(s.dir, 'audit')], s.pub()), { ok: true, events: 14 }, 'nor is it part of the folder\'s set');
});

t.test('a file that is nothing but a fragment: cut to empty, the chain starts over from the older files (here: none)', async (t) => {
  const s = setup();
  mkdirSync(join(s.dir, 'audit'), { recursive: true });
  writeFileSync(s.path, '{"v":1,"seq":1,"ts":"2026-');
  const w = AuditWriter.open(s.opts);
  t.equal(w.seq, 1, 'only the repair event');
  await w.close();
  t.match(events(s.path), [{ seq: 1, event: 'audit_repaired', detail: /after seq 0: 26 bytes/ }, { seq: 2, event: 'checkpoint' }]);
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, events: 2 });
});

t.test('an edited last whole event still refuses to open (tampering is not a torn line)', async (t) => {
  const s = setup();
  await writeAll(s.opts, [decision(1), decision(2)]);
  const text = readFileSync(s.path, 'utf8').replace('/v1/items/2', '/v1/items/3');
  writeFileSync(s.path, text + '{"torn');
  // The last line is the checkpoint (seq 3), which verifies; the events it signs are checked back to the signature before.
  t.throws(() => AuditWriter.open(s.opts), { code: 'FIRMA_AUDIT_CORRUPT', message: /audit\.jsonl:2: edited \(hash mismatch\) \(one of the last events/ });
  // Signed on their own: the last event is the one checked.
  const e = setup({ signatures: 'event' });
  await writeAll(e.opts, [decision(1), decision(2)]);
  writeFileSync(e.path, readFileSync(e.path, 'utf8').replace('/v1/items/2', '/v1/items/3') + '{"torn');
  t.throws(() => AuditWriter.open(e.opts), { code: 'FIRMA_AUDIT_CORRUPT', message: /audit\.jsonl:2: last event: edited/ });
});

const mounted = (() => {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('mount', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

t.test('disk full (a 256 KiB tmpfs): the file always ends with a whole line; the recovery event counts what was refused', { skip: mounted ? false : 'needs root to mount a tmpfs' }, async (t) => {
  const s = setup({ fsync: 'always' });
  const mnt = join(s.dir, 'audit');
  mkdirSync(mnt, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', mnt]);
  t.teardown(() => execFileSync('umount', ['-l', mnt]));
  // Leave ~20 KiB free: a few dozen events fit, then ENOSPC part-way through a line; 100 events (~50 KiB) fit once it is gone.
  writeFileSync(join(mnt, 'filler'), Buffer.alloc(236 * 1024));
  const states: boolean[] = [];
  const w = AuditWriter.open({ ...s.opts, onStateChange: (a) => states.push(a) });
  const appended = 100;
  for (let i = 1; i <= appended; i++) {
    t.ok(w.append(decision(i)), `append ${i}`);
    if (i % 10 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  for (let i = 0; i < 300 && w.available; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(w.available, false, 'the disk filled up');
  const onDisk = readFileSync(s.path);
  t.ok(onDisk.length > 0 && onDisk[onDisk.length - 1] === 0x0a, 'no partial line left by the failed write');
  t.ok(events(s.path).length < appended, 'some events wait in the queue');
  t.equal(await w.durable(), false, 'nothing can be promised durable meanwhile');
  w.noteRefused();
  w.noteRefused();
  unlinkSync(join(mnt, 'filler'));
  await w.flush();
  t.equal(w.available, true, 'recovered');
  await w.close();
  const evs = events(s.path);
  t.match(evs.find((e) => e.type === 'lifecycle' && e.event === 'audit_failed'), { detail: 'ENOSPC' });
  const rec = evs.find((e) => e.type === 'lifecycle' && e.event === 'audit_recovered');
  t.match(rec, { detail: /^ENOSPC refused_requests=2 unrecorded_events=0 first_refused=\S+Z last_refused=\S+Z$/ });
  t.equal(evs.filter((e) => e.type === 'decision').length, appended, 'every queued event written once');
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true });
});

t.test('outage on /dev/full: events past the queue bound are counted as unrecorded, with the span', { skip: !existsSync('/dev/full') }, async (t) => {
  const s = setup();
  mkdirSync(join(s.dir, 'audit'), { recursive: true });
  symlinkSync('/dev/full', s.path);
  const w = AuditWriter.open(s.opts);
  let n = 0;
  while (w.append(decision(++n)));
  for (let i = 0; i < 5; i++) t.equal(w.append(decision(n + i)), false);
  for (let i = 0; i < 300 && w.available; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(w.available, false);
  w.noteRefused();
  unlinkSync(s.path);
  writeFileSync(s.path, '');
  await w.flush();
  await w.close();
  const rec = events(s.path).find((e) => e.type === 'lifecycle' && e.event === 'audit_recovered');
  t.match(rec, { detail: /^ENOSPC refused_requests=1 unrecorded_events=6 first_refused=(\S+) last_refused=(\S+)$/ });
  const [, first, last] = /first_refused=(\S+) last_refused=(\S+)/.exec((rec as { detail: string }).detail) ?? [];
  t.ok(Date.parse(first ?? '') <= Date.parse(last ?? ''), 'first ≤ last');
  const v = verifyAuditFiles([s.path], s.pub());
  t.match(v, { ok: true, unsignedTail: null });
  const evs = events(s.path);
  t.match(evs.at(-1), { event: 'checkpoint', recovered: false }, 'the close signs what the outage held');
  t.equal(evs.filter((e) => e.type === 'decision').length, n - 1, 'every accepted event written');
});

t.test('group commit: with fsync "always" callers wait for the fsync, and one fsync covers many', async (t) => {
  let batches = 0;
  const s = setup({ fsync: 'always', metrics: { auditWritten: () => batches++, auditWriteFailed: () => undefined } });
  const w = AuditWriter.open(s.opts);
  const waits: Array<Promise<boolean>> = [];
  for (let i = 1; i <= 200; i++) {
    w.append(decision(i));
    waits.push(w.durable() ?? Promise.reject(new Error('no wait')));
  }
  t.same(await Promise.all(waits), waits.map(() => true));
  t.equal(events(s.path).length, 200, 'on disk when the waits resolve');
  t.ok(batches < 20, `200 events in ${batches} fsynced batch(es)`);
  t.equal(await w.durable(), true, 'nothing pending: true at once');
  await w.close();
  const lazy = AuditWriter.open(setup({ fsync: 'interval' }).opts);
  t.equal(lazy.durable(), null, 'interval: nothing to wait for');
  await lazy.close();
});

t.test('approvals a killed run left open are closed as abandoned at the next open, once', async (t) => {
  const s = setup();
  await writeAll(s.opts, [
    lifecycle('start'),
    approval('apr_old', 'requested', 'req-0'), // before the newest start: a previous run's business
    lifecycle('start'),
    approval('apr_a', 'requested', 'req-1'),
    approval('apr_b', 'requested', 'req-2'),
    approval('apr_a', 'approved', 'req-1'),
    approval('apr_c', 'requested', 'req-3'),
    approval('apr_c', 'denied', 'req-3'),
  ]);
  t.same(openApprovals([s.path]).map((a) => a.approvalId), ['apr_b']);
  const w = AuditWriter.open(s.opts);
  t.equal(w.recovery.abandoned, 1);
  await w.close();
  const last = bodies(events(s.path)).at(-1);
  t.match(last, { type: 'approval', action: 'abandoned', approval_id: 'apr_b', request_id: 'req-2', agent_id: 'agent-1', approver: null, reason: 'sidecar_restarted' });
  const again = AuditWriter.open(s.opts);
  t.equal(again.recovery.abandoned, 0, 'an abandoned approval has its end');
  await again.close();
  // 8 events and a checkpoint; the abandoned event and its checkpoint; the second open had nothing to sign.
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, events: 11, checkpoints: 2 });
});

t.test('open approvals are looked for in the file rotated before the live one too', async (t) => {
  const s = setup({ maxFileBytes: 4096 });
  // ~550 B an event: start, requested and four decisions fill .1; the rest go to the live file.
  await writeAll(s.opts, [lifecycle('start'), approval('apr_r', 'requested', 'req-r'), ...Array.from({ length: 8 }, (_, i) => decision(i + 1))]);
  t.ok(existsSync(`${s.path}.1`) && !existsSync(`${s.path}.2`), 'one rotated file');
  t.ok(events(`${s.path}.1`).some((e) => e.type === 'approval'), 'the request is in the rotated file');
  t.notOk(events(s.path).some((e) => e.type === 'lifecycle' && e.event === 'start'), 'and no start in the live file');
  const w = AuditWriter.open(s.opts);
  t.equal(w.recovery.abandoned, 1);
  await w.close();
  t.match(bodies(events(s.path)).at(-1), { action: 'abandoned', approval_id: 'apr_r' });
  t.match(verifyAuditFiles([join(s.dir, 'audit')], s.pub()), { ok: true, unsignedTail: null });
  t.equal(bodies([...events(`${s.path}.1`), ...events(s.path)]).length, 11);
  rmSync(s.dir, { recursive: true, force: true });
});
