/**
 * Loading the policy folder (docs/architecture.md "Enforce", docs/configuration.md): every `*.cedar` file is
 * parsed (parse.ts), ids must be unique across files, and the set is validated in strict mode against the
 * Firma schema (schema.ts) built for the mapping's action classes. Every problem of the whole folder is
 * reported at once, as `file:line:col: policy-id: message`, in one ConfigError.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { DetailedError } from '@cedar-policy/cedar-wasm/nodejs';
import { ConfigError } from '../../config/index.js';
import type { ConfigIssue } from '../../config/index.js';
import { usageOf } from './analysis.js';
import { errorIssues, parseFile } from './parse.js';
import type { SourcePolicy } from './parse.js';
import { DEFAULT_BODY_FIELDS, compare, firmaSchemaText, isActionGroup } from './schema.js';
import type { BodyFieldType } from './schema.js';

export interface PolicyLoadOptions {
  /** Folder of `*.cedar` files (not recursive; other files are ignored). */
  readonly dir: string;
  /**
   * Every action class the mapping rules produce. Policies may only name these (and their `prefix.*`
   * groups). When omitted, the actions the policies name are declared as they are, so typos are not caught.
   */
  readonly actionClasses?: readonly string[];
  /** Argument fields of `context.mcp.arguments` ([[mcp.servers.tools]] arguments). */
  readonly mcpArguments?: readonly string[];
  /** Extra typed body fields on top of DEFAULT_BODY_FIELDS. */
  readonly bodyFields?: Readonly<Record<string, BodyFieldType>>;
  /** Results remembered per policy group (exact: a group's result depends only on the inputs it reads); 0 disables. Default 2048. */
  readonly memoSize?: number;
}

/** A validated policy set, ready for the engine. */
export interface LoadedPolicies {
  readonly sources: readonly SourcePolicy[];
  /** The schema the policies were validated against. */
  readonly schemaText: string;
  /** Non-fatal validator warnings, formatted like errors. */
  readonly warnings: readonly string[];
  /** DEFAULT_BODY_FIELDS plus the caller's. */
  readonly bodyFields: Readonly<Record<string, BodyFieldType>>;
}

/**
 * Load, parse and validate every `*.cedar` file in `opts.dir`. Throws ConfigError listing every
 * problem (`file:line:col: policy-id: message`).
 */
export function loadPolicySet(opts: PolicyLoadOptions): LoadedPolicies {
  const files = listPolicyFiles(opts.dir);
  const issues: ConfigIssue[] = [];
  const sources: SourcePolicy[] = [];
  const seen = new Map<string, SourcePolicy>();
  for (const file of files) {
    for (const p of parseFile(file, issues)) {
      const prior = seen.get(p.id);
      if (prior !== undefined) {
        issues.push({ file: p.file, line: p.line, col: p.col, key: p.id,
          message: `duplicate policy id (also ${prior.file}:${prior.line})` });
        continue;
      }
      seen.set(p.id, p);
      sources.push(p);
    }
  }
  if (issues.length > 0) throw new ConfigError(sortIssues(issues));

  const bodyFields = { ...DEFAULT_BODY_FIELDS, ...(opts.bodyFields ?? {}) };
  let schemaText: string;
  if (opts.actionClasses !== undefined) {
    schemaText = firmaSchemaText({ actionClasses: opts.actionClasses, bodyFields, mcpArguments: opts.mcpArguments ?? [] });
  } else {
    // No mapping given: declare what the policies name, so conditions and types are still checked.
    const named = new Set<string>();
    for (const p of sources) for (const a of usageOf(p.json).actions) named.add(a);
    const classes = [...named].filter((a) => !isActionGroup(a));
    const groups = [...named].filter(isActionGroup);
    // A group with no class under it would make `action in` it "impossible"; give it a stand-in member.
    for (const g of groups) if (!classes.some((c) => c.startsWith(g.slice(0, -1)))) classes.push(`${g.slice(0, -1)}_`);
    schemaText = firmaSchemaText({ actionClasses: classes, actionGroups: groups, bodyFields, mcpArguments: opts.mcpArguments ?? [] });
  }
  const warnings = validatePolicies(sources, schemaText, issues);
  if (issues.length > 0) throw new ConfigError(sortIssues(issues));
  return { sources, schemaText, warnings, bodyFields };
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues.sort((a, b) => compare(a.file, b.file) || a.line - b.line || a.col - b.col);
}

function listPolicyFiles(dir: string): string[] {
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) throw new Error('not a folder');
    names = readdirSync(dir);
  } catch (err: unknown) {
    const why = err instanceof Error && 'code' in err && err.code === 'ENOENT' ? 'does not exist' : `cannot be read (${err instanceof Error ? err.message : String(err)})`;
    throw new ConfigError([{ file: dir, line: 1, col: 1, key: '', message: `policy folder ${why}` }]);
  }
  return names.filter((n) => n.endsWith('.cedar')).sort(compare).map((n) => join(dir, n));
}

const IMPOSSIBLE = /policy is impossible/;
const IMPOSSIBLE_HELP = 'it can never apply: check action names (`in` for `prefix.*` groups) and attribute names in `has` tests';

/** Validate against the schema; validation errors go to `issues`, warnings are returned. */
function validatePolicies(sources: readonly SourcePolicy[], schema: string, issues: ConfigIssue[]): string[] {
  const byId = new Map(sources.map((p) => [p.id, p]));
  const staticPolicies: Record<string, string> = {};
  for (const p of sources) staticPolicies[p.id] = p.text;
  const answer = cedar.validate({ schema, policies: { staticPolicies }, validationSettings: { mode: 'strict' } });
  if (answer.type !== 'success') {
    // The schema itself or the call failed: not tied to a policy.
    for (const e of answer.errors) issues.push({ file: '<schema>', line: 1, col: 1, key: '', message: e.message });
    return [];
  }
  const located = (list: readonly { policyId: string; error: DetailedError }[], into: ConfigIssue[]): void => {
    for (const { policyId, error } of list) {
      const p = byId.get(policyId);
      if (p === undefined) {
        into.push({ file: '<policies>', line: 1, col: 1, key: policyId, message: error.message });
        continue;
      }
      for (const i of errorIssues([error], p.file, p.fileText, p.offset, () => p.id, p.first)) {
        // Cedar repeats a type error once per action the policy applies to; one report is enough.
        if (!into.some((o) => o.file === i.file && o.line === i.line && o.col === i.col && o.message === i.message)) into.push(i);
      }
    }
  };
  // `validate` says "success" even when validation failed: the errors are in validationErrors.
  located(answer.validationErrors, issues);
  // An impossible policy is almost always a mistake that fails open (a forbid on a misspelt body field
  // under a `has` guard validates, and never fires), so it is an error too.
  const failed = new Set(answer.validationErrors.map((e) => e.policyId));
  const impossible = answer.validationWarnings.filter((w) => IMPOSSIBLE.test(w.error.message) && !failed.has(w.policyId));
  located(impossible.map((w) => ({ policyId: w.policyId, error: { ...w.error, help: IMPOSSIBLE_HELP } })), issues);
  const warnings: ConfigIssue[] = [];
  located(answer.validationWarnings.filter((w) => !IMPOSSIBLE.test(w.error.message)), warnings);
  return [
    ...sortIssues(warnings).map((w) => `${w.file}:${w.line}:${w.col}: ${w.key}: ${w.message}`),
    ...answer.otherWarnings.map((w) => w.message),
  ];
}
