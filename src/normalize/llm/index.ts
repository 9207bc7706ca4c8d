/** Public API of the LLM usage reader (docs/llm.md "How usage is read") and the price table (docs/llm.md "Prices"). */
export { createUsageReader, USAGE_REASONS, type UsageReader, type UsageReason } from './usage-reader.js';
export { PriceTable, SHIPPED_PRICES_PATH, type ModelPrice, type PriceTableOptions, type UnpricedUsage } from './prices.js';
