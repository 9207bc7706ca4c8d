// The demo agent: plain Node, no dependencies. It makes the kinds of calls an agent makes and prints what
// the sidecar did with each. Its only way out is the sidecar (HTTP_PROXY): in docker-compose.yml its
// network has no route anywhere else.
//
//   1. GET    /tickets/42          tickets.read     low       → allowed, the upstream answers
//   2. DELETE /tickets/42          tickets.delete   critical  → denied by the Cedar forbid (403)
//   3. GET    /admin/export        (no mapping rule)          → denied as unclassified (403)
//   4. POST   /tickets/42/refund   payments.refund  high      → held until a person approves or denies it
//   5. (DEMO_TRY_DIRECT=1) straight to the upstream without the proxy → fails: no route
//
// Env: HTTP_PROXY (required, e.g. http://sidecar:8080), DEMO_UPSTREAM_URL (default http://upstream:8081),
// FIRMA_ADMIN_URL (default http://sidecar:9090; read-only use: it lists pending approvals, it cannot
// approve), DEMO_SKIP_APPROVAL=1 to leave out call 4, DEMO_TRY_DIRECT=1 for call 5.
// Exit code 0 when every call came out as the demo expects, 1 otherwise.
import { request } from 'node:http';
import { connect } from 'node:net';

const proxy = new URL(process.env.HTTP_PROXY ?? process.env.http_proxy ?? fail('HTTP_PROXY is not set'));
const upstream = new URL(process.env.DEMO_UPSTREAM_URL ?? 'http://upstream:8081');
const adminUrl = process.env.FIRMA_ADMIN_URL ?? 'http://sidecar:9090';

function fail(message) {
  console.error(`agent: ${message}`);
  process.exit(2);
}

/** One request through the proxy (absolute-form, what every HTTP client sends to an HTTP proxy). */
function viaProxy(method, path, body) {
  const target = new URL(path, upstream);
  return new Promise((resolve, reject) => {
    const req = request({
      host: proxy.hostname,
      port: Number(proxy.port || 80),
      method,
      path: target.href,
      headers: { host: target.host, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    });
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try {
          json = JSON.parse(text);
        } catch {
          // not JSON: printed as text
        }
        resolve({ status: res.statusCode, requestId: res.headers['x-firma-request-id'] ?? null, json, text });
      });
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

function describe(r) {
  if (r.json !== null && typeof r.json.decision === 'string') {
    return `${r.status} ${r.json.decision} (stage ${r.json.stage}, reason ${r.json.reason})`;
  }
  return `${r.status} from the upstream: ${r.text.slice(0, 120)}`;
}

let ok = true;
function report(label, r, expected) {
  const good = expected(r);
  if (!good) ok = false;
  console.log(`${good ? 'as expected' : 'UNEXPECTED '}  ${label.padEnd(30)} → ${describe(r)}`);
}

const isDeny = (reason) => (r) => r.status === 403 && r.json !== null && r.json.decision === 'deny' && r.json.reason === reason;

console.log(`agent: upstream ${upstream.origin}, through the sidecar at ${proxy.host}`);

report('GET /tickets/42', await viaProxy('GET', '/tickets/42'), (r) => r.status === 200 && r.json !== null && r.json.id === '42');
report('DELETE /tickets/42', await viaProxy('DELETE', '/tickets/42'), isDeny('policy_deny'));
report('GET /admin/export', await viaProxy('GET', '/admin/export'), isDeny('unclassified'));

if (process.env.DEMO_SKIP_APPROVAL !== '1') {
  // Held: the response comes when someone approves (200 from the upstream) or denies (403), or the hold
  // times out (403). Meanwhile show where to act on it.
  const held = viaProxy('POST', '/tickets/42/refund', { amount: 4200 });
  let settled = false;
  const watcher = (async () => {
    let shown = false;
    while (!settled) {
      const pending = await listPending();
      if (!shown && pending.length > 0) {
        shown = true;
        for (const p of pending) {
          const id = p.id ?? p.approval_id ?? '?';
          console.log(`waiting for a person: approval ${id} is pending.`);
          console.log(`  approve at http://127.0.0.1:9090/approvals/ui`);
          console.log(`  or: docker compose exec sidecar firma approvals approve ${id}   (deny: … deny ${id})`);
        }
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  const r = await held;
  settled = true;
  await watcher;
  report('POST /tickets/42/refund', r, (x) => {
    if (x.status === 200) return x.json !== null && x.json.refunded === true; // approved
    // Denied by the approver, or nobody answered in time.
    return x.status === 403 && x.json !== null && ['approval_required', 'approval_denied', 'approval_timeout'].includes(x.json.reason);
  });
}

if (process.env.DEMO_TRY_DIRECT === '1') {
  // Around the sidecar, straight to the upstream: the agents network has no route to it.
  const port = Number(upstream.port || 80);
  const outcome = await new Promise((resolve) => {
    const s = connect({ host: upstream.hostname, port, timeout: 3000 });
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('timeout', () => {
      s.destroy();
      resolve('timed out');
    });
    s.on('error', (err) => resolve(err.code ?? 'error'));
  });
  const good = outcome !== 'connected';
  if (!good) ok = false;
  console.log(`${good ? 'as expected' : 'UNEXPECTED '}  ${'direct to upstream (no proxy)'.padEnd(30)} → ${good ? `blocked: ${outcome}` : 'connected: the sidecar can be bypassed'}`);
}

console.log(ok ? 'agent: every call came out as expected' : 'agent: some calls did not come out as expected');
process.exit(ok ? 0 : 1);

/** Pending approvals from the admin API (read-only; [] when unavailable, e.g. a build without approvals). */
async function listPending() {
  try {
    const res = await fetch(new URL('/approvals', adminUrl), { signal: AbortSignal.timeout(2000) });
    if (!res.ok) return [];
    const body = await res.json();
    return Array.isArray(body.pending) ? body.pending : [];
  } catch {
    return [];
  }
}
