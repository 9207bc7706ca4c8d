/**
 * Discovery, reading and validation of firma.toml. Every problem becomes a ConfigIssue with the
 * file:line:col of the offending key, and all of them are reported together in one ConfigError.
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { TomlError, parse } from 'smol-toml';
import { FirmaError, errorCode } from '../core/errors.js';
import type { FirmaConfig } from './firma-config.js';
import { firmaConfigSchema } from './firma-config.js';
import { formatKeyPath } from './path.js';
import type { JsonSchema, Schema, SchemaIssue } from './schema-dsl.js';
import type { SourcePosition, TomlPositions } from './toml-positions.js';
import { scanTomlPositions } from './toml-scanner.js';

export const CONFIG_INVALID = 'FIRMA_CONFIG_INVALID';

export interface ConfigIssue {
  file: string;
  line: number;
  col: number;
  /** Dotted key path with indices in brackets (`sidecar.connector.hosts[1].rps`); '' when unknown. */
  key: string;
  message: string;
}

/** `file:line:col: key: message` (the `key: ` part is left out when the key is empty). */
export function formatConfigIssue(issue: ConfigIssue): string {
  const where = `${issue.file}:${issue.line}:${issue.col}`;
  return issue.key === '' ? `${where}: ${issue.message}` : `${where}: ${issue.key}: ${issue.message}`;
}

export class ConfigError extends FirmaError {
  readonly errors: ConfigIssue[];
  constructor(errors: ConfigIssue[]) {
    super(CONFIG_INVALID, errors.map(formatConfigIssue).join('\n'));
    this.name = 'ConfigError';
    this.errors = errors;
  }
}

function byPosition(a: ConfigIssue, b: ConfigIssue): number {
  return a.line - b.line || a.col - b.col;
}

function positionOf(issue: SchemaIssue, positions: TomlPositions): SourcePosition {
  const fallback = { line: 1, col: 1 };
  if (issue.kind === 'missing_key') {
    const table = issue.path.slice(0, -1);
    return positions.header(table) ?? positions.nearest(table) ?? fallback;
  }
  return positions.nearest(issue.path) ?? fallback;
}

function syntaxIssue(err: unknown, text: string, file: string): ConfigIssue {
  if (err instanceof TomlError) {
    const reason = (err.message.split('\n')[0] ?? '').replace(/^Invalid TOML document:\s*/, '');
    const line = Number.isInteger(err.line) && err.line > 0 ? err.line : 1;
    const col = Number.isInteger(err.column) && err.column > 0 ? err.column : 1;
    const keyPath = scanTomlPositions(text).keyAt(line, col);
    return { file, line, col, key: keyPath === undefined ? '' : formatKeyPath(keyPath), message: `invalid TOML: ${reason}` };
  }
  const reason = err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err);
  return { file, line: 1, col: 1, key: '', message: `invalid TOML: ${reason}` };
}

/**
 * Parse TOML text and validate it against any schema, reporting syntax and schema problems as one
 * ConfigError with file:line:col per issue. Usable for other TOML files (e.g. mapping rules) too.
 */
export function parseTomlWithSchema<Out, In>(schema: Schema<Out, In>, text: string, file: string, baseDir: string): Out {
  const source = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text; // a BOM is not a column
  let document: unknown;
  try {
    document = parse(source, { integersAsBigInt: true });
  } catch (err: unknown) {
    throw new ConfigError([syntaxIssue(err, source, file)]);
  }
  const result = schema.validate(document, { baseDir, integersAreBigInt: true });
  if (!result.ok) {
    const positions = scanTomlPositions(source);
    const issues = result.issues.map((issue): ConfigIssue => {
      const { line, col } = positionOf(issue, positions);
      return { file, line, col, key: formatKeyPath(issue.path), message: issue.message };
    });
    throw new ConfigError(issues.sort(byPosition));
  }
  return result.value;
}

/** Parse and validate firma.toml text. `file` is used in messages and as `source.path`. */
export function parseConfigText(text: string, file: string, baseDir: string): FirmaConfig {
  return { ...parseTomlWithSchema(firmaConfigSchema, text, file, baseDir), source: { path: file }, baseDir };
}

