import type { Envelope, Identity } from './envelope.js';

/** Which part of the sidecar produced a verdict or an error (docs/listeners.md `stage`). */
export type Stage =
  | 'intercept'
  | 'mapping'
  | 'capability'
  | 'policy'
  | 'approval'
  | 'budget'
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
  /** The human approval this decision rests on or waited for (an approval id), else null. */
  readonly approvalId: string | null;
}

/** How an approval-gated request came to be allowed. */
export interface ApprovalGrantFacts {
  /** `approved`: a person approved this request (or the one it joined); `grant`: a standing grant. */
  readonly via: 'approved' | 'grant';
  readonly approver: string;
}

/** What stage 1 and stage 2 permit: an allow that the pipeline has not issued yet. */
export interface Permitted extends DecisionFacts {
  readonly verdict: 'allow';
  readonly envelope: Envelope;
  readonly identity: Identity;
  /** Unclassified traffic let through with `default_protected = false`: never gets credentials. */
  readonly passthrough: boolean;
  /** Monitor mode: what enforce mode would have refused (the response carries x-firma-would-deny). */
  readonly wouldDeny: WouldDeny | null;
  /** Set when a policy required approval and a person (or a standing grant) gave it. */
  readonly approval: ApprovalGrantFacts | null;
}

// A type-level brand no other module can name, so no other module can write an `Allowed` literal.
declare const allowedBrand: unique symbol;

/**
 * The only value the connector accepts: a `Permitted` the pipeline issued once every step before
 * dispatch was done (docs/architecture.md "The Allowed value"). The connector also checks at run time
 * that the value was issued (a cast cannot forge it).
 */
export interface Allowed extends Permitted {
  readonly [allowedBrand]: true;
}

/** Every Allowed ever issued in this process. */
const issued = new WeakSet<object>();

/**
 * Make `permitted` the Allowed the connector will take (the same object: no copy on the hot path).
 * Only src/pipeline/ calls this; test/unit/architecture.test.ts fails on any other caller.
 */
export function issueAllowed(permitted: Permitted): Allowed {
  issued.add(permitted);
  return permitted as Allowed;
}

/** True only for values issued by `issueAllowed` in this process. */
export function isIssuedAllowed(value: Allowed): boolean {
  return issued.has(value);
}

export interface Denied extends DecisionFacts {
  readonly verdict: 'deny';
  readonly envelope: Envelope;
  readonly stage: Stage;
  /** Machine-readable reason, e.g. `unclassified`, `token_expired`. */
  readonly reason: string;
  /** One sentence for the human reading the 403. */
  readonly message: string;
  readonly status: 400 | 403 | 407 | 429 | 503;
  /** Seconds the agent should wait before trying again (the `Retry-After` header); absent when retrying cannot help. */
  readonly retryAfterS?: number;
}

/**
 * A policy permits the request only with a person's approval: the request is held open while the
 * approval stage waits. Never dispatched as it is; `Enforcer.awaitApproval` turns it into a Verdict.
 */
export interface Held extends DecisionFacts {
  readonly verdict: 'hold';
  readonly envelope: Envelope;
  readonly identity: Identity;
  /** Why approval is needed, for the person deciding. */
  readonly message: string;
}

/** What the enforce stage answers: permitted or denied. */
export type Verdict = Permitted | Denied;

/** What the pipeline acts on: an issued Allowed, or a deny. */
export type Decision = Allowed | Denied;
