/**
 * Stage 2: Cedar runtime policies (docs/architecture.md). `PolicyEngine.load` reads every `*.cedar` file in a folder,
 * gives each policy a stable id, parses and validates the set against the shipped schema
 * (cedar-schema.ts) and reports every problem as `file:line:col: id: message` in one ConfigError.
 * `evaluate` turns Cedar's answer into allow / deny / approval; any error denies (fail closed).
 *
 * Speed (measured in bench/enforce-policy.mjs). A cedar-wasm call costs ~25 µs with nothing in it, plus
 * ~4 µs per context attribute, ~20 µs per entity and a few µs per policy evaluated: every JS object is
 * converted field by field on the way in and the response on the way out. So:
 *  - at load, per action class, the policies that can apply are chosen statically (the action hierarchy
 *    is derived from names, cedar-schema.ts) and pre-parsed with their action scope widened to `action`
 *    (exact: the action is fixed within that subset);
 *  - each policy's reads (context attributes, principal, resource, action) are found in its JSON form;
 *    a request sends Cedar only those, and entities only when a condition reads `resource`/`action`;
 *  - policies that read the same inputs form a group with a bounded memo keyed by exactly those inputs
 *    (Cedar is a pure function of them), so e.g. the risk-tier rules cost a Map lookup after warm-up;
 *  - no schema at request time: validation at load fixes the policies' types, and the context is built
 *    here with exactly those types (integers for Long, strings for String).
 */
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type {
  AuthorizationAnswer,
  CedarValueJson,
  DetailedError,
  EntityJson,
  EntityUidJson,
  PolicyJson,
} from '@cedar-policy/cedar-wasm/nodejs';
import { ConfigError } from '../../config/index.js';
import type { ConfigIssue } from '../../config/index.js';
import { FirmaError } from '../../core/errors.js';
import type { Risk } from '../../core/envelope.js';
import {
  ACTION_TYPE,
  AGENT_TYPE,
  DEFAULT_BODY_FIELDS,
  RESOURCE_TYPE,
  actionGroupsOf,
  firmaSchemaText,
  isActionGroup,
} from './schema.js';
import type { BodyFieldType } from './schema.js';
import type { ActionCounts } from '../counters.js';

export const POLICY_INTERNAL = 'FIRMA_POLICY_INTERNAL';

export type PolicyVerdict = 'allow' | 'deny' | 'approval';
export type PolicyReason = 'policy_allow' | 'policy_deny' | 'no_permit' | 'approval_required' | 'policy_error';

export interface PolicyInput {
  readonly agentId: string;
  readonly actionClass: string;
  readonly risk: Risk;
  readonly method: string;
  readonly host: string;
  readonly path: string;
  readonly nowMs: number;
  readonly counts: ActionCounts;
  /** Body fields the mapping rule opted into; null when it opted into none. */
  readonly body: Readonly<Record<string, string | number | boolean | null>> | null;
}

export interface PolicyOutcome {
  readonly verdict: PolicyVerdict;
  readonly reason: PolicyReason;
  /** The determining policies: satisfied forbids (deny), satisfied permits (allow), `@approval` permits (approval), erroring policies (policy_error). Sorted. */
  readonly policyIds: readonly string[];
  /** For `policy_error`: what went wrong, for logs (never shown to the agent). */
  readonly detail?: string;
}

export interface PolicyLoadOptions {
  /** Folder of `*.cedar` files (not recursive; other files are ignored). */
  readonly dir: string;
  /**
   * Every action class the mapping rules produce. Policies may only name these (and their `prefix.*`
   * groups). When omitted, the actions the policies name are declared as they are, so typos are not caught.
   */
  readonly actionClasses?: readonly string[];
  /** Extra typed body fields on top of DEFAULT_BODY_FIELDS. */
  readonly bodyFields?: Readonly<Record<string, BodyFieldType>>;
  /** Results remembered per policy group (exact: a group's result depends only on the inputs it reads); 0 disables. Default 2048. */
  readonly memoSize?: number;
}

