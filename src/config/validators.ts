/**
 * Value checks/transforms used by the firma.toml declaration. Each returns the parsed value or a
 * `Failure` whose message says what was expected and what was found.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import type { Failure, TransformContext } from './schema-dsl.js';
import { fail } from './schema-dsl.js';
import { describeValue } from './values.js';
import { parseAuthority, parseHost } from '../core/host.js';
import { parseCidrRule, type CidrRule } from '../core/cidr.js';

export interface ListenAddress {
  /** IPv4 literal, IPv6 literal without brackets, or "localhost". */
  host: string;
  /** 0..65535; 0 = ephemeral. */
  port: number;
}

export const LISTEN_JSON_PATTERN = '^(\\[[0-9A-Fa-f:.]+\\]|[0-9.]+|[Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]):[0-9]{1,5}$';

/** "127.0.0.1:8080" | "[::1]:8080" | "localhost:0" -> { host, port }. */
export function parseListenAddress(text: string): ListenAddress | Failure {
  const got = `got ${describeValue(text)}`;
  const colon = text.lastIndexOf(':');
  if (colon === -1) return fail(`expected host:port (e.g. "127.0.0.1:8080"), ${got}`);
  const hostPart = text.slice(0, colon);
  const portPart = text.slice(colon + 1);
  let host: string;
  if (hostPart.startsWith('[') && hostPart.endsWith(']') && isIPv6(hostPart.slice(1, -1))) {
    host = hostPart.slice(1, -1).toLowerCase();
  } else if (isIPv4(hostPart)) {
    host = hostPart;
  } else if (hostPart.toLowerCase() === 'localhost') {
    host = 'localhost';
  } else if (isIPv6(hostPart) || isIPv6(text)) {
    return fail(`expected an IPv6 host in brackets (e.g. "[::1]:8080"), ${got}`);
  } else {
    return fail(`expected host:port with host an IPv4 address, [IPv6] address or "localhost", ${got}`);
  }
  if (!/^[0-9]{1,5}$/.test(portPart) || Number(portPart) > 65535) {
    return fail(`expected host:port with a port between 0 and 65535, ${got}`);
  }
  return { host, port: Number(portPart) };
}

/** "" (listener disabled) or a listen address. */
export function parseOptionalListenAddress(text: string): ListenAddress | null | Failure {
  return text === '' ? null : parseListenAddress(text);
}

