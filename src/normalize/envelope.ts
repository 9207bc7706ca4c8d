/**
 * The envelope is what every enforcement stage sees: a request reduced to who, what and where.
 * It never carries secret material (the capability token travels beside it in `Identity`, and only
 * stage 1 reads it).
 */
export type Scheme = 'http' | 'https';
export type Risk = 'low' | 'medium' | 'high' | 'critical';

/** Who is asking. `token` is secret: never log it, never put it in an audit event. */
export interface Identity {
  readonly agentId: string;
  readonly token: string | null;
  readonly source: 'proxy-authorization' | 'default';
}

export interface Target {
  readonly scheme: Scheme;
  /** Canonical host: lowercase DNS name, dotted IPv4, or bracketless IPv6. */
  readonly host: string;
  readonly kind: 'dns' | 'ipv4' | 'ipv6';
  readonly port: number;
}

/** How the request reached the sidecar; decisions on a whole tunnel have no method or path. */
export type EnvelopeKind = 'request' | 'websocket' | 'tunnel';

export interface Envelope {
  readonly requestId: string;
  readonly kind: EnvelopeKind;
  readonly agentId: string;
  readonly method: string;
  readonly target: Target;
  /** Path without the query string, as sent; `null` for a blind tunnel. */
  readonly path: string | null;
  /** Raw query string without `?`, or null when the target had no `?`. Audit records keys only. */
  readonly query: string | null;
  /** Set by the mapping rules (policy issue); `null` until a rule classifies the request. */
  readonly actionClass: string | null;
  readonly risk: Risk | null;
}

export interface RawRequest {
  readonly requestId: string;
  readonly kind: EnvelopeKind;
  readonly identity: Identity;
  readonly method: string;
  readonly target: Target;
  /** Request target as received (origin-form path with query), or null for a tunnel. */
  readonly pathAndQuery: string | null;
}

/** Normalizer entry point: RawRequest → Envelope. Classification by mapping rules lands here next. */
export function normalize(raw: RawRequest): Envelope {
  let path: string | null = null;
  let query: string | null = null;
  if (raw.pathAndQuery !== null) {
    const q = raw.pathAndQuery.indexOf('?');
    path = q === -1 ? raw.pathAndQuery : raw.pathAndQuery.slice(0, q);
    query = q === -1 ? null : raw.pathAndQuery.slice(q + 1);
  }
  return {
    requestId: raw.requestId,
    kind: raw.kind,
    agentId: raw.identity.agentId,
    method: raw.method,
    target: raw.target,
    path,
    query,
    actionClass: null,
    risk: null,
  };
}
