import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../core/log.js';
import type { Denied, Verdict } from '../core/decision.js';
import { sendReply, sendReplyRaw, type SidecarReply } from '../core/reply.js';
import type { AuditRecorder } from '../audit/record.js';

/** The audit calls an answer makes. */
type AnswerAudit = Pick<AuditRecorder, 'decision' | 'refused'>;
import { logRequest } from './log-line.js';
import { denyReply } from './replies.js';

/** What a refusal on a socket that cannot carry HTTP records about the connection (the audit's fields). */
export type RefusedConnection = Parameters<AuditRecorder['refused']>[1];

/**
 * Every answer the sidecar gives itself, each recorded the same way: the audit event first (a refusal
 * nothing decided on is `refused`; a deny is its decision event), then the reply, then the log line.
 * `decision` is null when no stage ran (malformed input, a bad target).
 */
export class Answers {
  readonly #audit: AnswerAudit;
  readonly #log: Logger;

  constructor(audit: AnswerAudit, log: Logger) {
    this.#audit = audit;
    this.#log = log;
  }

  /** On an HTTP exchange. A refused request body is not read: 400 and 407 close the connection. */
  http(res: ServerResponse, reply: SidecarReply, decision: Verdict | null = null): void {
    if (decision === null) this.#audit.refused(reply);
    sendReply(res, reply, reply.status === 400 || reply.status === 407);
    logRequest(this.#log, decision, reply, null, 0);
  }

  /** A deny on an HTTP exchange; `close` when its body was read part-way (it cannot be skipped reliably). */
  deniedHttp(res: ServerResponse, d: Denied, started: number, close: boolean): void {
    const reply = denyReply(d);
    this.#audit.decision(d);
    sendReply(res, reply, close);
    logRequest(this.#log, d, reply, null, started);
  }

  /** Straight onto a socket (CONNECT, upgrade, malformed input), which is then closed. */
  raw(socket: Duplex, reply: SidecarReply, decision: Verdict | null = null): void {
    if (decision === null) this.#audit.refused(reply);
    else if (decision.verdict === 'deny') this.#audit.decision(decision);
    sendReplyRaw(socket, reply);
    logRequest(this.#log, decision, reply, null, 0);
  }

  /** On a connection that cannot carry an HTTP answer (a redirected TLS client): recorded, then closed. */
  drop(socket: Duplex, reply: SidecarReply, decision: Verdict | null, what: RefusedConnection = {}): void {
    if (decision === null) this.#audit.refused(reply, what);
    else if (decision.verdict === 'deny') this.#audit.decision(decision);
    socket.destroy();
    logRequest(this.#log, decision, reply, null, 0);
  }
}
