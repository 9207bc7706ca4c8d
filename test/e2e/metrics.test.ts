import t from 'tap';
import net from 'node:net';
import http from 'node:http';
import { useUpstream } from '../helpers/upstream.js';
import { startTestSidecar, type TestSidecar } from '../helpers/sidecar.js';
import { curl } from '../helpers/clients.js';
import { parseExposition, valueOf, ExpositionError, type Family } from '../helpers/prom-text.js';
import { Metrics, MAX_DECISION_SERIES, OTHER_REASON } from '../../src/admin/metrics.js';
import type { Target } from '../../src/core/envelope.js';

const up = useUpstream(t);
const tlsUp = useUpstream(t, { tls: true });
const limited = useUpstream(t);
const waited = useUpstream(t);

const RULES = `
[[rules]]
host = "*"
action_class = "test.call"
risk = "low"

[[rules]]
host = "127.0.0.1"
path = "/forbidden/**"
action_class = "test.forbidden"
risk = "critical"
`;

interface Scrape {
  readonly status: number;
  readonly contentType: string | undefined;
  readonly text: string;
  readonly families: Map<string, Family>;
}

function get(url: string, method = 'GET'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function scrape(sc: TestSidecar): Promise<Scrape> {
  const r = await get(`${sc.adminUrl}/metrics`);
  return { status: r.status, contentType: r.headers['content-type'], text: r.body, families: parseExposition(r.body) };
}

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

t.test('the exposition parser rejects malformed text (so the scrape checks below can fail)', async (t) => {
  const ok = '# HELP a_total x\n# TYPE a_total counter\na_total{k="v\\"w"} 3\n';
  t.equal(valueOf(parseExposition(ok), 'a_total', { k: 'v"w' }), 3);
  const bad: Record<string, string> = {
    'no newline at the end': '# TYPE a counter\na 1',
    'sample of no family': 'b 1\n',
    'value not a number': '# TYPE a gauge\na one\n',
    'unquoted label': '# TYPE a gauge\na{k=v} 1\n',
    'bad escape': '# TYPE a gauge\na{k="\\x"} 1\n',
    'duplicate series': '# TYPE a gauge\na{k="v"} 1\na{k="v"} 2\n',
    'TYPE twice': '# TYPE a gauge\n# TYPE a gauge\n',
    'negative counter': '# TYPE a counter\na -1\n',
    'bare histogram sample': '# TYPE h histogram\nh 1\n',
    'non-cumulative buckets': '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    'count differs from +Inf': '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 2\n',
    'bad metric name': '# TYPE 1a gauge\n',
  };
  for (const [what, text] of Object.entries(bad)) t.throws(() => parseExposition(text), ExpositionError, what);
});

t.test('GET /metrics: Prometheus text whose counters move by exactly the traffic sent', async (t) => {
  const refusedPort = await closedPort();
  const sc = await startTestSidecar(`
[[sidecar.connector.hosts]]
host = "${up.hostPort}"
timeout_ms = 5000

[[sidecar.connector.hosts]]
host = "127.0.0.1:${limited.port}"
rps = 1
burst = 1
timeout_ms = 400  # bounds connect + headers of the first request too; the second would wait ~1 s for a token: 429 at once

[[sidecar.connector.hosts]]
host = "127.0.0.1:${waited.port}"
rps = 5
burst = 1
timeout_ms = 10000
`, { rules: RULES });
  t.teardown(() => sc.stop());
  const upLabel = `127.0.0.1:${up.port}`;
  const limitedLabel = `127.0.0.1:${limited.port}`;
  const waitedLabel = `127.0.0.1:${waited.port}`;

  const before = await scrape(sc);
  t.equal(before.status, 200);
  t.equal(before.contentType, 'text/plain; version=0.0.4; charset=utf-8', 'the registry content type');
  for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
    t.ok(before.families.has(name), `default process metric ${name}`);
  }
  t.equal(before.families.get('firma_requests_total')?.type, 'counter');
  t.equal(before.families.get('firma_request_duration_seconds')?.type, 'histogram');
  t.equal(before.families.get('firma_requests_in_flight')?.type, 'gauge');
  t.equal(valueOf(before.families, 'firma_approvals_pending'), 0, 'no approvals source wired: 0');
  t.equal(valueOf(before.families, 'firma_audit_available'), 1);
  t.ok(before.families.get('firma_upstream_responses_total')?.samples.some((s) => s.labels['host'] === upLabel), 'configured hosts exported from the start');

  // The traffic: allowed, denied by policy, 5xx from upstream, unreachable, rate-limited, waited, HTTPS.
  const allowed = await curl(['--proxy', sc.proxyUrl, `${up.origin}/echo`]);
  const denied = await curl(['--proxy', sc.proxyUrl, `${up.origin}/forbidden/x`]);
  const fivexx = await curl(['--proxy', sc.proxyUrl, `${up.origin}/status/503`]);
  const unreachable = await curl(['--proxy', sc.proxyUrl, `http://127.0.0.1:${refusedPort}/`]);
  const limitedOk = await curl(['--proxy', sc.proxyUrl, `${limited.origin}/echo`]);
  const limitedNo = await curl(['--proxy', sc.proxyUrl, `${limited.origin}/echo`]);
  const waits = await Promise.all([1, 2, 3].map(() => curl(['--proxy', sc.proxyUrl, `${waited.origin}/echo`])));
  const https1 = await curl(['--proxy', sc.proxyUrl, '--cacert', sc.caPath, `${tlsUp.origin}/echo`]);
  const https2 = await curl(['--proxy', sc.proxyUrl, '--cacert', sc.caPath, `${tlsUp.origin}/echo`]);
  t.same(
    [allowed.status, denied.status, fivexx.status, unreachable.status, limitedOk.status, limitedNo.status, ...waits.map((w) => w.status), https1.status, https2.status],
    [200, 403, 503, 502, 200, 429, 200, 200, 200, 200, 200],
  );
  await sc.sidecar.audit.flush();

  const after = await scrape(sc);
  t.equal(after.status, 200);
  const delta = (name: string, labels: Record<string, string> = {}): number =>
    valueOf(after.families, name, labels) - valueOf(before.families, name, labels);

  // Ten requests were allowed (the 429 and the 502 too: the connector failed after the allow), one denied.
  t.equal(delta('firma_requests_total', { decision: 'allow', stage: 'policy', reason: 'allowed' }), 10, 'allowed');
  t.equal(delta('firma_requests_total', { decision: 'deny', stage: 'policy', reason: 'policy_deny' }), 1, 'denied by policy');
  const totalRequests = after.families.get('firma_requests_total')?.samples.reduce((a, s) => a + s.value, 0);
  t.equal(totalRequests, 11, 'nothing else counted');

  t.equal(delta('firma_upstream_responses_total', { host: upLabel, class: '2xx' }), 1);
  t.equal(delta('firma_upstream_responses_total', { host: upLabel, class: '5xx' }), 1, '5xx from the upstream');
  t.equal(delta('firma_upstream_responses_total', { host: limitedLabel, class: '2xx' }), 1);
  t.equal(delta('firma_upstream_responses_total', { host: waitedLabel, class: '2xx' }), 3);
  t.equal(delta('firma_upstream_responses_total', { host: 'other', class: '2xx' }), 2, 'unconfigured hosts are "other"');
  const responses = after.families.get('firma_upstream_responses_total')?.samples ?? [];
  t.equal(responses.reduce((a, s) => a + s.value, 0), 8, 'no other upstream response counted');
  t.same(new Set(responses.map((s) => s.labels['host'])), new Set([upLabel, limitedLabel, waitedLabel, 'other']), 'host labels: configured hosts and "other" only');

  t.equal(delta('firma_connector_errors_total', { host: 'other', kind: 'network' }), 1, 'unreachable upstream');
  t.equal(delta('firma_connector_errors_total', { host: limitedLabel, kind: 'rate_limited' }), 1, 'rate limited');
  const errors = after.families.get('firma_connector_errors_total')?.samples ?? [];
  t.equal(errors.reduce((a, s) => a + s.value, 0), 2, 'no other connector error');

  t.equal(delta('firma_rate_limit_rejections_total', { host: limitedLabel, reason: 'rate_limited' }), 1);
  t.equal(delta('firma_rate_limit_rejections_total', { host: waitedLabel, reason: 'rate_limited' }), 0);
  t.equal(delta('firma_rate_limit_wait_seconds_count', { host: limitedLabel }), 1, 'one token granted on the limited host');
  t.equal(delta('firma_rate_limit_wait_seconds_count', { host: waitedLabel }), 3, 'three tokens granted on the waited host');
  // Which of the three concurrent requests waited is up to the scheduler; the log line says it exactly.
  const waitedLines = sc.logs.filter((l) => l.includes(`"port":${waited.port}`) && l.includes('"waited_ms"')).length;
  t.equal(delta('firma_rate_limit_waits_total', { host: waitedLabel }), waitedLines, 'waits counted as logged');
  t.ok(waitedLines >= 1, 'burst 1 at 5/s: three concurrent requests cannot all go at once');
  t.equal(delta('firma_rate_limit_waits_total', { host: limitedLabel }), 0);
  t.same(
    after.families.get('firma_rate_limit_waits_total')?.samples.map((s) => s.labels['host']).sort(),
    [limitedLabel, waitedLabel].sort(),
    'rate-limit series for hosts with a token bucket only',
  );

  t.equal(delta('firma_request_duration_seconds_count'), 10, 'one duration per dispatched request');
  t.ok(delta('firma_request_duration_seconds_sum') > 0);
  t.equal(delta('firma_tls_certificates_minted_total'), 1, 'two HTTPS requests to one host: one mint');
  t.equal(delta('firma_tls_certificate_cache_hits_total'), 1, '… and one cache hit');
  t.ok(valueOf(after.families, 'firma_audit_write_duration_seconds_count') > 0, 'audit writes timed');
  t.equal(valueOf(after.families, 'firma_audit_write_failures_total'), 0);
  t.equal(valueOf(after.families, 'firma_requests_in_flight'), 0, 'nothing in flight after the traffic');

  // A second scrape with no traffic in between: same series, request counters unchanged, none decreased.
  const again = await scrape(sc);
  t.equal(again.status, 200);
  for (const [name, f] of after.families) {
    const g = again.families.get(name);
    t.ok(g !== undefined && g.type === f.type, `${name} still exported`);
    if (!name.startsWith('firma_') || f.type !== 'counter') continue;
    for (const s of f.samples) {
      const v = valueOf(again.families, s.name, s.labels as Record<string, string>);
      if (name.startsWith('firma_audit_')) t.ok(v >= s.value, `${s.name} did not decrease`);
      else t.equal(v, s.value, `${s.name}${JSON.stringify(s.labels)} unchanged`);
    }
  }

  // HEAD is served without a body; other methods are refused.
  const head = await get(`${sc.adminUrl}/metrics`, 'HEAD');
  t.equal(head.status, 200);
  t.equal(head.body, '');
  t.equal(head.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  t.equal((await get(`${sc.adminUrl}/metrics`, 'POST')).status, 405);
});

t.test('two sidecars in one process keep separate registries', async (t) => {
  const a = await startTestSidecar();
  t.teardown(() => a.stop());
  const b = await startTestSidecar();
  t.teardown(() => b.stop());
  const r = await curl(['--proxy', a.proxyUrl, `${up.origin}/echo`]);
  t.equal(r.status, 200);
  const [sa, sb] = await Promise.all([scrape(a), scrape(b)]);
  t.equal(valueOf(sa.families, 'firma_requests_total', { decision: 'allow', stage: 'policy', reason: 'allowed' }), 1);
  t.equal(valueOf(sb.families, 'firma_requests_total', { decision: 'allow', stage: 'policy', reason: 'allowed' }), 0);
  t.ok(sb.families.has('process_cpu_user_seconds_total'), 'both have the process metrics');
});

t.test('Metrics: reason labels are capped, pending approvals come from the wired source', async (t) => {
  const m = new Metrics({ hosts: [], defaultMetrics: false });
  m.setPendingApprovalsSource(() => 7);
  for (let i = 0; i < MAX_DECISION_SERIES + 50; i++) m.decision('deny', 'policy', `reason_${i}`);
  m.decision('deny', 'policy', 'reason_0');
  const f = parseExposition(await m.render());
  const series = f.get('firma_requests_total')?.samples ?? [];
  t.equal(series.length, MAX_DECISION_SERIES + 1, 'at most MAX_DECISION_SERIES + one "other" series');
  t.equal(valueOf(f, 'firma_requests_total', { decision: 'deny', stage: 'policy', reason: OTHER_REASON }), 50);
  t.equal(valueOf(f, 'firma_requests_total', { decision: 'deny', stage: 'policy', reason: 'reason_0' }), 2);
  t.equal(valueOf(f, 'firma_approvals_pending'), 7);
  t.notOk(f.has('process_cpu_user_seconds_total'), 'defaultMetrics: false');

  const target: Target = { scheme: 'https', host: 'api.example.com', kind: 'dns', port: 443 };
  const m2 = new Metrics({ hosts: [{ host: { host: 'api.example.com', port: null, text: 'api.example.com' } }], defaultMetrics: false });
  m2.outcome('request', target, 201, null, 12);
  m2.outcome('request', { ...target, port: 8443 }, 404, null, 12);
  m2.outcome('tunnel', target, null, 'timeout', 5000);
  const f2 = parseExposition(await m2.render());
  t.equal(valueOf(f2, 'firma_upstream_responses_total', { host: 'api.example.com', class: '2xx' }), 1, 'a portless entry covers 443');
  t.equal(valueOf(f2, 'firma_upstream_responses_total', { host: 'other', class: '4xx' }), 1, '… but not 8443');
  t.equal(valueOf(f2, 'firma_connector_errors_total', { host: 'api.example.com', kind: 'timeout' }), 1);
  t.equal(valueOf(f2, 'firma_request_duration_seconds_count'), 2, 'tunnels are not timed as requests');

  // A reload with another host list: known hosts keep their counts, new hosts get series, dropped hosts
  // keep theirs (a counter never goes backwards) but no longer receive traffic.
  m2.setHosts([{ host: { host: 'api.example.com', port: 8443, text: 'api.example.com:8443' }, rps: 10 }]);
  m2.outcome('request', { ...target, port: 8443 }, 404, null, 12);
  m2.outcome('request', target, 200, null, 12);
  m2.rateLimitGranted('api.example.com:8443', 0);
  const f3 = parseExposition(await m2.render());
  t.equal(valueOf(f3, 'firma_upstream_responses_total', { host: 'api.example.com:8443', class: '4xx' }), 1);
  t.equal(valueOf(f3, 'firma_upstream_responses_total', { host: 'api.example.com', class: '2xx' }), 1, 'kept, not reset');
  t.equal(valueOf(f3, 'firma_upstream_responses_total', { host: 'other', class: '2xx' }), 1, 'a dropped host is "other" now');
  t.equal(valueOf(f3, 'firma_rate_limit_wait_seconds_count', { host: 'api.example.com:8443' }), 1);
  t.equal(valueOf(f3, 'firma_rate_limit_waits_total', { host: 'api.example.com:8443' }), 0, 'granted at once is not a wait');
  // Reloading the same list again (and a host literally named "other") loses nothing, duplicates nothing.
  m2.setHosts([
    { host: { host: 'api.example.com', port: 8443, text: 'api.example.com:8443' }, rps: 10 },
    { host: { host: 'other', port: null, text: 'other' } },
  ]);
  const f4 = parseExposition(await m2.render());
  t.equal(valueOf(f4, 'firma_rate_limit_wait_seconds_count', { host: 'api.example.com:8443' }), 1, 'observations survive a reload');
  t.equal(valueOf(f4, 'firma_upstream_responses_total', { host: 'other', class: '2xx' }), 1);
});
