/**
 * Path normalisation for rule matching. Mapping rules match the *normalised* path so that spellings a
 * server treats as the same resource (`/v1/../admin`, `/%61dmin`, `//admin`) cannot dodge a rule. The
 * request itself is forwarded unchanged: this string is only what the rules (and policies) see.
 *
 * Rules, in this order:
 *   1. A path that does not start with `/` gets one (`*` of `OPTIONS *` becomes `/*`; '' becomes `/`).
 *   2. `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are decoded; every
 *      other escape keeps its encoding with uppercase hex. In particular `%2F` stays `%2F`: a rule never
 *      sees an encoded slash as a segment separator, because most servers do not split on it either (and
 *      those that do would make `/a%2F..%2Fb` ambiguous; we keep the literal, conservative reading).
 *      A `%` not followed by two hex digits is a literal percent and becomes `%25` (most servers reject
 *      it anyway; this keeps the output canonical and normalisation idempotent).
 *   3. Empty segments are dropped (`//v1//x` → `/v1/x`) *before* dot segments are resolved, like nginx's
 *      `merge_slashes`, so `/a//../b` is `/b`.
 *   4. Dot segments are resolved (RFC 3986 §5.2.4), including ones spelled `%2e`, `.%2E`, ...; `..` never
 *      climbs above the root (`/../x` → `/x`).
 *   5. A trailing slash is kept, and a path ending in a dot segment ends in `/` (`/a/b/..` → `/a/`).
 *
 * Hot path: one char-code scan decides whether the path is already normal (the common case), and then the
 * input string itself is returned; no regex is compiled or run.
 */

const SLASH = 47;
const DOT = 46;
const PERCENT = 37;

/** Lookup table: is this ASCII code an unreserved character (RFC 3986 §2.3)? */
const UNRESERVED: readonly boolean[] = (() => {
  const table = new Array<boolean>(128).fill(false);
  const mark = (from: number, to: number): void => {
    for (let c = from; c <= to; c++) table[c] = true;
  };
  mark(65, 90); // A-Z
  mark(97, 122); // a-z
  mark(48, 57); // 0-9
  for (const c of '-._~') table[c.charCodeAt(0)] = true;
  return table;
})();

const HEX_UPPER = '0123456789ABCDEF';

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const lower = c | 0x20;
  if (lower >= 97 && lower <= 102) return lower - 87;
  return -1;
}

/** True when the segment starting at `start` (just after a '/') is '.' or '..' (literal dots only). */
function isDotSegmentAt(raw: string, start: number): boolean {
  const len = raw.length;
  if (start >= len || raw.charCodeAt(start) !== DOT) return false;
  if (start + 1 === len || raw.charCodeAt(start + 1) === SLASH) return true;
  if (raw.charCodeAt(start + 1) !== DOT) return false;
  return start + 2 === len || raw.charCodeAt(start + 2) === SLASH;
}

/** Already normal: leading '/', no '%', no '//', no '.' or '..' segment. */
function isNormal(raw: string): boolean {
  const len = raw.length;
  if (len === 0 || raw.charCodeAt(0) !== SLASH) return false;
  for (let i = 0; i < len; i++) {
    const c = raw.charCodeAt(i);
    if (c === PERCENT) return false;
    if (c === SLASH) {
      if (i + 1 < len && raw.charCodeAt(i + 1) === SLASH) return false;
      if (isDotSegmentAt(raw, i + 1)) return false;
    }
  }
  return true;
}

/** Decodes unreserved escapes and uppercases the hex of the others in raw[start, end). */
function decodeSegment(raw: string, start: number, end: number): string {
  let pct = raw.indexOf('%', start);
  if (pct === -1 || pct >= end) return raw.slice(start, end);
  let out = '';
  let runStart = start;
  while (pct !== -1 && pct < end) {
    if (pct + 2 < end) {
      const hi = hexValue(raw.charCodeAt(pct + 1));
      const lo = hexValue(raw.charCodeAt(pct + 2));
      if (hi !== -1 && lo !== -1) {
        const byte = hi * 16 + lo;
        out += raw.slice(runStart, pct);
        out += byte < 128 && UNRESERVED[byte] === true ? String.fromCharCode(byte) : `%${HEX_UPPER[hi]}${HEX_UPPER[lo]}`;
        runStart = pct + 3;
        pct = raw.indexOf('%', runStart);
        continue;
      }
    }
    // Not a valid escape: a literal '%', spelled `%25` so the result is canonical and idempotent
    // (kept as a bare '%', `/a%%341` would become `/a%41` and then `/aA` on a second pass).
    out += raw.slice(runStart, pct);
    out += '%25';
    runStart = pct + 1;
    pct = raw.indexOf('%', runStart);
  }
  return out + raw.slice(runStart, end);
}

/**
 * Normalises the path part of a request target (no query string) for rule matching; see the module
 * comment for the exact rules. Idempotent: `normalizePath(normalizePath(p)) === normalizePath(p)`.
 */
export function normalizePath(raw: string): string {
  if (isNormal(raw)) return raw;

  const len = raw.length;
  const segments: string[] = [];
  // Whether the output ends in '/': the last raw segment was empty ('/x/'), '.' or '..'.
  let trailingSlash = false;
  let start = raw.charCodeAt(0) === SLASH ? 1 : 0;
  while (start <= len) {
    let end = raw.indexOf('/', start);
    if (end === -1) end = len;
    const segment = decodeSegment(raw, start, end);
    if (segment === '' || segment === '.') {
      trailingSlash = true;
    } else if (segment === '..') {
      segments.pop();
      trailingSlash = true;
    } else {
      segments.push(segment);
      trailingSlash = false;
    }
    start = end + 1;
  }
  if (segments.length === 0) return '/';
  const joined = `/${segments.join('/')}`;
  return trailingSlash ? `${joined}/` : joined;
}
