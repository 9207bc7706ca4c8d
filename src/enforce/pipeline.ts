import type { Envelope, Identity, RawRequest, BodyValue } from '../normalize/envelope.js';
import { splitTarget } from '../normalize/envelope.js';
import { normalizePath } from '../normalize/path.js';
import type { MappingTable } from '../normalize/mapping.js';
import type { Allowed, Decision, Denied, DecisionFacts, Stage, WouldDeny } from './decision.js';
import type { CapabilityVerifier, CapabilityCheck } from './capability.js';
import type { PolicyEngine } from './policy.js';
import type { ActionCounters } from './counters.js';

/** Every Allowed ever issued; the connector refuses anything not in here. */
const issued = new WeakSet<object>();

/** True only for values created by the pipeline in this process. */
export function isIssuedAllowed(value: Allowed): boolean {
  return issued.has(value);
}

function allow(
  envelope: Envelope,
  identity: Identity,
  facts: DecisionFacts,
  passthrough: boolean,
  wouldDeny: WouldDeny | null,
): Allowed {
  const value = { verdict: 'allow', envelope, identity, passthrough, wouldDeny, ...facts } as const;
  issued.add(value);
  return value as unknown as Allowed;
}

export interface PipelineOptions {
  readonly mode: 'enforce' | 'monitor';
  readonly defaultProtected: boolean;
  readonly mapping: MappingTable;
  /** Stage 1; null when `[sidecar.capabilities] required = false`. */
  readonly capabilities: CapabilityVerifier | null;
  /** The sidecar's own token, for requests that bring none. Secret. */
  readonly selfToken: string | null;
  readonly policy: PolicyEngine;
  readonly counters: ActionCounters;
  readonly now?: () => number;
  /** Where an unexpected exception inside a stage is reported (the agent only sees `internal_error`). */
  readonly onError: (err: unknown, requestId: string) => void;
}

const NO_FIELDS: readonly string[] = [];

/**
 * The decision half: classify (normalize) then stage 1 (capability) then stage 2 (Cedar policy).
 * Same envelope + same policies + same counts → same decision. Any exception is a deny (fail closed).
 * In monitor mode every deny becomes an allow that carries what would have been refused.
 */
export class Pipeline {
  readonly #o: PipelineOptions;
  readonly #now: () => number;

