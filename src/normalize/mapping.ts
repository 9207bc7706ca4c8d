/**
 * Mapping rules: `(method, host, normalised path)` → action class + risk tier (docs/architecture.md "Normalize").
 *
 * Rule files are TOML with `[[rules]]` entries:
 *
 *   [[rules]]
 *   method = "POST"                     # optional, uppercase token; absent = any method
 *   host = "api.stripe.com"             # exact DNS name / IP, "*", or "*.example.com" (subdomains only)
 *   path = "/v1/refunds"                # optional glob (glob.ts); absent = any path (same as "/**")
 *   action_class = "payments.refund"
 *   risk = "high"                       # low | medium | high | critical
 *   body_fields = ["amount", "currency"]  # optional: JSON body fields stage 2 may see
 *
 * The most specific matching rule wins, compared in this order (first difference decides):
 *   1. host: exact > `*.suffix` (a longer suffix beats a shorter one) > `*`
 *   2. method given > no method
 *   3. more literal path characters (glob.ts `literalChars`; no path counts 0, like `/**`)
 *   4. fewer `**` segments, then 5. fewer `*` wildcards
 *   6. higher risk: when two different globs tie on all of the above and both match (say `/a/*` and a
 *      `*` first segment followed by `/b`, on `/a/b`), the ambiguity resolves toward more protection
 *      rather than toward whichever file happened to load first
 *   7. load order (files in `rules_paths` order, names sorted within a glob; then line) — deterministic
 * Two rules with the same method, host and canonical path are a config error naming both places.
 *
 * Everything is compiled at load; `classify` is a Map lookup plus a few precompiled matchers and allocates
 * nothing (it returns the rule's frozen Classification).
 */
import { readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { ConfigError, parseTomlWithSchema } from '../config/index.js';
import { scanTomlPositions } from '../config/toml-scanner.js';
import { hostPatternMatches } from '../core/host.js';
import type { Risk } from '../core/envelope.js';
import type { PathPattern } from './glob.js';
import { ANY_PATH_PATTERN, ruleFileSchema, type HostPattern, type RuleFile } from './rule-file.js';
import { expandPatterns, fileIssue, readError } from './rule-paths.js';


export interface Classification {
  readonly actionClass: string;
  readonly risk: Risk;
  /**
   * `<file basename>:<line of the rule's [[rules]] header>`, e.g. `stripe.toml:42`. The basename (not a
   * path relative to the cwd) keeps ids stable however the sidecar is started; loading two files with the
   * same basename is therefore a config error.
   */
  readonly ruleId: string;
  /** Top-level or dotted JSON body fields stage 2 may see; empty when the rule opts out. */
  readonly bodyFields: readonly string[];
}

const RISK_RANK: Readonly<Record<Risk, number>> = { low: 0, medium: 1, high: 2, critical: 3 };

interface CompiledRule {
  readonly method: string | undefined;
  readonly host: HostPattern;
  readonly path: PathPattern;
  readonly riskRank: number;
  /** Global load order (file order, then position in the file). */
  readonly order: number;
  readonly file: string;
  readonly line: number;
  readonly col: number;
  readonly index: number;
  readonly classification: Classification;
}

/** Within one host group: rules for a method first (most specific first), then method-less ones. */
class HostGroup {
  private readonly byMethod = new Map<string, CompiledRule[]>();
  private anyMethod: CompiledRule[] = [];

  add(rule: CompiledRule): void {
    if (rule.method === undefined) {
      this.anyMethod.push(rule);
      return;
    }
    const list = this.byMethod.get(rule.method);
    if (list === undefined) this.byMethod.set(rule.method, [rule]);
    else list.push(rule);
  }

  seal(): void {
    for (const list of this.byMethod.values()) list.sort(comparePathSpecificity);
    this.anyMethod.sort(comparePathSpecificity);
  }

  find(method: string, path: string): Classification | null {
    const list = this.byMethod.get(method);
    if (list !== undefined) {
      for (const rule of list) if (rule.path.matches(path)) return rule.classification;
    }
    for (const rule of this.anyMethod) if (rule.path.matches(path)) return rule.classification;
    return null;
  }
}

/** Criteria 3–7 of the module comment; negative when `a` is more specific (sorts first). */
function comparePathSpecificity(a: CompiledRule, b: CompiledRule): number {
  return (
    b.path.literalChars - a.path.literalChars ||
    a.path.globstars - b.path.globstars ||
    a.path.stars - b.path.stars ||
    b.riskRank - a.riskRank ||
    a.order - b.order
  );
}

interface SuffixGroup {
  readonly pattern: string;
  readonly suffixLength: number;
  readonly group: HostGroup;
}

function describeRule(rule: CompiledRule): string {
  const host = rule.host.kind === 'exact' ? rule.host.host : rule.host.kind === 'suffix' ? rule.host.pattern : '*';
  return `${rule.method ?? '(any method)'} ${host} ${rule.path.source}`;
}

function duplicateKey(rule: CompiledRule): string {
  const host = rule.host.kind === 'exact' ? `=${rule.host.host}` : rule.host.kind === 'suffix' ? rule.host.pattern : '*';
  return `${rule.method ?? ''} ${host} ${rule.path.source}`;
}

export class MappingTable {
  /** Absolute paths of the rule files that were loaded, in load order. */
  readonly files: readonly string[];
  /** `rules_paths` patterns that matched no file (not an error; worth a warning). */
  readonly unmatchedPatterns: readonly string[];
  readonly ruleCount: number;
  /** Every action class a rule produces, sorted (stage 2 validates policies against them). */
  readonly actionClasses: readonly string[];

  private readonly exactHosts: ReadonlyMap<string, HostGroup>;
  /** Longest suffix first, so the first group with a matching rule is the most specific one. */
  private readonly suffixGroups: readonly SuffixGroup[];
  private readonly anyHost: HostGroup | null;

  private constructor(files: readonly string[], unmatched: readonly string[], rules: readonly CompiledRule[]) {
    this.files = Object.freeze([...files]);
    this.unmatchedPatterns = Object.freeze([...unmatched]);
    this.ruleCount = rules.length;
    this.actionClasses = Object.freeze([...new Set(rules.map((r) => r.classification.actionClass))].sort());
    const exact = new Map<string, HostGroup>();
    const suffixes = new Map<string, SuffixGroup>();
    let anyHost: HostGroup | null = null;
    for (const rule of rules) {
      let group: HostGroup;
      if (rule.host.kind === 'exact') {
        group = exact.get(rule.host.host) ?? new HostGroup();
        exact.set(rule.host.host, group);
      } else if (rule.host.kind === 'suffix') {
        const entry = suffixes.get(rule.host.pattern) ?? { pattern: rule.host.pattern, suffixLength: rule.host.suffixLength, group: new HostGroup() };
        suffixes.set(rule.host.pattern, entry);
        group = entry.group;
      } else {
        anyHost ??= new HostGroup();
        group = anyHost;
      }
      group.add(rule);
    }
    for (const group of exact.values()) group.seal();
    for (const entry of suffixes.values()) entry.group.seal();
    anyHost?.seal();
    this.exactHosts = exact;
    this.suffixGroups = [...suffixes.values()].sort((a, b) => b.suffixLength - a.suffixLength);
    this.anyHost = anyHost;
  }

  /**
   * Loads every rule file the (absolute) patterns name; `*`/`?` may appear in the file-name part. A glob
   * matching no file is fine (see `unmatchedPatterns`); a named file that is missing or unreadable, bad
   * TOML, bad values, duplicate rules and two files with the same basename are all reported together in
   * one ConfigError, each issue with file:line:col and key.
   */
  static load(patterns: readonly string[]): MappingTable {
    const { files, unmatched, issues } = expandPatterns(patterns);
    const rules: CompiledRule[] = [];
    const byBasename = new Map<string, string>();
    for (const file of files) {
      const name = basename(file);
      const other = byBasename.get(name);
      if (other !== undefined) {
        issues.push(fileIssue(file, `same file name as ${other}: rule ids are "<file name>:<line>", so file names must be unique`));
        continue;
      }
      byBasename.set(name, file);
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err: unknown) {
        issues.push(fileIssue(file, readError(err)));
        continue;
      }
      let parsed: RuleFile;
      try {
        parsed = parseTomlWithSchema(ruleFileSchema, text, file, dirname(file));
      } catch (err: unknown) {
        if (!(err instanceof ConfigError)) throw err;
        issues.push(...err.errors);
        continue;
      }
      if (parsed.rules.length === 0) continue;
      const positions = scanTomlPositions(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
      parsed.rules.forEach((entry, index) => {
        const pos = positions.header(['rules', index]) ?? positions.key(['rules', index]) ?? { line: 1, col: 1 };
        const path = entry.path ?? ANY_PATH_PATTERN;
        const classification: Classification = Object.freeze({
          actionClass: entry.action_class,
          risk: entry.risk,
          ruleId: `${name}:${pos.line}`,
          bodyFields: Object.freeze([...(entry.body_fields ?? [])]),
        });
        rules.push({
          method: entry.method,
          host: entry.host,
          path,
          riskRank: RISK_RANK[entry.risk],
          order: rules.length,
          file,
          line: pos.line,
          col: pos.col,
          index,
          classification,
        });
      });
    }

    const firstByKey = new Map<string, CompiledRule>();
    for (const rule of rules) {
      const key = duplicateKey(rule);
      const first = firstByKey.get(key);
      if (first === undefined) {
        firstByKey.set(key, rule);
        continue;
      }
      issues.push({
        file: rule.file,
        line: rule.line,
        col: rule.col,
        key: `rules[${rule.index}]`,
        message: `duplicate rule: ${first.file}:${first.line} and ${rule.file}:${rule.line} have the same method, host and path (${describeRule(rule)})`,
      });
    }

    if (issues.length > 0) throw new ConfigError(issues);
    return new MappingTable(files, unmatched, rules);
  }

  /** Whether some rule could classify a request to `host` (canonical, as for classify). */
  coversHost(host: string): boolean {
    return this.anyHost !== null || this.exactHosts.has(host) || this.suffixGroups.some((e) => hostPatternMatches(e.pattern, host));
  }

  /**
   * The most specific rule matching the request, or null (unclassified). `host` must be canonical
   * (lowercase, as in `Target.host`; parseHost produces it) and `normalizedPath` must come from
   * normalizePath. The port is not part of matching.
   */
  classify(method: string, host: string, normalizedPath: string): Classification | null {
    const exact = this.exactHosts.get(host);
    if (exact !== undefined) {
      const hit = exact.find(method, normalizedPath);
      if (hit !== null) return hit;
    }
    for (const entry of this.suffixGroups) {
      if (!hostPatternMatches(entry.pattern, host)) continue;
      const hit = entry.group.find(method, normalizedPath);
      if (hit !== null) return hit;
    }
    return this.anyHost === null ? null : this.anyHost.find(method, normalizedPath);
  }
}

