import type { IncomingMessage } from 'node:http';
import type { Dispatcher } from 'undici';
import { FirmaError } from '../core/errors.js';
import type { Allowed } from '../core/decision.js';
import type { DispatchOutcome } from '../core/outcome.js';
import { formatAuthority } from '../core/host.js';
import type { ResolvedCredential } from './credentials.js';
import type { Cleared } from './preflight.js';
import { upstreamRequestHeaders } from './headers.js';
import { describeFailure, type DispatchFailure } from './failure.js';

/** How a relay ended, before the counts every outcome carries are added. */
export type Ending = Pick<DispatchOutcome, 'status' | 'upstreamStatus' | 'error' | 'errorCode' | 'clientAborted'>;

/** The abort reason for a request already answered before undici could start it (never seen by anyone). */
const ABANDONED = new FirmaError('FIRMA_DISPATCH_ABANDONED', 'answered before the upstream connection was ready');

/**
 * One dispatch through undici, whatever it relays into (an HTTP response, or a raw upgraded socket):
 * it settles once, and one timer bounds connect + time to response headers against the request's
 * deadline. undici hands out the controller only once a connected socket takes the request, so a
 * deadline that passes while connecting (a blackholed address, a slow TLS handshake) is answered here,
 * and the request is aborted the moment it would start. Subclasses say how a failure is answered.
 */
export abstract class Relay implements Dispatcher.DispatchHandler {
  protected controller: Dispatcher.DispatchController | null = null;
  protected upstreamStatus: number | null = null;
  protected settled = false;
  readonly #timer: NodeJS.Timeout;
  readonly #allowed: Allowed;

  constructor(allowed: Allowed, pre: Cleared) {
    this.#allowed = allowed;
    this.#timer = setTimeout(deadlinePassed, Math.max(1, pre.deadline - performance.now()), this);
  }

  /** Answer `failure` in place of the upstream (or cut the stream if it already began), then settle. */
  protected abstract failWith(failure: DispatchFailure): void;

  fail(err: unknown): void {
    if (this.settled) return;
    this.failWith(describeFailure(err, this.#allowed.envelope.target));
  }

  /** The deadline passed: abort a started request, or answer one that is still connecting. */
  expire(): void {
    if (this.upstreamStatus !== null) return;
    const err = new FirmaError('FIRMA_UPSTREAM_DEADLINE', 'deadline passed');
    if (this.controller !== null) this.controller.abort(err);
    else this.fail(err);
  }

  /** Mark the relay settled and stop the deadline; false when it already was. */
  protected settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    clearTimeout(this.#timer);
    return true;
  }

  /** Response headers arrived: the deadline no longer applies. */
  protected headersArrived(statusCode: number): void {
    this.upstreamStatus = statusCode;
    clearTimeout(this.#timer);
  }

  onRequestStart(c: Dispatcher.DispatchController): void {
    this.controller = c;
    // Answered (deadline) or abandoned (agent gone) while the connection was being made: never send it.
    if (this.settled) c.abort(ABANDONED);
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.fail(err);
  }
}

function deadlinePassed(relay: Relay): void {
  relay.expire();
}

/**
 * Headers for upstream: the agent's minus hop-by-hop; where credentials are injected, minus each one's
 * `removes` (its own header and the agent's placeholder keys), then the credentials.
 */
export function upstreamHeaders(req: IncomingMessage, credentials: readonly ResolvedCredential[] | null, keepUpgrade: boolean): string[] {
  const headers = upstreamRequestHeaders(req.rawHeaders, req.headers.connection, keepUpgrade);
  if (credentials === null) return headers;
  const out: string[] = [];
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const lower = (headers[i] as string).toLowerCase();
    if (!removedBy(credentials, lower)) out.push(headers[i] as string, headers[i + 1] as string);
  }
  for (const c of credentials) out.push(c.header, c.value);
  return out;
}

function removedBy(credentials: readonly ResolvedCredential[], lowerName: string): boolean {
  for (const c of credentials) if (c.removes.has(lowerName)) return true;
  return false;
}

export function originOf(allowed: Allowed): string {
  const t = allowed.envelope.target;
  return `${t.scheme}://${formatAuthority(t)}`;
}

export function pathOf(allowed: Allowed): string {
  const e = allowed.envelope;
  const path = e.path ?? '/';
  return e.query === null ? path : `${path}?${e.query}`;
}