  constructor(opts: PipelineOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  get mode(): 'enforce' | 'monitor' {
    return this.#o.mode;
  }

  get policyHash(): string {
    return this.#o.policy.policyHash;
  }

  /** RawRequest → Envelope: path normalised, action class and risk from the mapping rules. */
  classify(raw: RawRequest): Envelope {
    const envelope = baseEnvelope(raw, true);
    const method = raw.kind === 'tunnel' ? 'CONNECT' : raw.method;
    const c = this.#o.mapping.classify(method, raw.target.host, envelope.normalizedPath);
    if (c === null) return envelope;
    return { ...envelope, actionClass: c.actionClass, risk: c.risk, ruleId: c.ruleId, bodyFields: c.bodyFields };
  }

  /** The envelope with the body fields a rule asked for. */
  withBody(envelope: Envelope, values: Readonly<Record<string, BodyValue>>): Envelope {
    return { ...envelope, body: values };
  }

  /** A refusal before the stages ran (body over the limit, not JSON…), subject to monitor mode. */
  refuse(envelope: Envelope, identity: Identity, stage: Stage, reason: string, message: string): Decision {
    return this.#finish(envelope, identity, this.#deny(envelope, stage, reason, message, 403, EMPTY_FACTS));
  }

  /** Stage 1 then stage 2. Returns synchronously when stage 1 answers from its cache. */
  decide(envelope: Envelope, identity: Identity): Decision | Promise<Decision> {
    try {
      if (envelope.actionClass === null) {
        if (this.#o.defaultProtected) {
          return this.#finish(envelope, identity, this.#deny(envelope, 'mapping', 'unclassified',
            `no mapping rule classifies ${envelope.method} ${envelope.target.host}${envelope.normalizedPath}, and unmapped traffic is denied (default_protected)`,
            403, EMPTY_FACTS));
        }
        return allow(envelope, identity, EMPTY_FACTS, true, null);
      }
      const caps = this.#o.capabilities;
      if (caps === null) return this.#stage2(envelope, identity, null);
      const token = identity.token ?? this.#o.selfToken;
      const check = caps.check({
        agentId: identity.agentId,
        token,
        actionClass: envelope.actionClass,
        host: envelope.target.host,
        path: envelope.normalizedPath,
      });
      if (check instanceof Promise) {
        return check.then(
          (c) => this.#afterStage1(envelope, identity, c, token),
          (err: unknown) => this.#internal(envelope, 'capability', err),
        );
      }
      return this.#afterStage1(envelope, identity, check, token);
    } catch (err) {
      return this.#internal(envelope, 'policy', err);
    }
  }

  #afterStage1(envelope: Envelope, identity: Identity, c: CapabilityCheck, token: string | null): Decision {
    try {
      if (!c.ok) {
        // No identity at all is a 407, so clients that support it can ask for proxy credentials.
        const status = c.reason === 'token_missing' && token === null ? 407 : 403;
        return this.#finish(envelope, identity, this.#deny(envelope, 'capability', c.reason, c.message, status, {
          tokenId: c.tokenId,
          policyIds: [],
          policyHash: null,
        }));
      }
      return this.#stage2(envelope, identity, c.tokenId);
    } catch (err) {
      return this.#internal(envelope, 'capability', err);
    }
  }

  #stage2(envelope: Envelope, identity: Identity, tokenId: string | null): Decision {
    const actionClass = envelope.actionClass as string;
    const now = this.#now();
    const counts = this.#o.counters.counts(identity.agentId, actionClass, now);
    const outcome = this.#o.policy.evaluate({
      agentId: identity.agentId,
      actionClass,
      risk: envelope.risk ?? 'critical',
      method: envelope.method,
      host: envelope.target.host,
      path: envelope.normalizedPath,
      nowMs: now,
      counts,
      body: envelope.body,
    });
    const facts: DecisionFacts = { tokenId, policyIds: outcome.policyIds, policyHash: this.#o.policy.policyHash };
    if (outcome.verdict === 'allow') {
      this.#o.counters.record(identity.agentId, actionClass, now);
      return allow(envelope, identity, facts, false, null);
    }
    if (outcome.verdict === 'approval') {
      // The held request arrives with the approval issue; until then approval means no.
      return this.#finish(envelope, identity, this.#deny(envelope, 'approval', 'approval_required',
        `${actionClass} (${envelope.risk ?? 'unknown'} risk) needs a human's approval (${outcome.policyIds.join(', ')})`, 403, facts));
    }
    const message = outcome.reason === 'no_permit'
      ? `no policy permits ${actionClass} for agent ${identity.agentId}`
      : outcome.reason === 'policy_error'
        ? 'the policies could not be evaluated, so the request was denied'
        : `denied by policy ${outcome.policyIds.join(', ')}`;
    return this.#finish(envelope, identity, this.#deny(envelope, 'policy', outcome.reason, message, 403, facts));
  }

  #deny(envelope: Envelope, stage: Stage, reason: string, message: string, status: 400 | 403 | 407, facts: DecisionFacts): Denied {
    return { verdict: 'deny', envelope, stage, reason, message, status, ...facts };
  }

  /** Monitor mode turns a deny into an allow that remembers it; enforce mode keeps the deny. */
  #finish(envelope: Envelope, identity: Identity, denied: Denied): Decision {
    if (this.#o.mode === 'enforce') return denied;
    if (envelope.actionClass !== null) this.#o.counters.record(identity.agentId, envelope.actionClass, this.#now());
    return allow(
      envelope,
      identity,
      { tokenId: denied.tokenId, policyIds: denied.policyIds, policyHash: denied.policyHash },
      envelope.actionClass === null,
      { stage: denied.stage, reason: denied.reason, policyIds: denied.policyIds },
    );
  }

  #internal(envelope: Envelope, stage: Stage, err: unknown): Decision {
    this.#o.onError(err, envelope.requestId);
    // Fail closed even in monitor mode: an evaluation that broke says nothing about the request.
    return this.#deny(envelope, stage, 'internal_error', 'the sidecar could not evaluate this request, so it was denied', 403, EMPTY_FACTS);
  }
}

const EMPTY_FACTS: DecisionFacts = { tokenId: null, policyIds: [], policyHash: null };

/**
 * The envelope of a request before classification. `normalize` is false only when normalising itself
 * failed (then rules would not have matched anyway, and the raw path is recorded).
 */
function baseEnvelope(raw: RawRequest, normalize: boolean): Envelope {
  const { path, query } = splitTarget(raw.pathAndQuery);
  return {
    requestId: raw.requestId,
    kind: raw.kind,
    agentId: raw.identity.agentId,
    method: raw.method,
    target: raw.target,
    path,
    query,
    normalizedPath: path === null ? '/' : normalize ? normalizePath(path) : path,
    actionClass: null,
    risk: null,
    ruleId: null,
    bodyFields: NO_FIELDS,
    body: null,
  };
}

/** A deny for a request whose classification threw; never an allow, in any mode. */
export function classificationFailed(raw: RawRequest): Denied {
  return {
    verdict: 'deny',
    envelope: baseEnvelope(raw, false),
    stage: 'mapping',
    reason: 'internal_error',
    message: 'the sidecar could not classify this request, so it was denied',
    status: 403,
    ...EMPTY_FACTS,
  };
}
