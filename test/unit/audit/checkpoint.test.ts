import t from 'tap';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canonicalWithoutSeal, chainHash, GENESIS_HASH, signHash } from '../../../src/audit/chain.js';
import { CHECKPOINT_LINE_RESERVE, CHECKPOINT_MAX_DELAY_MS, CHECKPOINT_MAX_EVENTS, checkpointBody } from '../../../src/audit/checkpoint.js';
import { redactQuery, type AuditEvent, type AuditEventBody, type CheckpointEvent } from '../../../src/audit/events.js';
import { ChainSealer } from '../../../src/audit/sealer.js';
import { RequestTail } from '../../../src/audit/tail.js';
import { verifyAuditFiles } from '../../../src/audit/verify.js';
import { WriteQueue } from '../../../src/audit/write-queue.js';
import { AuditWriter, type AuditWriterOptions } from '../../../src/audit/writer.js';

// Checkpoint signatures (docs/audit.md "Checkpoints"): events hash-chained without a signature, a
// signed checkpoint event within 100 ms or 1,000 events, before a rotation and at close; recovery of
// a killed run's unsigned tail; verify of both forms, mixtures, the unsigned tail and tampering.

const tmp = (): string => mkdtempSync(join(tmpdir(), 'firma-checkpoint-'));

function setup(extra: Partial<AuditWriterOptions> = {}): { dir: string; path: string; keyDir: string; opts: AuditWriterOptions; pub: () => string } {
  const dir = tmp();
  const path = join(dir, 'audit', 'audit.jsonl');
  const keyDir = join(dir, 'keys');
  const opts: AuditWriterOptions = { path, keyDir, fsync: 'never', maxFileBytes: 1 << 30, ...extra };
  return { dir, path, keyDir, opts, pub: () => readFileSync(join(keyDir, 'audit.pub'), 'utf8') };
}

function decision(i: number): AuditEventBody {
  return {
    type: 'decision', kind: 'request', request_id: `req-${i}`, agent_id: 'agent-1', method: 'POST', scheme: 'https', host: 'api.stripe.com',
    port: 443, path: redactQuery('/v1/refunds', `amount=${i}`), action_class: 'payments.refund', risk: 'high', decision: 'allow', stage: 'policy',
    reason: 'allowed', rule: 'stripe.toml:3', policy_ids: ['p1'], policy_hash: 'abc', token_id: null, would_deny: null, approval_id: null, mcp: null,
  };
}

type Ev = AuditEvent & Record<string, unknown>;
const lines = (p: string): string[] => readFileSync(p, 'utf8').split('\n').slice(0, -1);
const events = (p: string): Ev[] => lines(p).map((l) => JSON.parse(l) as Ev);
const writeLines = (p: string, ls: readonly string[]): void => writeFileSync(p, ls.map((l) => `${l}\n`).join(''));
const isCp = (e: Ev): e is Ev & CheckpointEvent => e.type === 'lifecycle' && e.event === 'checkpoint';

async function until(check: () => boolean, ms = 5_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 5));
  }
  return check();
}

async function writeN(opts: AuditWriterOptions, n: number, from = 1): Promise<void> {
  const w = AuditWriter.open(opts);
  for (let i = from; i < from + n; i++) if (!w.append(decision(i))) throw new Error(`append ${i} refused`);
  await w.close();
}

/** The events' structure: `e` an unsigned event, `C<first>-<last>` a checkpoint, `s` an event signed on its own. */
const shape = (evs: readonly Ev[]): string =>
  evs.map((e) => (isCp(e) ? `C${e.first_seq}-${e.last_seq}${e.recovered ? 'r' : ''}` : e.sig === undefined ? 'e' : 's')).join(' ');

/** Re-chains lines from index `from` on as an attacker without the key would: hashes and links right, signatures kept. */
function rehash(ls: readonly string[], from: number): string[] {
  const out = [...ls];
  let prev = from === 0 ? GENESIS_HASH : (JSON.parse(out[from - 1] as string) as AuditEvent).hash;
  for (let i = from; i < out.length; i++) {
    const e: Record<string, unknown> = { ...(JSON.parse(out[i] as string) as Record<string, unknown>), prev_hash: prev };
    e['hash'] = chainHash(prev, canonicalWithoutSeal(e));
    prev = e['hash'] as string;
    out[i] = JSON.stringify(e);
  }
  return out;
}

