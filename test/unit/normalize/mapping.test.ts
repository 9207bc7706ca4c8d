import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { ConfigError } from '../../../src/config/index.js';
import { compilePathPattern } from '../../../src/normalize/glob.js';
import { MappingTable } from '../../../src/normalize/mapping.js';
import type { Classification } from '../../../src/normalize/mapping.js';
import { normalizePath } from '../../../src/normalize/path.js';

interface RuleSpec {
  method?: string | undefined;
  host: string;
  path?: string | undefined;
  action_class: string;
  risk: string;
  body_fields?: string[] | undefined;
}

/** One `[[rules]]` block per spec, 7 lines each, so rule i starts on line 1 + 7 * i. */
function toml(rules: readonly RuleSpec[]): string {
  return rules
    .map((r) =>
      [
        '[[rules]]',
        r.method === undefined ? '# any method' : `method = ${JSON.stringify(r.method)}`,
        `host = ${JSON.stringify(r.host)}`,
        r.path === undefined ? '# any path' : `path = ${JSON.stringify(r.path)}`,
        `action_class = ${JSON.stringify(r.action_class)}`,
        `risk = ${JSON.stringify(r.risk)}`,
        r.body_fields === undefined ? '' : `body_fields = ${JSON.stringify(r.body_fields)}`,
      ].join('\n'),
    )
    .join('\n');
}

function loadError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err: unknown) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

// -------------------------------------------------------------------------------------------------------

t.test('glob edge cases', async (t) => {
  const cases: Array<[pattern: string, path: string, matches: boolean]> = [
    ['/v1/*', '/v1/x', true],
    ['/v1/*', '/v1/x/', true], // trailing slash is not significant
    ['/v1/*', '/v1/x/y', false], // `*` never crosses '/'
    ['/v1/*', '/v1/', false], // a lone `*` needs at least one character
    ['/v1/*', '/v1', false],
    ['/v1/x*', '/v1/x', true], // `*` next to literals may be empty
    ['/v1/x*', '/v1/xyz', true],
    ['/v1/*z', '/v1/xyz', true],
    ['/v1/x*z', '/v1/xz', true],
    ['/v1/x*z', '/v1/x/z', false],
    ['/v1/a*a', '/v1/a', false], // prefix and suffix must not overlap
    ['/v1/a*b*c', '/v1/abc', true],
    ['/v1/a*b*c', '/v1/aXbYbZc', true],
    ['/v1/a*b*c', '/v1/acb', false],
    ['/v1/**', '/v1', true], // `**` matches zero segments
    ['/v1/**', '/v1/', true],
    ['/v1/**', '/v1/a/b/c', true],
    ['/v1/**', '/v1x', false],
    ['/v1/**', '/v2/v1', false],
    ['/v1/**/admin', '/v1/admin', true],
    ['/v1/**/admin', '/v1/a/b/admin', true],
    ['/v1/**/admin', '/v1/a/b/admin/', true],
    ['/v1/**/admin', '/v1/a/b/admin/x', false],
    ['/v1/**/admin', '/v1/adminx', false],
    ['/**/admin/**', '/a/admin/b', true],
    ['/**/admin/**', '/admin', true],
    ['/**/a/*/c', '/a/a/b/c', true],
    ['/**/a/*/c', '/a/b/a/c', false],
    ['/**', '/', true],
    ['/**', '/anything/at/all', true],
    ['/*', '/', false],
    ['/', '/', true],
    ['/', '/x', false],
    ['/v1/files', '/v1/files', true],
    ['/v1/files', '/v1/files/', true],
    ['/v1/files/', '/v1/files', true], // the pattern's trailing slash is dropped too
    ['/v1/files', '/v1/files/x', false],
    ['/v1/files', '/v1/filesx', false],
    ['/v1/%2Fx', '/v1/%2Fx', true], // an encoded slash is an ordinary character
    ['/v1/*', '/v1/a%2Fb', true],
    ['/repos/*/*/**', '/repos/o/r', true],
    ['/repos/*/*/**', '/repos/o', false],
    ['/repos/*/*', '/repos/o/r/issues', false],
  ];
  for (const [pattern, path, expected] of cases) {
    const compiled = compilePathPattern(pattern, normalizePath);
    if (!compiled.ok) {
      t.fail(`${pattern}: ${compiled.message}`);
      continue;
    }
    t.equal(compiled.pattern.matches(path), expected, `${pattern} ${expected ? 'matches' : 'does not match'} ${path}`);
  }

  const rejected: Array<[string, string]> = [
    ['v1/x', 'expected a path starting with "/", got "v1/x"'],
    ['', 'expected a path starting with "/", got ""'],
    ['/a**', '"**" must be a whole path segment, got "a**"'],
    ['/***', '"**" must be a whole path segment, got "***"'],
    ['/**/**', 'path has "**/**": write a single "**"'],
    ['/v1?x=1', 'path must not contain a query ("?")'],
    ['/v1#x', 'path must not contain a fragment ("#")'],
    ['/a b', 'path must not contain " " (use %XX escapes)'],
    ['/v1/../x', 'path is not in normal form (dot segments, "//" or escapes): write "/x"'],
    ['/v1//x', 'path is not in normal form (dot segments, "//" or escapes): write "/v1/x"'],
    ['/%7euser', 'path is not in normal form (dot segments, "//" or escapes): write "/~user"'],
    ['/a%2fb', 'path is not in normal form (dot segments, "//" or escapes): write "/a%2Fb"'],
  ];
  for (const [pattern, message] of rejected) {
    const compiled = compilePathPattern(pattern, normalizePath);
    t.same(compiled, { ok: false, message }, `rejects ${JSON.stringify(pattern)}`);
  }

  const metrics: Array<[string, number, number, number]> = [
    ['/**', 0, 1, 0],
    ['/', 1, 0, 0],
    ['/v1/**', 3, 1, 0],
    ['/v1/*', 4, 0, 1],
    ['/v1/it*', 6, 0, 1],
    ['/v1/items', 9, 0, 0],
    ['/v1/items/', 9, 0, 0],
    ['/repos/*/*/**', 8, 1, 2],
  ];
  for (const [pattern, literalChars, globstars, stars] of metrics) {
    const compiled = compilePathPattern(pattern, normalizePath);
    t.ok(compiled.ok);
    if (compiled.ok) t.match(compiled.pattern, { literalChars, globstars, stars }, `metrics of ${pattern}`);
  }
});

