import t from 'tap';
import { generateKeyPairSync, sign } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { canonicalEvent, canonicalJson, chainHash, GENESIS_HASH, signHash, verifyHashSig } from '../../../src/audit/chain.js';
import { createSigner, defaultBackend, inlineSigner, WorkerSigner, type Ed25519Backend } from '../../../src/audit/signer.js';
import { redactQuery, type AuditEvent, type AuditEventBody } from '../../../src/audit/events.js';
import { loadOrCreateAuditKeys } from '../../../src/audit/keys.js';
import { filterEvent, formatEventLine } from '../../../src/audit/tail.js';
import { verifyAuditFiles } from '../../../src/audit/verify.js';
import { AuditWriter, type AuditWriterOptions } from '../../../src/audit/writer.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'firma-audit-'));

function decision(i: number): AuditEventBody {
  return {
    type: 'decision', kind: 'request', request_id: `req-${i}`, agent_id: `agent-${i % 3}`,
    method: 'POST', scheme: 'https', host: 'api.stripe.com', port: 443, path: redactQuery('/v1/refunds', `amount=${i}&key=sk_live_x`),
    action_class: 'payments.refund', risk: 'high', decision: i % 5 === 0 ? 'deny' : 'allow', stage: 'policy', reason: 'limit',
    rule: 'limit.refunds', policy_ids: ['p1', 'p2'], policy_hash: 'abc', token_id: 'jti-1', would_deny: null, approval_id: null, mcp: null,
  };
}
function outcome(i: number): AuditEventBody {
  return {
    type: 'outcome', request_id: `req-${i}`, agent_id: 'agent-1', status: 200, error: null, error_code: null,
    response_hash: `sha256:${'ab'.repeat(32)}`, bytes_in: 10, bytes_out: 2000, duration_ms: 12.5, credential_injected: true, approval_id: null,
  };
}

function setup(extra: Partial<AuditWriterOptions> = {}): { dir: string; path: string; keyDir: string; opts: AuditWriterOptions; pub: () => string } {
  const dir = tmp();
  const path = join(dir, 'audit', 'audit.jsonl');
  const keyDir = join(dir, 'keys');
  // Every event signed on its own: this file is about the chain and per-event signatures (signatures =
  // "event"); the default, checkpoints, is tested in checkpoint.test.ts.
  const opts: AuditWriterOptions = { path, keyDir, fsync: 'never', maxFileBytes: 1 << 30, signatures: 'event', ...extra };
  return { dir, path, keyDir, opts, pub: () => readFileSync(join(keyDir, 'audit.pub'), 'utf8') };
}

async function writeN(opts: AuditWriterOptions, n: number): Promise<void> {
  const w = AuditWriter.open(opts);
  for (let i = 1; i <= n; i++) if (!w.append(i % 2 ? decision(i) : outcome(i))) throw new Error(`append ${i} refused`);
  await w.close();
}

const lines = (p: string): string[] => readFileSync(p, 'utf8').split('\n').slice(0, -1);
const writeLines = (p: string, ls: string[]): void => writeFileSync(p, ls.map((l) => `${l}\n`).join(''));

t.test('redactQuery keeps keys, redacts values', async (t) => {
  t.equal(redactQuery('/v1/x', 'key=secret&b=2'), '/v1/x?key=REDACTED&b=REDACTED');
  t.equal(redactQuery('/v1/x', null), '/v1/x');
  t.equal(redactQuery('/v1/x', ''), '/v1/x');
  t.equal(redactQuery('/p', 'flag&a=&c=x=y'), '/p?flag&a=REDACTED&c=REDACTED');
});

t.test('canonical JSON does not depend on key order', async (t) => {
  const a = canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 'é' }], c: null }, u: undefined });
  const b = canonicalJson({ a: { c: null, d: [1, { y: 'é', z: 1 }] }, b: 1 });
  t.equal(a, b);
  t.equal(a, '{"a":{"c":null,"d":[1,{"y":"é","z":1}]},"b":1}');
  t.equal(chainHash(GENESIS_HASH, a), chainHash(GENESIS_HASH, b));
});

t.test('keys: created 0600/0644, insecure key refused', async (t) => {
  const dir = join(tmp(), 'k');
  const k = loadOrCreateAuditKeys(dir);
  t.equal(statSync(k.privateKeyPath).mode & 0o777, 0o600);
  t.equal(statSync(k.publicKeyPath).mode & 0o777, 0o644);
  t.equal(loadOrCreateAuditKeys(dir).publicKeyPem, k.publicKeyPem, 'reused');
  chmodSync(k.privateKeyPath, 0o640);
  t.throws(() => loadOrCreateAuditKeys(dir), { code: 'FIRMA_AUDIT_KEY_INSECURE', message: /chmod 600/ });
});

