/**
 * MCP tool calls as actions (docs/mcp.md), end to end with the official SDK: an `McpServer` on the
 * Streamable HTTP server transport (loopback HTTP and HTTPS with the test CA), and the SDK's `Client`
 * with `StreamableHTTPClientTransport` sending through the sidecar the way docs/mcp.md "Client setup"
 * says (undici fetch + ProxyAgent as the transport's `fetch`).
 */
import t from 'tap';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fetch as undiciFetch, ProxyAgent, request } from 'undici';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startTestSidecar, DEFAULT_POLICY_TEXT, type TestSidecar } from '../helpers/sidecar.js';
import { fixture } from '../helpers/fixture.js';
import { upstreamPki } from '../helpers/pki.js';
import { serveStatelessMcp } from '../helpers/mcp.js';

const TOKEN_ENV = 'FIRMA_E2E_MCP_ADMIN_TOKEN';
const TOKEN = 'mcp-approver-3d9e1b';
process.env[TOKEN_ENV] = TOKEN;

/** What the MCP server was sent (the parsed POST bodies) and did. */
interface Upstream {
  readonly server: Server;
  readonly port: number;
  readonly bodies: unknown[];
  deleted: number;
  /** Resolved by the test once the client saw the first streamed event of stream_report. */
  releaseReport: () => void;
}

function mcpServer(up: Upstream): McpServer {
  const server = new McpServer({ name: 'tracker', version: '1.0.0' });
  server.registerTool('search', { inputSchema: { query: z.string() } }, ({ query }) => ({ content: [{ type: 'text', text: `found: ${query}` }] }));
  server.registerTool('create_item', { inputSchema: { title: z.string() } }, ({ title }) => ({ content: [{ type: 'text', text: `created: ${title}` }] }));
  server.registerTool('delete_item', { inputSchema: { id: z.string() } }, () => {
    up.deleted++;
    return { content: [{ type: 'text', text: 'deleted' }] };
  });
  // Streams: a progress event, then the result only once the test has seen that event (no timer).
  server.registerTool('stream_report', {}, async (extra) => {
    const token = extra._meta?.progressToken;
    const released = new Promise<void>((resolve) => { up.releaseReport = resolve; });
    if (token !== undefined) await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: 1, total: 2 } });
    await released;
    return { content: [{ type: 'text', text: 'report done' }] };
  });
  return server;
}

function useMcpUpstream(tls: boolean): Upstream {
  return fixture(t, async () => {
    const up = { bodies: [], deleted: 0, releaseReport: () => undefined } as unknown as Upstream & { server: Server; port: number };
    const listener = (req: IncomingMessage, res: ServerResponse): void => {
      // Stateless: a server and transport per request.
      serveStatelessMcp(() => mcpServer(up), up.bodies, req, res).catch(() => res.destroy());
    };
    const pki = upstreamPki();
    const server = tls ? createHttpsServer({ cert: pki.certPem, key: pki.keyPem }, listener) : createHttpServer(listener);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    Object.assign(up, { server, port: (server.address() as AddressInfo).port });
    return up;
  }, (up) => new Promise<void>((r) => {
    up.server.closeAllConnections?.();
    up.server.close(() => r());
  }));
}

const plain = useMcpUpstream(false);
const secure = useMcpUpstream(true);

const POLICY = `
@id("mcp.no-secret-search")
forbid (principal, action == Firma::Action::"mcp.tracker.search", resource)
when { context has mcp && context.mcp.arguments has query && context.mcp.arguments.query == "secret" };
`;

const sc: TestSidecar = fixture(t, () => {
  const servers = (name: string, port: number): string => `
[[mcp.servers]]
name = "${name}"
host = "127.0.0.1:${port}"
path = "/mcp"
risk = "medium"

[[mcp.servers.tools]]
name = "search"
risk = "low"
arguments = ["query"]

[[mcp.servers.tools]]
name = "stream_report"
risk = "low"

[[mcp.servers.tools]]
name = "create_*"
risk = "high"
arguments = ["title"]

[[mcp.servers.tools]]
name = "delete_*"
risk = "critical"
`;
  return startTestSidecar(`${servers('tracker', plain.port)}\n${servers('secure', secure.port)}`, {
    policies: { 'default.cedar': DEFAULT_POLICY_TEXT, 'mcp.cedar': POLICY },
    adminExtra: `token_env = "${TOKEN_ENV}"`,
  });
}, (s) => s.stop());

function dispatcher(): ProxyAgent {
  return new ProxyAgent({ uri: sc.proxyUrl, requestTls: { ca: sc.caPem } });
}