t.test('glob matcher agrees with a naive reference on random input', async (t) => {
  const rand = prng(77);
  const patternSegments = ['a', 'b', 'ab', '*', '**', 'a*', '*b', 'a*b', '*a*'];
  const pathSegments = ['a', 'b', 'ab', 'ba', 'aab', 'x'];
  let checked = 0;
  for (let round = 0; round < 3000; round++) {
    const pattern = randomPattern(rand, patternSegments) ?? '/**';
    const path = randomPath(rand, pathSegments);
    const compiled = compilePathPattern(pattern, normalizePath);
    if (!compiled.ok) continue;
    checked++;
    const expected = referenceGlob(pattern, path);
    if (compiled.pattern.matches(path) !== expected) t.fail(`${pattern} vs ${path}: expected ${expected}`);
  }
  t.ok(checked > 2000, `${checked} random pattern/path pairs checked`);
});

// -------------------------------------------------------------------------------------------------------

t.test('specificity', async (t) => {
  const rules: RuleSpec[] = [
    { host: '*', action_class: 'any.any', risk: 'low' },
    { method: 'GET', host: '*', action_class: 'any.get', risk: 'low' },
    { host: '*.example.com', action_class: 'wild.short', risk: 'low' },
    { host: '*.api.example.com', action_class: 'wild.long', risk: 'low' },
    { host: 'api.example.com', action_class: 'exact.any', risk: 'low' },
    { host: 'api.example.com', path: '/v1/**', action_class: 'exact.v1', risk: 'low' },
    { method: 'GET', host: 'api.example.com', path: '/v1/**', action_class: 'exact.get.v1', risk: 'low' },
    { host: 'api.example.com', path: '/v1/*', action_class: 'exact.v1.star', risk: 'low' },
    { host: 'api.example.com', path: '/v1/items', action_class: 'exact.v1.items', risk: 'low' },
    { host: 'api.example.com', path: '/v1/it*', action_class: 'exact.v1.itstar', risk: 'low' },
    { host: 'api.example.com', path: '/v1/items/*', action_class: 'exact.v1.items.one', risk: 'low' },
    { host: 'api.example.com', path: '/v1/**/admin', action_class: 'exact.v1.admin', risk: 'low' },
    // same literal length and glob counts: the higher risk wins the tie
    { host: 'api.example.com', path: '/t/*', action_class: 'tie.high', risk: 'high' },
    { host: 'api.example.com', path: '/*/b', action_class: 'tie.low', risk: 'low' },
    // full tie: the earlier rule wins
    { host: 'api.example.com', path: '/u/*', action_class: 'tie.first', risk: 'low' },
    { host: 'api.example.com', path: '/*/c', action_class: 'tie.second', risk: 'low' },
    { method: 'DELETE', host: '10.0.0.1', path: '/x', action_class: 'ip.delete', risk: 'critical' },
    { method: 'GET', host: '[2001:DB8::1]', action_class: 'ip6.get', risk: 'low' },
  ];
  const dir = t.testdir({ 'spec.toml': toml(rules) });
  const table = MappingTable.load([join(dir, '*.toml')]);
  t.equal(table.ruleCount, rules.length);
  t.same(table.files, [join(dir, 'spec.toml')]);

  const cases: Array<[method: string, host: string, path: string, actionClass: string | null]> = [
    // method given beats a longer literal path on the same host
    ['GET', 'api.example.com', '/v1/items', 'exact.get.v1'],
    ['POST', 'api.example.com', '/v1/items', 'exact.v1.items'],
    ['POST', 'api.example.com', '/v1/items/', 'exact.v1.items'],
    ['POST', 'api.example.com', '/v1/itx', 'exact.v1.itstar'],
    ['POST', 'api.example.com', '/v1/other', 'exact.v1.star'],
    ['POST', 'api.example.com', '/v1/a/b', 'exact.v1'], // `/v1/*` does not cross '/'
    ['POST', 'api.example.com', '/v1/items/5', 'exact.v1.items.one'],
    ['POST', 'api.example.com', '/v1/items/5/6', 'exact.v1'],
    ['POST', 'api.example.com', '/v1/admin', 'exact.v1.admin'], // `**` matching zero segments
    ['POST', 'api.example.com', '/v1/x/y/admin', 'exact.v1.admin'],
    ['POST', 'api.example.com', '/v1', 'exact.v1'],
    ['POST', 'api.example.com', '/v1/', 'exact.v1'],
    ['POST', 'api.example.com', '/other', 'exact.any'],
    ['POST', 'api.example.com', '/t/b', 'tie.high'],
    ['POST', 'api.example.com', '/u/c', 'tie.first'],
    // exact host beats every wildcard, even a GET rule on `*`
    ['GET', 'api.example.com', '/', 'exact.any'],
    // a longer suffix beats a shorter one; any wildcard host beats `*` even with a method
    ['GET', 'x.api.example.com', '/', 'wild.long'],
    ['GET', 'a.b.api.example.com', '/', 'wild.long'],
    ['POST', 'a.b.example.com', '/', 'wild.short'],
    ['POST', 'other.example.com', '/v1/items', 'wild.short'],
    // `*.example.com` never matches the apex or a look-alike
    ['POST', 'example.com', '/', 'any.any'],
    ['GET', 'example.com', '/', 'any.get'],
    ['POST', 'badexample.com', '/', 'any.any'],
    ['POST', 'api.example.com.evil.com', '/', 'any.any'],
    ['POST', 'xapi.example.com', '/', 'wild.short'],
    // IP literals: exact only, never via a wildcard suffix
    ['DELETE', '10.0.0.1', '/x', 'ip.delete'],
    ['DELETE', '10.0.0.1', '/y', 'any.any'],
    ['GET', '2001:db8::1', '/anything', 'ip6.get'],
  ];
  for (const [method, host, path, expected] of cases) {
    t.equal(table.classify(method, host, path)?.actionClass ?? null, expected, `${method} ${host} ${path}`);
  }

  const hit = table.classify('POST', 'api.example.com', '/v1/items');
  t.same(hit, { actionClass: 'exact.v1.items', risk: 'low', ruleId: `spec.toml:${1 + 7 * 8}`, bodyFields: [] });
  t.ok(Object.isFrozen(hit), 'classifications are shared and frozen');

  const empty = MappingTable.load([]);
  t.equal(empty.classify('GET', 'api.example.com', '/'), null, 'no rules: unclassified');
});

