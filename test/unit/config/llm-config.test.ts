/**
 * `[llm]`, `[[llm.hosts]]` and `[[budgets]]` (docs/llm.md "Hosts", "Budgets"): validated like the
 * rest of firma.toml, every issue with file:line:col and its key.
 */
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, formatConfigIssue, parseConfigText } from '../../../src/config/index.js';
import { budgetPlaces } from '../../../src/config/llm-checks.js';

function issues(text: string): string[] {
  try {
    parseConfigText(text, 'firma.toml', '/etc/firma');
  } catch (err: unknown) {
    if (err instanceof ConfigError) return err.errors.map(formatConfigIssue);
    throw err;
  }
  return ['<no error thrown>'];
}

t.test('defaults: no hosts beyond the built-in ones, the shipped prices, no budgets', async (t) => {
  const config = parseConfigText('', 'firma.toml', '/etc/firma');
  t.same(config.llm, { hosts: [], prices_file: '' });
  t.same(config.budgets, []);
});

t.test('valid hosts, a relative prices_file, budgets with one or both limits', async (t) => {
  const config = parseConfigText(`
[llm]
prices_file = "prices.toml"

[[llm.hosts]]
host = "LLM.internal:8443"
format = "openai"

[[budgets]]
agent = "*"
window = "day"
max_tokens = 2000000
max_cost_usd = 25

[[budgets]]
agent = "research-bot"
window = "minute"
max_cost_usd = 0.5
`, 'firma.toml', '/etc/firma');
  t.same(config.llm.hosts, [{ host: { host: 'llm.internal', port: 8443, text: 'llm.internal:8443' }, format: 'openai' }]);
  t.equal(config.llm.prices_file, '/etc/firma/prices.toml');
  t.same(config.budgets, [
    { agent: '*', window: 'day', max_tokens: 2000000, max_cost_usd: 25 },
    { agent: 'research-bot', window: 'minute', max_cost_usd: 0.5 },
  ]);
});

t.test('bad hosts, formats, agents, windows and limits name file:line:col and the key', async (t) => {
  t.same(issues(`
[[llm.hosts]]
host = "https://api.example.com"
format = "gemini"

[[budgets]]
agent = "a b"
window = "week"
max_tokens = 0
max_cost_usd = -1.5
`), [
    'firma.toml:3:1: llm.hosts[0].host: expected an exact host name or IP, optionally with :port ("api.openai.com", "127.0.0.1:9100"), got "https://api.example.com" (string)',
    'firma.toml:4:1: llm.hosts[0].format: expected one of "openai", "anthropic", got "gemini" (string)',
    'firma.toml:7:1: budgets[0].agent: expected an agent id or "*" (every agent, each with its own total), got "a b" (string)',
    'firma.toml:8:1: budgets[0].window: expected one of "minute", "hour", "day", got "week" (string)',
    'firma.toml:9:1: budgets[0].max_tokens: expected an integer between 1 and 9007199254740991, got 0 (integer)',
    'firma.toml:10:1: budgets[0].max_cost_usd: expected a number > 0, got -1.5 (float)',
  ]);
  t.same(issues(`
[[budgets]]
agent = "*"
window = "day"
max_tokens = 1.5
`), ['firma.toml:5:1: budgets[0].max_tokens: expected an integer between 1 and 9007199254740991, got 1.5 (float)']);
});

t.test('a budget without a limit, a host without a format', async (t) => {
  t.same(issues(`
[[llm.hosts]]
host = "llm.internal"

[[budgets]]
agent = "*"
window = "hour"
`), [
    'firma.toml:2:1: llm.hosts[0].format: missing required key "format"',
    'firma.toml:5:1: budgets[0]: a budget needs max_tokens, max_cost_usd or both',
  ]);
});

t.test('duplicate hosts and duplicate agent + window', async (t) => {
  t.same(issues(`
[[llm.hosts]]
host = "llm.internal"
format = "openai"

[[llm.hosts]]
host = "LLM.internal"
format = "anthropic"
`), ['firma.toml:2:7: llm.hosts: duplicate host "llm.internal" (entries 1 and 2)']);
  t.same(issues(`
[[budgets]]
agent = "bot"
window = "day"
max_tokens = 10

[[budgets]]
agent = "*"
window = "day"
max_tokens = 10

[[budgets]]
agent = "bot"
window = "day"
max_cost_usd = 1
`), ['firma.toml:2:3: budgets: duplicate agent and window "bot day" (entries 1 and 3)']);
});

t.test('budgetPlaces names each entry by its file and line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firma-budgets-'));
  const file = join(dir, 'firma.toml');
  writeFileSync(file, '[sidecar]\nmode = "enforce"\n\n[[budgets]]\nagent = "*"\nwindow = "day"\nmax_tokens = 5\n\n[[budgets]]\nagent = "x"\nwindow = "hour"\nmax_tokens = 5\n');
  t.same(budgetPlaces(file, 2), ['firma.toml:4', 'firma.toml:9']);
  t.same(budgetPlaces(null, 1), ['budgets[0]']);
  t.same(budgetPlaces(join(dir, 'missing.toml'), 1), ['budgets[0]']);
});
