import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../core/log.js';
import type { RawRequest } from '../core/envelope.js';
import { issueAllowed, type Allowed, type Permitted, type Verdict } from '../core/decision.js';
import type { SidecarReply } from '../core/reply.js';
import { cutByShutdown, emptyOutcome, type DispatchOutcome } from '../core/outcome.js';
import type { AuditRecorder } from '../audit/record.js';
import type { Connector } from '../connector/connector.js';
import { Answers, type RefusedConnection } from './answer.js';
import { decide, type Decided } from './decide.js';
import { logRequest } from './log-line.js';
import { auditUnavailable, denyReply, dispatchFailed } from './replies.js';
import type { DecisionSnapshot, DecisionSource } from './snapshot.js';
import type { UsageReader, UsageReading } from '../core/llm.js';
import type { Target } from '../core/envelope.js';

/** How a blind tunnel opened once its upstream was dialled: the client's first bytes, or why it was refused. */
export type TunnelOpening =
  | { readonly ok: true; readonly firstBytes: Buffer }
  | { readonly ok: false; readonly reason: string };

/**
 * The interceptor's half of opening a blind tunnel: answer the CONNECT (unless `transparent`), then
 * read the ClientHello and check it names `target`. The pipeline relays nothing before it agrees.
 */
export interface TunnelOpener {
  open(socket: Duplex, target: Target, transparent: boolean): Promise<TunnelOpening>;
}

/** What the pipeline asks of the audit log (audit/record.ts implements it). */
export type PipelineAudit = Pick<AuditRecorder, 'decision' | 'outcome' | 'refused' | 'committed'>;

/** What the pipeline asks of the connector (connector/connector.ts implements it). */
export type PipelineConnector = Pick<Connector, 'forward' | 'upgrade' | 'dialTunnel' | 'relayTunnel'>;

export interface PipelineOptions {
  /** The snapshot each request is decided under, read once per request (a reload swaps it). */
  readonly decisions: DecisionSource;
  /** Decision and outcome events; a decision that cannot be recorded is not dispatched. */
  readonly audit: PipelineAudit;
  readonly connector: PipelineConnector;
  readonly log: Logger;
}

/**
 * The one orchestrator (docs/architecture.md "The request's path"): for every request the interceptor
 * hands over, normalize → enforce → (hold) → record the decision → dispatch → record the outcome → the
 * log line. It is the only place that knows that order and the only caller of the connector; the
 * interceptor never decides and never dials.
 */
export class RequestPipeline {
  readonly #o: PipelineOptions;
  readonly #answers: Answers;
  #inFlight = 0;
  #idleWaiters: Array<() => void> = [];
  /** The drain bound passed: every outcome recorded from now on is of an exchange the sidecar cut. */
  #cut = false;

  constructor(opts: PipelineOptions) {
    this.#o = opts;
    this.#answers = new Answers(opts.audit, opts.log);
  }

