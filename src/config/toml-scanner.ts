/**
 * smol-toml's `parse` gives no source positions, so this scanner walks the TOML text and records where
 * every key path starts (1-based line:col, columns in UTF-16 code units like smol-toml and editors).
 *
 * - `[a.b]` / `[[a.b]]` headers (array-of-table entries get indices 0,1,2… in the path; the entry itself
 *   and its header are recorded at the `[[`), bare/quoted/dotted keys, inline tables, arrays (elements are
 *   recorded at the element's first character, with their index), and every string form, so `#`, `=` or
 *   brackets inside strings are never misread.
 * - It never throws: on malformed text it records what it can (smol-toml reports syntax errors anyway).
 */
import type { PathSegment } from './path.js';
import { pathKey } from './path.js';
import { TomlPositions, type SourcePosition } from './toml-positions.js';

const MAX_DEPTH = 256;

function isBareKeyChar(c: string | undefined): boolean {
  return c !== undefined && /^[A-Za-z0-9_-]$/.test(c);
}

class Scanner {
  private i = 0;
  private depth = 0;
  private readonly lineStarts: number[] = [0];

  constructor(
    private readonly s: string,
    private readonly out: TomlPositions,
  ) {
    for (let k = 0; k < s.length; k++) if (s.charCodeAt(k) === 10) this.lineStarts.push(k + 1);
  }

