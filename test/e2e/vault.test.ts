import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { VaultClient, type VaultConfig } from '../../src/connector/vault/client.js';
import { VaultError } from '../../src/connector/vault/errors.js';
import { startFakeVault, type FakeVault } from '../helpers/vault-server.js';

const rand = (): string => randomBytes(18).toString('base64url');

function cfg(address: string, over: Partial<VaultConfig> = {}): VaultConfig {
  return {
    address,
    auth: 'token',
    namespace: '',
    token_env: 'FIRMA_TEST_VAULT_TOKEN',
    approle_mount: 'approle',
    kubernetes_mount: 'kubernetes',
    role_id_env: undefined,
    role_id_file: undefined,
    secret_id_env: undefined,
    secret_id_file: undefined,
    kubernetes_role: '',
    kubernetes_jwt_file: '/nonexistent/jwt',
    cache_ttl_ms: 0,
    timeout_ms: 2000,
    ...over,
  };
}

/** A subtest's `t` (tap exports no short name for it). */
type Asserts = Parameters<Parameters<typeof t.test>[0]>[0];

/** Rejects with a VaultError of that code; and the error never quotes any of `secrets`. */
async function rejectsSafely(t: Asserts, p: Promise<unknown>, code: string, secrets: readonly string[]): Promise<VaultError> {
  try {
    await p;
  } catch (err: unknown) {
    t.ok(err instanceof VaultError, 'a VaultError');
    const e = err as VaultError;
    t.equal(e.code, code, e.message);
    const text = `${e.message}\n${e.stack ?? ''}\n${JSON.stringify(e)}`;
    for (const s of secrets) t.notOk(text.includes(s), `error does not contain a secret (${code})`);
    return e;
  }
  t.fail(`expected ${code}`);
  throw new Error('unreachable');
}

let vault: FakeVault;
const tmp = mkdtempSync(join(tmpdir(), 'firma-vault-'));
t.before(async () => {
  vault = await startFakeVault();
});
t.teardown(async () => {
  await vault.close();
  rmSync(tmp, { recursive: true, force: true });
});

t.test('token auth: reads a field, sends X-Vault-Token; typed errors for missing path, field, bad value', async (t) => {
  const value = rand();
  const token = vault.createToken({ ttl: 0 });
  vault.setSecret('secret/data/t1', { api_key: value, n: 42, empty: '' });
  vault.setSecret('secret/data/t1-deleted', { api_key: value });
  vault.deleteSecret('secret/data/t1-deleted');
  const client = new VaultClient(cfg(vault.address), { env: { FIRMA_TEST_VAULT_TOKEN: token } });
  t.teardown(() => client.close());

  t.equal(await client.readField({ path: 'secret/data/t1', field: 'api_key' }), value);
  const secrets = [value, token];
  const notFound = await rejectsSafely(t, client.readField({ path: 'secret/data/nope', field: 'api_key' }), 'FIRMA_VAULT_NOT_FOUND', secrets);
  t.match(notFound.message, /secret\/data\/nope/);
  t.equal(notFound.status, 404);
  await rejectsSafely(t, client.readField({ path: 'secret/data/t1-deleted', field: 'api_key' }), 'FIRMA_VAULT_NOT_FOUND', secrets);
  const missing = await rejectsSafely(t, client.readField({ path: 'secret/data/t1', field: 'other' }), 'FIRMA_VAULT_FIELD_MISSING', secrets);
  t.match(missing.message, /secret\/data\/t1.*"other"/);
  await rejectsSafely(t, client.readField({ path: 'secret/data/t1', field: 'n' }), 'FIRMA_VAULT_FIELD_INVALID', secrets);
  await rejectsSafely(t, client.readField({ path: 'secret/data/t1', field: 'empty' }), 'FIRMA_VAULT_FIELD_INVALID', secrets);
  // Object prototype names are not fields.
  await rejectsSafely(t, client.readField({ path: 'secret/data/t1', field: 'constructor' }), 'FIRMA_VAULT_FIELD_MISSING', secrets);
  t.equal(vault.count('lookup-self'), 1, 'token looked up once');
  t.ok(vault.requests.every((r) => r.hasToken && r.namespace === undefined), 'token on every call, no namespace header when namespace = ""');
});

