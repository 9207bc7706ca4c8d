/**
 * Strict parsing of hosts that arrive from the network: CONNECT targets, Host headers, SNI.
 *
 * Everything here is deliberately conservative: ambiguous spellings (`010.1.1.1`, `0x7f.1`, `2130706433`,
 * `1.1.1`, bracketless `::1:80`, zone ids) are rejected rather than reinterpreted, so that the host the
 * policy sees is exactly the host the connector dials. These values are never used to build file paths,
 * but they are used for policy decisions, cache keys and log lines.
 *
 * Hot path: the parsers walk char codes; no regex is compiled or run, and a new string is only
 * allocated when the input is not already canonical (uppercase letters, trailing dot, IPv6).
 */
import net from 'node:net';

export type HostKind = 'dns' | 'ipv4' | 'ipv6';

export interface ParsedHost {
  /** Canonical form: lowercase DNS name without trailing dot, canonical dotted quad, or RFC 5952 IPv6 (no brackets). */
  host: string;
  kind: HostKind;
}

export type ParsedAuthority = ParsedHost & { port: number };

const DOT = 46;
const HYPHEN = 45;
const UNDERSCORE = 95;
const COLON = 58;
const CH_0 = 48;
const CH_9 = 57;
const CH_A = 65;
const CH_Z = 90;
const CH_a = 97;
const CH_f = 102;
const CH_z = 122;
const CH_F = 70;
const CH_x = 120;
const CH_X = 88;
const OPEN_BRACKET = 91;

const MAX_DNS_LENGTH = 253;
const MAX_LABEL_LENGTH = 63;
/** `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255` */
const MAX_IPV6_LENGTH = 45;

function isDigit(c: number): boolean {
  return c >= CH_0 && c <= CH_9;
}

function isHexDigit(c: number): boolean {
  return (c >= CH_0 && c <= CH_9) || (c >= CH_a && c <= CH_f) || (c >= CH_A && c <= CH_F);
}

/**
 * Parses a host as it appears on the wire (no brackets, no port).
 * Returns null for anything that is not a plain DNS name, canonical IPv4 dotted quad or IPv6 literal.
 */
export function parseHost(input: string): ParsedHost | null {
  const len = input.length;
  // 253 octets plus one optional trailing dot.
  if (len === 0 || len > MAX_DNS_LENGTH + 1) return null;
  if (input.indexOf(':') !== -1) return parseIpv6Literal(input);
  return parseDnsOrIpv4(input);
}

function parseDnsOrIpv4(input: string): ParsedHost | null {
  const len = input.length;
  const trailingDot = input.charCodeAt(len - 1) === DOT;
  const end = trailingDot ? len - 1 : len;
  if (end === 0 || end > MAX_DNS_LENGTH) return null;

  let labelStart = 0;
  let needsLower = false;
  for (let i = 0; i < end; i++) {
    const c = input.charCodeAt(i);
    if (c === DOT) {
      const labelLen = i - labelStart;
      if (labelLen === 0 || labelLen > MAX_LABEL_LENGTH) return null;
      if (input.charCodeAt(i - 1) === HYPHEN) return null;
      labelStart = i + 1;
    } else if ((c >= CH_a && c <= CH_z) || isDigit(c) || c === UNDERSCORE) {
      // ok
    } else if (c >= CH_A && c <= CH_Z) {
      needsLower = true;
    } else if (c === HYPHEN) {
      if (i === labelStart) return null;
    } else {
      // '*', '/', '%', ' ', '\\', control characters, non-ASCII, ...
      return null;
    }
  }
  const lastLen = end - labelStart;
  if (lastLen === 0 || lastLen > MAX_LABEL_LENGTH) return null;
  if (input.charCodeAt(end - 1) === HYPHEN) return null;

  // Like the WHATWG URL parser: a host whose last label is a number is an IPv4 address. Unlike it, only
  // the canonical dotted-quad spelling is accepted; `1.1.1`, `0x7f.1`, `010.1.1.1`, `2130706433`, `a.1`
  // are rejected instead of being reinterpreted as some address.
  if (lastLabelIsNumeric(input, labelStart, end)) {
    if (trailingDot) return null;
    return isCanonicalIpv4(input) ? { host: input, kind: 'ipv4' } : null;
  }

  const base = trailingDot ? input.slice(0, end) : input;
  return { host: needsLower ? base.toLowerCase() : base, kind: 'dns' };
}

function lastLabelIsNumeric(s: string, start: number, end: number): boolean {
  const c0 = s.charCodeAt(start);
  if (end - start >= 2 && c0 === CH_0) {
    const c1 = s.charCodeAt(start + 1);
    if (c1 === CH_x || c1 === CH_X) {
      for (let i = start + 2; i < end; i++) if (!isHexDigit(s.charCodeAt(i))) return false;
      return true;
    }
  }
  for (let i = start; i < end; i++) if (!isDigit(s.charCodeAt(i))) return false;
  return true;
}

