/**
 * Deciding one request from a class's plan (docs/architecture.md "Enforce"): one Cedar call per group whose
 * memo misses, or one over the class's whole subset when several miss, and the group results combined
 * into allow / deny / approval.
 */
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { AuthorizationAnswer, EntityJson, EntityUidJson } from '@cedar-policy/cedar-wasm/nodejs';
import { bodyProblem, contextOf, derivedOf, memoKey } from './context.js';
import type { BodyFields, Derived } from './context.js';
import { describeErrors } from './plan.js';
import type { GroupResult, Plan, PreparedSet } from './plan.js';
import { AGENT_TYPE, RESOURCE_TYPE, compare } from './schema.js';
import { EMPTY, NO_PERMIT, policyError } from './verdict.js';
import type { PolicyInput, PolicyOutcome } from './verdict.js';

const NO_ENTITIES: readonly EntityJson[] = Object.freeze([]);
const ANY_PRINCIPAL: EntityUidJson = Object.freeze({ type: AGENT_TYPE, id: '' });
const ANY_RESOURCE: EntityUidJson = Object.freeze({ type: RESOURCE_TYPE, id: '' });

/**
 * What a call over only `set` would have answered, read off a call over a superset; null when it cannot
 * be known (a forbid elsewhere was satisfied, so Cedar did not report this group's permits).
 */
function groupShare(whole: GroupResult, set: PreparedSet): GroupResult | null {
  const ids = set.ids;
  const forbids = whole.forbids.filter((id) => ids.has(id));
  if (whole.forbids.length > 0 && forbids.length === 0 && set.hasPermit) return null;
  const errors: string[] = [];
  const errorDetails: string[] = [];
  whole.errors.forEach((id, i) => {
    if (!ids.has(id)) return;
    errors.push(id);
    errorDetails.push(whole.errorDetails[i] ?? id);
  });
  return { forbids, permits: whole.permits.filter((id) => ids.has(id)), errors, errorDetails };
}

function concat(a: readonly string[], b: readonly string[]): readonly string[] {
  return a.length === 0 ? b : b.length === 0 ? a : [...a, ...b];
}

function sortedIds(ids: readonly string[]): readonly string[] {
  return ids.length <= 1 ? ids : [...ids].sort(compare);
}

/** Decides requests for one policy set; holds what every decision needs besides the plan. */
export class PolicyEvaluator {
  readonly #approvals: ReadonlySet<string>;
  readonly #bodyFields: BodyFields;
  readonly #memoSize: number;

  /** `approvals`: the `@approval` permits; `memoSize`: results kept per group, 0 = no memo. */
  constructor(approvals: ReadonlySet<string>, bodyFields: BodyFields, memoSize: number) {
    this.#approvals = approvals;
    this.#bodyFields = bodyFields;
    this.#memoSize = memoSize;
  }

