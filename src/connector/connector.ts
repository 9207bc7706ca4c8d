import type { IncomingMessage, ServerResponse, IncomingHttpHeaders } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import { readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { rootCertificates } from 'node:tls';
import { Agent, type Dispatcher } from 'undici';
import type { Allowed } from '../enforce/decision.js';
import { isIssuedAllowed } from '../enforce/pipeline.js';
import { FirmaError } from '../errors.js';
import { downstreamResponseHeaders, upstreamRequestHeaders } from '../intercept/headers.js';
import { sendReply, sendReplyRaw, type SidecarReply } from '../intercept/respond.js';
import { formatAuthority } from '../intercept/hostname.js';
import { CONNECTOR_ERROR_STATUS, classifyUpstreamError, type ConnectorErrorKind } from './errors.js';

export interface ConnectorOptions {
  readonly defaultTimeoutMs: number;
  /** Max silence between two body chunks of a streaming response (or request) before it is cut. */
  readonly idleTimeoutMs: number;
  /** Extra trusted roots for upstream TLS, added to Node's bundled roots (and NODE_EXTRA_CA_CERTS). */
  readonly extraCaPems?: readonly string[];
}

/** What happened to one dispatch; handed to the decision log line and, later, the audit outcome event. */
export interface DispatchOutcome {
  /** Upstream status, or the sidecar's own status when it answered in place of the upstream. */
  readonly status: number;
  readonly upstreamStatus: number | null;
  readonly error: ConnectorErrorKind | null;
  readonly errorCode: string | null;
  /** Request body bytes read from the agent. */
  readonly bytesIn: number;
  /** Response body bytes written to the agent. */
  readonly bytesOut: number;
  /** The agent went away before the response finished. */
  readonly clientAborted: boolean;
}

export type TunnelDial =
  | { readonly ok: true; readonly socket: Socket }
  | { readonly ok: false; readonly error: ConnectorErrorKind; readonly reply: Omit<SidecarReply, 'requestId'> };

const EVENT_STREAM = 'text/event-stream';

function originOf(allowed: Allowed): string {
  const t = allowed.envelope.target;
  return `${t.scheme}://${formatAuthority(t)}`;
}

function pathOf(allowed: Allowed): string {
  const e = allowed.envelope;
  const path = e.path ?? '/';
  return e.query === null ? path : `${path}?${e.query}`;
}

function hasRequestBody(req: IncomingMessage): boolean {
  const te = req.headers['transfer-encoding'];
  if (te !== undefined) return true;
  const cl = req.headers['content-length'];
  return cl !== undefined && cl !== '0';
}

/**
 * The egress half: takes an `Allowed` from the pipeline and nothing else, dispatches it with undici
 * (keep-alive pools per origin), and streams both bodies with backpressure. It never retries, never
 * rewrites the payload and never decides; it reports a typed outcome.
 */
export class Connector {
  readonly #agent: Agent;
  readonly #opts: ConnectorOptions;

  constructor(opts: ConnectorOptions) {
    this.#opts = opts;
    const connect: Record<string, unknown> = { timeout: opts.defaultTimeoutMs };
    if (opts.extraCaPems !== undefined && opts.extraCaPems.length > 0) {
      connect['ca'] = [...bundledAndEnvRoots(), ...opts.extraCaPems];
    }
    this.#agent = new Agent({
      connect,
      headersTimeout: opts.defaultTimeoutMs,
      bodyTimeout: opts.idleTimeoutMs,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
    });
  }

  #check(allowed: Allowed): void {
    // The type system already demands an Allowed; this catches a cast that forged one.
    if (!isIssuedAllowed(allowed)) {
      throw new FirmaError('FIRMA_NOT_ALLOWED', 'connector refused a request the pipeline did not allow');
    }
  }

  /** Forward an ordinary HTTP exchange and stream the answer into `res`. */
  forward(allowed: Allowed, req: IncomingMessage, res: ServerResponse): Promise<DispatchOutcome> {
    this.#check(allowed);
    const requestId = allowed.envelope.requestId;
    let bytesIn = 0;
    // Pull-based: undici reads the next chunk only when the upstream socket can take it, so a slow
    // upstream slows the agent's upload instead of filling the sidecar's memory. (A 'data' listener
    // here would switch the stream to flowing mode and lose chunks before undici attaches.)
    const body = hasRequestBody(req)
      ? (async function* counted(): AsyncGenerator<Buffer> {
          for await (const chunk of req) {
            bytesIn += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
        })()
      : null;

    return new Promise<DispatchOutcome>((resolve) => {
      let bytesOut = 0;
      let upstreamStatus: number | null = null;
      let settled = false;
      let controller: Dispatcher.DispatchController | null = null;
      let waitingForDrain = false;

      const finish = (o: Omit<DispatchOutcome, 'bytesIn' | 'bytesOut'>): void => {
        if (settled) return;
        settled = true;
        res.off('close', onClientClose);
        resolve({ ...o, bytesIn, bytesOut });
      };
      const onClientClose = (): void => {
        if (settled || res.writableFinished) return;
        controller?.abort(new FirmaError('FIRMA_CLIENT_CLOSED', 'agent closed the connection'));
        finish({ status: upstreamStatus ?? 499, upstreamStatus, error: null, errorCode: null, clientAborted: true });
      };
      const onDrain = (): void => {
        waitingForDrain = false;
        controller?.resume();
      };
      res.on('close', onClientClose);

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(c) {
          controller = c;
        },
        onResponseStart(c, statusCode, headers, statusMessage) {
          if (statusCode < 200) return; // 1xx interim answers are not relayed
          upstreamStatus = statusCode;
          res.writeHead(statusCode, statusMessage, downstreamResponseHeaders(headers as IncomingHttpHeaders));
          // Streams (SSE) must show their headers at once; other responses let the first write carry them.
          const ct = headers['content-type'];
          if (typeof ct === 'string' && ct.startsWith(EVENT_STREAM)) res.flushHeaders();
        },
        onResponseData(c, chunk) {
          bytesOut += chunk.length;
          if (!res.write(chunk) && !waitingForDrain) {
            waitingForDrain = true;
            c.pause();
            res.once('drain', onDrain);
          }
        },
        onResponseEnd() {
          res.end();
          finish({ status: upstreamStatus ?? 502, upstreamStatus, error: null, errorCode: null, clientAborted: false });
        },
        onResponseError(_c, err) {
          if (settled) return;
          const classified = classifyUpstreamError(err);
          if (upstreamStatus === null && !res.headersSent) {
            const status = CONNECTOR_ERROR_STATUS[classified.kind];
            sendReply(res, {
              status,
              decision: 'allow',
              stage: 'connector',
              reason: classified.kind,
              message: upstreamMessage(classified.kind, classified.code, allowed),
              requestId,
            });
            finish({ status, upstreamStatus, error: classified.kind, errorCode: classified.code, clientAborted: false });
          } else {
            // Headers already went out: the only honest signal left is to cut the stream.
            res.destroy();
            finish({
              status: upstreamStatus ?? 502,
              upstreamStatus,
              error: classified.kind,
              errorCode: classified.code,
              clientAborted: false,
            });
          }
        },
      };

      this.#agent.dispatch(
        {
          origin: originOf(allowed),
          path: pathOf(allowed),
          method: allowed.envelope.method as Dispatcher.HttpMethod,
          headers: upstreamRequestHeaders(req.rawHeaders, req.headers.connection),
          // undici accepts an AsyncIterable body (docs: Dispatcher.dispatch); its .d.ts omits it.
          body: body as unknown as Readable | null,
        },
        handler,
      );
    });
  }

  /**
   * Relay a WebSocket (or other `Upgrade`) handshake. A 101 joins the two sockets; any other answer is
   * relayed as an ordinary response and the connection closed.
   */
  upgrade(allowed: Allowed, req: IncomingMessage, client: Duplex, head: Buffer): Promise<DispatchOutcome> {
    this.#check(allowed);
    const requestId = allowed.envelope.requestId;
    const protocol = req.headers.upgrade ?? 'websocket';
    return new Promise<DispatchOutcome>((resolve) => {
      let bytesOut = 0;
      let upstreamStatus: number | null = null;
      let settled = false;
      const finish = (o: Omit<DispatchOutcome, 'bytesIn' | 'bytesOut'>, bytesIn = 0): void => {
        if (settled) return;
        settled = true;
        resolve({ ...o, bytesIn, bytesOut });
      };
      let controller: Dispatcher.DispatchController | null = null;
      client.on('error', () => controller?.abort(new FirmaError('FIRMA_CLIENT_CLOSED', 'agent closed the connection')));

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(c) {
          controller = c;
        },
        onRequestUpgrade(_c, statusCode, headers, upstream) {
          upstreamStatus = statusCode;
          client.write(rawHead(statusCode, headers as IncomingHttpHeaders, false));
          if (head.length > 0) upstream.write(head);
          let up = 0;
          let down = 0;
          upstream.on('data', (b: Buffer) => (down += b.length));
          client.on('data', (b: Buffer) => (up += b.length));
          upstream.pipe(client);
          client.pipe(upstream);
          const close = (): void => {
            upstream.destroy();
            client.destroy();
            bytesOut = down;
            finish({ status: statusCode, upstreamStatus, error: null, errorCode: null, clientAborted: false }, up);
          };
          upstream.on('close', close);
          client.on('close', close);
          upstream.on('error', close);
          client.on('error', close);
        },
        onResponseStart(_c, statusCode, headers) {
          if (statusCode < 200) return;
          upstreamStatus = statusCode;
          client.write(rawHead(statusCode, headers as IncomingHttpHeaders, true));
        },
        onResponseData(c, chunk) {
          bytesOut += chunk.length;
          if (!client.write(chunk)) {
            c.pause();
            client.once('drain', () => c.resume());
          }
        },
        onResponseEnd() {
          client.end();
          finish({ status: upstreamStatus ?? 502, upstreamStatus, error: null, errorCode: null, clientAborted: false });
        },
        onResponseError(_c, err) {
          if (settled) return;
          const classified = classifyUpstreamError(err);
          const status = CONNECTOR_ERROR_STATUS[classified.kind];
          if (upstreamStatus === null) {
            sendReplyRaw(client, {
              status,
              decision: 'allow',
              stage: 'connector',
              reason: classified.kind,
              message: upstreamMessage(classified.kind, classified.code, allowed),
              requestId,
            });
          } else {
            client.destroy();
          }
          finish({ status, upstreamStatus, error: classified.kind, errorCode: classified.code, clientAborted: false });
        },
      };
      this.#agent.dispatch(
        {
          origin: originOf(allowed),
          path: pathOf(allowed),
          method: 'GET',
          headers: upstreamRequestHeaders(req.rawHeaders, req.headers.connection, true),
          upgrade: Array.isArray(protocol) ? protocol.join(', ') : protocol,
          body: null,
        },
        handler,
      );
    });
  }

  /**
   * Open the upstream TCP connection of a blind (bypassed) tunnel. The caller answers the CONNECT only
   * after this succeeded, so an unreachable upstream is a real 502/504, not a dead tunnel.
   */
  dialTunnel(allowed: Allowed): Promise<TunnelDial> {
    this.#check(allowed);
    const t = allowed.envelope.target;
    return new Promise<TunnelDial>((resolve) => {
      const socket = netConnect({ host: t.host, port: t.port });
      const fail = (err: unknown): void => {
        socket.destroy();
        const c = classifyUpstreamError(err);
        resolve({
          ok: false,
          error: c.kind,
          reply: {
            status: CONNECTOR_ERROR_STATUS[c.kind],
            decision: 'allow',
            stage: 'connector',
            reason: c.kind,
            message: upstreamMessage(c.kind, c.code, allowed),
          },
        });
      };
      socket.setTimeout(this.#opts.defaultTimeoutMs, () =>
        fail(new FirmaError('UND_ERR_CONNECT_TIMEOUT', 'connect timeout')),
      );
      socket.once('error', fail);
      socket.once('connect', () => {
        socket.setTimeout(0);
        socket.off('error', fail);
        socket.on('error', () => undefined); // the tunnel's close handler reports it
        resolve({ ok: true, socket });
      });
    });
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }

  async destroy(): Promise<void> {
    await this.#agent.destroy();
  }
}

