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