/** The built-in defaults (relative paths resolve against `cwd`). */
export function defaultConfig(cwd: string): FirmaConfig {
  const baseDir = resolve(cwd);
  const result = firmaConfigSchema.validate({}, { baseDir });
  if (!result.ok) {
    // A bug in the declaration, not a user error.
    throw new ConfigError(result.issues.map((i) => ({ file: '<defaults>', line: 1, col: 1, key: formatKeyPath(i.path), message: i.message })));
  }
  return { ...result.value, source: { path: null }, baseDir };
}

function fileIssue(file: string, message: string): ConfigError {
  return new ConfigError([{ file, line: 1, col: 1, key: '', message }]);
}

type FileKind = 'file' | 'dir' | 'missing';
function fileKind(path: string): FileKind {
  try {
    return statSync(path).isDirectory() ? 'dir' : 'file';
  } catch {
    return 'missing';
  }
}

export interface ResolveConfigPathOptions {
  /** Value of `--config`, if given. */
  flag?: string | undefined;
  /** The environment (e.g. `process.env`); `FIRMA_CONFIG` is read from it. */
  env?: Readonly<Record<string, string | undefined>> | undefined;
  cwd: string;
}

/**
 * docs/commands.md config discovery: `--config PATH`, else `$FIRMA_CONFIG`, else `./firma.toml` if it exists, else null
 * (built-in defaults). An explicit path that does not exist is an error, never a silent fallback.
 * Returns an absolute path (relative ones resolve against `cwd`).
 */
export function resolveConfigPath(opts: ResolveConfigPathOptions): string | null {
  const { flag, env, cwd } = opts;
  const explicit: Array<[string | undefined, string]> = [
    [flag, '--config'],
    [env?.['FIRMA_CONFIG'] === '' ? undefined : env?.['FIRMA_CONFIG'], '$FIRMA_CONFIG'],
  ];
  for (const [given, origin] of explicit) {
    if (given === undefined) continue;
    if (given === '') throw fileIssue(given, `empty config path (from ${origin})`);
    const path = resolve(cwd, given);
    const kind = fileKind(path);
    if (kind === 'missing') throw fileIssue(given, `file not found (from ${origin})`);
    if (kind === 'dir') throw fileIssue(given, `is a directory, not a file (from ${origin})`);
    return path;
  }
  const local = resolve(cwd, 'firma.toml');
  return fileKind(local) === 'missing' ? null : local;
}

/** Read and validate `path` (relative to `cwd`), or the built-in defaults when `path` is null. */
export function loadConfig(path: string | null, cwd: string): FirmaConfig {
  if (path === null) return defaultConfig(cwd);
  const absolute = resolve(cwd, path);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (err: unknown) {
    const code = errorCode(err) ?? '';
    if (code === 'ENOENT') throw fileIssue(absolute, 'file not found');
    if (code === 'EISDIR') throw fileIssue(absolute, 'is a directory, not a file');
    throw fileIssue(absolute, `cannot read file${code === '' ? '' : ` (${code})`}`);
  }
  return parseConfigText(text, absolute, dirname(absolute));
}

/**
 * The `[[credentials]]` entries whose `value_from_env` variable is unset or empty in `env`, each as an
 * issue at that key. Only the process that injects credentials needs them (`firma start`; `firma check`
 * warns): issuing tokens or reading the audit log must not require holding the secrets the sidecar
 * injects (docs/configuration.md "[[credentials]]").
 */
export function unsetCredentialVariables(config: FirmaConfig, env: NodeJS.ProcessEnv): ConfigIssue[] {
  const unset = config.credentials.flatMap((c, i) => {
    const name = c.mode === 'basic' ? c.value_from_env : undefined;
    return name !== undefined && (env[name] ?? '') === '' ? [{ i, name }] : [];
  });
  if (unset.length === 0) return [];
  const file = config.source.path ?? '<defaults>';
  let positions: TomlPositions | null = null;
  try {
    positions = config.source.path === null ? null : scanTomlPositions(readFileSync(config.source.path, 'utf8'));
  } catch {
    positions = null; // the file changed or went away since it was read: report without a position
  }
  return unset.map(({ i, name }): ConfigIssue => {
    const at = positions?.nearest(['credentials', i, 'value_from_env']) ?? { line: 1, col: 1 };
    return { file, ...at, key: `credentials[${i}].value_from_env`, message: `environment variable ${name} is not set` };
  });
}

/** JSON Schema (draft 2020-12) of firma.toml, generated from the declaration. */
export function firmaConfigJsonSchema(): JsonSchema {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'firma.toml',
    ...firmaConfigSchema.jsonSchema(),
  };
}
