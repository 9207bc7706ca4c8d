/**
 * A request's facts in Cedar's terms (docs/architecture.md "Enforce"): the context record with exactly the
 * attributes a group reads, and the memo key made of exactly those inputs. No schema is used at request
 * time: validation at load fixed the policies' types, so the context is built here with those types
 * (integers for Long, strings for String), and a body value that does not fit its type denies.
 */
import type { CedarValueJson } from '@cedar-policy/cedar-wasm/nodejs';
import type { PreparedSet } from './plan.js';
import type { BodyFieldType } from './schema.js';
import type { PolicyInput } from './verdict.js';

/** The typed body fields, sorted by name. */
export type BodyFields = readonly (readonly [string, BodyFieldType])[];

/** Per-request values computed at most once, whichever groups need them. */
export interface Derived {
  hour: number;
  weekday: number;
  /** The typed body record; undefined = not computed yet, null = no body. */
  body: Record<string, CedarValueJson> | null | undefined;
}

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
const LONG_STRING = /^-?\d{1,15}$/;

export function derivedOf(nowMs: number): Derived {
  return {
    hour: Math.floor(nowMs / HOUR_MS) % 24,
    weekday: (Math.floor(nowMs / DAY_MS) + 4) % 7, // 1970-01-01 was a Thursday (4)
    body: undefined,
  };
}

/** Length-prefixed, so no value can imitate a separator. */
function keyPart(s: string): string {
  return `${s.length}:${s}`;
}

/** The memo key: every input the group's Cedar call would receive, and nothing else. null = bad body. */
export function memoKey(set: PreparedSet, input: PolicyInput, derived: Derived, bodyFields: BodyFields): string | null {
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
        const body = typedBody(input, derived, bodyFields);
        if (body === undefined) return null;
        if (body === null) {
          k += '!';
          break;
        }
        // Each field has one fixed type, so position + value is unambiguous.
        for (const [field] of bodyFields) {
          const v = body[field];
          k += v === undefined ? '_' : typeof v === 'string' ? keyPart(v) : `${String(v)},`;
        }
        break;
      }
      case 'llm_tokens_hour': k += `${input.llm?.hour.tokens ?? '!'},`; break;
      case 'llm_tokens_day': k += `${input.llm?.day.tokens ?? '!'},`; break;
      case 'llm_cost_hour': k += `${input.llm === null || input.llm === undefined ? '!' : cedarDecimal(input.llm.hour.costUsd)},`; break;
      case 'llm_cost_day': k += `${input.llm === null || input.llm === undefined ? '!' : cedarDecimal(input.llm.day.costUsd)},`; break;
      case 'mcp': {
        const m = input.mcp;
        if (m === null || m === undefined) {
          k += '!';
          break;
        }
        k += keyPart(m.method) + keyPart(m.tool);
        // Sorted, length-prefixed names and values: no two argument records share a key.
        for (const name of Object.keys(m.arguments).sort()) k += keyPart(name) + keyPart(m.arguments[name] as string);
        k += ';';
        break;
      }
    }
  }
  return k;
}

/** The context with only the attributes `set` reads; null = the body does not fit the schema. */
export function contextOf(set: PreparedSet, input: PolicyInput, derived: Derived, bodyFields: BodyFields): Record<string, CedarValueJson> | null {
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
        const body = typedBody(input, derived, bodyFields);
        if (body === undefined) return null;
        if (body !== null) ctx.body = body;
        break;
      }
      // Absent when the totals were not read: a policy reading them then errors, which denies (fail closed).
      case 'llm_tokens_hour': if (input.llm) ctx.llm_tokens_hour = input.llm.hour.tokens; break;
      case 'llm_tokens_day': if (input.llm) ctx.llm_tokens_day = input.llm.day.tokens; break;
      case 'llm_cost_hour': if (input.llm) ctx.llm_cost_hour = { __extn: { fn: 'decimal', arg: cedarDecimal(input.llm.hour.costUsd) } }; break;
      case 'llm_cost_day': if (input.llm) ctx.llm_cost_day = { __extn: { fn: 'decimal', arg: cedarDecimal(input.llm.day.costUsd) } }; break;
      case 'mcp': {
        const m = input.mcp;
        if (m !== null && m !== undefined) ctx.mcp = { method: m.method, tool: m.tool, arguments: { ...m.arguments } };
        break;
      }
    }
  }
  return ctx;
}

/**
 * USD as a Cedar `decimal` literal: Cedar decimals have 4 fractional digits (and a range of ±9.2e14), so
 * the total is rounded to the nearest 1/100 cent (docs/llm.md "Policies on usage").
 */
export function cedarDecimal(usd: number): string {
  const v = Number.isFinite(usd) ? Math.min(Math.max(usd, 0), 900_000_000_000_000) : 0;
  return v.toFixed(4);
}

/**
 * The typed body record (computed once per request); null = no body; undefined = a value does not fit
 * its declared type. Such a value denies rather than being dropped: dropping `amount: "abc"` would make
 * `context.body has amount` false and skip the very rule that should stop it. Decimal-integer strings
 * count as Long (form-style APIs send those). `null` is absent (Cedar has no null). Undeclared fields are
 * left out: no valid policy can read them.
 */
function typedBody(input: PolicyInput, derived: Derived, bodyFields: BodyFields): Record<string, CedarValueJson> | null | undefined {
  if (derived.body !== undefined) return derived.body;
  const values = input.body;
  if (values === null) return (derived.body = null);
  const out: Record<string, CedarValueJson> = {};
  for (const [field, type] of bodyFields) {
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

/** Why the body did not fit, for the `policy_error` detail. */
export function bodyProblem(input: PolicyInput, bodyFields: BodyFields): string {
  for (const [field, type] of bodyFields) {
    const v = input.body?.[field];
    if (v !== undefined && v !== null) {
      const ok = type === 'String' ? typeof v === 'string' : type === 'Boolean' ? typeof v === 'boolean'
        : (typeof v === 'number' && Number.isSafeInteger(v)) || (typeof v === 'string' && LONG_STRING.test(v));
      if (!ok) return `body field ${field} is not a ${type}`;
    }
  }
  return 'body does not fit the schema';
}
