import { FirmaError } from '../../core/errors.js';
import type { UpstreamHostKey } from '../../config/validators.js';
import { LocalRateLimiter } from './local.js';
import { RedisRateLimiter } from './redis.js';
import type { BucketLimit, HostLimitConfig, RateLimiter, RateLimiterOptions, RedisLimitConfig } from './types.js';

/**
 * Per-host token buckets for the connector (docs/configuration.md, `rps`/`burst` and `[redis]`): the
 * buckets the config defines, and the limiter that holds them — local (local.ts), or shared through
 * Redis (redis.ts: an atomic GCRA token bucket in one Lua script per acquire instead of bottleneck's
 * ioredis datastore, for the measured reasons given at the top of that file).
 */

/** The bucket key of a configured host: `host` without a port, `host:port` with one (as HostPolicies). */
export function bucketKey(host: UpstreamHostKey): string {
  return host.port === null ? host.host : `${host.host}:${host.port}`;
}

/** The buckets config entries define; entries without `rps` have no limit and no bucket. */
export function bucketsFromHosts(hosts: readonly HostLimitConfig[]): BucketLimit[] {
  const out: BucketLimit[] = [];
  for (const h of hosts) {
    if (h.rps === undefined) continue;
    out.push({ bucket: bucketKey(h.host), rps: h.rps, burst: h.burst ?? h.rps });
  }
  return out;
}

/**
 * The limiter for a validated config: local buckets when `redis.url` is "", else shared through Redis
 * (with local buckets as the `on_error = "local"` fallback). Accepts the raw config entries or
 * already-resolved buckets (e.g. `HostPolicies.buckets()`), which name buckets the same way.
 */
export function createRateLimiter(
  hosts: Iterable<HostLimitConfig | BucketLimit>,
  redis: RedisLimitConfig,
  opts: RateLimiterOptions = {},
): RateLimiter {
  const limits = new Map<string, BucketLimit>();
  for (const h of hosts) {
    const limit = 'bucket' in h ? h : bucketsFromHosts([h])[0];
    if (limit === undefined) continue;
    if (!(limit.rps > 0 && limit.burst >= 1)) {
      throw new FirmaError('FIRMA_RATE_LIMIT_CONFIG', `bucket ${limit.bucket}: rps must be > 0 and burst >= 1`);
    }
    limits.set(limit.bucket, limit);
  }
  const local = new LocalRateLimiter(limits.values(), opts.now);
  if (redis.url === '') return local;
  return new RedisRateLimiter(limits, redis, { local, ...(opts.log !== undefined ? { log: opts.log } : {}) });
}
