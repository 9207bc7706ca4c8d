import { lookup as systemLookup } from 'node:dns';
import { isIP } from 'node:net';
import { FirmaError } from '../../core/errors.js';
import { addressBytes, inBlock, type CidrRule } from '../../core/cidr.js';
import type { AddressClass } from './blocks.js';
import { describeAddress } from './classify.js';
import { ownListener, socketBytes } from './own-listener.js';
import { lookupError, resolveAll, type LookupFunction } from './resolve.js';

/**
 * The SSRF guard: every upstream connection is dialled to an address this guard vetted, never to a
 * name (see dial.ts). Addresses are judged by the block they are in (blocks.ts, classify.ts).
 */

export type DenialReason = 'private_address' | 'reserved_address' | 'metadata_address' | 'loop' | 'unresolvable';

/** The guard refused a destination: a policy outcome (403), unlike a DNS or TCP failure (502). */
export class DestinationDeniedError extends FirmaError {
  readonly reason: DenialReason;
  /** The host as the agent asked for it. */
  readonly host: string;
  /** The address that was refused (one of the resolver's answers, or the literal). */
  readonly address: string;
  readonly port: number;
  /** Null when the resolver answered something that is not an IP address. */
  readonly addressClass: AddressClass | null;

  constructor(
    init: { reason: DenialReason; host: string; address: string; port: number; addressClass: AddressClass | null },
    message: string,
  ) {
    super('FIRMA_DESTINATION_DENIED', message);
    this.name = 'DestinationDeniedError';
    this.reason = init.reason;
    this.host = init.host;
    this.address = init.address;
    this.port = init.port;
    this.addressClass = init.addressClass;
  }
}

/** What to dial: the one address the guard approved for this connection. */
export interface VettedAddress {
  readonly address: string;
  readonly family: 4 | 6;
  readonly class: AddressClass;
}

export interface EgressGuardOptions {
  /** `[sidecar.connector] allow_private`: non-public blocks (optionally one port) let through. */
  readonly allowPrivate: readonly CidrRule[];
  /** The sidecar's bound listeners, read at every check (they are bound after the guard exists). */
  readonly ownListeners: () => ReadonlyArray<{ readonly address: string; readonly port: number }>;
  /** Default `dns.lookup` (the system resolver, /etc/hosts included), as every other client would use. */
  readonly lookup?: LookupFunction;
}

const DENY_REASON: Readonly<Record<AddressClass, DenialReason>> = {
  public: 'private_address',
  loopback: 'private_address',
  private: 'private_address',
  cgnat: 'private_address',
  link_local: 'private_address',
  unspecified: 'private_address',
  metadata: 'metadata_address',
  multicast: 'reserved_address',
  broadcast: 'reserved_address',
  reserved: 'reserved_address',
};

const ALLOW_HINT = 'add it to [sidecar.connector] allow_private to allow';

/**
 * Resolves a destination once and vets every answer.
 *
 * Policy for names with several addresses: if ANY answer is refused, the whole name is refused (naming
 * the offending address), rather than quietly dialling the first acceptable one. Both are safe against
 * SSRF because only a vetted address is ever dialled; refusing is deterministic (it does not depend on
 * resolver order or on which answer a retry happens to pick), fails closed as the rest of the sidecar
 * does, and a name that mixes public and internal answers is either misconfigured or a rebinding
 * attempt, which an operator should see. A legitimate mixed name is admitted by listing its internal
 * address in allow_private. When all answers pass, the first (resolver order) is dialled.
 */
export class EgressGuard {
  readonly #allow: readonly CidrRule[];
  readonly #ownListeners: EgressGuardOptions['ownListeners'];
  readonly #lookup: LookupFunction;

  constructor(opts: EgressGuardOptions) {
    this.#allow = [...opts.allowPrivate];
    this.#ownListeners = opts.ownListeners;
    this.#lookup = opts.lookup ?? systemLookup;
  }

  /**
   * The address to connect to for `host:port`, or a `DestinationDeniedError`. IP literals (bracketed or
   * not) skip DNS. A resolver failure is an error shaped like `dns.lookup`'s, with the DNS code
   * (`ENOTFOUND`, `EAI_AGAIN`, ...; see resolve.ts): the destination is unreachable, not forbidden.
   */
  async vet(host: string, port: number): Promise<VettedAddress> {
    const name = host.length > 1 && host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
    const literal = isIP(name) !== 0;
    const answers = literal ? [{ address: name, family: isIP(name) }] : await resolveAll(this.#lookup, name);
    let chosen: VettedAddress | null = null;
    for (const a of answers) {
      const vetted = this.#check(name, literal, a.address, port);
      chosen ??= vetted;
    }
    if (chosen === null) throw lookupError('ENOTFOUND', name, `${name} did not resolve to any address`);
    return chosen;
  }

  #check(host: string, literal: boolean, address: string, port: number): VettedAddress {
    const subject = literal ? address : `${host} resolved to ${address}`;
    // The resolver is injectable: its answers are checked for shape, not trusted.
    const described = typeof address === 'string' ? describeAddress(address) : null;
    const bytes = described === null ? null : socketBytes(address);
    if (described === null || bytes === null) {
      throw new DestinationDeniedError(
        { reason: 'unresolvable', host, address: String(address), port, addressClass: null },
        `${host} resolved to ${JSON.stringify(address)}, which is not an IP address`,
      );
    }
    const klass = described.class;
    const classText = described.via === undefined
      ? `${klass}, ${described.note}`
      : `${klass}, ${described.note}, via ${described.via.form} ${described.via.ipv4}`;
    const deny = (reason: DenialReason, tail: string): DestinationDeniedError =>
      new DestinationDeniedError({ reason, host, address, port, addressClass: klass }, `${subject} (${classText}); ${tail}`);

    // Metadata first: no allow rule, however broad, reaches it.
    if (klass === 'metadata') {
      throw deny('metadata_address', 'cloud metadata endpoints are never allowed, not even by allow_private');
    }
    const listener = ownListener(this.#ownListeners(), bytes, port);
    if (listener !== null) {
      throw deny('loop', `port ${port} there is this sidecar's own listener ${listener}; refusing to connect to itself`);
    }
    if (klass !== 'public' && !this.#allowed(address, port)) {
      const example = isIP(address) === 4 ? `"${address}/32:${port}"` : `"[${address}/128]:${port}"`;
      throw deny(DENY_REASON[klass], `${ALLOW_HINT} (e.g. ${example})`);
    }
    return { address, family: isIP(address) === 4 ? 4 : 6, class: klass };
  }

  /**
   * A rule matches the address as resolved, in its own family only: `127.0.0.1/32` does not admit
   * `::ffff:127.0.0.1` or `64:ff9b::7f00:1`. Least privilege: the embedded forms lead through other
   * paths (translators, dual-stack sockets) and an operator who wants them says so with an IPv6 rule.
   */
  #allowed(address: string, port: number): boolean {
    if (this.#allow.length === 0) return false;
    const bytes = addressBytes(address);
    if (bytes === null) return false;
    for (const rule of this.#allow) {
      if (rule.port !== null && rule.port !== port) continue;
      if (inBlock(rule.network, rule.prefix, bytes)) return true;
    }
    return false;
  }
}
