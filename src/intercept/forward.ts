import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import type { InterceptContext } from './context.js';
import { HTTPS_PREFIX, HTTP_PREFIX, badRequest, checkHostHeader, parseAbsoluteForm } from './target.js';
import { identityOf, proxyAuthReply } from './proxy-auth.js';

const WS_SCHEME = /^ws:\/\//i;

/**
 * Plain HTTP through the proxy listener: absolute-form requests (`GET http://host/path`), checked for a
 * target the sidecar can decide on, then handed to the pipeline (docs/listeners.md "Forward HTTP").
 */
export function onForwardRequest(ctx: InterceptContext, req: IncomingMessage, res: ServerResponse): void {
  const requestId = randomUUID();
  const url = req.url ?? '';
  if (url.startsWith('/')) {
    ctx.pipeline.refuseHttp(res, {
      ...badRequest('not_a_proxy_request', 'this is an HTTP proxy: send absolute-form requests or CONNECT').reply,
      requestId,
    });
    return;
  }
  if (url.length >= HTTPS_PREFIX.length && url.slice(0, HTTPS_PREFIX.length).toLowerCase() === HTTPS_PREFIX) {
    ctx.pipeline.refuseHttp(res, { ...badRequest('use_connect', 'https:// targets must be reached with CONNECT').reply, requestId });
    return;
  }
  const parsed = parseAbsoluteForm(url, 'http');
  if (!parsed.ok) return ctx.pipeline.refuseHttp(res, { ...parsed.reply, requestId });
  const hostCheck = checkHostHeader(req, parsed.target);
  if (hostCheck !== null && !hostCheck.ok) return ctx.pipeline.refuseHttp(res, { ...hostCheck.reply, requestId });
  const identity = identityOf(req, ctx.defaultAgentId);
  if (identity === null) return ctx.pipeline.refuseHttp(res, proxyAuthReply(requestId));
  if (ctx.draining) res.shouldKeepAlive = false;
  ctx.pipeline.request(
    { requestId, kind: 'request', identity, method: req.method ?? 'GET', target: parsed.target, pathAndQuery: parsed.pathAndQuery },
    req,
    res,
  );
}

/** A WebSocket handshake through the proxy listener (`ws://` arrives as absolute-form `http://`). */
export function onForwardUpgrade(ctx: InterceptContext, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  ctx.track(socket);
  const requestId = randomUUID();
  const url = req.url ?? '';
  const parsed = parseAbsoluteForm(url.replace(WS_SCHEME, HTTP_PREFIX), 'http');
  if (!parsed.ok) return ctx.pipeline.refuseRaw(socket, { ...parsed.reply, requestId });
  const hostCheck = checkHostHeader(req, parsed.target);
  if (hostCheck !== null && !hostCheck.ok) return ctx.pipeline.refuseRaw(socket, { ...hostCheck.reply, requestId });
  const identity = identityOf(req, ctx.defaultAgentId);
  if (identity === null) return ctx.pipeline.refuseRaw(socket, proxyAuthReply(requestId));
  ctx.pipeline.upgrade(
    { requestId, kind: 'websocket', identity, method: req.method ?? 'GET', target: parsed.target, pathAndQuery: parsed.pathAndQuery },
    req,
    socket,
    head,
  );
}