t.test('checkpoint mode (the default): events carry no sig; the close writes one checkpoint over them; verify checks it', async (t) => {
  const s = setup();
  const w = AuditWriter.open(s.opts);
  for (let i = 1; i <= 3; i++) t.ok(w.append(decision(i)));
  t.equal(w.checkpoints, 0, 'none before the bound or the close');
  await w.close();
  const evs = events(s.path);
  t.equal(shape(evs), 'e e e C1-3');
  t.ok(evs.slice(0, 3).every((e) => !('sig' in e)), 'no sig field at all on the events');
  t.match(evs[3], { type: 'lifecycle', event: 'checkpoint', seq: 4, detail: 'seq 1..3 (3 events)', first_seq: 1, last_seq: 3, events: 3, recovered: false, request_id: null, agent_id: null, sig: /^[A-Za-z0-9+/]{86}==$/ });
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, events: 4, checkpoints: 1, signedAlone: 0, recovered: [], unsignedTail: null });
});

t.test('by time: one checkpoint CHECKPOINT_MAX_DELAY_MS (100 ms) after the first unsigned event, from one timer, not one per event', async (t) => {
  t.equal(CHECKPOINT_MAX_DELAY_MS, 100);
  t.equal(CHECKPOINT_MAX_EVENTS, 1_000);
  const s = setup();
  const w = AuditWriter.open(s.opts);
  const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  for (let i = 1; i <= 50; i++) {
    w.append(decision(i));
    if (i % 10 === 0) await new Promise((r) => setImmediate(r));
  }
  // One checkpoint timer; the other one there may be is the write pace's (write-pace.ts), gone in 2 ms.
  t.ok(timers() - before <= 2, `50 events in 5 ticks: one checkpoint timer (${timers() - before} timers)`);
  t.ok(await until(() => w.checkpoints === 1), 'the checkpoint comes by itself');
  t.ok(await until(() => timers() - before === 0), 'and its timer is gone: an idle writer has nothing scheduled');
  await w.flush();
  const evs = events(s.path);
  t.equal(shape(evs), `${'e '.repeat(50)}C1-50`);
  const waited = Date.parse(evs[50]?.ts ?? '') - Date.parse(evs[0]?.ts ?? '');
  t.ok(waited >= CHECKPOINT_MAX_DELAY_MS - 1, `sealed ${waited} ms after the first event (not before the bound)`);
  // Idle: nothing unsigned, so the close adds nothing.
  await w.close();
  t.equal(events(s.path).length, 51, 'no checkpoint over nothing');
});

t.test('by time, with a shorter bound injected: each burst gets its checkpoint', async (t) => {
  const s = setup({ checkpointBounds: { maxDelayMs: 20 } });
  const w = AuditWriter.open(s.opts);
  for (let burst = 0; burst < 3; burst++) {
    for (let i = 0; i < 4; i++) w.append(decision(burst * 4 + i));
    t.ok(await until(() => w.checkpoints === burst + 1), `burst ${burst + 1} checkpointed`);
  }
  await w.close();
  t.equal(shape(events(s.path)), 'e e e e C1-4 e e e e C6-9 e e e e C11-14');
});

t.test('by count: a checkpoint before the 1,001st unsigned event, so none follows more than 1,000', async (t) => {
  const s = setup();
  const w = AuditWriter.open(s.opts);
  for (let i = 1; i <= 2_500; i++) w.append(decision(i)); // one tick: the timer cannot fire in between
  t.equal(w.checkpoints, 2);
  await w.close();
  const evs = events(s.path);
  t.same(evs.filter(isCp).map((e) => [e.seq, e.first_seq, e.last_seq, e.events]), [[1001, 1, 1000, 1000], [2002, 1002, 2001, 1000], [2503, 2003, 2502, 500]]);
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, events: 2503, checkpoints: 3, unsignedTail: null });
  // A smaller bound injected (tests only: the sidecar has no key for it).
  const small = setup({ checkpointBounds: { maxEvents: 3 } });
  await writeN(small.opts, 7);
  t.equal(shape(events(small.path)), 'e e e C1-3 e e e C5-7 e C9-9');
});

