/**
 * One `*.cedar` file into policies (docs/architecture.md "Enforce"): the file is split at top-level `;`, each
 * policy gets a stable id (its `@id("…")`, else `<file>:<line>`) and its position, and every Cedar error
 * becomes a `file:line:col: policy-id: message` issue (Cedar counts UTF-8 bytes, editors UTF-16 units).
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { DetailedError, PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';
import type { ConfigIssue } from '../../config/index.js';

/** A parsed policy and where it came from. */
export interface SourcePolicy {
  readonly id: string;
  readonly file: string;
  /** The policy's text (with any comments before it) and its char offset in the file. */
  readonly text: string;
  readonly offset: number;
  /** Char offset of the policy's first token in the file. */
  readonly first: number;
  readonly fileText: string;
  readonly line: number;
  readonly col: number;
  readonly json: PolicyJson;
}

interface Chunk {
  /** Char offsets in the file: start of the chunk (after the previous `;`), first token, end (after `;`). */
  readonly start: number;
  readonly first: number;
  readonly end: number;
}

/**
 * Split a Cedar file into policies at top-level `;`. Cedar has `//` comments and double-quoted strings
 * (with backslash escapes) but no other place a `;` can hide, so this is exact for any file that parses.
 */
function splitPolicies(text: string): Chunk[] {
  const chunks: Chunk[] = [];
  let start = 0;
  let first = -1;
  let i = 0;
  while (i < text.length) {
    const ch = text.charCodeAt(i);
    if (ch === 0x2f /* / */ && text.charCodeAt(i + 1) === 0x2f) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl + 1;
      continue;
    }
    if (ch === 0x20 || ch === 0x0a || ch === 0x0d || ch === 0x09) {
      i++;
      continue;
    }
    if (first < 0) first = i;
    if (ch === 0x22 /* " */) {
      i++;
      while (i < text.length && text.charCodeAt(i) !== 0x22) i += text.charCodeAt(i) === 0x5c /* \ */ ? 2 : 1;
      i++;
      continue;
    }
    if (ch === 0x3b /* ; */) {
      chunks.push({ start, first, end: i + 1 });
      start = i + 1;
      first = -1;
    }
    i++;
  }
  if (first >= 0) chunks.push({ start, first, end: text.length }); // unterminated last policy
  return chunks;
}

/** Line/col (1-based; col in UTF-16 units, as editors count) of a char offset. */
function lineCol(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i >= 0 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, col: offset - lineStart + 1 };
}

/** Cedar reports UTF-8 byte offsets; convert one relative to `text` into a char offset. */
function charOffset(text: string, byteOffset: number): number {
  return Buffer.from(text, 'utf8').subarray(0, byteOffset).toString('utf8').length;
}

const ID_ANNOTATION = /@id\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)/;

/** The id a chunk will get: its `@id("…")` or `<file>:<line>`. */
function chunkId(fileText: string, name: string, chunk: Chunk): string {
  const m = ID_ANNOTATION.exec(fileText.slice(chunk.first, chunk.end));
  // Only an annotation before the effect counts (annotations come first in Cedar).
  if (m?.[1] !== undefined && m.index < fileText.slice(chunk.first, chunk.end).search(/\b(permit|forbid)\b/)) {
    try {
      return JSON.parse(`"${m[1]}"`) as string;
    } catch {
      return m[1];
    }
  }
  return `${name}:${lineCol(fileText, chunk.first).line}`;
}

/**
 * An issue names its policy only by an `@id` annotation: the default id (`<file>:<line>`) repeats the
 * location the issue already starts with (`typo.cedar:1:45: typo.cedar:1: …`).
 */
function annotatedId(id: string, file: string): string {
  const name = basename(file);
  return id.startsWith(`${name}:`) && /^\d+$/.test(id.slice(name.length + 1)) ? '' : id;
}

/** Issues for Cedar errors whose byte offsets are relative to `fileText.slice(base)`. */
export function errorIssues(errors: readonly DetailedError[], file: string, fileText: string, base: number,
  keyAt: (charOffset: number) => string, fallback: number): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const local = fileText.slice(base);
  const add = (e: DetailedError): void => {
    const loc = e.sourceLocations?.[0];
    const at = loc === undefined ? fallback : base + charOffset(local, loc.start);
    const { line, col } = lineCol(fileText, at);
    const label = loc?.label ? ` (${loc.label})` : '';
    const help = e.help ? `; ${e.help}` : '';
    // The action named in a type error is one of many the policy applies to (see the dedupe in load.ts validatePolicies).
    const message = `${e.message}${label}${help}`.replace(/ for Firma::Action::"[^"]*"/g, '');
    out.push({ file, line, col, key: annotatedId(keyAt(at), file), message });
    for (const r of e.related ?? []) add(r);
  };
  for (const e of errors) add(e);
  return out;
}

/** Read and parse one `*.cedar` file into its policies; problems go to `issues` with file:line:col. */
export function parseFile(path: string, issues: ConfigIssue[]): SourcePolicy[] {
  const name = basename(path);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err: unknown) {
    issues.push({ file: path, line: 1, col: 1, key: '', message: `cannot read: ${err instanceof Error ? err.message : String(err)}` });
    return [];
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a BOM is not a column
  const chunks = splitPolicies(text);
  const keyAt = (at: number): string => {
    const chunk = chunks.find((c) => at < c.end) ?? chunks[chunks.length - 1];
    return chunk === undefined ? '' : chunkId(text, name, chunk);
  };
  const parsed = cedar.checkParsePolicySet({ staticPolicies: text });
  if (parsed.type !== 'success') {
    issues.push(...errorIssues(parsed.errors, path, text, 0, keyAt, 0));
    return [];
  }
  const out: SourcePolicy[] = [];
  for (const chunk of chunks) {
    const policyText = text.slice(chunk.start, chunk.end);
    const id = chunkId(text, name, chunk);
    const json = cedar.policyToJson(policyText);
    if (json.type !== 'success') {
      // Templates (`?principal`) parse as a set but not as a static policy.
      issues.push(...errorIssues(json.errors, path, text, chunk.start, () => id, chunk.first));
      continue;
    }
    const { line, col } = lineCol(text, chunk.first);
    out.push({ id, file: path, text: policyText, offset: chunk.start, first: chunk.first, fileText: text, line, col, json: json.json });
  }
  return out;
}
