import { issueToken, parseDuration, revokeToken } from '../../enforce/capability/tokens.js';
import { errorCode } from '../../core/errors.js';
import { readConfig } from '../read-config.js';
import { fail, USAGE } from '../usage.js';

export interface TokenFlags {
  readonly config?: string | undefined;
  readonly agent?: string | undefined;
  readonly actions?: string | undefined;
  readonly scope?: string | undefined;
  readonly ttl?: string | undefined;
}

/** `firma token issue | revoke TOKEN_ID`. */
export async function tokenCommand(sub: string | undefined, rest: readonly string[], values: TokenFlags): Promise<void> {
  const config = readConfig(values.config);
  const caps = config.sidecar.capabilities;
  try {
    if (sub === 'issue') {
      if (values.agent === undefined || values.actions === undefined || values.scope === undefined) {
        fail('firma token issue: --agent, --actions and --scope are required\n\n' + USAGE, 2);
      }
      const issued = await issueToken({
        signingKeyFile: caps.signing_key_file,
        publicKeyFile: caps.public_key_file,
        agent: values.agent,
        actions: values.actions.split(',').map((a) => a.trim()).filter((a) => a !== ''),
        scope: values.scope,
        ttlMs: parseDuration(values.ttl ?? '1h'),
      });
      // The token on stdout alone (so `TOKEN=$(firma token issue …)` works); facts on stderr.
      process.stdout.write(`${issued.token}\n`);
      process.stderr.write(
        `token id ${issued.jti}, agent ${values.agent}, scope ${issued.scope}, expires ${issued.exp.toISOString()}\n` +
          (issued.keyCreated ? `created the signing key pair: ${caps.signing_key_file} (0600) and ${caps.public_key_file}\n` : ''),
      );
      return;
    }
    if (sub === 'revoke') {
      const jti = rest[0];
      if (jti === undefined) fail('firma token revoke: TOKEN_ID is required\n\n' + USAGE, 2);
      const { added } = revokeToken(caps.revocation_file, jti);
      process.stdout.write(`${added ? 'revoked' : 'already revoked'}: ${jti} (${caps.revocation_file})\n`);
      return;
    }
  } catch (err) {
    const code = errorCode(err);
    if (code !== undefined && code.startsWith('FIRMA_')) fail(`firma token ${sub}: ${(err as Error).message}`);
    throw err;
  }
  fail(`firma token: unknown subcommand ${JSON.stringify(sub ?? '')}\n\n${USAGE}`, 2);
}
