import fs from 'node:fs';
import type t from 'tap';
import { FirmaError } from '../../src/core/errors.js';

/** A tap test object, as a helper receives it. */
export type Test = Parameters<Parameters<typeof t.test>[0]>[0];

/** A file's permission bits (0o600 and the like). */
export function modeOf(p: string): number {
  return fs.statSync(p).mode & 0o777;
}

/** `fn` throws a FirmaError with this code whose message has each of `msgIncludes`; returns the message. */
export function expectCode(t: Test, fn: () => unknown, code: string, msgIncludes: string[] = []): string {
  try {
    fn();
  } catch (err) {
    return checkFirmaError(t, err, code, msgIncludes);
  }
  t.fail(`expected ${code}`);
  return '';
}

/** As `expectCode`, for a promise. */
export async function expectCodeAsync(t: Test, fn: () => Promise<unknown>, code: string, msgIncludes: string[] = []): Promise<string> {
  try {
    await fn();
  } catch (err) {
    return checkFirmaError(t, err, code, msgIncludes);
  }
  t.fail(`expected ${code}`);
  return '';
}

function checkFirmaError(t: Test, err: unknown, code: string, msgIncludes: string[]): string {
  t.type(err, FirmaError);
  t.equal((err as FirmaError).code, code, `code ${code}`);
  for (const s of msgIncludes) t.match((err as Error).message, s);
  return (err as Error).message;
}