/** A parsed policy and where it came from. */
interface SourcePolicy {
  readonly id: string;
  readonly file: string;
  /** The policy's text (with any comments before it) and its char offset in the file. */
  readonly text: string;
  readonly offset: number;
  /** Char offset of the policy's first token in the file. */
  readonly first: number;
  readonly fileText: string;
  readonly line: number;
  readonly col: number;
  readonly json: PolicyJson;
}

/** What a policy reads, decided once from its JSON form. */
interface Usage {
  readonly contextKeys: Set<string>;
  allContext: boolean;
  principal: boolean;
  resourceId: boolean;
  resourceEntity: boolean;
  actionEntity: boolean;
  readonly actions: Set<string>;
  /** The inputs read, as text: policies with the same signature share a group. */
  signature: string;
  /**
   * False when the JSON form lost precision (a Long literal beyond ±2^53 becomes a JS float): such a
   * policy is pre-parsed from its text, with its action scope as written.
   */
  lossless: boolean;
}

/** What one group's Cedar call said, in the terms needed to combine groups (see `evaluate`). */
interface GroupResult {
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
interface PreparedSet {
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

interface Plan {
  /** The groups; empty when no policy can apply to this class (then `no_permit` without asking Cedar). */
  readonly sets: readonly PreparedSet[];
  /** All of the class's policies in one set (the same object as the only group when there is one). */
  readonly whole: PreparedSet | null;
  readonly action: EntityUidJson;
  readonly actionEntity: EntityJson;
}

/** Per-request values computed at most once, whichever groups need them. */
interface Derived {
  hour: number;
  weekday: number;
  /** The typed body record; undefined = not computed yet, null = no body. */
  body: Record<string, CedarValueJson> | null | undefined;
}

const EMPTY: readonly string[] = Object.freeze([]);
const NO_PERMIT: PolicyOutcome = Object.freeze({ verdict: 'deny', reason: 'no_permit', policyIds: EMPTY });
const NO_ENTITIES: readonly EntityJson[] = Object.freeze([]);
const ANY_PRINCIPAL: EntityUidJson = Object.freeze({ type: AGENT_TYPE, id: '' });
const ANY_RESOURCE: EntityUidJson = Object.freeze({ type: RESOURCE_TYPE, id: '' });
const CONTEXT_KEYS = [
  'method', 'path', 'host', 'risk', 'hour', 'weekday',
  'count_minute', 'count_hour', 'count_minute_class', 'count_hour_class', 'body',
] as const;
type ContextKey = (typeof CONTEXT_KEYS)[number];
const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
/** Plans for classes the mapping did not announce are cached too, up to this many. */
const MAX_PLANS = 4096;
const DEFAULT_MEMO_SIZE = 2048;
const LONG_STRING = /^-?\d{1,15}$/;

function policyError(detail: string, policyIds: readonly string[] = EMPTY): PolicyOutcome {
  return { verdict: 'deny', reason: 'policy_error', policyIds, detail };
}

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

/** Length-prefixed, so no value can imitate a separator. */
function keyPart(s: string): string {
  return `${s.length}:${s}`;
}

function concat(a: readonly string[], b: readonly string[]): readonly string[] {
  return a.length === 0 ? b : b.length === 0 ? a : [...a, ...b];
}

export class PolicyEngine {
  /** sha256 (hex) of the canonical policy set text (see `canonicalText`). */
  readonly policyHash: string;
  /** Every policy id, sorted. */
  readonly policyIds: readonly string[];
  /** Validator warnings that are not fatal (an impossible policy is an error), formatted like errors. */
  readonly warnings: readonly string[];
  /** The schema the policies were validated against (what `firma check` validated). */
  readonly schemaText: string;

  readonly #policies: ReadonlyMap<string, { readonly json: PolicyJson; readonly text: string; readonly usage: Usage }>;
  readonly #approvals: ReadonlySet<string>;
  readonly #bodyFields: readonly (readonly [string, BodyFieldType])[];
  readonly #memoSize: number;
  readonly #plans = new Map<string, Plan>();
  readonly #sets = new Map<string, PreparedSet>();
  readonly #wasmPrefix = `firma-policy:${randomUUID()}:`;
  #closed = false;

