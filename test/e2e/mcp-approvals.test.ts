/**
 * A held MCP tool call as approvers see it (docs/mcp.md "Approvals"): the official SDK client calls
 * through the sidecar, the default policies hold the high-risk calls, and the approvals API, the
 * approvals page (in Chromium) and the Slack-compatible webhook show the server, the JSON-RPC method,
 * the exact tool name and only the opted-in arguments; approving lets the call complete.
 */
import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { chromium } from 'playwright-core';
import { startTestSidecar, type TestSidecar } from '../helpers/sidecar.js';
import { connectMcp, rejection, startMcpUpstream } from '../helpers/mcp.js';

const TOKEN_ENV = 'FIRMA_E2E_MCP_APPROVALS_TOKEN';
const TOKEN = 'mcp-approvals-approver-52c1';
process.env[TOKEN_ENV] = TOKEN;

/** An argument no tool rule opts into: it must appear in no view. */
const UNLISTED = 'NOT-OPTED-IN-7731';
const HTML_TITLE = '<img src=x onerror=alert(1)>';
const LONG_PROJECT = 'p'.repeat(300);
const SCRIPT_TOOL = '<script>alert(1)</script>';

interface McpView {
  server: string;
  method: string | null;
  tool: string | null;
  arguments: Record<string, string> | null;
}
interface Pending {
  id: string;
  action_class: string;
  risk: string | null;
  mcp: McpView | null;
  [k: string]: unknown;
}

