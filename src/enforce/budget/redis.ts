/**
 * Per-agent LLM usage shared by every replica through Redis (docs/llm.md "Budgets"). One hash per
 * agent and window, `<key_prefix>:llm:<window>:<window start ms>:{<agent>}` with fields `tokens`
 * (HINCRBY) and `cost` (HINCRBYFLOAT), so concurrent records from any replica add up exactly; each
 * expires a minute after its window ends, so nothing is left behind. `{agent}` is a Redis Cluster hash
 * tag: one agent's keys share a slot, so a record is one MULTI and a read one pipeline of HMGETs, one
 * round trip each. A replica restart loses nothing: the totals are in Redis.
 *
 * Redis unreachable: `totals` answers null (the budget stage refuses, 503 `shared_state_unavailable`),
 * or with `on_error = "local"` this replica's own totals, which it keeps beside Redis for that case.
 */
import type { Redis } from 'ioredis';
import { createRedisClient, redisReady } from '../../core/redis-client.js';
import type { LlmUsage } from '../../core/llm.js';
import type { Logger } from '../../core/log.js';
import { MemoryLedger } from './memory.js';
import { WINDOWS, WINDOW_MS, costOf, tokensOf, windowStart, type UsageLedger, type UsageTotals, type WindowTotal } from './types.js';


/** Keys outlive their window by this much, so a replica whose clock lags a little still finds them. */
const EXPIRY_GRACE_MS = 60_000;

export interface RedisLedgerConfig {
  readonly url: string;
  readonly key_prefix: string;
  readonly on_error: 'deny' | 'local';
  readonly timeout_ms: number;
}

export class RedisLedger implements UsageLedger {
  readonly local = false;
  readonly #client: Redis;
  readonly #prefix: string;
  readonly #fallback: MemoryLedger | null;
  readonly #log: Logger | undefined;
  #down = false;
  #closed = false;

  constructor(cfg: RedisLedgerConfig, log?: Logger) {
    this.#prefix = `${cfg.key_prefix}:llm`;
    this.#fallback = cfg.on_error === 'local' ? new MemoryLedger() : null;
    this.#log = log;
    this.#client = createRedisClient(cfg.url, cfg.timeout_ms);
    this.#client.on('error', (err: Error) => this.#markDown(err));
    this.#client.on('close', () => this.#markDown(null));
    this.#client.on('ready', () => this.#markUp());
  }

  #key(window: string, start: number, agentId: string): string {
    return `${this.#prefix}:${window}:${start}:{${agentId}}`;
  }

  record(agentId: string, usage: LlmUsage, nowMs: number): void {
    try {
      const tokens = tokensOf(usage);
      const cost = costOf(usage);
      if (tokens === 0 && cost === 0) return;
      this.#fallback?.record(agentId, usage, nowMs);
      // Unreachable: the call is not in the shared totals (the outage is logged once, by #markDown).
      if (this.#closed || this.#client.status !== 'ready') return;
      const tx = this.#client.multi();
      for (const w of WINDOWS) {
        const start = windowStart(w, nowMs);
        const key = this.#key(w, start, agentId);
        if (tokens > 0) tx.hincrby(key, 'tokens', tokens);
        if (cost > 0) tx.hincrbyfloat(key, 'cost', cost);
        tx.pexpireat(key, start + WINDOW_MS[w] + EXPIRY_GRACE_MS);
      }
      tx.exec().catch((err: unknown) => this.#markDown(err instanceof Error ? err : null));
    } catch (err) {
      this.#markDown(err instanceof Error ? err : null);
    }
  }

  totals(agentId: string, nowMs: number): Promise<UsageTotals | null> {
    if (this.#closed || this.#client.status !== 'ready') return Promise.resolve(this.#unavailable(agentId, nowMs));
    const p = this.#client.pipeline();
    for (const w of WINDOWS) p.hmget(this.#key(w, windowStart(w, nowMs), agentId), 'tokens', 'cost');
    return p.exec().then(
      (replies) => {
        if (replies === null || replies.length !== WINDOWS.length) throw new Error('unexpected pipeline reply');
        const out = replies.map(([err, value]) => {
          if (err !== null) throw err;
          return windowTotal(value);
        });
        if (this.#down) this.#markUp();
        return { minute: out[0] as WindowTotal, hour: out[1] as WindowTotal, day: out[2] as WindowTotal };
      },
    ).catch((err: unknown) => {
      this.#markDown(err instanceof Error ? err : null);
      return this.#unavailable(agentId, nowMs);
    });
  }

  #unavailable(agentId: string, nowMs: number): UsageTotals | null {
    return this.#fallback === null || this.#closed ? null : this.#fallback.totals(agentId, nowMs);
  }

  /** True when Redis answers within max(timeout_ms, 1 s). */
  ready(timeoutMs = 1000): Promise<boolean> {
    return redisReady(this.#client, timeoutMs);
  }

  #markUp(): void {
    if (this.#down) this.#log?.info({ event: 'llm_usage_redis_up' }, 'LLM usage totals: Redis reachable again');
    this.#down = false;
  }

  #markDown(err: Error | null): void {
    if (this.#down || this.#closed) return;
    this.#down = true;
    const local = this.#fallback !== null;
    this.#log?.warn(
      { event: 'llm_usage_redis_down', on_error: local ? 'local' : 'deny', code: err === null ? 'ECLOSED' : errCode(err) },
      local ? 'LLM usage totals: Redis unreachable, budgets use this replica\'s totals' : 'LLM usage totals: Redis unreachable, refusing LLM calls a budget applies to',
    );
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#fallback?.close();
    if (this.#client.status === 'ready') {
      await Promise.race([this.#client.quit().catch(() => undefined), new Promise((r) => setTimeout(r, 1000).unref())]);
    }
    this.#client.disconnect();
  }
}

function windowTotal(value: unknown): WindowTotal {
  if (!Array.isArray(value)) throw new Error('unexpected HMGET reply');
  const tokens = value[0] === null || value[0] === undefined ? 0 : Number(value[0]);
  const costUsd = value[1] === null || value[1] === undefined ? 0 : Number(value[1]);
  if (!Number.isFinite(tokens) || !Number.isFinite(costUsd)) throw new Error('unexpected HMGET value');
  return { tokens, costUsd };
}

function errCode(err: Error): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : err.name;
}
