/**
 * The claim grammar of capability tokens (docs/architecture.md "Enforce"), shared by the verifier and by
 * `firma token issue` (tokens.ts) so issuing and verifying can never disagree:
 * - `actions`: non-empty list of action-class patterns. A pattern is `*` (every action class), an exact
 *   class (`payments.refund`), or a prefix ending in a whole `*` segment (`llm.*` covers `llm.chat` and
 *   `llm.chat.stream`, but not `llm` itself nor `llmx.chat`). `*` is allowed nowhere else.
 * - `scope`: `HOST` or `HOST/PATH-PREFIX`. HOST is an exact host (any port), or `*.example.com` for any
 *   subdomain at any depth but never the apex. The path prefix matches on `/` boundaries: `/v1` covers
 *   `/v1` and `/v1/x`, never `/v10`. The path compared is the normalised request path.
 * - `jti`: the token id, as listed in the revocation file.
 */
import { hostPatternMatches, parseHost } from '../../core/host.js';

/** `*`, `a.b`, or `a.b.*`; segments as in mapping action classes (lowercase, digits, `_`, `-`). */
const ACTION_PATTERN = /^(?:\*|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*(?:\.\*)?)$/;
/** Most action patterns one token may carry. */
export const MAX_ACTIONS = 64;
const MAX_ACTION_LENGTH = 128;
/** Token ids live one per line in the revocation file: no whitespace, no separators. */
const TOKEN_ID = /^[A-Za-z0-9_-]{1,128}$/;
/** Printable ASCII without space, `?`, `#` and `\`; `%XX` escapes are compared literally. */
const PATH_PREFIX_CHARS = /^\/[\x21-\x7e]*$/;

export function isValidActionPattern(p: string): boolean {
  return p.length <= MAX_ACTION_LENGTH && ACTION_PATTERN.test(p);
}

export function isValidTokenId(id: string): boolean {
  return TOKEN_ID.test(id);
}

export interface ParsedScope {
  /** Canonical host, or `*.suffix` for subdomains. */
  readonly host: string;
  /** `''` for the whole host; otherwise starts with `/` and has no trailing `/`. */
  readonly pathPrefix: string;
  /** Canonical text form, as written into tokens. */
  readonly text: string;
}

/** Parses and canonicalises a scope (`HOST` or `HOST/PATH`); returns an error sentence on failure. */
export function parseScope(scope: string): ParsedScope | { readonly error: string } {
  if (scope.length === 0 || scope.length > 1024) return { error: 'scope must be HOST or HOST/PATH-PREFIX (1-1024 characters)' };
  // An IPv6 host may be written in brackets; its own colons never contain '/'.
  const slash = scope.indexOf('/');
  let hostPart = slash === -1 ? scope : scope.slice(0, slash);
  let pathPrefix = slash === -1 ? '' : scope.slice(slash);
  if (hostPart.startsWith('[') && hostPart.endsWith(']')) hostPart = hostPart.slice(1, -1);
  let host: string;
  if (hostPart.startsWith('*.')) {
    const suffix = parseHost(hostPart.slice(2));
    if (suffix === null || suffix.kind !== 'dns') return { error: `scope host ${quote(hostPart)} is not a valid wildcard (use *.example.com)` };
    // `*.com` would hand out a whole TLD; require at least a registrable-looking suffix.
    if (suffix.host.indexOf('.') === -1) return { error: `scope host ${quote(hostPart)} is too broad: the wildcard needs a suffix with a dot (e.g. *.example.com)` };
    host = `*.${suffix.host}`;
  } else {
    const parsed = parseHost(hostPart);
    if (parsed === null) return { error: `scope host ${quote(hostPart)} is not a valid host name or IP address (no port, no scheme)` };
    host = parsed.host;
  }
  if (pathPrefix !== '') {
    if (!PATH_PREFIX_CHARS.test(pathPrefix) || pathPrefix.includes('?') || pathPrefix.includes('#') || pathPrefix.includes('\\')) {
      return { error: 'scope path must start with / and contain no spaces, ?, # or \\' };
    }
    const segments = pathPrefix.split('/').slice(1);
    // A trailing slash is dropped (`/v1/` ≡ `/v1`), but no other empty, `.` or `..` segment is allowed:
    // request paths are normalised before matching, so such a prefix could never match anything.
    if (segments[segments.length - 1] === '') segments.pop();
    for (const seg of segments) {
      if (seg === '' || seg === '.' || seg === '..') return { error: 'scope path must be normalised (no //, . or .. segments)' };
    }
    pathPrefix = segments.length === 0 ? '' : `/${segments.join('/')}`;
  }
  const hostText = host.includes(':') ? `[${host}]` : host;
  return { host, pathPrefix, text: hostText + pathPrefix };
}

/** A user-supplied name for a message, JSON-quoted and cut at 80 characters. */
export function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}

/** `/v1` covers `/v1` and `/v1/...`, never `/v10`. An empty prefix covers every path. */
export function pathPrefixCovers(prefix: string, requestPath: string): boolean {
  if (prefix === '') return true;
  if (!requestPath.startsWith(prefix)) return false;
  return requestPath.length === prefix.length || requestPath.charCodeAt(prefix.length) === 47; /* '/' */
}

export function scopeCovers(scope: ParsedScope, host: string, requestPath: string): boolean {
  return hostPatternMatches(scope.host, host) && pathPrefixCovers(scope.pathPrefix, requestPath);
}

/** Compiled action pattern: exact class, prefix (`llm.`, from `llm.*`), or everything. */
export type ActionMatcher = { readonly all: true } | { readonly all: false; readonly exact: string | null; readonly prefix: string | null };

export function compileAction(p: string): ActionMatcher {
  if (p === '*') return { all: true };
  if (p.endsWith('.*')) return { all: false, exact: null, prefix: p.slice(0, -1) };
  return { all: false, exact: p, prefix: null };
}

export function actionsCover(matchers: readonly ActionMatcher[], actionClass: string): boolean {
  for (const m of matchers) {
    if (m.all) return true;
    if (m.exact !== null) {
      if (m.exact === actionClass) return true;
    } else if (m.prefix !== null && actionClass.length > m.prefix.length && actionClass.startsWith(m.prefix)) {
      return true;
    }
  }
  return false;
}

/** Pure glob test for one pattern (used by tests and tooling; the hot path uses compiled matchers). */
export function actionPatternMatches(pattern: string, actionClass: string): boolean {
  return isValidActionPattern(pattern) && actionsCover([compileAction(pattern)], actionClass);
}
