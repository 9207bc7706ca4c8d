import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Envelope, Identity, McpFacts } from '../core/envelope.js';
import type { Held, Permitted, Verdict } from '../core/decision.js';
import type { BufferedBody } from '../core/outcome.js';
import { hasRequestBody } from '../core/http.js';
import { readBoundedBody, unreadBodyMessage } from '../normalize/body.js';
import type { McpServer } from '../normalize/mcp.js';
import { exchangeCall, parseMcpBody, requestFacts, type McpCall } from '../normalize/mcp-messages.js';
import type { DecisionSnapshot } from './snapshot.js';
import { hold, type Decided } from './hold.js';

const NO_FIELDS: readonly string[] = [];
const RISK_RANK = { low: 0, medium: 1, high: 2, critical: 3 } as const;

/**
 * A request to a declared MCP endpoint (docs/mcp.md "Enforcement"): the JSON-RPC body read within the
 * body limit, each message decided as its own envelope (stage 1, stage 2, the approval hold), and the
 * request allowed only if every message is. A held message holds the request. Never skips a message.
 */
export async function decideMcp(
  snapshot: DecisionSnapshot,
  server: McpServer,
  classified: Envelope,
  identity: Identity,
  req: IncomingMessage | null,
  client: ServerResponse | Duplex,
): Promise<Decided> {
  const { enforcer, bodyLimitBytes } = snapshot;
  const base: Envelope = { ...classified, actionClass: null, risk: null, ruleId: `mcp:${server.name}`, bodyFields: NO_FIELDS, body: null, mcp: requestFacts(server) };
  const refuse = (reason: string, message: string, status: 400 | 403, facts: McpFacts | null = null, stage: 'mapping' | 'policy' = 'mapping'): Verdict =>
    enforcer.refuse(facts === null ? base : { ...base, mcp: facts }, identity, stage, reason, message, status);

  if (req === null || classified.kind !== 'request') {
    return { verdict: refuse('mcp_malformed', `an MCP endpoint takes HTTP requests (POST, GET, DELETE), not a ${classified.kind}`, 400), body: null };
  }
  const exchange = exchangeCall(server, classified.method);
  if (exchange !== null) return decideCalls(snapshot, [withCall(base, exchange)], identity, req, client, null);
  if (classified.method !== 'POST') {
    return { verdict: refuse('mcp_malformed', `an MCP endpoint takes POST, GET and DELETE, not ${classified.method}`, 400), body: null };
  }
  if (!hasRequestBody(req)) {
    return { verdict: refuse('mcp_malformed', 'a POST to an MCP endpoint must carry a JSON-RPC message', 400), body: null };
  }
  const read = await readBoundedBody(req, bodyLimitBytes);
  const body: BufferedBody = { prefix: read.prefix, complete: read.ok };
  if (!read.ok) {
    const message = unreadBodyMessage(read.reason, bodyLimitBytes, `a call to the MCP server ${server.name}`);
    return { verdict: refuse(read.reason, message, 403, null, 'policy'), body };
  }
  const parsed = parseMcpBody(server, read.prefix);
  if (!parsed.ok) {
    const facts: McpFacts = { ...requestFacts(server), rpcIds: parsed.rpcIds, batch: parsed.batch };
    return { verdict: refuse(parsed.reason, parsed.message, parsed.reason === 'mcp_malformed' ? 400 : 403, facts), body };
  }
  return decideCalls(snapshot, parsed.calls.map((c) => withCall(base, c)), identity, req, client, body);
}

function withCall(base: Envelope, call: McpCall): Envelope {
  return { ...base, actionClass: call.actionClass, risk: call.risk, ruleId: call.ruleId, mcp: call.facts };
}

/**
 * Every call decided in order; the first deny denies the request (its envelope names the call, so the
 * answer carries one error per call). Held calls are then waited for, one after the other.
 */
async function decideCalls(
  snapshot: DecisionSnapshot,
  envelopes: readonly Envelope[],
  identity: Identity,
  req: IncomingMessage,
  client: ServerResponse | Duplex,
  buffered: BufferedBody | null,
): Promise<Decided> {
  const permitted: Permitted[] = [];
  const held: Held[] = [];
  for (const envelope of envelopes) {
    const v = await snapshot.enforcer.decide(envelope, identity);
    if (v.verdict === 'deny') return { verdict: v, body: buffered };
    if (v.verdict === 'hold') held.push(v);
    else permitted.push(v);
  }
  let body = buffered;
  for (const h of held) {
    const d = await hold(snapshot, h, req, client, body);
    if (d.verdict.verdict === 'deny') return d;
    permitted.push(d.verdict);
    body = d.body;
  }
  return { verdict: decisive(permitted), body };
}

/**
 * The call the request's decision event names: one monitor mode would have denied, else one a person
 * approved, else the riskiest (the first of equals).
 */
function decisive(permitted: readonly Permitted[]): Permitted {
  let best = permitted[0] as Permitted;
  const score = (p: Permitted): number => (p.wouldDeny !== null ? 20 : 0) + (p.approval !== null ? 10 : 0) + RISK_RANK[p.envelope.risk ?? 'critical'];
  for (const p of permitted) if (score(p) > score(best)) best = p;
  return best;
}