  /** Requests decided or being dispatched right now (tunnels count while they are open). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Resolves when nothing is in flight, or after `graceMs`, whichever is first. */
  whenIdle(graceMs: number): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, graceMs);
      this.#idleWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * The shutdown drain's bound passed and the interceptor is about to close every connection left
   * (docs/commands.md "Shutdown"). Whatever is in flight now ends because the sidecar cut it, so its
   * outcome says `shutdown` rather than what the connector saw as the sockets went (the agent's side
   * closing, undici destroyed), and the count matches the stop event's. Returns that count.
   */
  cutInFlight(): number {
    this.#cut = true;
    return this.#inFlight;
  }

  /**
   * Whether a tunnel to `host` opened without a token could carry no request stage 1 would let through.
   * Asked on CONNECT, where a 407 still reaches the client as a proxy answer it can act on.
   */
  tunnelNeedsToken(host: string): boolean {
    return this.#o.decisions.current().enforcer.tunnelNeedsToken(host);
  }

  /** An ordinary HTTP request (absolute-form, or inside a tunnel); the response streams into `res`. */
  request(raw: RawRequest, req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now();
    this.#begin();
    const snapshot = this.#o.decisions.current();
    decide(snapshot, raw, req, res, this.#o.log).then(
      (d) => this.#dispatchRequest(d, req, res, started, snapshot),
    ).catch((err: unknown) => this.#bug(err, raw.requestId, res));
  }

  /** A WebSocket (or other Upgrade) handshake; a 101 joins the sockets. */
  upgrade(raw: RawRequest, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const started = performance.now();
    this.#begin();
    decide(this.#o.decisions.current(), raw, null, socket, this.#o.log).then(
      (d) => this.#dispatchUpgrade(d.verdict, req, socket, head, started),
    ).catch((err: unknown) => this.#bug(err, raw.requestId, socket));
  }

  /**
   * A blind (bypassed) tunnel: decided on the host alone, dialled, then `opener` answers the CONNECT
   * and checks the ClientHello before a byte is relayed. `transparent`: there is no CONNECT to answer,
   * so a refusal can only close the connection.
   */
  tunnel(raw: RawRequest, socket: Duplex, transparent: boolean, opener: TunnelOpener): void {
    this.#runTunnel(raw, socket, transparent, opener).catch((err: unknown) => this.#bug(err, raw.requestId, socket));
  }

  /** A sidecar answer on an HTTP exchange no stage decided on (malformed input, a bad target). */
  refuseHttp(res: ServerResponse, reply: SidecarReply): void {
    this.#answers.http(res, reply);
  }

  /** The same, straight onto a socket (CONNECT, upgrade, bytes that are not HTTP). */
  refuseRaw(socket: Duplex, reply: SidecarReply): void {
    this.#answers.raw(socket, reply);
  }

  /** The same on a connection that cannot carry an HTTP answer: recorded, then closed. */
  refuseDrop(socket: Duplex, reply: SidecarReply, what: RefusedConnection): void {
    this.#answers.drop(socket, reply, null, what);
  }

  #dispatchRequest({ verdict, body }: Decided, req: IncomingMessage, res: ServerResponse, started: number, snapshot: DecisionSnapshot): void {
    if (verdict.verdict === 'deny') {
      this.#end();
      // A body we stopped reading part-way cannot be skipped reliably: close after the answer.
      this.#answers.deniedHttp(res, verdict, started, body !== null && !body.complete);
      return;
    }
    const allowed = this.#issue(verdict);
    if (allowed === null) {
      this.#end();
      this.#answers.http(res, auditUnavailable(verdict.envelope.requestId), verdict);
      return;
    }
    const committed = this.#o.audit.committed();
    if (committed === null) this.#forward(allowed, req, res, body, started, snapshot);
    else {
      void committed.then((ok) => {
        if (ok) this.#forward(allowed, req, res, body, started, snapshot);
        else this.#answers.http(res, this.#notCommitted(allowed, started), allowed);
      });
    }
  }

  #forward(allowed: Allowed, req: IncomingMessage, res: ServerResponse, body: Decided['body'], started: number, snapshot: DecisionSnapshot): void {
    const llm = allowed.envelope.llm;
    if (llm === null || llm === undefined) {
      this.#o.connector.forward(allowed, req, res, body).then(
        (outcome) => this.#finished(allowed, outcome, started),
        (err: unknown) => this.#forwardThrew(allowed, res, err, started),
      );
      return;
    }
    // An LLM call: its usage is read on the side as the bodies stream (docs/llm.md "How usage is read").
    const reader = snapshot.usage.reader(llm);
    this.#o.connector.forward(allowed, req, res, body, reader).then(
      (outcome) => this.#finishedLlm(allowed, outcome, started, reader, snapshot),
      (err: unknown) => {
        reader.end(false);
        this.#forwardThrew(allowed, res, err, started);
      },
    );
  }

  #forwardThrew(allowed: Allowed, res: ServerResponse, err: unknown, started: number): void {
    this.#dispatchThrew(allowed, err, started);
    this.#answers.http(res, dispatchFailed(allowed.envelope.requestId), allowed);
  }

  /**
   * The usage counts toward the agent's budgets before the outcome is recorded, so the next call is
   * checked against it (docs/llm.md "Budgets"); the reader settles within a turn of the response's end.
   */
  #finishedLlm(allowed: Allowed, outcome: DispatchOutcome, started: number, reader: UsageReader, snapshot: DecisionSnapshot): void {
    // The connector ends the reader as the exchange ends; this second end (a no-op then) makes sure a
    // dispatch that settled without it cannot leave the outcome unrecorded.
    reader.end(false);
    void reader.result().then((reading) => {
      if (reading.usage !== null) snapshot.usage.record(allowed.envelope.agentId, reading.usage);
      this.#finished(allowed, outcome, started, reading);
    });
  }

  #dispatchUpgrade(verdict: Verdict, req: IncomingMessage, socket: Duplex, head: Buffer, started: number): void {
    if (verdict.verdict === 'deny') {
      this.#end();
      this.#answers.raw(socket, denyReply(verdict), verdict);
      return;
    }
    const allowed = this.#issue(verdict);
    if (allowed === null) {
      this.#end();
      this.#answers.raw(socket, auditUnavailable(verdict.envelope.requestId), verdict);
      return;
    }
    const committed = this.#o.audit.committed();
    if (committed === null) this.#upgrade(allowed, req, socket, head, started);
    else {
      void committed.then((ok) => {
        if (ok) this.#upgrade(allowed, req, socket, head, started);
        else this.#answers.raw(socket, this.#notCommitted(allowed, started), allowed);
      });
    }
  }

  #upgrade(allowed: Allowed, req: IncomingMessage, socket: Duplex, head: Buffer, started: number): void {
    this.#o.connector.upgrade(allowed, req, socket, head).then(
      (outcome) => this.#finished(allowed, outcome, started),
      (err: unknown) => {
        this.#dispatchThrew(allowed, err, started);
        socket.destroy();
      },
    );
  }

  /** Record the decision, then issue the Allowed the connector takes; null when it cannot be recorded (fail closed). */
  #issue(permitted: Permitted): Allowed | null {
    if (!this.#o.audit.decision(permitted)) return null;
    return issueAllowed(permitted);
  }

  /**
   * With fsync "always" the decision must be on disk before the first byte goes upstream
   * (docs/audit.md "Durability"); when writing failed first, the allowed request is not sent: its
   * outcome says why (503, FIRMA_AUDIT_UNAVAILABLE) and the caller answers with the returned reply.
   */
  #notCommitted(allowed: Allowed, started: number): SidecarReply {
    this.#end();
    this.#o.audit.outcome(allowed, emptyOutcome(503, null, 'FIRMA_AUDIT_UNAVAILABLE'), performance.now() - started);
    return auditUnavailable(allowed.envelope.requestId);
  }

  #finished(allowed: Allowed, outcome: DispatchOutcome, started: number, usage: UsageReading | null = null): void {
    this.#end();
    logRequest(this.#o.log, allowed, null, this.#recordOutcome(allowed, outcome, started, usage), started, usage);
  }

  /** The audit outcome event of a dispatch (docs/audit.md "`outcome` events"); returns what was recorded. */
  #recordOutcome(allowed: Allowed, outcome: DispatchOutcome, started: number, usage: UsageReading | null = null): DispatchOutcome {
    const recorded = this.#cut ? cutByShutdown(outcome) : outcome;
    this.#o.audit.outcome(allowed, recorded, performance.now() - started, usage);
    return recorded;
  }

  #dispatchThrew(allowed: Allowed, err: unknown, started: number): void {
    this.#end();
    this.#o.log.error({ err, request_id: allowed.envelope.requestId }, 'dispatch failed');
    // Its decision event is written: the log must say how it ended, too.
    this.#recordOutcome(allowed, emptyOutcome(502, 'network'), started);
  }

  /** A throw past the decision is a bug: log it and cut this exchange, never the process. */
  #bug(err: unknown, requestId: string, client: ServerResponse | Duplex): void {
    this.#o.log.error({ err, request_id: requestId }, 'request handling failed');
    client.destroy();
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

  async #runTunnel(raw: RawRequest, socket: Duplex, transparent: boolean, opener: TunnelOpener): Promise<void> {
    const started = performance.now();
    const { verdict } = await decide(this.#o.decisions.current(), raw, null, socket, this.#o.log);
    if (verdict.verdict === 'deny') {
      this.#answerTunnel(socket, transparent, denyReply(verdict), verdict);
      return;
    }
    const allowed = this.#issue(verdict);
    if (allowed === null) {
      this.#answerTunnel(socket, transparent, auditUnavailable(raw.requestId), verdict);
      return;
    }
    this.#begin();
    const committed = this.#o.audit.committed();
    if (committed !== null && !(await committed)) {
      this.#answerTunnel(socket, transparent, this.#notCommitted(allowed, started), allowed);
      return;
    }
    const dialed = await this.#o.connector.dialTunnel(allowed);
    if (!dialed.ok) {
      this.#end();
      this.#recordOutcome(allowed, emptyOutcome(dialed.reply.status, dialed.error), started);
      this.#answerTunnel(socket, transparent, { ...dialed.reply, requestId: raw.requestId }, allowed);
      return;
    }
    const upstream = dialed.socket;
    const opened = await opener.open(socket, allowed.envelope.target, transparent);
    if (!opened.ok) {
      // A blind tunnel cannot carry an HTTP answer; the reason goes to the log (and the audit).
      upstream.destroy();
      socket.destroy();
      this.#end();
      const refusal: SidecarReply = { status: 400, decision: 'deny', stage: 'intercept', reason: opened.reason, message: '', requestId: raw.requestId };
      const recorded = this.#recordOutcome(allowed, emptyOutcome(400, 'invalid_request', opened.reason), started);
      logRequest(this.#o.log, allowed, recorded.error === 'shutdown' ? null : refusal, recorded, started);
      return;
    }
    const outcome = await this.#o.connector.relayTunnel(allowed, socket, upstream, opened.firstBytes);
    this.#finished(allowed, outcome, started);
  }

  #answerTunnel(socket: Duplex, transparent: boolean, reply: SidecarReply, decision: Verdict): void {
    if (transparent) this.#answers.drop(socket, reply, decision);
    else this.#answers.raw(socket, reply, decision);
  }
}
