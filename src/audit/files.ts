import { readdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * Rotation naming: the live file is `<base>` (e.g. audit.jsonl); rotated files are `<base>.1`, `<base>.2`,
 * … numbered in the order they were closed, so `.1` is the OLDEST. Rotating is one rename of `<base>` to
 * `<base>.<max+1>` (no shifting of older files, so a crash mid-rotation cannot reorder history).
 * Chain order: `.1`, `.2`, …, `.N`, then `<base>`.
 */
export function rotatedName(base: string, n: number): string {
  return `${base}.${n}`;
}

/** Rotated files of `base`, oldest first, as [number, path]. */
export function listRotated(base: string): Array<{ n: number; path: string }> {
  const dir = dirname(base);
  const prefix = `${basename(base)}.`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: Array<{ n: number; path: string }> = [];
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const rest = name.slice(prefix.length);
    if (!/^[1-9][0-9]*$/.test(rest)) continue;
    out.push({ n: Number(rest), path: join(dir, name) });
  }
  return out.sort((a, b) => a.n - b.n);
}

/** The live file an audit path names: the path itself, or `audit.jsonl` inside it when it is a directory. */
export function liveAuditFile(path: string): string {
  try {
    if (statSync(path).isDirectory()) return join(path, 'audit.jsonl');
  } catch {
    // A missing path names a file not written yet (its rotated siblings may still exist).
  }
  return path;
}

/**
 * The files of one log in chain order. `path` may be a directory (its `audit.jsonl` set) or a base
 * path; the live file is included when it exists.
 */
export function auditFileSet(path: string): string[] {
  const base = liveAuditFile(path);
  const files = listRotated(base).map((r) => r.path);
  try {
    statSync(base);
    files.push(base);
  } catch {
    // No live file (e.g. just rotated, or only archives were copied).
  }
  return files;
}
