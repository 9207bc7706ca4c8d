import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { createHash, randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Logger } from '../core/log.js';
import type { Identity, RawRequest, Target, EnvelopeKind, Envelope } from '../core/envelope.js';
import type { Decision, Denied, Held } from '../core/decision.js';
import type { Connector } from '../connector/connector.js';
import type { DispatchOutcome, BufferedBody } from '../core/outcome.js';
import { hasRequestBody } from '../core/http.js';
import { deniedOnInternalError } from '../enforce/pipeline.js';
import type { DecisionSnapshot, DecisionSource } from '../enforce/decision-set.js';
import { readBoundedBody, extractBodyFields } from '../normalize/body.js';
import type { AuditRecorder } from '../audit/record.js';
import type { Allowed } from '../core/decision.js';
import { identityFromProxyAuthorization } from './proxy-auth.js';
import { parseAuthority, parseHost, hostPatternMatches, type ParsedAuthority } from '../core/host.js';
import { readClientHello } from './tls/client-hello.js';
import type { LeafCertificates } from './tls/leaf-certs.js';
import { sendReply, sendReplyRaw, type SidecarReply } from '../core/reply.js';
import { targetFromHostHeader, targetFromSni, type TransparentAcceptor } from './transparent.js';

export interface InterceptorOptions {
  readonly listenHost: string;
  readonly listenPort: number;
  readonly defaultAgentId: string;
  /** Host patterns (`api.example.com`, `*.example.com`) tunnelled blind after a host-level decision. */
  readonly bypassHosts: readonly string[];
  readonly leafCerts: LeafCertificates;
  /** The pipeline and body limit, read once per request (hot reload swaps what it returns). */
  readonly decisions: DecisionSource;
  /** Decision and outcome events; a decision that cannot be recorded is not dispatched. */
  readonly audit: AuditRecorder;
  readonly connector: Connector;
  readonly log: Logger;
  /** How long a fresh tunnel may take to send its first TLS bytes. */
  readonly clientHelloTimeoutMs?: number;
}

/** What a MITM'd TLS connection remembers about the CONNECT that opened it. */
interface TunnelContext {
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

/** Result of reading the request target of one HTTP request. */
type TargetResult =
  | { readonly ok: true; readonly target: Target; readonly pathAndQuery: string }
  | { readonly ok: false; readonly reply: Omit<SidecarReply, 'requestId'> };

const HTTP_PREFIX = 'http://';
const HTTPS_PREFIX = 'https://';
/** Held requests without a body share approvals under this body hash. */
const EMPTY_BODY_HASH = createHash('sha256').digest('hex');
const WS_SCHEME = /^ws:\/\//i;
/** An HTTP/1.x request line start: a method token then a space. */
const HTTP_REQUEST_LINE = /^[A-Z]{3,10} /;

function badRequest(reason: string, message: string): { ok: false; reply: Omit<SidecarReply, 'requestId'> } {
  return { ok: false, reply: { status: 400, decision: 'deny', stage: 'intercept', reason, message } };
}

function sameAuthority(a: ParsedAuthority, b: Target): boolean {
  return a.host === b.host && a.port === b.port;
}

/**
 * Split an absolute-form request target (`http://host[:port]/path?q`) into target and origin-form
 * path. Done by hand rather than with `new URL()` because URL silently "fixes" input (it would turn
 * `http://a\\b` into `a/b`, percent-encode, drop default ports) and what we forward must be what we
 * decided on.
 */
function parseAbsoluteForm(url: string, scheme: 'http' | 'https'): TargetResult {
  const prefix = scheme === 'http' ? HTTP_PREFIX : HTTPS_PREFIX;
  if (url.length < prefix.length || url.slice(0, prefix.length).toLowerCase() !== prefix) {
    return badRequest('bad_request_target', `request target must start with ${prefix}`);
  }
  let end = url.length;
  for (let i = prefix.length; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) {
      end = i;
      break;
    }
  }
  const authority = url.slice(prefix.length, end);
  if (authority.includes('@')) {
    return badRequest('bad_request_target', 'credentials in the request URL are not accepted');
  }
  const parsed = parseAuthority(authority, scheme === 'http' ? 80 : 443);
  if (parsed === null) return badRequest('bad_host', 'the request URL does not name a valid host');
  let rest = url.slice(end);
  if (rest.startsWith('#')) rest = '';
  const hash = rest.indexOf('#');
  if (hash !== -1) rest = rest.slice(0, hash);
  const pathAndQuery = rest === '' ? '/' : rest.startsWith('?') ? `/${rest}` : rest;
  return {
    ok: true,
    target: { scheme, host: parsed.host, kind: parsed.kind, port: parsed.port },
    pathAndQuery,
  };
}

