import t from 'tap';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfigText, type FirmaConfig } from '../../../src/config/index.js';
import { CredentialError, CredentialInjector, createCredentialInjector } from '../../../src/connector/credentials.js';
import type { Target } from '../../../src/core/envelope.js';
import { startFakeVault, type FakeVault } from '../../helpers/vault-server.js';

const rand = (): string => randomBytes(18).toString('base64url');
/** A fresh env var name per run, so tests never collide with a real variable. */
const envName = (): string => `FIRMA_TEST_${randomBytes(6).toString('hex').toUpperCase()}`;

function config(toml: string): FirmaConfig {
  const dir = tmpdir();
  return parseConfigText(toml, join(dir, 'firma.toml'), dir);
}

function target(scheme: 'http' | 'https', host: string, port: number): Target {
  return { scheme, host, kind: host.includes(':') ? 'ipv6' : /^[0-9.]+$/.test(host) ? 'ipv4' : 'dns', port };
}

/** A subtest's `t` (tap exports no short name for it). */
type Asserts = Parameters<Parameters<typeof t.test>[0]>[0];

/** The error is a CredentialError with the stable code, and quotes none of `secrets`. */
async function rejectsCredential(t: Asserts, p: Promise<unknown>, secrets: readonly string[]): Promise<CredentialError> {
  try {
    await p;
  } catch (err: unknown) {
    t.ok(err instanceof CredentialError, 'a CredentialError');
    const e = err as CredentialError;
    t.equal(e.code, 'FIRMA_CREDENTIAL_UNAVAILABLE');
    const text = `${e.message}\n${e.stack ?? ''}\n${JSON.stringify(e)}`;
    for (const s of secrets) t.notOk(text.includes(s), 'error does not contain a secret');
    return e;
  }
  t.fail('expected a CredentialError');
  throw new Error('unreachable');
}

let vault: FakeVault;
t.before(async () => {
  vault = await startFakeVault();
});
t.teardown(() => vault.close());

t.test('matching: exact host, port defaults by scheme, https-only unless allow_plaintext', async (t) => {
  const a = envName();
  const b = envName();
  const c = envName();
  const d = envName();
  process.env[a] = rand();
  process.env[b] = rand();
  process.env[c] = rand();
  process.env[d] = rand();
  t.teardown(() => {
    for (const n of [a, b, c, d]) delete process.env[n];
  });
  const cfg = config(`
[[credentials]]
host = "API.Example.com"
mode = "basic"
value_from_env = "${a}"

[[credentials]]
host = "api.example.com:8443"
mode = "basic"
value_from_env = "${b}"

[[credentials]]
host = "plain.example.com"
mode = "basic"
value_from_env = "${c}"
allow_plaintext = true

[[credentials]]
host = "[::1]:9000"
mode = "basic"
header = "X-Api-Key"
value_from_env = "${d}"
`);
  const { injector, close } = createCredentialInjector(cfg);
  t.teardown(close);
  if (injector === null) throw new Error('expected an injector');
  const [eA, eB, eC, eD] = cfg.credentials;

  t.equal(injector.match(target('https', 'api.example.com', 443)), eA, 'no port in config = 443 for https');
  t.same(injector.explain(target('https', 'api.example.com', 8443)), { entry: eB, reason: 'matched' }, 'the entry with that port');
  t.same(injector.explain(target('https', 'api.example.com', 444)), { entry: null, reason: 'port_mismatch' });
  t.same(injector.explain(target('http', 'api.example.com', 80)), { entry: null, reason: 'plaintext_refused' }, 'https-only never over http');
  t.same(injector.explain(target('http', 'api.example.com', 8443)), { entry: null, reason: 'plaintext_refused' }, 'not even on its explicit port');
  t.same(injector.explain(target('https', 'evil-api.example.com', 443)), { entry: null, reason: 'no_entry' });
  t.same(injector.explain(target('https', 'example.com', 443)), { entry: null, reason: 'no_entry' }, 'no suffix matching');
  t.same(injector.explain(target('https', 'sub.api.example.com', 443)), { entry: null, reason: 'no_entry' }, 'no subdomain matching');

  t.equal(injector.match(target('http', 'plain.example.com', 80)), eC, 'allow_plaintext: http on 80');
  t.equal(injector.match(target('https', 'plain.example.com', 443)), eC, 'and https on 443');
  t.equal(injector.match(target('http', 'plain.example.com', 443)), null, 'http on 443 is not the default http port');

  t.equal(injector.match(target('https', '::1', 9000)), eD, 'IPv6 literal with port');
  t.equal(injector.match(target('https', '::1', 443)), null);
  const resolved = await injector.resolve(eD as NonNullable<typeof eD>);
  t.equal(resolved.header, 'X-Api-Key');
});

