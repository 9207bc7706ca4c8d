import type { LookupAddress, LookupAllOptions } from 'node:dns';
import { systemError } from '../../core/errors.js';

/**
 * Resolving a destination name once, through the system resolver or one a test injects. A failure is
 * what Node's own `dns.lookup` gives (a plain Error with the resolver's `code`), not a FirmaError: the
 * destination is unreachable, not forbidden, and the connector answers 502 with that code
 * (docs/errors.md). FirmaError codes are ours alone (FIRMA_*).
 */

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
        reject(lookupError(code, name, `could not resolve ${name}: ${code}`, err));
      } else if (!Array.isArray(addresses) || addresses.length === 0) {
        reject(lookupError('ENOTFOUND', name, `could not resolve ${name}: no addresses`));
      } else {
        resolve(addresses);
      }
    });
  });
}

/** A resolver failure shaped like `dns.lookup`'s: `code` (ENOTFOUND, EAI_AGAIN, ...), `syscall`, `hostname`. */
export function lookupError(code: string, hostname: string, message: string, cause?: unknown): Error & { code: string; syscall: string; hostname: string } {
  return systemError(code, 'getaddrinfo', message, { hostname }, cause);
}
