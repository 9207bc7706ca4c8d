import { errorCode } from '../core/errors.js';
import type { ConnectorErrorKind } from '../core/outcome.js';

/** the status (docs/listeners.md) for each connector error when the sidecar answers in place of the upstream. */
export const CONNECTOR_ERROR_STATUS: Readonly<Record<ConnectorErrorKind, number>> = {
  timeout: 504,
  network: 502,
  invalid_request: 400,
  rate_limited: 429,
  credential: 502,
};

// FIRMA_UPSTREAM_DEADLINE: the host's timeout_ms passed before response headers (connector/relay.ts).
const TIMEOUT_CODES = new Set(['FIRMA_UPSTREAM_DEADLINE', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);
const INVALID_REQUEST_CODES = new Set([
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_INVALID_ARG',
  'UND_ERR_NOT_SUPPORTED',
  'ERR_INVALID_HTTP_TOKEN',
  'ERR_INVALID_CHAR',
]);

export interface ClassifiedError {
  readonly kind: ConnectorErrorKind;
  /** A short, safe code (e.g. `ECONNREFUSED`, `UND_ERR_HEADERS_TIMEOUT`) for logs and the reply. */
  readonly code: string;
}

/** Map an undici / socket / TLS error to a connector error kind. Never exposes the error message. */
export function classifyUpstreamError(err: unknown): ClassifiedError {
  // undici wraps some causes; the innermost code is the informative one.
  let code = errorCode(err);
  const cause = typeof err === 'object' && err !== null ? (err as { cause?: unknown }).cause : undefined;
  const causeCode = errorCode(cause);
  if ((code === undefined || code === 'UND_ERR_SOCKET') && causeCode !== undefined) code = causeCode;
  if (code === undefined) return { kind: 'network', code: 'UPSTREAM_ERROR' };
  if (TIMEOUT_CODES.has(code)) return { kind: 'timeout', code };
  if (INVALID_REQUEST_CODES.has(code)) return { kind: 'invalid_request', code };
  return { kind: 'network', code };
}

export interface DestinationDenial {
  readonly code: string;
  readonly reason: string;
  readonly message: string;
}

/**
 * The SSRF guard's refusal, wherever undici put it (the error itself or a `cause`). Its message is
 * written for the agent (host, address, class, how to allow), so it is passed on as is.
 */
export function findDestinationDenied(err: unknown): DestinationDenial | null {
  let current: unknown = err;
  for (let depth = 0; depth < 4 && typeof current === 'object' && current !== null; depth++) {
    if (errorCode(current) === 'FIRMA_DESTINATION_DENIED') {
      const e = current as { reason?: unknown; message?: unknown };
      return {
        code: 'FIRMA_DESTINATION_DENIED',
        reason: typeof e.reason === 'string' ? e.reason : 'destination_denied',
        message: typeof e.message === 'string' ? e.message : 'the destination address is not allowed',
      };
    }
    current = (current as { cause?: unknown }).cause;
  }
  return null;
}
