import t from 'tap';
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { PassThrough, type Duplex } from 'node:stream';
import { RequestPipeline, type PipelineAudit, type PipelineConnector, type TunnelOpener } from '../../../src/pipeline/run.js';
import { isIssuedAllowed, type Allowed, type Verdict } from '../../../src/core/decision.js';
import type { DispatchOutcome } from '../../../src/core/outcome.js';
import type { SidecarReply } from '../../../src/core/reply.js';
import { createLogger } from '../../../src/core/log.js';
import { shippedStages, rawRequest } from '../../helpers/stages.js';

// The orchestrator driven without sockets: a fake exchange (IncomingMessage/ServerResponse with no
// connection), a recording audit and a recording connector. It checks the order the pipeline owns:
// decide → record the decision → dispatch an issued Allowed → record the outcome → one log line.

const OK: DispatchOutcome = { status: 200, upstreamStatus: 200, error: null, errorCode: null, bytesIn: 0, bytesOut: 2, clientAborted: false, credentialInjected: false, waitedMs: 0, responseHash: null };

interface Recording {
  readonly steps: string[];
  readonly logLines: Array<Record<string, unknown>>;
  /** Every outcome the audit was given. */
  readonly outcomes: DispatchOutcome[];
  auditWorks: boolean;
  /** What `committed()` returns: null (fsync "interval"/"never"), or the wait for fsync "always". */
  commit: (() => Promise<boolean>) | null;
  dispatch: (a: Allowed, res: ServerResponse) => Promise<DispatchOutcome>;
}

function harness(opts: { sidecar?: string; mapping?: string } = {}): { pipeline: RequestPipeline; rec: Recording; close: () => void } {
  const { setup, snapshot } = shippedStages(opts);
  const logStream = new PassThrough();
  const rec: Recording = {
    steps: [],
    logLines: [],
    outcomes: [],
    auditWorks: true,
    commit: null,
    dispatch: async (_a, res) => {
      res.writeHead(200).end('ok');
      return OK;
    },
  };
  logStream.on('data', (b: Buffer) => {
    for (const line of b.toString().split('\n')) if (line !== '') rec.logLines.push(JSON.parse(line) as Record<string, unknown>);
  });
  const audit: PipelineAudit = {
    decision: (d: Verdict) => {
      rec.steps.push(`audit.decision ${d.verdict}`);
      return rec.auditWorks;
    },
    outcome: (_d: Verdict, o: DispatchOutcome) => {
      rec.steps.push(`audit.outcome ${o.status}`);
      rec.outcomes.push(o);
    },
    refused: (r: SidecarReply) => {
      rec.steps.push(`audit.refused ${r.reason}`);
    },
    committed: () => {
      if (rec.commit === null) return null;
      rec.steps.push('audit.committed?');
      return rec.commit().then((ok) => {
        rec.steps.push(`audit.committed ${ok}`);
        return ok;
      });
    },
  };
  const connector: PipelineConnector = {
    forward: async (a, _req, res) => {
      rec.steps.push(`connector.forward issued=${isIssuedAllowed(a)}`);
      return rec.dispatch(a, res);
    },
    upgrade: async () => OK,
    dialTunnel: async (a) => {
      rec.steps.push(`connector.dialTunnel issued=${isIssuedAllowed(a)}`);
      return { ok: true, socket: new Socket() };
    },
    relayTunnel: async () => {
      rec.steps.push('connector.relayTunnel');
      return { ...OK, upstreamStatus: null };
    },
  };
  const pipeline = new RequestPipeline({ decisions: { current: () => snapshot }, audit, connector, log: createLogger('info', { destination: logStream }) });
  return { pipeline, rec, close: () => setup.close() };
}