t.test('body_fields are carried into the classification', async (t) => {
  const dir = t.testdir({
    'pay.toml': toml([{ method: 'POST', host: 'api.stripe.com', path: '/v1/refunds', action_class: 'payments.refund', risk: 'high', body_fields: ['amount', 'metadata.order_id'] }]),
  });
  const table = MappingTable.load([join(dir, 'pay.toml')]);
  t.same(table.classify('POST', 'api.stripe.com', '/v1/refunds'), {
    actionClass: 'payments.refund',
    risk: 'high',
    ruleId: 'pay.toml:1',
    bodyFields: ['amount', 'metadata.order_id'],
  });
});

// -------------------------------------------------------------------------------------------------------

t.test('duplicate rules name both files and lines', async (t) => {
  const dir = t.testdir({
    'a.toml': [
      '[[rules]]',
      'method = "POST"',
      'host = "API.example.com"',
      'path = "/v1/x/"',
      'action_class = "a"',
      'risk = "low"',
      '',
      '[[rules]]',
      'host = "*.Example.com"',
      'action_class = "a"',
      'risk = "low"',
      '',
      '[[rules]]',
      'host = "*"',
      'path = "/same"',
      'action_class = "a"',
      'risk = "low"',
      '[[rules]]',
      'host = "*"',
      'path = "/same"',
      'action_class = "a2"',
      'risk = "high"',
    ].join('\n'),
    'b.toml': [
      '# b',
      '[[rules]]',
      'method = "POST"',
      'host = "api.example.com"',
      'path = "/v1/x"',
      'action_class = "b"',
      'risk = "high"',
      '',
      '[[rules]]',
      'host = "*.example.com"',
      'path = "/**"',
      'action_class = "b"',
      'risk = "low"',
      '',
      '[[rules]]',
      'method = "GET"',
      'host = "api.example.com"',
      'path = "/v1/x"',
      'action_class = "b"',
      'risk = "low"',
    ].join('\n'),
  });
  const a = join(dir, 'a.toml');
  const b = join(dir, 'b.toml');
  const err = loadError(() => MappingTable.load([join(dir, '*.toml')]));
  t.equal(err.code, 'FIRMA_CONFIG_INVALID');
  t.equal(
    err.message,
    [
      `${a}:18:1: rules[3]: duplicate rule: ${a}:13 and ${a}:18 have the same method, host and path ((any method) * /same)`,
      `${b}:2:1: rules[0]: duplicate rule: ${a}:1 and ${b}:2 have the same method, host and path (POST api.example.com /v1/x)`,
      `${b}:9:1: rules[1]: duplicate rule: ${a}:8 and ${b}:9 have the same method, host and path ((any method) *.example.com /**)`,
    ].join('\n'),
  );
  t.match(err.errors[1], { file: b, line: 2, col: 1, key: 'rules[0]' });
});

