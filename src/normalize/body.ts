import type { IncomingMessage } from 'node:http';
import type { BodyValue } from '../core/envelope.js';

const EMPTY = Buffer.alloc(0);

/** What was read; `prefix` is the whole body when ok, else the part read before stopping. */
export type BodyRead =
  | { readonly ok: true; readonly prefix: Buffer }
  | { readonly ok: false; readonly reason: 'body_too_large' | 'body_incomplete'; readonly prefix: Buffer };

/** The refusal sentence of a body that could not be read within `limit` bytes to check `what`. */
export function unreadBodyMessage(reason: 'body_too_large' | 'body_incomplete', limit: number, what: string): string {
  return reason === 'body_too_large'
    ? `the request body is over ${limit} bytes, the most read to check ${what}`
    : 'the request body ended before it was complete';
}

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
  | { readonly ok: false; readonly reason: 'body_not_json' }
  | { readonly ok: false; readonly reason: 'body_field_ambiguous'; readonly field: string };

const FORM = 'application/x-www-form-urlencoded';
const INTEGER = /^-?[0-9]{1,15}$/;

/**
 * Values of the named fields (`amount`, `metadata.order_id`) from a JSON object body, or from a
 * form-encoded body (Stripe's API takes those), where a field is its key (`metadata[order_id]` is
 * written `metadata.order_id`) and a whole-number value becomes a number (forms have no types;
 * amounts are integers in minor units). Only scalar values reach policies. An absent field is left
 * out (a policy tests `context.body has amount`); a field the upstream could read differently from
 * the sidecar is refused, since leaving it out would let `amount=50&amount=50000` or
 * `{"amount": {"value": 50000}}` skip a rule on the amount: a repeated form key, or a JSON value
 * that is an object or an array.
 */
export function extractBodyFields(body: Buffer, fields: readonly string[], contentType?: string): FieldExtraction {
  if (contentType !== undefined && contentType.toLowerCase().startsWith(FORM)) return fromForm(body, fields);
  const text = body.toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'body_not_json' };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { ok: false, reason: 'body_not_json' };
  // JSON.parse keeps the last of a repeated key; an upstream may keep the first.
  const repeated = repeatedKeyOnPath(text, fields);
  if (repeated !== null) return { ok: false, reason: 'body_field_ambiguous', field: repeated };
  const values: Record<string, BodyValue> = {};
  for (const field of fields) {
    let node: unknown = parsed;
    for (const part of field.split('.')) {
      node = typeof node === 'object' && node !== null && !Array.isArray(node) && Object.hasOwn(node, part)
        ? (node as Record<string, unknown>)[part]
        : undefined;
    }
    if (node === undefined) continue;
    if (node !== null && typeof node === 'object') return { ok: false, reason: 'body_field_ambiguous', field };
    if (node === null || typeof node === 'string' || typeof node === 'number' || typeof node === 'boolean') values[field] = node;
  }
  return { ok: true, values };
}

function fromForm(body: Buffer, fields: readonly string[]): FieldExtraction {
  const form = new URLSearchParams(body.toString('utf8'));
  const values: Record<string, BodyValue> = {};
  for (const field of fields) {
    const dot = field.indexOf('.');
    // Stripe-style nesting: metadata.order_id is sent as metadata[order_id].
    const key = dot === -1 ? field : `${field.slice(0, dot)}[${field.slice(dot + 1).replaceAll('.', '][')}]`;
    const all = form.getAll(key);
    if (all.length === 0) continue;
    // A repeated key is ambiguous (which one would the upstream use?): refuse rather than guess.
    if (all.length > 1) return { ok: false, reason: 'body_field_ambiguous', field };
    const v = all[0] as string;
    values[field] = INTEGER.test(v) ? Number(v) : v;
  }
  return { ok: true, values };
}

interface Frame {
  readonly array: boolean;
  /** Dotted path of this object when it lies on a field's path ('' = the root), else null. */
  readonly path: string | null;
  readonly keys: Set<string>;
  expectKey: boolean;
  lastKey: string | null;
}

/**
 * The first field path (or prefix of one, e.g. `metadata` for `metadata.order_id`) whose key appears
 * twice in the same object of an already valid JSON text, or null. A linear scan, run only for
 * requests whose rule opted into body fields.
 */
export function repeatedKeyOnPath(text: string, fields: readonly string[]): string | null {
  const onPath = new Set<string>();
  for (const f of fields) {
    const parts = f.split('.');
    for (let i = 1; i <= parts.length; i++) onPath.add(parts.slice(0, i).join('.'));
  }
  const stack: Frame[] = [];
  const join = (base: string, key: string): string => (base === '' ? key : `${base}.${key}`);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const top = stack[stack.length - 1];
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      let path: string | null = null;
      if (top === undefined) path = '';
      else if (!top.array && top.path !== null && top.lastKey !== null) {
        const child = join(top.path, top.lastKey);
        path = onPath.has(child) ? child : null;
      }
      stack.push({ array: c === 0x5b, path: c === 0x5b ? null : path, keys: new Set(), expectKey: c === 0x7b, lastKey: null });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      if (top !== undefined && !top.array) top.expectKey = true;
    } else if (c === 0x22 /* " */) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      if (top !== undefined && !top.array && top.expectKey) {
        top.expectKey = false;
        // Keys of objects off every field's path are neither decoded nor remembered.
        if (top.path !== null) {
          const key = JSON.parse(text.slice(i, j + 1)) as string;
          if (onPath.has(join(top.path, key)) && top.keys.has(key)) return join(top.path, key);
          top.keys.add(key);
          top.lastKey = key;
        }
      }
      i = j;
    }
  }
  return null;
}
