/**
 * Usage read from a `text/event-stream` response as it passes (docs/llm.md "How usage is read"). Chunks
 * are cut into lines on `\n` (a `\r` before it is dropped), so a boundary anywhere (mid-line, mid-JSON,
 * mid-character) changes nothing. Only the few events that carry usage are parsed as JSON, found by a
 * byte search for a `"usage"` key whose value is an object; the generated text of every API read here
 * is under a `"delta"` key (Chat Completions `choices[].delta`, Responses `*.delta` events, Anthropic
 * `content_block_delta`), whose text strings are counted in place, without decoding them, for the
 * estimate a stream without usage needs. A line split between chunks is the only thing copied, and only
 * up to MAX_SSE_LINE. The needles start with a letter, not a quote: quotes are everywhere in JSON and
 * a search is as slow as the candidates its first byte finds (bench/README.md "LLM usage").
 */
import type { LlmFormat } from '../../core/llm.js';
import { firstStringOf, jsonKey, valueAfterKey } from './json-scan.js';
import { countDeltaText } from './text-counts.js';
import { MAX_MODEL_LENGTH, type UsageDraft } from './usage-draft.js';

/** The longest line kept; a longer one is skipped, and gives `line_too_long` when the stream then has no usage. */
export const MAX_SSE_LINE = 1024 * 1024;
/** A line buffer grown past this is let go once its line is read. */
const KEPT_LINE_BUFFER = 64 * 1024;

const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const COLON = 0x3a;
const QUOTE = 0x22;
const OPEN = 0x7b;
const PREFIX = 'data:'.length;

/**
 * Key names without their opening quote (the byte before a hit is checked to be one), for the native
 * search; their lengths as constants, and the literals compared byte by byte in JS as plain arrays:
 * reading a Buffer's `length` in a loop costs more than the loop (bench/README.md "LLM usage").
 */
const USAGE = Buffer.from('usage"', 'latin1');
const MODEL = Buffer.from('model"', 'latin1');
const DELTA = Buffer.from('delta"', 'latin1');
const KEY_LENGTH = 6; // each of the three above
const MODEL_KEY = jsonKey('model');
/** The model is named in a stream's first event (every event, in Chat Completions): looked for in this many. */
const MODEL_LINES = 8;

/**
 * Typed events (Anthropic, the Responses API) say what they are first: `{"type":"…"`. What an event
 * of each type can carry is known, so most are read without a search: a text delta has no usage, and
 * the events that repeat the whole output (`response.output_item.done`, …) carry nothing to read.
 */
const TYPE_PREFIX = bytes('{"type":"');
const ANTHROPIC_TEXT_EVENT = bytes('content_block_delta');
const ANTHROPIC_USAGE_EVENTS = [bytes('message_start'), bytes('message_delta')];
const RESPONSES_PREFIX = bytes('response.');
const RESPONSES_USAGE_EVENTS = ['completed', 'incomplete', 'failed', 'created', 'in_progress'].map((t) => bytes(`response.${t}`));
const DELTA_SUFFIX = bytes('.delta');
const MAX_TYPE = 96;
/** What precedes the delta of a Chat Completions chunk's first choice. */
const FIRST_CHOICE = bytes('{"index":0,');

function bytes(text: string): readonly number[] {
  return Array.from(Buffer.from(text, 'latin1'));
}

/** `buf[start, end)` is exactly `literal`. */
function bytesAre(buf: Buffer, start: number, end: number, literal: readonly number[]): boolean {
  if (end - start !== literal.length) return false;
  for (let i = 0; i < literal.length; i++) if (buf[start + i] !== literal[i]) return false;
  return true;
}

/** What a typed event is read for. */
const enum Typed {
  /** Not typed, or of a type not known here: the generic reading (usage, model, deltas). */
  Generic,
  /** A text delta: its delta only. */
  Text,
  /** Nothing to read. */
  Skip,
}

/**
 * The next place a needle occurs in the buffer being read, remembered so a chunk holding many lines is
 * searched once per needle occurrence, not once per line.
 */
class Needle {
  private epoch = -1;
  private from = 0;
  private at = -1;
  constructor(private readonly needle: Buffer) {}

  /** The first occurrence at or after `from` that ends before `end`, or -1. */
  find(buf: Buffer, epoch: number, from: number, end: number): number {
    if (epoch !== this.epoch || from < this.from || (this.at !== -1 && this.at < from)) {
      this.epoch = epoch;
      this.from = from;
      this.at = buf.indexOf(this.needle, from);
    }
    return this.at !== -1 && this.at + KEY_LENGTH <= end ? this.at : -1;
  }
}

