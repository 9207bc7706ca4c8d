import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { randomUUID } from 'node:crypto';
import type { Identity, Target } from '../core/envelope.js';
import { hostPatternMatches, parseAuthority, parseHost, type ParsedAuthority } from '../core/host.js';
import type { TunnelOpener, TunnelOpening } from '../pipeline/run.js';
import type { InterceptContext } from './context.js';
import { looksLikeHttp, tunnelTarget } from './target.js';
import { identityOf, proxyAuthReply } from './proxy-auth.js';
import { readClientHello } from './tls/client-hello.js';

const CONNECT_ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';

/**
 * CONNECT (docs/listeners.md "CONNECT and TLS interception (MITM)"): a bypassed host gets a blind tunnel decided on the
 * host alone; any other is MITM'd with a leaf certificate from the local CA, and each request inside is
 * handed to the pipeline like a plain one.
 */
export function onConnect(ctx: InterceptContext, req: IncomingMessage, socket: Socket, head: Buffer): void {
  ctx.track(socket);
  const requestId = randomUUID();
  const target = parseAuthority(req.url ?? '', null);
  if (target === null) {
    ctx.pipeline.refuseRaw(socket, {
      status: 400,
      decision: 'deny',
      stage: 'intercept',
      reason: 'bad_connect_target',
      message: 'CONNECT needs host:port with a valid host name or IP literal',
      requestId,
    });
    return;
  }
  const identity = identityOf(req, ctx.defaultAgentId);
  if (identity === null) {
    ctx.pipeline.refuseRaw(socket, proxyAuthReply(requestId));
    return;
  }
  if (ctx.draining) {
    ctx.pipeline.refuseRaw(socket, {
      status: 503,
      decision: 'deny',
      stage: 'intercept',
      reason: 'shutting_down',
      message: 'the sidecar is shutting down',
      requestId,
      headers: { 'retry-after': '1' },
    });
    return;
  }
  if (identity.token === null && ctx.pipeline.tunnelNeedsToken(target.host)) {
    ctx.pipeline.refuseRaw(socket, {
      status: 407,
      decision: 'deny',
      stage: 'capability',
      reason: 'token_missing',
      message: `requests to ${target.host} need a capability token: use HTTPS_PROXY=http://AGENT_ID:TOKEN@host:port`,
      requestId,
      headers: { 'proxy-authenticate': 'Basic realm="firma"' },
    });
    return;
  }
  const tunnel: Target = { scheme: 'https', host: target.host, kind: target.kind, port: target.port };
  if (head.length > 0) socket.unshift(head);
  if (ctx.bypassHosts.some((p) => hostPatternMatches(p, target.host))) {
    ctx.pipeline.tunnel({ requestId, kind: 'tunnel', identity, method: 'CONNECT', target: tunnel, pathAndQuery: null }, socket, false, ctx.blindOpener);
  } else {
    socket.write(CONNECT_ESTABLISHED);
    void startMitm(ctx, socket, requestId, identity, tunnel);
  }
}

/**
 * Terminate TLS on `socket` with a leaf for the name the client asked for, and hand the decrypted
 * connection to the tunnel HTTP server. Plain HTTP inside CONNECT is parsed as is.
 */