t.test('matchAll: several headers for one host', async (t) => {
  const a = envName();
  const b = envName();
  process.env[a] = rand();
  process.env[b] = rand();
  t.teardown(() => {
    delete process.env[a];
    delete process.env[b];
  });
  const cfg = config(`
[[credentials]]
host = "multi.example.com"
mode = "basic"
value_from_env = "${a}"

[[credentials]]
host = "multi.example.com"
mode = "basic"
header = "X-Api-Key"
value_from_env = "${b}"
`);
  const injector = new CredentialInjector(cfg.credentials, null, process.env);
  t.same(injector.matchAll(target('https', 'multi.example.com', 443)), cfg.credentials);
  t.same(injector.matchAll(target('http', 'multi.example.com', 80)), []);
  t.equal(injector.match(target('https', 'multi.example.com', 443)), cfg.credentials[0]);
});

t.test('basic: prefix + value read once at construction; missing or unsafe values refused without echo', async (t) => {
  const name = envName();
  const value = rand();
  process.env[name] = value;
  t.teardown(() => delete process.env[name]);
  const cfg = config(`
[[credentials]]
host = "api.openai.com"
mode = "basic"
value_from_env = "${name}"
prefix = "Bearer "
`);
  const entry = cfg.credentials[0];
  if (entry === undefined) throw new Error('no entry');
  const env: NodeJS.ProcessEnv = { [name]: value };
  const injector = new CredentialInjector(cfg.credentials, null, env);
  t.same(await injector.resolve(entry), { header: 'Authorization', value: `Bearer ${value}`, removes: new Set(['authorization', 'x-api-key', 'api-key', 'x-goog-api-key']) }, 'the default removes the usual agent key headers');
  env[name] = rand();
  t.match(await injector.resolve(entry), { header: 'Authorization', value: `Bearer ${value}` }, 'a later env change is not seen (startup snapshot)');

  try {
    new CredentialInjector(cfg.credentials, null, {});
    t.fail('expected a CredentialError');
  } catch (err: unknown) {
    t.ok(err instanceof CredentialError);
    t.equal((err as CredentialError).code, 'FIRMA_CREDENTIAL_UNAVAILABLE');
    t.match((err as CredentialError).message, new RegExp(`api\\.openai\\.com.*env ${name}.*not set`));
    t.equal((err as CredentialError).source, 'env');
  }

  const smuggle = `${rand()}\r\nX-Evil: 1`;
  try {
    new CredentialInjector(cfg.credentials, null, { [name]: smuggle });
    t.fail('expected a CredentialError');
  } catch (err: unknown) {
    t.ok(err instanceof CredentialError);
    const text = `${(err as Error).message}\n${(err as Error).stack ?? ''}`;
    t.match(text, /control characters/);
    t.notOk(text.includes(smuggle.slice(0, 10)), 'the value is not echoed');
  }

  // An entry object the injector was not built with.
  await rejectsCredential(t, injector.resolve({ ...entry }), [value]);
});

