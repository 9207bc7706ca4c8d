/**
 * One mapping rules file: its schema (`[[rules]]` entries, see mapping.ts) and how each key is checked
 * and compiled (hosts, path globs, methods, action classes, body fields).
 */
import { fail, s } from '../config/schema-dsl.js';
import type { Failure, Infer } from '../config/schema-dsl.js';
import { describeValue } from '../config/values.js';
import { parseHost } from '../core/host.js';
import type { Risk } from '../core/envelope.js';
import { ANY_PATH, compilePathPattern } from './glob.js';
import type { PathPattern } from './glob.js';
import { normalizePath } from './path.js';

export const RISKS = ['low', 'medium', 'high', 'critical'] as const satisfies readonly Risk[];

export type HostPattern =
  | { readonly kind: 'exact'; readonly host: string }
  /** `pattern` is `*.suffix` in canonical (lowercase) form. */
  | { readonly kind: 'suffix'; readonly pattern: string; readonly suffixLength: number }
  | { readonly kind: 'any' };

const METHOD = /^[A-Z][A-Z0-9_-]*$/;
const ACTION_CLASS = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;
const BODY_FIELD = /^[A-Za-z0-9_$-]+(?:\.[A-Za-z0-9_$-]+)*$/;
const UNSAFE_FIELD_SEGMENTS: ReadonlySet<string> = new Set(['__proto__', 'prototype', 'constructor']);

function checkMethod(text: string): string | undefined {
  if (METHOD.test(text)) return undefined;
  const upper = text.toUpperCase();
  const hint = METHOD.test(upper) ? ` (did you mean ${JSON.stringify(upper)}?)` : '';
  return `expected an uppercase method token such as "GET", got ${describeValue(text)}${hint}`;
}

function checkActionClass(text: string): string | undefined {
  if (text.length <= 128 && ACTION_CLASS.test(text)) return undefined;
  return `expected dot-separated segments of a-z 0-9 _ - (at most 128 characters, e.g. "llm.chat"), got ${describeValue(text)}`;
}

function checkBodyField(text: string): string | undefined {
  if (!BODY_FIELD.test(text)) return `expected a JSON field name or dotted path (A-Z a-z 0-9 _ $ -, e.g. "amount" or "metadata.order_id"), got ${describeValue(text)}`;
  for (const segment of text.split('.')) {
    if (UNSAFE_FIELD_SEGMENTS.has(segment)) return `field name segment ${JSON.stringify(segment)} is not allowed`;
  }
  return undefined;
}

function parseHostPattern(text: string): HostPattern | Failure {
  if (text === '*') return { kind: 'any' };
  const expected = 'expected an exact DNS name or IP address, "*", or "*.example.com"';
  if (text.includes('://') || text.includes('/')) return fail(`${expected} (no scheme or path), got ${describeValue(text)}`);
  if (text.startsWith('*.')) {
    const suffix = parseHost(text.slice(2));
    if (suffix === null || suffix.kind !== 'dns' || text.endsWith('.')) {
      return fail(`${expected}; the part after "*." must be a DNS name, got ${describeValue(text)}`);
    }
    return { kind: 'suffix', pattern: `*.${suffix.host}`, suffixLength: suffix.host.length };
  }
  if (text.includes('*')) return fail(`${expected}; "*" is only allowed alone or as a leading "*.", got ${describeValue(text)}`);
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  const parsed = parseHost(bare);
  if (parsed === null) {
    const portHint = /^[^:[\]]+:\d+$/.test(text) ? ' (rules match any port: leave it out)' : '';
    return fail(`${expected}, got ${describeValue(text)}${portHint}`);
  }
  return { kind: 'exact', host: parsed.host };
}

function parsePathPattern(text: string): PathPattern | Failure {
  const result = compilePathPattern(text, normalizePath);
  return result.ok ? result.pattern : fail(result.message);
}

export const ruleFileSchema = s.table({
  rules: s
    .arrayOfTables({
      method: s.string().refine(checkMethod).optional().describe('HTTP method (uppercase); absent = any method.'),
      host: s.string().transform(parseHostPattern).describe('Exact host, "*", or "*.example.com" (any subdomain, never the apex).'),
      path: s.string().transform(parsePathPattern).optional().describe('Path glob on the normalised path: "*" within a segment, "**" across segments; absent = any path.'),
      action_class: s.string().refine(checkActionClass).describe('Action class, e.g. "llm.chat".'),
      risk: s.enum(RISKS).describe('Risk tier.'),
      body_fields: s
        .array(s.string().refine(checkBodyField), { unique: true })
        .optional()
        .describe('JSON body fields (top-level or dotted) that stage 2 policies may see.'),
    })
    .default([])
    .describe('Mapping rules.'),
});
export type RuleFile = Infer<typeof ruleFileSchema>;

/** `/**`, compiled once and shared by every rule without a `path` (an immutable constant). */
export const ANY_PATH_PATTERN: PathPattern = (() => {
  const result = compilePathPattern(ANY_PATH, normalizePath);
  if (!result.ok) throw new Error(`bug: ${ANY_PATH} does not compile: ${result.message}`);
  return result.pattern;
})();