t.test('rotation: every rotated file ends with a checkpoint over its unsigned events, and stays under max_file_bytes', async (t) => {
  const s = setup({ maxFileBytes: 4096 });
  await writeN(s.opts, 60); // ~560 B an event: ~7 a file
  const files = [...readdirSync(join(s.dir, 'audit')).filter((f) => /\.jsonl\.\d+$/.test(f)).sort((a, b) => Number(a.split('.').pop()) - Number(b.split('.').pop())).map((f) => join(s.dir, 'audit', f)), s.path];
  t.ok(files.length >= 6, `${files.length} files`);
  for (const f of files) {
    t.ok(statSync(f).size <= 4096, `${f}: ${statSync(f).size} bytes`);
    const evs = events(f);
    const last = evs[evs.length - 1] as Ev;
    t.ok(isCp(last), `${f} ends with a checkpoint`);
    if (isCp(last)) t.same([last.first_seq, last.last_seq], [evs[0]?.seq, last.seq - 1], 'over the file\'s own events');
  }
  t.match(verifyAuditFiles([join(s.dir, 'audit')], s.pub()), { ok: true, lastSeq: 60 + files.length, unsignedTail: null });
  // A rotated file verified alone (older ones pruned) is signed to its end.
  const middle = files[2] as string;
  t.match(verifyAuditFiles([middle], s.pub(), { allowMissingStart: true }), { ok: true, unsignedTail: null });
});

t.test('a checkpoint line fits in the room kept for it, even with 16-digit seqs', async (t) => {
  const q = new WriteQueue();
  const big = 9_007_199_254_740_000;
  const sealer = new ChainSealer({ sign: (h, done) => done(Buffer.alloc((h.length / 32) * 64)), close: async () => undefined }, { seq: big, head: GENESIS_HASH }, q, () => undefined);
  const e = sealer.build(checkpointBody(big - 999, big, true));
  t.ok(ChainSealer.signedBytes(e) <= CHECKPOINT_LINE_RESERVE, `${ChainSealer.signedBytes(e)} ≤ ${CHECKPOINT_LINE_RESERVE} bytes`);
  sealer.commit(e, true);
  await new Promise((r) => setImmediate(r));
  t.equal(q.bytes, ChainSealer.signedBytes(e), 'the size predicted is the size written');
});

t.test('fsync "always": a decision is durable without waiting for any checkpoint', async (t) => {
  const s = setup({ fsync: 'always', checkpointBounds: { maxDelayMs: 60_000 } });
  const w = AuditWriter.open(s.opts);
  const waits: Array<Promise<boolean>> = [];
  for (let i = 1; i <= 20; i++) {
    w.append(decision(i));
    waits.push(w.durable() ?? Promise.reject(new Error('no wait')));
  }
  t.same(await Promise.all(waits), waits.map(() => true));
  t.equal(shape(events(s.path)), 'e '.repeat(19) + 'e', 'all on disk, fsynced, and not one checkpoint yet');
  // With a count-triggered checkpoint in between, the decision after it is still promised.
  const c = setup({ fsync: 'always', checkpointBounds: { maxEvents: 2, maxDelayMs: 60_000 } });
  const w2 = AuditWriter.open(c.opts);
  w2.append(decision(1));
  w2.append(decision(2));
  w2.append(decision(3)); // sealed after the checkpoint over 1..2
  t.equal(await w2.durable(), true);
  t.equal(shape(events(c.path)), 'e e C1-2 e');
  await w.close();
  await w2.close();
});

t.test('signatures = "event": every event signed, no checkpoint', async (t) => {
  const s = setup({ signatures: 'event' });
  await writeN(s.opts, 5);
  t.equal(shape(events(s.path)), 's s s s s');
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, events: 5, checkpoints: 0, signedAlone: 5, unsignedTail: null });
});

t.test('mixtures: an event-signed log continued with checkpoints, and back; verify accepts both', async (t) => {
  const s = setup({ signatures: 'event' });
  await writeN(s.opts, 3);
  await writeN({ ...s.opts, signatures: 'checkpoint' }, 3, 4);
  await writeN(s.opts, 2, 7);
  t.equal(shape(events(s.path)), 's s s e e e C4-6 s s');
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, events: 9, checkpoints: 1, signedAlone: 5, unsignedTail: null });
});

t.test('unsigned tail: the events after the last checkpoint are reported, not called tampering', async (t) => {
  const s = setup();
  await writeN(s.opts, 5);
  await writeN(s.opts, 4, 6);
  const ls = lines(s.path);
  t.equal(shape(events(s.path)), 'e e e e e C1-5 e e e e C7-10');
  // The last checkpoint removed: what a SIGKILL before it leaves.
  writeLines(s.path, ls.slice(0, -1));
  const r = verifyAuditFiles([s.path], s.pub());
  t.match(r, { ok: true, lastSeq: 10, checkpoints: 1, unsignedTail: { file: s.path, line: 7, first: 7, last: 10, events: 4 } });
  // No checkpoint at all.
  writeLines(s.path, ls.slice(0, 5));
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, checkpoints: 0, unsignedTail: { line: 1, first: 1, last: 5, events: 5 } });
});

