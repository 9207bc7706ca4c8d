/**
 * `[llm]` with its `[[llm.hosts]]`, and `[[budgets]]` (docs/llm.md "Hosts", "Budgets"): the hosts
 * whose responses usage is read from, the price table, and the per-agent limits on tokens and dollars
 * per fixed UTC window. Duplicates across entries are errors, as for `[[mcp.servers]]`.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { s } from './schema-dsl.js';
import { describeValue } from './values.js';
import { checkAgentId, parseUpstreamHost, resolveConfigRelativePath, type UpstreamHostKey } from './validators.js';
import { duplicateOf, hostKey } from './entry-checks.js';
import { scanTomlPositions } from './toml-scanner.js';

export const LLM_FORMATS = ['openai', 'anthropic'] as const;
export const BUDGET_WINDOWS = ['minute', 'hour', 'day'] as const;

/** `"*"` (every agent, each on its own) or one agent id. */
export function checkBudgetAgent(text: string): string | undefined {
  if (text === '*') return undefined;
  const problem = checkAgentId(text);
  return problem === undefined ? undefined : `expected an agent id or "*" (every agent, each with its own total), got ${describeValue(text)}`;
}

interface BudgetLimits {
  readonly max_tokens?: number | undefined;
  readonly max_cost_usd?: number | undefined;
}

export function checkBudgetLimits(b: BudgetLimits): string | undefined {
  return b.max_tokens === undefined && b.max_cost_usd === undefined ? 'a budget needs max_tokens, max_cost_usd or both' : undefined;
}

/** Two budgets for the same agent and window: which limit would hold is not obvious, so neither is guessed. */
export function duplicateBudget(budgets: ReadonlyArray<{ readonly agent: string; readonly window: string }>): string | undefined {
  return duplicateOf(budgets.map((b) => `${b.agent} ${b.window}`), 'agent and window');
}

function duplicateLlmHost(hosts: ReadonlyArray<{ readonly host: UpstreamHostKey }>): string | undefined {
  return duplicateOf(hosts.map((h) => hostKey(h.host)), 'host');
}

/** `[llm]`: `[[llm.hosts]]` and `prices_file` (firma-config.ts declares it as `llm`). */
export const llmSchema = s
  .table({
    hosts: s
      .array(
        s.table({
          host: s
            .string()
            .transform(parseUpstreamHost)
            .describe('Exact host of an LLM API, optionally with :port (without: the scheme default, 443 or 80). api.openai.com and api.anthropic.com are built in; an entry for one of them overrides it.'),
          format: s.enum(LLM_FORMATS).describe('The API shape its responses have, to read usage from: "openai" or "anthropic".'),
        }),
      )
      .default([])
      .refine(duplicateLlmHost)
      .describe('LLM API hosts besides the built-in ones: [[llm.hosts]] (docs/llm.md "Hosts").'),
    prices_file: s
      .string()
      .default('')
      .transform((v, ctx) => (v === '' ? '' : resolveConfigRelativePath(v, ctx)))
      .describe('TOML table of per-model USD prices per million tokens; "" = the shipped, dated table.'),
  })
  .describe('LLM usage: which hosts are LLM APIs and what their tokens cost (docs/llm.md).');

/** `[[budgets]]` (firma-config.ts declares it as `budgets`). */
export const budgetsSchema = s
  .array(
    s
      .table({
        agent: s.string().refine(checkBudgetAgent).describe('The agent id the budget limits, or "*" for every agent (each agent its own total).'),
        window: s.enum(BUDGET_WINDOWS).describe('The fixed UTC window totals are kept for: "minute", "hour" or "day".'),
        max_tokens: s
          .integer({ min: 1, max: Number.MAX_SAFE_INTEGER })
          .optional()
          .describe('Input + output tokens the agent may use per window; once reached, LLM calls are refused (429) until the window ends.'),
        max_cost_usd: s
          .number({ exclusiveMin: 0 })
          .optional()
          .describe('US dollars (from the price table) the agent may spend per window; once reached, LLM calls are refused (429) until the window ends.'),
      })
      .refine(checkBudgetLimits),
  )
  .default([])
  .refine(duplicateBudget)
  .describe('Per-agent limits on LLM tokens and cost: [[budgets]] (docs/llm.md "Budgets").');

/**
 * Where each `[[budgets]]` entry is written (`firma.toml:12`), for the refusal message; `budgets[i]`
 * when the file cannot be read again (defaults, or a file changed since it was loaded).
 */
export function budgetPlaces(sourcePath: string | null, count: number): string[] {
  const fallback = Array.from({ length: count }, (_, i) => `budgets[${i}]`);
  if (sourcePath === null || count === 0) return fallback;
  try {
    const text = readFileSync(sourcePath, 'utf8');
    const positions = scanTomlPositions(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
    return fallback.map((name, i) => {
      const pos = positions.header(['budgets', i]);
      return pos === undefined ? name : `${basename(sourcePath)}:${pos.line}`;
    });
  } catch {
    return fallback;
  }
}