t.test('1,000 events verify; tampering is named by line', async (t) => {
  const s = setup();
  await writeN(s.opts, 1000);
  const ok = verifyAuditFiles([s.path], s.pub());
  t.match(ok, { ok: true, events: 1000, lastSeq: 1000 });
  const orig = lines(s.path);
  t.notOk(readFileSync(s.path, 'utf8').includes('sk_live'), 'query values redacted');
  const e1 = JSON.parse(orig[0] ?? '') as AuditEvent;
  t.equal(e1.prev_hash, GENESIS_HASH);

  const check = (ls: string[], line: number, problem: RegExp): void => {
    writeLines(s.path, ls);
    const r = verifyAuditFiles([s.path], s.pub());
    t.match(r, { ok: false, file: s.path, line, problem }, problem.source);
  };
  // Edit one byte (inside the host name of line 501, a decision event).
  const edited = [...orig];
  edited[500] = (edited[500] ?? '').replace('api.stripe.com', 'api.stripf.com');
  t.not(edited[500], orig[500]);
  check(edited, 501, /^edited/);
  // Edit one byte so the line is no longer JSON.
  const broken = [...orig];
  broken[9] = (broken[9] ?? '').replace('{', '[');
  check(broken, 10, /^not JSON/);
  // Delete line 300.
  check(orig.filter((_, i) => i !== 299), 300, /^deleted/);
  // Delete the first line.
  check(orig.slice(1), 1, /^deleted/);
  // Swap lines 700 and 701.
  const swapped = [...orig];
  swapped[699] = orig[700] ?? '';
  swapped[700] = orig[699] ?? '';
  check(swapped, 700, /^reordered/);
  // Replay a copy of line 5 after line 600.
  check([...orig.slice(0, 600), orig[4] ?? '', ...orig.slice(600)], 601, /^inserted/);
  // A forged line, validly chained and hashed, signed with another key, inserted as line 401.
  const other = generateKeyPairSync('ed25519').privateKey;
  const prev = JSON.parse(orig[399] ?? '') as AuditEvent;
  const { hash: _h, sig: _s, ...body } = { ...(JSON.parse(orig[400] ?? '') as AuditEvent), seq: prev.seq + 1, prev_hash: prev.hash, host: 'evil.example' };
  const canonical = canonicalJson(body);
  const hash = chainHash(prev.hash, canonical);
  const forged = JSON.stringify({ ...body, hash, sig: signHash(other, hash) });
  check([...orig.slice(0, 400), forged, ...orig.slice(400)], 401, /^bad signature/);
  // A signature that is not even valid for its own key.
  const badSig = [...orig];
  const e = JSON.parse(orig[800] ?? '') as AuditEvent;
  badSig[800] = JSON.stringify({ ...e, sig: sign(null, Buffer.from('x'), other).toString('base64') });
  check(badSig, 801, /^bad signature/);
  // Truncated tail line.
  writeFileSync(s.path, `${orig.slice(0, 10).join('\n')}\n${(orig[10] ?? '').slice(0, 40)}`);
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: false, line: 11, problem: /not JSON/ });
});

t.test('restart continues seq and chain; an edited last event refuses to open', async (t) => {
  const s = setup();
  await writeN(s.opts, 10);
  const w = AuditWriter.open(s.opts);
  t.equal(w.seq, 10);
  const head = w.headHash;
  w.append(decision(11));
  await w.close();
  const e11 = JSON.parse(lines(s.path)[10] ?? '') as AuditEvent;
  t.equal(e11.seq, 11);
  t.equal(e11.prev_hash, head);
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, lastSeq: 11 });
  // (A torn last line is moved aside instead: recovery.test.ts.)
  const ls = lines(s.path);
  ls[10] = (ls[10] ?? '').replace('api.stripe.com', 'api.stripe.org');
  writeLines(s.path, ls);
  t.throws(() => AuditWriter.open(s.opts), { code: 'FIRMA_AUDIT_CORRUPT', message: /audit\.jsonl:11: last event: edited/ });
});

