/**
 * The usage of one LLM exchange, read from its bytes as the connector relays them
 * (docs/llm.md "How usage is read"). The reader is an `ExchangeTap`: every method returns at once, never throws and keeps
 * no chunk it is shown (the parts it needs are copied). Which body reader runs is decided by the
 * response's status, content type and content encoding; a compressed body is decoded beside the relay
 * by node:zlib, whose output arrives later, so `result()` settles once the decoder is done.
 */
import type { IncomingHttpHeaders } from 'node:http';
import zlib from 'node:zlib';
import type { ExchangeTap, LlmFormat, UsageReading } from '../../core/llm.js';
import { JsonBodyReader } from './json-body.js';
import { jsonKey, shortString, valueAfterKey } from './json-scan.js';
import type { PriceTable } from './prices.js';
import { SseReader } from './sse-reader.js';
import { MAX_MODEL_LENGTH, UsageDraft } from './usage-draft.js';

export { USAGE_REASONS, type UsageReason } from './usage-draft.js';

export interface UsageReader extends ExchangeTap {
  /** The reading, once `end()` was called (and a decoder flushed); never rejects. */
  result(): Promise<UsageReading>;
}

/** The request body scanned for its `"model"` when the response names none. */
export const MAX_REQUEST_SCAN = 64 * 1024;
/** The most bytes a compressed body is decoded to (a stream's reader keeps only a line of them). */
export const MAX_DECODED_BYTES = 64 * 1024 * 1024;

/** Compressed bytes handed to zlib at a time (see `compressed`). */
export const DECODE_BATCH = 16 * 1024;

const MODEL = jsonKey('model');
const ZLIB_HEADER = 0x78;
const QUOTE = 0x22;

type BodyReader = SseReader | JsonBodyReader;
type Encoding = 'gzip' | 'br' | 'deflate';

function headerText(v: string | string[] | undefined): string {
  return (Array.isArray(v) ? v.join(',') : v ?? '').trim().toLowerCase();
}

