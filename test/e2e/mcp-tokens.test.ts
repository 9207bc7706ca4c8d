/**
 * Capability tokens grant MCP actions (docs/mcp.md "Enforcement"): a token for one tool's class
 * (`mcp.tracker.search`) lets that tool through and nothing else of the server; `mcp.tracker.*` covers
 * the whole server. The official SDK client sends the token as proxy credentials.
 */
import t from 'tap';
import { join } from 'node:path';
import { startTestSidecar } from '../helpers/sidecar.js';
import { connectMcp, rejection, startMcpUpstream } from '../helpers/mcp.js';
import { issueToken } from '../../src/enforce/capability/tokens.js';

t.test('a token for mcp.tracker.search calls search only; mcp.tracker.* calls every tool the policies allow', async (t) => {
  const up = await startMcpUpstream();
  t.teardown(() => up.close());
  const sc = await startTestSidecar(`
[[mcp.servers]]
name = "tracker"
host = "127.0.0.1:${up.port}"
path = "/mcp"
risk = "low"

[[mcp.servers.tools]]
name = "delete_*"
risk = "critical"
`, { capabilities: 'required = true' });
  t.teardown(() => sc.stop());
  const keys = join(sc.dir, 'keys');
  const mint = async (actions: string[]): Promise<string> =>
    (await issueToken({ signingKeyFile: join(keys, 'capability.key'), publicKeyFile: join(keys, 'capability.pub'), agent: 'worker', actions, scope: '127.0.0.1', ttlMs: 3_600_000 })).token;
  const proxyWith = (token: string): string => `http://worker:${token}@127.0.0.1:${sc.proxyPort}`;

  // The session's own messages (initialize, notifications/initialized, tools/list) are actions too.
  const session = ['mcp.tracker.initialize', 'mcp.tracker.notifications.initialized', 'mcp.tracker.tools.list'];
  const one = await connectMcp(proxyWith(await mint([...session, 'mcp.tracker.search'])), up.url);
  t.teardown(() => one.close());
  const found = await one.callTool({ name: 'search', arguments: { query: 'q' } });
  t.same(found.content, [{ type: 'text', text: 'found: q' }], 'the granted tool is answered');
  const created = await rejection(one.callTool({ name: 'create_item', arguments: { title: 'x', project: 'p' } }));
  t.match(created?.message, /out_of_scope/, 'a tool the token does not name is refused at stage 1');
  t.match(created?.message, /"stage":"capability"/);
  t.notOk(up.calls.some((c) => c.name === 'create_item'), 'and never reaches the server');

  const all = await connectMcp(proxyWith(await mint(['mcp.tracker.*'])), up.url);
  t.teardown(() => all.close());
  const made = await all.callTool({ name: 'create_item', arguments: { title: 'y', project: 'p' } });
  t.ok(Array.isArray(made.content) && up.calls.some((c) => c.name === 'create_item'), 'mcp.tracker.* covers create_item: the server ran it');
  const deleted = await rejection(all.callTool({ name: 'delete_item', arguments: { id: '1' } }));
  t.match(deleted?.message, /"stage":"policy"/, 'the token covers delete_item; the critical-risk policy still denies it');

  const none = await rejection(connectMcp(proxyWith(await mint(['other.*'])), up.url));
  t.match(none?.message, /out_of_scope/, 'a token for other actions cannot even initialize');
});
