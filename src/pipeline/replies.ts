import type { Denied } from '../core/decision.js';
import type { SidecarReply } from '../core/reply.js';

/** The 403/407/429 answer for a deny (docs/listeners.md "Responses the sidecar makes itself"); JSON-RPC errors on an MCP endpoint. */
export function denyReply(d: Denied): SidecarReply {
  return {
    status: d.status,
    decision: 'deny',
    stage: d.stage,
    reason: d.reason,
    message: d.message,
    requestId: d.envelope.requestId,
    policyIds: d.policyIds,
    ...(d.status === 407 ? { headers: PROXY_AUTHENTICATE } : {}),
    // A budget's window end, or 1 s for shared state that may be back (docs/llm.md "Budgets").
    ...(d.retryAfterS !== undefined ? { headers: { 'retry-after': String(d.retryAfterS) } } : {}),
    // On a declared MCP endpoint the agent's MCP client reads JSON-RPC (docs/mcp.md "Answers").
    ...(d.envelope.mcp !== null && d.envelope.mcp !== undefined
      ? { jsonRpc: { ids: d.envelope.mcp.rpcIds, batch: d.envelope.mcp.batch, index: d.envelope.mcp.index } }
      : {}),
  };
}

const PROXY_AUTHENTICATE: Readonly<Record<string, string>> = { 'proxy-authenticate': 'Basic realm="firma"' };
const RETRY_AFTER_1: Readonly<Record<string, string>> = { 'retry-after': '1' };

/** Fail closed: nothing is dispatched that the audit log cannot record. */
export function auditUnavailable(requestId: string): SidecarReply {
  return {
    status: 503,
    decision: 'deny',
    stage: 'audit',
    reason: 'audit_unavailable',
    message: 'the audit log cannot be written, so nothing is sent until it can',
    requestId,
    headers: RETRY_AFTER_1,
  };
}

/** The connector threw (a bug): the request was allowed but could not be sent. */
export function dispatchFailed(requestId: string): SidecarReply {
  return {
    status: 502,
    decision: 'allow',
    stage: 'connector',
    reason: 'network',
    message: 'the request could not be dispatched',
    requestId,
  };
}
