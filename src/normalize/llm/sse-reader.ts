/**
 * Usage read from a `text/event-stream` response as it passes (docs/llm.md "How usage is read"). Chunks
 * are cut into lines on `\n` (a `\r` before it is dropped), so a boundary anywhere (mid-line, mid-JSON,
 * mid-character) changes nothing. Only the few events that carry usage are parsed as JSON, found by a
 * byte search for `"usage"` whose value is an object; text deltas are counted in place, without
 * decoding them, for the estimate a stream without usage needs. A line that is split between chunks is
 * the only thing copied, and only up to MAX_SSE_LINE.
 */
import type { LlmFormat } from '../../core/llm.js';
import { firstStringOf, jsonKey, valueAfterKey } from './json-scan.js';
import { MAX_MODEL_LENGTH, type UsageDraft } from './usage-draft.js';

/** The longest line kept; a longer one is skipped, and gives `line_too_long` when the stream then has no usage. */
export const MAX_SSE_LINE = 1024 * 1024;
/** A line buffer grown past this is let go once its line is read. */
const KEPT_LINE_BUFFER = 64 * 1024;

const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const OPEN = 0x7b;
const DATA = Buffer.from('data:', 'latin1');

const USAGE = jsonKey('usage');
const MODEL = jsonKey('model');
/** OpenAI Responses API events carry their type first; Chat Completions chunks have no `type`. */
const RESPONSES_TYPE = Buffer.from('"type":"response.', 'latin1');
/** String values whose characters are generated output, per stream kind (`"key":"` up to the string's first byte). */
const CHAT_TEXT = [stringKey('content'), stringKey('arguments'), stringKey('refusal')];
const RESPONSES_TEXT = [stringKey('delta')];
const ANTHROPIC_TEXT = [stringKey('text'), stringKey('partial_json'), stringKey('thinking')];

function stringKey(name: string): Buffer {
  return Buffer.from(`"${name}":"`, 'latin1');
}

/**
 * The next place a needle occurs in the buffer being read, remembered so a chunk holding many lines is
 * searched once per needle occurrence, not once per line.
 */
class Needle {
  private epoch = -1;
  private from = 0;
  private at = -1;
  constructor(readonly bytes: Buffer) {}

  /** The first occurrence at or after `from` that ends before `end`, or -1. */
  find(buf: Buffer, epoch: number, from: number, end: number): number {
    if (epoch !== this.epoch || from < this.from || (this.at !== -1 && this.at < from)) {
      this.epoch = epoch;
      this.from = from;
      this.at = buf.indexOf(this.bytes, from);
    }
    return this.at !== -1 && this.at + this.bytes.length <= end ? this.at : -1;
  }
}

type StreamKind = 'unknown' | 'chat' | 'responses';

export class SseReader {
  private pending: Buffer | null = null;
  private pendingLength = 0;
  /** Inside a line that outgrew MAX_SSE_LINE: bytes are dropped up to its end. */
  private skipping = false;
  private overflowed = false;
  /** Changes whenever the bytes the needles search change (a new chunk, a line rebuilt in `pending`). */
  private epoch = 0;
  private kind: StreamKind = 'unknown';
  private readonly usage = new Needle(USAGE);
  private readonly model = new Needle(MODEL);
  private readonly responsesType = new Needle(RESPONSES_TYPE);
  private readonly chatText = CHAT_TEXT.map((b) => new Needle(b));
  private readonly responsesText = RESPONSES_TEXT.map((b) => new Needle(b));
  private readonly anthropicText = ANTHROPIC_TEXT.map((b) => new Needle(b));

  constructor(private readonly format: LlmFormat, private readonly draft: UsageDraft) {}

