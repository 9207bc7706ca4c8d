import type { LookupAddress, LookupAllOptions } from 'node:dns';
import { FirmaError } from '../../core/errors.js';

/** Resolving a destination name once, through the system resolver or one a test injects. */

/** Callback-style resolver with the shape of `dns.lookup(host, { all: true }, cb)`; tests inject another. */
export type LookupFunction = (
  hostname: string,
  options: LookupAllOptions,
  callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

export function resolveAll(lookup: LookupFunction, name: string): Promise<readonly LookupAddress[]> {
  return new Promise((resolve, reject) => {
    lookup(name, { all: true }, (err, addresses) => {
      if (err !== null) {
        const code = typeof err.code === 'string' && err.code !== '' ? err.code : 'ENOTFOUND';
        reject(new FirmaError(code, `could not resolve ${name}: ${code}`, { cause: err }));
      } else if (!Array.isArray(addresses) || addresses.length === 0) {
        reject(new FirmaError('ENOTFOUND', `could not resolve ${name}: no addresses`));
      } else {
        resolve(addresses);
      }
    });
  });
}