t.test('vault: value from Vault via createCredentialInjector; typed, safe failures', async (t) => {
  const secret = rand();
  const token = vault.createToken();
  vault.setSecret('secret/data/stripe', { api_key: secret, bad: `x\ny` });
  const tokenEnv = envName();
  const cfg = config(`
[[credentials]]
host = "api.stripe.com"
mode = "vault"
secret_path = "secret/data/stripe#api_key"
prefix = "Bearer "

[[credentials]]
host = "api.stripe.com"
mode = "vault"
header = "X-Missing"
secret_path = "secret/data/nothing#api_key"

[[credentials]]
host = "bad.example.com"
mode = "vault"
secret_path = "secret/data/stripe#bad"

[vault]
address = "${vault.address}"
token_env = "${tokenEnv}"
timeout_ms = 500
`);
  const { injector, close } = createCredentialInjector(cfg, { env: { [tokenEnv]: token } });
  t.teardown(close);
  if (injector === null) throw new Error('expected an injector');
  const [stripe, missing, bad] = cfg.credentials as [FirmaConfig['credentials'][number], FirmaConfig['credentials'][number], FirmaConfig['credentials'][number]];
  t.equal(injector.match(target('https', 'api.stripe.com', 443)), stripe);
  t.match(await injector.resolve(stripe), { header: 'Authorization', value: `Bearer ${secret}` });

  const notFound = await rejectsCredential(t, injector.resolve(missing), [secret, token]);
  t.equal(notFound.sourceCode, 'FIRMA_VAULT_NOT_FOUND');
  t.equal(notFound.source, 'vault');
  t.match(notFound.message, /api\.stripe\.com \(vault secret\/data\/nothing#api_key\)/);

  const ctl = await rejectsCredential(t, injector.resolve(bad), [secret, token, 'x\ny']);
  t.equal(ctl.sourceCode, 'FIRMA_VAULT_FIELD_INVALID');
});

t.test('vault down → CredentialError within timeout_ms, no token or secret in message or stack', async (t) => {
  const local = await startFakeVault();
  const secret = rand();
  const token = local.createToken();
  local.setSecret('secret/data/svc', { key: secret });
  const tokenEnv = envName();
  const cfg = config(`
[[credentials]]
host = "svc.example.com"
mode = "vault"
secret_path = "secret/data/svc#key"

[vault]
address = "${local.address}"
token_env = "${tokenEnv}"
timeout_ms = 400
cache_ttl_ms = 0
`);
  const { injector, close } = createCredentialInjector(cfg, { env: { [tokenEnv]: token } });
  t.teardown(close);
  const entry = cfg.credentials[0];
  if (injector === null || entry === undefined) throw new Error('expected an injector');
  t.match(await injector.resolve(entry), { header: 'Authorization', value: secret });

  await local.stop();
  let start = performance.now();
  const down = await rejectsCredential(t, injector.resolve(entry), [secret, token]);
  t.equal(down.sourceCode, 'FIRMA_VAULT_UNREACHABLE');
  t.ok(performance.now() - start < 400 + 300, 'fails fast when refused');

  await local.start();
  local.setHang(true);
  start = performance.now();
  const hung = await rejectsCredential(t, injector.resolve(entry), [secret, token]);
  t.equal(hung.sourceCode, 'FIRMA_VAULT_UNREACHABLE');
  t.ok(performance.now() - start < 400 + 600, 'bounded by timeout_ms when Vault hangs');
  t.match(hung.message, /svc\.example\.com.*no answer within 400 ms/);
  await local.close();
});

t.test('createCredentialInjector: null without credentials; no Vault client or traffic for basic-only', async (t) => {
  const none = createCredentialInjector(config(''));
  t.equal(none.injector, null);
  await none.close();

  const name = envName();
  const value = rand();
  process.env[name] = value;
  t.teardown(() => delete process.env[name]);
  const cfg = config(`
[[credentials]]
host = "api.openai.com"
mode = "basic"
value_from_env = "${name}"

[vault]
address = "${vault.address}"
`);
  const before = vault.requests.length;
  const { injector, close } = createCredentialInjector(cfg);
  const entry = cfg.credentials[0];
  if (injector === null || entry === undefined) throw new Error('expected an injector');
  t.equal((await injector.resolve(entry)).value, value);
  await close();
  t.equal(vault.requests.length, before, 'Vault never contacted');
});
