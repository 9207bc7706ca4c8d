/**
 * The shipped example (docs/mcp.md "Example: a GitHub-like MCP server"): `docs/mcp-github.example.toml`
 * appended to a firma.toml and `docs/mcp-github.example.cedar` beside the default policies pass
 * `firma check`, and decide as the page says — read tools allowed, deletes denied, create_issue only
 * for the agent `triage` in the repository `firma` — through the pipeline's entry point.
 */
import t from 'tap';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { runFirma } from '../helpers/clients.js';
import { REPO } from '../helpers/sidecar.js';
import { loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/core/log.js';
import { createPipeline, snapshotOf } from '../../src/pipeline/setup.js';
import { decide } from '../../src/pipeline/decide.js';
import type { DecisionSnapshot } from '../../src/pipeline/snapshot.js';

const dir = mkdtempSync(join(tmpdir(), 'firma-mcp-example-'));
mkdirSync(join(dir, 'policies'));
copyFileSync(join(REPO, 'policies', 'default.cedar'), join(dir, 'policies', 'default.cedar'));
copyFileSync(join(REPO, 'docs', 'mcp-github.example.cedar'), join(dir, 'policies', 'mcp-github.cedar'));
writeFileSync(join(dir, 'firma.toml'), `[sidecar.policy]
dir = "policies"
[sidecar.capabilities]
required = false

${readFileSync(join(REPO, 'docs', 'mcp-github.example.toml'), 'utf8')}`);

t.test('firma check accepts the example config and policy', async (t) => {
  const r = await runFirma(['check'], dir);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /firma\.toml: ok — .*4 policies/, 'the example policy is loaded beside the three defaults');
});

let seq = 0;
/** One tools/call POSTed to the example's endpoint by `agentId`, decided by the pipeline. */
async function call(snapshot: DecisionSnapshot, agentId: string, tool: string, args: Record<string, unknown>): Promise<string> {
  const body = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: ++seq, method: 'tools/call', params: { name: tool, arguments: args } }));
  const req = Object.assign(Readable.from([body]), {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
  }) as unknown as IncomingMessage;
  const d = await decide(snapshot, {
    requestId: `req-${seq}`,
    kind: 'request',
    identity: { agentId, token: null, source: 'proxy-authorization' },
    method: 'POST',
    target: { scheme: 'https', host: 'api.githubcopilot.com', kind: 'dns', port: 443 },
    pathAndQuery: '/mcp/x/issues',
  }, req, new PassThrough(), createLogger('silent'));
  const v = d.verdict;
  return `${v.verdict} ${v.envelope.actionClass ?? '-'}${v.verdict === 'deny' ? ` ${v.reason}` : ''}`;
}

t.test('the example policy lets only triage create issues, only in firma', async (t) => {
  const config = loadConfig(join(dir, 'firma.toml'), dir);
  const setup = createPipeline(config, createLogger('silent'));
  t.teardown(() => setup.close());
  const snapshot = snapshotOf(config, setup, 1);

  const repo = { owner: 'acme', repo: 'firma', title: 'a bug' };
  t.equal(await call(snapshot, 'triage', 'create_issue', repo), 'allow mcp.github.create_issue', 'triage in firma: allowed');
  t.equal(await call(snapshot, 'triage', 'create_issue', { ...repo, repo: 'other' }), 'deny mcp.github.create_issue policy_deny', 'triage elsewhere: denied');
  t.equal(await call(snapshot, 'triage', 'create_issue', { owner: 'acme' }), 'deny mcp.github.create_issue policy_deny', 'no repo argument: denied');
  t.equal(await call(snapshot, 'coder', 'create_issue', repo), 'deny mcp.github.create_issue policy_deny', 'another agent: denied');
  t.equal(await call(snapshot, 'coder', 'get_issue', repo), 'allow mcp.github.get_issue', 'reads stay open to every agent');
  t.equal(await call(snapshot, 'coder', 'update_issue', repo), 'allow mcp.github.update_issue', 'other writes: the server risk (medium), allowed');
  t.equal(await call(snapshot, 'triage', 'delete_issue', repo), 'deny mcp.github.delete_issue policy_deny', 'deletes are critical: denied');
});
