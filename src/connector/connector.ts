import type { IncomingMessage, ServerResponse, IncomingHttpHeaders } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import { readFileSync } from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import type { Socket } from 'node:net';
import { rootCertificates } from 'node:tls';
import { Agent, type Dispatcher } from 'undici';
import type { Allowed } from '../core/decision.js';
import { isIssuedAllowed } from '../enforce/pipeline.js';
import { FirmaError, errorCode } from '../core/errors.js';
import { hasRequestBody } from '../core/http.js';
import type { BufferedBody, DispatchOutcome } from '../core/outcome.js';
import { downstreamResponseHeaders, upstreamRequestHeaders } from './headers.js';
import { sendReply, sendReplyRaw, type SidecarReply } from '../core/reply.js';
import { formatAuthority } from '../core/host.js';
import { CONNECTOR_ERROR_STATUS, classifyUpstreamError, findDestinationDenied } from './errors.js';
import type { ConnectorErrorKind } from '../core/outcome.js';
import type { HostPolicies, HostPolicy } from './host-policy.js';
import type { RateLimiter } from './rate-limit/types.js';
import type { CredentialInjector } from './credentials.js';
import type { EgressGuard } from './ssrf/guard.js';
import { createGuardedConnect, dialTcp } from './dial.js';
import type { RateLimitMetrics } from '../core/metrics.js';

/** The per-host settings a hot reload may replace (as one value: a request reads them once). */
export interface EgressSettings {
  /** Per-host timeouts and rate-limit buckets. */
  readonly hosts: HostPolicies;
  /** Token buckets; null when no host has a rate limit. */
  readonly limiter: RateLimiter | null;
  /** Credentials to inject after allow; null when none are configured. */
  readonly credentials: CredentialInjector | null;
}

export interface ConnectorOptions extends EgressSettings {
  /** SSRF guard applied when a connection is dialled. */
  readonly guard: EgressGuard;
  /** Extra trusted roots for upstream TLS, added to Node's bundled roots (and NODE_EXTRA_CA_CERTS). */
  readonly extraCaPems?: readonly string[];
  /** Rate-limit waits and rejections per configured bucket (`/metrics`). */
  readonly metrics?: RateLimitMetrics;
}

/** Everything decided before a byte goes upstream: the deadline and the credential to inject. */
type Preflight =
  | { readonly ok: true; readonly deadline: number; readonly policy: HostPolicy; readonly credentials: readonly ResolvedCredential[] | null; readonly waitedMs: number }
  | { readonly ok: false; readonly reply: Omit<SidecarReply, 'requestId'>; readonly error: ConnectorErrorKind; readonly errorCode: string; readonly waitedMs: number };

interface ResolvedCredential {
  readonly header: string;
  readonly value: string;
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


/**
 * The egress half: takes an `Allowed` from the pipeline and nothing else, applies the host's limits,
 * injects the credential the agent must never hold, dispatches with undici (keep-alive pools per
 * origin, dialled through the SSRF guard) and streams both bodies with backpressure. It never retries,
 * never rewrites the payload and never decides on policy; it reports a typed outcome.
 */
export class Connector {
  readonly #agent: Agent;
  readonly #opts: ConnectorOptions;
  #egress: EgressSettings;