  /**
   * Decide one request with its class's plan. May throw on an internal failure; PolicyEngine turns that
   * into a `policy_error` deny.
   *
   * The class's policies are split into groups by the inputs they read. Because Cedar evaluates every
   * policy on its own, combining group results gives exactly the answer of one call over all of them:
   * any satisfied forbid → deny with all satisfied forbids; else any error → deny (fail closed); else any
   * satisfied permit → allow (or approval); else no_permit. A group's result is a pure function of the
   * inputs it reads, so it is memoised under exactly those inputs. One missing group costs one small Cedar
   * call; several cost one call over the class's whole subset, which also refills their memo entries.
   */
  evaluate(plan: Plan, input: PolicyInput): PolicyOutcome {
    const sets = plan.sets;
    if (sets.length === 0 || plan.whole === null) return NO_PERMIT;
    const derived = derivedOf(input.nowMs);
    if (this.#memoSize === 0) {
      const r = this.#call(plan.whole, plan, input, derived);
      return typeof r === 'string' ? policyError(r) : this.#combine([r]);
    }
    const keys: string[] = [];
    const results: GroupResult[] = [];
    let missing = -1;
    let misses = 0;
    for (let i = 0; i < sets.length; i++) {
      const key = memoKey(sets[i] as PreparedSet, input, derived, this.#bodyFields);
      if (key === null) return policyError(bodyProblem(input, this.#bodyFields));
      keys.push(key);
      const hit = (sets[i] as PreparedSet).memo.get(key);
      if (hit !== undefined) results.push(hit);
      else {
        misses++;
        missing = i;
      }
    }
    if (misses === 0) return this.#combine(results);
    if (misses === 1) {
      const set = sets[missing] as PreparedSet;
      const r = this.#call(set, plan, input, derived);
      if (typeof r === 'string') return policyError(r);
      this.#remember(set, keys[missing] as string, r);
      results.push(r);
      return this.#combine(results);
    }
    const whole = this.#call(plan.whole, plan, input, derived);
    if (typeof whole === 'string') return policyError(whole);
    for (let i = 0; i < sets.length; i++) {
      const set = sets[i] as PreparedSet;
      if (set.memo.has(keys[i] as string)) continue;
      const r = groupShare(whole, set);
      if (r !== null) this.#remember(set, keys[i] as string, r);
    }
    return this.#combine([whole]);
  }

  #remember(set: PreparedSet, key: string, r: GroupResult): void {
    // FIFO eviction: O(1), and a hot key evicted is simply recomputed.
    if (set.memo.size >= this.#memoSize) set.memo.delete(set.memo.keys().next().value as string);
    set.memo.set(key, r);
  }

  #combine(results: readonly GroupResult[]): PolicyOutcome {
    let forbids = EMPTY;
    let permits = EMPTY;
    let errors = EMPTY;
    let errorDetails = EMPTY;
    for (const r of results) {
      forbids = concat(forbids, r.forbids);
      permits = concat(permits, r.permits);
      errors = concat(errors, r.errors);
      errorDetails = concat(errorDetails, r.errorDetails);
    }
    // A satisfied forbid decides whatever else errored: the answer is already the strictest one.
    if (forbids.length > 0) return { verdict: 'deny', reason: 'policy_deny', policyIds: sortedIds(forbids) };
    // An erroring policy might have been a forbid or an @approval permit: fail closed.
    if (errors.length > 0) return policyError(errorDetails.join('; '), sortedIds(errors));
    if (permits.length === 0) return NO_PERMIT;
    const ids = sortedIds(permits);
    const approvals = ids.filter((id) => this.#approvals.has(id));
    if (approvals.length > 0) return { verdict: 'approval', reason: 'approval_required', policyIds: approvals };
    return { verdict: 'allow', reason: 'policy_allow', policyIds: ids };
  }

  /** One Cedar call for one group; a string is an error that denies the request. */
  #call(set: PreparedSet, plan: Plan, input: PolicyInput, derived: Derived): GroupResult | string {
    const context = contextOf(set, input, derived, this.#bodyFields);
    if (context === null) return bodyProblem(input, this.#bodyFields);
    const resource: EntityUidJson = set.resourceId ? { type: RESOURCE_TYPE, id: input.host + input.path } : ANY_RESOURCE;
    let entities = NO_ENTITIES;
    if (set.resourceEntity || set.actionEntity) {
      const list: EntityJson[] = [];
      if (set.resourceEntity) list.push({ uid: resource, attrs: { host: input.host, path: input.path }, parents: [] });
      if (set.actionEntity) list.push(plan.actionEntity);
      entities = list;
    }
    const answer: AuthorizationAnswer = cedar.statefulIsAuthorized({
      principal: set.principal ? { type: AGENT_TYPE, id: input.agentId } : ANY_PRINCIPAL,
      action: plan.action,
      resource,
      context,
      preparsedPolicySetId: set.wasmId,
      entities: entities as EntityJson[],
    });
    if (answer.type !== 'success') return describeErrors(answer.errors);
    const { decision, diagnostics } = answer.response;
    const errs = diagnostics.errors;
    return {
      forbids: decision === 'deny' ? diagnostics.reason : EMPTY,
      permits: decision === 'allow' ? diagnostics.reason : EMPTY,
      errors: errs.length === 0 ? EMPTY : errs.map((e) => e.policyId),
      errorDetails: errs.length === 0 ? EMPTY : errs.map((e) => `${e.policyId}: ${e.error.message}`),
    };
  }
}
