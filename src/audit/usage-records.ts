/**
 * LLM usage read back from the audit log (docs/llm.md "firma usage"): the `usage` of every
 * outcome event, streamed file by file (rotated files first, in chain order) without holding a file
 * in memory. Lines that do not parse, and outcomes whose usage is null or absent, give nothing. Used by
 * `firma usage` and, without Redis, to rebuild today's budget totals at start.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { LlmUsage } from '../core/llm.js';

/** One LLM call's usage as its outcome event records it. */
export interface AuditUsageRecord {
  readonly agentId: string;
  /** The outcome event's `ts`, epoch ms. */
  readonly atMs: number;
  readonly usage: LlmUsage;
}

/** Lines longer than this are no outcome event worth reading (outcome events are a few hundred bytes). */
const MAX_LINE = 1 << 20;

/** Every outcome usage in `files`, in order; `sinceMs` skips older events. A file that cannot be read is skipped. */
export async function* readUsageRecords(files: readonly string[], sinceMs = Number.NEGATIVE_INFINITY): AsyncGenerator<AuditUsageRecord> {
  for (const file of files) {
    const stream = createReadStream(file, { encoding: 'utf8' });
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    try {
      for await (const line of lines) {
        // Most events are not LLM outcomes: skip them without parsing.
        if (line.length > MAX_LINE || !line.includes('"usage":{')) continue;
        const r = usageRecordOf(line);
        if (r !== null && r.atMs >= sinceMs) yield r;
      }
    } catch {
      // Unreadable (gone, no permission): what was read counts, the rest of this file is skipped.
    } finally {
      lines.close();
      stream.destroy();
    }
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const count = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);

/** The usage of one audit line, or null when it is not an outcome event with usage. */
export function usageRecordOf(line: string): AuditUsageRecord | null {
  let e: unknown;
  try {
    e = JSON.parse(line);
  } catch {
    return null;
  }
  if (!isRecord(e) || e.type !== 'outcome' || typeof e.agent_id !== 'string' || typeof e.ts !== 'string') return null;
  const usage = auditUsageOf(e);
  if (usage === null) return null;
  const atMs = Date.parse(e.ts);
  if (!Number.isFinite(atMs)) return null;
  return { agentId: e.agent_id, atMs, usage };
}

/** The `usage` of an outcome event (snake_case in the log), or null when it has none. */
export function auditUsageOf(event: object): LlmUsage | null {
  const u = (event as { usage?: unknown }).usage;
  if (!isRecord(u)) return null;
  const cost = u.cost_usd;
  return {
    model: typeof u.model === 'string' ? u.model : null,
    inputTokens: count(u.input_tokens),
    outputTokens: count(u.output_tokens),
    cachedInputTokens: count(u.cached_input_tokens),
    cacheWriteTokens: count(u.cache_write_tokens),
    costUsd: typeof cost === 'number' && Number.isFinite(cost) ? cost : null,
    estimated: u.estimated === true,
  };
}

/** `  llm gpt-4o in=1200 out=~340 $0.0123` for `firma audit tail`; "" for an outcome without usage. */
export function usageText(event: object): string {
  const u = auditUsageOf(event);
  if (u === null) return '';
  const cost = u.costUsd === null ? 'no price' : `$${u.costUsd.toFixed(4)}`;
  return `  llm ${u.model ?? '-'} in=${u.inputTokens} out=${u.estimated ? '~' : ''}${u.outputTokens} ${cost}`;
}
