import { lookup as systemLookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { FirmaError } from '../core/errors.js';
import { addressBytes, inBlock, type CidrRule } from '../core/cidr.js';

/**
 * The SSRF guard: every upstream connection is dialled to an address this module vetted, never to a
 * name (see dial.ts). Classification is by the address actually connected to, so odd spellings
 * (`0x7f.1`, `2130706433`, `::ffff:7f00:1`) cannot slip past: the resolver or the IPv6 parser turns
 * them into bytes first.
 */

export type AddressClass =
  | 'public'
  | 'loopback'
  | 'private'
  | 'cgnat'
  | 'link_local'
  | 'metadata'
  | 'unspecified'
  | 'multicast'
  | 'broadcast'
  | 'reserved';

/** IPv6 forms that carry an IPv4 address; the IPv4 one decides the class. */
export type EmbeddedIPv4Form = 'ipv4-mapped' | 'ipv4-translated' | 'ipv4-compatible' | 'nat64' | '6to4' | 'teredo';

export interface AddressClassification {
  readonly class: AddressClass;
  /** The block, for humans: "RFC 1918", "cloud instance metadata service". */
  readonly note: string;
  /** Set when an IPv6 address was classified by the IPv4 address it embeds. */
  readonly via?: { readonly form: EmbeddedIPv4Form; readonly ipv4: string };
}

/** Callback-style resolver with the shape of `dns.lookup(host, { all: true }, cb)`; tests inject another. */
export type LookupFunction = (
  hostname: string,
  options: LookupAllOptions,
  callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

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

// ---------------------------------------------------------------------------------------------------
// Classification tables, built once at load; a check is a short linear scan with integer/byte compares.

interface V4Block {
  readonly base: number;
  readonly mask: number;
  readonly result: AddressClassification;
}

function v4Block(cidr: string, klass: AddressClass, note: string): V4Block {
  const [addr = '', len = '32'] = cidr.split('/');
  const prefix = Number(len);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { base: (parseV4(addr) & mask) >>> 0, mask, result: { class: klass, note } };
}

const METADATA_NOTE = 'cloud instance metadata service';

// Order matters: exact metadata addresses before the blocks that contain them.
const V4_BLOCKS: readonly V4Block[] = [
  v4Block('169.254.169.254/32', 'metadata', `${METADATA_NOTE} (AWS, GCP, Azure, OCI, DigitalOcean, ...)`),
  v4Block('169.254.170.2/32', 'metadata', 'AWS ECS task metadata and credentials endpoint'),
  v4Block('169.254.170.23/32', 'metadata', 'AWS EKS Pod Identity credentials endpoint'),
  v4Block('100.100.100.200/32', 'metadata', `${METADATA_NOTE} (Alibaba Cloud)`),
  // Azure WireServer: public address space, but only reachable from inside an Azure VM, and it serves
  // VM configuration and extension secrets.
  v4Block('168.63.129.16/32', 'metadata', 'Azure WireServer'),
  v4Block('255.255.255.255/32', 'broadcast', 'limited broadcast'),
  v4Block('0.0.0.0/8', 'unspecified', '"this network", RFC 1122'),
  v4Block('10.0.0.0/8', 'private', 'RFC 1918'),
  v4Block('100.64.0.0/10', 'cgnat', 'shared address space, RFC 6598'),
  v4Block('127.0.0.0/8', 'loopback', 'RFC 1122'),
  v4Block('169.254.0.0/16', 'link_local', 'RFC 3927'),
  v4Block('172.16.0.0/12', 'private', 'RFC 1918'),
  v4Block('192.0.0.0/24', 'reserved', 'IETF protocol assignments, RFC 6890'),
  v4Block('192.0.2.0/24', 'reserved', 'documentation, RFC 5737'),
  v4Block('192.88.99.0/24', 'reserved', '6to4 relay anycast, RFC 7526'),
  v4Block('192.168.0.0/16', 'private', 'RFC 1918'),
  v4Block('198.18.0.0/15', 'reserved', 'benchmarking, RFC 2544'),
  v4Block('198.51.100.0/24', 'reserved', 'documentation, RFC 5737'),
  v4Block('203.0.113.0/24', 'reserved', 'documentation, RFC 5737'),
  v4Block('224.0.0.0/4', 'multicast', 'RFC 5771'),
  v4Block('240.0.0.0/4', 'reserved', 'RFC 1112'),
];

const PUBLIC: AddressClassification = { class: 'public', note: 'globally routable' };

interface V6Block {
  readonly network: Buffer;
  readonly prefix: number;
  readonly result: AddressClassification;
}

function v6Block(cidr: string, klass: AddressClass, note: string): V6Block {
  const [addr = '', len = '128'] = cidr.split('/');
  const network = addressBytes(addr);
  if (network === null || network.length !== 16) throw new Error(`bad built-in IPv6 block ${cidr}`);
  return { network, prefix: Number(len), result: { class: klass, note } };
}

const V6_UNSPECIFIED = v6Block('::/128', 'unspecified', 'RFC 4291');
const V6_LOOPBACK = v6Block('::1/128', 'loopback', 'RFC 4291');

// Checked after the embedded-IPv4 forms; metadata first.
const V6_BLOCKS: readonly V6Block[] = [
  v6Block('fd00:ec2::254/128', 'metadata', `${METADATA_NOTE} (AWS, IPv6)`),
  v6Block('fd00:ec2::23/128', 'metadata', 'AWS EKS Pod Identity credentials endpoint (IPv6)'),
  v6Block('fd20:ce::254/128', 'metadata', `${METADATA_NOTE} (GCP, IPv6)`),
  v6Block('fd00:c1::a9fe:a9fe/128', 'metadata', `${METADATA_NOTE} (OCI, IPv6)`),
  v6Block('100::/64', 'reserved', 'discard-only, RFC 6666'),
  v6Block('2001:2::/48', 'reserved', 'benchmarking, RFC 5180'),
  v6Block('2001:10::/28', 'reserved', 'ORCHID, RFC 4843'),
  v6Block('2001:20::/28', 'reserved', 'ORCHIDv2, RFC 7343'),
  v6Block('2001:db8::/32', 'reserved', 'documentation, RFC 3849'),
  v6Block('3fff::/20', 'reserved', 'documentation, RFC 9637'),
  v6Block('fc00::/7', 'private', 'unique local, RFC 4193'),
  v6Block('fe80::/10', 'link_local', 'RFC 4291'),
  v6Block('fec0::/10', 'private', 'site-local, RFC 3879'),
  v6Block('ff00::/8', 'multicast', 'RFC 4291'),
];

// Only 2000::/3 is allocated for global unicast; anything else left over is not a place to dial.
const V6_GLOBAL_UNICAST = v6Block('2000::/3', 'public', 'globally routable');
const V6_UNALLOCATED: AddressClassification = { class: 'reserved', note: 'outside IPv6 global unicast 2000::/3' };

const NAT64_WKP = v6Block('64:ff9b::/96', 'public', 'NAT64 well-known prefix, RFC 6052');
const NAT64_LOCAL = v6Block('64:ff9b:1::/48', 'public', 'NAT64 local-use prefix, RFC 8215');
const SIX_TO_FOUR = v6Block('2002::/16', 'public', '6to4, RFC 3056');
const TEREDO = v6Block('2001::/32', 'public', 'Teredo, RFC 4380');

const METADATA_V4 = new Set(V4_BLOCKS.filter((b) => b.result.class === 'metadata' && b.mask === 0xffffffff).map((b) => b.base));

// ---------------------------------------------------------------------------------------------------

/** Dotted quad → unsigned 32-bit integer; the caller has checked `isIP(...) === 4`. */
function parseV4(address: string): number {
  let value = 0;
  let octet = 0;
  for (let i = 0; i < address.length; i++) {
    const c = address.charCodeAt(i);
    if (c === 46 /* . */) {
      value = (value * 256 + octet) >>> 0;
      octet = 0;
    } else {
      octet = octet * 10 + (c - 48);
    }
  }
  return (value * 256 + octet) >>> 0;
}

function v4ToString(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

function classifyV4(n: number): AddressClassification {
  for (const b of V4_BLOCKS) if (((n & b.mask) >>> 0) === b.base) return b.result;
  return PUBLIC;
}

function u32(bytes: Buffer, a: number, b: number, c: number, d: number): number {
  return (((bytes[a] as number) << 24) | ((bytes[b] as number) << 16) | ((bytes[c] as number) << 8) | (bytes[d] as number)) >>> 0;
}

function zeroUpTo(bytes: Buffer, end: number): boolean {
  for (let i = 0; i < end; i++) if (bytes[i] !== 0) return false;
  return true;
}

interface Embedded {
  readonly form: EmbeddedIPv4Form;
  readonly v4: number;
  /** Another RFC 6052 reading of the same address names a metadata IPv4 (see the NAT64 local-use case). */
  readonly metadataReading: boolean;
}

/** The IPv4 address a 16-byte IPv6 address carries, if it is one of the embedding forms. */
function embeddedV4(b: Buffer): Embedded | null {
  const last = u32(b, 12, 13, 14, 15);
  if (zeroUpTo(b, 10) && b[10] === 0xff && b[11] === 0xff) return { form: 'ipv4-mapped', v4: last, metadataReading: false };
  if (zeroUpTo(b, 8) && b[8] === 0xff && b[9] === 0xff && b[10] === 0 && b[11] === 0) {
    return { form: 'ipv4-translated', v4: last, metadataReading: false };
  }
  // `::` and `::1` are decided before this is called, so what is left of ::/96 is ::a.b.c.d.
  if (zeroUpTo(b, 12)) return { form: 'ipv4-compatible', v4: last, metadataReading: false };
  if (inBlock(NAT64_WKP.network, NAT64_WKP.prefix, b)) return { form: 'nat64', v4: last, metadataReading: false };
  if (inBlock(NAT64_LOCAL.network, NAT64_LOCAL.prefix, b)) {
    // A local-use NAT64 prefix may be any of /48, /56, /64 or /96 (RFC 6052 §2.2), which place the IPv4
    // differently, and only the network knows which. The class comes from the common /96 reading; a
    // metadata address under any reading is still refused (random bytes essentially never collide).
    const readings = [u32(b, 6, 7, 9, 10), u32(b, 7, 9, 10, 11), u32(b, 9, 10, 11, 12)];
    return { form: 'nat64', v4: last, metadataReading: readings.some((r) => METADATA_V4.has(r)) };
  }
  if (inBlock(SIX_TO_FOUR.network, SIX_TO_FOUR.prefix, b)) return { form: '6to4', v4: u32(b, 2, 3, 4, 5), metadataReading: false };
  // Teredo carries the client's IPv4, obfuscated by inverting every bit (RFC 4380 §4).
  if (inBlock(TEREDO.network, TEREDO.prefix, b)) return { form: 'teredo', v4: (last ^ 0xffffffff) >>> 0, metadataReading: false };
  return null;
}

function classifyV6(b: Buffer): AddressClassification {
  if (inBlock(V6_UNSPECIFIED.network, 128, b)) return V6_UNSPECIFIED.result;
  if (inBlock(V6_LOOPBACK.network, 128, b)) return V6_LOOPBACK.result;
  const e = embeddedV4(b);
  if (e !== null) {
    const ipv4 = v4ToString(e.v4);
    const inner = classifyV4(e.v4);
    if (e.metadataReading && inner.class !== 'metadata') {
      return { class: 'metadata', note: METADATA_NOTE, via: { form: e.form, ipv4 } };
    }
    return { class: inner.class, note: inner.note, via: { form: e.form, ipv4 } };
  }
  for (const blk of V6_BLOCKS) if (inBlock(blk.network, blk.prefix, b)) return blk.result;
  return inBlock(V6_GLOBAL_UNICAST.network, V6_GLOBAL_UNICAST.prefix, b) ? PUBLIC : V6_UNALLOCATED;
}

/** Class, note and (for IPv6 embedding IPv4) the deciding IPv4 address; null when not an IP literal. */
export function describeAddress(address: string): AddressClassification | null {
  const family = isIP(address);
  if (family === 4) return classifyV4(parseV4(address));
  if (family !== 6) return null;
  const bytes = addressBytes(address);
  return bytes === null ? null : classifyV6(bytes);
}

/** The class of a resolved address. Throws `FIRMA_INVALID_ADDRESS` for anything but an IP literal. */
export function classifyAddress(address: string): AddressClass {
  const c = describeAddress(address);
  if (c === null) throw new FirmaError('FIRMA_INVALID_ADDRESS', `${JSON.stringify(address)} is not an IP address`);
  return c.class;
}

// ---------------------------------------------------------------------------------------------------

/**
 * Bytes as a socket sees them: an IPv4-mapped IPv6 address is the IPv4 address on a dual-stack socket,
 * so a listener on 127.0.0.1 and a destination ::ffff:127.0.0.1 are the same endpoint. (Other embedding
 * forms go to a translator, not to this host, so they are left alone here.)
 */
function socketBytes(address: string): Buffer | null {
  const bytes = addressBytes(address);
  if (bytes === null || bytes.length === 4) return bytes;
  if (zeroUpTo(bytes, 10) && bytes[10] === 0xff && bytes[11] === 0xff) return bytes.subarray(12);
  return bytes;
}

function isUnspecified(b: Buffer): boolean {
  return b.length === 4 ? b[0] === 0 : zeroUpTo(b, 16);
}

function isLoopback(b: Buffer): boolean {
  return b.length === 4 ? b[0] === 127 : zeroUpTo(b, 15) && b[15] === 1;
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
   * not) skip DNS. A resolver failure is a `FirmaError` whose code is the DNS code (`ENOTFOUND`,
   * `EAI_AGAIN`, ...): the destination is unreachable, not forbidden.
   */
  async vet(host: string, port: number): Promise<VettedAddress> {
    const name = host.length > 1 && host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
    const literal = isIP(name) !== 0;
    const answers = literal ? [{ address: name, family: isIP(name) }] : await this.#resolve(name);
    let chosen: VettedAddress | null = null;
    for (const a of answers) {
      const vetted = this.#check(name, literal, a.address, port);
      chosen ??= vetted;
    }
    if (chosen === null) throw new FirmaError('ENOTFOUND', `${name} did not resolve to any address`);
    return chosen;
  }

  #resolve(name: string): Promise<readonly LookupAddress[]> {
    return new Promise((resolve, reject) => {
      this.#lookup(name, { all: true }, (err, addresses) => {
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
    const listener = this.#ownListener(bytes, port);
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

  /**
   * The listener `address:port` would reach, as "host:port", or null. A wildcard listener (0.0.0.0 or
   * ::) answers on every local address; a destination of 0.0.0.0 or :: is itself this host.
   */
  #ownListener(dest: Buffer, port: number): string | null {
    let local: Buffer[] | null = null;
    for (const l of this.#ownListeners()) {
      if (l.port !== port) continue;
      const lb = socketBytes(l.address);
      if (lb === null) continue;
      const text = isIP(l.address) === 6 ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`;
      if (lb.equals(dest) || isUnspecified(dest)) return text;
      if (!isUnspecified(lb)) continue;
      if (isLoopback(dest)) return text;
      // Interface addresses change at runtime (DHCP, VPN), so they are read now, and only in this rare case.
      local ??= localAddresses();
      if (local.some((a) => a.equals(dest))) return text;
    }
    return null;
  }
}

function localAddresses(): Buffer[] {
  const out: Buffer[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) {
      const b = socketBytes(info.address);
      if (b !== null) out.push(b);
    }
  }
  return out;
}
