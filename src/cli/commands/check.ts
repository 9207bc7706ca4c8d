import { ConfigError } from '../../config/index.js';
import { loadDecisionRules } from '../../pipeline/setup.js';
import { readConfig } from '../read-config.js';
import { fail } from '../usage.js';

/** `firma check`: load the configuration and the decision rules as `start` would, and say what was found. */
export function check(configFlag: string | undefined): void {
  const config = readConfig(configFlag);
  let rules;
  try {
    rules = loadDecisionRules(config);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  for (const w of rules.policy.warnings) process.stderr.write(`warning: ${w}\n`);
  process.stdout.write(
    `${config.source.path ?? '(built-in defaults)'}: ok — ${rules.mapping.ruleCount} mapping rules in ${rules.mapping.files.length} files, ` +
      `${rules.policy.policyIds.length} policies (sha256 ${rules.policy.policyHash.slice(0, 12)}…)\n`,
  );
}
