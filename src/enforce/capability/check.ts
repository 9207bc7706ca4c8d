/**
 * What stage 1 is asked and what it answers (docs/architecture.md "Enforce"): the agent, its token and the
 * request's class, host and path in; ok with the token id, or a deny reason and message out. Results
 * carry only the token id (`jti`), never the token.
 */

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

export function deny(reason: CapabilityDenyReason, message: string, tokenId: string | null): CapabilityCheck {
  return { ok: false, reason, message, tokenId };
}
