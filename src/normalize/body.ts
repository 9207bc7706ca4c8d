import type { IncomingMessage } from 'node:http';
import type { BodyValue } from './envelope.js';

/** What was read; `prefix` is the whole body when ok, else the part read before stopping. */
const EMPTY = Buffer.alloc(0);

export type BodyRead =
  | { readonly ok: true; readonly prefix: Buffer }
  | { readonly ok: false; readonly reason: 'body_too_large' | 'body_incomplete'; readonly prefix: Buffer };

/**
 * Read a request body up to `limit` bytes, for rules that let stage 2 see body fields. The bytes read
 * are forwarded as they are afterwards; a body over the limit is refused before anything is sent.
 */
export function readBoundedBody(req: IncomingMessage, limit: number): Promise<BodyRead> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.resolve({ ok: false, reason: 'body_too_large', prefix: EMPTY });
  }
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (r: BodyRead): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('aborted', onAbort);
      req.off('error', onAbort);
      resolve(r);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      chunks.push(chunk);
      if (size > limit) {
        req.pause();
        done({ ok: false, reason: 'body_too_large', prefix: Buffer.concat(chunks, size) });
      }
    };
    const onEnd = (): void => done({ ok: true, prefix: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size) });
    const onAbort = (): void => done({ ok: false, reason: 'body_incomplete', prefix: Buffer.concat(chunks, size) });
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('aborted', onAbort);
    req.on('error', onAbort);
  });
}

export type FieldExtraction =
  | { readonly ok: true; readonly values: Readonly<Record<string, BodyValue>> }
  | { readonly ok: false; readonly reason: 'body_not_json' };

/**
 * Values of the named fields (`amount`, `metadata.order_id`) from a JSON object body. Only scalar
 * values are passed to policies; a field that is absent or not a scalar is left out, so a policy
 * tests `context.body has amount` before using it.
 */
export function extractBodyFields(body: Buffer, fields: readonly string[]): FieldExtraction {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return { ok: false, reason: 'body_not_json' };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { ok: false, reason: 'body_not_json' };
  const values: Record<string, BodyValue> = {};
  for (const field of fields) {
    let node: unknown = parsed;
    for (const part of field.split('.')) {
      node = typeof node === 'object' && node !== null && !Array.isArray(node) && Object.hasOwn(node, part)
        ? (node as Record<string, unknown>)[part]
        : undefined;
    }
    if (node === null || typeof node === 'string' || typeof node === 'number' || typeof node === 'boolean') values[field] = node;
  }
  return { ok: true, values };
}
