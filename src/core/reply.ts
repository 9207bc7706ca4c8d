import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import type { Stage } from './decision.js';
import type { JsonRpcId } from './envelope.js';

/**
 * A denial on a declared MCP endpoint is answered in JSON-RPC 2.0 (docs/mcp.md "Answers"): one error per
 * message, in order (a batch gets an array), with the message's id; `index` is the message that was
 * denied (the others in a batch were not sent because of it).
 */
export interface JsonRpcDenial {
  readonly ids: readonly JsonRpcId[];
  readonly batch: boolean;
  readonly index: number;
}

/** `error.code` of a denied call (JSON-RPC server-defined range) and of a body that is not JSON-RPC. */
export const JSONRPC_DENIED = -32001;
export const JSONRPC_INVALID_REQUEST = -32600;

/**
 * A response the sidecar itself produces (docs/listeners.md): JSON body with decision/stage/reason/request_id and
 * an `x-firma-request-id` header. `message` is a human sentence; it never contains internal error text
 * or secret material.
 */
export interface SidecarReply {
  readonly status: number;
  readonly decision: 'deny' | 'allow' | 'error';
  readonly stage: Stage;
  readonly reason: string;
  readonly message: string;
  readonly requestId: string;
  readonly policyIds?: readonly string[];
  readonly headers?: Readonly<Record<string, string>>;
  /** An allowed request that failed before or in dispatch: the typed FIRMA_* (or upstream) error code. */
  readonly errorCode?: string;
  /** Set on a declared MCP endpoint: the body is JSON-RPC errors instead. */
  readonly jsonRpc?: JsonRpcDenial;
}

/**
 * `error.type` in the vocabulary the OpenAI and Anthropic APIs use, so their SDKs classify the answer
 * (docs/listeners.md "Responses the sidecar makes itself").
 */
function errorType(status: number): string {
  switch (status) {
    case 400:
      return 'invalid_request_error';
    case 401:
    case 407:
      return 'authentication_error';
    case 403:
      return 'permission_error';
    case 404:
      return 'not_found_error';
    case 408:
    case 504:
      return 'timeout_error';
    case 413:
      return 'request_too_large';
    case 429:
      return 'rate_limit_error';
    default:
      return status === 503 ? 'overloaded_error' : 'api_error';
  }
}

function jsonRpcBody(reply: SidecarReply, rpc: JsonRpcDenial): string {
  const data = { decision: reply.decision, stage: reply.stage, reason: reply.reason, request_id: reply.requestId };
  const code = reply.reason === 'mcp_malformed' ? JSONRPC_INVALID_REQUEST : JSONRPC_DENIED;
  const errors = rpc.ids.map((id, i) => ({
    jsonrpc: '2.0',
    id,
    error: {
      code,
      message: i === rpc.index || !rpc.batch
        ? reply.message
        : `not sent: message ${rpc.index + 1} of this batch was refused (${reply.reason}): ${reply.message}`,
      data,
    },
  }));
  return JSON.stringify(rpc.batch ? errors : errors[0]) + '\n';
}

function body(reply: SidecarReply): string {
  if (reply.jsonRpc !== undefined) return jsonRpcBody(reply, reply.jsonRpc);
  // An allow that the sidecar answers itself failed after the decision: say so beside "allow".
  const failed = reply.decision === 'allow';
  return (
    JSON.stringify({
      decision: reply.decision,
      ...(failed ? { outcome: 'error' } : {}),
      ...(failed && reply.errorCode !== undefined ? { error_code: reply.errorCode } : {}),
      stage: reply.stage,
      reason: reply.reason,
      message: reply.message,
      request_id: reply.requestId,
      ...(reply.policyIds !== undefined ? { policy_ids: reply.policyIds } : {}),
      // The shape the OpenAI and Anthropic SDKs read (`e.error`), so the agent and its model see why.
      error: {
        message: `firma sidecar ${failed ? 'could not complete' : 'refused'} this request (${reply.stage}: ${reply.reason}): ${reply.message}`,
        type: errorType(reply.status),
        code: reply.reason,
      },
    }) + '\n'
  );
}

/** Write a sidecar reply on a normal HTTP exchange. No-op if headers already went out. */
export function sendReply(res: ServerResponse, reply: SidecarReply, closeConnection = false): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const text = body(reply);
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    'x-firma-request-id': reply.requestId,
    ...reply.headers,
  };
  if (closeConnection) headers['connection'] = 'close';
  res.writeHead(reply.status, headers);
  res.end(text);
}

/**
 * Write a sidecar reply straight onto a socket (CONNECT, upgrade, or a tunnel that carried non-TLS
 * bytes), then close it: there is no ServerResponse on those paths.
 */
export function sendReplyRaw(socket: Duplex, reply: SidecarReply): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const text = body(reply);
  let head = `HTTP/1.1 ${reply.status} ${STATUS_CODES[reply.status] ?? ''}\r\n`;
  head += 'content-type: application/json\r\n';
  head += `content-length: ${Buffer.byteLength(text)}\r\n`;
  head += `x-firma-request-id: ${reply.requestId}\r\n`;
  if (reply.headers !== undefined) {
    for (const [k, v] of Object.entries(reply.headers)) head += `${k}: ${v}\r\n`;
  }
  head += 'connection: close\r\n\r\n';
  socket.end(head + text);
}