/** Exactly four dot-separated decimal octets 0..255, no leading zeros, nothing else. */
function isCanonicalIpv4(s: string): boolean {
  return ipv4Octets(s, 0, s.length, null, 0);
}

/** Validates a dotted quad in s[start, end); optionally writes the octets to out[offset..offset+3]. */
function ipv4Octets(s: string, start: number, end: number, out: Buffer | null, offset: number): boolean {
  let parts = 0;
  let value = 0;
  let digits = 0;
  for (let i = start; i <= end; i++) {
    const c = i === end ? DOT : s.charCodeAt(i);
    if (c === DOT) {
      if (digits === 0 || parts === 4) return false;
      if (out !== null) out[offset + parts] = value;
      parts++;
      value = 0;
      digits = 0;
    } else if (isDigit(c)) {
      if (digits === 1 && value === 0) return false; // leading zero: ambiguous (octal in inet_aton)
      value = value * 10 + (c - CH_0);
      digits++;
      if (value > 255) return false;
    } else {
      return false;
    }
  }
  return parts === 4;
}

function parseIpv6Literal(input: string): ParsedHost | null {
  const len = input.length;
  if (len > MAX_IPV6_LENGTH) return null;
  // Reject zone ids ('%'), brackets, whitespace etc. before asking net: only hex digits, ':' and '.'.
  for (let i = 0; i < len; i++) {
    const c = input.charCodeAt(i);
    if (!(isHexDigit(c) || c === COLON || c === DOT)) return null;
  }
  if (!net.isIPv6(input)) return null;
  const bytes = ipv6ToBytes(input);
  if (bytes === null) return null;
  return { host: formatIpv6(bytes), kind: 'ipv6' };
}

/** Parses one group list ("a:b:c" possibly ending in a dotted quad) into 16-bit groups. */
function ipv6Groups(s: string, start: number, end: number, out: number[]): boolean {
  if (start === end) return true;
  let groupStart = start;
  for (let i = start; i <= end; i++) {
    const c = i === end ? COLON : s.charCodeAt(i);
    if (c === COLON) {
      const gl = i - groupStart;
      if (gl === 0 || gl > 4) return false;
      let v = 0;
      for (let j = groupStart; j < i; j++) {
        const d = s.charCodeAt(j);
        if (!isHexDigit(d)) return false;
        v = v * 16 + (d <= CH_9 ? d - CH_0 : (d | 0x20) - CH_a + 10);
      }
      out.push(v);
      groupStart = i + 1;
    } else if (c === DOT) {
      // Embedded IPv4: must be the final group.
      const quad = Buffer.allocUnsafe(4);
      if (!ipv4Octets(s, groupStart, end, quad, 0)) return false;
      out.push((quad[0]! << 8) | quad[1]!, (quad[2]! << 8) | quad[3]!);
      return true;
    }
  }
  return true;
}

/** 16 network-order bytes for a (valid, bracketless, zone-less) IPv6 literal, or null. */
export function ipv6ToBytes(s: string): Buffer | null {
  const dc = s.indexOf('::');
  const head: number[] = [];
  const tail: number[] = [];
  if (dc === -1) {
    if (!ipv6Groups(s, 0, s.length, head)) return null;
    if (head.length !== 8) return null;
  } else {
    if (s.indexOf('::', dc + 1) !== -1) return null;
    if (!ipv6Groups(s, 0, dc, head) || !ipv6Groups(s, dc + 2, s.length, tail)) return null;
    if (head.length + tail.length > 7) return null;
  }
  const out = Buffer.alloc(16);
  for (let i = 0; i < head.length; i++) out.writeUInt16BE(head[i]!, i * 2);
  const tailOffset = 16 - tail.length * 2;
  for (let i = 0; i < tail.length; i++) out.writeUInt16BE(tail[i]!, tailOffset + i * 2);
  return out;
}

/**
 * RFC 5952 text form: lowercase, no leading zeros, longest run (>= 2) of zero groups compressed (first
 * on ties). IPv4-mapped addresses (::ffff:0:0/96) use the mixed notation RFC 5952 section 5 recommends.
 */
export function formatIpv6(b: Buffer): string {
  let isMapped = true;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) isMapped = false;
  if (isMapped && b[10] === 0xff && b[11] === 0xff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  let runStart = -1;
  for (let g = 0; g <= 8; g++) {
    const zero = g < 8 && b[g * 2] === 0 && b[g * 2 + 1] === 0;
    if (zero) {
      if (runStart === -1) runStart = g;
    } else if (runStart !== -1) {
      const runLen = g - runStart;
      if (runLen > bestLen) {
        bestStart = runStart;
        bestLen = runLen;
      }
      runStart = -1;
    }
  }
  if (bestLen < 2) bestStart = -1;
  let out = '';
  for (let g = 0; g < 8; g++) {
    if (g === bestStart) {
      out += '::';
      g += bestLen - 1;
      continue;
    }
    if (out.length > 0 && out.charCodeAt(out.length - 1) !== COLON) out += ':';
    out += ((b[g * 2]! << 8) | b[g * 2 + 1]!).toString(16);
  }
  return out;
}

