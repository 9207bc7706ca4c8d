/**
 * The envelope is what every enforcement stage sees: a request reduced to who, what and where.
 * It never carries secret material (the capability token travels beside it in `Identity`, and only
 * stage 1 reads it).
 */
import type { LlmFacts } from './llm.js';

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

/** JSON values stage 2 may see from a request body (only the fields a rule opted into). */
export type BodyValue = string | number | boolean | null;

/** A JSON-RPC 2.0 id as sent (MCP forbids null; a notification has none: null here). */
export type JsonRpcId = string | number | null;

/**
 * What an MCP message is, when the request went to a declared MCP endpoint (docs/mcp.md
 * "Classification"). One request carries one message, or a batch of them: each is decided as its own
 * envelope, and the request's envelope is the one that determined the decision.
 */
/** Bounded `/metrics` labels of one MCP message (docs/mcp.md "Metrics"). */
export interface McpCallLabels {
  readonly method: string;
  readonly tool: string;
}

export interface McpFacts {
  /** The `[[mcp.servers]]` name. */
  readonly server: string;
  /** The JSON-RPC method as sent; null for a response the client sends, a GET stream, a DELETE, or a body not read yet. */
  readonly method: string | null;
  /** `params.name` of a tools/call, exactly as sent; else null. */
  readonly tool: string | null;
  /** This message's id; null for a notification (or before the body is read). */
  readonly rpcId: JsonRpcId;
  /** The opted-in argument fields, as strings (numbers and booleans as their JSON text); null when none are opted into. */
  readonly arguments: Readonly<Record<string, string>> | null;
  /** Bounded metric labels: a known method or "other"; the matching tool rule's glob, "(other)" or "". */
  readonly methodLabel: string;
  readonly toolLabel: string;
  /** The id of every message of the request, in order (one entry for a single message). */
  readonly rpcIds: readonly JsonRpcId[];
  /** The metric labels of every message of the request, in order: `/metrics` counts each call of a batch. */
  readonly callLabels: readonly McpCallLabels[];
  /** Whether the body was a JSON array (a batch). */
  readonly batch: boolean;
  /** This message's position in `rpcIds`. */
  readonly index: number;
}

export interface Envelope {
  readonly requestId: string;
  readonly kind: EnvelopeKind;
  readonly agentId: string;
  readonly method: string;
  readonly target: Target;
  /** Path without the query string, as sent (what is forwarded); `null` for a blind tunnel. */
  readonly path: string | null;
  /** Raw query string without `?`, or null when the target had no `?`. Audit records keys only. */
  readonly query: string | null;
  /** The path as rules and policies see it: percent-decoding of unreserved characters, dot segments and duplicate slashes resolved. */
  readonly normalizedPath: string;
  /** Set by the mapping rules; `null` when no rule classifies the request. */
  readonly actionClass: string | null;
  readonly risk: Risk | null;
  /** The rule that classified the request (`file:line`), or null. */
  readonly ruleId: string | null;
  /** Body fields the rule opted into (names); their values arrive in `body`. */
  readonly bodyFields: readonly string[];
  /** Values of `bodyFields` read from a JSON body; null when the rule asks for none. */
  readonly body: Readonly<Record<string, BodyValue>> | null;
  /** Set when the request went to a declared MCP endpoint (docs/mcp.md); absent or null elsewhere. */
  readonly mcp?: McpFacts | null;
  /** Set when the request goes to an LLM API host (docs/llm-budgets.md "Hosts"); absent or null elsewhere. */
  readonly llm?: LlmFacts | null;
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

/** Path and query split of an origin-form target; `?` with nothing after is kept distinct from no `?`. */
export function splitTarget(pathAndQuery: string | null): { path: string | null; query: string | null } {
  if (pathAndQuery === null) return { path: null, query: null };
  const q = pathAndQuery.indexOf('?');
  return q === -1 ? { path: pathAndQuery, query: null } : { path: pathAndQuery.slice(0, q), query: pathAndQuery.slice(q + 1) };
}
