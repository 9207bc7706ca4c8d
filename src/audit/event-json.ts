import { canonicalJson, canonicalEvent, jsonString } from './chain.js';

/**
 * `canonicalEvent(body, integrity)` with the key work done once per event shape instead of once per
 * event (docs/audit.md "Hash chain and signature"): the audit writes two events of a handful of fixed
 * shapes per request, and sorting and quoting their ~25 keys every time was most of the ~5 µs an event
 * cost to serialise. A plan is the merged, sorted key list of one shape with each key's `,"key":` text
 * prebuilt; an event uses it when its keys are exactly the plan's (same names, same order: how the
 * recorder builds them). Anything else — a new shape, more shapes than the cache holds — takes the
 * generic path, so the output is always the canonical text.
 */
interface Plan {
  /** `Object.keys(body)` of the shape, in order. */
  readonly bodyKeys: readonly string[];
  /** `Object.keys(integrity)` of the shape, in order. */
  readonly integrityKeys: readonly string[];
  /** Sorted merged keys (hash and sig left out), the integrity object's winning a clash. */
  readonly keys: readonly string[];
  readonly fromIntegrity: readonly boolean[];
  /** `"key":` for the first key, `,"key":` for the others. */
  readonly prefixes: readonly string[];
}

/** Shapes kept; the recorder produces fewer than this (decision, outcome, approval, lifecycle). */
const MAX_PLANS = 16;
const plans: Plan[] = [];

function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function makePlan(bodyKeys: string[], integrityKeys: string[]): Plan {
  const inIntegrity = new Set(integrityKeys);
  const keys = [...bodyKeys.filter((k) => !inIntegrity.has(k)), ...integrityKeys].filter((k) => k !== 'hash' && k !== 'sig').sort();
  return {
    bodyKeys,
    integrityKeys,
    keys,
    fromIntegrity: keys.map((k) => inIntegrity.has(k)),
    prefixes: keys.map((k, i) => `${i === 0 ? '' : ','}${jsonString(k)}:`),
  };
}

function planFor(bodyKeys: string[], integrityKeys: string[]): Plan | null {
  for (const p of plans) if (sameKeys(p.bodyKeys, bodyKeys) && sameKeys(p.integrityKeys, integrityKeys)) return p;
  if (plans.length >= MAX_PLANS) return null;
  const p = makePlan(bodyKeys, integrityKeys);
  plans.push(p);
  return p;
}

function valueJson(v: unknown): string | undefined {
  switch (typeof v) {
    case 'string':
      return jsonString(v);
    case 'number':
    case 'boolean':
    case 'object':
      return canonicalJson(v);
    default:
      // undefined, functions and symbols are left out, as canonicalJson leaves them out of objects.
      return undefined;
  }
}

export function canonicalEventJson(body: Readonly<Record<string, unknown>>, integrity: Readonly<Record<string, unknown>>): string {
  const plan = planFor(Object.keys(body), Object.keys(integrity));
  if (plan === null) return canonicalEvent(body, integrity);
  const { keys, fromIntegrity, prefixes } = plan;
  let s = '{';
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string;
    const text = valueJson(fromIntegrity[i] === true ? integrity[k] : body[k]);
    if (text === undefined) {
      // A left-out value shifts the commas: rare (the recorder writes null, not undefined), so generic.
      return canonicalEvent(body, integrity);
    }
    s += (prefixes[i] as string) + text;
  }
  return s + '}';
}
