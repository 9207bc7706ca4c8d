/**
 * Usage read from a JSON response body (docs/llm.md "How usage is read"): the body is copied as it
 * passes, up to MAX_JSON_BODY, and read at its end. The top-level `usage` is the last `"usage"` key of
 * the body in every API read here (it follows the generated content), so only that object is parsed;
 * the whole body is parsed only when it has no usage, to estimate from its text. Past MAX_JSON_BODY only
 * the last TAIL_BYTES are kept: an embeddings answer is mostly numbers and ends with its model and usage.
 */
import type { LlmFormat } from '../../core/llm.js';
import { firstStringOf, jsonKey, parseContainer, valueAfterKey } from './json-scan.js';
import { MAX_MODEL_LENGTH, type UsageDraft } from './usage-draft.js';

export const MAX_JSON_BODY = 4 * 1024 * 1024;
export const TAIL_BYTES = 64 * 1024;

const USAGE = jsonKey('usage');
const MODEL = jsonKey('model');
const OPEN = 0x7b;

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

export class JsonBodyReader {
  private body: Buffer | null = null;
  private length = 0;
  /** After MAX_JSON_BODY: the last bytes, in a buffer of twice TAIL_BYTES shifted down when full. */
  private tail: Buffer | null = null;
  private tailLength = 0;

  constructor(private readonly format: LlmFormat, private readonly draft: UsageDraft) {}

  data(chunk: Buffer): void {
    if (this.tail !== null) {
      this.keepTail(chunk);
      return;
    }
    const need = this.length + chunk.length;
    if (need > MAX_JSON_BODY) {
      // From here on: the head (where most bodies name their model) and the tail (where usage is) only.
      const body = this.body ?? Buffer.alloc(0);
      this.tail = Buffer.allocUnsafe(2 * TAIL_BYTES);
      this.keepTail(body.subarray(Math.max(0, this.length - TAIL_BYTES), this.length));
      this.body = Buffer.from(body.subarray(0, Math.min(this.length, TAIL_BYTES)));
      this.length = this.body.length;
      this.keepTail(chunk);
      return;
    }
    if (this.body === null || this.body.length < need) {
      const grown = Buffer.allocUnsafe(Math.min(MAX_JSON_BODY, Math.max(need, 2 * (this.body?.length ?? 0), 16 * 1024)));
      if (this.body !== null) this.body.copy(grown, 0, 0, this.length);
      this.body = grown;
    }
    chunk.copy(this.body, this.length);
    this.length = need;
  }

  private keepTail(chunk: Buffer): void {
    const tail = this.tail as Buffer;
    if (chunk.length >= TAIL_BYTES) {
      chunk.copy(tail, 0, chunk.length - TAIL_BYTES);
      this.tailLength = TAIL_BYTES;
      return;
    }
    if (this.tailLength + chunk.length > tail.length) {
      tail.copy(tail, 0, this.tailLength - TAIL_BYTES, this.tailLength);
      this.tailLength = TAIL_BYTES;
    }
    chunk.copy(tail, this.tailLength);
    this.tailLength += chunk.length;
  }

  /** Read the body; `complete` false (cut): a JSON body read in part gives no usage. */
  end(complete: boolean): void {
    const length = this.length;
    const body = (this.body ?? Buffer.alloc(0)).subarray(0, length);
    this.body = null;
    if (!complete) {
      this.draft.fail('cut');
      return;
    }
    if (this.tail !== null) {
      const tail = this.tail.subarray(0, this.tailLength);
      this.tail = null;
      if (!this.lastUsage(tail, tail.length)) {
        this.draft.fail('too_large');
        return;
      }
      this.draft.takeModel(firstStringOf(body, MODEL, 0, length, MAX_MODEL_LENGTH) ?? firstStringOf(tail, MODEL, 0, tail.length, MAX_MODEL_LENGTH));
      return;
    }
    if (this.lastUsage(body, length)) {
      this.draft.takeModel(firstStringOf(body, MODEL, 0, length, MAX_MODEL_LENGTH));
      return;
    }
    this.whole(body, length);
  }

  /** The last `"usage": {…}` of `buf[0, length)`, when it reads as a usage of this format. */
  private lastUsage(buf: Buffer, length: number): boolean {
    const at = buf.lastIndexOf(USAGE, length - USAGE.length);
    if (at === -1) return false;
    const v = valueAfterKey(buf, at + USAGE.length, length);
    if (v === -1 || buf[v] !== OPEN) return false;
    const usage = parseContainer(buf, v, length);
    return usage !== undefined && this.draft.takeUsage(this.format, usage, true);
  }

  /** No usage object found by the byte search: parse the body to read its usage, or estimate from its text. */
  private whole(body: Buffer, length: number): void {
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('utf8', 0, length));
    } catch {
      this.draft.fail('malformed');
      return;
    }
    if (!isObject(doc)) {
      this.draft.fail('not_generation');
      return;
    }
    this.draft.takeModel(doc['model']);
    if (isObject(doc['usage'])) {
      if (!this.draft.takeUsage(this.format, doc['usage'], true)) this.draft.fail('malformed');
      return;
    }
    if (this.format === 'openai') this.openAiText(doc);
    else this.anthropicText(doc);
  }

  /** Chat Completions `choices[].message`, or Responses API `output[]` items. */
  private openAiText(doc: Json): void {
    const text = this.draft.text;
    for (const choice of list(doc['choices'])) {
      this.draft.generation = true;
      const message = isObject(choice) ? choice['message'] : undefined;
      if (!isObject(message)) continue;
      const content = message['content'];
      if (typeof content === 'string') text.addText(content);
      for (const part of list(content)) if (isObject(part) && typeof part['text'] === 'string') text.addText(part['text']);
      if (typeof message['refusal'] === 'string') text.addText(message['refusal']);
      for (const call of list(message['tool_calls'])) {
        const fn = isObject(call) ? call['function'] : undefined;
        if (isObject(fn) && typeof fn['arguments'] === 'string') text.addText(fn['arguments']);
      }
    }
    for (const item of list(doc['output'])) {
      this.draft.generation = true;
      if (!isObject(item)) continue;
      if (typeof item['arguments'] === 'string') text.addText(item['arguments']);
      for (const part of [...list(item['content']), ...list(item['summary'])]) {
        if (isObject(part) && typeof part['text'] === 'string') text.addText(part['text']);
      }
    }
  }

  /** Messages `content[]`: text, tool input (as the JSON the model wrote), thinking. */
  private anthropicText(doc: Json): void {
    if (doc['type'] !== 'message') return;
    this.draft.generation = true;
    const text = this.draft.text;
    for (const block of list(doc['content'])) {
      if (!isObject(block)) continue;
      if (typeof block['text'] === 'string') text.addText(block['text']);
      if (typeof block['thinking'] === 'string') text.addText(block['thinking']);
      if (block['type'] === 'tool_use' && block['input'] !== undefined) text.addText(JSON.stringify(block['input']));
    }
  }
}
