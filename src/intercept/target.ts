import type { IncomingMessage } from 'node:http';
import type { Target } from '../core/envelope.js';
import type { SidecarReply } from '../core/reply.js';
import { parseAuthority, type ParsedAuthority } from '../core/host.js';
import { targetFromHostHeader } from './transparent/listener.js';
import type { TunnelContext } from './context.js';

/**
 * Where a request goes, read from what the client sent (docs/listeners.md "The proxy listener"): the
 * absolute-form URL, the CONNECT target, the Host header. They must all name the one target the
 * sidecar decides on and connects to.
 */
export type TargetResult =
  | { readonly ok: true; readonly target: Target; readonly pathAndQuery: string }
  | { readonly ok: false; readonly reply: Omit<SidecarReply, 'requestId'> };

export const HTTP_PREFIX = 'http://';
export const HTTPS_PREFIX = 'https://';
/** An HTTP/1.x request line start: a method token then a space. */
const HTTP_REQUEST_LINE = /^[A-Z]{3,10} /;

/** Whether the first bytes of a connection start an HTTP/1.x request. */
export function looksLikeHttp(bytes: Buffer): boolean {
  return HTTP_REQUEST_LINE.test(bytes.toString('latin1', 0, Math.min(bytes.length, 16)));
}

export function badRequest(reason: string, message: string): { ok: false; reply: Omit<SidecarReply, 'requestId'> } {
  return { ok: false, reply: { status: 400, decision: 'deny', stage: 'intercept', reason, message } };
}

function sameAuthority(a: ParsedAuthority, b: Target): boolean {
  return a.host === b.host && a.port === b.port;
}

/**
 * Split an absolute-form request target (`http://host[:port]/path?q`) into target and origin-form
 * path. Done by hand rather than with `new URL()` because URL silently "fixes" input (it would turn
 * `http://a\\b` into `a/b`, percent-encode, drop default ports) and what we forward must be what we
 * decided on.
 */
export function parseAbsoluteForm(url: string, scheme: 'http' | 'https'): TargetResult {
  const prefix = scheme === 'http' ? HTTP_PREFIX : HTTPS_PREFIX;
  if (url.length < prefix.length || url.slice(0, prefix.length).toLowerCase() !== prefix) {
    return badRequest('bad_request_target', `request target must start with ${prefix}`);
  }
  let end = url.length;
  for (let i = prefix.length; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) {
      end = i;
      break;
    }
  }
  const authority = url.slice(prefix.length, end);
  if (authority.includes('@')) {
    return badRequest('bad_request_target', 'credentials in the request URL are not accepted');
  }
  const parsed = parseAuthority(authority, scheme === 'http' ? 80 : 443);
  if (parsed === null) return badRequest('bad_host', 'the request URL does not name a valid host');
  let rest = url.slice(end);
  if (rest.startsWith('#')) rest = '';
  const hash = rest.indexOf('#');
  if (hash !== -1) rest = rest.slice(0, hash);
  const pathAndQuery = rest === '' ? '/' : rest.startsWith('?') ? `/${rest}` : rest;
  return {
    ok: true,
    target: { scheme, host: parsed.host, kind: parsed.kind, port: parsed.port },
    pathAndQuery,
  };
}

/**
 * More than one Host header is ambiguous framing (RFC 9112 3.2: a server must answer 400): Node keeps
 * the first, an upstream or a cache in between might use another, so the request is refused like a
 * request smuggling attempt (docs/errors.md "Stage `intercept`").
 */
function hostHeaderRepeated(req: IncomingMessage): boolean {
  const raw = req.rawHeaders;
  let seen = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 4 && name.toLowerCase() === 'host') {
      if (seen) return true;
      seen = true;
    }
  }
  return false;
}

const DUPLICATE_HOST = badRequest('duplicate_host', 'the request carries more than one Host header');

/** The Host header must name the very target the sidecar decides on and connects to. */
export function checkHostHeader(req: IncomingMessage, target: Target): TargetResult | null {
  if (hostHeaderRepeated(req)) return DUPLICATE_HOST;
  const hostHeader = req.headers.host;
  if (hostHeader === undefined) {
    // HTTP/1.0 without Host: the target alone decides. HTTP/1.1 must carry one (RFC 9112 3.2).
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) return null;
    return badRequest('missing_host', 'an HTTP/1.1 request must carry a Host header');
  }
  const parsed = parseAuthority(hostHeader, target.scheme === 'http' ? 80 : 443);
  if (parsed === null || !sameAuthority(parsed, target)) {
    return badRequest('host_mismatch', 'the Host header does not match the request target');
  }
  return null;
}

/** Inside a tunnel the CONNECT target is the only destination: SNI, Host and any absolute URI must agree. */
export function tunnelTarget(req: IncomingMessage, tunnel: TunnelContext): TargetResult {
  if (tunnel.sniMismatch !== null) {
    return badRequest('sni_mismatch', `TLS server name ${tunnel.sniMismatch} does not match the CONNECT target`);
  }
  if (req.headers.host === undefined && req.httpVersion === '1.1') {
    return badRequest('missing_host', 'an HTTP/1.1 request must carry a Host header');
  }
  if (hostHeaderRepeated(req)) return DUPLICATE_HOST;
  let target = tunnel.target;
  if (tunnel.byHost !== undefined) {
    const t = targetFromHostHeader(req.headers.host, tunnel.byHost.originalPort);
    if (!t.ok) return badRequest(t.reason, t.message);
    target = t.target;
  }
  const url = req.url ?? '';
  let pathAndQuery: string;
  if (url.startsWith('/')) {
    pathAndQuery = url;
  } else {
    const abs = parseAbsoluteForm(url, target.scheme);
    if (!abs.ok) return abs;
    if (abs.target.host !== target.host || abs.target.port !== target.port) {
      return badRequest('host_mismatch', 'the request URL does not match the CONNECT target');
    }
    pathAndQuery = abs.pathAndQuery;
  }
  const hostCheck = checkHostHeader(req, target);
  if (hostCheck !== null) return hostCheck;
  return { ok: true, target, pathAndQuery };
}
