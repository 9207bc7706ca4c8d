import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import type { Logger } from '../core/log.js';
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
  /** How long a fresh tunnel may take to send its first TLS bytes. */
  readonly clientHelloTimeoutMs?: number;
}

const SERVER_OPTIONS: http.ServerOptions = {
  // Long uploads and long-polls are normal for agents; slowloris is bounded by headersTimeout.
  requestTimeout: 0,
  headersTimeout: 30_000,
  keepAliveTimeout: 30_000,
  maxHeaderSize: 32 * 1024,
  // Node's own answer to an HTTP/1.1 request without Host is a bare 400 that never reaches us (so no
  // JSON body, no audit event); target.ts gives that answer itself.
  requireHostHeader: false,
};

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

  constructor(opts: InterceptorOptions) {
    this.#opts = opts;
    this.#server = http.createServer(SERVER_OPTIONS);
    const tunnelServer = http.createServer(SERVER_OPTIONS);
    const ctx: InterceptContext & { draining: boolean } = {
      pipeline: opts.pipeline,
      log: opts.log,
      defaultAgentId: opts.defaultAgentId,
      bypassHosts: opts.bypassHosts,
      leafCerts: opts.leafCerts,
      clientHelloTimeoutMs: opts.clientHelloTimeoutMs ?? 10_000,
      tunnels: new WeakMap<object, TunnelContext>(),
      tunnelServer,
      blindOpener: blindTunnelOpener(opts.clientHelloTimeoutMs ?? 10_000),
      draining: false,
      track: (socket) => this.#track(socket),
    };
    this.#ctx = ctx;

    this.#server.on('connection', (s: Socket) => this.#track(s));
    this.#server.on('request', (req: IncomingMessage, res: ServerResponse) => onForwardRequest(ctx, req, res));
    this.#server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => onConnect(ctx, req, socket as Socket, head));
    this.#server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => onForwardUpgrade(ctx, req, socket, head));
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
      this.#server.listen(this.#opts.listenPort, this.#opts.listenHost, () => {
        this.#server.off('error', onError);
        this.#server.on('error', (err) => this.#opts.log.error({ err }, 'proxy listener error'));
        resolve(this.#server.address() as AddressInfo);
      });
    });
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
    return { cut };
  }

  /** A connection handed over by the transparent listener (transparent/accept.ts). */
  acceptTransparent(socket: Socket, originalPort: number | null): void {
    acceptTransparent(this.#ctx, socket, originalPort);
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
