import t from 'tap';
import { normalize, unclassifiedEnvelope } from '../../../src/normalize/normalize.js';
import { shippedStages, rawRequest } from '../../helpers/stages.js';

// The normalize stage's entry, as the pipeline calls it: a RawRequest in, an Envelope out.
const { setup } = shippedStages();
t.teardown(() => setup.close());
const mapping = setup.rules.mapping;

t.test('a mapped request gets its action class, risk and rule', async (t) => {
  const e = normalize(rawRequest('POST', 'api.openai.com', '/v1/chat/completions?stream=true'), mapping);
  t.match(e, { kind: 'request', agentId: 'agent-a', method: 'POST', path: '/v1/chat/completions', query: 'stream=true', normalizedPath: '/v1/chat/completions', actionClass: 'llm.chat', risk: 'low' });
  t.match(e.ruleId, /openai\.toml:\d+/, 'the rule is named file:line');
  t.equal(e.body, null, 'no body values before the pipeline reads them');
});

t.test('rules see the normalised path; the envelope keeps the path as sent (what is forwarded)', async (t) => {
  const e = normalize(rawRequest('DELETE', 'api.github.com', '/repos/o/x/../r'), mapping);
  t.equal(e.path, '/repos/o/x/../r');
  t.equal(e.normalizedPath, '/repos/o/r');
  t.equal(e.actionClass, 'github.repo.delete');
  t.equal(e.risk, 'critical');
});

t.test('an unknown host stays unclassified; a tunnel is classified on CONNECT host with no path', async (t) => {
  const unknown = normalize(rawRequest('GET', 'unknown.example', '/'), mapping);
  t.match(unknown, { actionClass: null, risk: null, ruleId: null, bodyFields: [] });
  const tunnel = normalize(rawRequest('CONNECT', 'api.openai.com', null, 'tunnel'), mapping);
  t.match(tunnel, { kind: 'tunnel', path: null, query: null, normalizedPath: '/' });
});

t.test('`?` with nothing after it is kept apart from no `?`', async (t) => {
  t.equal(normalize(rawRequest('GET', 'unknown.example', '/a?'), mapping).query, '');
  t.equal(normalize(rawRequest('GET', 'unknown.example', '/a'), mapping).query, null);
});

t.test('the envelope of a request whose classification failed records the raw path', async (t) => {
  const e = unclassifiedEnvelope(rawRequest('GET', 'unknown.example', '/a/../b'), false);
  t.equal(e.normalizedPath, '/a/../b');
  t.equal(e.actionClass, null);
});