  private constructor(
    sources: readonly SourcePolicy[],
    schemaText: string,
    warnings: readonly string[],
    bodyFields: Readonly<Record<string, BodyFieldType>>,
    memoSize: number,
  ) {
    const sorted = [...sources].sort((a, b) => compare(a.id, b.id));
    this.policyIds = Object.freeze(sorted.map((p) => p.id));
    this.policyHash = createHash('sha256').update(canonicalText(sorted)).digest('hex');
    this.warnings = Object.freeze([...warnings]);
    this.schemaText = schemaText;
    const policies = new Map<string, { json: PolicyJson; text: string; usage: Usage }>();
    const approvals = new Set<string>();
    for (const p of sorted) {
      policies.set(p.id, { json: p.json, text: p.text, usage: usageOf(p.json) });
      if (p.json.effect === 'permit' && p.json.annotations !== undefined && Object.hasOwn(p.json.annotations, 'approval')) approvals.add(p.id);
    }
    this.#policies = policies;
    this.#approvals = approvals;
    this.#bodyFields = Object.freeze(Object.entries(bodyFields).sort(([a], [b]) => compare(a, b)));
    this.#memoSize = memoSize;
  }

  /**
   * Load, parse and validate every `*.cedar` file in `opts.dir`. Throws ConfigError listing every
   * problem (`file:line:col: policy-id: message`).
   */
  static load(opts: PolicyLoadOptions): PolicyEngine {
    const files = listPolicyFiles(opts.dir);
    const issues: ConfigIssue[] = [];
    const sources: SourcePolicy[] = [];
    const seen = new Map<string, SourcePolicy>();
    for (const file of files) {
      for (const p of parseFile(file, issues)) {
        const prior = seen.get(p.id);
        if (prior !== undefined) {
          issues.push({ file: p.file, line: p.line, col: p.col, key: p.id,
            message: `duplicate policy id (also ${prior.file}:${prior.line})` });
          continue;
        }
        seen.set(p.id, p);
        sources.push(p);
      }
    }
    if (issues.length > 0) throw new ConfigError(sortIssues(issues));

    const bodyFields = { ...DEFAULT_BODY_FIELDS, ...(opts.bodyFields ?? {}) };
    let schemaText: string;
    if (opts.actionClasses !== undefined) {
      schemaText = firmaSchemaText({ actionClasses: opts.actionClasses, bodyFields });
    } else {
      // No mapping given: declare what the policies name, so conditions and types are still checked.
      const named = new Set<string>();
      for (const p of sources) for (const a of usageOf(p.json).actions) named.add(a);
      const classes = [...named].filter((a) => !isActionGroup(a));
      const groups = [...named].filter(isActionGroup);
      // A group with no class under it would make `action in` it "impossible"; give it a stand-in member.
      for (const g of groups) if (!classes.some((c) => c.startsWith(g.slice(0, -1)))) classes.push(`${g.slice(0, -1)}_`);
      schemaText = firmaSchemaText({ actionClasses: classes, actionGroups: groups, bodyFields });
    }
    const warnings = validatePolicies(sources, schemaText, issues);
    if (issues.length > 0) throw new ConfigError(sortIssues(issues));

    const memoSize = opts.memoSize ?? DEFAULT_MEMO_SIZE;
    const engine = new PolicyEngine(sources, schemaText, warnings, bodyFields, Number.isInteger(memoSize) && memoSize > 0 ? memoSize : 0);
    // Pre-parse every announced class now: load-time cost, and a broken subset fails startup, not a request.
    for (const cls of opts.actionClasses ?? []) engine.#plan(cls);
    return engine;
  }

