import type { Envelope, Identity } from '../normalize/envelope.js';

/** Which part of the sidecar produced a verdict or an error (SPEC §3 `stage`). */
export type Stage =
  | 'intercept'
  | 'mapping'
  | 'capability'
  | 'policy'
  | 'approval'
  | 'connector'
  | 'credentials'
  | 'audit';

// A type-level brand no other module can name, so no other module can write an `Allowed` literal.
declare const allowedBrand: unique symbol;

/**
 * The only value the connector accepts. It is created by `enforce()` alone; the connector also checks
 * at run time that the value was issued by the pipeline (a cast cannot forge it).
 */
export interface Allowed {
  readonly verdict: 'allow';
  readonly envelope: Envelope;
  readonly identity: Identity;
  readonly policyIds: readonly string[];
  readonly [allowedBrand]: true;
}

export interface Denied {
  readonly verdict: 'deny';
  readonly envelope: Envelope;
  readonly stage: Stage;
  /** Machine-readable reason, e.g. `unclassified`, `token_expired`. */
  readonly reason: string;
  /** One sentence for the human reading the 403. */
  readonly message: string;
  readonly status: 403 | 407;
  readonly policyIds: readonly string[];
}

export type Decision = Allowed | Denied;
