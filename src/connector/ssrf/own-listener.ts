import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { addressBytes } from '../../core/cidr.js';
import { zeroUpTo } from './classify.js';

/**
 * Loop detection: whether a destination is one of this sidecar's own listeners, so the guard can
 * refuse to connect to itself (docs/listeners.md).
 */

/**
 * Bytes as a socket sees them: an IPv4-mapped IPv6 address is the IPv4 address on a dual-stack socket,
 * so a listener on 127.0.0.1 and a destination ::ffff:127.0.0.1 are the same endpoint. (Other embedding
 * forms go to a translator, not to this host, so they are left alone here.)
 */
export function socketBytes(address: string): Buffer | null {
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

/**
 * The listener `address:port` would reach, as "host:port", or null. A wildcard listener (0.0.0.0 or
 * ::) answers on every local address; a destination of 0.0.0.0 or :: is itself this host.
 */
export function ownListener(
  listeners: ReadonlyArray<{ readonly address: string; readonly port: number }>,
  dest: Buffer,
  port: number,
): string | null {
  let local: Buffer[] | null = null;
  for (const l of listeners) {
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
