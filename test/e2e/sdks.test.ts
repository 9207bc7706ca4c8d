/**
 * The official `openai` and `@anthropic-ai/sdk` packages through the sidecar, in a Node process set up
 * the way the README says (HTTPS_PROXY, NODE_EXTRA_CA_CERTS, undici's EnvHttpProxyAgent as the SDK's
 * dispatcher):
 *   - an allowed call reaches the upstream with the injected key and without the SDK's placeholder keys;
 *   - a denial is an error the SDK can show: `e.error` carries the sidecar's message, type and code;
 *   - without the dispatcher, Node's fetch ignores HTTPS_PROXY and goes straight to the host (the bypass
 *     the README warns of).
 */
import t from 'tap';
import { startTestSidecar } from '../helpers/sidecar.js';
import { runAgentScript } from '../helpers/sdk-agent.js';
import { fixture } from '../helpers/fixture.js';
import { useUpstream } from '../helpers/upstream.js';
import { upstreamPki } from '../helpers/pki.js';

const OPENAI_KEY = 'sk-openai-real-9d2c41';
const ANTHROPIC_KEY = 'sk-ant-real-77b0e3';
process.env['FIRMA_SDK_OPENAI_KEY'] = OPENAI_KEY;
process.env['FIRMA_SDK_ANTHROPIC_KEY'] = ANTHROPIC_KEY;

const openaiUp = useUpstream(t, { tls: true });
const anthropicUp = useUpstream(t, { tls: true });
const RULES = `
[[rules]]
host = "127.0.0.1"
path = "/v1/forbidden/**"
action_class = "test.forbidden"
risk = "critical"

[[rules]]
host = "*"
action_class = "test.call"
risk = "low"
`;
// Started after the upstreams (hooks run in order), so the credential entries can name their ports.
const sc = fixture(t, () => startTestSidecar(`
[[credentials]]
host = "127.0.0.1:${openaiUp.port}"
header = "Authorization"
prefix = "Bearer "
mode = "basic"
value_from_env = "FIRMA_SDK_OPENAI_KEY"

[[credentials]]
host = "127.0.0.1:${anthropicUp.port}"
header = "x-api-key"
mode = "basic"
value_from_env = "FIRMA_SDK_ANTHROPIC_KEY"
`, { rules: RULES }), (s) => s.stop());

/**
 * Run an ES module in a fresh Node process from the repository (so `openai`, `@anthropic-ai/sdk` and
 * `undici` resolve), with the environment an agent container would have. It prints one JSON object.
 */
const agentScript = runAgentScript;

/** The setup the README gives for Node agents: the SDK's fetch goes through EnvHttpProxyAgent. */
const SETUP = `
import { EnvHttpProxyAgent, fetch as undiciFetch } from 'undici';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
const dispatcher = new EnvHttpProxyAgent();
const viaSidecar = { fetch: undiciFetch, fetchOptions: { dispatcher } };
const err = (e) => ({ status: e.status, message: e.message, error: e.error ?? null, type: e.type ?? null, code: e.code ?? null });
`;

t.test('openai and anthropic SDKs through HTTPS_PROXY: the key is injected, placeholders removed', async (t) => {
  const r = await agentScript(`${SETUP}
const openai = new OpenAI({ apiKey: 'sk-placeholder', baseURL: 'https://127.0.0.1:${openaiUp.port}', maxRetries: 0, ...viaSidecar });
const anthropic = new Anthropic({ apiKey: 'placeholder', defaultHeaders: { Authorization: 'Bearer placeholder-too' }, baseURL: 'https://127.0.0.1:${anthropicUp.port}', maxRetries: 0, ...viaSidecar });
// The echo upstream answers with the request it received.
const o = await openai.post('/echo', { body: { model: 'm', messages: [] } });
const a = await anthropic.post('/echo', { body: { model: 'm', max_tokens: 1, messages: [] } });
console.log(JSON.stringify({ openai: o.headers, anthropic: a.headers }));
`, { HTTPS_PROXY: sc.proxyUrl, NODE_EXTRA_CA_CERTS: sc.caPath });
  t.equal(r.code, 0, r.stderr);
  const o = r.out['openai'] as Record<string, string>;
  const a = r.out['anthropic'] as Record<string, string>;
  t.equal(o['authorization'], `Bearer ${OPENAI_KEY}`, 'openai: the real key, injected by the sidecar');
  t.equal(a['x-api-key'], ANTHROPIC_KEY, 'anthropic: the real key in x-api-key');
  t.equal(a['authorization'], undefined, 'anthropic: the SDK’s own Authorization placeholder does not go upstream');
  t.notOk(JSON.stringify(r.out).includes('placeholder'), 'no placeholder reaches an upstream');
});

t.test('a denial is an error both SDKs show: message, type and code in e.error', async (t) => {
  const r = await agentScript(`${SETUP}
const openai = new OpenAI({ apiKey: 'sk-placeholder', baseURL: 'https://127.0.0.1:${openaiUp.port}', maxRetries: 0, ...viaSidecar });
const anthropic = new Anthropic({ apiKey: 'placeholder', baseURL: 'https://127.0.0.1:${openaiUp.port}', maxRetries: 0, ...viaSidecar });
const out = {};
try { await openai.post('/v1/forbidden/x', { body: {} }); } catch (e) { out.openai = { name: e.constructor.name, ...err(e) }; }
try { await anthropic.post('/v1/forbidden/x', { body: {} }); } catch (e) { out.anthropic = { name: e.constructor.name, ...err(e) }; }
console.log(JSON.stringify(out));
`, { HTTPS_PROXY: sc.proxyUrl, NODE_EXTRA_CA_CERTS: sc.caPath });
  t.equal(r.code, 0, r.stderr);
  const o = r.out['openai'] as { name: string; status: number; message: string; error: { message: string; type: string; code: string }; code: string };
  t.equal(o.name, 'PermissionDeniedError');
  t.equal(o.status, 403);
  t.match(o.message, /^403 firma sidecar refused this request \(policy: policy_deny\): denied by policy/, 'the SDK’s message says who refused and why');
  t.same({ type: o.error.type, code: o.error.code }, { type: 'permission_error', code: 'policy_deny' });
  t.equal(o.code, 'policy_deny', 'e.code');
  const a = r.out['anthropic'] as { name: string; status: number; message: string; type: string; error: { error: { message: string; type: string } } };
  t.equal(a.name, 'PermissionDeniedError');
  t.equal(a.type, 'permission_error', 'e.type');
  t.match(a.error.error.message, /^firma sidecar refused this request \(policy: policy_deny\)/, 'e.error.error.message');
  t.match(a.message, /^403 /);
});

t.test('without the dispatcher Node’s fetch ignores HTTPS_PROXY: the SDK goes straight to the host', async (t) => {
  const before = sc.logs.length;
  const r = await agentScript(`
import OpenAI from 'openai';
const openai = new OpenAI({ apiKey: 'sk-placeholder', baseURL: 'https://127.0.0.1:${openaiUp.port}', maxRetries: 0 });
const o = await openai.post('/echo', { body: {} });
console.log(JSON.stringify({ headers: o.headers }));
`, { HTTPS_PROXY: sc.proxyUrl, NODE_EXTRA_CA_CERTS: upstreamPki().caPath });
  t.equal(r.code, 0, r.stderr);
  t.equal((r.out['headers'] as Record<string, string>)['authorization'], 'Bearer sk-placeholder', 'the upstream saw the agent’s own request');
  t.equal(sc.logs.slice(before).filter((l) => l.includes('/echo')).length, 0, 'the sidecar saw nothing');
});
