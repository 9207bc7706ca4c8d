import type { Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import type { Identity, Target } from '../../core/envelope.js';
import { hostPatternMatches } from '../../core/host.js';
import type { InterceptContext } from '../context.js';
import { looksLikeHttp } from '../target.js';
import { startMitm } from '../connect.js';
import { readClientHello } from '../tls/client-hello.js';
import { targetFromSni } from './listener.js';

/**
 * A connection redirected to the transparent listener (iptables REDIRECT;
 * docs/listeners.md "The transparent listener"). No CONNECT named its target, so its first bytes do: a TLS ClientHello is
 * MITM'd for its SNI (or blind-tunnelled when the SNI is a bypassed host), plain HTTP is parsed request
 * by request with each Host header as the target. From there on it is a CONNECT tunnel like any other.
 * There is no Proxy-Authorization, so the sidecar's own agent_id and token file apply. `originalPort`
 * is the port the client dialled when the kernel told it; null means the protocol's default.
 */
export function acceptTransparent(ctx: InterceptContext, socket: Socket, originalPort: number | null): void {
  ctx.track(socket);
  if (ctx.draining) {
    socket.destroy();
    return;
  }
  const requestId = randomUUID();
  const identity: Identity = { agentId: ctx.defaultAgentId, token: null, source: 'default' };
  void readClientHello(socket, { timeoutMs: ctx.handshakeTimeoutMs }).then(({ bytes, result }) => {
    if (result.state === 'not_tls') {
      if (!looksLikeHttp(bytes)) {
        ctx.pipeline.refuseRaw(socket, {
          status: 400,
          decision: 'deny',
          stage: 'intercept',
          reason: 'not_tls',
          message: 'the transparent listener carries TLS or HTTP only',
          requestId,
        });
        return;
      }
      socket.unshift(bytes);
      // `target` is a placeholder: tunnelTarget takes each request's from its Host header.
      const placeholder: Target = { scheme: 'http', host: '', kind: 'dns', port: originalPort ?? 80 };
      ctx.tunnels.set(socket, { target: placeholder, identity, sniMismatch: null, byHost: { originalPort } });
      ctx.tunnelServer.emit('connection', socket);
      socket.resume();
      return;
    }
    const what = { scheme: 'https' as const, port: originalPort ?? 443, agentId: identity.agentId };
    if (result.state !== 'ok') {
      if (bytes.length === 0) {
        // Opened and closed (or left idle) without a byte: a port probe, nothing to decide or record.
        socket.destroy();
        return;
      }
      const reason = result.reason === 'timeout' ? 'client_hello_timeout' : 'bad_client_hello';
      ctx.pipeline.refuseDrop(socket, { status: 400, decision: 'deny', stage: 'intercept', reason, message: '', requestId }, what);
      return;
    }
    const sni = targetFromSni(result.serverName, originalPort);
    if (!sni.ok) {
      ctx.pipeline.refuseDrop(socket, { status: 400, decision: 'deny', stage: 'intercept', reason: sni.reason, message: sni.message, requestId }, what);
      return;
    }
    // Both paths below read the ClientHello again (cheap, once per connection) and check it against the target.
    socket.unshift(bytes);
    if (ctx.bypassHosts.some((p) => hostPatternMatches(p, sni.target.host))) {
      ctx.pipeline.tunnel({ requestId, kind: 'tunnel', identity, method: 'CONNECT', target: sni.target, pathAndQuery: null }, socket, true, ctx.blindOpener);
    } else {
      void startMitm(ctx, socket, requestId, identity, sni.target);
    }
  });
}
