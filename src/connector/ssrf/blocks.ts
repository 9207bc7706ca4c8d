import { addressBytes } from '../../core/cidr.js';

/**
 * The address blocks the SSRF guard knows (docs/configuration.md, allow_private): built once at load,
 * so a check is a short linear scan with integer/byte compares.
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

export interface V4Block {
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

export const METADATA_NOTE = 'cloud instance metadata service';

// Order matters: exact metadata addresses before the blocks that contain them.
export const V4_BLOCKS: readonly V4Block[] = [
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

export const PUBLIC: AddressClassification = { class: 'public', note: 'globally routable' };

export interface V6Block {
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

export const V6_UNSPECIFIED = v6Block('::/128', 'unspecified', 'RFC 4291');
export const V6_LOOPBACK = v6Block('::1/128', 'loopback', 'RFC 4291');

// Checked after the embedded-IPv4 forms; metadata first.
export const V6_BLOCKS: readonly V6Block[] = [
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
export const V6_GLOBAL_UNICAST = v6Block('2000::/3', 'public', 'globally routable');
export const V6_UNALLOCATED: AddressClassification = { class: 'reserved', note: 'outside IPv6 global unicast 2000::/3' };

export const NAT64_WKP = v6Block('64:ff9b::/96', 'public', 'NAT64 well-known prefix, RFC 6052');
export const NAT64_LOCAL = v6Block('64:ff9b:1::/48', 'public', 'NAT64 local-use prefix, RFC 8215');
export const SIX_TO_FOUR = v6Block('2002::/16', 'public', '6to4, RFC 3056');
export const TEREDO = v6Block('2001::/32', 'public', 'Teredo, RFC 4380');

export const METADATA_V4 = new Set(V4_BLOCKS.filter((b) => b.result.class === 'metadata' && b.mask === 0xffffffff).map((b) => b.base));

/** Dotted quad → unsigned 32-bit integer; the caller has checked `isIP(...) === 4`. */
export function parseV4(address: string): number {
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