t.test('rotation keeps the chain; a missing middle file is detected', async (t) => {
  const s = setup({ maxFileBytes: 64 * 1024 });
  await writeN(s.opts, 400); // ~700 B/event → about 5 files
  await writeN(s.opts, 100); // restart resumes from the live file
  const base = join(s.dir, 'audit');
  const files = [1, 2, 3].map((n) => `${s.path}.${n}`);
  for (const f of files) t.ok(existsSync(f), f);
  for (const f of [...files, s.path]) t.ok(statSync(f).size <= 64 * 1024, 'never past maxFileBytes');
  t.equal(statSync(s.path).mode & 0o777, 0o600);
  t.equal(statSync(base).mode & 0o777, 0o700);
  const all = verifyAuditFiles([base], s.pub());
  t.match(all, { ok: true, events: 500, lastSeq: 500 });
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true }, 'the base path expands to the rotated set');
  const first2 = JSON.parse(lines(`${s.path}.2`)[0] ?? '') as AuditEvent;
  const last1 = lines(`${s.path}.1`);
  t.equal(first2.prev_hash, (JSON.parse(last1[last1.length - 1] ?? '') as AuditEvent).hash, 'new file links to the previous');
  rmSync(`${s.path}.2`);
  t.match(verifyAuditFiles([base], s.pub()), { ok: false, file: `${s.path}.3`, line: 1, problem: /^deleted/ });
  t.match(verifyAuditFiles([`${s.path}.1`, `${s.path}.3`], s.pub()), { ok: false, file: `${s.path}.3`, line: 1 });
});

t.test('write failure (/dev/full, then a directory) → unavailable; recovery loses nothing', { skip: !existsSync('/dev/full') }, async (t) => {
  const s = setup({ fsync: 'always' });
  mkdirSync(join(s.dir, 'audit'), { recursive: true, mode: 0o700 });
  symlinkSync('/dev/full', s.path);
  const states: boolean[] = [];
  const w = AuditWriter.open({ ...s.opts, onStateChange: (a) => states.push(a) });
  for (let i = 1; i <= 5; i++) t.ok(w.append(decision(i)));
  // Signed on the worker thread, then written: the failure shows once the first write is tried.
  for (let i = 0; i < 300 && w.available; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(w.available, false, 'ENOSPC → unavailable');
  t.same(states, [false]);
  // Swap the device for a directory: reopening now fails too (EISDIR) and events keep queueing.
  unlinkSync(s.path);
  mkdirSync(s.path);
  for (let i = 6; i <= 10; i++) t.ok(w.append(outcome(i)));
  await new Promise((r) => setTimeout(r, 600));
  t.equal(w.available, false);
  rmSync(s.path, { recursive: true });
  await w.flush();
  t.equal(w.available, true, 'recovered');
  t.same(states, [false, true]);
  await w.close();
  const evs = lines(s.path).map((l) => JSON.parse(l) as AuditEvent);
  t.same(evs.map((e) => e.seq), Array.from({ length: 12 }, (_, i) => i + 1), 'gapless, in order');
  t.match(evs[5], { type: 'lifecycle', event: 'audit_failed', detail: 'ENOSPC' });
  t.match(evs[11], { type: 'lifecycle', event: 'audit_recovered' });
  t.same(evs.filter((e) => e.type !== 'lifecycle').map((e) => e.request_id), Array.from({ length: 10 }, (_, i) => `req-${i + 1}`));
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, events: 12 });
});