/** A loopback webhook receiver: every POST body, and a promise for the n-th one. */
async function webhook(): Promise<{ url: string; posts: Array<Record<string, unknown>>; nth(n: number): Promise<Record<string, unknown>>; close(): Promise<void> }> {
  const posts: Array<Record<string, unknown>> = [];
  const waiters: Array<{ n: number; resolve: (p: Record<string, unknown>) => void }> = [];
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      posts.push(JSON.parse(text) as Record<string, unknown>);
      res.end('ok');
      for (const w of waiters.filter((x) => x.n <= posts.length)) w.resolve(posts[w.n - 1]!);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/services/hook`,
    posts,
    nth: (n) => (posts.length >= n ? Promise.resolve(posts[n - 1]!) : new Promise((resolve) => waiters.push({ n, resolve }))),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

async function pending(sc: TestSidecar): Promise<Pending[]> {
  const r = await request(`${sc.adminUrl}/approvals`, { headers: { accept: 'application/json' } });
  return ((await r.body.json()) as { pending: Pending[] }).pending;
}

async function approve(sc: TestSidecar, id: string): Promise<number> {
  const r = await request(`${sc.adminUrl}/approvals/${id}/approve`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: '{}',
  });
  await r.body.dump();
  return r.statusCode;
}

t.test('a held tool call shows its server, method, exact tool and opted-in arguments on the API, the page and the webhook', async (t) => {
  const up = await startMcpUpstream();
  t.teardown(() => up.close());
  const hook = await webhook();
  t.teardown(() => hook.close());
  const sc = await startTestSidecar(`
[approvals]
webhook_url = "${hook.url}"
webhook_timeout_ms = 5000

[[mcp.servers]]
name = "tracker"
host = "127.0.0.1:${up.port}"
path = "/mcp"
risk = "high"

[[mcp.servers.tools]]
name = "create_*"
risk = "high"
arguments = ["title", "project"]
`, { adminExtra: `token_env = "${TOKEN_ENV}"` });
  t.teardown(() => sc.stop());
  const client = await connectMcp(sc.proxyUrl, up.url);
  t.teardown(() => client.close());

  // 1. A named tool with two opted-in arguments (one HTML, one long) and one that is not opted in.
  const created = client.callTool({ name: 'create_item', arguments: { title: HTML_TITLE, project: LONG_PROJECT, note: UNLISTED } });
  const post1 = await hook.nth(1);
  const [p1] = await pending(sc);
  if (p1 === undefined) return t.fail('the create_item call is not pending');
  const shownProject = `${'p'.repeat(199)}…`;
  t.equal(p1.action_class, 'mcp.tracker.create_item');
  t.same(p1.mcp, { server: 'tracker', method: 'tools/call', tool: 'create_item', arguments: { title: HTML_TITLE, project: shownProject } },
    'the API shows server, method, tool and the opted-in arguments, a long value cut with an ellipsis');
  t.notMatch(JSON.stringify(p1), UNLISTED, 'an argument nobody opted into is not in the view');
  t.same(post1['mcp'], p1.mcp, 'the webhook carries the same MCP fields');
  t.equal(post1['approval_id'], p1.id);
  const text1 = String(post1['text']);
  t.match(text1, 'MCP server tracker, tools/call tool "create_item" with title="&lt;img src=x onerror=alert(1)&gt;"', 'the message names the call, Slack-escaped');
  t.match(text1, `project="${shownProject}"`);
  t.notMatch(JSON.stringify(post1), UNLISTED);

  // 2. A tool whose name is markup: classified generic, shown exactly as sent.
  const scripted = rejection(client.callTool({ name: SCRIPT_TOOL, arguments: { title: 'ignored: no rule opts in' } }));
  const post2 = await hook.nth(2);
  const p2 = (await pending(sc)).find((p) => p.id === post2['approval_id']);
  if (p2 === undefined) return t.fail('the generic call is not pending');
  t.equal(p2.action_class, 'mcp.tracker.tools.call', 'a name that is no class segment is the generic class');
  t.same(p2.mcp, { server: 'tracker', method: 'tools/call', tool: SCRIPT_TOOL, arguments: null }, 'the exact tool name, no arguments');
  t.match(String(post2['text']), 'tool "&lt;script&gt;alert(1)&lt;/script&gt;"');
  t.notMatch(String(post2['text']), '<script>', 'no raw markup in the Slack text');

  // 3. The page: both calls rendered as text, nothing of them as markup.
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('dialog', (d) => {
    problems.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  await page.goto(`${sc.adminUrl}/approvals/ui`);
  const row1 = page.locator(`#pending tbody tr[data-approval-id="${p1.id}"]`);
  const row2 = page.locator(`#pending tbody tr[data-approval-id="${p2.id}"]`);
  await row1.waitFor({ timeout: 10_000 });
  await row2.waitFor({ timeout: 10_000 });
  const shown1 = await row1.innerText();
  t.match(shown1, 'MCP tracker tools/call');
  t.match(shown1, 'tool "create_item"');
  t.match(shown1, `title = "${HTML_TITLE}"`, 'the HTML value shown as text');
  t.match(shown1, `project = "${shownProject}"`);
  t.notMatch(await page.content(), UNLISTED);
  const shown2 = await row2.innerText();
  t.match(shown2, `tool "${SCRIPT_TOOL}"`, 'the markup tool name shown as text');
  t.match(shown2, 'mcp.tracker.tools.call');
  t.match(await row2.innerHTML(), '&lt;script&gt;alert(1)&lt;/script&gt;', 'escaped in the page HTML');
  t.match(await row1.innerHTML(), '&lt;img src=x onerror=alert(1)&gt;');
  t.equal(await page.locator('#pending tbody script, #pending tbody img').count(), 0, 'no element made from agent text');
  t.same(problems, [], 'no script ran, no dialog opened');

  // 4. Approving lets both calls go to the server; create_item completes with its result.
  t.equal(await approve(sc, p1.id), 200);
  t.same((await created).content, [{ type: 'text', text: `created: ${HTML_TITLE}` }]);
  t.equal(await approve(sc, p2.id), 200);
  const answered = await scripted;
  t.notMatch(answered?.message ?? '', /-32001/, 'not a sidecar denial: the server answered the approved call');
  t.ok(up.bodies.some((b) => (b as { params?: { name?: string } }).params?.name === SCRIPT_TOOL), 'the server received the approved call');
  t.same(up.calls.map((c) => c.name), ['create_item']);
  t.equal(hook.posts.length, 2, 'one webhook POST per approval');
});
