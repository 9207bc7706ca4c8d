/**
 * A loopback fake of the OpenAI and Anthropic APIs for tests of LLM usage (docs/llm.md "How usage is
 * read"), on 127.0.0.1 over HTTP or HTTPS (the test CA of pki.ts):
 *   POST /v1/chat/completions   Chat Completions: JSON, or SSE with `stream` (usage chunk with `stream_options.include_usage`)
 *   POST /v1/responses          Responses API: JSON, or SSE with `stream` (usage in `response.completed`)
 *   POST /v1/embeddings         Embeddings (`encoding_format` float or base64, as the openai SDK asks)
 *   POST /v1/messages           Anthropic Messages: JSON, or SSE with `stream`
 * Token counts, model, text and gzip are set per fake (`setAnswer`); streams are written in small chunks
 * whose boundaries fall in the middle of lines and JSON. Every request is recorded (headers, body) so a
 * test can check, e.g., the key the sidecar injected.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { constants, createGzip } from 'node:zlib';
import { fixture, type FixtureHooks } from './fixture.js';
import { anthropicJson, anthropicSse, chatJson, chatSse, embeddingsJson, responsesJson, responsesSse, type WireAnswer } from './llm-wire.js';
import { upstreamPki } from './pki.js';

export interface LlmFakeAnswer {
  /** The model answered; default: the request's `model`. */
  readonly model?: string;
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly cachedTokens?: number;
  readonly cacheWriteTokens?: number;
  /** The generated text, one stream delta each. */
  readonly deltas: readonly string[];
  /** Gzip the body (`content-encoding: gzip`), whatever the request's accept-encoding. */
  readonly gzip?: boolean;
  /** Bytes per write of a stream (default 7: boundaries land mid-JSON). */
  readonly chunkBytes?: number;
  /** An answer status other than 200 (the body is then the provider's error JSON). */
  readonly status?: number;
}

export interface RecordedLlmRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
  /** The body as JSON, or null when it is not. */
  readonly json: Record<string, unknown> | null;
}

export interface LlmFake {
  readonly port: number;
  readonly origin: string;
  readonly hostPort: string;
  /** What the fake answers from now on. */
  setAnswer(answer: LlmFakeAnswer): void;
  readonly requests: RecordedLlmRequest[];
  close(): Promise<void>;
}

export const DEFAULT_ANSWER: LlmFakeAnswer = {
  inputTokens: 42,
  outputTokens: 7,
  deltas: ['Hello', ' from', ' the', ' fake', ' model', '.'],
};

