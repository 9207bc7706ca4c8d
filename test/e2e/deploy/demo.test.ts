/**
 * The demo, for real: upstream.mjs, a sidecar on deploy/demo/firma.toml, agent.mjs — allowed, denied and
 * held calls.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { parse as parseToml, stringify as stringifyToml } from 'smol-toml';
import { parseConfigText } from '../../../src/config/index.js';
import { createLogger } from '../../../src/core/log.js';
import { Sidecar } from '../../../src/sidecar.js';
import type { LookupFunction } from '../../../src/connector/ssrf/resolve.js';
import { readText, repoPath } from '../../helpers/deploy.js';

t.test('demo: agent.mjs through a sidecar on the demo firma.toml gets allowed, denied and held calls', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firma-demo-'));
  // Upstream, on an ephemeral loopback port.
  const upstream = spawn(process.execPath, [repoPath('deploy', 'demo', 'upstream.mjs')], {
    env: { ...process.env, DEMO_UPSTREAM_HOST: '127.0.0.1', DEMO_UPSTREAM_PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    upstream.kill('SIGTERM');
  });
  const upstreamLines: string[] = [];
  const upstreamPort = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('demo upstream did not start')), 15_000);
    createInterface({ input: upstream.stdout! }).on('line', (l) => {
      upstreamLines.push(l);
      const m = /^listening on .*:(\d+)$/.exec(l);
      if (m !== null) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });

  // The demo config with only what cannot be the same here changed: loopback ephemeral listeners,
  // temporary writable paths, loopback allowed past the SSRF guard (compose uses a private subnet), and a
  // shorter hold. Mapping rules and policies are the demo's own files.
  const demoToml = parseToml(readText('deploy', 'demo', 'firma.toml')) as Record<string, Record<string, unknown>>;
  const sidecarT = demoToml.sidecar as Record<string, Record<string, unknown>>;
  sidecarT.interceptor!.listen = '127.0.0.1:0';
  (sidecarT.interceptor!.mitm as Record<string, unknown>).ca_dir = join(dir, 'certs');
  sidecarT.admin!.listen = '127.0.0.1:0';
  sidecarT.mapping!.rules_paths = [repoPath('deploy', 'demo', 'mappings', '*.toml')];
  sidecarT.policy!.dir = repoPath('deploy', 'demo', 'policies');
  sidecarT.connector!.allow_private = ['127.0.0.1/32'];
  demoToml.audit!.path = join(dir, 'audit', 'audit.jsonl');
  demoToml.audit!.key_dir = join(dir, 'keys');
  demoToml.audit!.stdout = false;
  demoToml.approvals!.timeout_ms = 30_000;
  const file = join(dir, 'firma.toml');
  const text = stringifyToml(demoToml);
  writeFileSync(file, text);
  const config = parseConfigText(text, file, dir);
  // "upstream" (the compose service name the mapping rules use) is this loopback upstream here.
  const lookup: LookupFunction = (hostname, _options, cb) => {
    if (hostname === 'upstream') cb(null, [{ address: '127.0.0.1', family: 4 }]);
    else cb(Object.assign(new Error(`ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), []);
  };
  const adminToken = 'demo-test-admin-token';
  process.env[config.sidecar.admin.token_env] = adminToken;
  const logs: string[] = [];
  const log = createLogger('info', {
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        logs.push(chunk.toString('utf8'));
        cb();
      },
    }),
  });
  const sidecar = await Sidecar.start({ config, log, lookup });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await sidecar.stop();
  };
  t.teardown(stop);
  const adminUrl = `http://127.0.0.1:${sidecar.adminAddress.port}`;

  // The agent, as compose runs it, with the addresses of this test.
  const agent = spawn(process.execPath, [repoPath('deploy', 'demo', 'agent.mjs')], {
    env: {
      ...process.env,
      HTTP_PROXY: `http://127.0.0.1:${sidecar.proxyAddress.port}`,
      DEMO_UPSTREAM_URL: `http://upstream:${upstreamPort}`,
      FIRMA_ADMIN_URL: adminUrl,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const agentOut: string[] = [];
  agent.stdout!.on('data', (c: Buffer) => agentOut.push(c.toString()));
  agent.stderr!.on('data', (c: Buffer) => agentOut.push(c.toString()));
  const exited = new Promise<number | null>((r) => agent.on('exit', (code) => r(code)));

  // Act as the approver while the agent runs: approve whatever is held (the refund).
  let approved = 0;
  let done = false;
  void exited.then(() => {
    done = true;
  });
  for (let i = 0; i < 600 && !done; i++) {
    const res = await fetch(`${adminUrl}/approvals`, { headers: { authorization: `Bearer ${adminToken}` } }).catch(() => null);
    if (res !== null && res.ok) {
      const body = (await res.json()) as { pending?: Array<{ id?: string; approval_id?: string }> };
      for (const p of body.pending ?? []) {
        const id = p.id ?? p.approval_id;
        if (id === undefined) continue;
        const a = await fetch(`${adminUrl}/approvals/${encodeURIComponent(id)}/approve`, {
          method: 'POST',
          headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
          body: '{}',
        });
        if (a.ok) approved++;
      }
    } else if (res !== null) await res.arrayBuffer();
    await new Promise((r) => setTimeout(r, 100));
  }
  const code = await exited;
  const out = agentOut.join('');
  t.equal(code, 0, `agent.mjs exits 0 (every call as expected):\n${out}`);
  t.match(out, /as expected {2}GET \/tickets\/42 +→ 200 from the upstream/, 'allowed: the upstream answered');
  t.match(out, /as expected {2}DELETE \/tickets\/42 +→ 403 deny \(stage policy, reason policy_deny\)/, 'denied by the Cedar forbid');
  t.match(out, /as expected {2}GET \/admin\/export +→ 403 deny \(stage \w+, reason unclassified\)/, 'denied: no mapping rule');
  t.equal(approved, 1, 'the refund was held and approved once through the admin API');
  t.match(out, /POST \/tickets\/42\/refund +→ 200 from the upstream/, 'held, approved, then sent');

  // What reached the upstream: the read, the refund only if approved, never the delete or the unmapped call.
  await new Promise((r) => setTimeout(r, 50));
  const received = upstreamLines.filter((l) => l.startsWith('upstream received'));
  t.ok(received.includes('upstream received GET /tickets/42'), 'upstream saw the allowed read');
  t.notOk(received.some((l) => l.includes('DELETE') || l.includes('/admin')), `denied calls never reached it (${received.join('; ')})`);
  t.ok(received.some((l) => l.includes('/refund')), 'the approved refund reached it');

  // The audit log recorded the decisions.
  await stop();
  const events = readFileSync(config.audit.path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; decision?: string; reason?: string; path?: string });
  const decisions = events.filter((e) => e.type === 'decision').map((e) => `${e.decision}:${e.reason}:${e.path}`);
  t.ok(decisions.includes('allow:allowed:/tickets/42'), `audit: allow (${decisions.join(', ')})`);
  t.ok(decisions.includes('deny:policy_deny:/tickets/42'), 'audit: policy deny');
  t.ok(decisions.includes('deny:unclassified:/admin/export'), 'audit: unclassified deny');
  t.ok(decisions.includes('require_approval:approval_required:/tickets/42/refund'), 'audit: the refund was held');
  t.ok(decisions.includes('allow:approved:/tickets/42/refund'), 'audit: then allowed on approval');
});
