/**
 * `firma check` on the LLM keys (docs/commands.md "firma check", docs/llm.md "Prices"): an operator's
 * price file is read with the rest, and a mistake in it, or in `[[budgets]]`, is reported as
 * `file:line:col: key: message` with every other error of the run, exit 1; a good one is named.
 */
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runFirma } from '../helpers/clients.js';
import { REPO } from '../helpers/sidecar.js';

function configDir(prices: string, budgets: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'firma-llm-check-'));
  writeFileSync(join(dir, 'prices.toml'), prices);
  writeFileSync(join(dir, 'firma.toml'), `[sidecar.mapping]
rules_paths = ["${join(REPO, 'mappings', '*.toml')}"]
[sidecar.policy]
dir = "${join(REPO, 'policies')}"
[llm]
prices_file = "prices.toml"

[[llm.hosts]]
host = "llm.internal:8443"
format = "openai"
${budgets}`);
  return dir;
}

t.test('a good price file and budgets: named in the summary', async (t) => {
  const dir = configDir('taken = "2026-12-01"\n[[models]]\nname = "house-7b"\ninput = 0.1\noutput = 0.2\n', '\n[[budgets]]\nagent = "*"\nwindow = "day"\nmax_cost_usd = 25.0\n');
  const r = await runFirma(['check'], dir);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /firma\.toml: ok — .*3 LLM hosts, 1 budgets, prices of \d+ models \(2026-12-01\)/, 'the operator\'s rows over the shipped table');
});

t.test('mistakes in the price file and a budget: every one with file:line:col and the key, exit 1', async (t) => {
  const dir = configDir('[[models]]\nname = "house-7b"\ninput = "0.10"\noutput = 0.2\n', '\n[[budgets]]\nagent = "*"\nwindow = "week"\nmax_tokens = 10\n');
  const r = await runFirma(['check'], dir);
  t.equal(r.code, 1);
  t.match(r.stderr, /prices\.toml:3:\d+: models\[0\]\.input: expected a number of USD per million tokens between 0 and 100000, got "0\.10"/);
  t.match(r.stderr, /firma\.toml:\d+:\d+: budgets\[0\]\.window: /);
});
