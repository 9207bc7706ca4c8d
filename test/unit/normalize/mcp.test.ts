/**
 * JSON-RPC classification on a declared MCP endpoint (docs/mcp.md "Classification"), without sockets:
 * action classes, risks, the tool rule that wins, argument extraction and the ambiguity rules.
 */
import t from 'tap';
import { parseConfigText } from '../../../src/config/index.js';
import { McpTable, type McpServer } from '../../../src/normalize/mcp.js';
import { parseMcpBody, exchangeCall, type McpParse } from '../../../src/normalize/mcp-messages.js';

const table = McpTable.fromConfig(parseConfigText(`
[[mcp.servers]]
name = "tracker"
host = "mcp.example.com"
path = "/mcp"
risk = "medium"

[[mcp.servers.tools]]
name = "delete_*"
risk = "critical"
arguments = ["project"]

[[mcp.servers.tools]]
name = "delete_draft"
risk = "low"

[[mcp.servers.tools]]
name = "search"
risk = "low"
arguments = ["query", "filter.state"]
`, 'firma.toml', '/etc/firma'));
const server = table.servers[0] as McpServer;
const parse = (body: unknown): McpParse => parseMcpBody(server, Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)));
const call = (name: string, args: unknown = {}, id: unknown = 1): unknown => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });

function calls(p: McpParse): Array<[string, string, string | null, string | number | null]> {
  if (!p.ok) throw new Error(`not ok: ${p.reason}: ${p.message}`);
  return p.calls.map((c) => [c.actionClass, c.risk, c.facts.tool, c.facts.rpcId]);
}

t.test('endpoint matching: exact host, default port of the scheme, path glob', async (t) => {
  const target = (host: string, port: number, scheme: 'https' | 'http' = 'https') => ({ scheme, host, kind: 'dns' as const, port });
  t.equal(table.endpoint(target('mcp.example.com', 443), '/mcp')?.name, 'tracker');
  t.equal(table.endpoint(target('mcp.example.com', 443), '/mcp/'), server, 'a trailing slash does not dodge it');
  t.equal(table.endpoint(target('mcp.example.com', 8443), '/mcp'), null, 'another port');
  t.equal(table.endpoint(target('mcp.example.com', 80, 'http'), '/mcp'), server, 'http on its default port');
  t.equal(table.endpoint(target('x.example.com', 443), '/mcp'), null);
  t.equal(table.endpoint(target('mcp.example.com', 443), '/other'), null);
  t.ok(table.actionClasses.includes('mcp.tracker.search'), 'a literal tool rule is a Cedar action');
  t.ok(table.actionClasses.includes('mcp.tracker.tools.list'));
  t.notOk(table.actionClasses.some((c) => c.includes('*')), 'globs are not actions');
  t.same(table.argumentFields, ['filter.state', 'project', 'query']);
});

t.test('tools/call: the most specific tool rule wins; other methods by name', async (t) => {
  t.same(calls(parse(call('delete_item'))), [['mcp.tracker.delete_item', 'critical', 'delete_item', 1]]);
  t.same(calls(parse(call('delete_draft'))), [['mcp.tracker.delete_draft', 'low', 'delete_draft', 1]], 'a literal beats the glob');
  t.same(calls(parse(call('create_item'))), [['mcp.tracker.create_item', 'medium', 'create_item', 1]], 'no rule: the server risk');
  t.same(calls(parse({ jsonrpc: '2.0', id: 'a', method: 'tools/list' })), [['mcp.tracker.tools.list', 'low', null, 'a']]);
  t.same(calls(parse({ jsonrpc: '2.0', id: 2, method: 'resources/read', params: { uri: 'x' } })), [['mcp.tracker.resources.read', 'medium', null, 2]]);
  t.same(calls(parse({ jsonrpc: '2.0', id: 3, method: 'logging/setLevel', params: { level: 'info' } })), [['mcp.tracker.logging.setlevel', 'medium', null, 3]]);
  t.same(calls(parse({ jsonrpc: '2.0', id: 4, method: 'tools.list' })), [['mcp.tracker.other', 'medium', null, 4]], 'an unknown method is "other", never its own class');
  t.same(calls(parse({ jsonrpc: '2.0', id: 5, method: 'tools/List' })), [['mcp.tracker.other', 'medium', null, 5]], 'case matters');
});

t.test('notifications and client responses are classified, never passed unexamined', async (t) => {
  const n = parse({ jsonrpc: '2.0', method: 'notifications/initialized' });
  t.same(calls(n), [['mcp.tracker.notifications.initialized', 'low', null, null]]);
  t.same(calls(parse({ jsonrpc: '2.0', id: 9, result: { action: 'accept' } })), [['mcp.tracker.response', 'medium', null, 9]]);
  t.same(calls(parse({ jsonrpc: '2.0', method: 'notifications/whatever' })), [['mcp.tracker.other', 'medium', null, null]]);
});

