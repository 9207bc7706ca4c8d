/**
 * The transparent listener: connections an iptables `REDIRECT` rule sent here instead of to where the
 * agent dialled. Nothing names the target the way a CONNECT does, so it is read from the traffic: the
 * ClientHello's SNI for TLS, each request's Host header for plain HTTP. The port comes from the kernel
 * (original-dst.ts) when it can be read, else from the protocol (443 / 80). Everything after that is
 * the interceptor's: the same MITM, pipeline, connector and audit as a CONNECT tunnel.
 */
import net, { type AddressInfo, type Socket } from 'node:net';
import type { Logger } from '../../core/log.js';
import type { Target } from '../../core/envelope.js';
import { parseAuthority, parseHost } from '../../core/host.js';
import { ConntrackTable, CONNTRACK_PATH, type OriginalDestinationLookup } from './original-dst.js';
import { LISTEN_BACKLOG } from '../limits.js';

export const DEFAULT_TLS_PORT = 443;
export const DEFAULT_HTTP_PORT = 80;

export type TransparentTarget =
  | { readonly ok: true; readonly target: Target }
  | { readonly ok: false; readonly reason: string; readonly message: string };

/** The MITM target of a redirected TLS connection: the SNI host, on the port the client dialled. */
export function targetFromSni(serverName: string | null, originalPort: number | null): TransparentTarget {
  if (serverName === null) {
    return {
      ok: false,
      reason: 'no_sni',
      message: 'a redirected TLS connection must name its server (SNI): nothing else tells the sidecar the target host',
    };
  }
  const sni = parseHost(serverName);
  if (sni === null) return { ok: false, reason: 'bad_sni', message: 'the TLS server name is not a valid host name' };
  return { ok: true, target: { scheme: 'https', host: sni.host, kind: sni.kind, port: originalPort ?? DEFAULT_TLS_PORT } };
}

/**
 * The target of one plain-HTTP request on a redirected connection: the Host header's host. Its port must
 * be the one the kernel reported, when it reported one; otherwise the Host header's port, else 80.
 */
export function targetFromHostHeader(host: string | undefined, originalPort: number | null): TransparentTarget {
  if (host === undefined || host === '') {
    return { ok: false, reason: 'missing_host', message: 'a redirected HTTP request must carry a Host header naming its target' };
  }
  const parsed = parseAuthority(host, originalPort ?? DEFAULT_HTTP_PORT);
  if (parsed === null) return { ok: false, reason: 'bad_host', message: 'the Host header does not name a valid host' };
  if (originalPort !== null && parsed.port !== originalPort) {
    return { ok: false, reason: 'host_mismatch', message: 'the Host header names another port than the connection was made to' };
  }
  return { ok: true, target: { scheme: 'http', host: parsed.host, kind: parsed.kind, port: parsed.port } };
}

/** What the interceptor offers the transparent listener. */
export interface TransparentAcceptor {
  acceptTransparent(socket: Socket, originalPort: number | null): void;
}

export interface TransparentListenerOptions {
  readonly host: string;
  readonly port: number;
  readonly acceptor: TransparentAcceptor;
  readonly log: Logger;
  /**
   * How the original destination is found. Default: the conntrack table if it can be read here, else
   * none (protocol default ports). Tests pass their own.
   */
  readonly originalDestination?: OriginalDestinationLookup | null;
}

/** How the original port is found, for the ready log line. */
export type OriginalPortSource = 'conntrack' | 'protocol_default' | 'custom';

export class TransparentListener {
  readonly #server: net.Server;
  readonly #opts: TransparentListenerOptions;
  readonly #lookup: OriginalDestinationLookup | null;
  /** Sockets accepted but not yet handed on (their original destination is being looked up). */
  readonly #pending = new Set<Socket>();
  readonly originalPortSource: OriginalPortSource;
  #closed = false;

  private constructor(opts: TransparentListenerOptions, lookup: OriginalDestinationLookup | null, source: OriginalPortSource) {
    this.#opts = opts;
    this.#lookup = lookup;
    this.originalPortSource = source;
    this.#server = net.createServer({ pauseOnConnect: true }, (socket) => this.#onConnection(socket));
  }

  /** Decide how original ports are found (probing the conntrack table once), then listen. */
  static async start(opts: TransparentListenerOptions): Promise<{ listener: TransparentListener; address: AddressInfo }> {
    let lookup: OriginalDestinationLookup | null;
    let source: OriginalPortSource;
    if (opts.originalDestination !== undefined) {
      lookup = opts.originalDestination;
      source = lookup === null ? 'protocol_default' : 'custom';
    } else {
      const table = new ConntrackTable();
      const probe = await table.probe();
      if (probe.ok) {
        lookup = table.lookup;
        source = 'conntrack';
      } else {
        lookup = null;
        source = 'protocol_default';
        opts.log.warn(
          { conntrack: CONNTRACK_PATH, code: probe.code },
          'transparent listener: cannot read the conntrack table, so the port a redirected connection was made to is unknown; using 443 for TLS and 80 (or the Host header\'s port) for plain HTTP',
        );
      }
    }
    const listener = new TransparentListener(opts, lookup, source);
    const address = await listener.#listen();
    return { listener, address };
  }

  #listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.listen({ port: this.#opts.port, host: this.#opts.host, backlog: LISTEN_BACKLOG }, () => {
        this.#server.off('error', onError);
        this.#server.on('error', (err) => this.#opts.log.error({ err }, 'transparent listener error'));
        resolve(this.#server.address() as AddressInfo);
      });
    });
  }

  #onConnection(socket: Socket): void {
    socket.on('error', () => undefined);
    if (this.#closed) {
      socket.destroy();
      return;
    }
    const lookup = this.#lookup;
    const local = { address: socket.localAddress ?? '', port: socket.localPort ?? 0 };
    const remote = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
    if (lookup === null) {
      this.#opts.acceptor.acceptTransparent(socket, null);
      return;
    }
    this.#pending.add(socket);
    lookup(local, remote).then(
      (dst) => this.#handOn(socket, dst?.port ?? null),
      (err: unknown) => {
        this.#opts.log.warn({ err }, 'original destination lookup failed; using the protocol default port');
        this.#handOn(socket, null);
      },
    );
  }

  #handOn(socket: Socket, originalPort: number | null): void {
    this.#pending.delete(socket);
    if (this.#closed || socket.destroyed) {
      socket.destroy();
      return;
    }
    this.#opts.acceptor.acceptTransparent(socket, originalPort);
  }

  /**
   * Stop accepting. Connections already handed on belong to the interceptor, whose drain ends them;
   * the returned promise settles when the server has closed (after that drain).
   */
  close(): Promise<void> {
    this.#closed = true;
    for (const s of this.#pending) s.destroy();
    this.#pending.clear();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
