import t from 'tap';
import { normalizePath } from '../../../src/normalize/path.js';

t.test('normalisation tricks cannot dodge a rule', async (t) => {
  const cases: Array<[string, string]> = [
    // already normal (fast path)
    ['/', '/'],
    ['/v1/chat/completions', '/v1/chat/completions'],
    ['/v1/x/', '/v1/x/'],
    ['/a.b/..c/c../...', '/a.b/..c/c../...'], // only exact '.' and '..' segments are special
    // missing leading slash
    ['', '/'],
    ['v1/x', '/v1/x'],
    ['*', '/*'],
    // dot segments
    ['/v1/../admin', '/admin'],
    ['/v1/./x', '/v1/x'],
    ['/a/b/../../../c', '/c'],
    ['/../x', '/x'],
    ['/..', '/'],
    ['/.', '/'],
    ['/a/b/.', '/a/b/'],
    ['/a/b/..', '/a/'],
    ['/a/./b/./', '/a/b/'],
    // duplicate slashes (collapsed before dot segments are resolved)
    ['//v1//x', '/v1/x'],
    ['///', '/'],
    ['/a//', '/a/'],
    ['/a//../b', '/b'],
    // percent-decoding of unreserved characters only
    ['/%76%31/x', '/v1/x'],
    ['/%7euser', '/~user'],
    ['/%41%5a%61%7A%30%39%2D%2E%5F%7E', '/AZaz09-._~'],
    ['/a%20b', '/a%20b'],
    ['/caf%c3%a9', '/caf%C3%A9'],
    ['/a%3fb', '/a%3Fb'],
    // encoded dots are dot segments
    ['/v1/%2e%2e/admin', '/admin'],
    ['/v1/%2E%2E/admin', '/admin'],
    ['/v1/.%2e/admin', '/admin'],
    ['/v1/%2e./admin', '/admin'],
    ['/v1/%2e/x', '/v1/x'],
    ['/v1/%2e%2e%2fadmin', '/v1/..%2Fadmin'], // %2F is not a separator, so this is one (odd) segment
    // encoded slashes stay encoded: never a separator for the rules
    ['/v1/%2Fx', '/v1/%2Fx'],
    ['/v1/%2fx', '/v1/%2Fx'],
    ['/v1%2F..%2Fadmin', '/v1%2F..%2Fadmin'],
    // stray percent signs are literal
    ['/a%zz', '/a%25zz'],
    ['/a%2', '/a%252'],
    ['/a%', '/a%25'],
    ['/a%%341', '/a%2541'],
    ['/a%25', '/a%25'],
    ['/a%252e', '/a%252e'], // a literal "%2e", not a dot
  ];
  for (const [input, expected] of cases) {
    t.equal(normalizePath(input), expected, JSON.stringify(input));
    t.equal(normalizePath(expected), expected, `normal form is a fixed point: ${JSON.stringify(expected)}`);
  }
});

t.test('already-normal paths are returned as is', async (t) => {
  const p = '/repos/acme/app/pulls/12/merge';
  t.equal(normalizePath(p), p);
});

/** mulberry32: small, seeded, good enough for test inputs. */
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

t.test('property: output is normal and normalisation is idempotent', async (t) => {
  const rand = prng(0xf1e2);
  const alphabet = ['/', '/', '.', '.', '%', '2', 'e', 'E', 'f', 'F', 'a', '4', '1', '7', '~', 'Z'];
  let failures = 0;
  for (let round = 0; round < 5000; round++) {
    const len = Math.floor(rand() * 16);
    let input = '';
    for (let i = 0; i < len; i++) input += alphabet[Math.floor(rand() * alphabet.length)];
    const once = normalizePath(input);
    const twice = normalizePath(once);
    const segments = once.split('/').slice(1, once.endsWith('/') ? -1 : undefined);
    const ok =
      once === twice &&
      once.startsWith('/') &&
      !once.includes('//') &&
      !segments.some((s) => s === '.' || s === '..') &&
      !/%(?![0-9A-F]{2})/.test(once) &&
      !/%(2[DE]|3[0-9]|[46][1-9A-F]|[57][0-9A]|5F|7E)/.test(once);
    if (!ok) {
      failures++;
      t.fail(`${JSON.stringify(input)} → ${JSON.stringify(once)} → ${JSON.stringify(twice)}`);
      if (failures > 5) break;
    }
  }
  t.equal(failures, 0);
});
