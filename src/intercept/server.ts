import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import type { Logger } from '../core/log.js';
import type { ConnectionBound, ConnectionMetrics } from '../core/metrics.js';
import type { SidecarReply } from '../core/reply.js';
import { ConnectionGate, LISTEN_BACKLOG, autoMaxConnections, type ConnectionLimits } from './limits.js';
import type { RequestPipeline } from '../pipeline/run.js';
import type { InterceptContext, TunnelContext } from './context.js';
import type { LeafCertificates } from './tls/leaf-certs.js';
import type { TransparentAcceptor } from './transparent/listener.js';
import { onForwardRequest, onForwardUpgrade } from './forward.js';
import { blindTunnelOpener, onConnect, onTunnelRequest, onTunnelUpgrade } from './connect.js';
import { acceptTransparent } from './transparent/accept.js';

export interface InterceptorOptions {
  readonly listenHost: string;
  readonly listenPort: number;
  readonly defaultAgentId: string;
  /** Host patterns (`api.example.com`, `*.example.com`) tunnelled blind after a host-level decision. */
  readonly bypassHosts: readonly string[];
  readonly leafCerts: LeafCertificates;
  /** Where every request goes once its target is known: the only thing that decides and dispatches. */
  readonly pipeline: RequestPipeline;
  readonly log: Logger;
  /** Time bounds and connection caps (docs/listeners.md "Connection bounds"). */
  readonly limits: ConnectionLimits;
  readonly metrics?: ConnectionMetrics;
}

function serverOptions(limits: ConnectionLimits): http.ServerOptions {
  return {
    // Long uploads and long-polls are normal for agents; slowloris is bounded by headersTimeout.
    requestTimeout: 0,
    headersTimeout: limits.headersTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // Node checks headersTimeout on this period (default 30 s, which doubled the bound): a tenth of it.
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.headersTimeoutMs / 10))),
    maxHeaderSize: 32 * 1024,
    // Node's own answer to an HTTP/1.1 request without Host is a bare 400 that never reaches us (so no
    // JSON body, no audit event); target.ts gives that answer itself.
    requireHostHeader: false,
  };
}

/**
 * The interception layer (docs/architecture.md "The request's path"): sockets in, requests out. An explicit
 * forward proxy (absolute-form HTTP and CONNECT), TLS MITM for CONNECT tunnels, blind tunnels for
 * bypassed hosts, WebSocket upgrades, and connections from the transparent listener. It reads where
 * each request goes and who sends it, then hands it to the pipeline: it never decides and never dials.
 * Built on node:http and node:tls directly; see README "Dependencies" for why not http-mitm-proxy.
 */
export class Interceptor implements TransparentAcceptor {
  readonly #opts: InterceptorOptions;
  /** The listening forward-proxy server. */
  readonly #server: http.Server;
  /** Shared with every mode's handlers; only this class sets `draining`. */
  readonly #ctx: InterceptContext & { draining: boolean };
  /** Every client socket (plain and decrypted), so a drain can end them. */
  readonly #sockets = new Set<Duplex>();
  readonly #gate: ConnectionGate;
  /** Connections refused at a cap: a request parsed on one before it closes is not served. */
  readonly #refused = new WeakSet<Duplex>();