  data(chunk: Buffer): void {
    this.epoch++;
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(LF, start);
      if (nl === -1) {
        this.keep(chunk, start, chunk.length);
        return;
      }
      if (this.skipping) {
        this.skipping = false;
      } else if (this.pendingLength > 0) {
        if (this.keep(chunk, start, nl)) this.pendingLine();
        this.skipping = false;
      } else if (nl - start > MAX_SSE_LINE) {
        this.overflowed = true; // as if it had come in pieces: the same reading in every chunking
      } else {
        this.line(chunk, start, nl);
      }
      start = nl + 1;
    }
  }

  /** The stream ended: a last line without its newline is read too. */
  end(): void {
    if (this.pendingLength > 0 && !this.skipping) this.pendingLine();
    this.pending = null;
    if (this.overflowed && !this.draft.hasOutput) this.draft.fail('line_too_long');
  }

  /** Copy `chunk[start, end)` onto the line being rebuilt; false when that made it too long (it is then skipped). */
  private keep(chunk: Buffer, start: number, end: number): boolean {
    if (this.skipping) return false;
    const need = this.pendingLength + (end - start);
    if (need > MAX_SSE_LINE) {
      this.overflowed = true;
      this.skipping = true;
      this.pendingLength = 0;
      return false;
    }
    if (this.pending === null || this.pending.length < need) {
      const grown = Buffer.allocUnsafe(Math.min(MAX_SSE_LINE, Math.max(need, 2 * (this.pending?.length ?? 0), 1024)));
      if (this.pending !== null) this.pending.copy(grown, 0, 0, this.pendingLength);
      this.pending = grown;
    }
    chunk.copy(this.pending, this.pendingLength, start, end);
    this.pendingLength = need;
    return true;
  }

  private pendingLine(): void {
    const buf = this.pending as Buffer;
    const length = this.pendingLength;
    this.pendingLength = 0;
    this.epoch++;
    this.line(buf, 0, length);
    this.epoch++;
    if (buf.length > KEPT_LINE_BUFFER) this.pending = null;
  }

  private line(buf: Buffer, start: number, lineEnd: number): void {
    const end = lineEnd > start && buf[lineEnd - 1] === CR ? lineEnd - 1 : lineEnd;
    if (end - start < DATA.length + 2 || buf.compare(DATA, 0, DATA.length, start, start + DATA.length) !== 0) return;
    const p = buf[start + DATA.length] === SPACE ? start + DATA.length + 1 : start + DATA.length;
    const u = this.usage.find(buf, this.epoch, p, end);
    if (u !== -1) {
      const v = valueAfterKey(buf, u + USAGE.length, end);
      if (v !== -1 && buf[v] === OPEN) {
        this.usageEvent(buf.toString('utf8', p, end));
        return;
      }
    }
    if (this.draft.model === null && this.model.find(buf, this.epoch, p, end) !== -1) {
      this.draft.takeModel(firstStringOf(buf, MODEL, p, end, MAX_MODEL_LENGTH));
    }
    if (this.format === 'anthropic') {
      this.countText(this.anthropicText, buf, p, end);
      return;
    }
    if (this.kind === 'unknown') this.kind = this.responsesType.find(buf, this.epoch, p, end) === -1 ? 'chat' : 'responses';
    this.countText(this.kind === 'chat' ? this.chatText : this.responsesText, buf, p, end);
  }

  /** Count every string value after one of `needles` in the line: the generated text it carries. */
  private countText(needles: readonly Needle[], buf: Buffer, start: number, end: number): void {
    for (const needle of needles) {
      for (let at = needle.find(buf, this.epoch, start, end); at !== -1; at = needle.find(buf, this.epoch, at + 1, end)) {
        const after = this.draft.text.addJsonString(buf, at + needle.bytes.length, end);
        this.draft.generation = true;
        if (after >= end) break;
      }
    }
  }

  /** One event that carries a `usage` object: the last of a chat stream, `response.completed`, `message_start`, `message_delta`. */
  private usageEvent(json: string): void {
    let event: unknown;
    try {
      event = JSON.parse(json);
    } catch {
      this.draft.fail('malformed');
      return;
    }
    if (typeof event !== 'object' || event === null) return;
    const e = event as Record<string, unknown>;
    const draft = this.draft;
    if (this.format === 'openai') {
      const response = e['response'];
      const holder = typeof response === 'object' && response !== null ? (response as Record<string, unknown>) : e;
      draft.takeModel(holder['model']);
      if (!draft.takeUsage('openai', holder['usage'], true)) draft.fail('malformed');
      return;
    }
    if (e['type'] === 'message_start') {
      const message = e['message'];
      if (typeof message !== 'object' || message === null) return;
      const m = message as Record<string, unknown>;
      draft.takeModel(m['model']);
      if (!draft.takeUsage('anthropic', m['usage'], false)) draft.fail('malformed');
    } else if (e['type'] === 'message_delta') {
      if (!draft.takeUsage('anthropic', e['usage'], true)) draft.fail('malformed');
    }
  }
}
