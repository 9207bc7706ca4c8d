import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { approvalsCommand } from './commands/approvals.js';
import { auditCommand } from './commands/audit.js';
import { caCommand } from './commands/ca.js';
import { check } from './commands/check.js';
import { schemaCommand } from './commands/schema.js';
import { start } from './commands/start.js';
import { tokenCommand } from './commands/token.js';
import { readConfig } from './read-config.js';
import { fail, USAGE } from './usage.js';

/** Argument parsing and dispatch to one command group each (commands/); usage errors exit 2 (docs/commands.md). */
async function main(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        env: { type: 'boolean', default: false },
        'require-env': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
        agent: { type: 'string' },
        actions: { type: 'string' },
        scope: { type: 'string' },
        ttl: { type: 'string' },
        'public-key': { type: 'string' },
        'allow-unsigned-tail': { type: 'boolean', default: false },
        follow: { type: 'boolean', short: 'f', default: false },
        decision: { type: 'string' },
        host: { type: 'string' },
        admin: { type: 'string' },
        reason: { type: 'string' },
        'grant-minutes': { type: 'string' },
        'grant-host': { type: 'boolean' },
      },
    });
  } catch (err) {
    fail(`firma: ${(err as Error).message}\n\n${USAGE}`, 2);
  }
  const { values, positionals } = parsed;
  const [command, sub, ...rest] = positionals;
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  switch (command) {
    case 'start':
      return start(values.config);
    case 'check':
      return check(values.config, values['require-env'] ?? false);
    case 'ca':
      return caCommand(sub, { env: values.env, config: values.config, admin: values.admin });
    case 'token':
      return tokenCommand(sub, rest, values);
    case 'audit':
      return auditCommand(sub, rest, values);
    case 'approvals': {
      const r = await approvalsCommand(readConfig(values.config), sub, rest, values);
      if (!r.ok) fail(r.message, r.code);
      process.stdout.write(r.out);
      return;
    }
    case 'schema':
      return schemaCommand();
    case 'version': {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
      process.stdout.write(`firma ${pkg.version}\n`);
      return;
    }
    default:
      fail(`firma: unknown command ${JSON.stringify(command)}\n\n${USAGE}`, 2);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`firma: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