/** "" (unset) or an http(s) URL without credentials. */
export function checkOptionalHttpUrl(text: string): string | undefined {
  return text === '' ? undefined : checkHttpUrl(text);
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;

/**
 * A bypass host pattern: a DNS name ("api.example.com"), "*.example.com" (any subdomain, never the
 * apex) or an IP literal; lowercase-normalised. Returns the normalised pattern.
 */
export function parseHostPattern(text: string): string | Failure {
  const expected = `expected a host name ("api.example.com"), a wildcard ("*.example.com") or an IP address, got ${describeValue(text)}`;
  const why = (reason: string): Failure => fail(`${expected}: ${reason}`);
  const lower = text.toLowerCase();
  if (isIPv4(lower)) return lower;
  const unbracketed = lower.startsWith('[') && lower.endsWith(']') ? lower.slice(1, -1) : lower;
  if (isIPv6(unbracketed)) return unbracketed;
  if (lower === '') return why('empty');
  if (/[^\x21-\x7e]/.test(lower)) {
    return why(/[^\x00-\x7f]/.test(lower) ? 'non-ASCII characters (use the xn-- punycode form)' : 'contains whitespace or control characters');
  }
  if (lower.includes('/')) return why('contains "/" (a host only, no scheme or path)');
  if (lower.includes(':')) return why('contains ":" (a host only, no scheme or port)');
  if (lower.length > 253) return why('longer than 253 characters');
  const labels = lower.split('.');
  if (labels.some((label) => label === '')) return why('empty label (leading, trailing or double dot)');
  let rest = labels;
  if (labels[0] === '*') {
    if (labels.length < 2) return why('"*" alone would match every host');
    rest = labels.slice(1);
  }
  for (const label of rest) {
    if (label.includes('*')) return why('"*" is only allowed as the whole first label ("*.example.com")');
    if (label.length > 63) return why(`label "${label.slice(0, 20)}…" is longer than 63 characters`);
    if (!LABEL.test(label)) return why(`label ${JSON.stringify(label)} may only contain a-z, 0-9, "-" and "_" and may not start or end with "-"`);
  }
  const last = rest[rest.length - 1] ?? '';
  if (/^[0-9]+$/.test(last)) return why('not a valid IP address, and a host name cannot end in a numeric label');
  return lower;
}

/** Resolve a path against the config file's folder (or cwd for built-in defaults). */
export function resolveConfigRelativePath(text: string, ctx: TransformContext): string | Failure {
  if (text === '') return fail(`expected a path, got ${describeValue(text)}`);
  if (text.includes('\0')) return fail('expected a path, got a string containing a NUL character');
  return isAbsolute(text) ? resolve(text) : resolve(ctx.baseDir, text);
}

export const AGENT_ID_PATTERN = '^[A-Za-z0-9._:@-]{1,128}$';
/** Agent ids are logged and audited; the same rule holds for config and for Proxy-Authorization. */
export const AGENT_ID = new RegExp(AGENT_ID_PATTERN);

export function checkAgentId(text: string): string | undefined {
  return AGENT_ID.test(text)
    ? undefined
    : `expected 1 to 128 characters of A-Z a-z 0-9 . _ : @ -, got ${describeValue(text)}`;
}

// ---------------------------------------------------------------------------------------------------
// connector, credentials, vault, redis
// ---------------------------------------------------------------------------------------------------

/** An upstream named in config: exact host, and a port when one was given (else the scheme's default). */
export interface UpstreamHostKey {
  readonly host: string;
  readonly port: number | null;
  /** As written, lowercased: for messages and duplicate detection. */
  readonly text: string;
}

export function parseUpstreamHost(text: string): UpstreamHostKey | Failure {
  const got = `got ${describeValue(text)}`;
  const withPort = parseAuthority(text, null);
  if (withPort !== null) return { host: withPort.host, port: withPort.port, text: text.toLowerCase() };
  const bare = parseHost(text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text);
  if (bare !== null) return { host: bare.host, port: null, text: text.toLowerCase() };
  return fail(`expected an exact host name or IP, optionally with :port ("api.openai.com", "127.0.0.1:9100"), ${got}`);
}

export function parseAllowPrivate(text: string): CidrRule | Failure {
  const rule = parseCidrRule(text);
  return typeof rule === 'string'
    ? fail(`expected CIDR or CIDR:port ("10.0.0.0/8:5432", "127.0.0.1/32", "[fd00::/8]:443"), got ${describeValue(text)}: ${rule}`)
    : rule;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
export function checkEnvName(text: string): string | undefined {
  return ENV_NAME.test(text) ? undefined : `expected an environment variable name, got ${describeValue(text)}`;
}

/** RFC 9110 token: what a header name may be. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
export function checkHeaderName(text: string): string | undefined {
  return HEADER_NAME.test(text) ? undefined : `expected an HTTP header name, got ${describeValue(text)}`;
}

/** KV v2 `mount/data/path#field`. */
export interface VaultSecretRef {
  /** API path after /v1/, e.g. `secret/data/stripe`. */
  readonly path: string;
  readonly field: string;
}

export function parseVaultSecretPath(text: string): VaultSecretRef | Failure {
  const hash = text.lastIndexOf('#');
  const path = hash === -1 ? text : text.slice(0, hash);
  const field = hash === -1 ? '' : text.slice(hash + 1);
  const segments = path.split('/');
  if (field === '' || segments.length < 3 || segments[1] !== 'data' || segments.some((s) => s === '' || s === '.' || s === '..')) {
    return fail(`expected a KV v2 path "mount/data/path#field" (e.g. "secret/data/stripe#api_key"), got ${describeValue(text)}`);
  }
  return { path, field };
}

/**
 * A URL as an error message may show it: user info and everything after the authority cut, since
 * those can be secrets (a Redis password, a Slack webhook's path).
 */
export function urlForMessage(text: string): string {
  const m = URL_PARTS.exec(text);
  if (m === null) return '…';
  const [, scheme = '', slashes = '', authority = '', rest = ''] = m;
  const at = authority.lastIndexOf('@');
  return `${scheme}${slashes}${at === -1 ? authority : `[redacted]${authority.slice(at)}`}${rest === '' ? '' : '/…'}`;
}

const URL_PARTS = /^([a-z][a-z0-9+.-]*:)?(\/\/)?([^/?#]*)(.*)$/is;

export function checkHttpUrl(text: string): string | undefined {
  try {
    const u = new URL(text);
    if ((u.protocol === 'http:' || u.protocol === 'https:') && u.username === '' && u.password === '') return undefined;
  } catch {
    // fall through
  }
  return `expected an http:// or https:// URL without credentials, got ${describeValue(urlForMessage(text))}`;
}

export function checkRedisUrl(text: string): string | undefined {
  if (text === '') return undefined;
  try {
    const u = new URL(text);
    if (u.protocol === 'redis:' || u.protocol === 'rediss:') return undefined;
  } catch {
    // fall through
  }
  return `expected "" (no Redis) or a redis:// or rediss:// URL, got ${describeValue(urlForMessage(text))}`;
}
