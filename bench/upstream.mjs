// Bench upstream: node:http + node:https on loopback, started by bench/run.mjs as a child process so
// that the load generator and the origin have separate event loops (both pinned to CPU 0).
//
// Routes (both schemes):
//   /small  1024 B, content-length, keep-alive
//   /large  BENCH_LARGE_BYTES (default 50 MiB) of random data, content-length
//   /sse    headers + an SSE comment at once, then 10 `data:` events 100 ms apart; each event carries
//           the epoch time (sub-ms) at which it was written, so the client can compute one-way delay.
// The https server listens on 127.0.0.1 and on the same port of every IP in BENCH_EXTRA_IPS (other
// 127.0.0.0/8 addresses: "new host" targets that need no DNS and no /etc/hosts entry).
// BENCH_BACKLOG sets the listen backlog (default 511, as Node's). BENCH_HTTPS_HOST / BENCH_HTTPS_PORT fix
// where the https server listens (default 127.0.0.1, an ephemeral port; bench/profile.mjs uses :443, since
// hey puts a non-default port into the TLS SNI).
// Prints one JSON line {"ready":true,"http":PORT,"https":PORT,"ips":[...]} on stdout.
import http from 'node:http';
import https from 'node:https';
import fs from 'node:fs';
import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';

const cert = fs.readFileSync(process.env.BENCH_UP_CERT);
const key = fs.readFileSync(process.env.BENCH_UP_KEY);
const extraIps = (process.env.BENCH_EXTRA_IPS ?? '').split(',').filter(Boolean);
const largeBytes = Number(process.env.BENCH_LARGE_BYTES ?? 50 * 1024 * 1024);
const sseEvents = Number(process.env.BENCH_SSE_EVENTS ?? 10);
const sseGapMs = Number(process.env.BENCH_SSE_GAP_MS ?? 100);
// Listen backlog (Node's default 511): the soak raises it so the origin's queue is not what overflows.
const backlog = Number(process.env.BENCH_BACKLOG ?? 511);

const small = Buffer.alloc(1024, 'x');
const large = crypto.randomBytes(largeBytes);
const epochMs = () => performance.timeOrigin + performance.now();

function handler(req, res) {
  const path = (req.url ?? '/').split('?', 1)[0];
  if (path === '/small') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': small.length });
    res.end(small);
    return;
  }
  if (path === '/large') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': large.length });
    res.end(large);
    return;
  }
  if (path === '/sse') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(': stream open\n\n');
    let i = 0;
    const timer = setInterval(() => {
      i++;
      res.write(`data: ${JSON.stringify({ i, t: epochMs() })}\n\n`);
      if (i >= sseEvents) {
        clearInterval(timer);
        res.end();
      }
    }, sseGapMs);
    res.on('close', () => clearInterval(timer));
    return;
  }
  res.writeHead(404, { 'content-length': 0 });
  res.end();
}

const opts = { keepAliveTimeout: 60_000, headersTimeout: 30_000, requestTimeout: 0 };
const listen = (server, port, host) =>
  new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, backlog, () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });

const httpPort = await listen(http.createServer(opts, handler), 0, '127.0.0.1');
const tlsOpts = { ...opts, cert, key, ALPNProtocols: ['http/1.1'] };
const httpsPort = await listen(https.createServer(tlsOpts, handler), Number(process.env.BENCH_HTTPS_PORT ?? 0), process.env.BENCH_HTTPS_HOST ?? '127.0.0.1');
const ips = [];
for (const ip of extraIps) {
  try {
    await listen(https.createServer(tlsOpts, handler), httpsPort, ip);
    ips.push(ip);
  } catch (err) {
    process.stderr.write(`upstream: cannot listen on ${ip}:${httpsPort}: ${err.message}\n`);
  }
}
process.stdout.write(JSON.stringify({ ready: true, http: httpPort, https: httpsPort, ips }) + '\n');
process.on('SIGTERM', () => process.exit(0));
