/**
 * A small declarative schema builder (zod-like, no dependency). One declaration gives:
 *   - the output type:         `Infer<typeof schema>`
 *   - validation of a parsed TOML value that collects every issue (never fail-fast), each with a key path
 *   - a JSON Schema (draft 2020-12) with `description` and `default` for every key
 *
 * Defaults are written in the *input* domain (what a user would type in TOML, e.g. "127.0.0.1:8080") and
 * run through the same validation/transform as user input, so the JSON Schema `default` and the runtime
 * default can never disagree. A table whose fields all have defaults is itself optional (default `{}`).
 */
import type { KeyPath, PathSegment } from './path.js';
import { describeValue, isTable, stableKey, suggest, toJson, type JsonValue } from './values.js';

export type { JsonValue };
export type JsonSchema = { [key: string]: JsonValue };

export type IssueKind = 'type' | 'value' | 'unknown_key' | 'missing_key';
export interface SchemaIssue {
  /** Where the problem is; for `missing_key` the path of the absent key, for `unknown_key` the unknown key. */
  readonly path: PathSegment[];
  readonly kind: IssueKind;
  readonly message: string;
}

export interface ValidateOptions {
  /** Folder handed to transforms (relative paths resolve against it). Default: `process.cwd()`. */
  baseDir?: string;
  /** Set when the value came from smol-toml with `integersAsBigInt: true`: integers are then `bigint`,
   *  so any `number` is a TOML float and is rejected where an integer is expected. */
  integersAreBigInt?: boolean;
}

export type ValidationResult<T> = { ok: true; value: T } | { ok: false; issues: SchemaIssue[] };

export interface TransformContext {
  readonly baseDir: string;
  readonly path: KeyPath;
}

/** Returned by a transform/refine function to reject a value with a message. */
export class Failure {
  constructor(readonly message: string) {}
}
export function fail(message: string): Failure {
  return new Failure(message);
}

const INVALID: unique symbol = Symbol('invalid');
type Result<T> = T | typeof INVALID;

interface Ctx {
  readonly issues: SchemaIssue[];
  readonly baseDir: string;
  readonly bigint: boolean;
}

type NodeKind = 'string' | 'integer' | 'number' | 'boolean' | 'enum' | 'array' | 'table';

interface Def<Out> {
  readonly kind: NodeKind;
  readonly parse: (value: unknown, path: PathSegment[], ctx: Ctx) => Result<Out>;
  readonly json: () => JsonSchema;
  readonly description?: string | undefined;
  readonly defaultValue?: { readonly value: JsonValue } | undefined;
  /** Key may be absent with no default: the output is then `undefined`. */
  readonly optional?: boolean | undefined;
  readonly fields?: Fields | undefined;
}

export class Schema<Out, In = Out> {
  /** Phantom members carrying the types; they do not exist at runtime. */
  declare readonly _output: Out;
  declare readonly _input: In;
  /** @internal The node definition (used by tables/arrays and the JSON Schema generator). */
  readonly def: Def<Out>;

  constructor(def: Def<Out>) {
    this.def = def;
  }

  get kind(): NodeKind {
    return this.def.kind;
  }
  get description(): string | undefined {
    return this.def.description;
  }
  get hasDefault(): boolean {
    return this.def.defaultValue !== undefined;
  }
  /** Absent is fine: the key has a default or is optional. */
  get isOptional(): boolean {
    return this.def.defaultValue !== undefined || this.def.optional === true;
  }

  /** Makes the key optional without a default (e.g. a per-host override that inherits a global value). */
  optional(): Schema<Out | undefined, In | undefined> {
    return new Schema<Out | undefined, In | undefined>({ ...(this.def as Def<Out | undefined>), optional: true });
  }

  describe(text: string): Schema<Out, In> {
    return new Schema<Out, In>({ ...this.def, description: text });
  }

  /** Makes the key optional; `value` is in the input domain and is validated/transformed like user input. */
  default(value: In): Schema<Out, In> {
    return new Schema<Out, In>({ ...this.def, defaultValue: { value: toJson(value) } });
  }

