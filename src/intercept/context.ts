import type http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Identity, Target } from '../core/envelope.js';
import type { Logger } from '../core/log.js';
import type { ConnectionBound } from '../core/metrics.js';
import type { RequestPipeline, TunnelOpener } from '../pipeline/run.js';
import type { LeafCertificates } from './tls/leaf-certs.js';

/** What a MITM'd (or redirected) connection remembers about how it was opened. */
export interface TunnelContext {
  readonly target: Target;
  readonly identity: Identity;
  /** The ClientHello named another host than the CONNECT target: every request in it gets a 400. */
  readonly sniMismatch: string | null;
  /**
   * Plain HTTP redirected to the transparent listener: no CONNECT named a target, so each request's Host
   * header does (`target` is then a placeholder). `originalPort` is the port the client dialled, if known.
   */
  readonly byHost?: { readonly originalPort: number | null };
}

/** What every mode of the interceptor (forward, CONNECT, transparent) shares. */
export interface InterceptContext {
  readonly pipeline: RequestPipeline;
  readonly log: Logger;
  readonly defaultAgentId: string;
  /** Host patterns (`api.example.com`, `*.example.com`) tunnelled blind after a host-level decision. */
  readonly bypassHosts: readonly string[];
  readonly leafCerts: LeafCertificates;
  /** From the CONNECT answer (or a redirected accept) to a completed TLS handshake. */
  readonly handshakeTimeoutMs: number;
  /** Every socket handed to `tunnelServer`, registered before it is handed over. */
  readonly tunnels: WeakMap<object, TunnelContext>;
  /** Never listens: it parses HTTP on decrypted tunnel sockets handed to it with 'connection'. */
  readonly tunnelServer: http.Server;
  /** Answers the CONNECT of a blind tunnel and checks its ClientHello (connect.ts). */
  readonly blindOpener: TunnelOpener;
  readonly draining: boolean;
  /** Remember a client socket, so a drain can end it. */
  track(socket: Duplex): void;
  /** A connection closed or refused at a bound: one log line and the metric (the caller records the rest). */
  boundHit(bound: ConnectionBound, socket: Duplex): void;
}