t.test('bad values are reported with file:line:col: key: message, all at once', async (t) => {
  const dir = t.testdir({
    'bad.toml': [
      '# header',
      '[[rules]]',
      'method = "get"',
      'host = "https://api.example.com"',
      'path = "/v1/../x"',
      'action_class = "LLM Chat"',
      'risk = "severe"',
      '',
      '[[rules]]',
      'host = "api.example.com:443"',
      'path = "/a**"',
      'actionclass = "x"',
      'risk = "low"',
      'body_fields = [1, "a..b", "amount", "amount"]',
      '',
      '[[rules]]',
      'host = "a.*.com"',
      'path = "v1"',
      'action_class = "ok"',
      'risk = "low"',
      'body_fields = ["__proto__.x"]',
    ].join('\n'),
    'syntax.toml': '[[rules]]\nhost = "x.com\n',
    'dir.toml': {},
  });
  const bad = join(dir, 'bad.toml');
  const syntax = join(dir, 'syntax.toml');
  const err = loadError(() => MappingTable.load([bad, syntax, join(dir, 'dir.toml'), join(dir, 'missing.toml')]));
  const lines = err.message.split('\n');
  t.same(lines.slice(0, 16), [
    `${bad}:3:1: rules[0].method: expected an uppercase method token such as "GET", got "get" (string) (did you mean "GET"?)`,
    `${bad}:4:1: rules[0].host: expected an exact DNS name or IP address, "*", or "*.example.com" (no scheme or path), got "https://api.example.com" (string)`,
    `${bad}:5:1: rules[0].path: path is not in normal form (dot segments, "//" or escapes): write "/x"`,
    `${bad}:6:1: rules[0].action_class: expected dot-separated segments of a-z 0-9 _ - (at most 128 characters, e.g. "llm.chat"), got "LLM Chat" (string)`,
    `${bad}:7:1: rules[0].risk: expected one of "low", "medium", "high", "critical", got "severe" (string)`,
    `${bad}:9:1: rules[1].action_class: missing required key "action_class"`,
    `${bad}:10:1: rules[1].host: expected an exact DNS name or IP address, "*", or "*.example.com", got "api.example.com:443" (string) (rules match any port: leave it out)`,
    `${bad}:11:1: rules[1].path: "**" must be a whole path segment, got "a**"`,
    `${bad}:12:1: rules[1].actionclass: unknown key "actionclass" (did you mean "action_class"?)`,
    `${bad}:14:16: rules[1].body_fields[0]: expected a string, got 1 (integer)`,
    `${bad}:14:19: rules[1].body_fields[1]: expected a JSON field name or dotted path (A-Z a-z 0-9 _ $ -, e.g. "amount" or "metadata.order_id"), got "a..b" (string)`,
    `${bad}:14:37: rules[1].body_fields[3]: duplicate "amount" (same as [2])`,
    `${bad}:17:1: rules[2].host: expected an exact DNS name or IP address, "*", or "*.example.com"; "*" is only allowed alone or as a leading "*.", got "a.*.com" (string)`,
    `${bad}:18:1: rules[2].path: expected a path starting with "/", got "v1"`,
    `${bad}:21:16: rules[2].body_fields[0]: field name segment "__proto__" is not allowed`,
    `${syntax}:2:14: rules[0].host: invalid TOML: control characters are not allowed in strings`,
  ]);
  t.same(lines.slice(16), [`${join(dir, 'dir.toml')}:1:1: is a directory, not a file`, `${join(dir, 'missing.toml')}:1:1: file not found`]);
  t.match(err.errors[4], { file: bad, line: 7, col: 1, key: 'rules[0].risk' });
});