  constructor(opts: ConnectorOptions) {
    this.#opts = opts;
    this.#egress = { hosts: opts.hosts, limiter: opts.limiter, credentials: opts.credentials };
    const ca = opts.extraCaPems !== undefined && opts.extraCaPems.length > 0 ? [...bundledAndEnvRoots(), ...opts.extraCaPems] : undefined;
    this.#agent = new Agent({
      connect: createGuardedConnect(opts.guard, { ...(ca !== undefined ? { ca } : {}), timeoutMs: MAX_CONNECT_MS }),
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
    });
  }

  /** Hot reload: requests that have not started their preflight use `egress`; the others keep theirs. */
  setEgress(egress: EgressSettings): void {
    this.#egress = egress;
  }

  #check(allowed: Allowed): void {
    // The type system already demands an Allowed; this catches a cast that forged one.
    if (!isIssuedAllowed(allowed)) {
      throw new FirmaError('FIRMA_NOT_ALLOWED', 'connector refused a request the pipeline did not allow');
    }
  }

  /**
   * Rate limit, then credential. Both run after the decision and before any byte goes upstream; either
   * failing means the request is not dispatched at all.
   */
  async #preflight(allowed: Allowed): Promise<Preflight> {
    const target = allowed.envelope.target;
    const egress = this.#egress; // read once: a reload meanwhile does not mix two sets of settings
    const policy = egress.hosts.for(target);
    const deadline = performance.now() + policy.timeoutMs;
    let waitedMs = 0;
    if (policy.bucket !== null && egress.limiter !== null) {
      const got = await egress.limiter.acquire(policy.bucket, deadline);
      if (!got.ok) {
        this.#opts.metrics?.rateLimitRejected(policy.bucket, got.reason);
        const unavailable = got.reason === 'limiter_unavailable';
        const seconds = Math.max(1, Math.ceil(got.retryAfterMs / 1000));
        return {
          ok: false,
          error: 'rate_limited',
          errorCode: unavailable ? 'LIMITER_UNAVAILABLE' : 'RATE_LIMITED',
          waitedMs,
          reply: {
            status: unavailable ? 503 : 429,
            decision: 'allow',
            stage: 'connector',
            reason: unavailable ? 'limiter_unavailable' : 'rate_limited',
            message: unavailable
              ? `the shared rate limit for ${policy.bucket} cannot be checked (Redis unreachable), so the request was not sent`
              : `rate limit for ${policy.bucket} (${policy.rps}/s, burst ${policy.burst}): no token within ${policy.timeoutMs} ms`,
            headers: { 'retry-after': String(seconds) },
          },
        };
      }
      waitedMs = got.waitedMs;
      this.#opts.metrics?.rateLimitGranted(policy.bucket, waitedMs);
    }
    let credentials: ResolvedCredential[] | null = null;
    const injector = egress.credentials;
    // Unclassified traffic let through unprotected never carries a credential, and a blind tunnel
    // (kind "tunnel") cannot: fetching one there would only add a way to fail (Vault down → 502).
    const entries = allowed.passthrough || allowed.envelope.kind === 'tunnel' ? NONE : injector?.matchAll(target) ?? NONE;
    if (injector !== null && entries.length > 0) {
      try {
        credentials = await Promise.all(entries.map((e) => injector.resolve(e)));
      } catch (err) {
        return {
          ok: false,
          error: 'credential',
          errorCode: errorCode(err) ?? 'FIRMA_CREDENTIAL_UNAVAILABLE',
          waitedMs,
          reply: {
            status: 502,
            decision: 'allow',
            stage: 'credentials',
            reason: 'credential',
            // CredentialError messages are written to be safe (source and cause, never the value).
            message: err instanceof FirmaError ? err.message : `the credential for ${formatAuthority(target)} could not be obtained`,
          },
        };
      }
    }
    return { ok: true, deadline, policy, credentials, waitedMs };
  }

  /** Headers for upstream: the agent's minus hop-by-hop, each credential replacing any same-named header. */
  #headers(req: IncomingMessage, credentials: readonly ResolvedCredential[] | null, keepUpgrade: boolean): string[] {
    const headers = upstreamRequestHeaders(req.rawHeaders, req.headers.connection, keepUpgrade);
    if (credentials === null) return headers;
    const replaced = new Set(credentials.map((c) => c.header.toLowerCase()));
    const out: string[] = [];
    for (let i = 0; i + 1 < headers.length; i += 2) {
      if (!replaced.has((headers[i] as string).toLowerCase())) out.push(headers[i] as string, headers[i + 1] as string);
    }
    for (const c of credentials) out.push(c.header, c.value);
    return out;
  }

  /** Forward an ordinary HTTP exchange and stream the answer into `res`. */
  async forward(allowed: Allowed, req: IncomingMessage, res: ServerResponse, buffered: BufferedBody | null = null): Promise<DispatchOutcome> {
    this.#check(allowed);
    const requestId = allowed.envelope.requestId;
    const pre = await this.#preflight(allowed);
    if (!pre.ok) {
      sendReply(res, { ...pre.reply, requestId });
      return refused(pre);
    }
    let bytesIn = 0;
    // Pull-based: undici reads the next chunk only when the upstream socket can take it, so a slow
    // upstream slows the agent's upload instead of filling the sidecar's memory. (A 'data' listener
    // here would switch the stream to flowing mode and lose chunks before undici attaches.)
    let body: Buffer | AsyncGenerator<Buffer> | null = null;
    if (buffered !== null && buffered.complete) {
      bytesIn = buffered.prefix.length;
      body = buffered.prefix;
    } else if (buffered !== null || hasRequestBody(req)) {
      body = (async function* counted(): AsyncGenerator<Buffer> {
        if (buffered !== null) {
          bytesIn += buffered.prefix.length;
          yield buffered.prefix;
        }
        for await (const chunk of req) {
          bytesIn += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
      })();
    }
    const credentialInjected = pre.credentials !== null;

    return new Promise<DispatchOutcome>((resolve) => {
      let bytesOut = 0;
      let upstreamStatus: number | null = null;
      let settled = false;
      let controller: Dispatcher.DispatchController | null = null;
      let waitingForDrain = false;
      // The audit's response_hash: SHA-256 of the bytes as relayed, computed as they pass, never buffered.
      let bodyHash: Hash | null = null;
      // One timer bounds connect + time to response headers against the request's deadline. undici
      // hands out the controller only once a connected socket takes the request, so a deadline that
      // passes while connecting (a blackholed address, a slow TLS handshake) is answered here, and the
      // request is aborted the moment it would start.
      const timer = setTimeout(() => {
        if (upstreamStatus !== null) return;
        const err = new FirmaError('UND_ERR_HEADERS_TIMEOUT', 'deadline passed');
        if (controller !== null) controller.abort(err);
        else fail(err);
      }, Math.max(1, pre.deadline - performance.now()));

      const finish = (o: Pick<DispatchOutcome, 'status' | 'upstreamStatus' | 'error' | 'errorCode' | 'clientAborted'>): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        res.off('close', onClientClose);
        resolve({ ...o, bytesIn, bytesOut, credentialInjected, waitedMs: pre.waitedMs, responseHash: bodyHash === null ? null : `sha256:${bodyHash.digest('hex')}` });
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

      const fail = (err: Error): void => {
        if (settled) return;
        const failure = describeFailure(err, allowed);
        if (upstreamStatus === null && !res.headersSent) {
          sendReply(res, { ...failure.reply, requestId });
          finish({ status: failure.reply.status, upstreamStatus, error: failure.kind, errorCode: failure.code, clientAborted: false });
        } else {
          // Headers already went out: the only honest signal left is to cut the stream.
          res.destroy();
          finish({ status: upstreamStatus ?? 502, upstreamStatus, error: failure.kind, errorCode: failure.code, clientAborted: false });
        }
      };

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(c) {
          controller = c;
          // Answered (deadline) or abandoned (agent gone) while the connection was being made: never send it.
          if (settled) c.abort(ABANDONED);
        },
        onResponseStart(_c, statusCode, headers, statusMessage) {
          if (statusCode < 200) return; // 1xx interim answers are not relayed
          upstreamStatus = statusCode;
          clearTimeout(timer);
          bodyHash = createHash('sha256');
          const out = downstreamResponseHeaders(headers as IncomingHttpHeaders);
          if (allowed.wouldDeny !== null) out['x-firma-would-deny'] = wouldDenyHeader(allowed);
          res.writeHead(statusCode, statusMessage, out);
          // Streams (SSE) must show their headers at once; other responses let the first write carry them.
          const ct = headers['content-type'];
          if (typeof ct === 'string' && ct.startsWith(EVENT_STREAM)) res.flushHeaders();
        },
        onResponseData(c, chunk) {
          bytesOut += chunk.length;
          bodyHash?.update(chunk);
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
          fail(err);
        },
      };

      this.#agent.dispatch(
        {
          origin: originOf(allowed),
          path: pathOf(allowed),
          method: allowed.envelope.method as Dispatcher.HttpMethod,
          headers: this.#headers(req, pre.credentials, false),
          // undici accepts an AsyncIterable body (docs: Dispatcher.dispatch); its .d.ts omits it.
          body: body as unknown as Readable | Buffer | null,
          headersTimeout: pre.policy.timeoutMs,
          bodyTimeout: pre.policy.idleTimeoutMs,
        },
        handler,
      );
    });
  }

  /**
   * Relay a WebSocket (or other `Upgrade`) handshake. A 101 joins the two sockets; any other answer is
   * relayed as an ordinary response and the connection closed.
   */
  async upgrade(allowed: Allowed, req: IncomingMessage, client: Duplex, head: Buffer): Promise<DispatchOutcome> {
    this.#check(allowed);
    const requestId = allowed.envelope.requestId;
    const pre = await this.#preflight(allowed);
    if (!pre.ok) {
      sendReplyRaw(client, { ...pre.reply, requestId });
      return refused(pre);
    }
    const protocol = req.headers.upgrade ?? 'websocket';
    const credentialInjected = pre.credentials !== null;
    return new Promise<DispatchOutcome>((resolve) => {
      let bytesOut = 0;
      let upstreamStatus: number | null = null;
      let settled = false;
      const finish = (o: Pick<DispatchOutcome, 'status' | 'upstreamStatus' | 'error' | 'errorCode' | 'clientAborted'>, bytesIn = 0): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ ...o, bytesIn, bytesOut, credentialInjected, waitedMs: pre.waitedMs, responseHash: null });
      };
      let controller: Dispatcher.DispatchController | null = null;
      const fail = (err: Error): void => {
        if (settled) return;
        const failure = describeFailure(err, allowed);
        if (upstreamStatus === null) sendReplyRaw(client, { ...failure.reply, requestId });
        else client.destroy();
        finish({ status: failure.reply.status, upstreamStatus, error: failure.kind, errorCode: failure.code, clientAborted: false });
      };
      // As for forward(): a deadline that passes while connecting is answered here.
      const timer = setTimeout(() => {
        if (upstreamStatus !== null) return;
        const err = new FirmaError('UND_ERR_HEADERS_TIMEOUT', 'deadline passed');
        if (controller !== null) controller.abort(err);
        else fail(err);
      }, Math.max(1, pre.deadline - performance.now()));
      client.on('error', () => controller?.abort(new FirmaError('FIRMA_CLIENT_CLOSED', 'agent closed the connection')));

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(c) {
          controller = c;
          if (settled) c.abort(ABANDONED);
        },
        onRequestUpgrade(_c, statusCode, headers, upstream) {
          upstreamStatus = statusCode;
          clearTimeout(timer);
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
          clearTimeout(timer);
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
          fail(err);
        },
      };
      this.#agent.dispatch(
        {
          origin: originOf(allowed),
          path: pathOf(allowed),
          method: 'GET',
          headers: this.#headers(req, pre.credentials, true),
          upgrade: Array.isArray(protocol) ? protocol.join(', ') : protocol,
          body: null,
          headersTimeout: pre.policy.timeoutMs,
        },
        handler,
      );
    });
  }

  /**
   * Open the upstream TCP connection of a blind (bypassed) tunnel, through the same limits and SSRF
   * guard. The caller answers the CONNECT only after this succeeded, so an unreachable upstream is a
   * real 502/504, not a dead tunnel. Credentials cannot be injected into a tunnel we do not decrypt.
   */
  async dialTunnel(allowed: Allowed): Promise<TunnelDial> {
    this.#check(allowed);
    const pre = await this.#preflight(allowed);
    if (!pre.ok) return { ok: false, error: pre.error, reply: pre.reply };
    const t = allowed.envelope.target;
    try {
      const socket = await dialTcp(this.#opts.guard, t.host, t.port, Math.max(1, pre.deadline - performance.now()));
      return { ok: true, socket };
    } catch (err) {
      const failure = describeFailure(err, allowed);
      return { ok: false, error: failure.kind, reply: failure.reply };
    }
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }

  async destroy(): Promise<void> {
    await this.#agent.destroy();
  }
}

