/**
 * Which rule files `rules_paths` names: absolute paths, with `*` and `?` in the file-name part only
 * (docs/configuration.md "Mapping rules").
 */
import { readdirSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute } from 'node:path';
import type { ConfigIssue } from '../config/index.js';
import { errorCode } from '../core/errors.js';
import { compileNameGlob, hasNameWildcard } from './glob.js';

export interface Expansion {
  readonly files: string[];
  readonly unmatched: string[];
  readonly issues: ConfigIssue[];
}

export function fileIssue(file: string, message: string): ConfigIssue {
  return { file, line: 1, col: 1, key: '', message };
}

export function readError(err: unknown): string {
  const code = errorCode(err) ?? '';
  if (code === 'ENOENT') return 'file not found';
  if (code === 'EISDIR') return 'is a directory, not a file';
  return `cannot read file${code === '' ? '' : ` (${code})`}`;
}

/** Absolute paths; `*` and `?` only in the file-name part (as `rules_paths` documents). */
export function expandPatterns(patterns: readonly string[]): Expansion {
  const files: string[] = [];
  const seen = new Set<string>();
  const unmatched: string[] = [];
  const issues: ConfigIssue[] = [];
  const addFile = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    files.push(file);
  };
  for (const pattern of patterns) {
    if (!isAbsolute(pattern)) {
      issues.push(fileIssue(pattern, 'mapping rules path must be absolute (config paths resolve against the config file folder)'));
      continue;
    }
    const dir = dirname(pattern);
    const name = basename(pattern);
    if (hasNameWildcard(dir)) {
      issues.push(fileIssue(pattern, '"*" and "?" are only allowed in the file-name part of a rules path'));
      continue;
    }
    if (!hasNameWildcard(name)) {
      addFile(pattern); // a named file must exist and be readable: reading it reports the problem
      continue;
    }
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch (err: unknown) {
      if (errorCode(err) === 'ENOENT') {
        unmatched.push(pattern);
        continue;
      }
      issues.push(fileIssue(dir, `cannot list folder for ${JSON.stringify(name)}${errorCode(err) === undefined ? '' : ` (${errorCode(err)})`}`));
      continue;
    }
    const matches = compileNameGlob(name);
    let matched = 0;
    for (const entry of entries.filter(matches).sort()) {
      const file = `${dir === '/' ? '' : dir}/${entry}`;
      try {
        if (statSync(file).isDirectory()) continue;
      } catch {
        // A dangling symlink and the like: reading it below reports it as unreadable.
      }
      matched++;
      addFile(file);
    }
    if (matched === 0) unmatched.push(pattern);
  }
  return { files, unmatched, issues };
}
