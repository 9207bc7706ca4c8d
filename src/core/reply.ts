import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import type { Stage } from './decision.js';

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
}

function body(reply: SidecarReply): string {
  return (
    JSON.stringify({
      decision: reply.decision,
      stage: reply.stage,
      reason: reply.reason,
      message: reply.message,
      request_id: reply.requestId,
      ...(reply.policyIds !== undefined ? { policy_ids: reply.policyIds } : {}),
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
