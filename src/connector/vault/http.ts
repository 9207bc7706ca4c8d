import { createRequire } from 'node:module';
import type { Agent } from 'undici';
import type { FirmaConfig } from '../../config/index.js';
import { errorCode } from '../../core/errors.js';
import { VaultError, closedError } from './errors.js';

/**
 * Vault's HTTP API as the client speaks it: one bounded call, the answer parsed as JSON when it is
 * JSON. Nothing test-specific, so the same code runs against a real Vault.
 */

export interface VaultReply {
  readonly status: number;
  /** Parsed JSON body, or null when it was empty or not JSON. */
  readonly body: unknown;
}

/** Vault answers are small; anything larger is not Vault, and is not buffered. */
const MAX_BODY_BYTES = 1024 * 1024;

/** undici's full index, loaded when a Vault client is made (only with [vault] set; bench/README.md "Memory"). */
const undici = (): typeof import('undici') => createRequire(import.meta.url)('undici') as typeof import('undici');

export class VaultHttp {
  readonly #cfg: FirmaConfig['vault'];
  readonly #agent: Agent;
  readonly #base: string;
  #closed = false;

  constructor(cfg: FirmaConfig['vault']) {
    this.#cfg = cfg;
    const url = new URL(cfg.address);
    // Keep a path prefix (Vault behind a reverse proxy at /vault), drop trailing slashes.
    this.#base = `${url.origin}${url.pathname.replace(/\/+$/, '')}/v1/`;
    this.#agent = new (undici().Agent)({
      connect: { timeout: cfg.timeout_ms },
      headersTimeout: cfg.timeout_ms,
      bodyTimeout: cfg.timeout_ms,
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** One Vault API call, bounded by timeout_ms end to end (connect, headers and body). */
  async call(method: 'GET' | 'POST', apiPath: string, token: string | null, payload: object | null, what: string): Promise<VaultReply> {
    if (this.#closed) throw closedError();
    const headers: Record<string, string> = { accept: 'application/json' };
    if (token !== null) headers['x-vault-token'] = token;
    if (this.#cfg.namespace !== '') headers['x-vault-namespace'] = this.#cfg.namespace;
    if (payload !== null) headers['content-type'] = 'application/json';
    const url = this.#base + apiPath.split('/').map(encodeURIComponent).join('/');
    const signal = AbortSignal.timeout(this.#cfg.timeout_ms);
    let status: number;
    let text: string;
    try {
      const res = await undici().request(url, {
        method,
        headers,
        ...(payload !== null ? { body: JSON.stringify(payload) } : {}),
        dispatcher: this.#agent,
        signal,
      });
      status = res.statusCode;
      text = await readCapped(res.body);
    } catch (err: unknown) {
      if (err instanceof VaultError) throw err;
      const why = signal.aborted ? `no answer within ${this.#cfg.timeout_ms} ms` : (innerCode(err) ?? 'connection failed');
      throw new VaultError('FIRMA_VAULT_UNREACHABLE', `Vault at ${this.#cfg.address} is unreachable (${what}: ${why})`);
    }
    let body: unknown = null;
    if (text !== '') {
      try {
        body = JSON.parse(text) as unknown;
      } catch {
        // Not JSON (a proxy's HTML error page?): the status still tells what happened.
        body = null;
      }
    }
    return { status, body };
  }

  /** Refuse further calls at once, then close the connections. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#agent.close();
  }
}

/** The informative code of a socket error that undici may have wrapped (ECONNREFUSED, ENOTFOUND...). */
function innerCode(err: unknown): string | undefined {
  const code = errorCode(err);
  const cause = typeof err === 'object' && err !== null ? (err as { cause?: unknown }).cause : undefined;
  const causeCode = errorCode(cause);
  if ((code === undefined || code === 'UND_ERR_SOCKET') && causeCode !== undefined) return causeCode;
  return code;
}

async function readCapped(body: AsyncIterable<Uint8Array> & { destroy(err?: Error): unknown }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > MAX_BODY_BYTES) {
      body.destroy();
      throw new VaultError('FIRMA_VAULT_BAD_RESPONSE', `Vault response larger than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks).toString('utf8');
}
