import { isIP } from 'node:net';
import { FirmaError } from '../../core/errors.js';
import { addressBytes, inBlock } from '../../core/cidr.js';
import {
  METADATA_NOTE,
  METADATA_V4,
  NAT64_LOCAL,
  NAT64_WKP,
  PUBLIC,
  SIX_TO_FOUR,
  TEREDO,
  V4_BLOCKS,
  V6_BLOCKS,
  V6_GLOBAL_UNICAST,
  V6_LOOPBACK,
  V6_UNALLOCATED,
  V6_UNSPECIFIED,
  parseV4,
  type AddressClass,
  type AddressClassification,
  type EmbeddedIPv4Form,
} from './blocks.js';

/**
 * Which block an address is in. Classification is by the address actually connected to, so odd
 * spellings (`0x7f.1`, `2130706433`, `::ffff:7f00:1`) cannot slip past: the resolver or the IPv6
 * parser turns them into bytes first.
 */

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

export function zeroUpTo(bytes: Buffer, end: number): boolean {
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