t.test('queue bound fails closed while unavailable', { skip: !existsSync('/dev/full') }, async (t) => {
  const s = setup();
  mkdirSync(join(s.dir, 'audit'), { recursive: true });
  symlinkSync('/dev/full', s.path);
  const w = AuditWriter.open(s.opts);
  let accepted = 0;
  while (w.append(decision(accepted + 1)) && accepted < 20_000) accepted++;
  t.equal(accepted, 10_000, 'the 10,001st event is refused, not queued');
  for (let i = 0; i < 500 && w.available; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(w.available, false);
  t.equal(w.append(decision(1)), false, 'still refused while unavailable');
  await t.rejects(w.close(), { code: 'FIRMA_AUDIT_UNAVAILABLE' });
  t.equal(w.append(decision(1)), false, 'closed');
});

t.test('tail formatting and filters', async (t) => {
  const s = setup();
  const w = AuditWriter.open(s.opts);
  w.append(decision(5));
  w.append(outcome(5));
  w.append({ type: 'lifecycle', event: 'start', detail: 'v0.1.0', request_id: null, agent_id: null });
  await w.close();
  const [d, o, l] = lines(s.path).map((x) => JSON.parse(x) as AuditEvent) as [AuditEvent, AuditEvent, AuditEvent];
  t.match(formatEventLine(d), /^\S+Z {2}deny {2}agent-2 {2}POST api\.stripe\.com\/v1\/refunds\?amount=REDACTED&key=REDACTED {2}payments\.refund\/high {2}policy:limit \(limit\.refunds\) {2}req=req-5$/);
  t.match(formatEventLine(o), /outcome {2}agent-1 {2}200 {2}in=10B out=2000B {2}12\.5ms {2}cred {2}req=req-5$/);
  t.match(formatEventLine(l), /lifecycle {2}start {2}v0\.1\.0$/);
  t.ok(filterEvent(d, { decision: 'deny', agent: 'agent-2', host: 'API.stripe.com' }));
  t.notOk(filterEvent(d, { decision: 'allow' }));
  t.notOk(filterEvent(o, { host: 'api.stripe.com' }));
  t.ok(filterEvent(o, { agent: 'agent-1' }));
});

t.test('measurement (informational)', async (t) => {
  const s = setup({ fsync: 'interval', fsyncIntervalMs: 100 });
  const w = AuditWriter.open(s.opts);
  const N = 20_000;
  for (let i = 0; i < 500; i++) w.append(decision(i)); // warm-up
  await w.flush();
  // Bursts of 1,000 with a turn of the event loop between them, as request traffic would give the writer.
  let appendNs = 0;
  let t0 = process.hrtime.bigint();
  for (let b = 0; b < N / 1000; b++) {
    const t1 = process.hrtime.bigint();
    for (let i = 0; i < 1000; i++) if (!w.append(i % 2 ? decision(i) : outcome(i))) throw new Error('refused');
    appendNs += Number(process.hrtime.bigint() - t1);
    await new Promise((r) => setImmediate(r));
    // Traffic slows when the writer falls behind (requests wait on the network); a synthetic burst must too.
    while (w.pending > 4000) await new Promise((r) => setTimeout(r, 1));
  }
  await w.flush();
  const totalNs = Number(process.hrtime.bigint() - t0);
  await w.close();
  // Ed25519 signing alone, and the caller-side cost of handing an event to a worker instead.
  const k = loadOrCreateAuditKeys(s.keyDir).privateKey;
  t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) signHash(k, chainHash(GENESIS_HASH, String(i)));
  const signNs = Number(process.hrtime.bigint() - t0);
  t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) chainHash(GENESIS_HASH, canonicalJson({ ...decision(i), v: 1, seq: i, ts: new Date().toISOString(), prev_hash: GENESIS_HASH }));
  const hashNs = Number(process.hrtime.bigint() - t0);
  const worker = new Worker('const { parentPort } = require("node:worker_threads"); let n = 0; parentPort.on("message", () => { if (++n === ' + N + ') parentPort.postMessage(n); });', { eval: true });
  await new Promise((r) => worker.once('online', r));
  const done = new Promise((r) => worker.once('message', r));
  t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) worker.postMessage(decision(i));
  const postNs = Number(process.hrtime.bigint() - t0);
  await done;
  await worker.terminate();
  t.comment(`append (hash on the caller, signature on the worker) ${(appendNs / N / 1000).toFixed(1)} µs/event on the caller; Ed25519 sign alone (on the worker, off the caller) ~${(signNs / N / 1000).toFixed(1)} µs, canonical JSON+SHA-256 ${(hashNs / N / 1000).toFixed(1)} µs; postMessage to a worker ${(postNs / N / 1000).toFixed(1)} µs; writer sustains ${Math.round(N / (totalNs / 1e9))} events/s (fsync interval, incl. sealing)`);
  t.match(verifyAuditFiles([s.path], s.pub()), { ok: true, events: N + 500 });
});

t.test('signing worker: signatures verify and keep their order; a dying worker falls back to inline signing', async (t) => {
  const s = setup();
  const keys = loadOrCreateAuditKeys(s.keyDir);
  const hashes = (from: number, n: number): Buffer => Buffer.concat(Array.from({ length: n }, (_, i) => Buffer.from(chainHash(GENESIS_HASH, String(from + i)), 'hex')));
  const check = (h: Buffer, sigs: Buffer): boolean =>
    sigs.length === (h.length / 32) * 64 &&
    Array.from({ length: h.length / 32 }, (_, i) => verifyHashSig(keys.publicKey, h.subarray(i * 32, i * 32 + 32).toString('hex'), sigs.subarray(i * 64, i * 64 + 64).toString('base64'))).every(Boolean);
  for (const [label, source, backend] of [
    ['worker (libsodium)', undefined, defaultBackend()],
    ['worker (node:crypto)', undefined, { kind: 'node' } as Ed25519Backend],
    ['worker exits on its first batch', "require('node:worker_threads').parentPort.on('message', () => process.exit(3));", defaultBackend()],
    ['worker fails to start', 'throw new Error("boom")', { kind: 'node' } as Ed25519Backend],
  ] as const) {
    const signer = new WorkerSigner(keys.privateKey, source === undefined ? { backend } : { workerSource: source, backend });
    const order: number[] = [];
    const results = await Promise.all([0, 1, 2, 3].map((b) => new Promise<boolean>((resolve) => {
      const h = hashes(b * 10, 10);
      signer.sign(h, (sigs) => {
        order.push(b);
        resolve(check(h, sigs));
      });
    })));
    t.same(results, [true, true, true, true], `${label}: every signature verifies`);
    t.same(order, [0, 1, 2, 3], `${label}: answered in order`);
    await signer.close();
  }
});