/** An HTTP exchange with no connection under it; `body()` is what the sidecar answered, once it ended. */
function exchange(method: string, host: string): { req: IncomingMessage; res: ServerResponse; ended: Promise<{ status: number; body: string }> } {
  const req = new IncomingMessage(new Socket());
  req.method = method;
  req.headers = { host };
  const res = new ServerResponse(req);
  const chunks: string[] = [];
  const end = res.end.bind(res);
  const ended = new Promise<{ status: number; body: string }>((resolve) => {
    res.end = ((chunk?: unknown) => {
      if (typeof chunk === 'string') chunks.push(chunk);
      end();
      resolve({ status: res.statusCode, body: chunks.join('') });
      return res;
    }) as typeof res.end;
  });
  return { req, res, ended };
}

const settled = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test('allowed: the decision is recorded before dispatch, the connector gets an issued Allowed, then outcome and one log line', async (t) => {
  const { pipeline, rec, close } = harness();
  t.teardown(close);
  const { req, res, ended } = exchange('POST', 'api.openai.com');
  pipeline.request(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), req, res);
  t.equal(pipeline.inFlight, 1, 'in flight while it is decided and dispatched');
  t.equal((await ended).status, 200);
  await settled();
  t.same(rec.steps, ['audit.decision allow', 'connector.forward issued=true', 'audit.outcome 200']);
  t.equal(pipeline.inFlight, 0);
  t.equal(rec.logLines.length, 1, 'one line per request');
  t.match(rec.logLines[0], { msg: 'request', decision: 'allow', action_class: 'llm.chat', status: 200, host: 'api.openai.com', path: '/v1/chat/completions' });
});

t.test('denied: answered 403 with the reason, recorded, never dispatched', async (t) => {
  const { pipeline, rec, close } = harness();
  t.teardown(close);
  const { req, res, ended } = exchange('DELETE', 'api.github.com');
  pipeline.request(rawRequest('DELETE', 'api.github.com', '/repos/o/r'), req, res);
  const answer = await ended;
  t.equal(answer.status, 403);
  t.match(JSON.parse(answer.body), { decision: 'deny', stage: 'policy', reason: 'policy_deny', policy_ids: ['default.deny-critical'] });
  t.same(rec.steps, ['audit.decision deny'], 'no connector call');
  t.match(rec.logLines, [{ decision: 'deny', stage: 'policy', reason: 'policy_deny', status: 403 }]);
});

t.test('a decision the audit log cannot record is not dispatched: 503 audit_unavailable (fail closed)', async (t) => {
  const { pipeline, rec, close } = harness();
  t.teardown(close);
  rec.auditWorks = false;
  const { req, res, ended } = exchange('POST', 'api.openai.com');
  pipeline.request(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), req, res);
  const answer = await ended;
  t.equal(answer.status, 503);
  t.match(JSON.parse(answer.body), { stage: 'audit', reason: 'audit_unavailable' });
  t.same(rec.steps, ['audit.decision allow'], 'never dispatched');
});

t.test('fsync "always": nothing goes upstream before the decision is on disk; a failed commit is 503, with its outcome', async (t) => {
  const { pipeline, rec, close } = harness();
  t.teardown(close);
  let commit: (ok: boolean) => void = () => undefined;
  rec.commit = () => new Promise<boolean>((r) => (commit = r));
  const first = exchange('POST', 'api.openai.com');
  pipeline.request(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), first.req, first.res);
  for (let i = 0; i < 20 && !rec.steps.includes('audit.committed?'); i++) await settled();
  t.same(rec.steps, ['audit.decision allow', 'audit.committed?'], 'held until the fsync');
  commit(true);
  t.equal((await first.ended).status, 200);
  await settled();
  t.same(rec.steps.slice(2), ['audit.committed true', 'connector.forward issued=true', 'audit.outcome 200']);
  rec.steps.length = 0;
  const second = exchange('POST', 'api.openai.com');
  pipeline.request(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), second.req, second.res);
  for (let i = 0; i < 20 && !rec.steps.includes('audit.committed?'); i++) await settled();
  commit(false);
  const answer = await second.ended;
  t.equal(answer.status, 503);
  t.match(JSON.parse(answer.body), { stage: 'audit', reason: 'audit_unavailable' });
  t.same(rec.steps, ['audit.decision allow', 'audit.committed?', 'audit.committed false', 'audit.outcome 503'], 'never dispatched; the outcome says why');
  t.equal(pipeline.inFlight, 0);
});

