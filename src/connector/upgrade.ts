import type { IncomingMessage, IncomingHttpHeaders } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Agent, Dispatcher } from 'undici';
import { FirmaError } from '../core/errors.js';
import type { Allowed } from '../core/decision.js';
import type { DispatchOutcome } from '../core/outcome.js';
import { sendReplyRaw } from '../core/reply.js';
import { downstreamResponseHeaders } from './headers.js';
import type { Cleared } from './preflight.js';
import type { DispatchFailure } from './failure.js';
import { Relay, originOf, pathOf, upstreamHeaders, type Ending } from './relay.js';

/**
 * Relay a WebSocket (or other `Upgrade`) handshake. A 101 joins the two sockets; any other answer is
 * relayed as an ordinary response and the connection closed.
 */
export function upgradeExchange(agent: Agent, allowed: Allowed, pre: Cleared, req: IncomingMessage, client: Duplex, head: Buffer): Promise<DispatchOutcome> {
  const protocol = req.headers.upgrade ?? 'websocket';
  return new Promise<DispatchOutcome>((resolve) => {
    const relay = new UpgradeRelay(allowed, pre, client, head, resolve);
    agent.dispatch(
      {
        origin: originOf(allowed),
        path: pathOf(allowed),
        method: 'GET',
        headers: upstreamHeaders(req, pre.credentials, true),
        upgrade: Array.isArray(protocol) ? protocol.join(', ') : protocol,
        body: null,
        headersTimeout: pre.policy.timeoutMs,
      },
      relay,
    );
  });
}

class UpgradeRelay extends Relay {
  readonly #client: Duplex;
  readonly #head: Buffer;
  readonly #allowed: Allowed;
  readonly #pre: Cleared;
  readonly #resolve: (o: DispatchOutcome) => void;
  #bytesOut = 0;

  constructor(allowed: Allowed, pre: Cleared, client: Duplex, head: Buffer, resolve: (o: DispatchOutcome) => void) {
    super(allowed, pre);
    this.#allowed = allowed;
    this.#pre = pre;
    this.#client = client;
    this.#head = head;
    this.#resolve = resolve;
    client.on('error', this.#onClientError);
  }

  /** The agent went away before the upstream answered: its abort, settled before undici reports it back. */
  readonly #onClientError = (): void => {
    if (this.settled || this.upstreamStatus !== null) return;
    const controller = this.controller;
    this.#finish({ status: 499, upstreamStatus: null, error: null, errorCode: null, clientAborted: true });
    controller?.abort(new FirmaError('FIRMA_CLIENT_CLOSED', 'agent closed the connection'));
  };

  #finish(o: Ending, bytesIn = 0): void {
    if (!this.settle()) return;
    this.#resolve({ ...o, bytesIn, bytesOut: this.#bytesOut, credentialInjected: this.#pre.credentials !== null, waitedMs: this.#pre.waitedMs, responseHash: null });
  }

  protected failWith(failure: DispatchFailure): void {
    if (this.upstreamStatus === null) sendReplyRaw(this.#client, { ...failure.reply, requestId: this.#allowed.envelope.requestId, errorCode: failure.code });
    else this.#client.destroy();
    this.#finish({ status: failure.reply.status, upstreamStatus: this.upstreamStatus, error: failure.kind, errorCode: failure.code, clientAborted: false });
  }

  onRequestUpgrade(_c: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, upstream: Duplex): void {
    this.headersArrived(statusCode);
    const client = this.#client;
    client.write(rawHead(statusCode, headers, false));
    if (this.#head.length > 0) upstream.write(this.#head);
    let up = 0;
    let down = 0;
    upstream.on('data', (b: Buffer) => (down += b.length));
    client.on('data', (b: Buffer) => (up += b.length));
    upstream.pipe(client);
    client.pipe(upstream);
    const close = (): void => {
      upstream.destroy();
      client.destroy();
      this.#bytesOut = down;
      this.#finish({ status: statusCode, upstreamStatus: statusCode, error: null, errorCode: null, clientAborted: false }, up);
    };
    upstream.on('close', close);
    client.on('close', close);
    upstream.on('error', close);
    client.on('error', close);
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return;
    this.headersArrived(statusCode);
    this.#client.write(rawHead(statusCode, headers, true));
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#bytesOut += chunk.length;
    if (!this.#client.write(chunk)) {
      c.pause();
      this.#client.once('drain', () => c.resume());
    }
  }

  onResponseEnd(): void {
    this.#client.end();
    this.#finish({ status: this.upstreamStatus ?? 502, upstreamStatus: this.upstreamStatus, error: null, errorCode: null, clientAborted: false });
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