export class SseReader {
  private pending: Buffer | null = null;
  private pendingLength = 0;
  /** Inside a line that outgrew MAX_SSE_LINE: bytes are dropped up to its end. */
  private skipping = false;
  private overflowed = false;
  /** Changes whenever the bytes the needles search change (a new chunk, a line rebuilt in `pending`). */
  private epoch = 0;
  private modelLines = 0;
  private readonly usage = new Needle(USAGE);
  private readonly model = new Needle(MODEL);
  private readonly delta = new Needle(DELTA);

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
      // The blank line that ends an event, passed over without another search.
      if (this.pendingLength === 0 && !this.skipping) {
        if (chunk[start] === LF) start++;
        else if (chunk[start] === CR && chunk[start + 1] === LF) start += 2;
      }
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
    if (end - start < PREFIX + 2 || buf[start] !== 0x64 || buf[start + 1] !== 0x61 || buf[start + 2] !== 0x74 || buf[start + 3] !== 0x61
      || buf[start + 4] !== COLON) return; // not `data:`
    const p = buf[start + PREFIX] === SPACE ? start + PREFIX + 1 : start + PREFIX;
    const typeEnd = this.typeEnd(buf, p, end);
    const typed = typeEnd === -1 ? Typed.Generic : this.typed(buf, p + TYPE_PREFIX.length, typeEnd);
    if (typed === Typed.Skip) return;
    if (typed === Typed.Text) {
      this.deltas(buf, typeEnd, end, true);
      return;
    }
    const epoch = this.epoch;
    if (this.draft.model === null && this.modelLines < MODEL_LINES) {
      this.modelLines++;
      if (this.model.find(buf, epoch, p, end) !== -1) this.draft.takeModel(firstStringOf(buf, MODEL_KEY, p, end, MAX_MODEL_LENGTH));
    }
    // Every API read here puts `usage` after the deltas of an event: a line with a delta is searched
    // for it only past its last delta (a short scan), which spares a search of the whole line.
    const afterDeltas = this.deltas(buf, p, end, false);
    const u = afterDeltas === -1 ? this.lastUsage(buf, p, end) : this.usageFrom(buf, afterDeltas, end);
    if (u !== -1) {
      const v = valueAfterKey(buf, u + KEY_LENGTH, end);
      if (v !== -1 && buf[v] === OPEN) this.usageEvent(buf.toString('utf8', p, end));
    }
  }

  /**
   * Where the line's `"usage"` key is (an event has one), or -1. A line that ends its buffer (one event
   * a chunk, as providers write) is searched from its end, where Chat Completions chunks carry
   * `"usage"`; a line among others, forwards (remembered per buffer: the search stays linear).
   */
  private lastUsage(buf: Buffer, p: number, end: number): number {
    if (end + 2 >= buf.length) {
      for (let at = buf.lastIndexOf(USAGE, end - KEY_LENGTH); at >= p; at = at === 0 ? -1 : buf.lastIndexOf(USAGE, at - 1)) {
        if (buf[at - 1] === QUOTE) return at;
      }
      return -1;
    }
    return this.usageFrom(buf, p, end);
  }

  /** The first `"usage"` key in `buf[from, end)`, searched forwards, or -1 (an event has one). */
  private usageFrom(buf: Buffer, from: number, end: number): number {
    for (let at = this.usage.find(buf, this.epoch, from, end); at !== -1; at = this.usage.find(buf, this.epoch, at + 1, end)) {
      if (buf[at - 1] === QUOTE) return at;
    }
    return -1;
  }

  /** Where the `"type"` value of a typed event ends (its closing quote), or -1 when the line is not one. */
  private typeEnd(buf: Buffer, p: number, end: number): number {
    const from = p + TYPE_PREFIX.length;
    if (end - p < TYPE_PREFIX.length + 2 || buf[p + 1] !== QUOTE || !bytesAre(buf, p, from, TYPE_PREFIX)) return -1;
    const limit = Math.min(end, from + MAX_TYPE);
    for (let i = from; i < limit; i++) if (buf[i] === QUOTE) return i;
    return -1;
  }

  private typed(buf: Buffer, start: number, end: number): Typed {
    if (this.format === 'anthropic') {
      if (bytesAre(buf, start, end, ANTHROPIC_TEXT_EVENT)) return Typed.Text;
      for (const t of ANTHROPIC_USAGE_EVENTS) if (bytesAre(buf, start, end, t)) return Typed.Generic;
      return Typed.Skip;
    }
    if (end - start < RESPONSES_PREFIX.length || !bytesAre(buf, start, start + RESPONSES_PREFIX.length, RESPONSES_PREFIX)) return Typed.Generic;
    if (bytesAre(buf, end - DELTA_SUFFIX.length, end, DELTA_SUFFIX)) return Typed.Text;
    for (const t of RESPONSES_USAGE_EVENTS) if (bytesAre(buf, start, end, t)) return Typed.Generic;
    return Typed.Skip;
  }

  /**
   * Count the text under each `"delta"` key of the line (only the first when `one`: a typed event has
   * one). Returns the index just past the last delta, or -1 when the line has none.
   */
  private deltas(buf: Buffer, from: number, end: number, one: boolean): number {
    if (!one && end + 2 >= buf.length) {
      // A chunk of one choice (`"choices":[{"index":0,"delta":…}]`): its last delta is its only one.
      const d = buf.lastIndexOf(DELTA, end - KEY_LENGTH);
      const quote = d - 1;
      if (quote - FIRST_CHOICE.length >= from && buf[quote] === QUOTE && bytesAre(buf, quote - FIRST_CHOICE.length, quote, FIRST_CHOICE)) {
        return this.deltaAt(buf, d, end);
      }
    }
    let last = -1;
    for (let d = this.delta.find(buf, this.epoch, from, end); d !== -1; d = this.delta.find(buf, this.epoch, d + 1, end)) {
      const after = this.deltaAt(buf, d, end);
      if (after === -1) continue;
      last = after;
      if (one) break;
    }
    return last;
  }

  /** Count the text of the `delta"` found at `d`: the index past its value, or -1 when it is not a `"delta"` key with text or an object. */
  private deltaAt(buf: Buffer, d: number, end: number): number {
    if (buf[d - 1] !== QUOTE) return -1;
    const v = valueAfterKey(buf, d + KEY_LENGTH, end);
    if (v === -1) return -1;
    let after: number;
    if (buf[v] === OPEN) after = countDeltaText(buf, v, end, this.draft.text);
    else if (buf[v] === QUOTE) after = this.draft.text.addJsonString(buf, v + 1, end);
    else return -1;
    this.draft.generation = true;
    return after;
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