t.test('a connector that throws still gets its outcome recorded, and the agent a 502', async (t) => {
  const { pipeline, rec, close } = harness();
  t.teardown(close);
  rec.dispatch = async () => {
    throw new Error('bug');
  };
  const { req, res, ended } = exchange('POST', 'api.openai.com');
  pipeline.request(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), req, res);
  const answer = await ended;
  t.equal(answer.status, 502);
  t.same(rec.steps, ['audit.decision allow', 'connector.forward issued=true', 'audit.outcome 502']);
  t.equal(pipeline.inFlight, 0);
});

t.test('the drain bound passed: what is still in flight is recorded as cut by the shutdown, not as the agent\'s abort', async (t) => {
  const { pipeline, rec, close } = harness();
  t.teardown(close);
  // Two downloads: one had its answer started when the drain cut it, one was still waiting for it.
  const finishers: Array<(o: DispatchOutcome) => void> = [];
  rec.dispatch = () => new Promise<DispatchOutcome>((resolve) => finishers.push(resolve));
  for (let i = 0; i < 2; i++) {
    const { req, res } = exchange('POST', 'api.openai.com');
    pipeline.request(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), req, res);
  }
  while (finishers.length < 2) await settled();
  t.equal(pipeline.cutInFlight(), 2, 'the count the stop event reports');
  const aborted = { ...OK, bytesOut: 5, clientAborted: true, responseHash: 'sha256:ab' };
  finishers[0]?.(aborted);
  finishers[1]?.({ ...aborted, status: 499, upstreamStatus: null, bytesOut: 0, responseHash: null });
  while (rec.outcomes.length < 2) await settled();
  t.match(rec.outcomes, [
    { status: 200, upstreamStatus: 200, error: 'shutdown', errorCode: 'FIRMA_SHUTDOWN_CUT', clientAborted: false, bytesOut: 5, responseHash: 'sha256:ab' },
    { status: 503, upstreamStatus: null, error: 'shutdown', errorCode: 'FIRMA_SHUTDOWN_CUT', clientAborted: false },
  ]);
  t.match(rec.logLines, [{ error: 'shutdown', error_code: 'FIRMA_SHUTDOWN_CUT' }, { error: 'shutdown', status: 503 }]);
  t.equal(pipeline.inFlight, 0);
});

t.test('refusals no stage decided on are recorded as refused and logged', async (t) => {
  const { pipeline, rec, close } = harness();
  t.teardown(close);
  const { res, ended } = exchange('GET', 'x');
  pipeline.refuseHttp(res, { status: 400, decision: 'deny', stage: 'intercept', reason: 'host_mismatch', message: 'm', requestId: 'r1' });
  t.equal((await ended).status, 400);
  t.same(rec.steps, ['audit.refused host_mismatch']);
  t.match(rec.logLines, [{ request_id: 'r1', reason: 'host_mismatch', status: 400 }]);
});

t.test('monitor mode dispatches a would-deny, carrying what enforce mode would have refused', async (t) => {
  const { pipeline, rec, close } = harness({ sidecar: 'mode = "monitor"' });
  t.teardown(close);
  let seen: Allowed | null = null;
  rec.dispatch = async (a, res) => {
    seen = a;
    res.writeHead(200).end('ok');
    return OK;
  };
  const { req, res, ended } = exchange('DELETE', 'api.github.com');
  pipeline.request(rawRequest('DELETE', 'api.github.com', '/repos/o/r'), req, res);
  await ended;
  t.match(seen, { wouldDeny: { stage: 'policy', reason: 'policy_deny' } });
  await settled();
  t.match(rec.logLines, [{ decision: 'allow', would_deny: 'policy:policy_deny' }]);
});