t.test('rule files: globs, missing files, name clashes', async (t) => {
  const rule = toml([{ host: 'a.com', action_class: 'x', risk: 'low' }]);
  const dir = t.testdir({
    one: { 'a.toml': rule, 'b.toml': rule.replace('a.com', 'b.com'), 'notes.txt': 'not toml', '.hidden.toml': 'garbage', 'sub.toml': {} },
    two: { 'a.toml': rule.replace('a.com', 'c.com'), 'empty.toml': '# nothing yet\n' },
  });
  const one = join(dir, 'one');
  const two = join(dir, 'two');

  const table = MappingTable.load([join(one, '*.toml'), join(one, '?.toml'), join(dir, 'nope', '*.toml'), join(two, '*.json')]);
  t.same(table.files, [join(one, 'a.toml'), join(one, 'b.toml')], 'sorted, deduplicated, no dotfiles, no folders');
  t.same(table.unmatchedPatterns, [join(dir, 'nope', '*.toml'), join(two, '*.json')], 'globs that match nothing are remembered, not errors');
  t.equal(table.ruleCount, 2);

  const emptyFile = MappingTable.load([join(two, 'empty.toml')]);
  t.equal(emptyFile.ruleCount, 0, 'a file without [[rules]] is fine');

  const clash = loadError(() => MappingTable.load([join(one, 'a.toml'), join(two, 'a.toml')]));
  t.equal(clash.message, `${join(two, 'a.toml')}:1:1: same file name as ${join(one, 'a.toml')}: rule ids are "<file name>:<line>", so file names must be unique`);

  const relative = loadError(() => MappingTable.load(['mappings/*.toml', join(dir, '*', 'a.toml')]));
  t.same(relative.errors.map((e) => e.message), [
    'mapping rules path must be absolute (config paths resolve against the config file folder)',
    '"*" and "?" are only allowed in the file-name part of a rules path',
  ]);

  mkdirSync(join(dir, 'three'));
  writeFileSync(join(dir, 'three', 'x.toml'), rule.replace('risk = "low"', 'risk = "lo"'));
  const typo = loadError(() => MappingTable.load([join(dir, 'three', '*.toml')]));
  t.equal(typo.message, `${join(dir, 'three', 'x.toml')}:6:1: rules[0].risk: expected one of "low", "medium", "high", "critical", got "lo" (string) (did you mean "low"?)`);
});