  /** Validate further and/or change the output type. `json` is merged into this node's JSON Schema. */
  transform<T>(fn: (value: Out, ctx: TransformContext) => T | Failure, json?: JsonSchema): Schema<T, In> {
    const inner = this.def;
    return new Schema<T, In>({
      kind: inner.kind,
      description: inner.description,
      defaultValue: inner.defaultValue,
      optional: inner.optional,
      fields: inner.fields,
      json: () => ({ ...inner.json(), ...json }),
      parse: (value, path, ctx) => {
        const parsed = inner.parse(value, path, ctx);
        if (parsed === INVALID) return INVALID;
        const out = fn(parsed, { baseDir: ctx.baseDir, path: [...path] });
        if (out instanceof Failure) {
          ctx.issues.push({ path: [...path], kind: 'value', message: out.message });
          return INVALID;
        }
        return out;
      },
    });
  }

  /** Extra check keeping the type: return an error message, or undefined when fine. */
  refine(check: (value: Out, ctx: TransformContext) => string | undefined, json?: JsonSchema): Schema<Out, In> {
    return this.transform<Out>((value, ctx) => {
      const message = check(value, ctx);
      return message === undefined ? value : new Failure(message);
    }, json);
  }

  validate(value: unknown, options: ValidateOptions = {}): ValidationResult<Out> {
    const ctx: Ctx = { issues: [], baseDir: options.baseDir ?? process.cwd(), bigint: options.integersAreBigInt ?? false };
    const out = this.def.parse(value, [], ctx);
    if (out === INVALID || ctx.issues.length > 0) return { ok: false, issues: ctx.issues };
    return { ok: true, value: out };
  }

  jsonSchema(): JsonSchema {
    const out: JsonSchema = {};
    if (this.def.description !== undefined) out['description'] = this.def.description;
    Object.assign(out, this.def.json());
    if (this.def.defaultValue !== undefined) out['default'] = expandDefault(this, this.def.defaultValue.value);
    return out;
  }
}

export type AnySchema = Schema<unknown, unknown>;
export type Fields = { readonly [key: string]: AnySchema };
export type Infer<S extends AnySchema> = S['_output'];
export type InputOf<S extends AnySchema> = S['_input'];
type Simplify<T> = { [K in keyof T]: T[K] } & {};
export type TableOutput<F extends Fields> = Simplify<{ -readonly [K in keyof F]: Infer<F[K]> }>;
export type TableInput<F extends Fields> = Simplify<{ -readonly [K in keyof F]?: InputOf<F[K]> }>;

// ---------------------------------------------------------------------------------------------------------
// helpers

function expandDefault(schema: AnySchema, value: JsonValue): JsonValue {
  const fields = schema.def.fields;
  if (fields === undefined || !isTable(value)) return toJson(value);
  const out: { [key: string]: JsonValue } = {};
  for (const [name, field] of Object.entries(fields)) {
    const given = value[name];
    if (given !== undefined) out[name] = expandDefault(field, given);
    else if (field.def.defaultValue !== undefined) out[name] = expandDefault(field, field.def.defaultValue.value);
  }
  return out;
}

function typeIssue(ctx: Ctx, path: PathSegment[], expected: string, value: unknown): typeof INVALID {
  ctx.issues.push({ path: [...path], kind: 'type', message: `expected ${expected}, got ${describeValue(value, ctx.bigint)}` });
  return INVALID;
}

// ---------------------------------------------------------------------------------------------------------
// node builders

function string(opts: { minLength?: number; maxLength?: number } = {}): Schema<string> {
  const { minLength, maxLength } = opts;
  const lengthText = minLength !== undefined && maxLength !== undefined ? `of ${minLength} to ${maxLength} characters`
    : minLength !== undefined ? `of at least ${minLength} character${minLength === 1 ? '' : 's'}`
      : maxLength !== undefined ? `of at most ${maxLength} characters` : '';
  const expected = lengthText === '' ? 'a string' : `a string ${lengthText}`;
  return new Schema<string>({
    kind: 'string',
    json: () => ({
      type: 'string',
      ...(minLength !== undefined ? { minLength } : {}),
      ...(maxLength !== undefined ? { maxLength } : {}),
    }),
    parse: (value, path, ctx) => {
      if (typeof value !== 'string') return typeIssue(ctx, path, expected, value);
      if ((minLength !== undefined && value.length < minLength) || (maxLength !== undefined && value.length > maxLength)) {
        return typeIssue(ctx, path, expected, value);
      }
      return value;
    },
  });
}