const NONE: readonly never[] = [];

/** The abort reason for a request already answered before undici could start it (never seen by anyone). */
const ABANDONED = new FirmaError('FIRMA_DISPATCH_ABANDONED', 'answered before the upstream connection was ready');

/** `x-firma-would-deny: capability; reason=token_expired; policies=p1,p2` (monitor mode). */
function wouldDenyHeader(allowed: Allowed): string {
  const w = allowed.wouldDeny;
  if (w === null) return '';
  return `${w.stage}; reason=${w.reason}${w.policyIds.length > 0 ? `; policies=${w.policyIds.join(',')}` : ''}`;
}

/**
 * Upper bound for the TCP/TLS connect itself, which undici shares among the requests queued for an
 * origin. Each request's own deadline answers it sooner (see forward()); this only closes the socket.
 */
const MAX_CONNECT_MS = 60_000;

function refused(pre: Extract<Preflight, { ok: false }>): DispatchOutcome {
  return {
    status: pre.reply.status,
    upstreamStatus: null,
    error: pre.error,
    errorCode: pre.errorCode,
    bytesIn: 0,
    bytesOut: 0,
    clientAborted: false,
    credentialInjected: false,
    waitedMs: pre.waitedMs,
    responseHash: null,
  };
}

/** A dispatch failure as the sidecar answers it: SSRF denials are 403s, the rest the statuses in docs/listeners.md. */
function describeFailure(err: unknown, allowed: Allowed): { kind: ConnectorErrorKind; code: string; reply: Omit<SidecarReply, 'requestId'> } {
  const denied = findDestinationDenied(err);
  if (denied !== null) {
    return {
      kind: 'network',
      code: denied.code,
      reply: { status: 403, decision: 'deny', stage: 'connector', reason: denied.reason, message: denied.message },
    };
  }
  const c = classifyUpstreamError(err);
  return {
    kind: c.kind,
    code: c.code,
    reply: {
      status: CONNECTOR_ERROR_STATUS[c.kind],
      decision: 'allow',
      stage: 'connector',
      reason: c.kind,
      message: upstreamMessage(c.kind, c.code, allowed),
    },
  };
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