  /**
   * Decide one request. Never throws: any failure is a `policy_error` deny.
   *
   * The class's policies are split into groups by the inputs they read. Because Cedar evaluates every
   * policy on its own, combining group results gives exactly the answer of one call over all of them:
   * any satisfied forbid → deny with all satisfied forbids; else any error → deny (fail closed); else any
   * satisfied permit → allow (or approval); else no_permit. A group's result is a pure function of the
   * inputs it reads, so it is memoised under exactly those inputs. One missing group costs one small Cedar
   * call; several cost one call over the class's whole subset, which also refills their memo entries.
   */
  evaluate(input: PolicyInput): PolicyOutcome {
    try {
      if (this.#closed) return policyError('the policy engine is closed');
      const plan = this.#plans.get(input.actionClass) ?? this.#plan(input.actionClass);
      const sets = plan.sets;
      if (sets.length === 0 || plan.whole === null) return NO_PERMIT;
      const derived: Derived = {
        hour: Math.floor(input.nowMs / HOUR_MS) % 24,
        weekday: (Math.floor(input.nowMs / DAY_MS) + 4) % 7, // 1970-01-01 was a Thursday (4)
        body: undefined,
      };
      if (this.#memoSize === 0) {
        const r = this.#call(plan.whole, plan, input, derived);
        return typeof r === 'string' ? policyError(r) : this.#combine([r]);
      }
      const keys: string[] = [];
      const results: GroupResult[] = [];
      let missing = -1;
      let misses = 0;
      for (let i = 0; i < sets.length; i++) {
        const key = this.#key(sets[i] as PreparedSet, input, derived);
        if (key === null) return policyError(this.#bodyProblem(input));
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
    } catch (err: unknown) {
      return policyError(err instanceof Error ? err.message : String(err));
    }
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

  /** Release the pre-parsed sets held inside the wasm module. Later `evaluate` calls deny. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const set of this.#sets.values()) cedar.preparsePolicySet(set.wasmId, { staticPolicies: {} });
    this.#sets.clear();
    this.#plans.clear();
  }

  /** One Cedar call for one group; a string is an error that denies the request. */
  #call(set: PreparedSet, plan: Plan, input: PolicyInput, derived: Derived): GroupResult | string {
    const context = this.#context(set, input, derived);
    if (context === null) return this.#bodyProblem(input);
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

  /** The memo key: every input the group's Cedar call would receive, and nothing else. null = bad body. */
  #key(set: PreparedSet, input: PolicyInput, derived: Derived): string | null {
    let k = '';
    if (set.principal) k += keyPart(input.agentId);
    if (set.actionEntity) k += keyPart(input.actionClass);
    if (set.resourceId) k += keyPart(input.host) + keyPart(input.path);
    for (const key of set.contextKeys) {
      switch (key) {
        case 'method': k += keyPart(input.method); break;
        case 'path': k += keyPart(input.path); break;
        case 'host': k += keyPart(input.host); break;
        case 'risk': k += keyPart(input.risk); break;
        case 'hour': k += `${derived.hour},`; break;
        case 'weekday': k += `${derived.weekday},`; break;
        case 'count_minute': k += `${input.counts.minute},`; break;
        case 'count_hour': k += `${input.counts.hour},`; break;
        case 'count_minute_class': k += `${input.counts.minuteClass},`; break;
        case 'count_hour_class': k += `${input.counts.hourClass},`; break;
        case 'body': {
          const body = this.#typedBody(input, derived);
          if (body === undefined) return null;
          if (body === null) {
            k += '!';
            break;
          }
          // Each field has one fixed type, so position + value is unambiguous.
          for (const [field] of this.#bodyFields) {
            const v = body[field];
            k += v === undefined ? '_' : typeof v === 'string' ? keyPart(v) : `${String(v)},`;
          }
          break;
        }
      }
    }
    return k;
  }

  /** The context with only the attributes `set` reads; null = the body does not fit the schema. */
  #context(set: PreparedSet, input: PolicyInput, derived: Derived): Record<string, CedarValueJson> | null {
    const ctx: Record<string, CedarValueJson> = {};
    for (const key of set.contextKeys) {
      switch (key) {
        case 'method': ctx.method = input.method; break;
        case 'path': ctx.path = input.path; break;
        case 'host': ctx.host = input.host; break;
        case 'risk': ctx.risk = input.risk; break;
        case 'hour': ctx.hour = derived.hour; break;
        case 'weekday': ctx.weekday = derived.weekday; break;
        case 'count_minute': ctx.count_minute = input.counts.minute; break;
        case 'count_hour': ctx.count_hour = input.counts.hour; break;
        case 'count_minute_class': ctx.count_minute_class = input.counts.minuteClass; break;
        case 'count_hour_class': ctx.count_hour_class = input.counts.hourClass; break;
        case 'body': {
          const body = this.#typedBody(input, derived);
          if (body === undefined) return null;
          if (body !== null) ctx.body = body;
          break;
        }
      }
    }
    return ctx;
  }

  /**
   * The typed body record (computed once per request); null = no body; undefined = a value does not fit
   * its declared type. Such a value denies rather than being dropped: dropping `amount: "abc"` would make
   * `context.body has amount` false and skip the very rule that should stop it. Decimal-integer strings
   * count as Long (form-style APIs send those). `null` is absent (Cedar has no null). Undeclared fields are
   * left out: no valid policy can read them.
   */
  #typedBody(input: PolicyInput, derived: Derived): Record<string, CedarValueJson> | null | undefined {
    if (derived.body !== undefined) return derived.body;
    const values = input.body;
    if (values === null) return (derived.body = null);
    const out: Record<string, CedarValueJson> = {};
    for (const [field, type] of this.#bodyFields) {
      if (!Object.hasOwn(values, field)) continue;
      const v = values[field];
      if (v === null || v === undefined) continue;
      if (type === 'String' && typeof v === 'string') out[field] = v;
      else if (type === 'Boolean' && typeof v === 'boolean') out[field] = v;
      else if (type === 'Long' && typeof v === 'number' && Number.isSafeInteger(v)) out[field] = v;
      else if (type === 'Long' && typeof v === 'string' && LONG_STRING.test(v)) out[field] = Number(v);
      else return undefined;
    }
    return (derived.body = out);
  }

  #bodyProblem(input: PolicyInput): string {
    for (const [field, type] of this.#bodyFields) {
      const v = input.body?.[field];
      if (v !== undefined && v !== null) {
        const ok = type === 'String' ? typeof v === 'string' : type === 'Boolean' ? typeof v === 'boolean'
          : (typeof v === 'number' && Number.isSafeInteger(v)) || (typeof v === 'string' && LONG_STRING.test(v));
        if (!ok) return `body field ${field} is not a ${type}`;
      }
    }
    return 'body does not fit the schema';
  }

