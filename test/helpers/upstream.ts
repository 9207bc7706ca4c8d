import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { createHash } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { upstreamPki } from './pki.js';
import { fixture, type FixtureHooks } from './fixture.js';

/**
 * Real upstream servers on 127.0.0.1 for end-to-end tests (HTTP or HTTPS with the test CA):
 *   /echo             method, path, headers and a SHA-256 of the body as JSON
 *   /status/:code     that status with a custom header and two Set-Cookie headers
 *   /sse?n=&gap=      text/event-stream, n events `gap` ms apart
 *   /bytes?mib=       a deterministic body of that size, written with backpressure
 *   /drip?n=&gap=     n small chunks `gap` ms apart (a slow body)
 *   /hang             accepts the request and never answers
 *   /ws               WebSocket echo (text frames)
 */
export interface Upstream {
  readonly port: number;
  readonly origin: string;
  readonly hostPort: string;
  /** Bytes of `/bytes` bodies the upstream managed to hand to its socket so far. */
  readonly bytesWritten: () => number;
  readonly requests: () => number;
  close(): Promise<void>;
}

const CHUNK = Buffer.alloc(64 * 1024, 'firma');

function query(url: string): URLSearchParams {
  const q = url.indexOf('?');
  return new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
}

export async function startUpstream(opts: { tls?: boolean } = {}): Promise<Upstream> {
  let written = 0;
  let count = 0;
  const sockets = new Set<Socket>();
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    count++;
    const url = req.url ?? '/';
    const path = url.split('?', 1)[0] ?? '/';
    const q = query(url);
    if (path === '/echo') {
      const hash = createHash('sha256');
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        bytes += c.length;
        hash.update(c);
      });
      req.on('end', () => {
        const body = JSON.stringify({
          method: req.method,
          url,
          headers: req.headers,
          rawHeaders: req.rawHeaders,
          bodyBytes: bytes,
          bodySha256: hash.digest('hex'),
        });
        res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'echo' });
        res.end(body);
      });
      return;
    }
    if (path.startsWith('/status/')) {
      const code = Number(path.slice('/status/'.length));
      res.writeHead(code, 'Custom Reason', [
        ['x-upstream', 'status'],
        ['set-cookie', 'a=1; Path=/'],
        ['set-cookie', 'b=2; Path=/'],
        ['content-type', 'text/plain'],
      ].flat());
      res.end(`status ${code}\n`);
      return;
    }
    if (path === '/sse') {
      const n = Number(q.get('n') ?? 10);
      const gap = Number(q.get('gap') ?? 100);
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write(': open\n\n');
      let i = 0;
      const timer = setInterval(() => {
        i++;
        res.write(`data: {"event":${i},"t":${Date.now()}}\n\n`);
        if (i >= n) {
          clearInterval(timer);
          res.end();
        }
      }, gap);
      res.on('close', () => clearInterval(timer));
      return;
    }
    if (path === '/bytes') {
      const total = Math.round(Number(q.get('mib') ?? 1) * 1024 * 1024);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
      let sent = 0;
      const pump = (): void => {
        while (sent < total) {
          const n = Math.min(CHUNK.length, total - sent);
          sent += n;
          const ok = res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n), () => (written += n));
          if (!ok) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    if (path === '/drip') {
      const n = Number(q.get('n') ?? 10);
      const gap = Number(q.get('gap') ?? 100);
      res.writeHead(200, { 'content-type': 'text/plain' });
      let i = 0;
      const timer = setInterval(() => {
        i++;
        res.write(`chunk ${i}\n`);
        if (i >= n) {
          clearInterval(timer);
          res.end();
        }
      }, gap);
      res.on('close', () => clearInterval(timer));
      return;
    }
    if (path === '/hang') return;
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('no such route\n');
  };

  const server = opts.tls === true
    ? https.createServer({ key: upstreamPki().keyPem, cert: upstreamPki().certPem }, handler)
    : http.createServer(handler);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex) => websocketEcho(req, socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const scheme = opts.tls === true ? 'https' : 'http';
  return {
    port,
    origin: `${scheme}://127.0.0.1:${port}`,
    hostPort: `127.0.0.1:${port}`,
    bytesWritten: () => written,
    requests: () => count,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The one upstream of its kind in a test file: started before the first subtest, closed after the last. */
export function useUpstream(t: FixtureHooks, opts: { tls?: boolean } = {}): Upstream {
  return fixture(t, () => startUpstream(opts), (u) => u.close());
}

/** RFC 6455 handshake plus an echo of text frames (unmasked on the way back, as servers must). */
function websocketEcho(req: IncomingMessage, socket: Duplex): void {
  const key = req.headers['sec-websocket-key'];
  if (req.url !== '/ws' || typeof key !== 'string') {
    socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    return;
  }
  const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n' +
      `sec-websocket-accept: ${accept}\r\nx-upstream: ws\r\n\r\n`,
  );
  let buf = Buffer.alloc(0);
  socket.on('error', () => undefined);
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const b0 = buf[0] as number;
      const b1 = buf[1] as number;
      const opcode = b0 & 0x0f;
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      const maskOff = off;
      if (masked) off += 4;
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (masked) for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (buf[maskOff + (i % 4)] as number);
      buf = buf.subarray(off + len);
      if (opcode === 0x8) {
        socket.end(Buffer.from([0x88, 0x00]));
        return;
      }
      if (opcode === 0x1 || opcode === 0x2) {
        const header = payload.length < 126
          ? Buffer.from([0x80 | opcode, payload.length])
          : Buffer.from([0x80 | opcode, 126, payload.length >> 8, payload.length & 0xff]);
        socket.write(Buffer.concat([header, payload]));
      }
    }
  });
}
