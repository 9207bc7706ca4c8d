import type { ConnectorErrorKind } from '../core/outcome.js';
import type { SidecarReply } from '../core/reply.js';
import type { Target } from '../core/envelope.js';
import { formatAuthority } from '../core/host.js';
import { CONNECTOR_ERROR_STATUS, classifyUpstreamError, findDestinationDenied } from './errors.js';

/** A dispatch failure as the sidecar answers it in place of the upstream. */
export interface DispatchFailure {
  readonly kind: ConnectorErrorKind;
  readonly code: string;
  readonly reply: Omit<SidecarReply, 'requestId'>;
}

/** SSRF denials are 403s; the rest get the statuses in docs/listeners.md "Status codes". */
export function describeFailure(err: unknown, target: Target): DispatchFailure {
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
      message: upstreamMessage(c.kind, c.code, target),
    },
  };
}

function upstreamMessage(kind: ConnectorErrorKind, code: string, target: Target): string {
  const where = formatAuthority(target);
  switch (kind) {
    case 'timeout':
      return `upstream ${where} did not answer in time (${code})`;
    case 'invalid_request':
      return `the request could not be sent to ${where} as received (${code})`;
    default:
      return `upstream ${where} could not be reached (${code})`;
  }
}