/** The Host header must name the very target the sidecar decides on and connects to. */
function checkHostHeader(req: IncomingMessage, target: Target): TargetResult | null {
  const hostHeader = req.headers.host;
  if (hostHeader === undefined) {
    // HTTP/1.0 without Host: the target alone decides. HTTP/1.1 must carry one (RFC 9112 3.2).
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) return null;
    return badRequest('missing_host', 'an HTTP/1.1 request must carry a Host header');
  }
  const parsed = parseAuthority(hostHeader, target.scheme === 'http' ? 80 : 443);
  if (parsed === null || !sameAuthority(parsed, target)) {
    return badRequest('host_mismatch', 'the Host header does not match the request target');
  }
  return null;
}

/**
 * The interception layer: an explicit forward proxy (absolute-form HTTP and CONNECT), TLS MITM for
 * CONNECT tunnels, blind tunnels for bypassed hosts, and WebSocket upgrades. Built on node:http and
 * node:tls directly; see README "Dependencies" for why http-mitm-proxy is not used.
 */
export class Interceptor implements TransparentAcceptor {
  readonly #opts: InterceptorOptions;
  readonly #log: Logger;
  /** The listening forward-proxy server. */
  readonly #server: http.Server;
  /** Never listens: it parses HTTP on decrypted tunnel sockets handed to it with 'connection'. */
  readonly #tunnelServer: http.Server;
  readonly #tunnels = new WeakMap<object, TunnelContext>();
  /** Every client socket (plain and decrypted), so a drain can end them. */
  readonly #sockets = new Set<Duplex>();
  #inFlight = 0;
  #draining = false;
  #idleWaiters: Array<() => void> = [];