t.test('namespace: X-Vault-Namespace is sent on every call, logins included', async (t) => {
  const nsVault = await startFakeVault({ namespace: 'team-a/prod' });
  t.teardown(() => nsVault.close());
  const value = rand();
  const roleId = rand();
  const secretId = rand();
  nsVault.setAppRole(roleId, [secretId]);
  nsVault.setSecret('kv/data/ns', { k: value });
  const env = { ROLE: roleId, SECRET: secretId };
  const client = new VaultClient(cfg(nsVault.address, { auth: 'approle', namespace: 'team-a/prod', role_id_env: 'ROLE', secret_id_env: 'SECRET' }), { env });
  t.teardown(() => client.close());
  t.equal(await client.readField({ path: 'kv/data/ns', field: 'k' }), value);
  t.ok(nsVault.requests.length >= 2);
  t.ok(nsVault.requests.every((r) => r.namespace === 'team-a/prod'), 'namespace header on login and read');

  // Same Vault, no namespace configured: the mount is not there.
  const wrong = new VaultClient(cfg(nsVault.address, { auth: 'approle', role_id_env: 'ROLE', secret_id_env: 'SECRET' }), { env });
  t.teardown(() => wrong.close());
  await rejectsSafely(t, wrong.readField({ path: 'kv/data/ns', field: 'k' }), 'FIRMA_VAULT_SERVER', [value, roleId, secretId]);
});

t.test('token auth: env read at each use (missing → FIRMA_VAULT_AUTH, rotation picked up), bad token rejected', async (t) => {
  const value = rand();
  vault.setSecret('secret/data/t2', { k: value });
  const env: NodeJS.ProcessEnv = {};
  const client = new VaultClient(cfg(vault.address), { env });
  t.teardown(() => client.close());
  const noEnv = await rejectsSafely(t, client.readField({ path: 'secret/data/t2', field: 'k' }), 'FIRMA_VAULT_AUTH', [value]);
  t.match(noEnv.message, /FIRMA_TEST_VAULT_TOKEN/);

  const bogus = `hvs.${rand()}`;
  env['FIRMA_TEST_VAULT_TOKEN'] = bogus;
  const bad = await rejectsSafely(t, client.readField({ path: 'secret/data/t2', field: 'k' }), 'FIRMA_VAULT_AUTH', [value, bogus]);
  t.equal(bad.status, 403);

  const first = vault.createToken();
  env['FIRMA_TEST_VAULT_TOKEN'] = first;
  t.equal(await client.readField({ path: 'secret/data/t2', field: 'k' }), value);
  vault.revokeToken(first);
  const second = vault.createToken();
  env['FIRMA_TEST_VAULT_TOKEN'] = second;
  t.equal(await client.readField({ path: 'secret/data/t2', field: 'k' }), value, 'the rotated token is used');

  // A token whose policy does not cover the path: an auth error naming the path, no retry loop.
  const narrow = vault.createToken({ readable: ['secret/data/other'] });
  env['FIRMA_TEST_VAULT_TOKEN'] = narrow;
  const before = vault.reads('secret/data/t2');
  const denied = await rejectsSafely(t, client.readField({ path: 'secret/data/t2', field: 'k' }), 'FIRMA_VAULT_AUTH', [value, narrow]);
  t.match(denied.message, /secret\/data\/t2.*HTTP 403.*permission denied/);
  t.equal(vault.reads('secret/data/t2') - before, 1, 'token auth cannot re-login: one read');
});

