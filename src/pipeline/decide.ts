import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Envelope, Identity, RawRequest } from '../core/envelope.js';
import type { BufferedBody } from '../core/outcome.js';
import { hasRequestBody } from '../core/http.js';
import type { Logger } from '../core/log.js';
import { normalize, unclassifiedEnvelope } from '../normalize/normalize.js';
import { readBoundedBody, extractBodyFields, unreadBodyMessage } from '../normalize/body.js';
import { deniedOnInternalError } from '../enforce/enforcer.js';
import type { DecisionSnapshot } from './snapshot.js';
import { hold, type Decided } from './hold.js';
import { decideMcp } from './decide-mcp.js';

export type { Decided } from './hold.js';

/**
 * normalize → (read the body fields a rule asks for) → enforce → (hold for approval), under one
 * snapshot. Never throws: any failure is a deny (fail closed; docs/architecture.md "Fail closed").
 * `req` is null for a tunnel or an upgrade (no body); `client` closing cancels a held request.
 */
export async function decide(
  snapshot: DecisionSnapshot,
  raw: RawRequest,
  req: IncomingMessage | null,
  client: ServerResponse | Duplex,
  log: Logger,
): Promise<Decided> {
  let envelope: Envelope;
  try {
    envelope = normalize(raw, snapshot.mapping, snapshot.llm);
  } catch (err) {
    log.error({ err, request_id: raw.requestId }, 'classification failed; denied');
    return { verdict: deniedOnInternalError(unclassifiedEnvelope(raw, false)), body: null };
  }
  try {
    const server = snapshot.mcp.endpoint(envelope.target, envelope.normalizedPath);
    if (server !== null) return await decideMcp(snapshot, server, envelope, raw.identity, req, client);
    return await enforce(snapshot, envelope, raw.identity, req, client);
  } catch (err) {
    // Every expected failure is a typed verdict already; this is a bug. Deny, never crash.
    log.error({ err, request_id: raw.requestId }, 'decision failed; denied');
    return { verdict: deniedOnInternalError(unclassifiedEnvelope(raw, false), 'policy'), body: null };
  }
}

async function enforce(
  snapshot: DecisionSnapshot,
  classified: Envelope,
  identity: Identity,
  req: IncomingMessage | null,
  client: ServerResponse | Duplex,
): Promise<Decided> {
  const { enforcer, bodyLimitBytes } = snapshot;
  let envelope = classified;
  let body: BufferedBody | null = null;
  if (req !== null && envelope.bodyFields.length > 0 && hasRequestBody(req)) {
    const read = await readBoundedBody(req, bodyLimitBytes);
    body = { prefix: read.prefix, complete: read.ok };
    if (!read.ok) {
      const message = unreadBodyMessage(read.reason, bodyLimitBytes, envelope.actionClass ?? 'this action');
      return { verdict: enforcer.refuse(envelope, identity, 'policy', read.reason, message), body };
    }
    const fields = extractBodyFields(read.prefix, envelope.bodyFields, req.headers['content-type']);
    if (!fields.ok) {
      const what = envelope.actionClass ?? 'this action';
      const message = fields.reason === 'body_not_json'
        ? `${what} is checked on its body, which must be a JSON object or form-encoded`
        : `${what} is checked on the body field ${fields.field}, which must appear once, as a single value`;
      return { verdict: enforcer.refuse(envelope, identity, 'policy', fields.reason, message), body };
    }
    envelope = enforcer.withBody(envelope, fields.values);
  }
  const verdict = await enforcer.decide(envelope, identity);
  if (verdict.verdict !== 'hold') return { verdict, body };
  return hold(snapshot, verdict, req, client, body);
}

