import type { IncomingMessage } from 'node:http';
import type { SidecarReply } from '../core/reply.js';
import type { Identity } from '../core/envelope.js';
import { AGENT_ID } from '../config/validators.js';

export type ProxyAuthResult =
  | { readonly ok: true; readonly identity: Identity }
  | { readonly ok: false; readonly reason: 'proxy_auth_malformed' };

/**
 * `Proxy-Authorization: Basic base64(agent_id:capability_token)` (docs/listeners.md), which is what every client
 * sends for `HTTPS_PROXY=http://AGENT_ID:TOKEN@host:port`. Absent → the sidecar's own agent id.
 * Clients percent-encode userinfo before base64, so the id and token are percent-decoded.
 */
export function identityFromProxyAuthorization(
  header: string | undefined,
  defaultAgentId: string,
): ProxyAuthResult {
  if (header === undefined || header === '') {
    return { ok: true, identity: { agentId: defaultAgentId, token: null, source: 'default' } };
  }
  const space = header.indexOf(' ');
  if (space === -1 || header.slice(0, space).toLowerCase() !== 'basic') {
    return { ok: false, reason: 'proxy_auth_malformed' };
  }
  const decoded = Buffer.from(header.slice(space + 1).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const rawId = colon === -1 ? decoded : decoded.slice(0, colon);
  const rawToken = colon === -1 ? '' : decoded.slice(colon + 1);
  let agentId: string;
  let token: string;
  try {
    agentId = decodeURIComponent(rawId);
    token = decodeURIComponent(rawToken);
  } catch {
    return { ok: false, reason: 'proxy_auth_malformed' };
  }
  if (!AGENT_ID.test(agentId)) return { ok: false, reason: 'proxy_auth_malformed' };
  return {
    ok: true,
    identity: { agentId, token: token === '' ? null : token, source: 'proxy-authorization' },
  };
}

/** The identity a request's Proxy-Authorization gives; null when the header is malformed. */
export function identityOf(req: IncomingMessage, defaultAgentId: string): Identity | null {
  const result = identityFromProxyAuthorization(req.headers['proxy-authorization'], defaultAgentId);
  return result.ok ? result.identity : null;
}

const PROXY_AUTHENTICATE: Readonly<Record<string, string>> = { 'proxy-authenticate': 'Basic realm="firma"' };

/** The 407 for a Proxy-Authorization the sidecar cannot read. */
export function proxyAuthReply(requestId: string): SidecarReply {
  return {
    status: 407,
    decision: 'deny',
    stage: 'intercept',
    reason: 'proxy_auth_malformed',
    message: 'Proxy-Authorization must be Basic base64(agent_id:token)',
    requestId,
    headers: PROXY_AUTHENTICATE,
  };
}
