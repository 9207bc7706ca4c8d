import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProxyAgent, request, type Dispatcher } from 'undici';
import { startTestSidecar, type TestSidecar } from '../helpers/sidecar.js';
import { useUpstream } from '../helpers/upstream.js';

// How the audit ends a download the sidecar did not finish (issue 20, item 8): an agent that goes away
// is the agent's doing (no connector error), a download cut at the drain bound is the sidecar's
// (error `shutdown`, FIRMA_SHUTDOWN_CUT), never a `network` failure. docs/audit.md "`outcome` events".

interface Ev {
  type: string;
  request_id: string | null;
  [k: string]: unknown;
}

/** The complete lines of the live log (the writer may be mid-line while the test reads). */
function events(sc: TestSidecar): Ev[] {
  const lines = readFileSync(join(sc.dir, 'audit', 'audit.jsonl'), 'utf8').split('\n');
  lines.pop(); // after the last newline: empty, or a line still being written
  return lines.map((l) => JSON.parse(l) as Ev);
}

/** The outcome event of the request whose decision named `path`. */
function outcomeOf(evs: Ev[], path: string): Ev | undefined {
  const decision = evs.find((e) => e.type === 'decision' && String(e['path']).startsWith(path));
  return evs.find((e) => e.type === 'outcome' && decision !== undefined && e.request_id === decision.request_id);
}

/** Start a slow download and resolve once its first chunk arrived; `rest` settles when the body ends or is cut. */
async function startDownload(url: string, dispatcher: Dispatcher): Promise<{ abort: () => void; rest: Promise<string> }> {
  const ac = new AbortController();
  const res = await request(url, { dispatcher, signal: ac.signal });
  const it = res.body[Symbol.asyncIterator]();
  await it.next();
  const rest = (async (): Promise<string> => {
    try {
      while (!(await it.next()).done);
      return 'complete';
    } catch {
      return 'cut';
    }
  })();
  return { abort: () => ac.abort(), rest };
}

const plain = useUpstream(t);
const secure = useUpstream(t, { tls: true });

t.test('an agent that closes mid-download: recorded as its own abort, not a network error', async (t) => {
  const sc = await startTestSidecar();
  t.teardown(() => sc.stop());
  const dispatcher = new ProxyAgent({ uri: sc.proxyUrl });
  t.teardown(() => dispatcher.close());
  const d = await startDownload(`${plain.origin}/drip?n=100&gap=50&who=agent`, dispatcher);
  d.abort();
  t.equal(await d.rest, 'cut');
  const deadline = Date.now() + 5000;
  let outcome: Ev | undefined;
  while ((outcome = outcomeOf(events(sc), '/drip')) === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.ok(outcome, 'the outcome is recorded');
  t.match(outcome, { status: 200, error: null, error_code: null });
});

t.test('downloads cut by the shutdown drain (HTTP and MITM HTTPS): error shutdown, FIRMA_SHUTDOWN_CUT', async (t) => {
  const sc = await startTestSidecar('', { sidecar: 'drain_timeout_ms = 300' });
  const http = new ProxyAgent({ uri: sc.proxyUrl });
  const https = new ProxyAgent({ uri: sc.proxyUrl, requestTls: { ca: sc.caPem } });
  t.teardown(async () => {
    await http.destroy();
    await https.destroy();
  });
  const a = await startDownload(`${plain.origin}/drip?n=100&gap=50`, http);
  const b = await startDownload(`${secure.origin}/drip?n=100&gap=50`, https);
  const started = performance.now();
  await sc.stop();
  const took = performance.now() - started;
  t.equal(await a.rest, 'cut', 'the HTTP download was cut');
  t.equal(await b.rest, 'cut', 'the HTTPS download was cut');
  t.ok(took < 3000, `stopped at the drain bound (${took.toFixed(0)} ms)`);

  const evs = events(sc);
  const outcomes = evs.filter((e) => e.type === 'outcome');
  t.equal(outcomes.length, 2, 'one outcome per download');
  for (const o of outcomes) t.match(o, { status: 200, error: 'shutdown', error_code: 'FIRMA_SHUTDOWN_CUT' });
  const stop = evs.find((e) => e.type === 'lifecycle' && e['event'] === 'stop');
  t.match(stop, { detail: 'cut 2 in-flight request(s) at the drain bound' });
  t.ok(evs.indexOf(stop as Ev) > Math.max(...outcomes.map((o) => evs.indexOf(o))), 'the outcomes are written before the stop event');
  const lines = sc.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'request');
  t.equal(lines.filter((l) => l['error'] === 'shutdown' && l['error_code'] === 'FIRMA_SHUTDOWN_CUT').length, 2, 'the log lines say so too');
});
