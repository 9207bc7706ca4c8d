import { ConfigError, loadConfig, resolveConfigPath, type FirmaConfig } from '../config/index.js';
import { fail } from './usage.js';

/** The configuration (--config, $FIRMA_CONFIG, ./firma.toml, built-in defaults); a config error exits 1. */
export function readConfig(flag: string | undefined): FirmaConfig {
  try {
    const path = resolveConfigPath({ flag, env: process.env, cwd: process.cwd() });
    return loadConfig(path, process.cwd());
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
}