/** Status line and headers for a response written straight onto a socket. */
function rawHead(status: number, headers: IncomingHttpHeaders, close: boolean): string {
  let s = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
  const keep = close ? downstreamResponseHeaders(headers) : headers;
  for (const name in keep) {
    if (close && name === 'content-length') continue; // body is delimited by the close
    const value = keep[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) s += `${name}: ${v}\r\n`;
    else s += `${name}: ${String(value)}\r\n`;
  }
  if (close) s += 'connection: close\r\n';
  return s + '\r\n';
}

function upstreamMessage(kind: ConnectorErrorKind, code: string, allowed: Allowed): string {
  const where = formatAuthority(allowed.envelope.target);
  switch (kind) {
    case 'timeout':
      return `upstream ${where} did not answer in time (${code})`;
    case 'invalid_request':
      return `the request could not be sent to ${where} as received (${code})`;
    default:
      return `upstream ${where} could not be reached (${code})`;
  }
}

/** Node's bundled roots plus NODE_EXTRA_CA_CERTS, because setting `ca` replaces both. */
function bundledAndEnvRoots(): string[] {
  const roots: string[] = [...rootCertificates];
  const extra = process.env['NODE_EXTRA_CA_CERTS'];
  if (extra !== undefined && extra !== '') {
    try {
      roots.push(readFileSync(extra, 'utf8'));
    } catch {
      // Node itself only warns on an unreadable NODE_EXTRA_CA_CERTS; do the same (no crash, no trust).
    }
  }
  return roots;
}
