import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { createHash } from 'node:crypto';
import type { Held } from '../core/decision.js';
import type { BufferedBody } from '../core/outcome.js';
import { hasRequestBody } from '../core/http.js';
import { readBoundedBody } from '../normalize/body.js';
import type { DecisionSnapshot } from './snapshot.js';
import type { Verdict } from '../core/decision.js';


/** What the deciding half of a request produced: its verdict, and what was read of its body. */
export interface Decided {
  readonly verdict: Verdict;
  /** Read to check body fields or to hash a held request; the connector sends it first. */
  readonly body: BufferedBody | null;
}

/** Held requests without a body share approvals under this body hash. */
const EMPTY_BODY_HASH = createHash('sha256').digest('hex');

/**
 * Hold the request open until its approval is resolved (docs/architecture.md "Approval hold"). The body
 * is read first (up to the body limit) so identical requests can share one approval; the agent closing
 * its connection cancels.
 */
export async function hold(
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
