/**
 * Stage 1: capability tokens (PASETO v4.public, Ed25519), verified on the request hot path
 * (docs/architecture.md "Enforce").
 *
 * A token is verified once (signature + claim shapes, ~50–450 µs depending on the machine) and then
 * cached with its parsed claims (bounded, approximate LRU), so later requests with the same token pay a
 * Map lookup plus a few string comparisons (< 1 µs) and are answered synchronously. Time-dependent facts (expiry, revocation) are never
 * cached: they are checked against `now()` and the in-memory revocation list (revocation.ts) on every request.
 * The claim grammar is in scope.ts, shared with `firma token issue` (tokens.ts).
 *
 * Tokens are secrets: they are used as cache keys in memory but never logged, echoed in messages or put
 * in errors; results carry only the token id (`jti`).
 */
import crypto from 'node:crypto';
import { PublicProtocol } from 'paseto';
import { PublicKeyFromCryptoKey, VerifyFactory, type PublicKey } from 'paseto/v4/public';
import type { Logger } from '../../core/log.js';
import { deny } from './check.js';
import type { CapabilityCheck, CapabilityCheckInput } from './check.js';
import { parseClaims } from './claims.js';
import type { VerifiedToken } from './claims.js';
import { readPublicKeyFile } from './keys.js';
import { RevocationList } from './revocation.js';
import { actionsCover, quote, scopeCovers } from './scope.js';

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
  readonly #now: () => number;
  readonly #cacheSize: number;
  readonly #key: Promise<PublicKey>;
  readonly #revocations: RevocationList;

  /** Verified tokens by token string, in LRU order (oldest first). */
  readonly #cache = new Map<string, VerifiedToken>();
  /** Recently rejected token strings, insertion order (oldest first). */
  readonly #rejected = new Map<string, Rejected>();
  /** Verifications under way, so concurrent requests with a new token verify it once. */
  readonly #inflight = new Map<string, Promise<Verified>>();

  #closed = false;

  private constructor(opts: CapabilityVerifierOptions, key: crypto.KeyObject) {
    this.#now = opts.now ?? Date.now;
    this.#cacheSize = Math.max(1, opts.cacheSize ?? 10_000);
    const spki = key.export({ type: 'spki', format: 'der' });
    // WebCrypto import is async; it is started now and awaited only by the first cold verification.
    this.#key = crypto.subtle
      .importKey('spki', spki, { name: 'Ed25519' }, true, ['verify'])
      .then((k) => PublicKeyFromCryptoKey(k));
    this.#key.catch(() => undefined); // surfaced (fail closed) by the verification that awaits it

    this.#revocations = new RevocationList(opts.revocationFile, opts.log, opts.pollIntervalMs);
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
    return this.#revocations.size;
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
    if (this.#closed) this.#revocations.readNow();
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
    this.#revocations.close();
    this.#cache.clear();
    this.#rejected.clear();
  }

  // Order: revoked → expired → not yet valid → wrong agent → action → scope. Revocation first so a
  // revoked token is reported as such whatever else is wrong with the request.
  #evaluate(t: VerifiedToken, input: CapabilityCheckInput): CapabilityCheck {
    if (this.#revocations.has(t.jti)) {
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
}