t.test('token auth: renew-self at ~2/3 of a 2 s TTL keeps the token alive; a non-renewable one runs out', async (t) => {
  const value = rand();
  vault.setSecret('secret/data/t3', { k: value });
  const renewsBefore = vault.count('renew-self');
  const token = vault.createToken({ ttl: 2, renewable: true });
  const client = new VaultClient(cfg(vault.address), { env: { FIRMA_TEST_VAULT_TOKEN: token } });
  t.teardown(() => client.close());
  t.equal(await client.readField({ path: 'secret/data/t3', field: 'k' }), value);
  // lookup-self reports whole seconds, truncated (a fresh 2 s token says 1): renewal at 2/3 of that.
  await sleep(400);
  t.equal(vault.count('renew-self') - renewsBefore, 0, 'not renewed too early');
  await sleep(2800);
  t.ok(vault.count('renew-self') - renewsBefore >= 2, `renewed before each expiry (${vault.count('renew-self') - renewsBefore})`);
  t.equal(await client.readField({ path: 'secret/data/t3', field: 'k' }), value, 'still valid 3.2 s after a 2 s TTL');
  await client.close();

  const short = vault.createToken({ ttl: 1, renewable: false });
  const client2 = new VaultClient(cfg(vault.address), { env: { FIRMA_TEST_VAULT_TOKEN: short } });
  t.teardown(() => client2.close());
  t.equal(await client2.readField({ path: 'secret/data/t3', field: 'k' }), value);
  const renews = vault.count('renew-self');
  await sleep(1300);
  const expired = await rejectsSafely(t, client2.readField({ path: 'secret/data/t3', field: 'k' }), 'FIRMA_VAULT_AUTH', [value, short]);
  t.match(expired.message, /TTL has run out/);
  t.equal(vault.count('renew-self'), renews, 'a non-renewable token is never renewed');
});

t.test('token auth: a renewal that fails while Vault is down is retried before expiry', async (t) => {
  const local = await startFakeVault();
  t.teardown(() => local.close());
  const value = rand();
  local.setSecret('secret/data/blip', { k: value });
  // 4 s TTL; lookup-self reports 3 (truncated): renewal due at ~2 s, retried at ~2.7 s.
  const token = local.createToken({ ttl: 4, renewable: true });
  const client = new VaultClient(cfg(local.address, { timeout_ms: 300 }), { env: { FIRMA_TEST_VAULT_TOKEN: token } });
  t.teardown(() => client.close());
  t.equal(await client.readField({ path: 'secret/data/blip', field: 'k' }), value);
  await sleep(1000);
  await local.stop();
  await sleep(1500);
  await local.start();
  t.equal(local.count('renew-self'), 0, 'the renewal attempt while down never reached Vault');
  await sleep(2000);
  t.ok(local.count('renew-self') >= 1, 'renewal retried once Vault was back');
  t.equal(await client.readField({ path: 'secret/data/blip', field: 'k' }), value, 'token still valid past its original 4 s TTL');
});

t.test('approle: login from env, re-login after revocation, renewal then re-login at max TTL', async (t) => {
  const value = rand();
  const roleId = rand();
  const secretId = rand();
  vault.setAppRole(roleId, [secretId], { ttl: 2, renewable: true, maxTtl: 3 });
  vault.setSecret('secret/data/a1', { k: value });
  const secrets = [value, roleId, secretId];
  const client = new VaultClient(cfg(vault.address, { auth: 'approle', role_id_env: 'R', secret_id_env: 'S' }), { env: { R: roleId, S: secretId } });
  t.teardown(() => client.close());

  const logins0 = vault.count('login-approle');
  t.equal(await client.readField({ path: 'secret/data/a1', field: 'k' }), value);
  t.equal(vault.count('login-approle') - logins0, 1);

  vault.revokeAll();
  t.equal(await client.readField({ path: 'secret/data/a1', field: 'k' }), value, 'a revoked token is replaced transparently');
  t.equal(vault.count('login-approle') - logins0, 2, 're-login happened');

  const renews0 = vault.count('renew-self');
  await sleep(4200);
  t.ok(vault.count('renew-self') - renews0 >= 1, 'renewed');
  t.ok(vault.count('login-approle') - logins0 >= 3, 're-logged in before max_ttl ran out');
  const reads0 = vault.reads('secret/data/a1');
  t.equal(await client.readField({ path: 'secret/data/a1', field: 'k' }), value);
  t.equal(vault.reads('secret/data/a1') - reads0, 1, 'the token in hand was valid: no 403 and retry');

  const bad = new VaultClient(cfg(vault.address, { auth: 'approle', role_id_env: 'R', secret_id_env: 'S' }), { env: { R: roleId, S: rand() } });
  t.teardown(() => bad.close());
  const e = await rejectsSafely(t, bad.readField({ path: 'secret/data/a1', field: 'k' }), 'FIRMA_VAULT_AUTH', secrets);
  t.equal(e.status, 400);
  t.match(e.message, /AppRole login.*invalid role or secret ID/);
});