/** `text/event-stream`, JSON (`application/json`, `+json`), or neither. */
function bodyKind(contentType: string): 'sse' | 'json' | null {
  const semi = contentType.indexOf(';');
  const type = (semi === -1 ? contentType : contentType.slice(0, semi)).trim();
  if (type === 'text/event-stream') return 'sse';
  if (type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'))) return 'json';
  return null;
}

/** The one coding of `content-encoding` read here; null for none; 'other' for what is not decoded (stacked codings too). */
function encodingOf(value: string): Encoding | null | 'other' {
  if (value === '' || value === 'identity') return null;
  if (value === 'gzip' || value === 'x-gzip') return 'gzip';
  if (value === 'br') return 'br';
  if (value === 'deflate') return 'deflate';
  return 'other';
}

class Reader implements UsageReader {
  private readonly draft = new UsageDraft();
  private body: BodyReader | null = null;
  private encoding: Encoding | null = null;
  private decoder: zlib.Gunzip | zlib.BrotliDecompress | zlib.Inflate | zlib.InflateRaw | null = null;
  private decoded = 0;
  private started = false;
  private ended = false;
  private request: Buffer | null = null;
  private requestLength = 0;
  private requestScanFrom = 0;
  private requestDone = false;
  private requestModelName: string | null = null;
  private decodeFailed = false;
  private batch: Buffer | null = null;
  private batchLength = 0;
  private decoderClosed = false;
  /** `end(complete)` came while the decoder still ran: finish when it closes. */
  private endPending: boolean | null = null;
  private finished = false;
  private settle: (reading: UsageReading) => void = () => undefined;
  private readonly reading: Promise<UsageReading>;

  constructor(private readonly format: LlmFormat, private readonly prices: PriceTable) {
    this.reading = new Promise<UsageReading>((resolve) => {
      this.settle = resolve;
    });
  }

  result(): Promise<UsageReading> {
    return this.reading;
  }

  requestData(chunk: Buffer): void {
    if (this.requestDone || this.ended) return;
    try {
      const n = Math.min(chunk.length, MAX_REQUEST_SCAN - this.requestLength);
      const need = this.requestLength + n;
      if (this.request === null || this.request.length < need) {
        const grown = Buffer.allocUnsafe(Math.min(MAX_REQUEST_SCAN, Math.max(need, 2 * (this.request?.length ?? 0), 4096)));
        if (this.request !== null) this.request.copy(grown, 0, 0, this.requestLength);
        this.request = grown;
      }
      chunk.copy(this.request, this.requestLength, 0, n);
      this.requestLength = need;
      this.scanRequest();
    } catch {
      this.requestDone = true;
      this.request = null;
    }
  }

  /**
   * Look for the request's top-level `"model"` (its first string-valued `"model"` key) in what came so
   * far; once found, or past MAX_REQUEST_SCAN, the copy is let go.
   */
  private scanRequest(): void {
    const buf = (this.request as Buffer).subarray(0, this.requestLength);
    for (let at = buf.indexOf(MODEL, this.requestScanFrom); at !== -1; at = buf.indexOf(MODEL, at + 1)) {
      const v = valueAfterKey(buf, at + MODEL.length, buf.length);
      if (v === -1 || buf[v] === QUOTE) {
        const model = v === -1 ? null : shortString(buf, v, buf.length, MAX_MODEL_LENGTH);
        if (model === null && buf.length - at < MODEL.length + MAX_MODEL_LENGTH + 8 && this.requestLength < MAX_REQUEST_SCAN) {
          this.requestScanFrom = at; // the value may still be on its way
          return;
        }
        if (model === null && v === -1) continue;
        this.requestModelName = model;
        break;
      }
    }
    if (this.requestModelName !== null || this.requestLength >= MAX_REQUEST_SCAN) {
      this.requestDone = true;
      this.request = null;
      return;
    }
    this.requestScanFrom = Math.max(0, buf.length - MODEL.length);
  }

  responseStart(status: number, headers: IncomingHttpHeaders): void {
    if (this.started || this.ended) return;
    this.started = true;
    try {
      if (status < 200 || status > 299) {
        this.draft.fail(status >= 400 && status <= 499 ? 'status_4xx' : status >= 500 && status <= 599 ? 'status_5xx' : 'status_other');
        return;
      }
      const kind = bodyKind(headerText(headers['content-type']));
      if (kind === null) {
        this.draft.fail('content_type');
        return;
      }
      const encoding = encodingOf(headerText(headers['content-encoding']));
      if (encoding === 'other') {
        this.draft.fail('encoding');
        return;
      }
      this.encoding = encoding;
      this.body = kind === 'sse' ? new SseReader(this.format, this.draft) : new JsonBodyReader(this.format, this.draft);
    } catch {
      this.giveUp();
    }
  }

  responseData(chunk: Buffer): void {
    const body = this.body;
    if (body === null || this.ended || chunk.length === 0) return;
    try {
      if (this.encoding === null) body.data(chunk);
      else if (!this.decodeFailed) this.compressed(chunk);
    } catch {
      this.giveUp();
    }
  }

  end(complete: boolean): void {
    if (this.ended) return;
    this.ended = true;
    try {
      if (!this.started) this.draft.fail('cut');
      this.flushBatch();
      if (this.decoder === null || this.decoderClosed) {
        this.finish(complete);
        return;
      }
      this.endPending = complete;
      this.decoder.end();
    } catch {
      this.giveUp();
      this.finish(complete);
    }
  }

  /**
   * Compressed bytes are gathered into DECODE_BATCH pieces before zlib sees them: each write is a job on
   * libuv's thread pool, which would cost more than reading the bytes when a stream comes in small
   * chunks. The decoded text is only needed at the end, so nothing waits for it.
   */
  private compressed(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      this.batch ??= Buffer.allocUnsafe(DECODE_BATCH);
      const n = chunk.copy(this.batch, this.batchLength, at);
      this.batchLength += n;
      at += n;
      if (this.batchLength === DECODE_BATCH) this.flushBatch();
    }
  }

  /** Hand the gathered bytes to the decoder (it keeps the buffer until it runs: a new one is taken next). */
  private flushBatch(): void {
    const batch = this.batch;
    if (batch === null || this.batchLength === 0 || this.decodeFailed) return;
    const bytes = batch.subarray(0, this.batchLength);
    this.batch = null;
    this.batchLength = 0;
    (this.decoder ?? this.openDecoder(bytes)).write(bytes);
  }

  private openDecoder(first: Buffer): zlib.Gunzip | zlib.BrotliDecompress | zlib.Inflate | zlib.InflateRaw {
    // A cut body must not throw away what its last whole block held: flush as if synced.
    const options = { finishFlush: zlib.constants.Z_SYNC_FLUSH };
    const decoder = this.encoding === 'gzip' ? zlib.createGunzip(options)
      : this.encoding === 'br' ? zlib.createBrotliDecompress({ finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH })
        // `deflate` is zlib-wrapped by the RFC, raw from some servers: the first byte tells.
        : first[0] === ZLIB_HEADER ? zlib.createInflate(options) : zlib.createInflateRaw(options);
    decoder.on('data', (out: Buffer) => this.decodedData(out));
    decoder.on('error', () => {
      this.decodeFailed = true;
    });
    decoder.on('close', () => {
      this.decoderClosed = true;
      if (this.endPending !== null) this.finish(this.endPending);
    });
    this.decoder = decoder;
    return decoder;
  }

  private decodedData(out: Buffer): void {
    const body = this.body;
    if (body === null || this.decodeFailed) return;
    this.decoded += out.length;
    if (this.decoded > MAX_DECODED_BYTES) {
      this.draft.fail('too_large');
      this.body = null;
      this.decoder?.destroy();
      return;
    }
    try {
      body.data(out);
    } catch {
      this.giveUp();
    }
  }

  /** A reader bug must not reach the relay: the exchange is reported without usage. */
  private giveUp(): void {
    this.draft.fail('malformed');
    this.body = null;
  }

  private finish(complete: boolean): void {
    if (this.finished) return;
    this.finished = true;
    let reading: UsageReading;
    try {
      const body = this.body;
      this.body = null;
      // A cut stream's compressed body ends mid-block: what was decoded so far still counts.
      if (this.decodeFailed && complete) this.draft.fail('decode_error');
      if (body instanceof SseReader) body.end();
      else if (body !== null) body.end(complete);
      if (!complete && !this.draft.generation && this.draft.text.empty) this.draft.fail('cut'); // nothing came before the cut
      reading = this.draft.finish(this.prices, () => this.requestModelName);
    } catch {
      reading = { usage: null, reason: 'malformed' };
    }
    this.request = null;
    this.decoder = null;
    this.batch = null;
    this.settle(reading);
  }
}

/** A reader of one exchange's usage in `format`, priced by `prices`. */
export function createUsageReader(format: LlmFormat, prices: PriceTable): UsageReader {
  return new Reader(format, prices);
}