t.test('a blind tunnel: decided, recorded, dialled, opened by the interceptor, then relayed', async (t) => {
  const { pipeline, rec, close } = harness({ sidecar: '' });
  t.teardown(close);
  const client = new PassThrough() as unknown as Duplex;
  const opened: string[] = [];
  const opener: TunnelOpener = {
    open: async (_s, target, transparent) => {
      opened.push(`${target.host} transparent=${transparent}`);
      return { ok: true, firstBytes: Buffer.from('hello') };
    },
  };
  // Tunnels are decided on CONNECT host: api.openai.com has no CONNECT rule, so default_protected denies it.
  pipeline.tunnel(rawRequest('CONNECT', 'api.openai.com', null, 'tunnel'), client, false, opener);
  while (rec.logLines.length === 0) await settled();
  t.same(rec.steps, ['audit.decision deny'], 'an unmapped tunnel is denied like any unmapped request');
  t.same(opened, []);
  t.match(rec.logLines, [{ decision: 'deny', stage: 'mapping', reason: 'unclassified' }]);
});

t.test('an allowed blind tunnel: dialled, opened by the interceptor, relayed, and its outcome recorded', async (t) => {
  const { pipeline, rec, close } = harness({ mapping: 'default_protected = false' });
  t.teardown(close);
  const client = new PassThrough() as unknown as Duplex;
  const opened: string[] = [];
  const opener: TunnelOpener = {
    open: async (_s, target, transparent) => {
      opened.push(`${target.host} transparent=${transparent}`);
      rec.steps.push('opener.open');
      return { ok: true, firstBytes: Buffer.from('hello') };
    },
  };
  pipeline.tunnel(rawRequest('CONNECT', 'unknown.example', null, 'tunnel'), client, false, opener);
  while (rec.logLines.length === 0) await settled();
  t.same(rec.steps, ['audit.decision allow', 'connector.dialTunnel issued=true', 'opener.open', 'connector.relayTunnel', 'audit.outcome 200']);
  t.same(opened, ['unknown.example transparent=false']);
  t.match(rec.logLines, [{ decision: 'passthrough', status: 200 }]);
  t.equal(pipeline.inFlight, 0);
});

t.test('a tunnel whose ClientHello the interceptor refuses is cut, recorded with the reason, never relayed', async (t) => {
  const { pipeline, rec, close } = harness({ mapping: 'default_protected = false' });
  t.teardown(close);
  const client = new PassThrough() as unknown as Duplex;
  const opener: TunnelOpener = { open: async () => ({ ok: false, reason: 'sni_mismatch' }) };
  pipeline.tunnel(rawRequest('CONNECT', 'unknown.example', null, 'tunnel'), client, true, opener);
  while (rec.logLines.length === 0) await settled();
  t.same(rec.steps, ['audit.decision allow', 'connector.dialTunnel issued=true', 'audit.outcome 400']);
  t.match(rec.logLines, [{ reason: 'sni_mismatch', status: 400 }]);
  t.ok(client.destroyed, 'the client connection is closed');
});

t.test('whenIdle waits for what is in flight, and no longer than the grace', async (t) => {
  const { pipeline, rec, close } = harness();
  t.teardown(close);
  let release: (() => void) | null = null;
  rec.dispatch = (_a, res) => new Promise((resolve) => {
    release = () => {
      res.writeHead(200).end('ok');
      resolve(OK);
    };
  });
  const { req, res } = exchange('POST', 'api.openai.com');
  pipeline.request(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), req, res);
  while (release === null) await settled();
  let idle = false;
  const waiting = pipeline.whenIdle(60_000).then(() => (idle = true));
  await settled();
  t.notOk(idle, 'still in flight');
  (release as () => void)();
  await waiting;
  t.equal(pipeline.inFlight, 0);
  await pipeline.whenIdle(0);
});
