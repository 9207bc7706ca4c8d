import net from 'node:net';
import tls from 'node:tls';
import type { buildConnector } from 'undici';
import { FirmaError, systemError } from '../core/errors.js';
import type { EgressGuard, VettedAddress } from './ssrf/guard.js';

/**
 * Sockets to upstreams, always to an address the EgressGuard vetted for this very connection. The name
 * is resolved once, inside `guard.vet`; the socket is opened to the resulting IP, so a DNS answer that
 * changes between check and use (rebinding) has nothing to change. The name is kept only for TLS: SNI
 * and certificate verification are against the name the agent asked for.
 *
 * Errors: a refused destination is a `DestinationDeniedError` (`code` `FIRMA_DESTINATION_DENIED`), a
 * DNS failure an error shaped like `dns.lookup`'s with the DNS code (see ssrf/resolve.ts), a connect
 * that outlasts `timeoutMs` (DNS included) an `ETIMEDOUT` error shaped like Node's own, anything else the socket's own
 * error. undici hands a connector error to the waiting request unchanged, so the caller sees the same
 * object (see `findDestinationDenied`).
 */

export interface GuardedConnectOptions {
  /** Roots for upstream TLS; default Node's bundled roots. */
  readonly ca?: readonly string[];
  /** Bound on resolve + TCP connect (+ TLS handshake), in milliseconds. */
  readonly timeoutMs: number;
}

/** TCP keep-alive probes after this much idle, so dead upstream peers are noticed in pooled sockets. */
const KEEPALIVE_INITIAL_DELAY_MS = 60_000;
/** Same bound undici's own connector uses. */
const MAX_CACHED_SESSIONS = 100;

/** A small bounded cache of TLS sessions for resumption, keyed by servername (or IP) and port. */
class SessionCache {
  readonly #sessions = new Map<string, Buffer>();

  get(key: string): Buffer | undefined {
    return this.#sessions.get(key);
  }

  set(key: string, session: Buffer): void {
    this.#sessions.delete(key);
    if (this.#sessions.size >= MAX_CACHED_SESSIONS) {
      const oldest = this.#sessions.keys().next();
      if (oldest.done !== true) this.#sessions.delete(oldest.value);
    }
    this.#sessions.set(key, session);
  }
}

function unbracket(host: string): string {
  return host.length > 1 && host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new FirmaError('FIRMA_DIAL_FAILED', String(err));
}

/**
 * Vet, then open with `open(vetted)`, then wait for `ready`; exactly one of the two callbacks runs.
 * The deadline covers the lookup too: a resolver that never answers must not hold a request forever.
 */
function guardedDial(
  guard: EgressGuard,
  host: string,
  port: number,
  timeoutMs: number,
  open: (vetted: VettedAddress) => net.Socket,
  ready: 'connect' | 'secureConnect',
  onSocket: (socket: net.Socket) => void,
  onError: (err: Error) => void,
): void {
  let settled = false;
  let socket: net.Socket | null = null;
  const fail = (err: Error): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    socket?.destroy();
    onError(err);
  };
  const timer = setTimeout(() => {
    fail(systemError('ETIMEDOUT', 'connect', `connecting to ${host}:${port} took longer than ${timeoutMs} ms`));
  }, timeoutMs);
  guard.vet(host, port).then(
    (vetted) => {
      if (settled) return;
      let s: net.Socket;
      try {
        s = open(vetted);
      } catch (err) {
        fail(asError(err));
        return;
      }
      socket = s;
      s.setNoDelay(true);
      s.setKeepAlive(true, KEEPALIVE_INITIAL_DELAY_MS);
      // Stays attached until the hand-off, so a late error on a socket we gave up on is not unhandled.
      const onSocketError = (err: Error): void => fail(err);
      s.on('error', onSocketError);
      s.once(ready, () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        s.off('error', onSocketError);
        onSocket(s);
      });
    },
    (err: unknown) => fail(asError(err)),
  );
}

/**
 * The `connect` option of `new Agent({ connect })`: every new upstream connection goes through the guard.
 * TLS: SNI and the certificate check use the origin's hostname when it is a DNS name (not an IP literal,
 * where the certificate must carry the IP), ALPN offers only http/1.1, verification is always on. The
 * `servername` undici suggests (derived from the Host header) is ignored on purpose: the certificate must
 * prove the identity of the origin that was vetted and dialled.
 */
export function createGuardedConnect(guard: EgressGuard, tlsDefaults: GuardedConnectOptions): buildConnector.connector {
  // One context for every upstream connection: without it tls.connect builds a SecureContext per
  // socket (parsing every root again when `ca` is set), which held ~1,500 contexts and ~60 MiB with 750
  // pooled upstream connections (bench/soak.mjs, heap snapshot) and cost CPU per new connection.
  const secureContext = tls.createSecureContext(tlsDefaults.ca === undefined ? {} : { ca: [...tlsDefaults.ca] });
  const sessions = new SessionCache();
  return (opts, callback) => {
    if (opts.httpSocket !== undefined) {
      // Only undici's proxy agents upgrade an existing socket; that socket did not come through the guard.
      callback(new FirmaError('FIRMA_DIAL_UNSUPPORTED', 'the guarded connector does not upgrade existing sockets'), null);
      return;
    }
    const host = unbracket(opts.hostname);
    const secure = opts.protocol === 'https:';
    const port = opts.port === '' ? (secure ? 443 : 80) : Number(opts.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      callback(new FirmaError('FIRMA_DIAL_INVALID_PORT', `invalid upstream port ${JSON.stringify(opts.port)}`), null);
      return;
    }
    // RFC 6066: SNI carries DNS names only, without the trailing dot of a fully qualified name.
    const servername = net.isIP(host) !== 0 ? undefined : host.endsWith('.') ? host.slice(0, -1) : host;
    const open = secure
      ? (v: VettedAddress): net.Socket => {
          const key = `${servername ?? v.address}:${port}`;
          const s = tls.connect({
            host: v.address,
            port,
            servername,
            secureContext,
            ALPNProtocols: ['http/1.1'],
            rejectUnauthorized: true,
            session: sessions.get(key),
          });
          s.on('session', (session: Buffer) => sessions.set(key, session));
          return s;
        }
      : (v: VettedAddress): net.Socket => net.connect({ host: v.address, port });
    guardedDial(
      guard,
      host,
      port,
      tlsDefaults.timeoutMs,
      open,
      secure ? 'secureConnect' : 'connect',
      (socket) => callback(null, socket),
      (err) => callback(err, null),
    );
  };
}

/** A plain TCP connection for a blind tunnel, vetted exactly like `createGuardedConnect`'s. */
export function dialTcp(guard: EgressGuard, host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    guardedDial(guard, unbracket(host), port, timeoutMs, (v) => net.connect({ host: v.address, port }), 'connect', resolve, reject);
  });
}