function parseJson(body: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(body.toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** An embedding as the openai SDK asks for it by default: little-endian float32, base64. */
function base64Embedding(values: readonly number[]): string {
  return Buffer.from(new Float32Array(values).buffer).toString('base64');
}

function errorBody(path: string, status: number): string {
  if (path === '/v1/messages') return JSON.stringify({ type: 'error', error: { type: status === 429 ? 'rate_limit_error' : 'api_error', message: `fake ${status}` } });
  return JSON.stringify({ error: { message: `fake ${status}`, type: status === 429 ? 'rate_limit_exceeded' : 'server_error', param: null, code: null } });
}

/** The body the route answers, and whether it is a stream. */
function answerFor(path: string, req: Record<string, unknown>, a: LlmFakeAnswer): { body: string; sse: boolean } | null {
  const model = a.model ?? (typeof req['model'] === 'string' ? req['model'] : 'unknown-model');
  const wire: WireAnswer = { model, deltas: a.deltas, usage: { inputTokens: a.inputTokens, outputTokens: a.outputTokens, cachedTokens: a.cachedTokens ?? 0, cacheWriteTokens: a.cacheWriteTokens ?? 0 } };
  const stream = req['stream'] === true;
  if (path === '/v1/chat/completions') {
    const options = req['stream_options'];
    const includeUsage = typeof options === 'object' && options !== null && (options as Record<string, unknown>)['include_usage'] === true;
    return stream ? { body: chatSse(wire, { includeUsage }), sse: true } : { body: chatJson(wire), sse: false };
  }
  if (path === '/v1/responses') return stream ? { body: responsesSse(wire), sse: true } : { body: responsesJson(wire), sse: false };
  if (path === '/v1/messages') return stream ? { body: anthropicSse(wire), sse: true } : { body: anthropicJson(wire), sse: false };
  if (path === '/v1/embeddings') {
    const input = req['input'];
    const count = Array.isArray(input) ? input.length : 1;
    const body = JSON.parse(embeddingsJson(model, a.inputTokens, count, 8)) as { data: Array<{ embedding: number[] | string }> };
    if (req['encoding_format'] === 'base64') for (const d of body.data) d.embedding = base64Embedding(d.embedding as number[]);
    return { body: JSON.stringify(body), sse: false };
  }
  return null;
}

/** Write `body` in `chunkBytes` pieces, one per turn of the event loop (gzip flushed after each). */
function writeSlowly(res: ServerResponse, body: Buffer, chunkBytes: number, gzip: boolean): void {
  const gz = gzip ? createGzip() : null;
  if (gz !== null) {
    gz.on('data', (c: Buffer) => res.write(c));
    gz.on('end', () => res.end());
  }
  let at = 0;
  const next = (): void => {
    if (res.destroyed) return;
    if (at >= body.length) {
      if (gz !== null) gz.end();
      else res.end();
      return;
    }
    const piece = body.subarray(at, at + chunkBytes);
    at += piece.length;
    if (gz !== null) gz.write(piece, () => gz.flush(constants.Z_SYNC_FLUSH, () => setImmediate(next)));
    else res.write(piece, () => setImmediate(next));
  };
  next();
}

export async function startLlmFake(opts: { tls?: boolean; answer?: LlmFakeAnswer } = {}): Promise<LlmFake> {
  const sockets = new Set<Socket>();
  const requests: RecordedLlmRequest[] = [];
  let current = opts.answer ?? DEFAULT_ANSWER;
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
      const json = parseJson(body);
      requests.push({ method: req.method ?? '', path, headers: req.headers, body, json });
      const a = current;
      const answer = req.method === 'POST' && json !== null ? answerFor(path, json, a) : null;
      if (answer === null) {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `no route ${req.method} ${path}` } }));
        return;
      }
      if (a.status !== undefined && a.status !== 200) {
        res.writeHead(a.status, { 'content-type': 'application/json' });
        res.end(errorBody(path, a.status));
        return;
      }
      const headers: http.OutgoingHttpHeaders = {
        'content-type': answer.sse ? 'text/event-stream; charset=utf-8' : 'application/json',
        'x-request-id': `req_fake_${requests.length}`,
        ...(answer.sse ? { 'cache-control': 'no-cache' } : {}),
        ...(a.gzip === true ? { 'content-encoding': 'gzip' } : {}),
      };
      res.writeHead(200, headers);
      writeSlowly(res, Buffer.from(answer.body), answer.sse ? a.chunkBytes ?? 7 : 64 * 1024, a.gzip === true);
    });
  };
  const server = opts.tls === true
    ? https.createServer({ key: upstreamPki().keyPem, cert: upstreamPki().certPem }, handler)
    : http.createServer(handler);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    setAnswer: (answer: LlmFakeAnswer): void => {
      current = answer;
    },
    port,
    origin: `${opts.tls === true ? 'https' : 'http'}://127.0.0.1:${port}`,
    hostPort: `127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

/** The one fake of a test file: started before the first subtest, closed after the last. */
export function useLlmFake(t: FixtureHooks, opts: { tls?: boolean; answer?: LlmFakeAnswer } = {}): LlmFake {
  return fixture(t, () => startLlmFake(opts), (f) => f.close());
}