  constructor(opts: InterceptorOptions) {
    this.#opts = opts;
    this.#log = opts.log;
    const serverOptions: http.ServerOptions = {
      // Long uploads and long-polls are normal for agents; slowloris is bounded by headersTimeout.
      requestTimeout: 0,
      headersTimeout: 30_000,
      keepAliveTimeout: 30_000,
      maxHeaderSize: 32 * 1024,
    };
    // Node's own answer to an HTTP/1.1 request without Host is a bare 400 that never reaches us (so no
    // JSON body, no audit event); checkHostHeader and #tunnelTarget give that answer themselves.
    this.#server = http.createServer({ ...serverOptions, requireHostHeader: false });
    this.#tunnelServer = http.createServer({ ...serverOptions, requireHostHeader: false });

    this.#server.on('connection', (s: Socket) => this.#track(s));
    this.#server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#onForwardRequest(req, res));
    this.#server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.#onConnect(req, socket as Socket, head),
    );
    this.#server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.#onForwardUpgrade(req, socket, head),
    );
    this.#server.on('clientError', (err: Error, socket: Duplex) => this.#onClientError(err, socket));

    this.#tunnelServer.on('request', (req: IncomingMessage, res: ServerResponse) => this.#onTunnelRequest(req, res));
    this.#tunnelServer.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.#onTunnelUpgrade(req, socket, head),
    );
    this.#tunnelServer.on('connect', (_req: IncomingMessage, socket: Duplex) => {
      this.#reply(socket, {
        status: 400,
        decision: 'deny',
        stage: 'intercept',
        reason: 'nested_connect',
        message: 'CONNECT inside a tunnel is not allowed',
        requestId: randomUUID(),
      });
    });
    this.#tunnelServer.on('clientError', (err: Error, socket: Duplex) => this.#onClientError(err, socket));
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.listen(this.#opts.listenPort, this.#opts.listenHost, () => {
        this.#server.off('error', onError);
        this.#server.on('error', (err) => this.#log.error({ err }, 'proxy listener error'));
        resolve(this.#server.address() as AddressInfo);
      });
    });
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /**
   * Stop accepting, let in-flight requests finish for up to `graceMs`, then cut whatever is left
   * (idle keep-alive connections and tunnels are closed at once).
   */
  async drain(graceMs: number): Promise<{ cut: number }> {
    this.#draining = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeIdleConnections();
    this.#tunnelServer.closeIdleConnections();
    if (this.#inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.#idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const cut = this.#inFlight;
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    await closed;
    return { cut };
  }

  #track(socket: Duplex): void {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    // A client that resets mid-request must never surface as an unhandled 'error'.
    socket.on('error', () => undefined);
  }

  #begin(): void {
    this.#inFlight++;
  }

  #end(): void {
    this.#inFlight--;
    if (this.#inFlight === 0 && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** A sidecar answer written on a raw socket (CONNECT, upgrade, malformed input). */
  #reply(socket: Duplex, reply: SidecarReply, decision: Decision | null = null): void {
    if (decision === null) this.#opts.audit.refused(reply);
    else if (decision.verdict === 'deny') this.#opts.audit.decision(decision);
    sendReplyRaw(socket, reply);
    this.#logLine(decision, reply, null, 0);
  }

  /**
   * A refusal on a connection that cannot carry an HTTP answer (a redirected TLS client): recorded and
   * logged like #reply, then the connection is closed.
   */
  #drop(socket: Duplex, reply: SidecarReply, decision: Decision | null, what: Parameters<AuditRecorder['refused']>[1] = {}): void {
    if (decision === null) this.#opts.audit.refused(reply, what);
    else if (decision.verdict === 'deny') this.#opts.audit.decision(decision);
    socket.destroy();
    this.#logLine(decision, reply, null, 0);
  }

  #identity(req: IncomingMessage): Identity | null {
    const result = identityFromProxyAuthorization(req.headers['proxy-authorization'], this.#opts.defaultAgentId);
    return result.ok ? result.identity : null;
  }

  #proxyAuthReply(requestId: string): SidecarReply {
    return {
      status: 407,
      decision: 'deny',
      stage: 'intercept',
      reason: 'proxy_auth_malformed',
      message: 'Proxy-Authorization must be Basic base64(agent_id:token)',
      requestId,
      headers: { 'proxy-authenticate': 'Basic realm="firma"' },
    };
  }

  /**
   * Classify, read the body fields a rule asks for, then run the stages. Never throws: any failure is
   * a deny (fail closed). `body` is what was read of the request body, which the connector sends first.
   */
  async #evaluate(
    kind: EnvelopeKind,
    requestId: string,
    identity: Identity,
    method: string,
    target: Target,
    pathAndQuery: string | null,
    req: IncomingMessage | null,
    client: ServerResponse | Duplex,
  ): Promise<{ decision: Decision; body: BufferedBody | null }> {
    const raw: RawRequest = { requestId, kind, identity, method, target, pathAndQuery };
    // One snapshot per request: a reload meanwhile does not change what this request is decided under.
    const snapshot = this.#opts.decisions.current();
    let envelope: Envelope;
    try {
      envelope = snapshot.pipeline.classify(raw);
    } catch (err) {
      this.#log.error({ err, request_id: requestId }, 'classification failed; denied');
      return { decision: deniedOnInternalError(raw), body: null };
    }
    try {
      return await this.#decide(snapshot, envelope, identity, req, client);
    } catch (err) {
      // Every expected failure is a typed decision already; this is a bug. Deny, never crash.
      this.#log.error({ err, request_id: requestId }, 'decision failed; denied');
      return { decision: deniedOnInternalError(raw, 'policy'), body: null };
    }
  }

  async #decide(
    snapshot: DecisionSnapshot,
    classified: Envelope,
    identity: Identity,
    req: IncomingMessage | null,
    client: ServerResponse | Duplex,
  ): Promise<{ decision: Decision; body: BufferedBody | null }> {
    const { pipeline, bodyLimitBytes } = snapshot;
    let envelope = classified;
    let body: BufferedBody | null = null;
    if (req !== null && envelope.bodyFields.length > 0 && hasRequestBody(req)) {
      const read = await readBoundedBody(req, bodyLimitBytes);
      body = { prefix: read.prefix, complete: read.ok };
      if (!read.ok) {
        const message = read.reason === 'body_too_large'
          ? `the request body is over ${bodyLimitBytes} bytes, the most read to check ${envelope.actionClass ?? 'this action'}`
          : 'the request body ended before it was complete';
        return { decision: pipeline.refuse(envelope, identity, 'policy', read.reason, message), body };
      }
      const fields = extractBodyFields(read.prefix, envelope.bodyFields, req.headers['content-type']);
      if (!fields.ok) {
        const what = envelope.actionClass ?? 'this action';
        const message = fields.reason === 'body_not_json'
          ? `${what} is checked on its body, which must be a JSON object or form-encoded`
          : `${what} is checked on the body field ${fields.field}, which must appear once, as a single value`;
        return { decision: pipeline.refuse(envelope, identity, 'policy', fields.reason, message), body };
      }
      envelope = pipeline.withBody(envelope, fields.values);
    }
    const decision = await pipeline.decide(envelope, identity);
    if (decision.verdict !== 'hold') return { decision, body };
    return this.#awaitApproval(snapshot, decision, req, client, body);
  }

  /**
   * Hold the request open until its approval is resolved. The body is read first (up to the body
   * limit) so identical requests can share one approval; the agent closing its connection cancels.
   */
  async #awaitApproval(
    { pipeline, bodyLimitBytes }: DecisionSnapshot,
    held: Held,
    req: IncomingMessage | null,
    client: ServerResponse | Duplex,
    buffered: BufferedBody | null,
  ): Promise<{ decision: Decision; body: BufferedBody | null }> {
    let body = buffered;
    if (body === null && req !== null && hasRequestBody(req)) {
      const read = await readBoundedBody(req, bodyLimitBytes);
      if (!read.ok && read.reason === 'body_incomplete') {
        return { decision: pipeline.refuse(held.envelope, held.identity, 'approval', 'body_incomplete', 'the request body ended before it was complete'), body: null };
      }
      body = { prefix: read.prefix, complete: read.ok };
    }
    // A body over the limit is not hashed whole, so that request waits on an approval of its own.
    const bodyHash = body === null ? EMPTY_BODY_HASH : body.complete ? createHash('sha256').update(body.prefix).digest('hex') : null;
    const gone = new AbortController();
    const onClose = (): void => gone.abort();
    client.once('close', onClose);
    try {
      return { decision: await pipeline.awaitApproval(held, { bodyHash, signal: gone.signal }), body };
    } finally {
      client.off('close', onClose);
    }
  }

  // ---------------------------------------------------------------- plain HTTP (absolute-form)

  #onForwardRequest(req: IncomingMessage, res: ServerResponse): void {
    const requestId = randomUUID();
    const url = req.url ?? '';
    if (url.startsWith('/')) {
      this.#replyHttp(res, {
        ...badRequest('not_a_proxy_request', 'this is an HTTP proxy: send absolute-form requests or CONNECT').reply,
        requestId,
      });
      return;
    }
    if (url.length >= HTTPS_PREFIX.length && url.slice(0, HTTPS_PREFIX.length).toLowerCase() === HTTPS_PREFIX) {
      this.#replyHttp(res, {
        ...badRequest('use_connect', 'https:// targets must be reached with CONNECT').reply,
        requestId,
      });
      return;
    }
    const parsed = parseAbsoluteForm(url, 'http');
    if (!parsed.ok) return this.#replyHttp(res, { ...parsed.reply, requestId });
    const hostCheck = checkHostHeader(req, parsed.target);
    if (hostCheck !== null && !hostCheck.ok) return this.#replyHttp(res, { ...hostCheck.reply, requestId });
    const identity = this.#identity(req);
    if (identity === null) return this.#replyHttp(res, this.#proxyAuthReply(requestId));
    this.#handle(req, res, requestId, identity, parsed.target, parsed.pathAndQuery);
  }

  // ---------------------------------------------------------------- requests inside a MITM tunnel

  #onTunnelRequest(req: IncomingMessage, res: ServerResponse): void {
    const requestId = randomUUID();
    const tunnel = this.#tunnels.get(req.socket);
    if (tunnel === undefined) {
      // Cannot happen: every socket handed to the tunnel server is registered first. Fail closed.
      return this.#replyHttp(res, {
        status: 400,
        decision: 'deny',
        stage: 'intercept',
        reason: 'unknown_tunnel',
        message: 'request arrived on an unknown tunnel',
        requestId,
      });
    }
    const resolved = this.#tunnelTarget(req, tunnel);
    if (!resolved.ok) return this.#replyHttp(res, { ...resolved.reply, requestId });
    this.#handle(req, res, requestId, tunnel.identity, resolved.target, resolved.pathAndQuery);
  }

  /** Inside a tunnel the CONNECT target is the only destination: SNI, Host and any absolute URI must agree. */
  #tunnelTarget(req: IncomingMessage, tunnel: TunnelContext): TargetResult {
    if (tunnel.sniMismatch !== null) {
      return badRequest('sni_mismatch', `TLS server name ${tunnel.sniMismatch} does not match the CONNECT target`);
    }
    if (req.headers.host === undefined && req.httpVersion === '1.1') {
      return badRequest('missing_host', 'an HTTP/1.1 request must carry a Host header');
    }
    let target = tunnel.target;
    if (tunnel.byHost !== undefined) {
      const t = targetFromHostHeader(req.headers.host, tunnel.byHost.originalPort);
      if (!t.ok) return badRequest(t.reason, t.message);
      target = t.target;
    }
    const url = req.url ?? '';
    let pathAndQuery: string;
    if (url.startsWith('/')) {
      pathAndQuery = url;
    } else {
      const abs = parseAbsoluteForm(url, target.scheme);
      if (!abs.ok) return abs;
      if (abs.target.host !== target.host || abs.target.port !== target.port) {
        return badRequest('host_mismatch', 'the request URL does not match the CONNECT target');
      }
      pathAndQuery = abs.pathAndQuery;
    }
    const hostCheck = checkHostHeader(req, target);
    if (hostCheck !== null) return hostCheck;
    return { ok: true, target, pathAndQuery };
  }

  // ---------------------------------------------------------------- one exchange: decide, dispatch, log

  #handle(req: IncomingMessage, res: ServerResponse, requestId: string, identity: Identity, target: Target, pathAndQuery: string): void {
    const started = performance.now();
    const method = req.method ?? 'GET';
    if (this.#draining) res.shouldKeepAlive = false;
    this.#begin();
    void this.#evaluate('request', requestId, identity, method, target, pathAndQuery, req, res).then(({ decision, body }) =>
      this.#settle(decision, started, {
        // A body we stopped reading part-way cannot be skipped reliably: close after the answer.
        deny: (d) => this.#denyHttp(res, d, started, body !== null && !body.complete),
        refuse: (reply) => this.#replyHttp(res, reply, decision),
        dispatch: (allowed) => this.#opts.connector.forward(allowed, req, res, body),
        failed: () =>
          this.#replyHttp(res, {
            status: 502,
            decision: 'allow',
            stage: 'connector',
            reason: 'network',
            message: 'the request could not be dispatched',
            requestId,
          }, decision),
      }),
    ).catch((err: unknown) => this.#bug(err, requestId, res));
  }

  /** A throw past the decision is a bug: log it and cut this exchange, never the process. */
  #bug(err: unknown, requestId: string, client: ServerResponse | Duplex): void {
    this.#log.error({ err, request_id: requestId }, 'request handling failed');
    client.destroy();
  }

  /**
   * Everything after the decision, for plain requests and upgrades alike: a deny is answered; an allow
   * is recorded in the audit log first (not dispatched if it cannot be: fail closed), then dispatched,
   * and its outcome recorded and logged. Balances the #begin() of the caller.
   */
  #settle(
    decision: Decision,
    started: number,
    io: {
      deny: (d: Denied) => void;
      refuse: (reply: SidecarReply) => void;
      dispatch: (allowed: Allowed) => Promise<DispatchOutcome>;
      failed: () => void;
    },
  ): void {
    if (decision.verdict === 'deny') {
      this.#end();
      io.deny(decision);
      return;
    }
    if (!this.#opts.audit.decision(decision)) {
      this.#end();
      io.refuse(auditUnavailable(decision.envelope.requestId));
      return;
    }
    io.dispatch(decision).then(
      (outcome) => {
        this.#end();
        this.#opts.audit.outcome(decision, outcome, performance.now() - started);
        this.#logLine(decision, null, outcome, started);
      },
      (err: unknown) => {
        this.#end();
        this.#log.error({ err, request_id: decision.envelope.requestId }, 'dispatch failed');
        // Its decision event is written: the log must say how it ended, too.
        this.#opts.audit.outcome(decision, failedDial(502, 'network'), performance.now() - started);
        io.failed();
      },
    );
  }

  #denyHttp(res: ServerResponse, d: Denied, started: number, close = false): void {
    const reply = denyReply(d);
    this.#opts.audit.decision(d);
    sendReply(res, reply, close);
    this.#logLine(d, reply, null, started);
  }

  /** A sidecar answer on a request that was not (or could not be) decided on by the pipeline. */
  #replyHttp(res: ServerResponse, reply: SidecarReply, decision: Decision | null = null): void {
    if (decision === null) this.#opts.audit.refused(reply);
    // A request body we refuse is not read; closing keeps a half-sent body from being parsed as a request.
    sendReply(res, reply, reply.status === 400 || reply.status === 407);
    this.#logLine(decision, reply, null, 0);
  }

  // ---------------------------------------------------------------- CONNECT

  #onConnect(req: IncomingMessage, socket: Socket, head: Buffer): void {
    this.#track(socket);
    const requestId = randomUUID();
    const target = parseAuthority(req.url ?? '', null);
    if (target === null) {
      this.#reply(socket, {
        status: 400,
        decision: 'deny',
        stage: 'intercept',
        reason: 'bad_connect_target',
        message: 'CONNECT needs host:port with a valid host name or IP literal',
        requestId,
      });
      return;
    }
    const identity = this.#identity(req);
    if (identity === null) {
      this.#reply(socket, this.#proxyAuthReply(requestId));
      return;
    }
    if (this.#draining) {
      this.#reply(socket, {
        status: 503,
        decision: 'deny',
        stage: 'intercept',
        reason: 'shutting_down',
        message: 'the sidecar is shutting down',
        requestId,
        headers: { 'retry-after': '1' },
      });
      return;
    }
    if (identity.token === null && this.#opts.decisions.current().pipeline.tunnelNeedsToken(target.host)) {
      this.#reply(socket, {
        status: 407,
        decision: 'deny',
        stage: 'capability',
        reason: 'token_missing',
        message: `requests to ${target.host} need a capability token: use HTTPS_PROXY=http://AGENT_ID:TOKEN@host:port`,
        requestId,
        headers: { 'proxy-authenticate': 'Basic realm="firma"' },
      });
      return;
    }
    const tunnelTarget: Target = { scheme: 'https', host: target.host, kind: target.kind, port: target.port };
    const bypass = this.#opts.bypassHosts.some((p) => hostPatternMatches(p, target.host));
    if (head.length > 0) socket.unshift(head);
    if (bypass) {
      this.#blindTunnel(socket, requestId, identity, tunnelTarget).catch((err: unknown) => this.#bug(err, requestId, socket));
    } else {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      void this.#mitm(socket, requestId, identity, tunnelTarget);
    }
  }

  async #mitm(socket: Socket, requestId: string, identity: Identity, target: Target): Promise<void> {
    const { bytes, result } = await readClientHello(socket, { timeoutMs: this.#opts.clientHelloTimeoutMs ?? 10_000 });
    if (result.state === 'not_tls') {
      if (HTTP_REQUEST_LINE.test(bytes.toString('latin1', 0, Math.min(bytes.length, 16)))) {
        // Plain HTTP inside CONNECT: undici's ProxyAgent (so Node's fetch behind a proxy) tunnels http://
        // URLs this way by default. Every request in it is parsed and enforced like absolute-form HTTP.
        const plainTarget: Target = { ...target, scheme: 'http' };
        socket.unshift(bytes);
        this.#tunnels.set(socket, { target: plainTarget, identity, sniMismatch: null });
        this.#tunnelServer.emit('connection', socket);
        socket.resume();
        return;
      }
      // Anything else that is not TLS (SSH, raw TCP…) never passes: answer in plain HTTP and close.
      this.#reply(socket, {
        status: 400,
        decision: 'deny',
        stage: 'intercept',
        reason: 'not_tls',
        message: 'this tunnel carries TLS or HTTP only',
        requestId,
      });
      return;
    }
    if (result.state !== 'ok') {
      this.#log.debug({ request_id: requestId, host: target.host, why: result.reason }, 'tunnel closed before a ClientHello');
      socket.destroy();
      return;
    }
    let certHost: ParsedAuthority | { host: string; kind: Target['kind'] } = target;
    let sniMismatch: string | null = null;
    if (result.serverName !== null) {
      const sni = parseHost(result.serverName);
      if (sni === null) {
        socket.destroy();
        return;
      }
      if (sni.host !== target.host) {
        // Finish the handshake for the name the client asked for, then answer every request with a
        // clear 400: nothing is ever sent to either host.
        sniMismatch = sni.host;
        certHost = sni;
      }
    }
    socket.unshift(bytes);
    let tls: TLSSocket;
    try {
      tls = new TLSSocket(socket, {
        isServer: true,
        secureContext: this.#opts.leafCerts.secureContextFor(certHost),
        ALPNProtocols: ['http/1.1'],
      });
    } catch (err) {
      this.#log.error({ err, request_id: requestId }, 'could not start TLS on tunnel');
      socket.destroy();
      return;
    }
    tls.on('error', (err) => {
      this.#log.debug({ request_id: requestId, host: target.host, code: (err as NodeJS.ErrnoException).code }, 'tunnel TLS error');
      tls.destroy();
    });
    this.#tunnels.set(tls, { target, identity, sniMismatch });
    this.#track(tls);
    this.#tunnelServer.emit('connection', tls);
  }

  /**
   * `transparent`: the socket came from the transparent listener, so there is no CONNECT to answer and
   * a refusal can only close the connection (the reason is in the audit log and the log line).
   */
  async #blindTunnel(socket: Socket, requestId: string, identity: Identity, target: Target, transparent = false): Promise<void> {
    const started = performance.now();
    const answer = (reply: SidecarReply, d: Decision): void =>
      transparent ? this.#drop(socket, reply, d) : this.#reply(socket, reply, d);
    const { decision } = await this.#evaluate('tunnel', requestId, identity, 'CONNECT', target, null, null, socket);
    if (decision.verdict === 'deny') {
      answer(denyReply(decision), decision);
      return;
    }
    if (!this.#opts.audit.decision(decision)) {
      answer(auditUnavailable(requestId), decision);
      return;
    }
    this.#begin();
    const dialed = await this.#opts.connector.dialTunnel(decision);
    if (!dialed.ok) {
      this.#end();
      this.#opts.audit.outcome(decision, failedDial(dialed.reply.status, dialed.error), performance.now() - started);
      answer({ ...dialed.reply, requestId }, decision);
      return;
    }
    const upstream = dialed.socket;
    if (!transparent) socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    const { bytes, result } = await readClientHello(socket, { timeoutMs: this.#opts.clientHelloTimeoutMs ?? 10_000 });
    let refuse: string | null = null;
    if (result.state === 'not_tls') refuse = 'not_tls';
    else if (result.state === 'invalid') refuse = 'bad_client_hello';
    else if (result.serverName !== null) {
      const sni = parseHost(result.serverName);
      if (sni === null || sni.host !== target.host) refuse = 'sni_mismatch';
    } else if (target.kind === 'dns') {
      // Without SNI a shared front (a CDN) picks its default site, not the host that was decided on.
      refuse = 'sni_missing';
    }
    if (refuse !== null) {
      // A blind tunnel cannot carry an HTTP answer; the reason goes to the log (and the audit).
      upstream.destroy();
      socket.destroy();
      this.#end();
      const refusal: SidecarReply = { status: 400, decision: 'deny', stage: 'intercept', reason: refuse, message: '', requestId };
      this.#opts.audit.outcome(decision, { ...failedDial(400, 'invalid_request'), errorCode: refuse }, performance.now() - started);
      this.#logLine(decision, refusal, null, started);
      return;
    }
    upstream.write(bytes);
    let bytesIn = bytes.length;
    let bytesOut = 0;
    socket.on('data', (b: Buffer) => (bytesIn += b.length));
    upstream.on('data', (b: Buffer) => (bytesOut += b.length));
    socket.pipe(upstream);
    upstream.pipe(socket);
    socket.resume();
    let done = false;
    const close = (): void => {
      if (done) return;
      done = true;
      socket.destroy();
      upstream.destroy();
      this.#end();
      const outcome: DispatchOutcome = {
        status: 200,
        upstreamStatus: null,
        error: null,
        errorCode: null,
        bytesIn,
        bytesOut,
        clientAborted: false,
        credentialInjected: false,
        waitedMs: 0,
        responseHash: null,
      };
      this.#opts.audit.outcome(decision, outcome, performance.now() - started);
      this.#logLine(decision, null, outcome, started);
    };
    socket.on('close', close);
    upstream.on('close', close);
    upstream.on('error', close);
  }

  // ---------------------------------------------------------------- transparent listener

  /**
   * A connection redirected to the transparent listener (iptables REDIRECT), handed over by
   * transparent.ts. No CONNECT named its target, so its first bytes do: a TLS ClientHello is MITM'd for
   * its SNI (or blind-tunnelled when the SNI is a bypassed host), plain HTTP is parsed request by request
   * with each Host header as the target. From there on it is a CONNECT tunnel like any other. There is
   * no Proxy-Authorization, so the sidecar's own agent_id and token file apply. `originalPort` is the
   * port the client dialled when the kernel told it; null means the protocol's default.
   */
  acceptTransparent(socket: Socket, originalPort: number | null): void {
    this.#track(socket);
    if (this.#draining) {
      socket.destroy();
      return;
    }
    const requestId = randomUUID();
    const identity: Identity = { agentId: this.#opts.defaultAgentId, token: null, source: 'default' };
    void readClientHello(socket, { timeoutMs: this.#opts.clientHelloTimeoutMs ?? 10_000 }).then(({ bytes, result }) => {
      if (result.state === 'not_tls') {
        if (!HTTP_REQUEST_LINE.test(bytes.toString('latin1', 0, Math.min(bytes.length, 16)))) {
          this.#reply(socket, {
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
        // `target` is a placeholder: #tunnelTarget takes each request's from its Host header.
        const placeholder: Target = { scheme: 'http', host: '', kind: 'dns', port: originalPort ?? 80 };
        this.#tunnels.set(socket, { target: placeholder, identity, sniMismatch: null, byHost: { originalPort } });
        this.#tunnelServer.emit('connection', socket);
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
        this.#drop(socket, { status: 400, decision: 'deny', stage: 'intercept', reason, message: '', requestId }, null, what);
        return;
      }
      const sni = targetFromSni(result.serverName, originalPort);
      if (!sni.ok) {
        this.#drop(socket, { status: 400, decision: 'deny', stage: 'intercept', reason: sni.reason, message: sni.message, requestId }, null, what);
        return;
      }
      // Both paths below read the ClientHello again (cheap, once per connection) and check it against the target.
      socket.unshift(bytes);
      if (this.#opts.bypassHosts.some((p) => hostPatternMatches(p, sni.target.host))) {
        this.#blindTunnel(socket, requestId, identity, sni.target, true).catch((err: unknown) => this.#bug(err, requestId, socket));
      } else {
        void this.#mitm(socket, requestId, identity, sni.target);
      }
    });
  }

  // ---------------------------------------------------------------- WebSocket upgrades

  #onForwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.#track(socket);
    const requestId = randomUUID();
    const url = req.url ?? '';
    // ws:// arrives as absolute-form http:// from proxy-aware clients.
    const parsed = parseAbsoluteForm(url.replace(WS_SCHEME, HTTP_PREFIX), 'http');
    if (!parsed.ok) return this.#reply(socket, { ...parsed.reply, requestId });
    const hostCheck = checkHostHeader(req, parsed.target);
    if (hostCheck !== null && !hostCheck.ok) return this.#reply(socket, { ...hostCheck.reply, requestId });
    const identity = this.#identity(req);
    if (identity === null) return this.#reply(socket, this.#proxyAuthReply(requestId));
    this.#handleUpgrade(req, socket, head, requestId, identity, parsed.target, parsed.pathAndQuery);
  }

  #onTunnelUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const requestId = randomUUID();
    const tunnel = this.#tunnels.get(socket);
    if (tunnel === undefined) {
      socket.destroy();
      return;
    }
    const resolved = this.#tunnelTarget(req, tunnel);
    if (!resolved.ok) return this.#reply(socket, { ...resolved.reply, requestId });
    this.#handleUpgrade(req, socket, head, requestId, tunnel.identity, resolved.target, resolved.pathAndQuery);
  }

  #handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, requestId: string, identity: Identity, target: Target, pathAndQuery: string): void {
    const started = performance.now();
    const method = req.method ?? 'GET';
    this.#begin();
    void this.#evaluate('websocket', requestId, identity, method, target, pathAndQuery, null, socket).then(({ decision }) =>
      this.#settle(decision, started, {
        deny: (d) => this.#reply(socket, denyReply(d), d),
        refuse: (reply) => this.#reply(socket, reply, decision),
        dispatch: (allowed) => this.#opts.connector.upgrade(allowed, req, socket, head),
        failed: () => socket.destroy(),
      }),
    ).catch((err: unknown) => this.#bug(err, requestId, socket));
  }

  // ---------------------------------------------------------------- malformed input

  #onClientError(err: Error & { code?: string }, socket: Duplex): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
    this.#reply(socket, {
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

  // ---------------------------------------------------------------- the one decision log line

  /**
   * One line per request, written when it is over (smokescreen's decision log): who, what, the
   * verdict with its stage, reason, policies and token id, and what the connector reported.
   * `reply` is set when the sidecar answered itself.
   */
  #logLine(decision: Decision | null, reply: SidecarReply | null, outcome: DispatchOutcome | null, started: number): void {
    if (!this.#log.isLevelEnabled('info')) return;
    const e = decision?.envelope;
    const allowed = decision !== null && decision.verdict === 'allow' ? decision : null;
    this.#log.info(
      {
        request_id: e?.requestId ?? reply?.requestId,
        agent_id: e?.agentId,
        method: e?.method,
        host: e?.target.host,
        port: e?.target.port,
        // Query values may carry secrets; the path alone is logged.
        path: e?.path ?? undefined,
        action_class: e?.actionClass ?? undefined,
        risk: e?.risk ?? undefined,
        rule: e?.ruleId ?? undefined,
        decision: reply?.decision ?? (allowed?.passthrough === true ? 'passthrough' : 'allow'),
        stage: reply?.stage,
        reason: reply?.reason,
        would_deny: allowed?.wouldDeny === null || allowed === null ? undefined : `${allowed.wouldDeny.stage}:${allowed.wouldDeny.reason}`,
        token_id: decision?.tokenId ?? undefined,
        policy_ids: decision !== null && decision.policyIds.length > 0 ? decision.policyIds : undefined,
        status: reply?.status ?? outcome?.status,
        error: outcome?.error ?? undefined,
        error_code: outcome?.errorCode ?? undefined,
        bytes_in: outcome?.bytesIn,
        bytes_out: outcome?.bytesOut,
        client_aborted: outcome?.clientAborted || undefined,
        credential_injected: outcome?.credentialInjected || undefined,
        waited_ms: outcome !== null && outcome.waitedMs > 0 ? Math.round(outcome.waitedMs) : undefined,
        duration_ms: started === 0 ? undefined : Math.round((performance.now() - started) * 100) / 100,
      },
      'request',
    );
  }
}

/** Fail closed: nothing is dispatched that the audit log cannot record. */
function auditUnavailable(requestId: string): SidecarReply {
  return {
    status: 503,
    decision: 'deny',
    stage: 'audit',
    reason: 'audit_unavailable',
    message: 'the audit log cannot be written, so nothing is sent until it can',
    requestId,
    headers: { 'retry-after': '1' },
  };
}

/** The outcome of a blind tunnel that never carried bytes. */
function failedDial(status: number, error: DispatchOutcome['error']): DispatchOutcome {
  return {
    status,
    upstreamStatus: null,
    error,
    errorCode: null,
    bytesIn: 0,
    bytesOut: 0,
    clientAborted: false,
    credentialInjected: false,
    waitedMs: 0,
    responseHash: null,
  };
}

/** The 403/407 answer for a pipeline deny. */
function denyReply(d: Denied): SidecarReply {
  return {
    status: d.status,
    decision: 'deny',
    stage: d.stage,
    reason: d.reason,
    message: d.message,
    requestId: d.envelope.requestId,
    policyIds: d.policyIds,
    ...(d.status === 407 ? { headers: { 'proxy-authenticate': 'Basic realm="firma"' } } : {}),
  };
}