t.test('tampering with a checkpointed log', async (t) => {
  const s = setup();
  await writeN(s.opts, 10);
  await writeN(s.opts, 10, 11);
  const orig = lines(s.path);
  t.equal(shape(events(s.path)), `${'e '.repeat(10)}C1-10 ${'e '.repeat(10)}C12-21`);
  const check = (ls: string[], want: { line: number; problem: RegExp }, label: string): void => {
    writeLines(s.path, ls);
    t.match(verifyAuditFiles([s.path], s.pub()), { ok: false, file: s.path, ...want }, label);
  };
  // An event inside a checkpointed range edited: its own hash no longer matches.
  const edited = [...orig];
  edited[13] = (edited[13] as string).replace('api.stripe.com', 'api.stripf.com');
  check(edited, { line: 14, problem: /^edited \(hash mismatch\)/ }, 'an edit is named by its line');
  // The same edit with the rest of the chain re-hashed (an attacker without the key): the checkpoint's signature fails.
  check(rehash(edited, 13), { line: 22, problem: /^bad signature \(the checkpoint over seq 12\.\.21\)/ }, 're-hashed: the checkpoint after it fails');
  // Re-hashed from the first range on: its checkpoint fails first. No signature is left that verifies and
  // no start event names the key (the sidecar writes one), so it reads as another key's log.
  const early = [...orig];
  early[2] = (early[2] as string).replace('req-3', 'req-X');
  check(rehash(early, 2), { line: 11, problem: /^signed by another key/ }, 'the first range re-hashed: line 11, its checkpoint');
  // The signature of a checkpoint replaced by another one's.
  const swapped = [...orig];
  const cp1 = JSON.parse(orig[10] as string) as Ev;
  const cp2 = JSON.parse(orig[21] as string) as Ev;
  swapped[21] = JSON.stringify({ ...cp2, sig: cp1.sig });
  check(swapped, { line: 22, problem: /^bad signature/ }, 'another checkpoint\'s signature');
  // A checkpoint's signature stripped.
  const { sig: _sig, ...bare } = cp2;
  check([...orig.slice(0, 21), JSON.stringify(bare)], { line: 22, problem: /^checkpoint without a signature/ }, 'no signature');
  // A checkpoint that says it covers other events (signed with the log's own key: only its holder can do this).
  const key = createPrivateKey(readFileSync(join(s.keyDir, 'audit.key')));
  const lying = rehash([...orig.slice(0, 21), JSON.stringify({ ...cp2, first_seq: 15, events: 7 })], 21);
  const l = JSON.parse(lying[21] as string) as Ev;
  lying[21] = JSON.stringify({ ...l, sig: signHash(key, l.hash) });
  check(lying, { line: 22, problem: /^checkpoint does not match the events before it \(it covers seq 15\.\.21, 7 events; the unsigned events before it: seq 12\.\.21\)/ }, 'coverage checked');
  // The last checkpoint removed, events after it kept: an unsigned tail (and the edit inside it is still an edit).
  writeLines(s.path, orig.slice(0, 21));
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, unsignedTail: { first: 12, last: 21, events: 10 } });
  const deleted = orig.filter((_, i) => i !== 15);
  check(deleted, { line: 16, problem: /^deleted \(seq 16 missing\)/ }, 'a deleted event inside a range');
});

t.test('another key: a checkpointed log verified with the wrong key says so; the log\'s own key recorded in it means tampering', async (t) => {
  const s = setup();
  const w = AuditWriter.open(s.opts);
  w.append({ type: 'lifecycle', event: 'start', detail: `policy_hash=x mode=enforce audit_key=${w.keyFingerprint}`, request_id: null, agent_id: null });
  for (let i = 1; i <= 5; i++) w.append(decision(i));
  await w.close();
  const other = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
  t.match(verifyAuditFiles([s.path], other), { ok: false, line: 7, problem: /^signed by another key \(fingerprint sha256:[0-9a-f]{32}\), not this one/ });
  // All of it re-hashed: no signature verifies, but the start event names this very key: a bad signature, not another key.
  writeLines(s.path, rehash(lines(s.path).map((l, i) => (i === 2 ? l.replace('req-2', 'req-Z') : l)), 0));
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: false, line: 7, problem: /^bad signature \(the checkpoint over seq 1\.\.6\)/ });
});

