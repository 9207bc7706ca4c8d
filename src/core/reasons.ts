import type { Stage } from './decision.js';

/**
 * The catalogue of reply reasons (docs/errors.md): every machine-readable `reason` the sidecar puts in
 * the JSON body it answers an agent with (`SidecarReply.reason`, `Denied.reason`). Agents and
 * dashboards branch on these, so they are stable: a new one is added here (and to docs/errors.md) in the
 * same change that first sends it; test/unit/core/catalogue.test.ts checks both against the source.
 * The same reasons are the `reason` of the audit `decision` event and of the metrics' request counter.
 */
export interface ReplyReasonInfo {
  /** The `stage` of the replies that carry it. */
  readonly stages: readonly Stage[];
  /** The HTTP statuses it is sent with. */
  readonly statuses: readonly number[];
  /**
   * The body's `decision`: `deny`, or `allow` when the request was allowed but could not be carried out
   * (the connector or the credential step failed).
   */
  readonly decision: 'deny' | 'allow';
  /**
   * `json`: the agent gets the JSON body. `closed`: the connection is closed instead (a TLS client cannot
   * read an HTTP answer, or the agent already left); the reason is in the log line and the audit log.
   * `json_or_closed`: one or the other, depending on the path (see the meaning).
   */
  readonly delivery: 'json' | 'json_or_closed' | 'closed';
  readonly meaning: string;
}

const INTERCEPT_400 = { stages: ['intercept'], statuses: [400], decision: 'deny' } as const;
const DENY_403 = { statuses: [403], decision: 'deny', delivery: 'json' } as const;