  /**
   * Which policies can apply to `actionClass` (the action scope is decided here, statically), grouped by
   * the inputs they read; each group is pre-parsed once and shared by all classes it applies to.
   */
  #plan(actionClass: string): Plan {
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
    const plan: Plan = { sets, whole, action, actionEntity };
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
}

// ---------------------------------------------------------------------------------------------------
// loading

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortedIds(ids: readonly string[]): readonly string[] {
  return ids.length <= 1 ? ids : [...ids].sort(compare);
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues.sort((a, b) => compare(a.file, b.file) || a.line - b.line || a.col - b.col);
}

function describeErrors(errors: readonly DetailedError[]): string {
  return errors.map((e) => e.message).join('; ') || 'unknown Cedar error';
}

function listPolicyFiles(dir: string): string[] {
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) throw new Error('not a folder');
    names = readdirSync(dir);
  } catch (err: unknown) {
    const why = err instanceof Error && 'code' in err && err.code === 'ENOENT' ? 'does not exist' : `cannot be read (${err instanceof Error ? err.message : String(err)})`;
    throw new ConfigError([{ file: dir, line: 1, col: 1, key: '', message: `policy folder ${why}` }]);
  }
  return names.filter((n) => n.endsWith('.cedar')).sort(compare).map((n) => join(dir, n));
}

/**
 * Canonical text: policies in id order, each with its id, comments dropped and every run of whitespace
 * outside strings collapsed to one space; so re-indenting or commenting does not change the hash, any
 * change to a policy or an id does.
 */
function canonicalText(sorted: readonly SourcePolicy[]): string {
  let out = '';
  for (const p of sorted) out += `${JSON.stringify(p.id)} ${normalizeSpace(p.text)}\n`;
  return out;
}