export async function startMitm(ctx: InterceptContext, socket: Socket, requestId: string, identity: Identity, target: Target): Promise<void> {
  const started = Date.now();
  const { bytes, result } = await readClientHello(socket, { timeoutMs: ctx.handshakeTimeoutMs });
  if (result.state === 'not_tls') {
    if (looksLikeHttp(bytes)) {
      // Plain HTTP inside CONNECT: undici's ProxyAgent (so Node's fetch behind a proxy) tunnels http://
      // URLs this way by default. Every request in it is parsed and enforced like absolute-form HTTP.
      socket.unshift(bytes);
      ctx.tunnels.set(socket, { target: { ...target, scheme: 'http' }, identity, sniMismatch: null });
      ctx.tunnelServer.emit('connection', socket);
      socket.resume();
      return;
    }
    // Anything else that is not TLS (SSH, raw TCP…) never passes: answer in plain HTTP and close.
    ctx.pipeline.refuseRaw(socket, {
      status: 400,
      decision: 'deny',
      stage: 'intercept',
      reason: 'not_tls',
      message: 'this tunnel carries TLS or HTTP only',
      requestId,
    });
    return;
  }
  // The CONNECT was answered already, so a refusal from here on cannot be an HTTP answer: it is
  // recorded (audit and log) and the connection closed, as on the transparent listener.
  const what = { method: 'CONNECT', scheme: 'https' as const, host: target.host, port: target.port, agentId: identity.agentId };
  if (result.state !== 'ok') {
    if (bytes.length === 0) {
      // Closed (or left idle) without a byte: nothing was asked, nothing to decide or record; an idle
      // one is a bound hit all the same (docs/listeners.md "Connection bounds").
      if (result.reason === 'timeout') ctx.boundHit('handshake_timeout', socket);
      else ctx.log.debug({ request_id: requestId, host: target.host, why: result.reason }, 'tunnel closed before a ClientHello');
      socket.destroy();
      return;
    }
    if (result.reason === 'timeout') ctx.boundHit('handshake_timeout', socket);
    const reason = result.reason === 'timeout' ? 'client_hello_timeout' : 'bad_client_hello';
    ctx.pipeline.refuseDrop(socket, { status: 400, decision: 'deny', stage: 'intercept', reason, message: '', requestId }, what);
    return;
  }
  let certHost: ParsedAuthority | { host: string; kind: Target['kind'] } = target;
  let sniMismatch: string | null = null;
  if (result.serverName !== null) {
    const sni = parseHost(result.serverName);
    if (sni === null) {
      ctx.pipeline.refuseDrop(socket, {
        status: 400, decision: 'deny', stage: 'intercept', reason: 'bad_sni', message: 'the TLS server name is not a valid host name', requestId,
      }, what);
      return;
    }
    if (sni.host !== target.host) {
      // Finish the handshake for the name the client asked for, then answer every request with a
      // clear 400: nothing is ever sent to either host.
      sniMismatch = sni.host;
      certHost = sni;
    }
  }
  socket.unshift(bytes);
  let tls: TLSSocket;
  try {
    tls = new TLSSocket(socket, { isServer: true, secureContext: ctx.leafCerts.secureContextFor(certHost), ALPNProtocols: ['http/1.1'] });
  } catch (err) {
    ctx.log.error({ err, request_id: requestId }, 'could not start TLS on tunnel');
    socket.destroy();
    return;
  }
  tls.on('error', (err) => {
    ctx.log.debug({ request_id: requestId, host: target.host, code: (err as NodeJS.ErrnoException).code }, 'tunnel TLS error');
    tls.destroy();
  });
  // The handshake shares the ClientHello's bound: a client that stalls after its hello is cut too.
  const handshake = setTimeout(() => {
    ctx.boundHit('handshake_timeout', socket);
    ctx.pipeline.refuseDrop(tls, {
      status: 400, decision: 'deny', stage: 'intercept', reason: 'handshake_timeout', message: 'the TLS handshake did not complete in time', requestId,
    }, what);
  }, Math.max(0, started + ctx.handshakeTimeoutMs - Date.now()));
  tls.once('secure', () => clearTimeout(handshake));
  tls.once('close', () => clearTimeout(handshake));
  ctx.tunnels.set(tls, { target, identity, sniMismatch });
  ctx.track(tls);
  ctx.tunnelServer.emit('connection', tls);
}

/** A request on a MITM'd (or redirected) connection. */
export function onTunnelRequest(ctx: InterceptContext, req: IncomingMessage, res: ServerResponse): void {
  const requestId = randomUUID();
  const tunnel = ctx.tunnels.get(req.socket);
  if (tunnel === undefined) {
    // Cannot happen: every socket handed to the tunnel server is registered first. Fail closed.
    return ctx.pipeline.refuseHttp(res, {
      status: 400,
      decision: 'deny',
      stage: 'intercept',
      reason: 'unknown_tunnel',
      message: 'request arrived on an unknown tunnel',
      requestId,
    });
  }
  const resolved = tunnelTarget(req, tunnel);
  if (!resolved.ok) return ctx.pipeline.refuseHttp(res, { ...resolved.reply, requestId });
  if (ctx.draining) res.shouldKeepAlive = false;
  ctx.pipeline.request(
    { requestId, kind: 'request', identity: tunnel.identity, method: req.method ?? 'GET', target: resolved.target, pathAndQuery: resolved.pathAndQuery },
    req,
    res,
  );
}

/** A WebSocket handshake inside a tunnel. */
export function onTunnelUpgrade(ctx: InterceptContext, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const requestId = randomUUID();
  const tunnel = ctx.tunnels.get(socket);
  if (tunnel === undefined) {
    socket.destroy();
    return;
  }
  const resolved = tunnelTarget(req, tunnel);
  if (!resolved.ok) return ctx.pipeline.refuseRaw(socket, { ...resolved.reply, requestId });
  ctx.pipeline.upgrade(
    { requestId, kind: 'websocket', identity: tunnel.identity, method: req.method ?? 'GET', target: resolved.target, pathAndQuery: resolved.pathAndQuery },
    req,
    socket,
    head,
  );
}

/**
 * Opens a blind tunnel once the pipeline dialled its upstream: answers the CONNECT (a redirected
 * connection has none), then reads the ClientHello, which must name the host that was decided on.
 */
export function blindTunnelOpener(clientHelloTimeoutMs: number): TunnelOpener {
  return {
    async open(socket: Duplex, target: Target, transparent: boolean): Promise<TunnelOpening> {
      if (!transparent) socket.write(CONNECT_ESTABLISHED);
      const { bytes, result } = await readClientHello(socket as Socket, { timeoutMs: clientHelloTimeoutMs });
      if (result.state === 'not_tls') return { ok: false, reason: 'not_tls' };
      if (result.state === 'invalid') return { ok: false, reason: 'bad_client_hello' };
      if (result.serverName !== null) {
        const sni = parseHost(result.serverName);
        if (sni === null || sni.host !== target.host) return { ok: false, reason: 'sni_mismatch' };
      } else if (target.kind === 'dns') {
        // Without SNI a shared front (a CDN) picks its default site, not the host that was decided on.
        return { ok: false, reason: 'sni_missing' };
      }
      return { ok: true, firstBytes: bytes };
    },
  };
}
