/**
 * Path globs for mapping rules, matched against normalised paths (see path.ts).
 *
 *   - `*` matches within one segment (never `/`); a segment that is only `*` needs at least one character,
 *     so `/repos/*` does not match `/repos/`.
 *   - `**` must be a whole segment and matches zero or more segments: `/a/**` matches `/a`, `/a/`, `/a/b/c`.
 *   - A trailing slash is not significant: the pattern `/v1/files` (or `/v1/files/`) matches `/v1/files`
 *     and `/v1/files/`, so a trailing slash cannot dodge a rule.
 *
 * Matching is a hand-written two-pointer matcher rather than a RegExp: paths are attacker-controlled (up
 * to the header size limit) and a regex such as `/a*a*a*b` backtracks polynomially. Here a segment glob is
 * matched greedily with `indexOf` (correct for `*`-only globs) and `**` by backtracking to the last `**`
 * only, so the cost is O(path length × pattern length) at worst and allocation-free.
 */

const SLASH = 47;

type Token =
  | { readonly kind: 'literal'; readonly text: string }
  /** `parts` are the literal pieces between the `*`s: `a*b*c` → ['a', 'b', 'c'], `*` → ['', '']. */
  | { readonly kind: 'glob'; readonly parts: readonly string[]; readonly nonEmpty: boolean }
  | { readonly kind: 'globstar' };

export interface PathPattern {
  /** Canonical spelling (trailing slash removed, except for `/`): two rules are duplicates when equal. */
  readonly source: string;
  /** Literal characters, not counting `*` or the `/` that introduces a `**` segment: higher = more specific. */
  readonly literalChars: number;
  /** Number of `**` segments. */
  readonly globstars: number;
  /** Number of single-segment `*` wildcards. */
  readonly stars: number;
  /** Does the normalised path match? */
  matches(path: string): boolean;
}

export type PathPatternResult = { readonly ok: true; readonly pattern: PathPattern } | { readonly ok: false; readonly message: string };

/** End of the path ignoring one trailing slash (so `/a/` is matched as `/a`); `/` stays length 1. */
function effectiveEnd(path: string): number {
  const len = path.length;
  return len > 1 && path.charCodeAt(len - 1) === SLASH ? len - 1 : len;
}

function matchGlobSegment(parts: readonly string[], nonEmpty: boolean, path: string, start: number, end: number): boolean {
  if (nonEmpty && end === start) return false;
  const first = parts[0] ?? '';
  const last = parts[parts.length - 1] ?? '';
  if (end - start < first.length + last.length) return false;
  if (!path.startsWith(first, start)) return false;
  const lastStart = end - last.length;
  if (!path.startsWith(last, lastStart)) return false;
  // Middle pieces, leftmost-first between the prefix and the suffix; greedy is exact for `*`-only globs.
  let pos = start + first.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const part = parts[i] ?? '';
    const found = path.indexOf(part, pos);
    if (found === -1 || found + part.length > lastStart) return false;
    pos = found + part.length;
  }
  return true;
}

function matchToken(token: Token, path: string, start: number, end: number): boolean {
  if (token.kind === 'literal') return end - start === token.text.length && path.startsWith(token.text, start);
  if (token.kind === 'glob') return matchGlobSegment(token.parts, token.nonEmpty, path, start, end);
  return false;
}

function segmentEnd(path: string, pos: number, end: number): number {
  const slash = path.indexOf('/', pos);
  return slash === -1 || slash > end ? end : slash;
}

/** Segment-wise wildcard matching; `**` absorbs whole segments, backtracking only to the last `**`. */
function matchTokens(tokens: readonly Token[], path: string): boolean {
  if (path.charCodeAt(0) !== SLASH) return false;
  const end = effectiveEnd(path);
  // `pos` is the start of the current segment; `pos > end` means no segments are left. `/` has none.
  let pos = end === 1 ? 2 : 1;
  let ti = 0;
  let starTi = -1;
  let starPos = 0;
  while (pos <= end) {
    const token = tokens[ti];
    if (token !== undefined && token.kind === 'globstar') {
      if (ti === tokens.length - 1) return true; // a trailing `**` takes whatever is left
      starTi = ti;
      starPos = pos;
      ti++;
      continue;
    }
    const segEnd = segmentEnd(path, pos, end);
    if (token !== undefined && matchToken(token, path, pos, segEnd)) {
      ti++;
      pos = segEnd + 1;
      continue;
    }
    if (starTi === -1) return false;
    // Let the last `**` absorb one more segment and retry what follows it.
    starPos = segmentEnd(path, starPos, end) + 1;
    pos = starPos;
    ti = starTi + 1;
  }
  while (ti < tokens.length && tokens[ti]?.kind === 'globstar') ti++;
  return ti === tokens.length;
}