  constructor(opts: InterceptorOptions) {
    this.#opts = opts;
    const options = serverOptions(opts.limits);
    this.#server = http.createServer(options);
    const tunnelServer = http.createServer(options);
    // The tunnel server never listens, and Node starts the periodic headersTimeout check only on
    // 'listening': without this, a tunnel that sends no request (or trickles headers) lived forever.
    tunnelServer.emit('listening');
    this.#gate = new ConnectionGate(opts.limits.maxConnections > 0 ? opts.limits.maxConnections : autoMaxConnections(), opts.limits.maxConnectionsPerClient);
    const ctx: InterceptContext & { draining: boolean } = {
      pipeline: opts.pipeline,
      log: opts.log,
      defaultAgentId: opts.defaultAgentId,
      bypassHosts: opts.bypassHosts,
      leafCerts: opts.leafCerts,
      handshakeTimeoutMs: opts.limits.handshakeTimeoutMs,
      tunnels: new WeakMap<object, TunnelContext>(),
      tunnelServer,
      blindOpener: blindTunnelOpener(opts.limits.handshakeTimeoutMs),
      draining: false,
      track: (socket) => this.#track(socket),
      boundHit: (bound, socket) => this.#boundHit(bound, socket),
    };
    this.#ctx = ctx;

    this.#server.on('connection', (s: Socket) => this.#accept(s));
    this.#server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      if (this.#refused.has(req.socket)) res.destroy();
      else onForwardRequest(ctx, req, res);
    });
    this.#server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (this.#refused.has(socket)) socket.destroy();
      else onConnect(ctx, req, socket as Socket, head);
    });
    this.#server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (this.#refused.has(socket)) socket.destroy();
      else onForwardUpgrade(ctx, req, socket, head);
    });
    this.#server.on('clientError', (err: Error, socket: Duplex) => this.#onClientError(err, socket));

    tunnelServer.on('request', (req: IncomingMessage, res: ServerResponse) => onTunnelRequest(ctx, req, res));
    tunnelServer.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => onTunnelUpgrade(ctx, req, socket, head));
    tunnelServer.on('connect', (_req: IncomingMessage, socket: Duplex) => {
      opts.pipeline.refuseRaw(socket, {
        status: 400,
        decision: 'deny',
        stage: 'intercept',
        reason: 'nested_connect',
        message: 'CONNECT inside a tunnel is not allowed',
        requestId: randomUUID(),
      });
    });
    tunnelServer.on('clientError', (err: Error, socket: Duplex) => this.#onClientError(err, socket));
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.listen({ port: this.#opts.listenPort, host: this.#opts.listenHost, backlog: LISTEN_BACKLOG }, () => {
        this.#server.off('error', onError);
        this.#server.on('error', (err) => this.#opts.log.error({ err }, 'proxy listener error'));
        resolve(this.#server.address() as AddressInfo);
      });
    });
  }

  /** Client connections open now (both listeners; a tunnel counts once). */
  get openConnections(): number {
    return this.#gate.open;
  }

  /** The connection cap in force (configured, or from the open-files limit). */
  get maxConnections(): number {
    return this.#gate.max;
  }

  get inFlight(): number {
    return this.#opts.pipeline.inFlight;
  }

  get draining(): boolean {
    return this.#ctx.draining;
  }

  /**
   * Stop accepting, let in-flight requests finish for up to `graceMs`, then cut whatever is left
   * (idle keep-alive connections and tunnels are closed at once).
   */
  async drain(graceMs: number): Promise<{ cut: number }> {
    this.#ctx.draining = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeIdleConnections();
    this.#ctx.tunnelServer.closeIdleConnections();
    await this.#opts.pipeline.whenIdle(graceMs);
    // Told before the sockets go, so the outcomes of what is cut say `shutdown`, not the agent's abort.
    const cut = this.#opts.pipeline.cutInFlight();
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    await closed;
    this.#ctx.tunnelServer.close(() => undefined); // stops its headersTimeout check (it never listened)
    return { cut };
  }

  /** A connection handed over by the transparent listener (transparent/accept.ts). */
  acceptTransparent(socket: Socket, originalPort: number | null): void {
    const bound = this.#gate.admit(socket);
    if (bound !== null) {
      // No HTTP can be answered before the first bytes say what the connection carries: recorded, closed.
      this.#boundHit(bound, socket);
      this.#opts.pipeline.refuseDrop(socket, capReply(bound), { agentId: this.#opts.defaultAgentId });
      return;
    }
    acceptTransparent(this.#ctx, socket, originalPort);
  }

  /** A new connection on the proxy listener: counted, or refused at a cap with a 503 before any request. */
  #accept(socket: Socket): void {
    this.#track(socket);
    const bound = this.#gate.admit(socket);
    if (bound === null) return;
    this.#refused.add(socket);
    this.#boundHit(bound, socket);
    this.#opts.pipeline.refuseRaw(socket, capReply(bound));
  }

  #boundHit(bound: ConnectionBound, socket: Duplex): void {
    this.#opts.metrics?.connectionBoundHit(bound);
    const remote = (socket as Partial<Socket>).remoteAddress;
    this.#opts.log.warn({ bound, remote, open: this.#gate.open, max_connections: this.#gate.max }, 'client connection closed at a bound');
  }

  #track(socket: Duplex): void {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    // A client that resets mid-request must never surface as an unhandled 'error'.
    socket.on('error', () => undefined);
  }

  /** Bytes Node's HTTP parser rejected: a clear 4xx and an audit event, never a bare close. */
  #onClientError(err: Error & { code?: string }, socket: Duplex): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
    if (timeout) this.#boundHit('headers_timeout', socket);
    this.#opts.pipeline.refuseRaw(socket, {
      status: tooLarge ? 431 : timeout ? 408 : 400,
      decision: 'deny',
      stage: 'intercept',
      reason: tooLarge ? 'headers_too_large' : timeout ? 'request_timeout' : 'malformed_request',
      message: tooLarge
        ? 'request headers are too large'
        : timeout
          ? 'the request headers did not arrive in time'
          : 'the request is not valid HTTP/1.1',
      requestId: randomUUID(),
    });
  }
}

function capReply(bound: ConnectionBound): SidecarReply {
  return {
    status: 503,
    decision: 'deny',
    stage: 'intercept',
    reason: 'too_many_connections',
    message: bound === 'max_connections'
      ? 'the sidecar has as many client connections open as it may (max_connections); retry shortly'
      : 'this client has as many connections open as it may (max_connections_per_client); retry shortly',
    requestId: randomUUID(),
    headers: RETRY_AFTER_1,
  };
}

const RETRY_AFTER_1: Readonly<Record<string, string>> = { 'retry-after': '1' };
