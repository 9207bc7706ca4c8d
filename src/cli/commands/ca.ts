import { caEnvLines, initCa, loadCa } from '../../intercept/tls/ca.js';
import { errorCode } from '../../core/errors.js';
import { readConfig } from '../read-config.js';
import { fail, USAGE } from '../usage.js';

/** `firma ca init | export [--env]`. */
export function caCommand(sub: string | undefined, env: boolean, configFlag: string | undefined): void {
  const config = readConfig(configFlag);
  const dir = config.sidecar.interceptor.mitm.ca_dir;
  try {
    if (sub === 'init') {
      const { ca, created } = initCa(dir);
      process.stdout.write(`${created ? 'created' : 'exists'}: ${ca.certPath}\nsha256 fingerprint: ${ca.fingerprint256}\n`);
      return;
    }
    if (sub === 'export') {
      const ca = loadCa(dir);
      process.stdout.write(env ? caEnvLines(ca.certPath).join('\n') + '\n' : ca.certPem);
      return;
    }
  } catch (err) {
    const code = errorCode(err);
    if (code !== undefined && code.startsWith('FIRMA_CA_')) {
      fail(`firma ca ${sub}: ${(err as Error).message}${code === 'FIRMA_CA_MISSING' ? ' (run `firma ca init`)' : ''}`);
    }
    throw err;
  }
  fail(`firma ca: unknown subcommand ${JSON.stringify(sub ?? '')}\n\n${USAGE}`, 2);
}
