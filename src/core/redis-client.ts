/**
 * The one way the sidecar connects to Redis, for every state it shares (docs/configuration.md
 * "[redis]"): rate-limit buckets and LLM usage totals alike, so an unreachable or stalled Redis is an
 * error within `timeout_ms` for each of them, never a hang, and each comes back by itself.
 */
import { createRequire } from 'node:module';
import type { Redis, RedisOptions } from 'ioredis';

/**
 * ioredis is loaded only when `[redis] url` is set: loaded at start it cost every sidecar that never talks
 * to Redis 17 MiB of idle RSS (120.1 → 103.4 MiB for `firma start`; README "Dependencies").
 */
const loadIoredis = (): typeof import('ioredis') => createRequire(import.meta.url)('ioredis') as typeof import('ioredis');

/** ioredis settings that make an unreachable or stalled Redis an error within `timeoutMs`, never a hang. */
export function redisClientOptions(timeoutMs: number): RedisOptions {
  return {
    // Fail at once while disconnected instead of queueing commands until Redis returns.
    enableOfflineQueue: false,
    // A command in flight when the connection drops is failed, not resent after the caller gave up.
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // A connected but stalled server (paused, overloaded) is bounded per command.
    commandTimeout: timeoutMs,
    connectTimeout: Math.max(timeoutMs, 1000),
    // Keep trying forever so shared state comes back by itself; at most 1 s between attempts.
    retryStrategy: (times: number) => Math.min(times * 100, 1000),
    lazyConnect: false,
  };
}

/** A client for `url` with those settings (connecting at once). */
export function createRedisClient(url: string, timeoutMs: number): Redis {
  return new (loadIoredis().Redis)(url, redisClientOptions(timeoutMs));
}

/** True once `client` is connected, false when it is not within `timeoutMs`. */
export function redisReady(client: Redis, timeoutMs: number): Promise<boolean> {
  if (client.status === 'ready') return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      client.off('ready', onReady);
      resolve(ok);
    };
    const onReady = (): void => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    client.on('ready', onReady);
  });
}
