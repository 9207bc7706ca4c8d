/**
 * `firma usage [--agent A] [--since 24h] [--by agent|model] [PATH...]` (docs/commands.md "firma usage"):
 * LLM calls, input and output tokens, cost and how many were estimated, totalled from the audit log's
 * outcome events (rotated files included), by agent or by model.
 */
import { auditFileSet } from '../../audit/files.js';
import { readUsageRecords, type AuditUsageRecord } from '../../audit/usage-records.js';
import { readConfig } from '../read-config.js';
import { fail, USAGE } from '../usage.js';
import { groupedInteger } from '../../core/numbers.js';

export interface UsageFlags {
  readonly config?: string | undefined;
  readonly agent?: string | undefined;
  readonly since?: string | undefined;
  readonly by?: string | undefined;
}

export interface UsageRow {
  readonly key: string;
  calls: number;
  input: number;
  output: number;
  costUsd: number;
  /** Calls whose model had no price (their cost is not in `costUsd`). */
  unpriced: number;
  estimated: number;
}

const UNITS: Readonly<Record<string, number>> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since`: a duration back from now (`90m`, `24h`, `7d`) or a date/time (`2026-03-01`, ISO 8601). Null when unreadable. */
export function sinceMs(text: string, nowMs: number): number | null {
  const m = /^(\d+)([smhd])$/.exec(text);
  if (m !== null) return nowMs - Number(m[1]) * (UNITS[m[2] as string] as number);
  const t = Date.parse(text);
  return Number.isFinite(t) ? t : null;
}

/** Totals by agent or model, sorted by cost then tokens (largest first). */
export async function usageTotals(records: AsyncIterable<AuditUsageRecord>, by: 'agent' | 'model', agent: string | undefined): Promise<UsageRow[]> {
  const rows = new Map<string, UsageRow>();
  for await (const r of records) {
    if (agent !== undefined && r.agentId !== agent) continue;
    const key = by === 'agent' ? r.agentId : r.usage.model ?? '(unknown)';
    let row = rows.get(key);
    if (row === undefined) rows.set(key, (row = { key, calls: 0, input: 0, output: 0, costUsd: 0, unpriced: 0, estimated: 0 }));
    row.calls++;
    row.input += r.usage.inputTokens;
    row.output += r.usage.outputTokens;
    if (r.usage.costUsd === null) row.unpriced++;
    else row.costUsd += r.usage.costUsd;
    if (r.usage.estimated) row.estimated++;
  }
  return [...rows.values()].sort((a, b) => b.costUsd - a.costUsd || b.input + b.output - (a.input + a.output) || (a.key < b.key ? -1 : 1));
}

/** The table `firma usage` prints, with a total line when there is more than one row. */
export function usageTable(rows: readonly UsageRow[], by: 'agent' | 'model'): string {
  if (rows.length === 0) return 'no LLM usage in the audit log for this selection\n';
  const total: UsageRow = { key: 'total', calls: 0, input: 0, output: 0, costUsd: 0, unpriced: 0, estimated: 0 };
  for (const r of rows) {
    total.calls += r.calls;
    total.input += r.input;
    total.output += r.output;
    total.costUsd += r.costUsd;
    total.unpriced += r.unpriced;
    total.estimated += r.estimated;
  }
  const cells = (r: UsageRow): string[] => [r.key, groupedInteger(r.calls), groupedInteger(r.input), groupedInteger(r.output), `$${r.costUsd.toFixed(4)}`, groupedInteger(r.unpriced), groupedInteger(r.estimated)];
  const table = [[by.toUpperCase(), 'CALLS', 'INPUT', 'OUTPUT', 'COST_USD', 'UNPRICED', 'ESTIMATED'], ...rows.map(cells), ...(rows.length > 1 ? [cells(total)] : [])];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => (row[i] ?? '').length)));
  return table.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

export async function usageCommand(paths: readonly string[], flags: UsageFlags): Promise<void> {
  const by = flags.by ?? 'agent';
  if (by !== 'agent' && by !== 'model') fail(`firma usage: --by is "agent" or "model", got ${JSON.stringify(by)}\n\n${USAGE}`, 2);
  const since = sinceMs(flags.since ?? '24h', Date.now());
  if (since === null) fail(`firma usage: --since is a duration (90m, 24h, 7d) or a date, got ${JSON.stringify(flags.since)}\n\n${USAGE}`, 2);
  const roots = paths.length > 0 ? paths : [readConfig(flags.config).audit.path];
  const files = roots.flatMap((p) => auditFileSet(p));
  if (files.length === 0) fail(`firma usage: no audit log at ${roots.join(', ')}`);
  const rows = await usageTotals(readUsageRecords(files, since), by, flags.agent);
  process.stdout.write(usageTable(rows, by));
}
