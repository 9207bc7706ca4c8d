import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkConfigFile, formatConfigIssue, loadConfig, unsetCredentialVariables } from '../../../src/config/index.js';

function file(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'firma-check-all-'));
  writeFileSync(join(dir, 'firma.toml'), text);
  return join(dir, 'firma.toml');
}

const CREDENTIAL = '\n[[credentials]]\nhost = "a.example"\nmode = "basic"\nvalue_from_env = "FIRMA_CFG_UNSET_VAR"\n';

t.test('a credential variable unset here is not a config error; unsetCredentialVariables names it at its key', async (t) => {
  const path = file(`[sidecar]\nlog_level = "info"\n${CREDENTIAL}`);
  const config = loadConfig(path, '/');
  t.equal(config.credentials.length, 1, 'the file loads');
  const issues = unsetCredentialVariables(config, {});
  t.same(issues.map(formatConfigIssue), [`${path}:7:1: credentials[0].value_from_env: environment variable FIRMA_CFG_UNSET_VAR is not set`]);
  t.same(unsetCredentialVariables(config, { FIRMA_CFG_UNSET_VAR: 'x' }), [], 'set: nothing to say');
  t.equal(unsetCredentialVariables(config, { FIRMA_CFG_UNSET_VAR: '' }).length, 1, 'empty counts as unset');
});

t.test('checkConfigFile: the faulty keys set aside, the rest still yields a config to check the rules with', async (t) => {
  const valid = checkConfigFile(file('[sidecar]\nlog_level = "info"\n'), '/');
  t.same(valid.issues, []);
  t.not(valid.config, null);

  const faulty = checkConfigFile(file('[sidecar]\nlog_level = "loud"\n[[sidecar.connector.hosts]]\nhost = "a.example"\nrps = -1\n[[sidecar.connector.hosts]]\nhost = "b.example"\nrps = 5\n[sidecar.policy]\ndir = "mine"\n'), '/');
  t.same(faulty.issues.map((i) => i.key), ['sidecar.log_level', 'sidecar.connector.hosts[0].rps']);
  t.equal(faulty.config?.sidecar.log_level, 'info', 'the bad key is at its default');
  t.same(faulty.config?.sidecar.connector.hosts.map((h) => [h.host.host, h.rps]), [['a.example', null], ['b.example', 5]], 'only the bad key is set aside');
  t.match(faulty.config?.sidecar.policy.dir, /\/mine$/, 'the rule locations are the file’s');

  const locating = checkConfigFile(file('[sidecar.mapping]\nrules_paths = 3\n'), '/');
  t.equal(locating.issues.length, 1);
  t.equal(locating.config, null, 'a fault in where the rules are: no rule check against the defaults');

  const syntax = checkConfigFile(file('[sidecar\n'), '/');
  t.match(syntax.issues[0]?.message, /invalid TOML/);
  t.equal(syntax.config, null);
});