// -------------------------------------------------------------------------------------------------------

/** mulberry32: small, seeded, reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(rand: () => number, items: readonly T[]): T {
  const item = items[Math.floor(rand() * items.length)];
  if (item === undefined) throw new Error('empty list');
  return item;
}

/** A random pattern without consecutive `**`, or undefined (= no path). */
function randomPattern(rand: () => number, segments: readonly string[]): string | undefined {
  if (rand() < 0.15) return undefined;
  const depth = Math.floor(rand() * 4);
  const out: string[] = [];
  for (let i = 0; i < depth; i++) {
    const seg = pick(rand, segments);
    if (seg === '**' && out[out.length - 1] === '**') continue;
    out.push(seg);
  }
  return `/${out.join('/')}`;
}

function randomPath(rand: () => number, segments: readonly string[]): string {
  const depth = Math.floor(rand() * 5);
  const out: string[] = [];
  for (let i = 0; i < depth; i++) out.push(pick(rand, segments));
  const path = `/${out.join('/')}`;
  return depth > 0 && rand() < 0.2 ? `${path}/` : path;
}

function escapeRegExp(text: string): string {
  return text.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');
}

/** Naive, obviously-correct reference: recursive segment matching, a RegExp per segment glob. */
function referenceGlob(pattern: string, path: string): boolean {
  const strip = (p: string): string[] => {
    const trimmed = p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
    return trimmed === '/' ? [] : trimmed.slice(1).split('/');
  };
  const pat = strip(pattern);
  const segs = strip(path);
  const segMatch = (glob: string, seg: string): boolean => {
    if (glob === '*') return seg.length > 0;
    return new RegExp(`^${glob.split('*').map(escapeRegExp).join('.*')}$`).test(seg);
  };
  const m = (pi: number, si: number): boolean => {
    if (pi === pat.length) return si === segs.length;
    const glob = pat[pi] ?? '';
    if (glob === '**') return m(pi + 1, si) || (si < segs.length && m(pi, si + 1));
    return si < segs.length && segMatch(glob, segs[si] ?? '') && m(pi + 1, si + 1);
  };
  return m(0, 0);
}

interface RandomRule {
  method: string | undefined;
  host: string;
  path: string | undefined;
  risk: 'low' | 'medium' | 'high' | 'critical';
  order: number;
  line: number;
}

function referenceHostMatches(pattern: string, host: string): boolean {
  if (pattern === '*') return true;
  if (pattern.startsWith('*.')) return host.endsWith(pattern.slice(1)) && !/^[0-9.]+$/.test(host);
  return pattern === host;
}

/** The stated order as a tuple, compared lexicographically (bigger = more specific). */
function referenceKey(rule: RandomRule): number[] {
  const hostClass = rule.host === '*' ? 0 : rule.host.startsWith('*.') ? 1 : 2;
  const suffixLength = rule.host.startsWith('*.') ? rule.host.length - 2 : 0;
  const path = rule.path ?? '/**';
  const literal = path.replace(/\/\*\*(?=\/|$)/g, '').replace(/\*/g, '').length;
  const globstars = path.split('/').filter((s) => s === '**').length;
  const stars = path.split('/').filter((s) => s !== '**').join('').split('*').length - 1;
  const risk = ['low', 'medium', 'high', 'critical'].indexOf(rule.risk);
  return [hostClass, suffixLength, rule.method === undefined ? 0 : 1, literal, -globstars, -stars, risk, -rule.order];
}

