import { caEnvLines, initCa, loadCa } from '../../intercept/tls/ca.js';
import { errorCode } from '../../core/errors.js';
import { readConfig } from '../read-config.js';
import { fail, USAGE } from '../usage.js';

export interface CaFlags {
  readonly env?: boolean | undefined;
  readonly config?: string | undefined;
  readonly admin?: string | undefined;
}

/**
 * `firma ca init | export [--env] [--admin URL]`. Each command says on stderr which CA it printed: a
 * folder's CA is not necessarily the one a running sidecar uses (docs/commands.md "firma ca").
 */
export async function caCommand(sub: string | undefined, flags: CaFlags): Promise<void> {
  if (sub === 'export' && flags.admin !== undefined) return exportFromAdmin(flags.admin, flags.env === true);
  const config = readConfig(flags.config);
  const dir = config.sidecar.interceptor.mitm.ca_dir;
  const source = config.source.path ?? 'built-in defaults';
  try {
    if (sub === 'init') {
      const { ca, created } = initCa(dir);
      process.stdout.write(`${created ? 'created' : 'exists'}: ${ca.certPath}\nsha256 fingerprint: ${ca.fingerprint256}\n`);
      return;
    }
    if (sub === 'export') {
      const ca = loadCa(dir);
      process.stdout.write(flags.env === true ? caEnvLines(ca.certPath).join('\n') + '\n' : ca.certPem);
      process.stderr.write(`firma ca export: the CA in ${dir} (config: ${source}), sha256 ${ca.fingerprint256}\n`);
      return;
    }
  } catch (err) {
    const code = errorCode(err);
    if (code !== undefined && code.startsWith('FIRMA_CA_')) {
      const hint = code === 'FIRMA_CA_MISSING'
        ? ` (config: ${source}; run \`firma ca init\`, or fetch a running sidecar's CA with \`firma ca export --admin http://HOST:PORT\`)`
        : '';
      fail(`firma ca ${sub}: ${(err as Error).message}${hint}`);
    }
    throw err;
  }
  fail(`firma ca: unknown subcommand ${JSON.stringify(sub ?? '')}\n\n${USAGE}`, 2);
}

/** The CA a running sidecar serves on its admin listener (`GET /ca.crt`). */
async function exportFromAdmin(admin: string, env: boolean): Promise<void> {
  if (env) fail('firma ca export: --env needs the certificate in a file; save it first: firma ca export --admin URL > ca.crt', 2);
  const url = `${admin.replace(/\/+$/, '')}/ca.crt`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  } catch (err) {
    fail(`firma ca export: cannot reach ${url} (${err instanceof Error ? err.message : String(err)})`);
  }
  if (res.status !== 200) fail(`firma ca export: ${url} answered ${res.status}`);
  const pem = await res.text();
  if (!pem.startsWith('-----BEGIN CERTIFICATE-----')) fail(`firma ca export: ${url} did not answer with a PEM certificate`);
  process.stdout.write(pem);
  process.stderr.write(`firma ca export: the CA served by ${url}, sha256 ${res.headers.get('x-firma-ca-sha256') ?? 'unknown'}\n`);
}