t.test('approle: role_id / secret_id files re-read at each login; a non-renewable token is replaced before expiry', async (t) => {
  const value = rand();
  const roleId = rand();
  const secret1 = rand();
  const secret2 = rand();
  vault.setAppRole(roleId, [secret1], { ttl: 1, renewable: false });
  vault.setSecret('secret/data/a2', { k: value });
  const roleFile = join(tmp, 'role_id');
  const secretFile = join(tmp, 'secret_id');
  writeFileSync(roleFile, `${roleId}\n`);
  writeFileSync(secretFile, `${secret1}\n`);
  const client = new VaultClient(cfg(vault.address, { auth: 'approle', role_id_file: roleFile, secret_id_file: secretFile }), { env: {} });
  t.teardown(() => client.close());
  const logins0 = vault.count('login-approle');
  t.equal(await client.readField({ path: 'secret/data/a2', field: 'k' }), value);
  await sleep(1200);
  t.ok(vault.count('login-approle') - logins0 >= 2, 'logged in again before the 1 s token ran out');

  // The operator rotates the secret_id (old one invalid) and the file: the next login uses the file's new content.
  vault.setAppRole(roleId, [secret2], { ttl: 60 });
  writeFileSync(secretFile, `${secret2}\n`);
  vault.revokeAll();
  t.equal(await client.readField({ path: 'secret/data/a2', field: 'k' }), value);

  rmSync(secretFile);
  vault.revokeAll();
  const e = await rejectsSafely(t, client.readField({ path: 'secret/data/a2', field: 'k' }), 'FIRMA_VAULT_AUTH', [value, roleId, secret2]);
  t.match(e.message, /secret_id file .*secret_id \(ENOENT\)/);
});

t.test('kubernetes: login with the service-account JWT file, re-read at each login', async (t) => {
  const value = rand();
  const jwt1 = `eyJ${rand()}.${rand()}.${rand()}`;
  const jwt2 = `eyJ${rand()}.${rand()}.${rand()}`;
  vault.setKubernetesRole('firma', [jwt1], { ttl: 60 });
  vault.setSecret('secret/data/k1', { k: value });
  const jwtFile = join(tmp, 'sa-token');
  writeFileSync(jwtFile, jwt1);
  const client = new VaultClient(cfg(vault.address, { auth: 'kubernetes', kubernetes_role: 'firma', kubernetes_jwt_file: jwtFile }), { env: {} });
  t.teardown(() => client.close());
  const logins0 = vault.count('login-kubernetes');
  t.equal(await client.readField({ path: 'secret/data/k1', field: 'k' }), value);
  t.equal(vault.count('login-kubernetes') - logins0, 1);

  // Kubernetes rotated the projected token: only the new JWT is accepted now.
  vault.setKubernetesRole('firma', [jwt2], { ttl: 60 });
  writeFileSync(jwtFile, jwt2);
  vault.revokeAll();
  t.equal(await client.readField({ path: 'secret/data/k1', field: 'k' }), value);
  t.equal(vault.count('login-kubernetes') - logins0, 2);

  writeFileSync(jwtFile, jwt1);
  vault.revokeAll();
  const e = await rejectsSafely(t, client.readField({ path: 'secret/data/k1', field: 'k' }), 'FIRMA_VAULT_AUTH', [value, jwt1, jwt2]);
  t.equal(e.status, 403);
  t.match(e.message, /Kubernetes login at auth\/kubernetes\/login \(HTTP 403: permission denied\)/);
});

