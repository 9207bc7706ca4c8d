/**
 * Hot reload of `[[mcp.servers]]` (docs/mcp.md "Configuration"; docs/listeners.md on reloads) on a real
 * `firma start` process: the official SDK client's delete is denied, firma.toml is edited and SIGHUP
 * sent, the same call is allowed and a server added by the edit is classified; then an invalid edit is
 * rejected with `file:line:col` and the previous MCP configuration keeps serving.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSidecar, writeDecisionFiles, type SidecarProcess } from '../helpers/sidecar.js';
import { connectMcp, rejection, startMcpUpstream, type McpUpstream } from '../helpers/mcp.js';

const BASE = `
[sidecar]
log_level = "info"
drain_timeout_ms = 2000
[sidecar.reload]
watch = false
[sidecar.interceptor]
listen = "127.0.0.1:0"
[sidecar.interceptor.mitm]
ca_dir = "certs"
[sidecar.admin]
listen = "127.0.0.1:0"
[sidecar.connector]
allow_private = ["127.0.0.1/32"]
`;

function server(name: string, up: McpUpstream, path: string, deleteRisk: string): string {
  return `
[[mcp.servers]]
name = "${name}"
host = "127.0.0.1:${up.port}"
path = "${path}"
risk = "medium"

[[mcp.servers.tools]]
name = "search"
risk = "low"

[[mcp.servers.tools]]
name = "delete_*"
risk = "${deleteRisk}"
`;
}

interface Line {
  msg?: string;
  trigger?: string;
  errors?: string[];
  [k: string]: unknown;
}

function parsed(sc: SidecarProcess): Line[] {
  return sc.lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Line];
    } catch {
      return [];
    }
  });
}

/** Resolves with the first log line after the first `skip` that `match` accepts (bounded: 15 s). */
async function logLine(sc: SidecarProcess, match: (l: Line) => boolean, skip = 0): Promise<Line> {
  const until = Date.now() + 15_000;
  for (;;) {
    const found = parsed(sc).filter(match)[skip];
    if (found !== undefined) return found;
    if (Date.now() > until) throw new Error(`no matching log line: ${sc.lines.slice(-5).join('\n')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const reloaded = (l: Line): boolean => l.msg === 'configuration reloaded';
const rejected = (l: Line): boolean => l.msg?.startsWith('reload rejected') === true;

interface Ev {
  type: string;
  action_class?: string;
  decision?: string;
  event?: string;
  detail?: string;
  mcp?: { server: string; tool: string | null } | null;
}

function audit(dir: string): Ev[] {
  return readFileSync(join(dir, 'audit', 'audit.jsonl'), 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Ev);
}

t.test('SIGHUP applies an edited [[mcp.servers]]; an invalid one is rejected and the previous one keeps serving', async (t) => {
  const up = await startMcpUpstream();
  t.teardown(() => up.close());
  const dir = mkdtempSync(join(tmpdir(), 'firma-mcp-reload-'));
  const decisions = writeDecisionFiles(dir);
  const toml = join(dir, 'firma.toml');
  writeFileSync(toml, BASE + decisions + server('tracker', up, '/mcp', 'critical'));
  const sc = await spawnSidecar(['start'], { cwd: dir });
  t.teardown(() => {
    if (sc.proc.exitCode === null) sc.proc.kill('SIGKILL');
  });
  const proxy = `http://127.0.0.1:${sc.proxyPort}`;
  const client = await connectMcp(proxy, up.url);
  t.teardown(() => client.close());

  // 1. delete_* is critical: the shipped policies deny it.
  const denied = await rejection(client.callTool({ name: 'delete_item', arguments: { id: '1' } }));
  t.match(denied?.message, /"reason":"policy_deny"/, 'the delete is denied');
  t.same(up.calls, [], 'and never reached the server');
  // Before the edit, /v2/mcp is no declared endpoint: an opaque request the catch-all rule classifies.
  const second = await connectMcp(proxy, `http://127.0.0.1:${up.port}/v2/mcp`);
  t.teardown(() => second.close());
  await second.callTool({ name: 'search', arguments: { query: 'before' } });

  // 2. The rule's risk lowered and a second server added; SIGHUP; the reload is acknowledged.
  writeFileSync(toml, BASE + decisions + server('tracker', up, '/mcp', 'low') + server('second', up, '/v2/mcp', 'critical'));
  sc.proc.kill('SIGHUP');
  const ok = await logLine(sc, reloaded);
  t.equal(ok.trigger, 'SIGHUP');
  const allowed = await client.callTool({ name: 'delete_item', arguments: { id: '2' } });
  t.same(allowed.content, [{ type: 'text', text: 'deleted' }], 'the same call is now allowed');
  await second.callTool({ name: 'search', arguments: { query: 'after' } });
  const secondDelete = await rejection(second.callTool({ name: 'delete_item', arguments: { id: '3' } }));
  t.match(secondDelete?.message, /"reason":"policy_deny"/, 'the added server has its own tool rules');

  // 3. Two servers named "tracker": rejected with file:line:col naming the key; nothing changes.
  const dup = BASE + decisions + server('tracker', up, '/mcp', 'critical') + server('tracker', up, '/v3/mcp', 'critical');
  writeFileSync(toml, dup);
  sc.proc.kill('SIGHUP');
  const bad = await logLine(sc, rejected);
  t.equal(bad.trigger, 'SIGHUP');
  // The place is the [[mcp.servers]] array (its first header); the message names both entries.
  const where = dup.split('\n').indexOf('[[mcp.servers]]') + 1;
  t.match(bad.errors?.[0], new RegExp(`firma\\.toml:${where}:\\d+: mcp\\.servers.*duplicate server name "tracker" \\(entries 1 and 2\\)`), 'file:line:col and the key');
  const still = await client.callTool({ name: 'delete_item', arguments: { id: '4' } });
  t.same(still.content, [{ type: 'text', text: 'deleted' }], 'the previous MCP configuration keeps serving (delete still low)');
  t.equal(parsed(sc).filter(reloaded).length, 1, 'the rejected edit was not applied');

  sc.proc.kill('SIGTERM');
  t.equal(await sc.exited, 0, 'clean exit');
  const ev = audit(dir);
  const deletes = ev.filter((e) => e.type === 'decision' && e.mcp?.tool === 'delete_item').map((e) => `${e.decision} ${e.action_class}`);
  t.same(deletes, ['deny mcp.tracker.delete_item', 'allow mcp.tracker.delete_item', 'deny mcp.second.delete_item', 'allow mcp.tracker.delete_item']);
  const searches = ev.filter((e) => e.type === 'decision' && (e.action_class === 'test.call' || e.action_class === 'mcp.second.search') && e.decision === 'allow');
  t.ok(searches.some((e) => e.action_class === 'test.call'), 'before the reload /v2/mcp was an opaque request');
  t.ok(searches.some((e) => e.action_class === 'mcp.second.search' && e.mcp?.server === 'second'), 'after it, a call to the added server');
  const lifecycle = ev.filter((e) => e.type === 'lifecycle' && e.event === 'reload').map((e) => e.detail ?? '');
  t.match(lifecycle, [/^ok \(SIGHUP\)/, /^rejected \(SIGHUP\): .*duplicate server name/]);
  t.same(up.calls.filter((c) => c.name === 'delete_item').map((c) => (c.arguments as { id: string }).id), ['2', '4']);
});