t.test('tool names with glob characters or unicode tricks: classified by their exact name', async (t) => {
  t.same(calls(parse(call('delete_*'))), [['mcp.tracker.tools.call', 'critical', 'delete_*', 1]], 'the name "delete_*" matches the glob like any delete_ name, and is no class');
  t.same(calls(parse(call('*'))), [['mcp.tracker.tools.call', 'medium', '*', 1]], '"*" is a name, not a wildcard: no rule names it');
  t.same(calls(parse(call('\u0455earch'))), [['mcp.tracker.tools.call', 'medium', '\u0455earch', 1]], 'a Cyrillic s is not "search"');
  t.same(calls(parse(call('search\u200b'))), [['mcp.tracker.tools.call', 'medium', 'search\u200b', 1]], 'a zero-width space is not "search"');
  t.same(calls(parse(call('Search'))), [['mcp.tracker.tools.call', 'medium', 'Search', 1]]);
  t.same(calls(parse(call('tools'))), [['mcp.tracker.tools.call', 'medium', 'tools', 1]], 'a reserved first segment cannot be a tool class');
  t.same(calls(parse(call('ping'))), [['mcp.tracker.tools.call', 'medium', 'ping', 1]], 'a tool named ping is not the ping method');
  t.same(calls(parse(call('a.b'))), [['mcp.tracker.tools.call', 'medium', 'a.b', 1]], 'a dot would make a group');
});

t.test('opted-in arguments: strings for Cedar; non-scalars and repeated keys are denied', async (t) => {
  const ok = parse(call('search', { query: 'bug', filter: { state: 'open', other: [1] }, limit: 5 }));
  t.ok(ok.ok);
  if (ok.ok) t.same(ok.calls[0]?.facts.arguments, { query: 'bug', 'filter.state': 'open' });
  const num = parse(call('delete_item', { project: 42 }));
  if (num.ok) t.same(num.calls[0]?.facts.arguments, { project: '42' }, 'a number as its JSON text');
  const obj = parse(call('delete_item', { project: { name: 'x' } }));
  t.match(obj, { ok: false, reason: 'mcp_ambiguous', message: /argument project/ });
  const arr = parse(call('search', { filter: { state: ['open', 'closed'] } }));
  t.match(arr, { ok: false, reason: 'mcp_ambiguous' });
  t.match(parse('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_item","arguments":{"project":"a","project":"b"}}}'),
    { ok: false, reason: 'mcp_ambiguous', message: /params\.arguments\.project more than once/ });
  t.match(parse('{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"delete_item"}}'),
    { ok: false, reason: 'mcp_ambiguous', message: /key method more than once/ });
  t.match(parse('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","name":"delete_item"}}'),
    { ok: false, reason: 'mcp_ambiguous', message: /params\.name/ });
  t.match(parse('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"x":"a\\"b","x":"c"}}}'),
    { ok: true }, 'a repeated argument nobody reads is not refused (escaped quotes are skipped right)');
  t.match(parse('[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"id":3,"method":"ping"}]'),
    { ok: false, reason: 'mcp_ambiguous', message: /message 2 of the batch has the key id/ });
});

t.test('batches: one call per message, in order', async (t) => {
  const p = parse([call('search', {}, 1), { jsonrpc: '2.0', method: 'notifications/progress', params: {} }, call('delete_item', {}, 'x')]);
  t.same(calls(p), [['mcp.tracker.search', 'low', 'search', 1], ['mcp.tracker.notifications.progress', 'low', null, null], ['mcp.tracker.delete_item', 'critical', 'delete_item', 'x']]);
  if (p.ok) {
    t.same(p.calls.map((c) => c.facts.index), [0, 1, 2]);
    t.same(p.calls[2]?.facts.rpcIds, [1, null, 'x']);
    t.equal(p.calls[2]?.facts.batch, true);
  }
});

t.test('malformed JSON-RPC', async (t) => {
  for (const [body, why] of [
    ['{', /valid JSON/],
    ['[]', /empty JSON-RPC batch/],
    ['"x"', /must be an object/],
    [{ id: 1, method: 'ping' }, /"jsonrpc": "2.0"/],
    [{ jsonrpc: '2.0', id: null, method: 'ping' }, /never uses null/],
    [{ jsonrpc: '2.0', id: { a: 1 }, method: 'ping' }, /string or an integer/],
    [{ jsonrpc: '2.0', id: 1, method: 7 }, /non-empty string/],
    [{ jsonrpc: '2.0', id: 1, method: 'tools/call', params: [] }, /must be an object/],
    [{ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 3 } }, /params\.name/],
    [{ jsonrpc: '2.0', method: 'tools/call', params: { name: 'search' } }, /not a notification/],
    [{ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'search', arguments: 'x' } }, /arguments/],
    [{ jsonrpc: '2.0', id: 1 }, /exactly one of result and error/],
    [{ jsonrpc: '2.0', result: {} }, /needs the id/],
    [[{ jsonrpc: '2.0', id: 1, method: 'ping' }, 5], /message 2 of the batch/],
    [Array.from({ length: 65 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'ping' })), /at most 64/],
  ] as const) {
    t.match(parse(body), { ok: false, reason: 'mcp_malformed', message: why }, String(why));
  }
});

t.test('GET and DELETE on the endpoint', async (t) => {
  t.match(exchangeCall(server, 'GET'), { actionClass: 'mcp.tracker.stream', risk: 'low' });
  t.match(exchangeCall(server, 'DELETE'), { actionClass: 'mcp.tracker.session.end', risk: 'low' });
  t.equal(exchangeCall(server, 'PUT'), null);
});

t.test('a 64 KiB body is classified like a small one (its cost is measured by bench/mcp-parse.mjs)', async (t) => {
  const big = call('search', { query: 'needle', filter: { state: 'open' }, text: 'x'.repeat(64 * 1024 - 200) }, 7);
  const p = parse(big);
  t.same(calls(p), [['mcp.tracker.search', 'low', 'search', 7]]);
  if (p.ok) t.same(p.calls[0]?.facts.arguments, { query: 'needle', 'filter.state': 'open' }, 'only the opted-in arguments, not the 64 KiB text');
});
