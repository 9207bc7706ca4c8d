import { normalize, type Envelope, type Identity, type RawRequest } from '../normalize/envelope.js';
import type { Allowed, Decision, Denied } from './decision.js';

/** Every Allowed ever issued; the connector refuses anything not in here. */
const issued = new WeakSet<object>();

function allow(envelope: Envelope, identity: Identity, policyIds: readonly string[]): Allowed {
  const value = { verdict: 'allow', envelope, identity, policyIds } as const;
  issued.add(value);
  return value as unknown as Allowed;
}

/** True only for values created by `enforce()` in this process. */
export function isIssuedAllowed(value: Allowed): boolean {
  return issued.has(value);
}

export interface EnforceInput {
  readonly envelope: Envelope;
  readonly identity: Identity;
}

/**
 * The single enforcement entry point: envelope in, decision out. Stage 1 (capability) and stage 2
 * (Cedar policy) plug in here; until they land, every envelope is allowed. Any exception thrown by a
 * stage is turned into a deny by the caller (fail closed).
 */
export function enforce(input: EnforceInput): Decision {
  return allow(input.envelope, input.identity, []);
}

/**
 * Normalize then enforce, failing closed: any exception in either stage is a deny with reason
 * `internal_error` (the cause goes to the operator's log via `onError`, never to the agent).
 */
export function decide(raw: RawRequest, onError: (err: unknown) => void): Decision {
  let envelope: Envelope | null = null;
  try {
    envelope = normalize(raw);
    return enforce({ envelope, identity: raw.identity });
  } catch (err) {
    onError(err);
    const denied: Denied = {
      verdict: 'deny',
      envelope: envelope ?? fallbackEnvelope(raw),
      stage: envelope === null ? 'mapping' : 'policy',
      reason: 'internal_error',
      message: 'the sidecar could not evaluate this request, so it was denied',
      status: 403,
      policyIds: [],
    };
    return denied;
  }
}

function fallbackEnvelope(raw: RawRequest): Envelope {
  return {
    requestId: raw.requestId,
    kind: raw.kind,
    agentId: raw.identity.agentId,
    method: raw.method,
    target: raw.target,
    path: null,
    query: null,
    actionClass: null,
    risk: null,
  };
}
