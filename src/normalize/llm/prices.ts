/**
 * What an LLM call cost (docs/llm.md "Prices"): a table of USD per million tokens per model, from the
 * shipped `prices/llm-prices.toml` or an operator's `prices_file` in the same format. A model is found by
 * its exact name, else by the longest name in the table that is a prefix of it ending at a `-`, so a
 * dated snapshot (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`) costs what its family costs.
 */
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, parseTomlWithSchema } from '../../config/index.js';
import type { ConfigIssue } from '../../config/index.js';
import { formatKeyPath } from '../../config/path.js';
import { scanTomlPositions } from '../../config/toml-scanner.js';
import type { LlmUsage } from '../../core/llm.js';
import { priceFileSchema } from './prices-file.js';

/** USD per million tokens of each kind. */
export interface ModelPrice {
  readonly input: number;
  readonly output: number;
  readonly cachedInput: number;
  readonly cacheWrite: number;
}

/** A usage before it is priced. */
export type UnpricedUsage = Omit<LlmUsage, 'costUsd'>;

export interface PriceTableOptions {
  /**
   * Called the first time `cost` meets a model the table has no price for (once per name, for the
   * first 1000 names), so the caller can warn once; such a call is counted in tokens only.
   */
  readonly onUnknownModel?: (model: string) => void;
}

/** The shipped table, next to `src/` and `dist/` alike (both are three folders below the root). */
export const SHIPPED_PRICES_PATH = fileURLToPath(new URL('../../../prices/llm-prices.toml', import.meta.url));

const MAX_UNKNOWN_NAMES = 1000;

interface ParsedTable {
  readonly file: string;
  readonly taken: string | null;
  readonly sources: readonly string[];
  readonly models: ReadonlyMap<string, ModelPrice>;
}

function parsePriceText(text: string, file: string): ParsedTable {
  const parsed = parseTomlWithSchema(priceFileSchema, text, file, dirname(file));
  const models = new Map<string, ModelPrice>();
  const issues: ConfigIssue[] = [];
  parsed.models.forEach((m, i) => {
    if (models.has(m.name)) {
      const path = ['models', i, 'name'];
      const pos = scanTomlPositions(text).key(path) ?? { line: 1, col: 1 };
      issues.push({ file, ...pos, key: formatKeyPath(path), message: `a second price for ${JSON.stringify(m.name)} (each model is priced once)` });
      return;
    }
    models.set(m.name, Object.freeze({
      input: m.input,
      output: m.output,
      cachedInput: m.cached_input ?? m.input,
      cacheWrite: m.cache_write ?? m.input,
    }));
  });
  if (issues.length > 0) throw new ConfigError(issues);
  return { file, taken: parsed.taken ?? null, sources: Object.freeze([...(parsed.sources ?? [])]), models };
}

let shippedTable: ParsedTable | null = null;

export class PriceTable {
  /** The file the prices were read from. */
  readonly file: string;
  /** The date the file says its prices were taken (`taken`), or null. */
  readonly taken: string | null;
  readonly sources: readonly string[];
  private readonly models: ReadonlyMap<string, ModelPrice>;
  private readonly onUnknownModel: ((model: string) => void) | undefined;
  private readonly unknown = new Set<string>();

  private constructor(table: ParsedTable, options: PriceTableOptions) {
    this.file = table.file;
    this.taken = table.taken;
    this.sources = table.sources;
    this.models = table.models;
    this.onUnknownModel = options.onUnknownModel;
  }

  /** The table shipped in `prices/llm-prices.toml` (read once per process). */
  static shipped(options: PriceTableOptions = {}): PriceTable {
    shippedTable ??= parsePriceText(readFileSync(SHIPPED_PRICES_PATH, 'utf8'), SHIPPED_PRICES_PATH);
    return new PriceTable(shippedTable, options);
  }

  /** An operator's `prices_file`; every mistake is a ConfigError issue with `file:line:col` and the key. */
  static load(path: string, options: PriceTableOptions = {}): PriceTable {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err: unknown) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new ConfigError([{ file: path, line: 1, col: 1, key: '', message: `cannot read the price file: ${reason}` }]);
    }
    return PriceTable.fromText(text, path, options);
  }

  /** A table from TOML text (`file` is named in errors). */
  static fromText(text: string, file: string, options: PriceTableOptions = {}): PriceTable {
    return new PriceTable(parsePriceText(text, file), options);
  }

  /** This table's rows, and `base`'s for the models it does not price (an operator's file over the shipped one). */
  over(base: PriceTable): PriceTable {
    const models = new Map(base.models);
    for (const [name, price] of this.models) models.set(name, price);
    return new PriceTable({ file: this.file, taken: this.taken, sources: this.sources, models }, { onUnknownModel: this.onUnknownModel });
  }

  /** How many models the table prices. */
  get size(): number {
    return this.models.size;
  }

  /** The table's entry for `model`: its exact name, else the longest entry that is a prefix of it ending at a `-`. */
  lookup(model: string): { readonly name: string; readonly price: ModelPrice } | null {
    const name = model.toLowerCase();
    const exact = this.models.get(name);
    if (exact !== undefined) return { name, price: exact };
    for (let dash = name.lastIndexOf('-'); dash > 0; dash = name.lastIndexOf('-', dash - 1)) {
      const prefix = name.slice(0, dash);
      const price = this.models.get(prefix);
      if (price !== undefined) return { name: prefix, price };
    }
    return null;
  }

  /** USD for `usage`; null when it names no model or one the table does not price. */
  cost(usage: UnpricedUsage): number | null {
    if (usage.model === null) return null;
    const found = this.lookup(usage.model);
    if (found === null) {
      this.noteUnknown(usage.model);
      return null;
    }
    const p = found.price;
    const uncached = Math.max(0, usage.inputTokens - usage.cachedInputTokens - usage.cacheWriteTokens);
    const micro = uncached * p.input + usage.cachedInputTokens * p.cachedInput + usage.cacheWriteTokens * p.cacheWrite
      + usage.outputTokens * p.output;
    return Math.round(micro * 1e4) / 1e10; // USD to 1e-10: float noise off, far below any price
  }

  private noteUnknown(model: string): void {
    if (this.unknown.has(model) || this.unknown.size >= MAX_UNKNOWN_NAMES) return;
    this.unknown.add(model);
    try {
      this.onUnknownModel?.(model);
    } catch {
      // A listener's failure is not the reader's: cost() must not throw on the relay path.
    }
  }
}
