/**
 * TLS ClientHello parsing from the first bytes of a connection: the SNI and ALPN a client asks for,
 * without terminating TLS. Used to check the SNI of a blind-tunnelled CONNECT against its target, to
 * pick the leaf certificate for a MITM tunnel, and by the transparent listener.
 *
 * The parser never throws on malformed input: every length is bounds-checked against both the buffer
 * and its enclosing structure, and anything inconsistent is `invalid` with a short reason.
 */
import type { Socket } from 'node:net';

export type ClientHelloResult =
  | { state: 'incomplete' }
  | { state: 'not_tls' }
  | { state: 'invalid'; reason: string }
  | {
      state: 'ok';
      /** The host_name from server_name, exactly as sent (printable ASCII; validate with parseHost). */
      serverName: string | null;
      alpn: string[];
      /** Bytes of the TLS records that carried the ClientHello (the whole last record included). */
      bytesConsumed: number;
    };

export type ClientHelloDecision = Exclude<ClientHelloResult, { state: 'incomplete' }>;

const CONTENT_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
/** TLSPlaintext.length MUST NOT exceed 2^14. */
const MAX_RECORD_LENGTH = 16384;
/** Bound on the ClientHello handshake message body (real ones are 200 B .. ~2 KiB; PQ key shares ~1.8 KiB). */
export const MAX_HANDSHAKE_LENGTH = 16384;
/** Bound on the number of records a ClientHello may be split over (keeps re-parsing cheap). */
const MAX_RECORDS = 1024;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const NAME_TYPE_HOST_NAME = 0;

const INCOMPLETE: ClientHelloResult = Object.freeze({ state: 'incomplete' }) as ClientHelloResult;
const NOT_TLS: ClientHelloResult = Object.freeze({ state: 'not_tls' }) as ClientHelloResult;

function invalid(reason: string): { state: 'invalid'; reason: string } {
  return { state: 'invalid', reason };
}

/**
 * Parses the ClientHello at the start of `buf`. `incomplete` means "feed me more bytes"; it is only
 * returned while everything seen so far is consistent with a ClientHello within the bounds above.
 */
export function parseClientHello(buf: Buffer): ClientHelloResult {
  const len = buf.length;
  if (len === 0) return INCOMPLETE;
  if (buf[0] !== CONTENT_HANDSHAKE) return NOT_TLS;

  let off = 0;
  let records = 0;
  /** Total handshake message length (4-byte header + body), once known. */
  let helloLen = -1;
  let collected = 0;
  const fragments: Buffer[] = [];

  for (;;) {
    // --- record header -------------------------------------------------------------------------
    if (off < len && buf[off] !== CONTENT_HANDSHAKE) {
      return invalid('non-handshake record inside the ClientHello');
    }
    if (off + 1 < len && buf[off + 1] !== 0x03) return invalid('unsupported record version');
    if (off + 2 < len && (buf[off + 2]! < 0x01 || buf[off + 2]! > 0x04)) return invalid('unsupported record version');
    if (off + 5 > len) return INCOMPLETE;
    const recLen = buf.readUInt16BE(off + 3);
    if (recLen === 0) return invalid('empty handshake record');
    if (recLen > MAX_RECORD_LENGTH) return invalid('record too long');
    if (++records > MAX_RECORDS) return invalid('ClientHello split over too many records');

    const bodyStart = off + 5;
    const recEnd = bodyStart + recLen;
    const avail = Math.min(recLen, len - bodyStart);
    const before = collected;
    fragments.push(buf.subarray(bodyStart, bodyStart + avail));
    collected += avail;

    // --- handshake header (may itself be split over records) ----------------------------------
    if (helloLen === -1 && collected >= 4) {
      const b0 = byteAt(fragments, 0);
      if (b0 !== HANDSHAKE_CLIENT_HELLO) return invalid('first handshake message is not a ClientHello');
      const bodyLen = (byteAt(fragments, 1) << 16) | (byteAt(fragments, 2) << 8) | byteAt(fragments, 3);
      if (bodyLen > MAX_HANDSHAKE_LENGTH) return invalid('ClientHello too large');
      if (bodyLen < 38) return invalid('ClientHello too short');
      helloLen = 4 + bodyLen;
    }

    if (helloLen !== -1 && before + recLen >= helloLen) {
      // This record carries the last byte of the ClientHello. Nothing else may follow it in the
      // record: a client sends no other handshake message before the server's flight.
      if (before + recLen > helloLen) return invalid('trailing data after the ClientHello');
      if (avail < recLen) return INCOMPLETE;
      const hello =
        fragments.length === 1 ? fragments[0]!.subarray(0, helloLen) : Buffer.concat(fragments, collected).subarray(0, helloLen);
      return parseHelloBody(hello, recEnd);
    }
    if (avail < recLen) return INCOMPLETE;
    off = recEnd;
  }
}

function byteAt(fragments: Buffer[], index: number): number {
  let i = index;
  for (const f of fragments) {
    if (i < f.length) return f[i]!;
    i -= f.length;
  }
  return -1;
}