/** Address bytes for an IP host (4 or 16 bytes, as in an X.509 iPAddress SAN); null for DNS names. */
export function ipBytes(h: ParsedHost): Buffer | null {
  if (h.kind === 'ipv4') {
    const out = Buffer.alloc(4);
    return ipv4Octets(h.host, 0, h.host.length, out, 0) ? out : null;
  }
  if (h.kind === 'ipv6') return ipv6ToBytes(h.host);
  return null;
}

/** Decimal port 1..65535: digits only, no sign, no leading zero, no whitespace. Returns -1 if invalid. */
function parsePort(s: string, start: number): number {
  const len = s.length - start;
  if (len < 1 || len > 5) return -1;
  let v = 0;
  for (let i = start; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!isDigit(c)) return -1;
    if (i === start && c === CH_0) return -1;
    v = v * 10 + (c - CH_0);
  }
  return v >= 1 && v <= 65535 ? v : -1;
}

/**
 * Parses `host:port`, `[v6]:port`, or (only when defaultPort is non-null) a bare `host` / `[v6]`.
 * A bracketless IPv6 literal is never accepted here: `::1:80` is ambiguous.
 */
export function parseAuthority(authority: string, defaultPort: number | null): ParsedAuthority | null {
  const len = authority.length;
  if (len === 0) return null;
  let hostPart: string;
  let portStart: number; // index of first port digit, or -1 for none
  let wantV6 = false;
  if (authority.charCodeAt(0) === OPEN_BRACKET) {
    const close = authority.indexOf(']');
    if (close === -1) return null;
    hostPart = authority.slice(1, close);
    wantV6 = true;
    if (close === len - 1) portStart = -1;
    else if (authority.charCodeAt(close + 1) === COLON) portStart = close + 2;
    else return null;
  } else {
    const colon = authority.indexOf(':');
    if (colon === -1) {
      hostPart = authority;
      portStart = -1;
    } else {
      if (authority.indexOf(':', colon + 1) !== -1) return null;
      hostPart = authority.slice(0, colon);
      portStart = colon + 1;
    }
    if (hostPart.indexOf(']') !== -1) return null;
  }
  let port: number;
  if (portStart === -1) {
    if (defaultPort === null) return null;
    port = defaultPort;
  } else {
    port = parsePort(authority, portStart);
    if (port === -1) return null;
  }
  const parsed = parseHost(hostPart);
  if (parsed === null) return null;
  if (wantV6 !== (parsed.kind === 'ipv6')) return null;
  return { host: parsed.host, kind: parsed.kind, port };
}

/** `host:port` or `[v6]:port`; the port is omitted when it equals defaultPort. */
export function formatAuthority(h: ParsedAuthority, defaultPort?: number): string {
  const host = h.kind === 'ipv6' ? `[${h.host}]` : h.host;
  return h.port === defaultPort ? host : `${host}:${h.port}`;
}

function lowerCode(c: number): number {
  return c >= CH_A && c <= CH_Z ? c | 0x20 : c;
}

/**
 * `example.com` matches exactly that host; `*.example.com` matches any subdomain at any depth
 * (`a.example.com`, `a.b.example.com`) but never the apex. ASCII case-insensitive. `host` is expected
 * in canonical form (from parseHost). Wildcards never match IP literals.
 */
export function hostPatternMatches(pattern: string, host: string): boolean {
  const pl = pattern.length;
  const hl = host.length;
  if (pl === 0 || hl === 0) return false;
  if (pl >= 2 && pattern.charCodeAt(0) === 42 /* '*' */ && pattern.charCodeAt(1) === DOT) {
    const suffixLen = pl - 1; // ".example.com"
    if (suffixLen < 2 || hl <= suffixLen) return false;
    if (host.indexOf(':') !== -1) return false; // IPv6
    const offset = hl - suffixLen;
    for (let i = 0; i < suffixLen; i++) {
      if (lowerCode(host.charCodeAt(offset + i)) !== lowerCode(pattern.charCodeAt(1 + i))) return false;
    }
    // Never match an IPv4 literal (its last label is numeric).
    let lastDot = hl - 1;
    while (lastDot >= 0 && host.charCodeAt(lastDot) !== DOT) lastDot--;
    let numeric = true;
    for (let i = lastDot + 1; i < hl; i++) if (!isDigit(host.charCodeAt(i))) numeric = false;
    return !numeric;
  }
  if (pattern.indexOf(':') !== -1) {
    // IPv6 pattern: compare canonical forms (patterns may be spelled `2001:DB8:0::1`). Rare; allocates.
    if (host.indexOf(':') === -1) return false;
    const p = parseHost(pattern);
    return p !== null && p.host === host;
  }
  if (pl !== hl) return false;
  for (let i = 0; i < pl; i++) {
    if (lowerCode(host.charCodeAt(i)) !== lowerCode(pattern.charCodeAt(i))) return false;
  }
  return true;
}
