import type { Logger } from '../../core/log.js';
import { MemoryLedger } from './memory.js';
import { RedisLedger, type RedisLedgerConfig } from './redis.js';
import type { UsageLedger } from './types.js';

/**
 * The usage ledger for `[redis]` (docs/llm.md "Budgets"): in memory when `url` is "" (the
 * composition root then rebuilds today's totals from the audit log), else shared through Redis.
 */
export function createUsageLedger(redis: RedisLedgerConfig, log?: Logger): UsageLedger {
  return redis.url === '' ? new MemoryLedger() : new RedisLedger(redis, log);
}
