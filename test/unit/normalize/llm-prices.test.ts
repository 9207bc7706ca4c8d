/**
 * The price table (docs/llm.md "Prices"): the shipped file, model lookup by exact name and by dated
 * snapshot, costs, unknown models reported once, and an operator's prices_file with file:line:col errors.
 */
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../../src/config/index.js';
import { PriceTable, SHIPPED_PRICES_PATH, type UnpricedUsage } from '../../../src/normalize/llm/prices.js';

const shipped = PriceTable.shipped();
const usage = (model: string | null, inputTokens: number, outputTokens: number, cachedInputTokens = 0, cacheWriteTokens = 0): UnpricedUsage =>
  ({ model, inputTokens, outputTokens, cachedInputTokens, cacheWriteTokens, estimated: false });

function issues(text: string): string[] {
  try {
    PriceTable.fromText(text, 'prices.toml');
  } catch (err: unknown) {
    if (err instanceof ConfigError) return err.message.split('\n');
    throw err;
  }
  return [];
}

t.test('the shipped table: dated, with its sources, the current models of both providers', async (t) => {
  t.match(shipped.taken, /^\d{4}-\d{2}-\d{2}$/);
  t.ok(shipped.sources.some((s) => s.includes('openai.com')) && shipped.sources.some((s) => s.includes('anthropic.com')));
  t.equal(shipped.file, SHIPPED_PRICES_PATH);
  for (const model of ['gpt-4o', 'gpt-4o-mini', 'gpt-4.1', 'gpt-4.1-mini', 'gpt-4.1-nano', 'o1', 'o3', 'o3-mini', 'o4-mini', 'gpt-5', 'gpt-5-mini', 'gpt-5-nano',
    'text-embedding-3-small', 'text-embedding-3-large', 'claude-opus-4-5', 'claude-sonnet-4-5', 'claude-haiku-4-5', 'claude-opus-4-1', 'claude-opus-4',
    'claude-sonnet-4', 'claude-3-7-sonnet', 'claude-3-5-haiku']) {
    t.equal(shipped.lookup(model)?.name, model, `${model} is priced`);
  }
  t.same(shipped.lookup('claude-sonnet-4-5')?.price, { input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75 });
  t.same(shipped.lookup('gpt-4o')?.price, { input: 2.5, output: 10, cachedInput: 1.25, cacheWrite: 2.5 }, 'no cache_write: the input price');
  t.same(shipped.lookup('gpt-4-turbo')?.price.cachedInput, 10, 'no cached_input: the input price');
});

t.test('lookup: exact name, else the longest configured prefix ending at a "-"', async (t) => {
  const name = (model: string): string | null => shipped.lookup(model)?.name ?? null;
  t.equal(name('gpt-4o-2024-08-06'), 'gpt-4o');
  t.equal(name('gpt-4o-mini-2024-07-18'), 'gpt-4o-mini', 'the longest prefix, not gpt-4o');
  t.equal(name('gpt-4o-2024-05-13'), 'gpt-4o-2024-05-13', 'a snapshot priced apart has its own row');
  t.equal(name('gpt-4.1-nano-2025-04-14'), 'gpt-4.1-nano');
  t.equal(name('claude-sonnet-4-5-20250929'), 'claude-sonnet-4-5');
  t.equal(name('claude-sonnet-4-20250514'), 'claude-sonnet-4');
  t.equal(name('claude-opus-4-1-20250805'), 'claude-opus-4-1');
  t.equal(name('claude-3-5-haiku-latest'), 'claude-3-5-haiku');
  t.equal(name('GPT-4o-2024-08-06'), 'gpt-4o', 'case does not matter');
  t.equal(name('gpt-4omni'), null, 'a prefix must end at a "-"');
  t.equal(name('mistral-large-latest'), null);
  t.equal(name('-'), null);
  t.equal(name(''), null);
});