function normalizeSpace(text: string): string {
  let out = '';
  let space = false;
  let i = 0;
  while (i < text.length) {
    const ch = text.charCodeAt(i);
    if (ch === 0x2f && text.charCodeAt(i + 1) === 0x2f) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl + 1;
      space = true;
      continue;
    }
    if (ch === 0x20 || ch === 0x0a || ch === 0x0d || ch === 0x09) {
      i++;
      space = true;
      continue;
    }
    if (space && out !== '') out += ' ';
    space = false;
    if (ch === 0x22) {
      const from = i++;
      while (i < text.length && text.charCodeAt(i) !== 0x22) i += text.charCodeAt(i) === 0x5c ? 2 : 1;
      out += text.slice(from, ++i);
      continue;
    }
    out += text[i];
    i++;
  }
  return out;
}

interface Chunk {
  /** Char offsets in the file: start of the chunk (after the previous `;`), first token, end (after `;`). */
  readonly start: number;
  readonly first: number;
  readonly end: number;
}

/**
 * Split a Cedar file into policies at top-level `;`. Cedar has `//` comments and double-quoted strings
 * (with backslash escapes) but no other place a `;` can hide, so this is exact for any file that parses.
 */
function splitPolicies(text: string): Chunk[] {
  const chunks: Chunk[] = [];
  let start = 0;
  let first = -1;
  let i = 0;
  while (i < text.length) {
    const ch = text.charCodeAt(i);
    if (ch === 0x2f /* / */ && text.charCodeAt(i + 1) === 0x2f) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl + 1;
      continue;
    }
    if (ch === 0x20 || ch === 0x0a || ch === 0x0d || ch === 0x09) {
      i++;
      continue;
    }
    if (first < 0) first = i;
    if (ch === 0x22 /* " */) {
      i++;
      while (i < text.length && text.charCodeAt(i) !== 0x22) i += text.charCodeAt(i) === 0x5c /* \ */ ? 2 : 1;
      i++;
      continue;
    }
    if (ch === 0x3b /* ; */) {
      chunks.push({ start, first, end: i + 1 });
      start = i + 1;
      first = -1;
    }
    i++;
  }
  if (first >= 0) chunks.push({ start, first, end: text.length }); // unterminated last policy
  return chunks;
}

/** Line/col (1-based; col in UTF-16 units, as editors count) of a char offset. */
function lineCol(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i >= 0 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, col: offset - lineStart + 1 };
}

/** Cedar reports UTF-8 byte offsets; convert one relative to `text` into a char offset. */
function charOffset(text: string, byteOffset: number): number {
  return Buffer.from(text, 'utf8').subarray(0, byteOffset).toString('utf8').length;
}

const ID_ANNOTATION = /@id\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)/;

/** The id a chunk will get: its `@id("…")` or `<file>:<line>`. */
function chunkId(fileText: string, name: string, chunk: Chunk): string {
  const m = ID_ANNOTATION.exec(fileText.slice(chunk.first, chunk.end));
  // Only an annotation before the effect counts (annotations come first in Cedar).
  if (m?.[1] !== undefined && m.index < fileText.slice(chunk.first, chunk.end).search(/\b(permit|forbid)\b/)) {
    try {
      return JSON.parse(`"${m[1]}"`) as string;
    } catch {
      return m[1];
    }
  }
  return `${name}:${lineCol(fileText, chunk.first).line}`;
}

/** Issues for Cedar errors whose byte offsets are relative to `fileText.slice(base)`. */
function errorIssues(errors: readonly DetailedError[], file: string, fileText: string, base: number,
  keyAt: (charOffset: number) => string, fallback: number): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const local = fileText.slice(base);
  const add = (e: DetailedError): void => {
    const loc = e.sourceLocations?.[0];
    const at = loc === undefined ? fallback : base + charOffset(local, loc.start);
    const { line, col } = lineCol(fileText, at);
    const label = loc?.label ? ` (${loc.label})` : '';
    const help = e.help ? `; ${e.help}` : '';
    // The action named in a type error is one of many the policy applies to (see dedupe in validatePolicies).
    const message = `${e.message}${label}${help}`.replace(/ for Firma::Action::"[^"]*"/g, '');
    out.push({ file, line, col, key: keyAt(at), message });
    for (const r of e.related ?? []) add(r);
  };
  for (const e of errors) add(e);
  return out;
}