t.test('Ed25519 backends: libsodium (sodium-native, installed) and node:crypto sign the same bytes', async (t) => {
  const keys = loadOrCreateAuditKeys(setup().keyDir);
  const backend = defaultBackend();
  t.equal(backend.kind, 'sodium', 'sodium-native loads here (it is a dependency)');
  const h = Buffer.concat(Array.from({ length: 20 }, (_, i) => Buffer.from(chainHash(GENESIS_HASH, String(i)), 'hex')));
  const bySodium = inlineSigner(keys.privateKey, backend)(h);
  const byNode = inlineSigner(keys.privateKey, { kind: 'node' })(h);
  t.ok(bySodium.equals(byNode), 'Ed25519 is deterministic: identical signatures');
  t.ok(verifyHashSig(keys.publicKey, h.subarray(0, 32).toString('hex'), bySodium.subarray(0, 64).toString('base64')), 'verified by node:crypto');
});

t.test('signer choice: inline on one CPU (no thread switch to pay for), a worker with more', async (t) => {
  const keys = loadOrCreateAuditKeys(setup().keyDir);
  const h = Buffer.from(chainHash(GENESIS_HASH, 'x'), 'hex');
  for (const cpus of [1, 2]) {
    const signer = createSigner(keys.privateKey, cpus);
    t.equal(signer instanceof WorkerSigner, cpus > 1, `${cpus} CPU(s)`);
    const sig = await new Promise<Buffer>((resolve) => signer.sign(h, resolve));
    t.ok(verifyHashSig(keys.publicKey, h.toString('hex'), sig.toString('base64')));
    await signer.close();
  }
});

t.test('canonical JSON: the fast paths write exactly what JSON.stringify with sorted keys writes', async (t) => {
  const ref = (v: unknown): string => {
    if (Array.isArray(v)) return `[${v.map((x) => ref(x)).join(',')}]`;
    if (v !== null && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      return `{${Object.keys(o).sort().filter((k) => o[k] !== undefined).map((k) => `${JSON.stringify(k)}:${ref(o[k])}`).join(',')}}`;
    }
    return JSON.stringify(v) ?? 'null';
  };
  // A seeded generator (xorshift), so a failure is reproducible.
  let seed = 0x2545f491;
  const rnd = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const CHARS = ['a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\u0000', '\u001f', '\u007f', 'é', '€', '\u2028', '😀', '\ud800', '\udc00', '<', '&'];
  const str = (): string => Array.from({ length: rnd(8) }, () => CHARS[rnd(CHARS.length)] ?? '').join('');
  const NUMS = [0, -0, 1, -1, 1.5, 1e21, 1e-7, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, 443, 0.1 + 0.2];
  const value = (depth: number): unknown => {
    switch (rnd(depth > 2 ? 5 : 7)) {
      case 0: return str();
      case 1: return NUMS[rnd(NUMS.length)];
      case 2: return rnd(2) === 0;
      case 3: return null;
      case 4: return undefined;
      case 5: return Array.from({ length: rnd(4) }, () => value(depth + 1) ?? null);
      default: return Object.fromEntries(Array.from({ length: rnd(5) }, () => [str(), value(depth + 1)]));
    }
  };
  let mismatches = 0;
  for (let i = 0; i < 3000; i++) {
    const body = Object.fromEntries(Array.from({ length: rnd(12) }, () => [str(), value(0)]));
    const integrity = { v: 1, seq: i, ts: str(), prev_hash: str() };
    const expected = ref({ ...body, ...integrity });
    if (canonicalJson({ ...body, ...integrity }) !== expected || canonicalEvent(body, integrity) !== expected) mismatches++;
  }
  t.equal(mismatches, 0, '3,000 random events, unicode, controls, lone surrogates, odd numbers');
  t.equal(canonicalEvent({ a: 1, hash: 'h', sig: 's' }, { v: 1 }), '{"a":1,"v":1}', 'hash and sig are never hashed');
});
