#!/usr/bin/env node
/**
 * Rate-limiter measurements (issue 3 §2). Run after `npx tsc -p tsconfig.json`:
 *
 *   node bench/limiter.mjs            # overhead table + shared-accuracy table
 *   node bench/limiter.mjs --no-bottleneck
 *
 * 1. Overhead per acquire with tokens available (p50/p99/max, µs): local buckets, the Redis Lua bucket,
 *    and for comparison bottleneck 2.19 (local store, and the ioredis datastore the issue proposed).
 * 2. Accuracy of two limiter instances (two ioredis clients) sharing one bucket on one redis-server:
 *    rps 20, burst 5, 3 s of hammering with a 200 ms wait budget per call; expected burst + rps·T.
 *    For bottleneck also: tasks that started after their caller had given up (tokens spent for nobody)
 *    and jobs still queued when the callers stopped.
 *
 * Starts its own redis-server on a free loopback port (`--save '' --appendonly no`) and kills it.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import Bottleneck from 'bottleneck';

const root = fileURLToPath(new URL('..', import.meta.url));
const { createRateLimiter } = await import(`${root}dist/connector/rate-limit/create.js`);
const withBottleneck = !process.argv.includes('--no-bottleneck');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function startRedis() {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  probe.on('error', () => {}); // refused until the server listens
  for (let i = 0; i < 100; i++) {
    try {
      await probe.connect();
      await probe.ping();
      probe.disconnect();
      return { port, url: `redis://127.0.0.1:${port}`, stop: () => proc.kill('SIGKILL') };
    } catch {
      await sleep(50);
    }
  }
  proc.kill('SIGKILL');
  throw new Error('redis-server did not start');
}

function stats(samplesNs) {
  const a = Float64Array.from(samplesNs).sort();
  const q = (p) => a[Math.min(a.length - 1, Math.floor(p * a.length))] / 1000;
  return { n: a.length, p50: q(0.5), p99: q(0.99), max: a[a.length - 1] / 1000 };
}

async function timeEach(n, warmup, fn) {
  for (let i = 0; i < warmup; i++) await fn();
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    out[i] = Number(process.hrtime.bigint() - t0);
  }
  return stats(out);
}

const big = { bucket: 'bench', rps: 1_000_000, burst: 1_000_000 };
const redisCfg = (url, on_error = 'deny') => ({ url, key_prefix: `bench${Date.now()}`, on_error, timeout_ms: 500 });

const redis = await startRedis();
const overhead = [];
const accuracy = [];
try {
  // --- 1. overhead with tokens available -------------------------------------------------------
  {
    const lim = createRateLimiter([big], redisCfg(''));
    overhead.push(['local token bucket (this module)', await timeEach(200_000, 50_000, () => lim.acquire('bench', performance.now() + 1000))]);
    await lim.close();
  }
  {
    const lim = createRateLimiter([big], redisCfg(redis.url));
    await lim.ready();
    overhead.push(['redis Lua bucket (this module)', await timeEach(20_000, 2_000, () => lim.acquire('bench', performance.now() + 1000))]);
    await lim.close();
  }
  if (withBottleneck) {
    {
      const b = new Bottleneck({ reservoir: 1e9 });
      overhead.push(['bottleneck local store', await timeEach(2_000, 200, () => b.schedule(() => Promise.resolve()))]);
      await b.stop();
    }
    {
      const client = new Redis(redis.url);
      const b = new Bottleneck({
        id: `bench-overhead-${Date.now()}`,
        datastore: 'ioredis',
        clearDatastore: true,
        connection: new Bottleneck.IORedisConnection({ client }),
        reservoir: 1e9,
      });
      await b.ready();
      overhead.push(['bottleneck ioredis datastore', await timeEach(2_000, 200, () => b.schedule(() => Promise.resolve()))]);
      await b.disconnect(false);
      client.disconnect();
    }
  }

  // --- 2. two instances sharing one bucket --------------------------------------------------------
  const RPS = 20;
  const BURST = 5;
  const RUN_MS = 3000;
  const BUDGET_MS = 200;
  const CONCURRENCY = 5;
  const expected = BURST + (RPS * RUN_MS) / 1000;

  /** Hammer `acquire` from CONCURRENCY loops until `stopAt`; returns grant times. */
  async function hammer(acquire, startAt, stopAt) {
    const grants = [];
    const loop = async () => {
      while (performance.now() < stopAt) {
        const deadline = Math.min(performance.now() + BUDGET_MS, stopAt);
        const got = await acquire(deadline);
        if (got.granted) grants.push(got.at);
        else if (got.pause > 0) await sleep(Math.min(got.pause, Math.max(0, stopAt - performance.now())));
      }
    };
    await sleep(Math.max(0, startAt - performance.now()));
    await Promise.all(Array.from({ length: CONCURRENCY }, loop));
    return grants;
  }

  function maxInWindow(times, windowMs) {
    const s = [...times].sort((x, y) => x - y);
    let best = 0;
    for (let i = 0, j = 0; i < s.length; i++) {
      while (s[i] - s[j] > windowMs) j++;
      best = Math.max(best, i - j + 1);
    }
    return best;
  }

  {
    const cfg = redisCfg(redis.url);
    const spec = [{ bucket: 'shared', rps: RPS, burst: BURST }];
    const a = createRateLimiter(spec, cfg);
    const b = createRateLimiter(spec, cfg);
    await Promise.all([a.ready(), b.ready()]);
    const wrap = (lim) => async (deadline) => {
      const r = await lim.acquire('shared', deadline);
      return r.ok ? { granted: true, at: performance.now() } : { granted: false, pause: 0 };
    };
    const startAt = performance.now() + 100;
    const stopAt = startAt + RUN_MS;
    const [ga, gb] = await Promise.all([hammer(wrap(a), startAt, stopAt), hammer(wrap(b), startAt, stopAt)]);
    const keys = await new Redis(redis.url).keys(`${cfg.key_prefix}*`);
    accuracy.push({
      name: 'redis Lua bucket (this module)',
      granted: ga.length + gb.length,
      split: `${ga.length}/${gb.length}`,
      maxWindow: maxInWindow([...ga, ...gb], 1000),
      late: 0,
      leftover: `${keys.length} key (expires)`,
    });
    await Promise.all([a.close(), b.close()]);
  }

  if (withBottleneck) {
    const id = `bench-shared-${Date.now()}`;
    const interval = 1000 / RPS;
    const settings = {
      id,
      datastore: 'ioredis',
      reservoir: BURST,
      reservoirIncreaseAmount: 1,
      reservoirIncreaseInterval: interval,
      reservoirIncreaseMaximum: BURST,
      heartbeatInterval: interval,
    };
    const ca = new Redis(redis.url);
    const cb = new Redis(redis.url);
    const la = new Bottleneck({ ...settings, clearDatastore: true, connection: new Bottleneck.IORedisConnection({ client: ca }) });
    await la.ready();
    const lb = new Bottleneck({ ...settings, clearDatastore: false, connection: new Bottleneck.IORedisConnection({ client: cb }) });
    await lb.ready();
    let late = 0;
    // Bottleneck cannot bound a job's queue wait: race it against the deadline; a job whose caller gave
    // up still runs (and spends a token) when its turn comes.
    const wrap = (lim) => async (deadline) => {
      let gaveUp = false;
      let at = 0;
      const job = lim.schedule(async () => {
        at = performance.now();
        if (gaveUp) late++;
      });
      const timer = sleep(Math.max(0, deadline - performance.now())).then(() => 'timeout');
      const won = await Promise.race([job.then(() => 'ran'), timer]);
      if (won === 'timeout') {
        gaveUp = true;
        return { granted: false, pause: 0 };
      }
      return { granted: true, at };
    };
    // Same harness without a deadline: each loop awaits its job, however long it queues. Grants are
    // counted inside the run window only.
    const wrapNoDeadline = (lim) => async () => {
      let at = 0;
      await lim.schedule(async () => {
        at = performance.now();
      });
      return { granted: true, at };
    };
    for (const [name, w] of [
      ['bottleneck ioredis, 200 ms deadline', wrap],
      ['bottleneck ioredis, no deadline', wrapNoDeadline],
    ]) {
      late = 0;
      await la.updateSettings({ reservoir: BURST });
      await sleep(200);
      const startAt = performance.now() + 100;
      const stopAt = startAt + RUN_MS;
      const [ga, gb] = (await Promise.all([hammer(w(la), startAt, stopAt), hammer(w(lb), startAt, stopAt)])).map((g) =>
        g.filter((t) => t <= stopAt),
      );
      const queued = la.counts().QUEUED + lb.counts().QUEUED + la.counts().RECEIVED + lb.counts().RECEIVED;
      accuracy.push({
        name,
        granted: ga.length + gb.length,
        split: `${ga.length}/${gb.length}`,
        maxWindow: maxInWindow([...ga, ...gb], 1000),
        late,
        leftover: `${queued} jobs queued`,
      });
      // Let the first run's backlog drain before the second (it would eat the second run's tokens).
      for (let i = 0; i < 200 && la.counts().QUEUED + lb.counts().QUEUED > 0; i++) await sleep(100);
    }
    await la.stop({ dropWaitingJobs: true }).catch(() => undefined);
    await lb.stop({ dropWaitingJobs: true }).catch(() => undefined);
    await la.disconnect(false);
    await lb.disconnect(false);
    ca.disconnect();
    cb.disconnect();
  }

  const f = (x) => x.toFixed(x < 10 ? 2 : 0).padStart(9);
  console.log('\n## Overhead per acquire with tokens available (µs, awaited)\n');
  console.log('| limiter                              |       n |      p50 |      p99 |      max |');
  console.log('|--------------------------------------|--------:|---------:|---------:|---------:|');
  for (const [name, s] of overhead) console.log(`| ${name.padEnd(36)} | ${String(s.n).padStart(7)} |${f(s.p50)} |${f(s.p99)} |${f(s.max)} |`);
  console.log(`\n## Two instances, one bucket (rps ${RPS}, burst ${BURST}, ${RUN_MS} ms, budget ${BUDGET_MS} ms, ${CONCURRENCY} loops each)\n`);
  console.log(`expected granted = burst + rps·T = ${expected}; bound for any 1 s window = rps + burst = ${RPS + BURST}\n`);
  console.log('| limiter                              | granted | vs expected | split a/b | max in 1 s | ran after caller gave up | left after stop |');
  console.log('|--------------------------------------|--------:|------------:|----------:|-----------:|-------------------------:|-----------------|');
  for (const r of accuracy) {
    const dev = (((r.granted - expected) / expected) * 100).toFixed(1);
    console.log(
      `| ${r.name.padEnd(36)} | ${String(r.granted).padStart(7)} | ${`${dev}%`.padStart(11)} | ${r.split.padStart(9)} | ${String(r.maxWindow).padStart(10)} | ${String(r.late).padStart(24)} | ${r.leftover} |`,
    );
  }
} finally {
  redis.stop();
}
// bottleneck's subscriber connections and heartbeats may linger; the measurements are printed.
process.exit(0);
