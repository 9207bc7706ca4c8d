/**
 * The price file's TOML shape (docs/llm.md "Prices"): the shipped `prices/llm-prices.toml` and an
 * operator's `prices_file` alike. Read with the config schema builder, so a mistake is reported as
 * `file:line:col: key: message` like every other configuration file.
 */
import { Schema, s } from '../../config/schema-dsl.js';
import type { Infer } from '../../config/schema-dsl.js';
import { describeValue } from '../../config/values.js';

/** The most a price may be, in USD per million tokens: a guard against a price typed per token. */
export const MAX_USD_PER_MILLION = 100_000;

/**
 * USD per million tokens: a TOML integer or float, 0 or more. The schema builder has integers only
 * (config keys are counts and durations), so this node pushes its issue into the same list itself.
 */
function usdPerMillion(): Schema<number> {
  const expected = `a number of USD per million tokens between 0 and ${MAX_USD_PER_MILLION}`;
  return new Schema<number>({
    kind: 'integer',
    json: () => ({ type: 'number', minimum: 0, maximum: MAX_USD_PER_MILLION }),
    parse: (value, path, ctx) => {
      const n = typeof value === 'bigint' ? Number(value) : value;
      if (typeof n === 'number' && Number.isFinite(n) && n >= 0 && n <= MAX_USD_PER_MILLION) return n;
      ctx.issues.push({ path: [...path], kind: 'type', message: `expected ${expected}, got ${describeValue(value, true)}` });
      return 0;
    },
  });
}

const MODEL_NAME = /^[a-z0-9][a-z0-9._:/-]*$/;

function checkModelName(name: string): string | undefined {
  if (name.length <= 200 && MODEL_NAME.test(name)) return undefined;
  return `expected a model name in lowercase (a-z 0-9 . _ : / -, e.g. "gpt-4o" or "claude-sonnet-4-5"), got ${describeValue(name)}`;
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;

export const priceFileSchema = s.table({
  taken: s.string().refine((v) => (DATE.test(v) ? undefined : `expected the date the prices were taken as "YYYY-MM-DD", got ${describeValue(v)}`))
    .optional().describe('The date the prices were copied from the providers\' pages.'),
  sources: s.array(s.string()).optional().describe('The pages the prices were copied from.'),
  models: s
    .arrayOfTables({
      name: s.string().refine(checkModelName).describe('The model, as a response names it; a dated snapshot finds it by prefix (docs/llm.md "Prices").'),
      input: usdPerMillion().describe('USD per million input tokens (not cached).'),
      output: usdPerMillion().describe('USD per million output tokens.'),
      cached_input: usdPerMillion().optional().describe('USD per million input tokens read from the prompt cache; absent: the input price.'),
      cache_write: usdPerMillion().optional().describe('USD per million input tokens written to the prompt cache (Anthropic); absent: the input price.'),
    }, { unique: false })
    .default([])
    .describe('One price per model.'),
});
export type PriceFile = Infer<typeof priceFileSchema>;
