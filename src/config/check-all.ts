/**
 * `firma check` reports every problem in one run (docs/commands.md "firma check"). When firma.toml has
 * errors, the keys at fault are set aside (left at their defaults) and the rest is validated again, so
 * the mapping rules and policies the file points at are still loaded and checked beside its own errors.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse } from 'smol-toml';
import { firmaConfigSchema, type FirmaConfig } from './firma-config.js';
import { ConfigError, loadConfig, type ConfigIssue } from './load.js';
import type { PathSegment } from './path.js';

export interface ConfigCheck {
  /** Every issue of the file itself. */
  readonly issues: ConfigIssue[];
  /**
   * The configuration to check the decision rules with: the file's own when it is valid, else the file
   * with its faulty keys at their defaults; null when that says nothing (a syntax error, or a fault in
   * the keys that locate the rules themselves).
   */
  readonly config: FirmaConfig | null;
}

const SET_ASIDE: unique symbol = Symbol('set aside');
/** Keys whose defaults would point the rule check at other files than the user meant. */
const RULE_LOCATIONS: ReadonlyArray<readonly string[]> = [['sidecar', 'mapping'], ['sidecar', 'policy']];
const MAX_ROUNDS = 4;

export function checkConfigFile(path: string | null, cwd: string): ConfigCheck {
  let issues: ConfigIssue[];
  try {
    return { issues: [], config: loadConfig(path, cwd) };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    issues = err.errors;
  }
  if (path === null) return { issues, config: null };
  const file = resolve(cwd, path);
  let document: unknown;
  try {
    const text = readFileSync(file, 'utf8');
    document = parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text, { integersAsBigInt: true });
  } catch {
    return { issues, config: null };
  }
  const baseDir = dirname(file);
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const result = firmaConfigSchema.validate(document, { baseDir, integersAreBigInt: true });
    if (result.ok) return { issues, config: { ...result.value, source: { path: file }, baseDir } };
    for (const issue of result.issues) {
      const at = issue.kind === 'missing_key' ? issue.path.slice(0, -1) : issue.path;
      if (at.length === 0 || RULE_LOCATIONS.some((loc) => loc.every((k, i) => at[i] === k))) return { issues, config: null };
      setAside(document, at);
    }
    document = withoutSetAside(document);
  }
  return { issues, config: null };
}

function setAside(document: unknown, path: readonly PathSegment[]): void {
  let node: unknown = document;
  for (const segment of path.slice(0, -1)) {
    if (typeof node !== 'object' || node === null) return;
    node = (node as Record<string | number, unknown>)[segment];
  }
  if (typeof node === 'object' && node !== null) (node as Record<string | number, unknown>)[path[path.length - 1]!] = SET_ASIDE;
}

function withoutSetAside(node: unknown): unknown {
  if (Array.isArray(node)) return node.filter((v) => v !== SET_ASIDE).map(withoutSetAside);
  if (typeof node !== 'object' || node === null || node instanceof Date) return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) if (v !== SET_ASIDE) out[k] = withoutSetAside(v);
  return out;
}
