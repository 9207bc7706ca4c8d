/**
 * Where every key path of a TOML text starts (1-based line:col, columns in UTF-16 code units like
 * smol-toml and editors), as toml-scanner.ts records it: for `file:line:col` in config errors.
 */
import type { KeyPath, PathSegment } from './path.js';
import { pathKey } from './path.js';

export interface SourcePosition {
  readonly line: number;
  readonly col: number;
}

export interface PositionEntry {
  readonly path: PathSegment[];
  readonly pos: SourcePosition;
}

export class TomlPositions {
  private readonly keyMap = new Map<string, SourcePosition>();
  private readonly headerMap = new Map<string, SourcePosition>();
  /** Every key occurrence in source order (duplicates included). */
  readonly entries: PositionEntry[] = [];

  /** @internal */
  addKey(path: PathSegment[], pos: SourcePosition): void {
    const k = pathKey(path);
    if (!this.keyMap.has(k)) this.keyMap.set(k, pos);
    this.entries.push({ path: [...path], pos });
  }

  /** @internal */
  addHeader(path: PathSegment[], pos: SourcePosition): void {
    const k = pathKey(path);
    if (!this.headerMap.has(k)) this.headerMap.set(k, pos);
  }

  /** Where the key (or array element) at `path` starts. */
  key(path: KeyPath): SourcePosition | undefined {
    return this.keyMap.get(pathKey(path));
  }

  /** Where the `[table]` / `[[table]]` header for `path` starts (AoT entries: path ends with the index). */
  header(path: KeyPath): SourcePosition | undefined {
    return this.headerMap.get(pathKey(path));
  }

  /** The position of the longest prefix of `path` (itself included) that has a recorded key. */
  nearest(path: KeyPath): SourcePosition | undefined {
    for (let n = path.length; n > 0; n--) {
      const pos = this.key(path.slice(0, n));
      if (pos !== undefined) return pos;
    }
    return undefined;
  }

  /** The last key that starts on `line` at or before `col` (to name the key of a syntax error). */
  keyAt(line: number, col: number): PathSegment[] | undefined {
    let found: PositionEntry | undefined;
    for (const entry of this.entries) {
      if (entry.pos.line !== line || entry.pos.col > col) continue;
      if (found === undefined || entry.pos.col >= found.pos.col) found = entry;
    }
    return found?.path;
  }
}
