import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { createHash } from 'node:crypto';
import type { Envelope, Identity, RawRequest } from '../core/envelope.js';
import type { Held, Verdict } from '../core/decision.js';
import type { BufferedBody } from '../core/outcome.js';
import { hasRequestBody } from '../core/http.js';
import type { Logger } from '../core/log.js';
import { normalize, unclassifiedEnvelope } from '../normalize/normalize.js';
import { readBoundedBody, extractBodyFields } from '../normalize/body.js';
import { deniedOnInternalError } from '../enforce/enforcer.js';
import type { DecisionSnapshot } from './snapshot.js';

/** What the deciding half of a request produced: its verdict, and what was read of its body. */
export interface Decided {
  readonly verdict: Verdict;
  /** Read to check body fields or to hash a held request; the connector sends it first. */
  readonly body: BufferedBody | null;
}

/** Held requests without a body share approvals under this body hash. */
const EMPTY_BODY_HASH = createHash('sha256').digest('hex');

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
    envelope = normalize(raw, snapshot.mapping);
  } catch (err) {
    log.error({ err, request_id: raw.requestId }, 'classification failed; denied');
    return { verdict: deniedOnInternalError(unclassifiedEnvelope(raw, false)), body: null };
  }
  try {
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
      const message = read.reason === 'body_too_large'
        ? `the request body is over ${bodyLimitBytes} bytes, the most read to check ${envelope.actionClass ?? 'this action'}`
        : 'the request body ended before it was complete';
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

/**
 * Hold the request open until its approval is resolved (docs/architecture.md "Approval hold"). The body
 * is read first (up to the body limit) so identical requests can share one approval; the agent closing
 * its connection cancels.
 */
async function hold(
  { enforcer, bodyLimitBytes }: DecisionSnapshot,
  held: Held,
  req: IncomingMessage | null,
  client: ServerResponse | Duplex,
  buffered: BufferedBody | null,
): Promise<Decided> {
  let body = buffered;
  if (body === null && req !== null && hasRequestBody(req)) {
    const read = await readBoundedBody(req, bodyLimitBytes);
    if (!read.ok && read.reason === 'body_incomplete') {
      return { verdict: enforcer.refuse(held.envelope, held.identity, 'approval', 'body_incomplete', 'the request body ended before it was complete'), body: null };
    }
    body = { prefix: read.prefix, complete: read.ok };
  }
  // A body over the limit is not hashed whole, so that request waits on an approval of its own.
  const bodyHash = body === null ? EMPTY_BODY_HASH : body.complete ? createHash('sha256').update(body.prefix).digest('hex') : null;
  const gone = new AbortController();
  const onClose = (): void => gone.abort();
  client.once('close', onClose);
  try {
    return { verdict: await enforcer.awaitApproval(held, { bodyHash, signal: gone.signal }), body };
  } finally {
    client.off('close', onClose);
  }
}