function isPlainPathChar(c: number): boolean {
  // Visible ASCII except '?' and '#' (a query or fragment is never part of the matched path).
  return c > 32 && c < 127 && c !== 63 && c !== 35;
}

/**
 * Validates and compiles a rule's path glob. `normalize` is the request-path normaliser: a pattern must
 * already be in normal form, because a pattern like `/v1/%7Euser` or `/a//b` could never match a
 * normalised path.
 */
export function compilePathPattern(raw: string, normalize: (path: string) => string): PathPatternResult {
  if (raw === '' || raw.charCodeAt(0) !== SLASH) return { ok: false, message: `expected a path starting with "/", got ${JSON.stringify(raw)}` };
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (!isPlainPathChar(c)) {
      const what = c === 63 ? 'a query ("?")' : c === 35 ? 'a fragment ("#")' : `${JSON.stringify(raw[i])} (use %XX escapes)`;
      return { ok: false, message: `path must not contain ${what}` };
    }
  }
  const normal = normalize(raw);
  if (normal !== raw) return { ok: false, message: `path is not in normal form (dot segments, "//" or escapes): write ${JSON.stringify(normal)}` };
  const source = raw.length > 1 && raw.charCodeAt(raw.length - 1) === SLASH ? raw.slice(0, -1) : raw;

  const tokens: Token[] = [];
  let literalChars = source === '/' ? 1 : 0; // the root pattern is the literal "/"
  let globstars = 0;
  let stars = 0;
  const segments = source === '/' ? [] : source.slice(1).split('/');
  for (const segment of segments) {
    if (segment === '**') {
      if (tokens[tokens.length - 1]?.kind === 'globstar') return { ok: false, message: 'path has "**/**": write a single "**"' };
      tokens.push({ kind: 'globstar' });
      globstars++;
      continue;
    }
    if (segment.includes('**')) return { ok: false, message: `"**" must be a whole path segment, got ${JSON.stringify(segment)}` };
    literalChars += 1; // the '/' before this segment
    if (!segment.includes('*')) {
      tokens.push({ kind: 'literal', text: segment });
      literalChars += segment.length;
      continue;
    }
    const parts = segment.split('*');
    stars += parts.length - 1;
    literalChars += segment.length - (parts.length - 1);
    tokens.push({ kind: 'glob', parts, nonEmpty: segment === '*' });
  }

  let matches: (path: string) => boolean;
  const firstGlob = tokens.findIndex((t) => t.kind !== 'literal');
  if (firstGlob === -1) {
    // Pure literal: string comparison, optional trailing slash.
    matches = (path) => path === source || (path.length === source.length + 1 && path.charCodeAt(source.length) === SLASH && path.startsWith(source));
    if (source === '/') matches = (path) => path === '/';
  } else if (firstGlob === tokens.length - 1 && tokens[firstGlob]?.kind === 'globstar') {
    // Literal prefix + `/**` (e.g. `/v1/models/**`): a prefix test on a segment boundary.
    const prefix = source.slice(0, -3); // drop "/**"
    matches = prefix === ''
      ? (path) => path.charCodeAt(0) === SLASH
      : (path) => path.startsWith(prefix) && (path.length === prefix.length || path.charCodeAt(prefix.length) === SLASH);
  } else {
    matches = (path) => matchTokens(tokens, path);
  }
  return { ok: true, pattern: { source, literalChars, globstars, stars, matches } };
}

/** The pattern used when a rule has no `path`: any path, as specific as `/**`. */
export const ANY_PATH = '/**';

/**
 * A file-name glob for `rules_paths` (`*` = any run of characters, `?` = one character). Compiled once at
 * load, so a RegExp is fine here.
 */
export function compileNameGlob(glob: string): (name: string) => boolean {
  let source = '^';
  for (const ch of glob) {
    if (ch === '*') source += '.*';
    else if (ch === '?') source += '.';
    else source += ch.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');
  }
  const re = new RegExp(`${source}$`, 's');
  // Like a shell, a wildcard does not match a leading dot unless the glob spells it.
  const hiddenOk = glob.startsWith('.');
  return (name) => (hiddenOk || !name.startsWith('.')) && re.test(name);
}

export function hasNameWildcard(text: string): boolean {
  return text.includes('*') || text.includes('?');
}
