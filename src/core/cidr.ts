import { isIPv4, isIPv6 } from 'node:net';

/** One `allow_private` entry: an address block, optionally limited to one port. */
export interface CidrRule {
  readonly family: 4 | 6;
  /** Network address, 4 or 16 bytes, host bits zeroed. */
  readonly network: Buffer;
  readonly prefix: number;
  readonly port: number | null;
  /** As written in the config, for messages. */
  readonly text: string;
}

/** Address literal → bytes (4 for IPv4, 16 for IPv6), or null. */
export function addressBytes(address: string): Buffer | null {
  if (isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  if (!isIPv6(address)) return null;
  let text = address.toLowerCase();
  const zone = text.indexOf('%');
  if (zone !== -1) text = text.slice(0, zone);
  // An embedded dotted IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = tail.split('.').map(Number);
    text = `${text.slice(0, lastColon + 1)}${(((v4[0] ?? 0) << 8) | (v4[1] ?? 0)).toString(16)}:${(((v4[2] ?? 0) << 8) | (v4[3] ?? 0)).toString(16)}`;
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = rest === undefined || rest === '' ? [] : rest.split(':');
  const fill = rest === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...Array<string>(fill).fill('0'), ...tailGroups];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function maskTo(bytes: Buffer, prefix: number): Buffer {
  const out = Buffer.from(bytes);
  for (let i = 0; i < out.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = (out[i] as number) & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

/** True when `bytes` (same family as the rule) lies inside the rule's block. */
export function inBlock(network: Buffer, prefix: number, bytes: Buffer): boolean {
  if (bytes.length !== network.length) return false;
  const full = prefix >> 3;
  for (let i = 0; i < full; i++) if (bytes[i] !== network[i]) return false;
  const rem = prefix & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (((bytes[full] as number) & mask) === (network[full] as number));
}

/**
 * Parse `CIDR`, `CIDR:port`, a bare address (= /32 or /128), or for IPv6 with a port `[CIDR]:port`.
 * Returns an error message instead of throwing.
 */
export function parseCidrRule(text: string): CidrRule | string {
  let body = text.trim();
  let port: number | null = null;
  if (body.startsWith('[')) {
    const close = body.indexOf(']');
    if (close === -1) return 'unclosed "["';
    const after = body.slice(close + 1);
    if (after !== '') {
      if (!/^:[0-9]{1,5}$/.test(after)) return 'expected "]:port" after a bracketed IPv6 block';
      port = Number(after.slice(1));
    }
    body = body.slice(1, close);
  } else if (!body.includes('::') && body.split(':').length === 2) {
    const colon = body.lastIndexOf(':');
    const p = body.slice(colon + 1);
    if (!/^[0-9]{1,5}$/.test(p)) return `port ${JSON.stringify(p)} is not a number`;
    port = Number(p);
    body = body.slice(0, colon);
  }
  if (port !== null && (port < 1 || port > 65535)) return `port ${port} is out of range 1-65535`;
  const slash = body.indexOf('/');
  const addr = slash === -1 ? body : body.slice(0, slash);
  const bytes = addressBytes(addr);
  if (bytes === null) return `${JSON.stringify(addr)} is not an IP address`;
  const max = bytes.length * 8;
  let prefix = max;
  if (slash !== -1) {
    const p = body.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(p) || Number(p) > max) return `prefix length ${JSON.stringify(p)} must be 0-${max}`;
    prefix = Number(p);
  }
  return { family: bytes.length === 4 ? 4 : 6, network: maskTo(bytes, prefix), prefix, port, text };
}
