import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { freePort, RedisServer } from '../helpers/redis.js';
import { createLogger } from '../../src/core/log.js';
import { createRateLimiter } from '../../src/connector/rate-limit/create.js';
import type { Acquired, BucketLimit, RateLimiter, RedisLimitConfig } from '../../src/connector/rate-limit/types.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TIMEOUT_MS = 300;
const RPS = 20;
const BURST = 5;

/** The compiled module for the child process; rebuilt when dist/ is older than the source. */
function ensureDist(): string {
  const out = `${root}dist/connector/rate-limit/create.js`;
  const stale = (src: string, dist: string): boolean => {
    try {
      return statSync(`${root}${dist}`).mtimeMs < statSync(`${root}${src}`).mtimeMs;
    } catch {
      return true;
    }
  };
  if (['create', 'local', 'redis', 'types'].some((f) => stale(`src/connector/rate-limit/${f}.ts`, `dist/connector/rate-limit/${f}.js`))) {
    // Other modules' type errors do not stop tsc from emitting ours; only a missing output fails.
    spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'ignore' });
  }
  statSync(out);
  return out;
}

/**
 * Callers on one limiter, `loops` at a time, from `startAt` to `stopAt` (epoch ms, so another process
 * can share the window); each waits at most 200 ms, never past the window. Returns the grants.
 */
async function hammer(lim: RateLimiter, bucket: string, startAt: number, stopAt: number, loops = 4): Promise<number> {
  const toPerf = (epoch: number) => performance.now() + (epoch - Date.now());
  const start = toPerf(startAt);
  const stop = toPerf(stopAt);
  await sleep(Math.max(0, start - performance.now()));
  let granted = 0;
  const loop = async () => {
    while (performance.now() < stop) {
      const r = await lim.acquire(bucket, Math.min(performance.now() + 200, stop));
      if (r.ok) granted++;
    }
  };
  await Promise.all(Array.from({ length: loops }, loop));
  return granted;
}

const CHILD = `
const [modUrl, cfgJson, bucketsJson, bucket, startAt, stopAt] = process.argv.slice(1);
const { createRateLimiter } = await import(modUrl);
const lim = createRateLimiter(JSON.parse(bucketsJson), JSON.parse(cfgJson));
if (!(await lim.ready())) { console.log(JSON.stringify({ error: 'redis not ready' })); process.exit(1); }
const toPerf = (epoch) => performance.now() + (epoch - Date.now());
const start = toPerf(Number(startAt)), stop = toPerf(Number(stopAt));
await new Promise((r) => setTimeout(r, Math.max(0, start - performance.now())));
let granted = 0;
const loop = async () => {
  while (performance.now() < stop) {
    const r = await lim.acquire(bucket, Math.min(performance.now() + 200, stop));
    if (r.ok) granted++;
  }
};
await Promise.all([loop(), loop(), loop(), loop()]);
await lim.close();
console.log(JSON.stringify({ granted }));
`;

function runChild(modPath: string, cfg: RedisLimitConfig, buckets: BucketLimit[], bucket: string, startAt: number, stopAt: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--input-type=module', '-e', CHILD, new URL(`file://${modPath}`).href, JSON.stringify(cfg), JSON.stringify(buckets), bucket, String(startAt), String(stopAt)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      try {
        const parsed = JSON.parse(out.trim()) as { granted?: number; error?: string };
        if (code !== 0 || parsed.granted === undefined) reject(new Error(`child failed (${code}): ${out}`));
        else resolve(parsed.granted);
      } catch {
        reject(new Error(`child output not JSON (${code}): ${out}`));
      }
    });
  });
}

async function timed(p: Promise<Acquired>): Promise<{ r: Acquired; ms: number }> {
  const start = performance.now();
  const r = await p;
  return { r, ms: performance.now() - start };
}

