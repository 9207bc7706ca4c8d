import { ConfigError, checkConfigFile, formatConfigIssue, resolveConfigPath, unsetCredentialVariables, type ConfigIssue } from '../../config/index.js';
import { loadDecisionRules, type DecisionRules } from '../../pipeline/setup.js';
import { fail } from '../usage.js';

/**
 * `firma check`: the configuration and the decision rules as `start` would load them, every problem
 * of every part in one run (docs/commands.md "firma check"). A credential variable unset in this shell
 * is a warning (the sidecar's environment is not the operator's), an error with `--require-env`.
 */
export function check(configFlag: string | undefined, requireEnv: boolean): void {
  let found;
  try {
    found = checkConfigFile(resolveConfigPath({ flag: configFlag, env: process.env, cwd: process.cwd() }), process.cwd());
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  const { issues, config } = found;
  const errors: ConfigIssue[] = [...issues];
  let rules: DecisionRules | null = null;
  if (config !== null) {
    try {
      rules = loadDecisionRules(config);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      errors.push(...err.errors);
    }
    const unset = unsetCredentialVariables(config, process.env);
    if (requireEnv) errors.push(...unset);
    else for (const u of unset) process.stderr.write(`warning: ${formatConfigIssue(u)} in this shell (firma start needs it)\n`);
  }
  if (rules !== null) for (const w of rules.policy.warnings) process.stderr.write(`warning: ${w}\n`);
  if (errors.length > 0 || config === null || rules === null) fail(errors.map(formatConfigIssue).join('\n'));
  process.stdout.write(
    `${config.source.path ?? '(built-in defaults)'}: ok — ${rules.mapping.ruleCount} mapping rules in ${rules.mapping.files.length} files, ` +
      `${rules.policy.policyIds.length} policies (sha256 ${rules.policy.policyHash.slice(0, 12)}…), ` +
      `${rules.llm.hosts.length} LLM hosts, ${config.budgets.length} budgets, prices of ${rules.prices.size} models (${rules.prices.taken ?? 'undated'})\n`,
  );
}