function integer(opts: { min?: number; max?: number } = {}): Schema<number> {
  const { min, max } = opts;
  const expected = min !== undefined && max !== undefined ? `an integer between ${min} and ${max}`
    : min !== undefined ? `an integer >= ${min}` : max !== undefined ? `an integer <= ${max}` : 'an integer';
  return new Schema<number>({
    kind: 'integer',
    json: () => ({ type: 'integer', ...(min !== undefined ? { minimum: min } : {}), ...(max !== undefined ? { maximum: max } : {}) }),
    parse: (value, path, ctx) => {
      let n: bigint;
      if (typeof value === 'bigint') n = value;
      else if (typeof value === 'number' && !ctx.bigint && Number.isSafeInteger(value)) n = BigInt(value);
      else return typeIssue(ctx, path, expected, value);
      if ((min !== undefined && n < BigInt(min)) || (max !== undefined && n > BigInt(max))) {
        return typeIssue(ctx, path, expected, value);
      }
      const out = Number(n);
      if (!Number.isSafeInteger(out)) return typeIssue(ctx, path, `${expected} (within ±2^53)`, value);
      return out;
    },
  });
}

/**
 * A TOML integer or float (e.g. a price or a dollar amount): above `exclusiveMin`, within `min`..`max`;
 * `unit` names what it counts in the error ("a number of USD per million tokens between 0 and 100000").
 */
function number(opts: { exclusiveMin?: number; min?: number; max?: number; unit?: string } = {}): Schema<number> {
  const { exclusiveMin, min, max, unit } = opts;
  const what = unit === undefined ? 'a number' : `a number of ${unit}`;
  const range = min !== undefined && max !== undefined ? ` between ${min} and ${max}` : min !== undefined ? ` ≥ ${min}` : max !== undefined ? ` ≤ ${max}` : '';
  const expected = `${what}${exclusiveMin !== undefined ? ` > ${exclusiveMin}` : ''}${range}`;
  return new Schema<number>({
    kind: 'number',
    json: () => ({
      type: 'number',
      ...(exclusiveMin !== undefined ? { exclusiveMinimum: exclusiveMin } : {}),
      ...(min !== undefined ? { minimum: min } : {}),
      ...(max !== undefined ? { maximum: max } : {}),
    }),
    parse: (value, path, ctx) => {
      const n = typeof value === 'bigint' ? Number(value) : value;
      const ok = typeof n === 'number' && Number.isFinite(n) && (exclusiveMin === undefined || n > exclusiveMin)
        && (min === undefined || n >= min) && (max === undefined || n <= max);
      return ok ? n : typeIssue(ctx, path, expected, value);
    },
  });
}

function boolean(): Schema<boolean> {
  return new Schema<boolean>({
    kind: 'boolean',
    json: () => ({ type: 'boolean' }),
    parse: (value, path, ctx) => (typeof value === 'boolean' ? value : typeIssue(ctx, path, 'true or false', value)),
  });
}

function enumOf<const T extends readonly [string, ...string[]]>(values: T): Schema<T[number]> {
  const list = values.map((v) => JSON.stringify(v)).join(', ');
  return new Schema<T[number]>({
    kind: 'enum',
    json: () => ({ type: 'string', enum: [...values] }),
    parse: (value, path, ctx) => {
      const found = values.find((v) => v === value);
      if (found !== undefined) return found;
      if (typeof value === 'string') {
        const hint = suggest(value, values);
        const message = `expected one of ${list}, got ${describeValue(value)}${hint !== undefined ? ` (did you mean ${JSON.stringify(hint)}?)` : ''}`;
        ctx.issues.push({ path: [...path], kind: 'value', message });
        return INVALID;
      }
      return typeIssue(ctx, path, `one of ${list}`, value);
    },
  });
}

export interface ArrayOptions {
  /** Reject duplicates (compared on the *output* values, i.e. after normalisation). */
  unique?: boolean;
  minItems?: number;
  maxItems?: number;
}