/** Parses a complete ClientHello handshake message (including its 4-byte header). */
function parseHelloBody(h: Buffer, bytesConsumed: number): ClientHelloResult {
  const end = h.length;
  let p = 4;
  p += 2 + 32; // legacy_version, random (bodyLen >= 38 checked by the caller)
  const sidLen = h[p]!;
  p += 1;
  if (sidLen > 32) return invalid('session id too long');
  if (p + sidLen > end) return invalid('session id overruns the ClientHello');
  p += sidLen;

  if (p + 2 > end) return invalid('truncated cipher suites');
  const csLen = h.readUInt16BE(p);
  p += 2;
  if (csLen < 2 || (csLen & 1) !== 0) return invalid('bad cipher suites length');
  if (p + csLen > end) return invalid('cipher suites overrun the ClientHello');
  p += csLen;

  if (p + 1 > end) return invalid('truncated compression methods');
  const cmLen = h[p]!;
  p += 1;
  if (cmLen < 1) return invalid('no compression methods');
  if (p + cmLen > end) return invalid('compression methods overrun the ClientHello');
  p += cmLen;

  let serverName: string | null = null;
  const alpn: string[] = [];
  if (p === end) return { state: 'ok', serverName, alpn, bytesConsumed }; // no extensions (TLS 1.0 style)

  if (p + 2 > end) return invalid('truncated extensions length');
  const extLen = h.readUInt16BE(p);
  p += 2;
  if (p + extLen !== end) return invalid('extensions length does not match the ClientHello');

  const seen = new Set<number>();
  while (p < end) {
    if (p + 4 > end) return invalid('truncated extension header');
    const type = h.readUInt16BE(p);
    const len = h.readUInt16BE(p + 2);
    p += 4;
    if (p + len > end) return invalid('extension overruns the extensions block');
    if (seen.has(type)) return invalid('duplicate extension');
    seen.add(type);
    const extEnd = p + len;
    if (type === EXT_SERVER_NAME) {
      if (len < 2 || h.readUInt16BE(p) !== len - 2) return invalid('bad server_name list length');
      let q = p + 2;
      if (q === extEnd) return invalid('empty server_name list');
      while (q < extEnd) {
        if (q + 3 > extEnd) return invalid('truncated server_name entry');
        const nameType = h[q]!;
        const nameLen = h.readUInt16BE(q + 1);
        q += 3;
        if (q + nameLen > extEnd) return invalid('server_name entry overruns the extension');
        if (nameType === NAME_TYPE_HOST_NAME) {
          if (serverName !== null) return invalid('more than one host_name');
          if (nameLen === 0) return invalid('empty host_name');
          for (let i = q; i < q + nameLen; i++) {
            const c = h[i]!;
            if (c < 0x21 || c > 0x7e) return invalid('host_name is not printable ASCII');
          }
          serverName = h.toString('latin1', q, q + nameLen);
        }
        q += nameLen;
      }
    } else if (type === EXT_ALPN) {
      if (len < 2 || h.readUInt16BE(p) !== len - 2) return invalid('bad ALPN list length');
      let q = p + 2;
      if (q === extEnd) return invalid('empty ALPN list');
      while (q < extEnd) {
        const l = h[q]!;
        q += 1;
        if (l === 0) return invalid('empty ALPN protocol name');
        if (q + l > extEnd) return invalid('ALPN protocol overruns the extension');
        alpn.push(h.toString('latin1', q, q + l));
        q += l;
      }
    }
    p = extEnd;
  }
  return { state: 'ok', serverName, alpn, bytesConsumed };
}

export interface ReadClientHelloOptions {
  /** Give up (state 'invalid', reason 'timeout') when no decision was reached within this time. */
  timeoutMs: number;
  /** Give up (state 'invalid') after this many bytes without a decision. Default 24 KiB. */
  maxBytes?: number;
}

const DEFAULT_MAX_BYTES = 24 * 1024;

/**
 * Reads from `socket` until parseClientHello reaches a decision, then pauses the socket, removes its
 * own listeners and resolves with every byte it read (possibly more than the ClientHello) so the
 * caller can `socket.unshift(bytes)` and hand the socket on (to a TLSSocket, or a blind pipe).
 * Never rejects: timeouts, errors and early close resolve with state 'invalid'.
 */
export function readClientHello(
  socket: Socket,
  opts: ReadClientHelloOptions,
): Promise<{ bytes: Buffer; result: ClientHelloDecision }> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  return new Promise((resolve) => {
    let acc = Buffer.allocUnsafe(0);
    let used = 0;
    let done = false;
    let timer: NodeJS.Timeout | undefined;

    const finish = (result: ClientHelloDecision): void => {
      if (done) return;
      done = true;
      // Pause before removing the data listener: a flowing stream without listeners drops data.
      socket.pause();
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.removeListener('close', onClose);
      socket.removeListener('error', onError);
      if (timer !== undefined) clearTimeout(timer);
      resolve({ bytes: acc.subarray(0, used), result });
    };

    const onData = (chunk: Buffer | string): void => {
      if (done) return;
      const b = typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk;
      if (used + b.length > acc.length) {
        const grown = Buffer.allocUnsafe(Math.max(used + b.length, acc.length * 2, 2048));
        acc.copy(grown, 0, 0, used);
        acc = grown;
      }
      b.copy(acc, used);
      used += b.length;
      const result = parseClientHello(acc.subarray(0, used));
      if (result.state !== 'incomplete') finish(result);
      else if (used >= maxBytes) finish(invalid(`no complete ClientHello within ${maxBytes} bytes`));
    };
    const onEnd = (): void => finish(invalid('connection ended before a complete ClientHello'));
    const onClose = (): void => finish(invalid('connection closed before a complete ClientHello'));
    const onError = (err: Error): void =>
      finish(invalid(`socket error before a complete ClientHello: ${(err as NodeJS.ErrnoException).code ?? 'error'}`));

    if (socket.destroyed || socket.readableEnded) {
      done = true;
      resolve({ bytes: Buffer.alloc(0), result: invalid('connection closed before a complete ClientHello') });
      return;
    }
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onClose);
    socket.on('error', onError);
    timer = setTimeout(() => finish(invalid('timeout')), opts.timeoutMs);
    socket.resume();
  });
}
