/** Public API of the configuration subsystem. */
export {
  CONFIG_INVALID,
  ConfigError,
  defaultConfig,
  firmaConfigJsonSchema,
  formatConfigIssue,
  loadConfig,
  parseConfigText,
  parseTomlWithSchema,
  resolveConfigPath,
  unsetCredentialVariables,
} from './load.js';
export type { ConfigIssue, ResolveConfigPathOptions } from './load.js';
export { checkConfigFile, type ConfigCheck } from './check-all.js';
export { firmaConfigSchema } from './firma-config.js';
export type { FirmaConfig, FirmaConfigValues } from './firma-config.js';
export type { ListenAddress } from './validators.js';
export type { JsonSchema } from './schema-dsl.js';
