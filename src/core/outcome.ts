/** What the connector reports after a dispatch: what the audit outcome event and the log line record. */

import type { FirmaErrorCode } from './errors.js';

/** Typed connector outcomes (docs/audit.md, outcome `error`); an upstream answering with any status is a success. */
export type ConnectorErrorKind = 'timeout' | 'network' | 'invalid_request' | 'rate_limited' | 'credential';

/**
 * Every outcome `error` (docs/audit.md "`outcome` events"): the connector's, plus `shutdown`, which only
 * the pipeline records, for an exchange the sidecar itself cut at its drain bound.
 */
export type OutcomeErrorKind = ConnectorErrorKind | 'shutdown';

/** The outcome error_code of an exchange the shutdown drain cut (docs/errors.md "Outcome error codes"). */
export const SHUTDOWN_CUT: FirmaErrorCode = 'FIRMA_SHUTDOWN_CUT';

/** What happened to one dispatch; handed to the decision log line and the audit outcome event. */
export interface DispatchOutcome {
  /** Upstream status, or the sidecar's own status when it answered in place of the upstream. */
  readonly status: number;
  readonly upstreamStatus: number | null;
  readonly error: OutcomeErrorKind | null;
  readonly errorCode: string | null;
  /** Request body bytes read from the agent. */
  readonly bytesIn: number;
  /** Response body bytes written to the agent. */
  readonly bytesOut: number;
  /** The agent went away before the response finished. */
  readonly clientAborted: boolean;
  /** A credential was added to the request (never the value). */
  readonly credentialInjected: boolean;
  /** Time spent waiting for a rate-limit token. */
  readonly waitedMs: number;
  /** `sha256:<hex>` of the response body bytes as streamed to the agent; null when none was relayed. */
  readonly responseHash: string | null;
}

/** Request body bytes the sidecar already read (to check body fields); sent first, then the rest. */
export interface BufferedBody {
  readonly prefix: Buffer;
  /** The prefix is the whole body. */
  readonly complete: boolean;
}

/** The outcome of a dispatch that never carried a byte (refused, or failed before the upstream answered). */
export function emptyOutcome(status: number, error: ConnectorErrorKind | null, errorCode: string | null = null, waitedMs = 0): DispatchOutcome {
  return {
    status,
    upstreamStatus: null,
    error,
    errorCode,
    bytesIn: 0,
    bytesOut: 0,
    clientAborted: false,
    credentialInjected: false,
    waitedMs,
    responseHash: null,
  };
}

/**
 * How a dispatch still in flight when the drain bound passed ended, whatever the connector saw as the
 * sockets went (the agent's side closing, undici destroyed): the sidecar cut it. The byte counts and
 * hash stay, so the log says how much the agent got; the status is the upstream's when its answer had
 * begun, else 503 (the sidecar was unavailable, nobody answered).
 */
export function cutByShutdown(o: DispatchOutcome): DispatchOutcome {
  return { ...o, status: o.upstreamStatus ?? 503, error: 'shutdown', errorCode: SHUTDOWN_CUT, clientAborted: false };
}
