/**
 * Per action class, which policies can apply and how they are sent to Cedar (docs/architecture.md "Enforce").
 * The class's policies are chosen statically (the action hierarchy is derived from names, schema.ts) and
 * grouped by the inputs they read (analysis.ts); each group is pre-parsed into the wasm module once, with
 * its action scope widened to `action` (exact: the action is fixed within that subset), and shared by
 * every class it applies to. A cedar-wasm call converts every JS object field by field, so sending only
 * pre-parsed, minimal sets is what keeps a request cheap (measured in bench/enforce-policy.mjs).
 */
import { randomUUID } from 'node:crypto';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { DetailedError, EntityJson, EntityUidJson, PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';
import { FirmaError } from '../../core/errors.js';
import { actionScopeMatches } from './analysis.js';
import type { Usage } from './analysis.js';
import { ACTION_TYPE, CONTEXT_KEYS, LLM_CONTEXT_KEYS, actionGroupsOf, compare } from './schema.js';
import type { ContextKey } from './schema.js';

export const POLICY_INTERNAL = 'FIRMA_POLICY_INTERNAL';

/** Plans for classes the mapping did not announce are cached too, up to this many. */
const MAX_PLANS = 4096;

/** What one group's Cedar call said, in the terms needed to combine groups (see evaluate.ts). */
export interface GroupResult {
  /** Satisfied forbids (Cedar decided deny with these reasons). */
  readonly forbids: readonly string[];
  /** Satisfied permits (Cedar decided allow); empty when a forbid was satisfied (then unknown, and moot). */
  readonly permits: readonly string[];
  /** Policies whose evaluation raised an error, and `id: message` for each (same order). */
  readonly errors: readonly string[];
  readonly errorDetails: readonly string[];
}

/**
 * A pre-parsed group of policies that read the same inputs, shared by every action class it applies to,
 * with a bounded memo of its results keyed by exactly those inputs.
 */
export interface PreparedSet {
  readonly wasmId: string;
  readonly ids: ReadonlySet<string>;
  readonly hasPermit: boolean;
  /** Context attributes to send; `body` means the typed body record. */
  readonly contextKeys: readonly ContextKey[];
  readonly principal: boolean;
  readonly resourceId: boolean;
  readonly resourceEntity: boolean;
  readonly actionEntity: boolean;
  readonly memo: Map<string, GroupResult>;
}

export interface Plan {
  /** The groups; empty when no policy can apply to this class (then `no_permit` without asking Cedar). */
  readonly sets: readonly PreparedSet[];
  /** All of the class's policies in one set (the same object as the only group when there is one). */
  readonly whole: PreparedSet | null;
  readonly action: EntityUidJson;
  readonly actionEntity: EntityJson;
  /** A group reads `context.llm_*`: the agent's usage totals must be read first (docs/llm.md "Policies on usage"). */
  readonly readsLlm: boolean;
}

/** A loaded policy with what it reads. */
export interface AnalysedPolicy {
  readonly json: PolicyJson;
  readonly text: string;
  readonly usage: Usage;
}

export function describeErrors(errors: readonly DetailedError[]): string {
  return errors.map((e) => e.message).join('; ') || 'unknown Cedar error';
}

/** The plans of one policy set, and the pre-parsed groups they share inside the wasm module. */
export class PolicyPlans {
  readonly #policies: ReadonlyMap<string, AnalysedPolicy>;
  readonly #plans = new Map<string, Plan>();
  readonly #sets = new Map<string, PreparedSet>();
  readonly #wasmPrefix = `firma-policy:${randomUUID()}:`;

  constructor(policies: ReadonlyMap<string, AnalysedPolicy>) {
    this.#policies = policies;
  }

  /** The plan for `actionClass`, made on first use. */
  get(actionClass: string): Plan {
    return this.#plans.get(actionClass) ?? this.plan(actionClass);
  }

  /**
   * Which policies can apply to `actionClass` (the action scope is decided here, statically), grouped by
   * the inputs they read; each group is pre-parsed once and shared by all classes it applies to.
   */
  plan(actionClass: string): Plan {
    const groups = actionGroupsOf(actionClass);
    const bySignature = new Map<string, string[]>();
    for (const [id, p] of this.#policies) {
      if (!actionScopeMatches(p.json, actionClass, groups)) continue;
      const sig = p.usage.signature;
      const list = bySignature.get(sig);
      if (list === undefined) bySignature.set(sig, [id]);
      else list.push(id);
    }
    const action: EntityUidJson = Object.freeze({ type: ACTION_TYPE, id: actionClass });
    const actionEntity: EntityJson = Object.freeze({
      uid: action,
      attrs: {},
      parents: groups.map((g) => ({ type: ACTION_TYPE, id: g })),
    });
    const sets = [...bySignature.keys()].sort(compare).map((sig) => this.#prepare(bySignature.get(sig) ?? []));
    let whole: PreparedSet | null = null;
    if (sets.length === 1) whole = sets[0] ?? null;
    else if (sets.length > 1) whole = this.#prepare([...this.#policies.keys()].filter((id) => sets.some((s) => s.ids.has(id))));
    const readsLlm = sets.some((s) => s.contextKeys.some((k) => LLM_CONTEXT_KEYS.has(k)));
    const plan: Plan = { sets, whole, action, actionEntity, readsLlm };
    if (this.#plans.size < MAX_PLANS) this.#plans.set(actionClass, plan);
    return plan;
  }

  #prepare(ids: readonly string[]): PreparedSet {
    const signature = ids.join('\n');
    const existing = this.#sets.get(signature);
    if (existing !== undefined) return existing;
    const contextKeys = new Set<string>();
    let allContext = false;
    let principal = false;
    let resourceId = false;
    let resourceEntity = false;
    let actionEntity = false;
    const policies: Record<string, PolicyJson | string> = {};
    for (const id of ids) {
      const p = this.#policies.get(id);
      if (p === undefined) continue;
      const u = p.usage;
      for (const k of u.contextKeys) contextKeys.add(k);
      allContext ||= u.allContext;
      principal ||= u.principal;
      resourceId ||= u.resourceId;
      resourceEntity ||= u.resourceEntity;
      actionEntity ||= u.actionEntity;
      if (!u.lossless) {
        policies[id] = p.text;
        continue;
      }
      // The scope already matched this class, so `action` is exact here. Annotations are left out: they
      // do not affect evaluation (approval is looked up by id) and `@approval` without a value is null in JSON.
      const { annotations: _annotations, ...rest } = p.json;
      policies[id] = { ...rest, action: { op: 'All' } };
    }
    const wasmId = `${this.#wasmPrefix}${this.#sets.size}`;
    const answer = cedar.preparsePolicySet(wasmId, { staticPolicies: policies });
    if (answer.type !== 'success') {
      throw new FirmaError(POLICY_INTERNAL, `could not pre-parse a validated policy subset: ${describeErrors(answer.errors)}`);
    }
    const set: PreparedSet = {
      wasmId,
      ids: new Set(ids),
      hasPermit: ids.some((id) => this.#policies.get(id)?.json.effect === 'permit'),
      contextKeys: Object.freeze(CONTEXT_KEYS.filter((k) => allContext || contextKeys.has(k))),
      principal,
      resourceId: resourceId || resourceEntity,
      resourceEntity,
      actionEntity,
      memo: new Map(),
    };
    this.#sets.set(signature, set);
    return set;
  }

  /** Release the pre-parsed sets held inside the wasm module. */
  release(): void {
    for (const set of this.#sets.values()) cedar.preparsePolicySet(set.wasmId, { staticPolicies: {} });
    this.#sets.clear();
    this.#plans.clear();
  }
}
