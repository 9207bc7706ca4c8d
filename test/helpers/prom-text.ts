/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: it throws on
 * anything a Prometheus server would reject or that hides a bug in the exposition — malformed lines,
 * bad names or label escapes, non-numeric values, samples of an undeclared family, a TYPE given twice
 * or after its samples, duplicate series, histograms whose buckets are not cumulative or whose +Inf
 * bucket disagrees with _count. prom-client only writes this format; it has no parser of its own.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Family {
  readonly name: string;
  type: MetricType;
  help: string | null;
  readonly samples: Sample[];
}

export class ExpositionError extends Error {
  constructor(line: number, message: string) {
    super(`line ${line}: ${message}`);
    this.name = 'ExpositionError';
  }
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(text: string, line: number): number {
  // Prometheus reads values with Go's strconv.ParseFloat: Inf/Infinity and NaN in any case (prom-client
  // writes "Nan" for the event-loop percentiles before the first sample), decimal or exponent notation.
  const special = /^([+-]?)(inf|infinity|nan)$/i.exec(text);
  if (special !== null) return (special[2] as string).toLowerCase() === 'nan' ? NaN : special[1] === '-' ? -Infinity : Infinity;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) throw new ExpositionError(line, `not a number: ${JSON.stringify(text)}`);
  return Number(text);
}

/** `{a="x",b="y\"z"}` starting at `i` (the `{`); returns the labels and the index after `}`. */
function parseLabels(s: string, i: number, line: number): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  i++; // {
  for (;;) {
    if (s[i] === '}') return { labels, end: i + 1 };
    const eq = s.indexOf('=', i);
    if (eq === -1) throw new ExpositionError(line, 'label without "="');
    const name = s.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new ExpositionError(line, `bad label name ${JSON.stringify(name)}`);
    if (Object.hasOwn(labels, name)) throw new ExpositionError(line, `label ${name} given twice`);
    if (s[eq + 1] !== '"') throw new ExpositionError(line, `label ${name}: value must be quoted`);
    let value = '';
    let j = eq + 2;
    for (;;) {
      const c = s[j];
      if (c === undefined) throw new ExpositionError(line, `label ${name}: unterminated value`);
      if (c === '"') break;
      if (c === '\\') {
        const e = s[j + 1];
        if (e === '\\') value += '\\';
        else if (e === '"') value += '"';
        else if (e === 'n') value += '\n';
        else throw new ExpositionError(line, `label ${name}: bad escape \\${e ?? ''}`);
        j += 2;
        continue;
      }
      value += c;
      j++;
    }
    labels[name] = value;
    i = j + 1;
    if (s[i] === ',') i++;
    else if (s[i] !== '}') throw new ExpositionError(line, `expected "," or "}" after label ${name}`);
  }
}

/** The family a sample name belongs to, given the declared families. */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const direct = families.get(name);
  // A histogram has no bare sample; a summary's bare samples are its quantiles.
  if (direct !== undefined && direct.type !== 'histogram') return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const f = families.get(name.slice(0, -suffix.length));
    if (f === undefined) continue;
    if (f.type === 'histogram') return f;
    if (f.type === 'summary' && suffix !== '_bucket') return f;
  }
  return undefined;
}

export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seenSeries = new Set<string>();
  const withSamples = new Set<string>();
  if (text.length > 0 && !text.endsWith('\n')) throw new ExpositionError(0, 'the exposition must end with a newline');
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((raw, idx) => {
    const line = idx + 1;
    if (raw.trim() === '') return;
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw);
      if (m === null) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, 'HELP' | 'TYPE', string, string];
      if (!METRIC_NAME.test(name)) throw new ExpositionError(line, `bad metric name ${JSON.stringify(name)}`);
      let f = families.get(name);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest as MetricType)) throw new ExpositionError(line, `unknown type ${JSON.stringify(rest)}`);
        if (f !== undefined && f.type !== 'untyped') throw new ExpositionError(line, `TYPE of ${name} given twice`);
        if (withSamples.has(name)) throw new ExpositionError(line, `TYPE of ${name} after its samples`);
        if (f === undefined) families.set(name, (f = { name, type: rest as MetricType, help: null, samples: [] }));
        else f.type = rest as MetricType;
      } else {
        if (f !== undefined && f.help !== null) throw new ExpositionError(line, `HELP of ${name} given twice`);
        if (f === undefined) families.set(name, (f = { name, type: 'untyped', help: null, samples: [] }));
        f.help = rest;
      }
      return;
    }
    const nameEnd = raw.search(/[{ ]/);
    if (nameEnd <= 0) throw new ExpositionError(line, 'a sample needs a name and a value');
    const name = raw.slice(0, nameEnd);
    if (!METRIC_NAME.test(name)) throw new ExpositionError(line, `bad metric name ${JSON.stringify(name)}`);
    let labels: Record<string, string> = {};
    let i = nameEnd;
    if (raw[i] === '{') ({ labels, end: i } = parseLabels(raw, i, line));
    if (raw[i] !== ' ') throw new ExpositionError(line, 'expected a space before the value');
    const parts = raw.slice(i + 1).split(' ');
    if (parts.length < 1 || parts.length > 2 || parts[0] === '') throw new ExpositionError(line, 'expected "value [timestamp]"');
    const value = parseValue(parts[0] as string, line);
    if (parts.length === 2 && !/^-?\d+$/.test(parts[1] as string)) throw new ExpositionError(line, 'bad timestamp');
    const family = familyOf(name, families);
    if (family === undefined) throw new ExpositionError(line, `sample ${name} of no declared family`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)))}`;
    if (seenSeries.has(key)) throw new ExpositionError(line, `duplicate series ${key}`);
    seenSeries.add(key);
    if (family.type === 'counter' && !(value >= 0)) throw new ExpositionError(line, `counter ${name} is ${value}`);
    if (name.endsWith('_bucket') && family.type === 'histogram' && labels['le'] === undefined) {
      throw new ExpositionError(line, `${name} without le`);
    }
    withSamples.add(family.name);
    family.samples.push({ name, labels, value });
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

/** Buckets cumulative in `le` order, a +Inf bucket equal to _count, for every label set. */
function checkHistogram(f: Family): void {
  const groups = new Map<string, { buckets: Array<[number, number]>; count: number | null }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : 1)));
    let g = groups.get(key);
    if (g === undefined) groups.set(key, (g = { buckets: [], count: null }));
    if (s.name === `${f.name}_bucket`) g.buckets.push([parseValue(le ?? '', 0), s.value]);
    else if (s.name === `${f.name}_count`) g.count = s.value;
  }
  for (const [key, g] of groups) {
    g.buckets.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < g.buckets.length; i++) {
      if ((g.buckets[i] as [number, number])[1] < (g.buckets[i - 1] as [number, number])[1]) {
        throw new ExpositionError(0, `${f.name}${key}: buckets are not cumulative`);
      }
    }
    const inf = g.buckets[g.buckets.length - 1];
    if (inf === undefined || inf[0] !== Infinity) throw new ExpositionError(0, `${f.name}${key}: no +Inf bucket`);
    if (g.count === null || g.count !== inf[1]) throw new ExpositionError(0, `${f.name}${key}: _count differs from the +Inf bucket`);
  }
}

/** The value of one series (0 when absent: a counter that never moved may not be exported yet). */
export function valueOf(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      const keys = Object.keys(labels);
      if (keys.length !== Object.keys(s.labels).length) continue;
      if (keys.every((k) => s.labels[k] === labels[k])) return s.value;
    }
  }
  return 0;
}