export const REPLY_REASONS = Object.freeze({
  // Intercept: the request could not be read as one the sidecar decides on (src/intercept).
  not_a_proxy_request: { ...INTERCEPT_400, delivery: 'json', meaning: 'An origin-form request (a bare path) reached the proxy listener: send absolute-form http:// requests or CONNECT.' },
  use_connect: { ...INTERCEPT_400, delivery: 'json', meaning: 'An absolute-form https:// request: https targets are reached with CONNECT.' },
  bad_request_target: { ...INTERCEPT_400, delivery: 'json', meaning: 'The absolute-form target does not start with the scheme in use, or carries credentials (user@host).' },
  bad_host: { ...INTERCEPT_400, delivery: 'json', meaning: 'The request URL, or on the transparent listener the Host header, does not name a valid host.' },
  missing_host: { ...INTERCEPT_400, delivery: 'json', meaning: 'An HTTP/1.1 request (or a redirected plain-HTTP request) without a Host header.' },
  duplicate_host: { ...INTERCEPT_400, delivery: 'json', meaning: 'The request carries more than one Host header (ambiguous framing, RFC 9112 3.2).' },
  host_mismatch: { ...INTERCEPT_400, delivery: 'json', meaning: 'The Host header or the absolute URL names another host or port than the request target, the CONNECT target, or the port the redirected connection was made to.' },
  bad_connect_target: { ...INTERCEPT_400, delivery: 'json', meaning: 'The CONNECT target is not host:port with a valid host name or IP literal.' },
  nested_connect: { ...INTERCEPT_400, delivery: 'json', meaning: 'A CONNECT sent inside a tunnel.' },
  unknown_tunnel: { ...INTERCEPT_400, delivery: 'json', meaning: 'A request arrived on a tunnel the sidecar has no record of (should not happen; refused to fail closed).' },
  not_tls: { ...INTERCEPT_400, delivery: 'json_or_closed', meaning: 'A tunnel or redirected connection carries neither TLS nor HTTP. Answered on an intercepted tunnel and on the transparent listener; a bypassed (blind) tunnel is closed.' },
  sni_mismatch: { ...INTERCEPT_400, delivery: 'json_or_closed', meaning: 'The TLS server name (SNI) is not the CONNECT target. Every request in an intercepted tunnel gets this 400; a bypassed tunnel is closed.' },
  sni_missing: { ...INTERCEPT_400, delivery: 'closed', meaning: 'A bypassed tunnel to a DNS name whose ClientHello names no server: a shared front would pick a site other than the one decided on.' },
  bad_client_hello: { ...INTERCEPT_400, delivery: 'closed', meaning: 'A malformed TLS ClientHello in a CONNECT tunnel (intercepted or bypassed) or on the transparent listener.' },
  client_hello_timeout: { ...INTERCEPT_400, delivery: 'closed', meaning: 'A CONNECT tunnel or a redirected connection sent bytes but no complete ClientHello in time.' },
  no_sni: { ...INTERCEPT_400, delivery: 'closed', meaning: 'A redirected TLS connection names no server (SNI): nothing else tells the sidecar the target host.' },
  bad_sni: { ...INTERCEPT_400, delivery: 'closed', meaning: 'A TLS ClientHello (in a CONNECT tunnel or on a redirected connection) whose server name is not a valid host name, e.g. `127.0.0.1:18443`: recorded, then the connection is closed.' },
  too_many_connections: { stages: ['intercept'], statuses: [503], decision: 'deny', delivery: 'json', meaning: 'A new client connection past max_connections or max_connections_per_client: answered 503 (retry-after: 1) before any request and closed; on the transparent listener recorded and closed.' },
  handshake_timeout: { ...INTERCEPT_400, delivery: 'closed', meaning: 'A TLS handshake in a CONNECT tunnel or on a redirected connection did not complete within handshake_timeout_ms of the ClientHello wait starting: recorded, then closed.' },
  malformed_request: { ...INTERCEPT_400, delivery: 'json', meaning: 'The bytes received are not valid HTTP/1.1.' },
  headers_too_large: { stages: ['intercept'], statuses: [431], decision: 'deny', delivery: 'json', meaning: 'The request headers are over 32 KiB.' },
  request_timeout: { stages: ['intercept'], statuses: [408], decision: 'deny', delivery: 'json', meaning: 'The request headers did not arrive within 30 s.' },
  proxy_auth_malformed: { stages: ['intercept'], statuses: [407], decision: 'deny', delivery: 'json', meaning: 'Proxy-Authorization is not Basic base64(agent_id:token), or the agent id is not valid. Sent with Proxy-Authenticate.' },
  shutting_down: { stages: ['intercept'], statuses: [503], decision: 'deny', delivery: 'json', meaning: 'A CONNECT while the sidecar drains for shutdown. Sent with Retry-After: 1.' },

  // Mapping (src/normalize) and the pipeline itself.
  unclassified: { ...DENY_403, stages: ['mapping'], meaning: 'No mapping rule classifies the request, and unmapped traffic is denied (default_protected = true).' },
  internal_error: { ...DENY_403, stages: ['mapping', 'capability', 'policy', 'approval'], meaning: 'A stage threw while classifying or deciding; the request is denied in every mode (fail closed) and the error is logged.' },
  mcp_malformed: { stages: ['mapping'], statuses: [400], decision: 'deny', delivery: 'json', meaning: 'A request to a declared MCP endpoint that is not JSON-RPC 2.0 as MCP uses it (not JSON, an empty or oversized batch, no jsonrpc "2.0", a bad id or method, tools/call without a tool name), or an HTTP method other than POST, GET and DELETE. Answered with a JSON-RPC error (code -32600).' },
  mcp_ambiguous: { ...DENY_403, stages: ['mapping'], meaning: 'A JSON-RPC message to a declared MCP endpoint repeats a key the sidecar reads (method, id, params, the tool name, an opted-in argument), or an opted-in argument is an object or array: denied, never guessed.' },

  // Capability tokens, stage 1 (src/enforce/capability/).
  token_missing: { stages: ['capability'], statuses: [407, 403], decision: 'deny', delivery: 'json', meaning: 'The request needs a capability token and carries none: 407 with Proxy-Authenticate (also on CONNECT to a host that needs one); 403 when the sidecar\'s own token_file is empty.' },
  token_invalid: { ...DENY_403, stages: ['capability'], meaning: 'The token is not PASETO v4.public, not signed by the capability key, has malformed claims, or is not valid yet.' },
  token_expired: { ...DENY_403, stages: ['capability'], meaning: 'The token\'s exp has passed (checked again after an approval wait).' },
  token_revoked: { ...DENY_403, stages: ['capability'], meaning: 'The token id is in the revocation file.' },
  agent_mismatch: { ...DENY_403, stages: ['capability'], meaning: 'The token was issued to another agent id than the one in Proxy-Authorization.' },
  out_of_scope: { ...DENY_403, stages: ['capability'], meaning: 'The token\'s actions do not cover the action class, or its scope does not cover the host and path.' },

  // Cedar policies, stage 2 (src/enforce/policy/), and the body checks made for them (src/normalize/body.ts).
  policy_deny: { ...DENY_403, stages: ['policy'], meaning: 'A forbid policy matched; policy_ids names it.' },
  no_permit: { ...DENY_403, stages: ['policy'], meaning: 'No policy permits this action class for this agent.' },
  policy_error: { ...DENY_403, stages: ['policy'], meaning: 'The policies could not be evaluated (a policy errored, the body does not fit the schema, or the engine is closed): denied.' },
  body_too_large: { ...DENY_403, stages: ['policy'], meaning: 'The rule checks body fields (or the request goes to a declared MCP endpoint) and the body is over body_limit_bytes.' },
  body_incomplete: { ...DENY_403, stages: ['policy', 'approval'], meaning: 'The request body ended before it was complete while being read for a check or an approval.' },
  body_not_json: { ...DENY_403, stages: ['policy'], meaning: 'The rule checks body fields and the body is not a JSON object or form-encoded.' },
  body_field_ambiguous: { ...DENY_403, stages: ['policy'], meaning: 'A checked body field appears more than once, or is not a single value.' },

  // Approvals (src/enforce/approval/).
  approval_required: { ...DENY_403, stages: ['approval'], meaning: 'A policy requires a person\'s approval and no approval stage is configured (in monitor mode: what enforce mode would have waited for).' },
  approval_denied: { ...DENY_403, stages: ['approval'], meaning: 'A person denied the held request; the message names them and their reason.' },
  approval_timeout: { ...DENY_403, stages: ['approval'], meaning: 'Nobody decided within [approvals] timeout_ms.' },
  approval_cancelled: { stages: ['approval'], statuses: [403], decision: 'deny', delivery: 'closed', meaning: 'The agent disconnected while its request was held.' },
  approval_capacity: { ...DENY_403, stages: ['approval'], meaning: '[approvals] max_pending requests are already waiting.' },
  shutdown: { ...DENY_403, stages: ['approval'], meaning: 'The sidecar is shutting down: held requests, and new ones that need approval, are denied.' },

  // Budget (src/enforce/budget): an LLM call past the agent's [[budgets]] (docs/llm.md "Budgets").
  budget_exceeded: { stages: ['budget'], statuses: [429], decision: 'deny', delivery: 'json', meaning: 'The agent\'s LLM tokens or cost in a [[budgets]] window have reached its limit: refused before dispatch until the window ends. Sent with Retry-After (seconds to the window\'s end).' },
  shared_state_unavailable: { stages: ['budget'], statuses: [503], decision: 'deny', delivery: 'json', meaning: 'The shared LLM usage totals cannot be read (Redis unreachable, [redis] on_error = "deny") for a call a budget or a usage-reading policy applies to. Sent with Retry-After: 1.' },

  // Audit (src/audit): nothing is dispatched that cannot be recorded.
  audit_unavailable: { stages: ['audit'], statuses: [503], decision: 'deny', delivery: 'json', meaning: 'The audit log cannot be written, so nothing is sent (or held) until it can. Sent with Retry-After: 1 when refused before dispatch.' },

  // Connector (src/connector): after an allow, before or while the request goes upstream.
  rate_limited: { stages: ['connector'], statuses: [429], decision: 'allow', delivery: 'json', meaning: 'No rate-limit token for the host\'s bucket within its timeout_ms. Sent with Retry-After.' },
  limiter_unavailable: { stages: ['connector'], statuses: [503], decision: 'allow', delivery: 'json', meaning: 'The shared rate limit cannot be checked (Redis unreachable, [redis] on_error = "deny"). Sent with Retry-After.' },
  timeout: { stages: ['connector'], statuses: [504], decision: 'allow', delivery: 'json', meaning: 'The upstream did not connect or send response headers within the host\'s timeout_ms.' },
  network: { stages: ['connector'], statuses: [502], decision: 'allow', delivery: 'json', meaning: 'The upstream could not be reached (DNS, refused, reset, TLS), or the request could not be dispatched; the message carries a short error code.' },
  invalid_request: { stages: ['connector'], statuses: [400], decision: 'allow', delivery: 'json', meaning: 'The request could not be sent upstream as received (bad header characters, body length mismatch).' },
  private_address: { ...DENY_403, stages: ['connector'], meaning: 'The host resolves to (or is) a loopback, private, CGNAT, link-local or unspecified address not listed in allow_private.' },
  reserved_address: { ...DENY_403, stages: ['connector'], meaning: 'The host resolves to a multicast, broadcast or reserved address not listed in allow_private.' },
  metadata_address: { ...DENY_403, stages: ['connector'], meaning: 'The host resolves to a cloud metadata endpoint: never allowed, not even by allow_private.' },
  loop: { ...DENY_403, stages: ['connector'], meaning: 'The destination is one of the sidecar\'s own listeners.' },
  unresolvable: { ...DENY_403, stages: ['connector'], meaning: 'The resolver answered something that is not an IP address.' },
  destination_denied: { ...DENY_403, stages: ['connector'], meaning: 'The SSRF guard refused the destination without a more specific reason (a fallback).' },

  // Credentials (src/connector/credentials.ts).
  credential: { stages: ['credentials'], statuses: [502], decision: 'allow', delivery: 'json', meaning: 'The credential for the host could not be obtained (variable unset, Vault unreachable or refusing); the message says why, never the value.' },
} satisfies Record<string, ReplyReasonInfo>);

export type ReplyReason = keyof typeof REPLY_REASONS;

/**
 * Reasons written to the audit log (and the metrics' request counter) that no agent is ever answered
 * with: the `reason` of allowed requests' `decision` events, and of `approval` events.
 */
export const AUDIT_ONLY_REASONS = Object.freeze({
  allowed: { event: 'decision', meaning: 'Stage 2 permitted the request (decision allow, stage policy).' },
  unclassified_passthrough: { event: 'decision', meaning: 'No rule classifies the request and default_protected = false: let through without credentials (decision passthrough).' },
  approved: { event: 'decision', meaning: 'A person approved this request, or the identical one it joined (stage approval).' },
  grant: { event: 'decision', meaning: 'A standing grant let the request through without asking (stage approval).' },
  agent_disconnected: { event: 'approval', meaning: 'The approval was cancelled: every agent waiting on it disconnected.' },
  sidecar_restarted: { event: 'approval', meaning: 'The approval was abandoned: it was still pending when the sidecar died (SIGKILL, crash), and the next start closed it.' },
} satisfies Record<string, { readonly event: 'decision' | 'approval'; readonly meaning: string }>);
