/**
 * The claims of a token whose signature checked out (docs/architecture.md "Enforce"): their shapes are
 * checked once and pre-parsed for the per-request checks. Errors say which claim, never its value.
 */
import type { CapabilityCheck } from './check.js';
import { MAX_ACTIONS, compileAction, isValidActionPattern, isValidTokenId, parseScope } from './scope.js';
import type { ActionMatcher, ParsedScope } from './scope.js';

/** A verified token: its claims, pre-parsed for the per-request checks. */
export interface VerifiedToken {
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

/** Claim shapes after the signature checked out. Errors say which claim, never its value. */
export function parseClaims(c: Record<string, unknown>): VerifiedToken | { error: string; jti: string | null } {
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
