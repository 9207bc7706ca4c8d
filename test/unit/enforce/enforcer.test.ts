import t from 'tap';
import { normalize } from '../../../src/normalize/normalize.js';
import { isIssuedAllowed, type Allowed } from '../../../src/core/decision.js';
import { shippedStages, rawRequest, AGENT } from '../../helpers/stages.js';

// The enforce stage's entry without sockets: an envelope in, a verdict out (stage 1 off here; its own
// tests are capability.test.ts, and the whole path is in determinism.test.ts).

t.test('stage 2 on the shipped policies: low allows, high holds for approval, critical denies', async (t) => {
  const { setup, snapshot } = shippedStages();
  t.teardown(() => setup.close());
  const decide = (method: string, host: string, path: string) => snapshot.enforcer.decide(normalize(rawRequest(method, host, path), snapshot.mapping), AGENT);
  t.match(await decide('POST', 'api.openai.com', '/v1/chat/completions'), { verdict: 'allow', passthrough: false, wouldDeny: null, policyIds: ['default.allow-low-medium'] });
  t.match(await decide('POST', 'api.stripe.com', '/v1/refunds'), { verdict: 'hold', policyIds: ['default.approve-high'] });
  t.match(await decide('DELETE', 'api.github.com', '/repos/o/r'), { verdict: 'deny', stage: 'policy', reason: 'policy_deny', status: 403 });
  t.match(await decide('GET', 'unknown.example', '/'), { verdict: 'deny', stage: 'mapping', reason: 'unclassified' }, 'default_protected denies unmapped traffic');
});

t.test('a permit is not yet an Allowed: only the pipeline issues what the connector takes', async (t) => {
  const { setup, snapshot } = shippedStages();
  t.teardown(() => setup.close());
  const v = await snapshot.enforcer.decide(normalize(rawRequest('POST', 'api.openai.com', '/v1/chat/completions'), snapshot.mapping), AGENT);
  t.equal(v.verdict, 'allow');
  t.notOk(isIssuedAllowed(v as Allowed), 'the connector would refuse it');
});

t.test('monitor mode: a deny becomes a permit that says what enforce mode would have refused', async (t) => {
  const { setup, snapshot } = shippedStages({ sidecar: 'mode = "monitor"' });
  t.teardown(() => setup.close());
  const v = await snapshot.enforcer.decide(normalize(rawRequest('DELETE', 'api.github.com', '/repos/o/r'), snapshot.mapping), AGENT);
  t.match(v, { verdict: 'allow', wouldDeny: { stage: 'policy', reason: 'policy_deny' } });
  const held = await snapshot.enforcer.decide(normalize(rawRequest('POST', 'api.stripe.com', '/v1/refunds'), snapshot.mapping), AGENT);
  t.match(held, { verdict: 'allow', wouldDeny: { stage: 'approval', reason: 'approval_required' } }, 'monitor never holds');
});

t.test('unmapped traffic passes through when default_protected = false, and is marked so', async (t) => {
  const { setup, snapshot } = shippedStages({ mapping: 'default_protected = false' });
  t.teardown(() => setup.close());
  const v = await snapshot.enforcer.decide(normalize(rawRequest('GET', 'unknown.example', '/'), snapshot.mapping), AGENT);
  t.match(v, { verdict: 'allow', passthrough: true, policyIds: [] });
});

t.test('a tunnel to a host no rule names needs no token; one to a mapped host does when stage 1 is on', async (t) => {
  const { setup, snapshot } = shippedStages({ mapping: 'default_protected = false', capabilities: 'required = true' });
  t.teardown(() => setup.close());
  t.notOk(snapshot.enforcer.tunnelNeedsToken('unknown.example'));
  t.ok(snapshot.enforcer.tunnelNeedsToken('api.openai.com'));
});
