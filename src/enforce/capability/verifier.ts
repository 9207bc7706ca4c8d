/**
 * Stage 1: capability tokens (PASETO v4.public, Ed25519), verified on the request hot path.
 *
 * A token is verified once (signature + claim shapes, ~50–450 µs depending on the machine) and then
 * cached with its parsed claims (bounded, approximate LRU), so later requests with the same token pay a
 * Map lookup plus a few string comparisons (< 1 µs) and are answered synchronously. Time-dependent facts (expiry, revocation) are never
 * cached: they are checked against `now()` and the in-memory revocation set on every request.
 *
 * Claim grammar (shared with `firma token issue` in tokens.ts):
 * - `actions`: non-empty list of action-class patterns. A pattern is `*` (every action class), an exact
 *   class (`payments.refund`), or a prefix ending in a whole `*` segment (`llm.*` covers `llm.chat` and
 *   `llm.chat.stream`, but not `llm` itself nor `llmx.chat`). `*` is allowed nowhere else.
 * - `scope`: `HOST` or `HOST/PATH-PREFIX`. HOST is an exact host (any port), or `*.example.com` for any
 *   subdomain at any depth but never the apex. The path prefix matches on `/` boundaries: `/v1` covers
 *   `/v1` and `/v1/x`, never `/v10`. The path compared is the normalised request path.
 *
 * Tokens are secrets: they are used as cache keys in memory but never logged, echoed in messages or put
 * in errors; results carry only the token id (`jti`).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PublicProtocol } from 'paseto';
import { PublicKeyFromCryptoKey, VerifyFactory, type PublicKey } from 'paseto/v4/public';
import { FirmaError } from '../../core/errors.js';
import { hostPatternMatches, parseHost } from '../../core/host.js';
import type { Logger } from '../../core/log.js';

export type CapabilityDenyReason =
  | 'token_missing'
  | 'token_invalid'
  | 'token_expired'
  | 'token_revoked'
  | 'agent_mismatch'
  | 'out_of_scope';

export type CapabilityCheck =
  | { readonly ok: true; readonly tokenId: string }
  | { readonly ok: false; readonly reason: CapabilityDenyReason; readonly message: string; readonly tokenId: string | null };

export interface CapabilityCheckInput {
  readonly agentId: string;
  /** Secret. null when the request carries none and the sidecar has none of its own. */
  readonly token: string | null;
  readonly actionClass: string;
  /** Canonical host (as parseHost returns it). */
  readonly host: string;
  /** Normalised request path without the query. */
  readonly path: string;
}

export interface CapabilityVerifierOptions {
  readonly publicKeyFile: string;
  readonly revocationFile: string;
  /** Clock for expiry checks (ms since the epoch). Default Date.now. */
  readonly now?: () => number;
  readonly log?: Logger;
  /** Stat fallback for the revocation file, in ms (default 1000; fs.watch usually fires first). */
  readonly pollIntervalMs?: number;
  /** Verified tokens kept (LRU). Default 10,000. */
  readonly cacheSize?: number;
}

// ---------------------------------------------------------------------------------------------------
// Claim grammar (exported for tokens.ts, so issuing and verifying can never disagree)
// ---------------------------------------------------------------------------------------------------

/** `*`, `a.b`, or `a.b.*`; segments as in mapping action classes (lowercase, digits, `_`, `-`). */
const ACTION_PATTERN = /^(?:\*|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*(?:\.\*)?)$/;
const MAX_ACTIONS = 64;
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