t.test('single-flight: 10 concurrent reads of one path → one login, one HTTP read', async (t) => {
  const a = rand();
  const b = rand();
  const roleId = rand();
  const secretId = rand();
  vault.setAppRole(roleId, [secretId], { ttl: 60 });
  vault.setSecret('secret/data/sf', { a, b });
  const client = new VaultClient(cfg(vault.address, { auth: 'approle', role_id_env: 'R', secret_id_env: 'S', cache_ttl_ms: 60_000 }), {
    env: { R: roleId, S: secretId },
  });
  t.teardown(() => client.close());
  const logins0 = vault.count('login-approle');
  const got = await Promise.all(Array.from({ length: 10 }, (_, i) => client.readField({ path: 'secret/data/sf', field: i % 2 === 0 ? 'a' : 'b' })));
  t.same(got, Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b)));
  t.equal(vault.reads('secret/data/sf'), 1, 'one KV read');
  t.equal(vault.count('login-approle') - logins0, 1, 'one login');
  await client.readField({ path: 'secret/data/sf', field: 'a' });
  t.equal(vault.reads('secret/data/sf'), 1, 'then served from cache');
});

t.test('cache: a rotated value is served until cache_ttl_ms, then the new one', async (t) => {
  const old = rand();
  const fresh = rand();
  vault.setSecret('secret/data/rot', { k: old });
  const client = new VaultClient(cfg(vault.address, { cache_ttl_ms: 300 }), { env: { FIRMA_TEST_VAULT_TOKEN: vault.createToken() } });
  t.teardown(() => client.close());
  t.equal(await client.readField({ path: 'secret/data/rot', field: 'k' }), old);
  vault.setSecret('secret/data/rot', { k: fresh });
  await sleep(100);
  t.equal(await client.readField({ path: 'secret/data/rot', field: 'k' }), old, 'within the TTL: cached');
  await sleep(300);
  t.equal(await client.readField({ path: 'secret/data/rot', field: 'k' }), fresh, 'after the TTL: rotated');
});

t.test('Vault down or hung → FIRMA_VAULT_UNREACHABLE within timeout_ms; back up → works again', async (t) => {
  const local = await startFakeVault();
  t.teardown(() => local.close());
  const value = rand();
  const token = local.createToken();
  local.setSecret('secret/data/d', { k: value });
  const client = new VaultClient(cfg(local.address, { timeout_ms: 300 }), { env: { FIRMA_TEST_VAULT_TOKEN: token } });
  t.teardown(() => client.close());
  t.equal(await client.readField({ path: 'secret/data/d', field: 'k' }), value);

  await local.stop();
  let start = performance.now();
  const down = await rejectsSafely(t, client.readField({ path: 'secret/data/d', field: 'k' }), 'FIRMA_VAULT_UNREACHABLE', [value, token]);
  t.ok(performance.now() - start < 300 + 400, 'refused fails fast');
  // The first attempt may land on the pooled keep-alive socket the server just cut.
  t.match(down.message, /ECONNREFUSED|UND_ERR_SOCKET/);
  t.equal(down.status, null);
  const refused = await rejectsSafely(t, client.readField({ path: 'secret/data/d', field: 'k' }), 'FIRMA_VAULT_UNREACHABLE', [value, token]);
  t.match(refused.message, /ECONNREFUSED/);

  await local.start();
  local.setHang(true);
  start = performance.now();
  const hung = await rejectsSafely(t, client.readField({ path: 'secret/data/d', field: 'k' }), 'FIRMA_VAULT_UNREACHABLE', [value, token]);
  const took = performance.now() - start;
  t.ok(took >= 250 && took < 300 + 600, `bounded by timeout_ms (${Math.round(took)} ms)`);
  t.match(hung.message, /no answer within 300 ms/);

  local.setHang(false);
  t.equal(await client.readField({ path: 'secret/data/d', field: 'k' }), value, 'recovers when Vault is back');
});

t.test('close(): renewal timers stop, later reads are refused', async (t) => {
  const token = vault.createToken({ ttl: 1, renewable: true });
  const value = rand();
  vault.setSecret('secret/data/c', { k: value });
  const client = new VaultClient(cfg(vault.address), { env: { FIRMA_TEST_VAULT_TOKEN: token } });
  t.equal(await client.readField({ path: 'secret/data/c', field: 'k' }), value);
  await client.close();
  await client.close();
  const renews = vault.count('renew-self');
  await sleep(900);
  t.equal(vault.count('renew-self'), renews, 'no renewal after close');
  await rejectsSafely(t, client.readField({ path: 'secret/data/c', field: 'k' }), 'FIRMA_VAULT_CLOSED', [value, token]);
});
