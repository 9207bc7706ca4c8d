/** Which hosts are LLM APIs (docs/llm.md "Hosts"): built-in, configured, overridden, by exact host and port. */
import t from 'tap';
import { parseConfigText } from '../../../src/config/index.js';
import type { Target } from '../../../src/core/envelope.js';
import { LlmHosts } from '../../../src/normalize/llm-hosts.js';
import { normalize } from '../../../src/normalize/normalize.js';
import { rawRequest, shippedStages } from '../../helpers/stages.js';

const target = (host: string, port = 443, scheme: Target['scheme'] = 'https'): Target => ({ scheme, host, kind: 'dns', port });

t.test('built-in hosts on the scheme default port only', async (t) => {
  const h = LlmHosts.BUILT_IN;
  t.same(h.formatFor(target('api.openai.com')), { host: 'api.openai.com', format: 'openai' });
  t.same(h.formatFor(target('api.anthropic.com')), { host: 'api.anthropic.com', format: 'anthropic' });
  t.equal(h.formatFor(target('api.openai.com', 8443)), null, 'another port is another endpoint');
  t.same(h.formatFor(target('api.openai.com', 80, 'http')), { host: 'api.openai.com', format: 'openai' }, 'http on 80');
  t.equal(h.formatFor(target('openai.com')), null, 'exact host, no suffix match');
  t.equal(LlmHosts.fromConfig(parseConfigText('', 'firma.toml', '/etc')), LlmHosts.BUILT_IN, 'no [[llm.hosts]]: the shared built-in table');
});

t.test('configured hosts, with a port, and an entry overriding a built-in host', async (t) => {
  const h = LlmHosts.fromConfig(parseConfigText(`
[[llm.hosts]]
host = "llm.internal:8443"
format = "openai"

[[llm.hosts]]
host = "api.openai.com"
format = "anthropic"
`, 'firma.toml', '/etc'));
  t.same(h.formatFor(target('llm.internal', 8443)), { host: 'llm.internal:8443', format: 'openai' });
  t.equal(h.formatFor(target('llm.internal', 443)), null);
  t.same(h.formatFor(target('api.openai.com')), { host: 'api.openai.com', format: 'anthropic' }, 'the entry wins over the built-in');
  t.same(h.formatFor(target('api.anthropic.com')), { host: 'api.anthropic.com', format: 'anthropic' }, 'the other built-in stays');
  t.same(h.hosts, ['api.anthropic.com', 'api.openai.com', 'llm.internal:8443']);
});

t.test('normalize sets envelope.llm for requests to an LLM host, null elsewhere and on blind tunnels', async (t) => {
  const { snapshot } = shippedStages();
  t.same(normalize(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), snapshot.mapping, snapshot.llm).llm, { host: 'api.openai.com', format: 'openai' });
  t.same(normalize(rawRequest('GET', 'api.anthropic.com', '/nothing/mapped'), snapshot.mapping, snapshot.llm).llm, { host: 'api.anthropic.com', format: 'anthropic' }, 'unclassified too');
  t.equal(normalize(rawRequest('GET', 'api.github.com', '/user'), snapshot.mapping, snapshot.llm).llm, null);
  t.equal(normalize(rawRequest('CONNECT', 'api.openai.com', null, 'tunnel'), snapshot.mapping, snapshot.llm).llm, null);
});