function parseFile(path: string, issues: ConfigIssue[]): SourcePolicy[] {
  const name = basename(path);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err: unknown) {
    issues.push({ file: path, line: 1, col: 1, key: '', message: `cannot read: ${err instanceof Error ? err.message : String(err)}` });
    return [];
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a BOM is not a column
  const chunks = splitPolicies(text);
  const keyAt = (at: number): string => {
    const chunk = chunks.find((c) => at < c.end) ?? chunks[chunks.length - 1];
    return chunk === undefined ? '' : chunkId(text, name, chunk);
  };
  const parsed = cedar.checkParsePolicySet({ staticPolicies: text });
  if (parsed.type !== 'success') {
    issues.push(...errorIssues(parsed.errors, path, text, 0, keyAt, 0));
    return [];
  }
  const out: SourcePolicy[] = [];
  for (const chunk of chunks) {
    const policyText = text.slice(chunk.start, chunk.end);
    const id = chunkId(text, name, chunk);
    const json = cedar.policyToJson(policyText);
    if (json.type !== 'success') {
      // Templates (`?principal`) parse as a set but not as a static policy.
      issues.push(...errorIssues(json.errors, path, text, chunk.start, () => id, chunk.first));
      continue;
    }
    const { line, col } = lineCol(text, chunk.first);
    out.push({ id, file: path, text: policyText, offset: chunk.start, first: chunk.first, fileText: text, line, col, json: json.json });
  }
  return out;
}

const IMPOSSIBLE = /policy is impossible/;
const IMPOSSIBLE_HELP = 'it can never apply: check action names (`in` for `prefix.*` groups) and attribute names in `has` tests';

/** Validate against the schema; validation errors go to `issues`, warnings are returned. */
function validatePolicies(sources: readonly SourcePolicy[], schema: string, issues: ConfigIssue[]): string[] {
  const byId = new Map(sources.map((p) => [p.id, p]));
  const staticPolicies: Record<string, string> = {};
  for (const p of sources) staticPolicies[p.id] = p.text;
  const answer = cedar.validate({ schema, policies: { staticPolicies }, validationSettings: { mode: 'strict' } });
  if (answer.type !== 'success') {
    // The schema itself or the call failed: not tied to a policy.
    for (const e of answer.errors) issues.push({ file: '<schema>', line: 1, col: 1, key: '', message: e.message });
    return [];
  }
  const located = (list: readonly { policyId: string; error: DetailedError }[], into: ConfigIssue[]): void => {
    for (const { policyId, error } of list) {
      const p = byId.get(policyId);
      if (p === undefined) {
        into.push({ file: '<policies>', line: 1, col: 1, key: policyId, message: error.message });
        continue;
      }
      for (const i of errorIssues([error], p.file, p.fileText, p.offset, () => p.id, p.first)) {
        // Cedar repeats a type error once per action the policy applies to; one report is enough.
        if (!into.some((o) => o.file === i.file && o.line === i.line && o.col === i.col && o.message === i.message)) into.push(i);
      }
    }
  };
  // `validate` says "success" even when validation failed: the errors are in validationErrors.
  located(answer.validationErrors, issues);
  // An impossible policy is almost always a mistake that fails open (a forbid on a misspelt body field
  // under a `has` guard validates, and never fires), so it is an error too.
  const failed = new Set(answer.validationErrors.map((e) => e.policyId));
  const impossible = answer.validationWarnings.filter((w) => IMPOSSIBLE.test(w.error.message) && !failed.has(w.policyId));
  located(impossible.map((w) => ({ policyId: w.policyId, error: { ...w.error, help: IMPOSSIBLE_HELP } })), issues);
  const warnings: ConfigIssue[] = [];
  located(answer.validationWarnings.filter((w) => !IMPOSSIBLE.test(w.error.message)), warnings);
  return [
    ...sortIssues(warnings).map((w) => `${w.file}:${w.line}:${w.col}: ${w.key}: ${w.message}`),
    ...answer.otherWarnings.map((w) => w.message),
  ];
}

