import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) plus the ones the sidecar owns: `proxy-*` carry the agent's
 * identity and must never reach an upstream; `host` is set by the connector from the vetted target;
 * `expect` is answered by the sidecar itself (Node sends `100 Continue`).
 */
const REQUEST_DROP = new Set([
  'connection',
  'keep-alive',
  'proxy-authorization',
  'proxy-authenticate',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'expect',
  'http2-settings',
]);

const RESPONSE_DROP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Header names listed in a `Connection` header are hop-by-hop too. */
function connectionTokens(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null;
  const joined = Array.isArray(value) ? value.join(',') : value;
  let tokens: Set<string> | null = null;
  for (const part of joined.split(',')) {
    const token = part.trim().toLowerCase();
    if (token === '' || token === 'close' || token === 'keep-alive') continue;
    (tokens ??= new Set()).add(token);
  }
  return tokens;
}

/**
 * Filter `req.rawHeaders` (flat name/value list, original case and order) into what goes upstream.
 * `keepUpgrade` keeps `Upgrade`/`Connection: upgrade` for a WebSocket handshake.
 */
export function upstreamRequestHeaders(
  rawHeaders: readonly string[],
  connection: string | string[] | undefined,
  keepUpgrade = false,
): string[] {
  const listed = connectionTokens(connection);
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    const lower = name.toLowerCase();
    if (keepUpgrade && (lower === 'upgrade' || lower === 'connection')) continue; // re-added by caller
    if (REQUEST_DROP.has(lower)) continue;
    if (listed !== null && listed.has(lower)) continue;
    out.push(name, rawHeaders[i + 1] as string);
  }
  return out;
}

/** Filter parsed upstream response headers for relaying to the agent. */
export function downstreamResponseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const listed = connectionTokens(headers.connection);
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    if (RESPONSE_DROP.has(name)) continue;
    if (listed !== null && listed.has(name)) continue;
    const value = headers[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}
