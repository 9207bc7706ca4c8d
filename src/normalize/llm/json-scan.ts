/**
 * Byte-level look-ups in JSON text that spare parsing what is not needed
 * (docs/llm.md "How usage is read"): where a key's value starts, where an object ends, a short string
 * value. A key is searched with its quotes, which never matches inside a JSON string (a quote there is
 * escaped).
 */

const SPACE = 0x20;
const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN = 0x7b;
const CLOSE = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;

/** `"name"` as bytes, made once per key at module load. */
export function jsonKey(name: string): Buffer {
  return Buffer.from(JSON.stringify(name), 'latin1');
}

function isSpace(b: number): boolean {
  return b === SPACE || b === TAB || b === LF || b === CR;
}

/** After a key ending before `at`: the index of its value's first byte (past `:` and blanks), or -1. */
export function valueAfterKey(buf: Buffer, at: number, end: number): number {
  let i = at;
  while (i < end && isSpace(buf[i] as number)) i++;
  if (i >= end || buf[i] !== COLON) return -1;
  i++;
  while (i < end && isSpace(buf[i] as number)) i++;
  return i < end ? i : -1;
}

/** The index just past the object or array opening at `start` (strings skipped), or -1 when it does not close before `end`. */
export function containerEnd(buf: Buffer, start: number, end: number): number {
  let depth = 0;
  for (let i = start; i < end; i++) {
    const b = buf[i] as number;
    if (b === QUOTE) {
      i = stringEnd(buf, i + 1, end) - 1;
      if (i < 0) return -1;
    } else if (b === OPEN || b === OPEN_ARRAY) {
      depth++;
    } else if (b === CLOSE || b === CLOSE_ARRAY) {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}

/** The index just past the closing quote of the string whose content starts at `start`, or -1. */
export function stringEnd(buf: Buffer, start: number, end: number): number {
  for (let i = start; i < end; i++) {
    const b = buf[i];
    if (b === QUOTE) return i + 1;
    if (b === BACKSLASH) i++;
  }
  return -1;
}

/** The string value opening (its quote) at `quote`, when it closes within `max` bytes; else null. */
export function shortString(buf: Buffer, quote: number, end: number, max: number): string | null {
  if (buf[quote] !== QUOTE) return null;
  const close = stringEnd(buf, quote + 1, Math.min(end, quote + 2 + max));
  if (close === -1) return null;
  const raw = buf.toString('utf8', quote, close);
  if (raw.indexOf('\\') === -1) return raw.slice(1, -1);
  try {
    const v: unknown = JSON.parse(raw);
    return typeof v === 'string' ? v : null;
  } catch {
    return null;
  }
}

/** The value of the first `key` holding a string in `buf[start, end)`, when at most `max` bytes; else null. */
export function firstStringOf(buf: Buffer, key: Buffer, start: number, end: number, max: number): string | null {
  for (let at = buf.indexOf(key, start); at !== -1 && at < end; at = buf.indexOf(key, at + key.length)) {
    const v = valueAfterKey(buf, at + key.length, end);
    if (v !== -1 && buf[v] === QUOTE) return shortString(buf, v, end, max);
  }
  return null;
}

/** Parse the object or array at `start` if it closes before `end`; undefined when it does not or is not JSON. */
export function parseContainer(buf: Buffer, start: number, end: number): unknown {
  const close = containerEnd(buf, start, end);
  if (close === -1) return undefined;
  try {
    return JSON.parse(buf.toString('utf8', start, close)) as unknown;
  } catch {
    return undefined;
  }
}