t.test('shared buckets through a real redis-server', async (t) => {
  const server = new RedisServer(await freePort());
  await server.start();
  const inspect = new Redis(server.url, { maxRetriesPerRequest: 0, retryStrategy: () => 200 });
  inspect.on('error', () => {});
  const prefix = `firmatest${process.pid}`;
  const deny: RedisLimitConfig = { url: server.url, key_prefix: prefix, on_error: 'deny', timeout_ms: TIMEOUT_MS };
  const local: RedisLimitConfig = { ...deny, on_error: 'local' };
  const buckets: BucketLimit[] = ['joint', 'reserve', 'outage', 'fallback'].map((b) => ({ bucket: b, rps: RPS, burst: BURST }));
  // Refills once a second: a loaded machine cannot refill it between two calls of a test.
  buckets.push({ bucket: 'slow', rps: 1, burst: BURST });
  const a = createRateLimiter(buckets, deny);
  const b = createRateLimiter(buckets, deny);
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
      cb();
    },
  });
  const f = createRateLimiter(buckets, local, { log: createLogger('info', { destination: sink }) });
  t.teardown(async () => {
    await Promise.all([a.close(), b.close(), f.close()]);
    inspect.disconnect();
    await server.kill();
  });
  t.equal(await a.ready(), true, 'limiter a connected');
  t.equal(await b.ready(), true, 'limiter b connected');
  t.equal(await f.ready(), true, 'limiter f connected');

  await t.test('two clients and a second process jointly hold rps 20, burst 5', async (t) => {
    const mod = ensureDist();
    const startAt = Date.now() + 1500; // time for the child to start and connect
    const stopAt = startAt + 2000;
    const [ga, gb, gc] = await Promise.all([
      hammer(a, 'joint', startAt, stopAt),
      hammer(b, 'joint', startAt, stopAt),
      runChild(mod, deny, buckets, 'joint', startAt, stopAt),
    ]);
    const total = ga + gb + gc;
    const expected = BURST + RPS * 2; // 45: a full bucket, then 2 s of refill
    t.ok(total <= expected + 1, `no more than burst + 2·rps granted in total (${ga} + ${gb} + ${gc} = ${total})`);
    t.ok(total >= expected * 0.85, `close to burst + 2·rps (${total} of ${expected})`);
    t.ok(ga > 0 && gb > 0 && gc > 0, 'every replica got a share');
    const keys = await inspect.keys(`${prefix}:*`);
    t.same(keys, [`${prefix}:rl:{joint}`], 'one key per bucket, no queued state');
    const ttl = await inspect.pttl(`${prefix}:rl:{joint}`);
    t.ok(ttl > 0 && ttl <= 1000 + (BURST * 1000) / RPS + 50, `the key expires once the bucket is full again (${ttl} ms)`);
  });

  await t.test('reservations: waits within the deadline, refusals at once', async (t) => {
    // A refusal, on the bucket that refills once a second (from its first grant, on the server's clock,
    // which runs after this local reading).
    const slowFirst = performance.now();
    for (let i = 0; i < BURST; i++) t.same(await a.acquire('slow', performance.now() + 1), { ok: true, waitedMs: 0 });
    const refused = await timed(b.acquire('slow', performance.now() + 1));
    t.equal(refused.r.ok, false, 'no token on the other client either');
    if (!refused.r.ok) {
      t.equal(refused.r.reason, 'rate_limited');
      // The next token is due 1 s after the first grant; retryAfter counts from the refusal.
      const due = slowFirst + 1000 - performance.now();
      t.ok(refused.r.retryAfterMs >= Math.floor(due) && refused.r.retryAfterMs <= 1001, `retryAfter = time to the next token (${refused.r.retryAfterMs}, due in ${due.toFixed(1)})`);
    }
    // Waits, on the 20 rps bucket: emptied, then two waiters get the next two tokens in turn.
    const firstGrant = performance.now();
    for (let i = 0; i < BURST; i++) t.same(await a.acquire('reserve', performance.now() + 1), { ok: true, waitedMs: 0 });
    t.ok(refused.ms < 30, `refused without waiting (${refused.ms.toFixed(1)} ms)`);
    const grantedAt = async (lim: RateLimiter) => {
      const called = performance.now();
      const r = await lim.acquire('reserve', called + 500);
      return r.ok ? called + r.waitedMs - firstGrant : NaN;
    };
    const at = (await Promise.all([grantedAt(a), grantedAt(b)])).sort((x, y) => x - y);
    t.ok(at[0]! >= 49 && at[0]! < 250, `first waiter served ≈ 50 ms after the burst (${at[0]!.toFixed(1)})`);
    t.ok(at[1]! >= 99 && at[1]! < 300, `second ≈ 100 ms after (${at[1]!.toFixed(1)})`);
    // A flushed script cache (or a restarted server) is handled transparently.
    await inspect.script('FLUSH');
    const again = await a.acquire('reserve', performance.now() + 1000);
    t.equal(again.ok, true, 'works after SCRIPT FLUSH');
  });

  await t.test('Redis stalled (SIGSTOP): deny answers within timeout_ms, local falls back', async (t) => {
    server.signal('SIGSTOP');
    try {
      const [d, l] = await Promise.all([timed(a.acquire('outage', performance.now() + 5000)), timed(f.acquire('outage', performance.now() + 5000))]);
      t.same(d.r, { ok: false, reason: 'limiter_unavailable', retryAfterMs: 1000 }, 'deny: limiter_unavailable');
      t.ok(d.ms >= TIMEOUT_MS - 20 && d.ms < TIMEOUT_MS + 400, `deny bounded by timeout_ms (${d.ms.toFixed(0)} ms)`);
      t.equal(l.r.ok, true, 'local: served by the per-replica bucket');
      t.ok(l.ms < TIMEOUT_MS + 400, `local fallback bounded too (${l.ms.toFixed(0)} ms)`);
    } finally {
      server.signal('SIGCONT');
    }
  });

  await t.test('Redis killed: deny fast, local falls back; restarted: shared again', async (t) => {
    await server.kill();
    const d = await timed(a.acquire('outage', performance.now() + 5000));
    t.equal(d.r.ok, false);
    if (!d.r.ok) t.equal(d.r.reason, 'limiter_unavailable');
    t.ok(d.ms < TIMEOUT_MS + 400, `answered within timeout_ms + slack (${d.ms.toFixed(0)} ms)`);
    await sleep(50);
    const d2 = await timed(a.acquire('outage', performance.now() + 5000));
    t.equal(d2.r.ok, false, 'still refused while down');
    t.ok(d2.ms < 20, `and at once once the disconnect is known (${d2.ms.toFixed(1)} ms)`);
    // Fallback: the local bucket, with its own burst, then its own rate.
    const got: boolean[] = [];
    for (let i = 0; i < BURST + 1; i++) got.push((await f.acquire('fallback', performance.now() + 1)).ok);
    t.same(got, [true, true, true, true, true, false], 'local: per-replica bucket (burst 5, then refused)');

    await server.start();
    // ready() waits up to 1 s; ioredis retries at most 1 s apart, so allow a few rounds on a busy box.
    const reconnected = async (lim: RateLimiter) => {
      for (let i = 0; i < 5; i++) if (await lim.ready()) return true;
      return false;
    };
    t.equal(await reconnected(a), true, 'deny limiter reconnected by itself');
    t.equal(await reconnected(f), true, 'local limiter reconnected by itself');
    const back = await a.acquire('outage', performance.now() + 1000);
    t.equal(back.ok, true, 'deny limiter grants again');
    const shared = await f.acquire('fallback', performance.now() + 1000);
    t.same(shared, { ok: true, waitedMs: 0 }, 'local limiter is shared again (Redis bucket is full, the local one was empty)');
    t.ok((await inspect.exists(`${prefix}:rl:{outage}`, `${prefix}:rl:{fallback}`)) === 2, 'state is in Redis again');
    const events = logLines.map((l) => (JSON.parse(l) as { event?: string }).event);
    // f saw no success between the stall and the kill, so that is one outage: down once, up once.
    t.same(events, ['rate_limit_redis_down', 'rate_limit_redis_up'], 'an outage is logged once, the recovery once');
  });
});