  private pos(offset: number): SourcePosition {
    let lo = 0;
    let hi = this.lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.lineStarts[mid] ?? 0) <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, col: offset - (this.lineStarts[lo] ?? 0) + 1 };
  }

  private skipWs(): void {
    while (this.s[this.i] === ' ' || this.s[this.i] === '\t') this.i++;
  }

  /** Whitespace, newlines and comments (inside arrays / inline tables, and between top-level lines). */
  private skipWsNlComments(): void {
    for (;;) {
      const c = this.s[this.i];
      if (c === ' ' || c === '\t' || c === '\r' || c === '\n') this.i++;
      else if (c === '#') this.skipToEol();
      else return;
    }
  }

  private skipToEol(): void {
    const nl = this.s.indexOf('\n', this.i);
    this.i = nl === -1 ? this.s.length : nl + 1;
  }

  run(): void {
    const s = this.s;
    let table: PathSegment[] = [];
    const aotCounts = new Map<string, number>();
    while (this.i < s.length) {
      this.skipWsNlComments();
      if (this.i >= s.length) break;
      const start = this.i;
      if (s[start] === '[') {
        const isAot = s[start + 1] === '[';
        this.i += isAot ? 2 : 1;
        this.skipWs();
        const segs = this.readKey();
        this.skipWs();
        if (segs !== undefined && s[this.i] === ']' && (!isAot || s[this.i + 1] === ']')) {
          table = this.resolveHeader(segs, isAot, start, aotCounts);
        }
        this.skipToEol();
        continue;
      }
      const segs = this.readKey();
      if (segs === undefined) {
        this.skipToEol();
        continue;
      }
      const path = this.recordDotted(table, segs);
      this.skipWs();
      if (s[this.i] === '=') {
        this.i++;
        this.skipWs();
        this.readValue(path);
      }
      if (this.i === start) this.i++;
      this.skipToEol();
    }
  }

  private resolveHeader(
    segs: Array<{ name: string; offset: number }>,
    isAot: boolean,
    start: number,
    aotCounts: Map<string, number>,
  ): PathSegment[] {
    const path: PathSegment[] = [];
    segs.forEach((seg, index) => {
      path.push(seg.name);
      this.out.addKey(path, this.pos(seg.offset));
      const last = index === segs.length - 1;
      const k = pathKey(path);
      if (!last) {
        const count = aotCounts.get(k);
        if (count !== undefined) path.push(count - 1);
      } else if (isAot) {
        const count = (aotCounts.get(k) ?? 0) + 1;
        aotCounts.set(k, count);
        path.push(count - 1);
        this.out.addKey(path, this.pos(start));
      }
    });
    this.out.addHeader(path, this.pos(start));
    return path;
  }

  private recordDotted(base: PathSegment[], segs: Array<{ name: string; offset: number }>): PathSegment[] {
    const path = [...base];
    for (const seg of segs) {
      path.push(seg.name);
      this.out.addKey(path, this.pos(seg.offset));
    }
    return path;
  }

  /** A (possibly dotted) key; undefined when there is none here. */
  private readKey(): Array<{ name: string; offset: number }> | undefined {
    const s = this.s;
    const segs: Array<{ name: string; offset: number }> = [];
    for (;;) {
      this.skipWs();
      const offset = this.i;
      const c = s[offset];
      let name: string | undefined;
      if (c === '"') name = this.readBasicString(true);
      else if (c === "'") name = this.readLiteralString();
      else if (isBareKeyChar(c)) {
        while (isBareKeyChar(s[this.i])) this.i++;
        name = s.slice(offset, this.i);
      }
      if (name === undefined) return undefined;
      segs.push({ name, offset });
      this.skipWs();
      if (s[this.i] !== '.') return segs;
      this.i++;
    }
  }

  private readValue(path: PathSegment[]): void {
    if (this.depth >= MAX_DEPTH) {
      this.i = this.s.length;
      return;
    }
    this.depth++;
    try {
      const s = this.s;
      const c = s[this.i];
      if (c === '"') {
        if (s.startsWith('"""', this.i)) this.skipMultilineBasic();
        else this.readBasicString(false);
      } else if (c === "'") {
        if (s.startsWith("'''", this.i)) this.skipMultilineLiteral();
        else this.readLiteralString();
      } else if (c === '[') {
        this.readArray(path);
      } else if (c === '{') {
        this.readInlineTable(path);
      } else {
        this.skipScalar();
      }
    } finally {
      this.depth--;
    }
  }

  private readArray(path: PathSegment[]): void {
    const s = this.s;
    this.i++; // [
    let index = 0;
    while (this.i < s.length) {
      this.skipWsNlComments();
      const c = s[this.i];
      if (c === undefined) return;
      if (c === ']') {
        this.i++;
        return;
      }
      if (c === ',') {
        this.i++;
        continue;
      }
      const start = this.i;
      const elementPath = [...path, index];
      this.out.addKey(elementPath, this.pos(start));
      this.readValue(elementPath);
      index++;
      if (this.i === start) return; // not a value: give up on this array
    }
  }

  private readInlineTable(path: PathSegment[]): void {
    const s = this.s;
    this.i++; // {
    while (this.i < s.length) {
      this.skipWsNlComments();
      const c = s[this.i];
      if (c === undefined) return;
      if (c === '}') {
        this.i++;
        return;
      }
      if (c === ',') {
        this.i++;
        continue;
      }
      const segs = this.readKey();
      if (segs === undefined) return;
      const keyPath = this.recordDotted(path, segs);
      this.skipWs();
      if (s[this.i] !== '=') return;
      this.i++;
      this.skipWs();
      const start = this.i;
      this.readValue(keyPath);
      if (this.i === start) return;
    }
  }

  private skipScalar(): void {
    const s = this.s;
    const start = this.i;
    while (this.i < s.length && !/[\s,\]}#]/.test(s[this.i] ?? '')) this.i++;
    // local date-time with a space separator: 1979-05-27 07:32:00
    if (/^\d{4}-\d{2}-\d{2}$/.test(s.slice(start, this.i)) && s[this.i] === ' ' && /\d/.test(s[this.i + 1] ?? '')) {
      this.i++;
      while (this.i < s.length && !/[\s,\]}#]/.test(s[this.i] ?? '')) this.i++;
    }
  }

  /** Single-line basic string at `"`; returns the decoded text (when `decode`) or '' ; undefined if unterminated. */
  private readBasicString(decode: boolean): string | undefined {
    const s = this.s;
    this.i++; // opening quote
    let text = '';
    while (this.i < s.length) {
      const c = s[this.i];
      if (c === '"') {
        this.i++;
        return text;
      }
      if (c === '\n') return undefined;
      if (c === '\\') {
        if (decode) text += this.decodeEscape();
        else this.i += 2;
        continue;
      }
      if (decode) text += c;
      this.i++;
    }
    return undefined;
  }

  private decodeEscape(): string {
    const s = this.s;
    const c = s[this.i + 1];
    const simple: Record<string, string> = { b: '\b', t: '\t', n: '\n', f: '\f', r: '\r', e: '\x1b', '"': '"', '\\': '\\' };
    if (c !== undefined && Object.hasOwn(simple, c)) {
      this.i += 2;
      return simple[c] ?? '';
    }
    const width = c === 'u' ? 4 : c === 'U' ? 8 : c === 'x' ? 2 : 0;
    if (width > 0) {
      const hex = s.slice(this.i + 2, this.i + 2 + width);
      this.i += 2 + width;
      const code = /^[0-9A-Fa-f]+$/.test(hex) ? Number.parseInt(hex, 16) : NaN;
      if (Number.isInteger(code) && code >= 0 && code <= 0x10ffff) return String.fromCodePoint(code);
      return '';
    }
    this.i += 2;
    return '';
  }

  private readLiteralString(): string | undefined {
    const s = this.s;
    const start = this.i + 1;
    let end = start;
    while (end < s.length && s[end] !== "'" && s[end] !== '\n') end++;
    if (s[end] !== "'") {
      this.i = end;
      return undefined;
    }
    this.i = end + 1;
    return s.slice(start, end);
  }

  private skipMultilineBasic(): void {
    const s = this.s;
    this.i += 3;
    while (this.i < s.length) {
      if (s[this.i] === '\\') {
        this.i += 2;
        continue;
      }
      if (s.startsWith('"""', this.i)) {
        this.i += 3;
        for (let extra = 0; extra < 2 && s[this.i] === '"'; extra++) this.i++;
        return;
      }
      this.i++;
    }
  }

  private skipMultilineLiteral(): void {
    const s = this.s;
    const end = s.indexOf("'''", this.i + 3);
    if (end === -1) {
      this.i = s.length;
      return;
    }
    this.i = end + 3;
    for (let extra = 0; extra < 2 && s[this.i] === "'"; extra++) this.i++;
  }
}

/** Map every key path in `source` to where it starts. Never throws. */
export function scanTomlPositions(source: string): TomlPositions {
  const out = new TomlPositions();
  try {
    new Scanner(source.charCodeAt(0) === 0xfeff ? source.slice(1) : source, out).run(); // a BOM is not a column
  } catch {
    // best effort: keep what was recorded
  }
  return out;
}
