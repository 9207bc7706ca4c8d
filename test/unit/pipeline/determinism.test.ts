import t from 'tap';
import { normalize } from '../../../src/normalize/normalize.js';
import { issueToken } from '../../../src/enforce/capability/tokens.js';
import { shippedStages } from '../../helpers/stages.js';
import type { Identity, RawRequest } from '../../../src/core/envelope.js';

// The whole decision half (mapping → stage 1 → stage 2), not one stage: the same request under the
// same rules, policies and counts must get the same decision every time.
t.test('determinism: the shipped packs and policies, the same requests 1,000 times → the same decisions', async (t) => {
  const { setup, config } = shippedStages({ capabilities: 'required = true' });
  t.teardown(() => setup.close());
  const keys = { signingKeyFile: config.sidecar.capabilities.signing_key_file, publicKeyFile: config.sidecar.capabilities.public_key_file };
  const openai = await issueToken({ ...keys, agent: 'agent-a', actions: ['llm.*'], scope: 'api.openai.com', ttlMs: 3_600_000 });
  const wide = await issueToken({ ...keys, agent: 'agent-a', actions: ['*'], scope: '*.stripe.com', ttlMs: 3_600_000 });
  const github = await issueToken({ ...keys, agent: 'agent-a', actions: ['*'], scope: 'api.github.com', ttlMs: 3_600_000 });
  const id = (token: string | null, agentId = 'agent-a'): Identity => ({ agentId, token, source: token === null ? 'default' : 'proxy-authorization' });
  const req = (method: string, host: string, path: string, identity: Identity): RawRequest => ({
    requestId: 'fixed',
    kind: 'request',
    identity,
    method,
    target: { scheme: 'https', host, kind: 'dns', port: 443 },
    pathAndQuery: path,
  });
  const cases: Array<[string, RawRequest, string]> = [
    ['llm.chat (low)', req('POST', 'api.openai.com', '/v1/chat/completions', id(openai.token)), 'allow'],
    ['stripe refund (high)', req('POST', 'api.stripe.com', '/v1/refunds', id(wide.token)), 'hold'],
    ['github repo deletion (critical)', req('DELETE', 'api.github.com', '/repos/o/r', id(github.token)), 'deny'],
    ['unclassified', req('GET', 'unknown.example', '/', id(openai.token)), 'deny'],
    ['out of scope', req('POST', 'api.stripe.com', '/v1/refunds', id(openai.token)), 'deny'],
    ['wrong agent', req('POST', 'api.openai.com', '/v1/chat/completions', id(openai.token, 'agent-b')), 'deny'],
    ['no token', req('POST', 'api.openai.com', '/v1/chat/completions', id(null)), 'deny'],
    ['path trick', req('DELETE', 'api.github.com', '/repos/o/x/../r', id(github.token)), 'deny'],
  ];
  for (const [name, raw, verdict] of cases) {
    const decide = async (): Promise<string> => {
      const d = await setup.enforcer.decide(normalize(raw, setup.rules.mapping), raw.identity);
      return JSON.stringify(d);
    };
    const first = await decide();
    t.match(JSON.parse(first), { verdict }, `${name}: ${verdict}`);
    let same = 0;
    for (let i = 0; i < 1000; i++) if ((await decide()) === first) same++;
    t.equal(same, 1000, `${name}: 1,000 times the same decision`);
  }
});
