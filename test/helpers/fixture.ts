/** The hooks of a tap test (or the root `t`) that a fixture registers itself with. */
export interface FixtureHooks {
  before(fn: () => Promise<void>): void;
  teardown(fn: () => Promise<void> | void): void;
}

/**
 * A value shared by the subtests of one file, made in `t.before` and released in `t.teardown`: the one
 * place that start/stop pairing lives, instead of a `let` and two hooks in every file. The value is
 * usable from the first subtest on; reading it earlier is a mistake in the test and throws.
 */
export function fixture<T extends object>(t: FixtureHooks, start: () => Promise<T>, stop: (value: T) => Promise<void> | void): T {
  let value: T | null = null;
  t.before(async () => {
    value = await start();
  });
  t.teardown(async () => {
    if (value !== null) await stop(value);
  });
  return new Proxy({} as T, {
    get(_target, key) {
      if (value === null) throw new Error(`fixture read (${String(key)}) before t.before ran`);
      const v: unknown = Reflect.get(value, key, value);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(value) : v;
    },
  });
}
