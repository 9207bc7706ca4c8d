/**
 * The price file's TOML shape (docs/llm.md "Prices"): the shipped `prices/llm-prices.toml` and an
 * operator's `prices_file` alike. Read with the config schema builder, so a mistake is reported as
 * `file:line:col: key: message` like every other configuration file.
 */
import { s, type Schema } from '../../config/schema-dsl.js';
import type { Infer } from '../../config/schema-dsl.js';
import { describeValue } from '../../config/values.js';

/** The most a price may be, in USD per million tokens: a guard against a price typed per token. */
export const MAX_USD_PER_MILLION = 100_000;

/** USD per million tokens: a TOML integer or float from 0 to MAX_USD_PER_MILLION (a price typed per token is caught by neither end). */
const usdPerMillion = (): Schema<number> => s.number({ min: 0, max: MAX_USD_PER_MILLION, unit: 'USD per million tokens' });

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