// ---------------------------------------------------------------------------------------------------
// static analysis of a policy's JSON form

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isVar(v: unknown, name: string): boolean {
  return isObject(v) && v.Var === name;
}

function usageOf(json: PolicyJson): Usage {
  const u: Usage = {
    contextKeys: new Set(),
    allContext: false,
    principal: json.principal.op !== 'All',
    resourceId: json.resource.op !== 'All',
    resourceEntity: false,
    actionEntity: false,
    actions: new Set(),
    signature: '',
    lossless: !hasUnsafeNumber(json),
  };
  collectActions(json.action, u);
  for (const clause of json.conditions) walk(clause.body, u);
  // Kept as written, `action in <group>` needs the action's groups at request time.
  if (!u.lossless && json.action.op === 'in') u.actionEntity = true;
  const reads = u.allContext ? ['context.*'] : [...u.contextKeys].sort(compare).map((k) => `context.${k}`);
  if (u.principal) reads.push('principal');
  if (u.resourceId) reads.push('resource');
  if (u.resourceEntity) reads.push('resource.*');
  if (u.actionEntity) reads.push('action');
  u.signature = reads.join(' ');
  return u;
}

function hasUnsafeNumber(node: unknown): boolean {
  if (typeof node === 'number') return !Number.isSafeInteger(node);
  if (Array.isArray(node)) return node.some(hasUnsafeNumber);
  if (isObject(node)) return Object.values(node).some(hasUnsafeNumber);
  return false;
}

function collectActions(node: unknown, u: Usage): void {
  if (Array.isArray(node)) {
    for (const n of node) collectActions(n, u);
  } else if (isObject(node)) {
    if (node.type === ACTION_TYPE && typeof node.id === 'string') u.actions.add(node.id);
    for (const v of Object.values(node)) collectActions(v, u);
  }
}

/** Record which variables and context attributes an expression reads (conservatively: unknown use = all). */
function walk(node: unknown, u: Usage): void {
  if (Array.isArray(node)) {
    for (const n of node) walk(n, u);
    return;
  }
  if (!isObject(node)) return;
  for (const op of ['.', 'has'] as const) {
    const inner = node[op];
    if (isObject(inner) && isVar(inner.left, 'context')) {
      const first = Array.isArray(inner.attr) ? (inner.attr[0] as unknown) : inner.attr;
      if (typeof first === 'string') u.contextKeys.add(first);
      else u.allContext = true;
      return;
    }
  }
  if (typeof node.Var === 'string') {
    if (node.Var === 'context') u.allContext = true;
    else if (node.Var === 'principal') u.principal = true;
    else if (node.Var === 'resource') u.resourceEntity = true;
    else if (node.Var === 'action') u.actionEntity = true;
    return;
  }
  if (isObject(node.__entity)) {
    collectActions(node.__entity, u);
    return;
  }
  for (const v of Object.values(node)) walk(v, u);
}

/** Does the policy's action scope admit this class? (`groups`: the class's `prefix.*` ancestors.) */
function actionScopeMatches(json: PolicyJson, actionClass: string, groups: readonly string[]): boolean {
  const scope = json.action;
  if (scope.op === 'All') return true;
  const ids: string[] = [];
  if (scope.op === '==') {
    if ('entity' in scope) return uidId(scope.entity) === actionClass;
    return true; // a template slot: not reachable for static policies; keep the policy (Cedar decides)
  }
  if ('entity' in scope) ids.push(uidId(scope.entity));
  else for (const e of scope.entities) ids.push(uidId(e));
  return ids.some((id) => id === actionClass || groups.includes(id));
}

function uidId(uid: EntityUidJson): string {
  return '__entity' in uid ? uid.__entity.id : uid.id;
}