async function connect(url: string): Promise<Client> {
  const agent = dispatcher();
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    fetch: (u, init) => undiciFetch(u as string, { ...(init as object), dispatcher: agent }) as unknown as Promise<Response>,
  });
  const client = new Client({ name: 'e2e-agent', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

interface Ev {
  type: string;
  mcp?: { server: string; method: string | null; tool: string | null; rpc_id: string | number | null; calls: number } | null;
  [k: string]: unknown;
}

function events(): Ev[] {
  return readFileSync(join(sc.dir, 'audit', 'audit.jsonl'), 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Ev);
}

/** Decision events until `check` holds (the writer appends in batches), bounded. */
async function decisionsWhen(check: (d: Ev[]) => boolean): Promise<Ev[]> {
  let last: Ev[] = [];
  for (let i = 0; i < 200; i++) {
    last = events().filter((e) => e.type === 'decision');
    if (check(last)) return last;
    await new Promise((r) => setTimeout(r, 25));
  }
  return last;
}

/** A raw JSON-RPC POST through the sidecar (the SDK does not batch). */
async function rawPost(url: string, body: string): Promise<{ status: number; headers: Headers; json: unknown }> {
  const res = await undiciFetch(url, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    dispatcher: dispatcher(),
  });
  const text = await res.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {
    // an SSE answer: kept as text
  }
  return { status: res.status, headers: res.headers as unknown as Headers, json };
}

t.test('initialize, tools/list, allowed and streamed calls, a denied delete, a held call approved', async (t) => {
  const url = `http://127.0.0.1:${plain.port}/mcp`;
  const client = await connect(url);
  const tools = await client.listTools();
  t.same(tools.tools.map((x) => x.name).sort(), ['create_item', 'delete_item', 'search', 'stream_report']);

  const found = await client.callTool({ name: 'search', arguments: { query: 'bugs' } });
  t.same(found.content, [{ type: 'text', text: 'found: bugs' }]);

  // Unbuffered: the progress event reaches the client while the server still holds the result back.
  let progressed = 0;
  const report = await client.callTool({ name: 'stream_report', arguments: {} }, undefined, {
    onprogress: () => {
      progressed++;
      plain.releaseReport();
    },
  });
  t.equal(progressed, 1, 'the first SSE event arrived before the last was sent');
  t.same(report.content, [{ type: 'text', text: 'report done' }]);

  const denied = await client.callTool({ name: 'delete_item', arguments: { id: '7' } }).then(() => null, (e: unknown) => e as Error);
  t.ok(denied instanceof Error, 'the SDK rejects the denied call');
  t.match(denied?.message, /"code":-32001/);
  t.match(denied?.message, /"reason":"policy_deny"/);
  t.match(denied?.message, /"stage":"policy"/);
  t.equal(plain.deleted, 0, 'the delete never reached the server');

  const secret = await client.callTool({ name: 'search', arguments: { query: 'secret' } }).then(() => null, (e: unknown) => e as Error);
  t.match(secret?.message, /mcp\.no-secret-search|policy_deny/, 'Cedar read context.mcp.arguments');

  // Held: the approval shows the MCP action class; approving releases the call.
  const held = client.callTool({ name: 'create_item', arguments: { title: 'ship it' } });
  const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  let pending: Array<{ id: string; action_class: string }> = [];
  for (let i = 0; i < 200 && pending.length === 0; i++) {
    const r = await request(`${sc.adminUrl}/approvals`, { headers: auth });
    pending = ((await r.body.json()) as { pending: typeof pending }).pending;
    if (pending.length === 0) await new Promise((r) => setTimeout(r, 25));
  }
  t.equal(pending.length, 1, 'one approval pending');
  t.equal(pending[0]?.action_class, 'mcp.tracker.create_item');
  const ok = await request(`${sc.adminUrl}/approvals/${pending[0]?.id}/approve`, { method: 'POST', headers: auth, body: '{}' });
  t.equal(ok.statusCode, 200);
  await ok.body.dump();
  t.same((await held).content, [{ type: 'text', text: 'created: ship it' }]);
  await client.close();

  const decisions = await decisionsWhen((d) => d.some((e) => e.mcp?.tool === 'create_item' && e['decision'] === 'allow'));
  const mine = decisions.filter((e) => e.mcp?.server === 'tracker');
  const summary = mine.map((e) => `${String(e['decision'])} ${String(e['action_class'])} ${e.mcp?.method ?? '-'} ${e.mcp?.tool ?? '-'}`);
  for (const line of [
    'allow mcp.tracker.initialize initialize -',
    'allow mcp.tracker.notifications.initialized notifications/initialized -',
    'allow mcp.tracker.tools.list tools/list -',
    'allow mcp.tracker.search tools/call search',
    'allow mcp.tracker.stream_report tools/call stream_report',
    'deny mcp.tracker.delete_item tools/call delete_item',
    'require_approval mcp.tracker.create_item tools/call create_item',
    'allow mcp.tracker.create_item tools/call create_item',
  ]) t.ok(summary.includes(line), line);
  t.ok(mine.every((e) => typeof e.mcp?.calls === 'number'));
  t.ok(decisions.filter((e) => e.mcp === undefined).length === 0, 'every decision event carries the mcp field');

  const metrics = await (await request(`${sc.adminUrl}/metrics`)).body.text();
  t.match(metrics, /^firma_mcp_calls_total\{server="tracker",method="tools\/call",tool="delete_\*",decision="deny"\} 1$/m);
  t.match(metrics, /^firma_mcp_calls_total\{server="tracker",method="tools\/call",tool="search",decision="allow"\} 1$/m);
});

/** `firma_mcp_calls_total` of server tracker as "method tool decision" → value. */
async function mcpCounts(): Promise<Map<string, number>> {
  const text = await (await request(`${sc.adminUrl}/metrics`)).body.text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^firma_mcp_calls_total\{server="tracker",method="([^"]*)",tool="([^"]*)",decision="([^"]*)"\} (\d+)$/gm)) {
    out.set(`${m[1]} ${m[2]} ${m[3]}`, Number(m[4]));
  }
  return out;
}