function compareKeys(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

t.test('property: classify picks a matching rule and no matching rule is more specific', async (t) => {
  const rand = prng(0x5eed);
  const dir = t.testdir({});
  const hostPatterns = ['a.example.com', 'b.a.example.com', 'example.com', '*', '*.example.com', '*.a.example.com', '10.0.0.1'];
  const requestHosts = ['a.example.com', 'b.a.example.com', 'c.b.a.example.com', 'example.com', 'badexample.com', '10.0.0.1', 'other.org'];
  const requestMethods = ['GET', 'POST', 'DELETE'];
  const patternSegments = ['a', 'b', 'ab', '*', '**', 'a*', '*b'];
  const pathSegments = ['a', 'b', 'ab', 'ba', 'x'];
  const risks = ['low', 'medium', 'high', 'critical'] as const;
  const rounds = 300;
  let requests = 0;
  let classified = 0;
  let failures = 0;
  for (let round = 0; round < rounds && failures < 5; round++) {
    const count = 1 + Math.floor(rand() * 30);
    // Half the rounds crowd the rules onto two host patterns so that near-ties (same host and method,
    // equal literal length, different globs) are common and the later tie-breakers get exercised.
    const crowded = rand() < 0.5;
    const roundHosts = crowded ? [pick(rand, hostPatterns), pick(rand, hostPatterns)] : hostPatterns;
    const rules: RandomRule[] = [];
    const seen = new Set<string>();
    for (let i = 0; i < count; i++) {
      const method = rand() < (crowded ? 0.5 : 1 / 3) ? undefined : pick(rand, ['GET', 'POST']);
      const host = pick(rand, roundHosts);
      const path = randomPattern(rand, patternSegments);
      const key = `${method ?? ''} ${host} ${path ?? '/**'}`;
      if (seen.has(key)) continue; // duplicates are a config error, tested above
      seen.add(key);
      rules.push({ method, host, path, risk: pick(rand, risks), order: rules.length, line: 1 + 7 * rules.length });
    }
    const file = join(dir, `round${round}.toml`);
    writeFileSync(file, toml(rules.map((r) => ({ method: r.method, host: r.host, path: r.path, action_class: `r${r.order}`, risk: r.risk }))));
    const table = MappingTable.load([file]);
    for (let q = 0; q < 40; q++) {
      requests++;
      const method = pick(rand, requestMethods);
      const host = pick(rand, requestHosts);
      const path = randomPath(rand, pathSegments);
      const matching = rules.filter(
        (r) => (r.method === undefined || r.method === method) && referenceHostMatches(r.host, host) && referenceGlob(r.path ?? '/**', path),
      );
      const got: Classification | null = table.classify(method, host, path);
      const picked = got === null ? undefined : rules.find((r) => `round${round}.toml:${r.line}` === got.ruleId);
      let problem: string | undefined;
      if (matching.length === 0) {
        if (got !== null) problem = `expected no match, got ${got.ruleId}`;
      } else if (picked === undefined) {
        problem = `expected a match, got ${got === null ? 'null' : got.ruleId}`;
      } else if (!matching.includes(picked)) {
        problem = `picked r${picked.order}, which does not match`;
      } else {
        classified++;
        const better = matching.find((r) => compareKeys(referenceKey(r), referenceKey(picked)) > 0);
        if (better !== undefined) problem = `picked r${picked.order}, but r${better.order} is more specific`;
        else if (got?.actionClass !== `r${picked.order}` || got.risk !== picked.risk) problem = 'classification does not belong to the rule';
      }
      if (problem !== undefined) {
        failures++;
        t.fail(`round ${round}: ${method} ${host} ${path}: ${problem}`, { rules: toml(rules.map((r) => ({ ...r, action_class: `r${r.order}` }))) });
      }
    }
  }
  t.equal(failures, 0, `${rounds} random rule sets, ${requests} requests, ${classified} classified`);
  t.ok(classified > requests / 4, 'the random requests exercise matches, not just misses');
});

// -------------------------------------------------------------------------------------------------------

t.test('shipped mapping packs', async (t) => {
  const packs = fileURLToPath(new URL('../../../mappings/*.toml', import.meta.url));
  const table = MappingTable.load([packs]);
  t.same(
    table.files.map((f) => f.slice(f.lastIndexOf('/') + 1)),
    ['anthropic.toml', 'github.toml', 'openai.toml', 'slack.toml', 'stripe.toml'],
  );
  t.ok(table.ruleCount >= 40, `${table.ruleCount} rules`);

  const cases: Array<[method: string, host: string, rawPath: string, actionClass: string, risk: string, bodyFields?: string[]]> = [
    ['POST', 'api.openai.com', '/v1/chat/completions', 'llm.chat', 'low'],
    ['POST', 'api.openai.com', '/v1/files', 'llm.files.upload', 'medium'],
    ['POST', 'api.openai.com', '/v1/fine_tuning/jobs', 'llm.finetune', 'medium'],
    ['GET', 'api.openai.com', '/v1/fine_tuning/jobs/ftjob-1/events', 'llm.finetune.read', 'low'],
    ['POST', 'api.openai.com', '/v1/chat/../organization/admin_api_keys', 'llm.admin', 'critical'],
    ['POST', 'api.openai.com', '/v1/%6Frganization/invites', 'llm.admin', 'critical'],
    ['POST', 'api.anthropic.com', '/v1/messages', 'llm.chat', 'low'],
    ['POST', 'api.anthropic.com', '/v1/messages/batches', 'llm.batch', 'medium'],
    ['GET', 'api.github.com', '/repos/acme/app/pulls/7', 'github.read', 'low'],
    ['GET', 'api.github.com', '/repos/acme/app', 'github.read', 'low'],
    ['POST', 'api.github.com', '/repos/acme/app/issues/7/comments', 'github.comment.create', 'medium'],
    ['PUT', 'api.github.com', '/repos/acme/app/pulls/7/merge', 'github.pr.merge', 'high'],
    ['DELETE', 'api.github.com', '/repos/acme/app', 'github.repo.delete', 'critical'],
    ['DELETE', 'api.github.com', '/repos/acme/app/', 'github.repo.delete', 'critical'],
    ['DELETE', 'api.github.com', '/repos/acme/app/issues/../', 'github.repo.delete', 'critical'],
    ['POST', 'api.github.com', '/repos/acme/app/hooks', 'github.repo.admin', 'critical'],
    ['PUT', 'api.github.com', '/orgs/acme/memberships/mallory', 'github.org.admin', 'critical'],
    ['GET', 'api.github.com', '/orgs/acme/members', 'github.read', 'low'],
    ['POST', 'api.stripe.com', '/v1/refunds', 'payments.refund', 'high', ['amount', 'currency']],
    ['POST', 'api.stripe.com', '/v1/payment_intents', 'payments.intent.create', 'high', ['amount', 'currency']],
    ['POST', 'api.stripe.com', '/v1/charges', 'payments.charge', 'high', ['amount', 'currency']],
    ['POST', 'api.stripe.com', '/v1/charges/ch_123/refund', 'payments.refund', 'high', ['amount']],
    ['POST', 'api.stripe.com', '/v1/charges/ch_123/refunds', 'payments.refund', 'high', ['amount', 'currency']],
    ['GET', 'api.stripe.com', '/v1/charges/ch_123', 'payments.read', 'low'],
    ['DELETE', 'api.stripe.com', '/v1/customers/cus_123', 'payments.customer.delete', 'high'],
    ['POST', 'api.stripe.com', '/v1/payouts', 'payments.payout', 'critical', ['amount', 'currency']],
    ['POST', 'api.stripe.com', '/v1/some_new_endpoint', 'payments.write', 'high'],
    ['POST', 'slack.com', '/api/chat.postMessage', 'slack.post', 'medium'],
    ['GET', 'slack.com', '/api/conversations.history', 'slack.read', 'low'],
    ['POST', 'slack.com', '/api/conversations.invite', 'slack.conversations.write', 'medium'],
    ['POST', 'slack.com', '/api/files.getUploadURLExternal', 'slack.files.upload', 'medium'],
    ['POST', 'slack.com', '/api/admin.users.remove', 'slack.admin', 'critical'],
  ];
  for (const [method, host, rawPath, actionClass, risk, bodyFields] of cases) {
    const got = table.classify(method, host, normalizePath(rawPath));
    t.match(got, { actionClass, risk, bodyFields: bodyFields ?? [] }, `${method} ${host} ${rawPath}`);
    t.match(got?.ruleId, /^[a-z]+\.toml:\d+$/);
  }
  t.equal(table.classify('GET', 'example.com', '/'), null, 'unknown hosts stay unclassified');
  t.equal(table.classify('GET', 'evil-api.openai.com', '/v1/models'), null, 'no wildcard hosts in the packs');

  // Cost of classify with the shipped packs: informational, with a generous bound against regressions.
  const requests = cases.map(([method, host, rawPath]) => [method, host, normalizePath(rawPath)] as const);
  const iterations = 20_000;
  let sink = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) {
    for (const [method, host, path] of requests) sink += table.classify(method, host, path) === null ? 0 : 1;
  }
  const perCall = Number(process.hrtime.bigint() - start) / (iterations * requests.length);
  t.comment(`classify: ${perCall.toFixed(0)} ns per call over ${table.ruleCount} rules`);
  t.ok(sink > 0);
  t.ok(perCall < 20_000, 'classify stays in the microsecond range');
});