t.test('cost: each kind of token at its price; an unknown model is null and reported once', async (t) => {
  t.equal(shipped.cost(usage('gpt-4o-2024-08-06', 1000, 500, 200)), (800 * 2.5 + 200 * 1.25 + 500 * 10) / 1e6);
  t.equal(shipped.cost(usage('claude-opus-4-5-20251101', 10_000, 1000, 6000, 3000)), (1000 * 5 + 6000 * 0.5 + 3000 * 6.25 + 1000 * 25) / 1e6);
  t.equal(shipped.cost(usage('gpt-4o', 0, 0)), 0);
  const unknown: string[] = [];
  const table = PriceTable.shipped({ onUnknownModel: (m) => unknown.push(m) });
  t.equal(table.cost(usage('llama-3-70b', 10, 10)), null);
  t.equal(table.cost(usage('llama-3-70b', 10, 10)), null);
  t.equal(table.cost(usage('qwen-2', 10, 10)), null);
  t.equal(table.cost(usage(null, 10, 10)), null, 'no model: no cost, nothing to report');
  t.same(unknown, ['llama-3-70b', 'qwen-2'], 'each unknown model once');
  const throwing = PriceTable.shipped({ onUnknownModel: () => { throw new Error('listener'); } });
  t.equal(throwing.cost(usage('x', 1, 1)), null, 'a listener that throws does not reach the caller');
});

t.test('an operator\'s prices_file: the same format, over the shipped rows', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firma-prices-'));
  const file = join(dir, 'prices.toml');
  writeFileSync(file, 'taken = "2026-01-31"\n\n[[models]]\nname = "gpt-4o"\ninput = 2\noutput = 8\n\n[[models]]\nname = "llama-3-70b"\ninput = 0.5\noutput = 0.75\n');
  const own = PriceTable.load(file);
  t.equal(own.size, 2);
  t.equal(own.taken, '2026-01-31');
  t.equal(own.lookup('gpt-4o-mini')?.name, 'gpt-4o', 'its own rows only');
  const over = own.over(shipped);
  t.same(over.lookup('gpt-4o-2024-08-06')?.price, { input: 2, output: 8, cachedInput: 2, cacheWrite: 2 }, 'its row wins');
  t.equal(over.lookup('gpt-4o-mini')?.name, 'gpt-4o-mini', 'the shipped rows it does not set remain');
  t.equal(over.cost(usage('llama-3-70b-instruct', 1_000_000, 1_000_000)), 1.25);
  t.throws(() => PriceTable.load(join(dir, 'missing.toml')), { name: 'ConfigError', message: /missing\.toml:1:1: cannot read the price file/ });
});

t.test('prices_file mistakes: every one as file:line:col: key: message', async (t) => {
  t.same(issues('[[models]]\nname = "gpt-4o"\ninput = "2.50"\noutput = 10\n'), [
    'prices.toml:3:1: models[0].input: expected a number of USD per million tokens between 0 and 100000, got "2.50" (string)',
  ]);
  t.same(issues('[[models]]\nname = "gpt-4o"\ninput = 2.5\noutput = -1\n\n[[models]]\nname = "x"\ninput = 1\noutputs = 2\n'), [
    'prices.toml:4:1: models[0].output: expected a number of USD per million tokens between 0 and 100000, got -1 (integer)',
    'prices.toml:6:1: models[1].output: missing required key "output"',
    'prices.toml:9:1: models[1].outputs: unknown key "outputs" (did you mean "output"?)',
  ]);
  t.same(issues('[[models]]\nname = "GPT 4o"\ninput = 1\noutput = 1\n'), [
    'prices.toml:2:1: models[0].name: expected a model name in lowercase (a-z 0-9 . _ : / -, e.g. "gpt-4o" or "claude-sonnet-4-5"), got "GPT 4o" (string)',
  ]);
  t.same(issues('[[models]]\nname = "a"\ninput = 1\noutput = 1\n\n[[models]]\nname = "a"\ninput = 2\noutput = 2\n'), [
    'prices.toml:7:1: models[1].name: a second price for "a" (each model is priced once)',
  ]);
  t.same(issues('taken = "31.01.2026"\n'), ['prices.toml:1:1: taken: expected the date the prices were taken as "YYYY-MM-DD", got "31.01.2026" (string)']);
  const syntax = issues('[[models]]\nname = "a"\ninput = 1.2.3\n');
  t.equal(syntax.length, 1);
  t.match(syntax[0], /^prices\.toml:3:\d+: models\[0\]\.input: invalid TOML/);
  t.same(issues(''), [], 'an empty file prices nothing');
});
