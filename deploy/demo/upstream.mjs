// The demo upstream: a tiny ticketing API in plain Node (no dependencies). It prints every request it
// actually receives, so the demo shows that what the sidecar denied never reached it.
//
//   GET    /tickets/:id          → the ticket
//   POST   /tickets/:id/refund   → {"refunded": true}
//   DELETE /tickets/:id          → {"deleted": true}
//   anything else                → 404
//
// Env: DEMO_UPSTREAM_HOST (default 0.0.0.0), DEMO_UPSTREAM_PORT (default 8081; 0 = ephemeral). The bound
// address is printed as `listening on HOST:PORT` once it accepts connections.
import { createServer } from 'node:http';

const host = process.env.DEMO_UPSTREAM_HOST ?? '0.0.0.0';
const port = Number(process.env.DEMO_UPSTREAM_PORT ?? '8081');

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const server = createServer((req, res) => {
  // Drain the body (a refund may carry one) before answering.
  req.resume();
  req.on('end', () => {
    const path = new URL(req.url ?? '/', 'http://upstream').pathname;
    console.log(`upstream received ${req.method} ${path}`);
    const ticket = /^\/tickets\/([A-Za-z0-9-]+)$/.exec(path);
    const refund = /^\/tickets\/([A-Za-z0-9-]+)\/refund$/.exec(path);
    if (req.method === 'GET' && ticket) return send(res, 200, { id: ticket[1], subject: 'Printer on fire', status: 'open', amount: 4200 });
    if (req.method === 'POST' && refund) return send(res, 200, { id: refund[1], refunded: true });
    if (req.method === 'DELETE' && ticket) return send(res, 200, { id: ticket[1], deleted: true });
    return send(res, 404, { error: 'not found' });
  });
});

server.listen(port, host, () => {
  const addr = server.address();
  console.log(`listening on ${addr.address}:${addr.port}`);
});

// PID 1 in a container gets no default signal handling: close on SIGTERM/SIGINT so `docker compose down`
// is quick.
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
