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

/** What the pipeline would have refused, had it been enforcing (monitor mode). */
export interface WouldDeny {
  readonly stage: Stage;
  readonly reason: string;
  readonly policyIds: readonly string[];
}

/** Facts about the decision that the log and the audit record, whatever the verdict. */
export interface DecisionFacts {
  /** Capability token id (`jti`) when stage 1 read one; never the token. */
  readonly tokenId: string | null;
  /** The determining policies. */
  readonly policyIds: readonly string[];
  /** SHA-256 of the policy set that decided. */
  readonly policyHash: string | null;
}

// A type-level brand no other module can name, so no other module can write an `Allowed` literal.
declare const allowedBrand: unique symbol;

/**
 * The only value the connector accepts. It is created by the pipeline alone; the connector also checks
 * at run time that the value was issued by the pipeline (a cast cannot forge it).
 */
export interface Allowed extends DecisionFacts {
  readonly verdict: 'allow';
  readonly envelope: Envelope;
  readonly identity: Identity;
  /** Unclassified traffic let through with `default_protected = false`: never gets credentials. */
  readonly passthrough: boolean;
  /** Monitor mode: what enforce mode would have refused (the response carries x-firma-would-deny). */
  readonly wouldDeny: WouldDeny | null;
  readonly [allowedBrand]: true;
}

export interface Denied extends DecisionFacts {
  readonly verdict: 'deny';
  readonly envelope: Envelope;
  readonly stage: Stage;
  /** Machine-readable reason, e.g. `unclassified`, `token_expired`. */
  readonly reason: string;
  /** One sentence for the human reading the 403. */
  readonly message: string;
  readonly status: 400 | 403 | 407;
}

export type Decision = Allowed | Denied;
