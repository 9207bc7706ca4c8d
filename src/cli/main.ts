import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { readConfig } from './read-config.js';
import { fail, USAGE } from './usage.js';

/**
 * Argument parsing and dispatch to one command group each (commands/); usage errors exit 2 (docs/commands.md).
 * Each command module is imported only when it runs: `firma start` then never loads the CLI clients'
 * code (undici's full index for `firma approvals`, the audit verifier...), which would stay resident in
 * every sidecar (bench/README.md "Memory").
 */
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
        since: { type: 'string' },
        by: { type: 'string' },
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
      return (await import('./commands/start.js')).start(values.config);
    case 'check':
      return (await import('./commands/check.js')).check(values.config, values['require-env'] ?? false);
    case 'ca':
      return (await import('./commands/ca.js')).caCommand(sub, { env: values.env, config: values.config, admin: values.admin });
    case 'token':
      return (await import('./commands/token.js')).tokenCommand(sub, rest, values);
    case 'audit':
      return (await import('./commands/audit.js')).auditCommand(sub, rest, values);
    case 'usage':
      return (await import('./commands/usage.js')).usageCommand(sub === undefined ? [] : [sub, ...rest], values);
    case 'approvals': {
      const { approvalsCommand } = await import('./commands/approvals.js');
      const r = await approvalsCommand(readConfig(values.config), sub, rest, values);
      if (!r.ok) fail(r.message, r.code);
      process.stdout.write(r.out);
      return;
    }
    case 'schema':
      return (await import('./commands/schema.js')).schemaCommand();
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