function quote(s: string): string {
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
type ActionMatcher = { readonly all: true } | { readonly all: false; readonly exact: string | null; readonly prefix: string | null };

function compileAction(p: string): ActionMatcher {
  if (p === '*') return { all: true };
  if (p.endsWith('.*')) return { all: false, exact: null, prefix: p.slice(0, -1) };
  return { all: false, exact: p, prefix: null };
}

function actionsCover(matchers: readonly ActionMatcher[], actionClass: string): boolean {
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

// ---------------------------------------------------------------------------------------------------
// Keys and revocation list
// ---------------------------------------------------------------------------------------------------

/** Reads an Ed25519 public key PEM (SPKI). Throws FIRMA_CAPABILITY_KEY_MISSING / _INVALID. */
export function readPublicKeyFile(file: string): crypto.KeyObject {
  let pem: Buffer;
  try {
    pem = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new FirmaError(
        'FIRMA_CAPABILITY_KEY_MISSING',
        `capability public key ${file} does not exist: run \`firma token issue\` once (it creates the key pair), ` +
          'or install the issuer\'s public key at that path',
      );
    }
    throw new FirmaError('FIRMA_CAPABILITY_KEY_INVALID', `cannot read capability public key ${file}: ${code ?? 'error'}`, { cause: err });
  }
  let key: crypto.KeyObject;
  try {
    key = crypto.createPublicKey(pem);
  } catch {
    throw new FirmaError('FIRMA_CAPABILITY_KEY_INVALID', `${file} is not a PEM public key`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new FirmaError('FIRMA_CAPABILITY_KEY_INVALID', `${file} is not an Ed25519 public key (PASETO v4.public needs Ed25519)`);
  }
  return key;
}

/** One token id per line; blank lines and `#` comments ignored; surrounding whitespace trimmed. */
export function parseRevocationList(text: string): Set<string> {
  const out = new Set<string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line !== '' && !line.startsWith('#')) out.add(line);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Verifier
// ---------------------------------------------------------------------------------------------------

/** A verified token: its claims, pre-parsed for the per-request checks. */
interface VerifiedToken {
  readonly jti: string;
  readonly sub: string;
  readonly expMs: number;
  readonly expText: string;
  readonly notBeforeMs: number;
  readonly actions: readonly ActionMatcher[];
  readonly actionsText: string;
  readonly scope: ParsedScope;
  /** Shared, frozen success result: a cache hit allocates nothing. */
  readonly okResult: CapabilityCheck;
  /** Used since it last reached the old end of the cache (CLOCK / second-chance eviction). */
  used: boolean;
}

interface Rejected {
  readonly result: CapabilityCheck;
  readonly untilMs: number;
}

type Verified = VerifiedToken | Rejected;

/** Real tokens are a few hundred bytes; anything this long is refused without being verified or cached. */
const MAX_TOKEN_LENGTH = 4096;
const TOKEN_PREFIX = 'v4.public.';
const NEGATIVE_CACHE_SIZE = 1024;
const NEGATIVE_TTL_MS = 30_000;
/** Temporal claims are checked here (against the injectable clock), not by the library: see verify(). */
const LIBRARY_CLOCK_TOLERANCE_S = 1e12;
/** Tolerated clock skew for `iat` / `nbf` in the future (issuer and sidecar on different hosts). */
const CLOCK_SKEW_MS = 60_000;

const MISSING: CapabilityCheck = Object.freeze({
  ok: false,
  reason: 'token_missing',
  message: 'this request needs a capability token: send Proxy-Authorization: Basic base64(agent_id:token) (HTTPS_PROXY=http://AGENT_ID:TOKEN@host:port)',
  tokenId: null,
});
const NOT_PASETO: CapabilityCheck = Object.freeze({
  ok: false,
  reason: 'token_invalid',
  message: 'capability token is not a PASETO v4.public token',
  tokenId: null,
});
const BAD_SIGNATURE: CapabilityCheck = Object.freeze({
  ok: false,
  reason: 'token_invalid',
  message: 'capability token is malformed or not signed by this sidecar\'s capability key',
  tokenId: null,
});

const v4 = new PublicProtocol(VerifyFactory);

export class CapabilityVerifier {
  readonly #revocationFile: string;
  readonly #revocationDir: string;
  readonly #revocationBase: string;
  readonly #now: () => number;
  readonly #log: Logger | undefined;
  readonly #cacheSize: number;
  readonly #key: Promise<PublicKey>;

  /** Verified tokens by token string, in LRU order (oldest first). */
  readonly #cache = new Map<string, VerifiedToken>();
  /** Recently rejected token strings, insertion order (oldest first). */
  readonly #rejected = new Map<string, Rejected>();
  /** Verifications under way, so concurrent requests with a new token verify it once. */
  readonly #inflight = new Map<string, Promise<Verified>>();

  #revoked: Set<string>;
  /** stat signature of the revocation file as last read ('' = absent). */
  #revocationStamp: string;
  #watcher: fs.FSWatcher | null = null;
  #poll: NodeJS.Timeout | null = null;
  #reloading = false;
  #reloadAgain = false;
  #closed = false;

  private constructor(opts: CapabilityVerifierOptions, key: crypto.KeyObject) {
    this.#revocationFile = opts.revocationFile;
    this.#revocationDir = path.dirname(opts.revocationFile);
    this.#revocationBase = path.basename(opts.revocationFile);
    this.#now = opts.now ?? Date.now;
    this.#log = opts.log;
    this.#cacheSize = Math.max(1, opts.cacheSize ?? 10_000);
    const spki = key.export({ type: 'spki', format: 'der' });
    // WebCrypto import is async; it is started now and awaited only by the first cold verification.
    this.#key = crypto.subtle
      .importKey('spki', spki, { name: 'Ed25519' }, true, ['verify'])
      .then((k) => PublicKeyFromCryptoKey(k));
    this.#key.catch(() => undefined); // surfaced (fail closed) by the verification that awaits it

    // Initial load is synchronous so the verifier never starts with an empty list by accident.
    const initial = readRevocationSync(opts.revocationFile);
    this.#revoked = initial.set;
    this.#revocationStamp = initial.stamp;
    this.#startWatch();
    const interval = Math.max(10, opts.pollIntervalMs ?? 1000);
    this.#poll = setInterval(() => this.#pollTick(), interval);
    this.#poll.unref();
  }

  /**
   * Loads the public key (FIRMA_CAPABILITY_KEY_MISSING / FIRMA_CAPABILITY_KEY_INVALID) and the revocation
   * list (FIRMA_CAPABILITY_REVOCATION_UNREADABLE if it exists but cannot be read), and starts watching it.
   */
  static create(opts: CapabilityVerifierOptions): CapabilityVerifier {
    return new CapabilityVerifier(opts, readPublicKeyFile(opts.publicKeyFile));
  }

  /** Number of revoked token ids currently loaded (for /readyz, metrics and tests). */
  get revokedCount(): number {
    return this.#revoked.size;
  }

  /**
   * Synchronous on a cache hit (positive or negative) and for missing/obviously foreign tokens; a
   * Promise only when a new token must be verified. Never throws for bad tokens; rejects only if the
   * public key itself could not be imported (the caller fails closed).
   */
  check(input: CapabilityCheckInput): CapabilityCheck | Promise<CapabilityCheck> {
    const token = input.token;
    if (token === null || token === '') return MISSING;
    // A closed verifier watches nothing; a request held for approval across a reload may still ask it.
    // Read the list now, so a revocation made after the reload still denies.
    if (this.#closed) this.#readRevocationsNow();
    const hit = this.#cache.get(token);
    if (hit !== undefined) {
      // A flag write instead of an LRU re-insertion (delete + set): eviction gives used entries a second chance.
      hit.used = true;
      return this.#evaluate(hit, input);
    }
    const rejected = this.#rejected.get(token);
    if (rejected !== undefined) {
      if (rejected.untilMs > this.#now()) return rejected.result;
      this.#rejected.delete(token);
    }
    if (token.length > MAX_TOKEN_LENGTH || !token.startsWith(TOKEN_PREFIX)) return NOT_PASETO;
    let pending = this.#inflight.get(token);
    if (pending === undefined) {
      pending = this.#verify(token).finally(() => this.#inflight.delete(token));
      this.#inflight.set(token, pending);
    }
    return pending.then((v) => ('result' in v ? v.result : this.#evaluate(v, input)));
  }

  /** Stops watching the revocation file and drops the caches. Idempotent. */
  close(): void {
    this.#closed = true;
    if (this.#poll !== null) clearInterval(this.#poll);
    this.#poll = null;
    this.#watcher?.close();
    this.#watcher = null;
    this.#cache.clear();
    this.#rejected.clear();
  }

  // Order: revoked → expired → not yet valid → wrong agent → action → scope. Revocation first so a
  // revoked token is reported as such whatever else is wrong with the request.
  #evaluate(t: VerifiedToken, input: CapabilityCheckInput): CapabilityCheck {
    if (this.#revoked.has(t.jti)) {
      return deny('token_revoked', `capability token ${t.jti} has been revoked`, t.jti);
    }
    const now = this.#now();
    if (now >= t.expMs) return deny('token_expired', `capability token expired at ${t.expText}`, t.jti);
    if (now + CLOCK_SKEW_MS < t.notBeforeMs) {
      return deny('token_invalid', `capability token is not valid before ${new Date(t.notBeforeMs).toISOString()} (check the clocks)`, t.jti);
    }
    if (t.sub !== input.agentId) {
      return deny('agent_mismatch', `capability token was issued to agent ${quote(t.sub)}, not ${quote(input.agentId)}`, t.jti);
    }
    if (!actionsCover(t.actions, input.actionClass)) {
      return deny('out_of_scope', `token actions ${t.actionsText} do not cover ${input.actionClass}`, t.jti);
    }
    if (!scopeCovers(t.scope, input.host, input.path)) {
      const where = input.host.includes(':') ? `[${input.host}]` : input.host;
      return deny('out_of_scope', `token scope ${t.scope.text} does not cover ${where}${input.path}`, t.jti);
    }
    return t.okResult;
  }

  async #verify(token: string): Promise<Verified> {
    const key = await this.#key;
    let claims: Record<string, unknown>;
    try {
      // The library would reject expired tokens without telling us when they expired, and with its own
      // clock; a huge tolerance turns its temporal checks off so #evaluate applies them with ours.
      const r = await v4.Verify(key, token, { clockTolerance: LIBRARY_CLOCK_TOLERANCE_S });
      claims = r.claims;
    } catch {
      // The library's error text is not forwarded: it is about the token and must not reach logs verbatim.
      return this.#reject(token, BAD_SIGNATURE);
    }
    const parsed = parseClaims(claims);
    if ('error' in parsed) return this.#reject(token, deny('token_invalid', `capability token ${parsed.error}`, parsed.jti));
    if (!this.#closed) {
      this.#evictIfFull();
      this.#cache.set(token, parsed);
    }
    return parsed;
  }

  /** Second chance: entries used since their last pass move to the young end; the first unused one goes. */
  #evictIfFull(): void {
    // Bounded: after one full pass every flag is cleared, so the loop ends within size + 1 steps.
    while (this.#cache.size >= this.#cacheSize) {
      const oldest = this.#cache.entries().next();
      if (oldest.done === true) return;
      const [key, entry] = oldest.value;
      this.#cache.delete(key);
      if (entry.used) {
        entry.used = false;
        this.#cache.set(key, entry);
      }
    }
  }

  #reject(token: string, result: CapabilityCheck): Rejected {
    const entry: Rejected = { result, untilMs: this.#now() + NEGATIVE_TTL_MS };
    if (!this.#closed) {
      if (this.#rejected.size >= NEGATIVE_CACHE_SIZE) {
        const oldest = this.#rejected.keys().next();
        if (oldest.done !== true) this.#rejected.delete(oldest.value);
      }
      this.#rejected.set(token, entry);
    }
    return entry;
  }

  // ---- revocation file ----------------------------------------------------------------------------

  #readRevocationsNow(): void {
    try {
      const { set, stamp } = readRevocationSync(this.#revocationFile);
      // As in #reloadOnce: a vanished list does not un-revoke anything.
      if (stamp !== '') this.#revoked = set;
    } catch {
      // Unreadable: keep what was loaded.
    }
  }

  #startWatch(): void {
    if (this.#watcher !== null || this.#closed) return;
    try {
      // The directory, not the file: `firma token revoke` may create the file later, and editors and
      // atomic writers replace it (rename), which a watch on the old inode would never report.
      const w = fs.watch(this.#revocationDir, { persistent: false }, (_event, filename) => {
        if (filename === null || filename === this.#revocationBase) this.#reload();
      });
      w.on('error', (err) => {
        this.#log?.warn({ err, file: this.#revocationFile }, 'capability revocation watch failed; polling instead');
        w.close();
        if (this.#watcher === w) this.#watcher = null;
      });
      this.#watcher = w;
    } catch {
      // Directory missing (or watch unsupported): the poll retries and also catches changes meanwhile.
      this.#watcher = null;
    }
  }

  #pollTick(): void {
    if (this.#closed) return;
    if (this.#watcher === null) this.#startWatch();
    fs.stat(this.#revocationFile, (err, st) => {
      if (this.#closed) return;
      const stamp = err ? '' : statStamp(st);
      if (stamp !== this.#revocationStamp) this.#reload();
    });
  }

  /** Re-reads the file; serialised, and coalesces bursts of watch events into one extra read. */
  #reload(): void {
    if (this.#closed) return;
    if (this.#reloading) {
      this.#reloadAgain = true;
      return;
    }
    this.#reloading = true;
    void this.#reloadOnce().finally(() => {
      this.#reloading = false;
      if (this.#reloadAgain) {
        this.#reloadAgain = false;
        this.#reload();
      }
    });
  }

  async #reloadOnce(): Promise<void> {
    const file = this.#revocationFile;
    try {
      // stat before read: if the file changes after the stat, the next poll sees a newer stamp.
      const st = await fs.promises.stat(file);
      const text = await fs.promises.readFile(file, 'utf8');
      if (this.#closed) return;
      const next = parseRevocationList(text);
      const before = this.#revoked.size;
      this.#revoked = next;
      this.#revocationStamp = statStamp(st);
      if (next.size !== before) this.#log?.info({ file, revoked: next.size }, 'capability revocation list reloaded');
    } catch (err) {
      if (this.#closed) return;
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        // Fail closed: a vanished list does not un-revoke anything. Keep the old set until it reappears.
        if (this.#revocationStamp !== '') {
          this.#log?.warn({ file, revoked: this.#revoked.size }, 'capability revocation file disappeared; keeping the revoked ids already loaded');
        }
        this.#revocationStamp = '';
        return;
      }
      this.#log?.warn({ file, code }, 'cannot reload the capability revocation file; keeping the previous list');
    }
  }
}

function deny(reason: CapabilityDenyReason, message: string, tokenId: string | null): CapabilityCheck {
  return { ok: false, reason, message, tokenId };
}

function statStamp(st: fs.Stats): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

function readRevocationSync(file: string): { set: Set<string>; stamp: string } {
  try {
    const st = fs.statSync(file);
    return { set: parseRevocationList(fs.readFileSync(file, 'utf8')), stamp: statStamp(st) };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { set: new Set(), stamp: '' };
    throw new FirmaError('FIRMA_CAPABILITY_REVOCATION_UNREADABLE', `cannot read the capability revocation file ${file}: ${code ?? 'error'}`, {
      cause: err,
    });
  }
}

/** Claim shapes after the signature checked out. Errors say which claim, never its value. */
function parseClaims(c: Record<string, unknown>): VerifiedToken | { error: string; jti: string | null } {
  const jti = typeof c.jti === 'string' && isValidTokenId(c.jti) ? c.jti : null;
  if (jti === null) return { error: 'has no valid "jti" claim', jti: null };
  if (typeof c.sub !== 'string' || c.sub === '') return { error: 'has no valid "sub" (agent) claim', jti };
  const exp = typeof c.exp === 'string' ? Date.parse(c.exp) : NaN;
  if (!Number.isFinite(exp)) return { error: 'has no valid "exp" claim', jti };
  let notBefore = -Infinity;
  // iat is required (a reviewer reads when a capability was granted); nbf is optional.
  if (c.iat === undefined) return { error: 'has no "iat" claim', jti };
  for (const name of ['iat', 'nbf'] as const) {
    const v = c[name];
    if (v === undefined) continue;
    const ms = typeof v === 'string' ? Date.parse(v) : NaN;
    if (!Number.isFinite(ms)) return { error: `has an invalid "${name}" claim`, jti };
    if (ms > notBefore) notBefore = ms;
  }
  const actions = c.actions;
  if (!Array.isArray(actions) || actions.length === 0 || actions.length > MAX_ACTIONS) {
    return { error: 'has no valid "actions" claim', jti };
  }
  const matchers: ActionMatcher[] = [];
  for (const a of actions) {
    if (typeof a !== 'string' || !isValidActionPattern(a)) return { error: 'has an invalid pattern in its "actions" claim', jti };
    matchers.push(compileAction(a));
  }
  if (typeof c.scope !== 'string') return { error: 'has no "scope" claim', jti };
  const scope = parseScope(c.scope);
  if ('error' in scope) return { error: 'has an invalid "scope" claim', jti };
  return {
    jti,
    sub: c.sub,
    expMs: exp,
    expText: new Date(exp).toISOString().replace(/\.000Z$/, 'Z'),
    notBeforeMs: notBefore,
    actions: matchers,
    actionsText: (actions as string[]).join(','),
    scope,
    okResult: Object.freeze({ ok: true, tokenId: jti }),
    used: false,
  };
}