t.test('a batch with one forbidden call is denied whole: one error per call, in order', async (t) => {
  const url = `http://127.0.0.1:${plain.port}/mcp`;
  const countsBefore = await mcpCounts();
  const before = plain.bodies.length;
  const r = await rawPost(url, JSON.stringify([
    { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'search', arguments: { query: 'a' } } },
    { jsonrpc: '2.0', id: 'del', method: 'tools/call', params: { name: 'delete_item', arguments: { id: '1' } } },
    { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 1, progress: 1 } },
  ]));
  t.equal(r.status, 403);
  t.ok(r.headers.get('x-firma-request-id'));
  const errors = r.json as Array<{ jsonrpc: string; id: unknown; error: { code: number; message: string; data: Record<string, unknown> } }>;
  t.same(errors.map((e) => e.id), [1, 'del', null]);
  t.ok(errors.every((e) => e.jsonrpc === '2.0' && e.error.code === -32001 && e.error.data['reason'] === 'policy_deny' && e.error.data['request_id'] === r.headers.get('x-firma-request-id')));
  t.match(errors[0]?.error.message, /not sent: message 2 of this batch was refused/);
  t.notMatch(errors[1]?.error.message, /not sent/);
  t.equal(plain.bodies.length, before, 'nothing of the batch reached the server');
  t.equal(plain.deleted, 0);
  // /metrics counts each call of the batch, with the batch's decision (docs/mcp.md "Metrics").
  const after = await mcpCounts();
  for (const key of ['tools/call search deny', 'tools/call delete_* deny', 'notifications/progress  deny']) {
    t.equal((after.get(key) ?? 0) - (countsBefore.get(key) ?? 0), 1, `one more ${key}`);
  }
});

t.test('a malformed body is 400 mcp_malformed; tool names are classified by their exact name', async (t) => {
  const url = `http://127.0.0.1:${plain.port}/mcp`;
  const bad = await rawPost(url, '{"jsonrpc":"2.0","id":1,');
  t.equal(bad.status, 400);
  t.match(bad.json, { jsonrpc: '2.0', id: null, error: { code: -32600, data: { decision: 'deny', stage: 'mapping', reason: 'mcp_malformed' } } });
  const noVersion = await rawPost(url, JSON.stringify({ id: 1, method: 'tools/list' }));
  t.equal(noVersion.status, 400);

  // "delete_*" is a name here, not a wildcard: it matches the delete_* rule as a name and is denied.
  const star = await rawPost(url, JSON.stringify({ jsonrpc: '2.0', id: 'star', method: 'tools/call', params: { name: 'delete_*', arguments: {} } }));
  t.equal(star.status, 403);
  t.match(star.json, { id: 'star', error: { data: { reason: 'policy_deny' } } });
  // A Cyrillic "ѕ": not the search rule, classified mcp.tracker.tools.call at the server's risk.
  const lookalike = await rawPost(url, JSON.stringify({ jsonrpc: '2.0', id: 'lookalike', method: 'tools/call', params: { name: '\u0455earch', arguments: { query: 'secret' } } }));
  t.equal(lookalike.status, 200, 'allowed (medium), and the server answers it does not know the tool');
  const decisions = await decisionsWhen((d) => d.some((e) => e.mcp?.rpc_id === 'lookalike'));
  const six = decisions.find((e) => e.mcp?.rpc_id === 'lookalike');
  t.equal(six?.['action_class'], 'mcp.tracker.tools.call');
  t.equal(six?.mcp?.tool, '\u0455earch', 'the audit records the exact name');
  t.equal(six?.['risk'], 'medium');
  const five = decisions.find((e) => e.mcp?.rpc_id === 'star');
  t.same([five?.['action_class'], five?.['risk'], five?.mcp?.tool], ['mcp.tracker.tools.call', 'critical', 'delete_*']);
});

t.test('over HTTPS with the sidecar CA: the same classification', async (t) => {
  const client = await connect(`https://127.0.0.1:${secure.port}/mcp`);
  const found = await client.callTool({ name: 'search', arguments: { query: 'tls' } });
  t.same(found.content, [{ type: 'text', text: 'found: tls' }]);
  const denied = await client.callTool({ name: 'delete_item', arguments: { id: '1' } }).then(() => null, (e: unknown) => e as Error);
  t.match(denied?.message, /"reason":"policy_deny"/);
  await client.close();
  const decisions = await decisionsWhen((d) => d.some((e) => e.mcp?.server === 'secure' && e.mcp.tool === 'delete_item'));
  t.ok(decisions.some((e) => e['action_class'] === 'mcp.secure.search' && e['scheme'] === 'https' && e['decision'] === 'allow'));
  t.equal(secure.deleted, 0);
});