t.test('recovery: a log ending unsigned (killed before its checkpoint) gets a recovered checkpoint first at the next open', async (t) => {
  const s = setup();
  await writeN(s.opts, 4);
  await writeN(s.opts, 3, 5);
  writeLines(s.path, lines(s.path).slice(0, -1)); // the kill: seq 6..8 written, their checkpoint not
  const w = AuditWriter.open(s.opts);
  t.equal(w.seq, 9, 'the recovery checkpoint is sealed at open, before anything else');
  w.append(decision(9));
  await w.close();
  const evs = events(s.path);
  t.equal(shape(evs), 'e e e e C1-4 e e e C6-8r e C10-10');
  t.match(evs[8], { detail: 'seq 6..8 (3 events), signed at recovery, not when written', recovered: true, events: 3 });
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, checkpoints: 3, recovered: [{ file: s.path, line: 9, first: 6, last: 8, events: 3 }], unsignedTail: null });
  // Recovery with signatures = "event" too: the unsigned tail is still signed at open.
  const e = setup();
  await writeN(e.opts, 2);
  writeLines(e.path, lines(e.path).slice(0, -1));
  await writeN({ ...e.opts, signatures: 'event' }, 1, 3);
  t.equal(shape(events(e.path)), 'e e C1-2r s');
  // A log that is nothing but unsigned events (and the torn line a kill left), then a restart: the repair follows the recovery checkpoint.
  const u = setup();
  await writeN(u.opts, 3);
  writeFileSync(u.path, lines(u.path).slice(0, -1).map((l) => `${l}\n`).join('') + '{"torn');
  const w3 = AuditWriter.open(u.opts);
  await w3.close();
  t.match(events(u.path).map((x) => x.event ?? x.type), ['decision', 'decision', 'decision', 'checkpoint', 'audit_repaired', 'checkpoint']);
  t.equal(shape(events(u.path)), 'e e e C1-3r e C5-5');
});

t.test('recovery refuses an unsigned tail that does not chain back to a signature', async (t) => {
  const s = setup();
  await writeN(s.opts, 3);
  await writeN(s.opts, 4, 4);
  const ls = lines(s.path).slice(0, -1); // unsigned tail: seq 5..8
  const edited = [...ls];
  edited[5] = (edited[5] as string).replace('req-5', 'req-Q');
  writeLines(s.path, edited);
  t.throws(() => AuditWriter.open(s.opts), { code: 'FIRMA_AUDIT_CORRUPT', message: /audit\.jsonl:6: edited \(hash mismatch\) \(one of the last events, after the last signature\)/ });
  // The tail re-chained from another head than the checkpoint's: the link to the signature breaks.
  const detached: Record<string, unknown> = { ...(JSON.parse(ls[4] as string) as Record<string, unknown>), prev_hash: 'f'.repeat(64) };
  detached['hash'] = chainHash('f'.repeat(64), canonicalWithoutSeal(detached));
  writeLines(s.path, rehash([...ls.slice(0, 4), JSON.stringify(detached), ...ls.slice(5)], 5));
  t.throws(() => AuditWriter.open(s.opts), { code: 'FIRMA_AUDIT_CORRUPT', message: /audit\.jsonl:4: broken chain/ });
  // The events a checkpoint signs are checked back to it at open too.
  const c = setup();
  await writeN(c.opts, 3);
  writeLines(c.path, lines(c.path).map((l, i) => (i === 1 ? l.replace('req-2', 'req-W') : l)));
  t.throws(() => AuditWriter.open(c.opts), { code: 'FIRMA_AUDIT_CORRUPT', message: /audit\.jsonl:2: edited/ });
  t.notOk(existsSync(`${c.path}.1`));
});

t.test('tail: events without sig are shown as always; routine checkpoints are not, recovered ones are', async (t) => {
  const s = setup();
  await writeN(s.opts, 2);
  writeLines(s.path, lines(s.path).slice(0, -1));
  await writeN(s.opts, 1, 3);
  const out: string[] = [];
  const view = new RequestTail({}, (l) => out.push(l));
  for (const e of events(s.path)) view.push(e);
  view.flush();
  t.equal(out.length, 4, out.join('\n'));
  t.ok(out.some((l) => /lifecycle {2}checkpoint {2}seq 1\.\.2 \(2 events\), signed at recovery, not when written$/.test(l)), 'the recovery checkpoint is shown');
  t.equal(out.filter((l) => / {2}allow {2}/.test(l)).length, 3, 'and every unsigned decision');
  t.notMatch(out.join('\n'), /seq 4\.\.4/, 'the closing checkpoint is not shown');
});