function array<S extends AnySchema>(item: S, opts: ArrayOptions = {}): Schema<Array<Infer<S>>, Array<InputOf<S>>> {
  const { unique = false, minItems, maxItems } = opts;
  return new Schema<Array<Infer<S>>, Array<InputOf<S>>>({
    kind: 'array',
    json: () => ({
      type: 'array',
      items: item.jsonSchema(),
      ...(unique ? { uniqueItems: true } : {}),
      ...(minItems !== undefined ? { minItems } : {}),
      ...(maxItems !== undefined ? { maxItems } : {}),
    }),
    parse: (value, path, ctx) => {
      if (!Array.isArray(value)) return typeIssue(ctx, path, 'an array', value);
      let ok = true;
      if (minItems !== undefined && value.length < minItems) {
        ctx.issues.push({ path: [...path], kind: 'value', message: `expected at least ${minItems} item(s), got ${value.length}` });
        ok = false;
      }
      if (maxItems !== undefined && value.length > maxItems) {
        ctx.issues.push({ path: [...path], kind: 'value', message: `expected at most ${maxItems} item(s), got ${value.length}` });
        ok = false;
      }
      const out: Array<Infer<S>> = [];
      const seen = new Map<string, number>();
      value.forEach((element: unknown, index) => {
        const parsed = item.def.parse(element, [...path, index], ctx);
        if (parsed === INVALID) {
          ok = false;
          return;
        }
        if (unique) {
          const key = stableKey(parsed);
          const first = seen.get(key);
          if (first !== undefined) {
            const shown = typeof parsed === 'string' ? JSON.stringify(parsed) : 'entry';
            ctx.issues.push({ path: [...path, index], kind: 'value', message: `duplicate ${shown} (same as [${first}])` });
            ok = false;
            return;
          }
          seen.set(key, index);
        }
        out.push(parsed as Infer<S>);
      });
      return ok ? out : INVALID;
    },
  });
}

function table<F extends Fields>(fields: F): Schema<TableOutput<F>, TableInput<F>> {
  const names = Object.keys(fields);
  const allOptional = names.every((name) => fields[name]?.isOptional === true);
  return new Schema<TableOutput<F>, TableInput<F>>({
    kind: 'table',
    fields,
    defaultValue: allOptional ? { value: {} } : undefined,
    json: () => {
      const properties: { [key: string]: JsonValue } = {};
      const required: string[] = [];
      for (const name of names) {
        const field = fields[name];
        if (field === undefined) continue;
        properties[name] = field.jsonSchema();
        if (!field.isOptional) required.push(name);
      }
      return { type: 'object', properties, ...(required.length > 0 ? { required } : {}), additionalProperties: false };
    },
    parse: (value, path, ctx) => {
      if (!isTable(value)) return typeIssue(ctx, path, 'a table', value);
      let ok = true;
      for (const key of Object.keys(value)) {
        if (Object.hasOwn(fields, key)) continue;
        const hint = suggest(key, names);
        const message = `unknown key ${JSON.stringify(key)}${hint !== undefined ? ` (did you mean ${JSON.stringify(hint)}?)` : ''}`;
        ctx.issues.push({ path: [...path, key], kind: 'unknown_key', message });
        ok = false;
      }
      const out: Record<string, unknown> = {};
      for (const name of names) {
        const field = fields[name];
        if (field === undefined) continue;
        const childPath = [...path, name];
        let parsed: unknown;
        if (Object.hasOwn(value, name)) {
          parsed = field.def.parse(value[name], childPath, ctx);
        } else if (field.def.defaultValue !== undefined) {
          parsed = field.def.parse(structuredClone(field.def.defaultValue.value), childPath, { ...ctx, bigint: false });
        } else if (field.def.optional === true) {
          continue;
        } else {
          ctx.issues.push({ path: childPath, kind: 'missing_key', message: `missing required key ${JSON.stringify(name)}` });
          ok = false;
          continue;
        }
        if (parsed === INVALID) ok = false;
        else out[name] = parsed;
      }
      return ok ? (out as TableOutput<F>) : INVALID;
    },
  });
}

/** `[[name]]` in TOML: an array whose items are tables. */
function arrayOfTables<F extends Fields>(fields: F, opts: ArrayOptions = {}): Schema<Array<TableOutput<F>>, Array<TableInput<F>>> {
  return array(table(fields), opts);
}

export const s = { string, integer, number, boolean, enum: enumOf, array, table, arrayOfTables } as const;
