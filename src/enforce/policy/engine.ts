/**
 * Stage 2: Cedar runtime policies (docs/architecture.md). `PolicyEngine.load` reads every `*.cedar` file in a folder,
 * gives each policy a stable id, parses and validates the set against the shipped schema (load.ts, parse.ts,
 * schema.ts) and reports every problem as `file:line:col: id: message` in one ConfigError.
 * `evaluate` turns Cedar's answer into allow / deny / approval; any error denies (fail closed).
 *
 * Speed (measured in bench/enforce-policy.mjs). A cedar-wasm call costs ~25 µs with nothing in it, plus
 * ~4 µs per context attribute, ~20 µs per entity and a few µs per policy evaluated: every JS object is
 * converted field by field on the way in and the response on the way out. So:
 *  - at load, per action class, the policies that can apply are chosen statically (the action hierarchy
 *    is derived from names, schema.ts) and pre-parsed with their action scope widened to `action`
 *    (exact: the action is fixed within that subset; plan.ts);
 *  - each policy's reads (context attributes, principal, resource, action) are found in its JSON form
 *    (analysis.ts); a request sends Cedar only those, and entities only when a condition reads
 *    `resource`/`action`;
 *  - policies that read the same inputs form a group with a bounded memo keyed by exactly those inputs
 *    (Cedar is a pure function of them), so e.g. the risk-tier rules cost a Map lookup after warm-up
 *    (evaluate.ts);
 *  - no schema at request time: validation at load fixes the policies' types, and the context is built
 *    with exactly those types (integers for Long, strings for String; context.ts).
 */
import { createHash } from 'node:crypto';
import { usageOf } from './analysis.js';
import { PolicyEvaluator } from './evaluate.js';
import { loadPolicySet } from './load.js';
import type { PolicyLoadOptions } from './load.js';
import type { SourcePolicy } from './parse.js';
import { PolicyPlans } from './plan.js';
import type { AnalysedPolicy } from './plan.js';
import { LLM_CONTEXT_KEYS, compare } from './schema.js';
import type { BodyFieldType } from './schema.js';
import { policyError } from './verdict.js';
import type { PolicyInput, PolicyOutcome } from './verdict.js';

const DEFAULT_MEMO_SIZE = 2048;

export class PolicyEngine {
  /** sha256 (hex) of the canonical policy set text (see `canonicalText`). */
  readonly policyHash: string;
  /** Every policy id, sorted. */
  readonly policyIds: readonly string[];
  /** Validator warnings that are not fatal (an impossible policy is an error), formatted like errors. */
  readonly warnings: readonly string[];
  /** The schema the policies were validated against (what `firma check` validated). */
  readonly schemaText: string;
  /** Some policy reads `context.llm_*` (or the whole context): the budget stage then asks per class. */
  readonly readsLlmUsage: boolean;

  readonly #plans: PolicyPlans;
  readonly #evaluator: PolicyEvaluator;
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
    const policies = new Map<string, AnalysedPolicy>();
    const approvals = new Set<string>();
    for (const p of sorted) {
      policies.set(p.id, { json: p.json, text: p.text, usage: usageOf(p.json) });
      if (p.json.effect === 'permit' && p.json.annotations !== undefined && Object.hasOwn(p.json.annotations, 'approval')) approvals.add(p.id);
    }
    this.#plans = new PolicyPlans(policies);
    this.readsLlmUsage = [...policies.values()].some((p) => p.usage.allContext || [...LLM_CONTEXT_KEYS].some((k) => p.usage.contextKeys.has(k)));
    this.#evaluator = new PolicyEvaluator(approvals, Object.freeze(Object.entries(bodyFields).sort(([a], [b]) => compare(a, b))), memoSize);
  }

  /**
   * Load, parse and validate every `*.cedar` file in `opts.dir`. Throws ConfigError listing every
   * problem (`file:line:col: policy-id: message`).
   */
  static load(opts: PolicyLoadOptions): PolicyEngine {
    const { sources, schemaText, warnings, bodyFields } = loadPolicySet(opts);
    const memoSize = opts.memoSize ?? DEFAULT_MEMO_SIZE;
    const engine = new PolicyEngine(sources, schemaText, warnings, bodyFields, Number.isInteger(memoSize) && memoSize > 0 ? memoSize : 0);
    // Pre-parse every announced class now: load-time cost, and a broken subset fails startup, not a request.
    for (const cls of opts.actionClasses ?? []) engine.#plans.plan(cls);
    return engine;
  }

  /** Decide one request (see PolicyEvaluator.evaluate). Never throws: any failure is a `policy_error` deny. */
  evaluate(input: PolicyInput): PolicyOutcome {
    try {
      if (this.#closed) return policyError('the policy engine is closed');
      return this.#evaluator.evaluate(this.#plans.get(input.actionClass), input);
    } catch (err: unknown) {
      return policyError(err instanceof Error ? err.message : String(err));
    }
  }

  /** Whether a policy that can apply to `actionClass` reads the agent's LLM usage (`context.llm_*`). */
  readsLlmUsageFor(actionClass: string): boolean {
    return this.readsLlmUsage && !this.#closed && this.#plans.get(actionClass).readsLlm;
  }

  /** Release the pre-parsed sets held inside the wasm module. Later `evaluate` calls deny. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#plans.release();
  }
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
