/**
 * Plain helpers on TOML values for the schema DSL (schema-dsl.ts): how a value is named in an error,
 * "did you mean" suggestions, JSON conversion and a key for duplicate detection.
 */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export function isTable(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Date) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === null || proto === Object.prototype;
}

export function toJson(value: unknown): JsonValue {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (Array.isArray(value)) return value.map(toJson);
  if (isTable(value)) {
    const out: { [key: string]: JsonValue } = {};
    for (const [k, v] of Object.entries(value)) out[k] = toJson(v);
    return out;
  }
  return String(value);
}

function truncate(text: string, max = 60): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** `"fast" (string)`, `3 (integer)`, `1.5 (float)`, `true (boolean)`, `an array`, `a table`. */
export function describeValue(value: unknown, integersAreBigInt = false): string {
  if (typeof value === 'string') return `${JSON.stringify(truncate(value))} (string)`;
  if (typeof value === 'bigint') return `${truncate(value.toString(), 30)} (integer)`;
  if (typeof value === 'number') {
    const isFloat = integersAreBigInt || !Number.isInteger(value);
    if (!isFloat) return `${value} (integer)`;
    const text = Number.isNaN(value) ? 'nan' : !Number.isFinite(value) ? (value > 0 ? 'inf' : '-inf')
      : Number.isInteger(value) && Math.abs(value) < 1e21 ? value.toFixed(1) : String(value);
    return `${text} (float)`;
  }
  if (typeof value === 'boolean') return `${value} (boolean)`;
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Date) {
    const text = Number.isNaN(value.getTime()) ? String(value) : value.toISOString();
    return `${text} (datetime)`;
  }
  if (isTable(value)) return 'a table';
  if (value === undefined) return 'nothing';
  return typeof value;
}

/** Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent swaps cost 1. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => d[i]?.[j] ?? Infinity;
  for (let i = 1; i <= a.length; i++) {
    const row = d[i];
    if (row === undefined) continue;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, at(i - 2, j - 2) + 1);
      row[j] = best;
    }
  }
  return at(a.length, b.length);
}

/** The closest candidate within a small edit distance, for "did you mean" hints. */
export function suggest(input: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    if (Math.abs(candidate.length - input.length) > 3) continue; // too far apart to be a typo
    const d = candidate.toLowerCase() === input.toLowerCase() ? 0 : editDistance(input, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  const limit = Math.max(1, Math.min(3, Math.floor((best?.length ?? 0) / 3)));
  return best !== undefined && bestDistance <= limit && bestDistance < best.length ? best : undefined;
}

export function stableKey(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === 'bigint') return v.toString();
    if (isTable(v)) return Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    return v;
  }) ?? String(value);
}
