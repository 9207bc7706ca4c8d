/** `firma_llm_tokens_total` and `firma_llm_cost_usd_total` (docs/llm.md "Metrics"): kinds, cost, bounded labels. */
import t from 'tap';
import { Metrics } from '../../../src/admin/metrics.js';
import { MAX_MODELS, modelLabel } from '../../../src/admin/llm-metrics.js';
import type { LlmUsage } from '../../../src/core/llm.js';

const usage = (model: string | null, over: Partial<LlmUsage> = {}): LlmUsage => ({
  model, inputTokens: 100, outputTokens: 20, cachedInputTokens: 60, cacheWriteTokens: 0, costUsd: 0.25, estimated: false, ...over,
});

t.test('tokens by kind and cost by agent and model', async (t) => {
  const m = new Metrics({ hosts: [], defaultMetrics: false });
  m.llmUsage('agent-a', usage('gpt-4o-2024-08-06'));
  m.llmUsage('agent-a', usage('gpt-4o-2024-08-06', { costUsd: null }));
  const text = await m.registry.metrics();
  t.match(text, 'firma_llm_tokens_total{agent="agent-a",model="gpt-4o-2024-08-06",kind="input"} 200');
  t.match(text, 'firma_llm_tokens_total{agent="agent-a",model="gpt-4o-2024-08-06",kind="output"} 40');
  t.match(text, 'firma_llm_tokens_total{agent="agent-a",model="gpt-4o-2024-08-06",kind="cached_input"} 120');
  t.notMatch(text, 'kind="cache_write"', 'zero counts add no series');
  t.match(text, 'firma_llm_cost_usd_total{agent="agent-a",model="gpt-4o-2024-08-06"} 0.25', 'a null cost adds nothing');
});

t.test('model labels are normalised and capped; agents too', async (t) => {
  t.equal(modelLabel(null), 'unknown');
  t.equal(modelLabel('Claude Sonnet 4.5 "x"'), 'claude_sonnet_4.5__x_');
  t.equal(modelLabel('m'.repeat(100)).length, 64);
  const m = new Metrics({ hosts: [], defaultMetrics: false });
  for (let i = 0; i < MAX_MODELS + 5; i++) m.llmUsage('a', usage(`model-${i}`));
  const text = await m.registry.metrics();
  t.match(text, `model="model-${MAX_MODELS - 1}"`);
  t.notMatch(text, `model="model-${MAX_MODELS}"`);
  t.match(text, 'firma_llm_tokens_total{agent="a",model="other",kind="input"} 500');
});
