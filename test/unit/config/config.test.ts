import t from 'tap';
import { join } from 'node:path';
import { stringify } from 'smol-toml';
import { FirmaError } from '../../../src/core/errors.js';
import {
  ConfigError,
  defaultConfig,
  firmaConfigJsonSchema,
  formatConfigIssue,
  loadConfig,
  parseConfigText,
  parseTomlWithSchema,
  resolveConfigPath,
} from '../../../src/config/index.js';
import type { FirmaConfig } from '../../../src/config/index.js';
import { fail, s } from '../../../src/config/schema-dsl.js';
import type { Infer, JsonValue } from '../../../src/config/schema-dsl.js';
import { scanTomlPositions } from '../../../src/config/toml-scanner.js';
import { formatKeyPath } from '../../../src/config/path.js';

/** The formatted issues of the ConfigError thrown by fn (fails the test if none is thrown). */
function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err: unknown) {
    if (err instanceof ConfigError) return err.errors.map(formatConfigIssue);
    throw err;
  }
  return ['<no error thrown>'];
}

const parseAt = (text: string): FirmaConfig => parseConfigText(text, 'firma.toml', '/etc/firma');
const issues = (text: string): string[] => issuesOf(() => parseAt(text));

const decisionDefaults = (base: string): Record<string, unknown> => ({
  mapping: { default_protected: true, rules_paths: [`${base}/mappings/*.toml`], body_limit_bytes: 65536 },
  capabilities: {
    required: true,
    public_key_file: `${base}/keys/capability.pub`,
    signing_key_file: `${base}/keys/capability.key`,
    revocation_file: `${base}/keys/revoked.txt`,
    token_file: '',
  },
  policy: { dir: `${base}/policies` },
});

const DEFAULT_VALUES = {
  sidecar: {
    mode: 'enforce',
    ...decisionDefaults('/work'),
    agent_id: 'local-agent',
    log_level: 'info',
    reload: { watch: true, debounce_ms: 300 },
    drain_timeout_ms: 10000,
    interceptor: { listen: { host: '127.0.0.1', port: 8080 }, transparent_listen: null, handshake_timeout_ms: 10000, headers_timeout_ms: 30000, keep_alive_timeout_ms: 30000, max_connections: 0, max_connections_per_client: 0, mitm: { ca_dir: '/work/certs', bypass_hosts: [] } },
    admin: { listen: { host: '127.0.0.1', port: 9090 }, token_env: 'FIRMA_ADMIN_TOKEN', token_identity: 'admin', approvers: [] },
    connector: { default_timeout_ms: 30000, idle_timeout_ms: 60000, allow_private: [], hosts: [] },
  },
  credentials: [],
  vault: {
    address: 'http://127.0.0.1:8200',
    auth: 'token',
    namespace: '',
    token_env: 'VAULT_TOKEN',
    approle_mount: 'approle',
    kubernetes_mount: 'kubernetes',
    kubernetes_role: '',
    kubernetes_jwt_file: '/var/run/secrets/kubernetes.io/serviceaccount/token',
    cache_ttl_ms: 60000,
    timeout_ms: 5000,
  },
  audit: { path: '/work/audit/audit.jsonl', key_dir: '/work/keys', fsync: 'interval', fsync_interval_ms: 100, max_file_bytes: 104857600, stdout: false, signatures: 'checkpoint' },
  approvals: { timeout_ms: 300000, max_pending: 1000, max_grant_minutes: 1440, webhook_url: '', webhook_timeout_ms: 5000, page_url: '' },
  redis: { url: '', key_prefix: 'firma', on_error: 'deny', timeout_ms: 500 },
  mcp: { servers: [] },
  llm: { hosts: [], prices_file: '' },
  budgets: [],
};

t.test('built-in defaults', async (t) => {
  t.same(defaultConfig('/work'), { ...DEFAULT_VALUES, source: { path: null }, baseDir: '/work' });
  t.same(loadConfig(null, '/work'), defaultConfig('/work'));
  // an empty file gives the same values, paths resolved against the file's folder
  const fromEmpty = parseConfigText('', '/srv/firma.toml', '/srv');
  t.equal(fromEmpty.sidecar.interceptor.mitm.ca_dir, '/srv/certs');
  t.same(fromEmpty.source, { path: '/srv/firma.toml' });
  t.equal(fromEmpty.baseDir, '/srv');
});

t.test('discovery: --config > $FIRMA_CONFIG > ./firma.toml > defaults', async (t) => {
  const dir = t.testdir({
    'firma.toml': '',
    'flag.toml': '',
    'env.toml': '',
    empty: {},
    sub: { 'x.toml': '' },
  });
  const env = { FIRMA_CONFIG: 'env.toml' };
  t.equal(resolveConfigPath({ flag: 'flag.toml', env, cwd: dir }), join(dir, 'flag.toml'));
  t.equal(resolveConfigPath({ flag: join(dir, 'sub/x.toml'), env, cwd: '/' }), join(dir, 'sub/x.toml'));
  t.equal(resolveConfigPath({ env, cwd: dir }), join(dir, 'env.toml'));
  t.equal(resolveConfigPath({ env: { FIRMA_CONFIG: '' }, cwd: dir }), join(dir, 'firma.toml'), 'empty env var = unset');
  t.equal(resolveConfigPath({ env: {}, cwd: dir }), join(dir, 'firma.toml'));
  t.equal(resolveConfigPath({ cwd: join(dir, 'empty') }), null, 'nothing found: built-in defaults');

  const cases: Array<[string, Parameters<typeof resolveConfigPath>[0], string]> = [
    ['missing --config path', { flag: 'nope.toml', env, cwd: dir }, 'nope.toml:1:1: file not found (from --config)'],
    ['missing env path (no fallback to ./firma.toml)', { env: { FIRMA_CONFIG: 'gone.toml' }, cwd: dir }, 'gone.toml:1:1: file not found (from $FIRMA_CONFIG)'],
    ['--config is a directory', { flag: 'empty', cwd: dir }, 'empty:1:1: is a directory, not a file (from --config)'],
    ['empty --config', { flag: '', cwd: dir }, ':1:1: empty config path (from --config)'],
  ];
  for (const [name, opts, expected] of cases) {
    t.same(issuesOf(() => resolveConfigPath(opts)), [expected], name);
  }
  try {
    resolveConfigPath({ flag: 'nope.toml', cwd: dir });
  } catch (err: unknown) {
    t.ok(err instanceof FirmaError);
    t.equal((err as FirmaError).code, 'FIRMA_CONFIG_INVALID');
  }
  t.same(issuesOf(() => loadConfig(join(dir, 'nope.toml'), dir)), [`${join(dir, 'nope.toml')}:1:1: file not found`]);
});

t.test('loadConfig: relative paths resolve against the config file folder', async (t) => {
  const dir = t.testdir({
    conf: {
      'firma.toml': '[sidecar.interceptor.mitm]\nca_dir = "../ca"\nbypass_hosts = ["API.Example.com", "*.Internal.example", "10.0.0.1", "[::1]"]\n',
      'abs.toml': '[sidecar.interceptor.mitm]\nca_dir = "/var/lib/firma/ca"\n',
    },
    cwd: {},
  });
  const cwd = join(dir, 'cwd');
  const config = loadConfig(resolveConfigPath({ flag: '../conf/firma.toml', cwd }), cwd);
  t.equal(config.sidecar.interceptor.mitm.ca_dir, join(dir, 'ca'));
  t.same(config.sidecar.interceptor.mitm.bypass_hosts, ['api.example.com', '*.internal.example', '10.0.0.1', '::1']);
  t.same(config.source, { path: join(dir, 'conf/firma.toml') });
  t.equal(config.baseDir, join(dir, 'conf'));
  t.equal(loadConfig('../conf/abs.toml', cwd).sidecar.interceptor.mitm.ca_dir, '/var/lib/firma/ca');
  t.equal(loadConfig(null, cwd).sidecar.interceptor.mitm.ca_dir, join(cwd, 'certs'), 'defaults: against cwd');
});

t.test('a full valid file', async (t) => {
  const config = parseAt(`# comment
[sidecar]
agent_id = "agent-7@team:prod"
log_level = "debug"
drain_timeout_ms = 0

[sidecar.interceptor]
listen = "[::1]:0"

[sidecar.interceptor.mitm]
ca_dir = "ca"
bypass_hosts = [
  "api.example.com",   # trailing comments
  "*.example.org",
]

[sidecar.admin]
listen = "LOCALHOST:65535"

[sidecar.connector]
default_timeout_ms = 3_600_000
`);
  t.same(config, {
    sidecar: {
      mode: 'enforce',
      ...decisionDefaults('/etc/firma'),
      agent_id: 'agent-7@team:prod',
      log_level: 'debug',
      reload: { watch: true, debounce_ms: 300 },
      drain_timeout_ms: 0,
      interceptor: { listen: { host: '::1', port: 0 }, transparent_listen: null, handshake_timeout_ms: 10000, headers_timeout_ms: 30000, keep_alive_timeout_ms: 30000, max_connections: 0, max_connections_per_client: 0, mitm: { ca_dir: '/etc/firma/ca', bypass_hosts: ['api.example.com', '*.example.org'] } },
      admin: { listen: { host: 'localhost', port: 65535 }, token_env: 'FIRMA_ADMIN_TOKEN', token_identity: 'admin', approvers: [] },
      connector: { default_timeout_ms: 3600000, idle_timeout_ms: 60000, allow_private: [], hosts: [] },
    },
    credentials: [],
    vault: { ...DEFAULT_VALUES.vault, kubernetes_jwt_file: '/var/run/secrets/kubernetes.io/serviceaccount/token' },
    audit: { ...DEFAULT_VALUES.audit, path: '/etc/firma/audit/audit.jsonl', key_dir: '/etc/firma/keys' },
    approvals: DEFAULT_VALUES.approvals,
    redis: DEFAULT_VALUES.redis,
    mcp: DEFAULT_VALUES.mcp,
    llm: DEFAULT_VALUES.llm,
    budgets: DEFAULT_VALUES.budgets,
    source: { path: 'firma.toml' },
    baseDir: '/etc/firma',
  });
});

const LISTEN_EXPECTED = 'expected host:port (e.g. "127.0.0.1:8080")';
const LISTEN_HOST = 'expected host:port with host an IPv4 address, [IPv6] address or "localhost"';
const LISTEN_PORT = 'expected host:port with a port between 0 and 65535';
const HOST_EXPECTED = 'expected a host name ("api.example.com"), a wildcard ("*.example.com") or an IP address';
const LEVELS = '"trace", "debug", "info", "warn", "error", "fatal", "silent"';

const BAD: Array<[string, string, string[]]> = [
  ['unknown top-level key', 'verbose = true\n', ['firma.toml:1:1: verbose: unknown key "verbose"']],
  ['unknown top-level table with suggestion', '[sidecar]\nagent_id = "a"\n\n[sidecr]\nx = 1\n', [
    'firma.toml:4:2: sidecr: unknown key "sidecr" (did you mean "sidecar"?)',
  ]],
  ['unknown key in a nested table', '[sidecar.interceptor]\n  listn = "127.0.0.1:1"\n', [
    'firma.toml:2:3: sidecar.interceptor.listn: unknown key "listn" (did you mean "listen"?)',
  ]],
  ['unknown nested table header', '[sidecar.interceptor.mitn]\n', [
    'firma.toml:1:22: sidecar.interceptor.mitn: unknown key "mitn" (did you mean "mitm"?)',
  ]],
  ['unknown key as an array of tables', '[[sidecar.hosts]]\nhost = "a"\n[[sidecar.hosts]]\n', [
    'firma.toml:1:11: sidecar.hosts: unknown key "hosts"',
  ]],
  ['wrong type: enum', '[sidecar]\nlog_level = 3\n', [`firma.toml:2:1: sidecar.log_level: expected one of ${LEVELS}, got 3 (integer)`]],
  ['enum near miss', '[sidecar]\nlog_level = "INFO"\n', [
    `firma.toml:2:1: sidecar.log_level: expected one of ${LEVELS}, got "INFO" (string) (did you mean "info"?)`,
  ]],
  ['wrong type: string', '[sidecar]\nagent_id = true\n', ['firma.toml:2:1: sidecar.agent_id: expected a string, got true (boolean)']],
  ['wrong type: integer', '[sidecar.connector]\ndefault_timeout_ms = "fast"\n', [
    'firma.toml:2:1: sidecar.connector.default_timeout_ms: expected an integer between 1 and 3600000, got "fast" (string)',
  ]],
  ['float for integer', '[sidecar]\ndrain_timeout_ms = 1.0\n', [
    'firma.toml:2:1: sidecar.drain_timeout_ms: expected an integer between 0 and 600000, got 1.0 (float)',
  ]],
  ['wrong type: array', '[sidecar.interceptor.mitm]\nbypass_hosts = "a.com"\n', [
    'firma.toml:2:1: sidecar.interceptor.mitm.bypass_hosts: expected an array, got "a.com" (string)',
  ]],
  ['wrong type: table', '[sidecar]\ninterceptor = 5\n', ['firma.toml:2:1: sidecar.interceptor: expected a table, got 5 (integer)']],
  ['wrong type: date', 'sidecar = 1979-05-27\n', ['firma.toml:1:1: sidecar: expected a table, got 1979-05-27 (datetime)']],
  ['out of range: below', '[sidecar]\ndrain_timeout_ms = -1\n', [
    'firma.toml:2:1: sidecar.drain_timeout_ms: expected an integer between 0 and 600000, got -1 (integer)',
  ]],
  ['out of range: above', '[sidecar]\ndrain_timeout_ms = 600_001\n', [
    'firma.toml:2:1: sidecar.drain_timeout_ms: expected an integer between 0 and 600000, got 600001 (integer)',
  ]],
  ['out of range: zero timeout', '[sidecar.connector]\ndefault_timeout_ms = 0\n', [
    'firma.toml:2:1: sidecar.connector.default_timeout_ms: expected an integer between 1 and 3600000, got 0 (integer)',
  ]],
  ['out of range: huge', '[sidecar.connector]\ndefault_timeout_ms = 99999999999999999999\n', [
    'firma.toml:2:1: sidecar.connector.default_timeout_ms: expected an integer between 1 and 3600000, got 99999999999999999999 (integer)',
  ]],
  ['agent_id characters', '[sidecar]\nagent_id = "a b"\n', [
    'firma.toml:2:1: sidecar.agent_id: expected 1 to 128 characters of A-Z a-z 0-9 . _ : @ -, got "a b" (string)',
  ]],
  ['agent_id empty', '[sidecar]\nagent_id = ""\n', [
    'firma.toml:2:1: sidecar.agent_id: expected 1 to 128 characters of A-Z a-z 0-9 . _ : @ -, got "" (string)',
  ]],
  ['listen without host', '[sidecar.interceptor]\nlisten = "8080"\n', [
    `firma.toml:2:1: sidecar.interceptor.listen: ${LISTEN_EXPECTED}, got "8080" (string)`,
  ]],
  ['listen port out of range', '[sidecar.admin]\nlisten = "1.2.3.4:99999"\n', [
    `firma.toml:2:1: sidecar.admin.listen: ${LISTEN_PORT}, got "1.2.3.4:99999" (string)`,
  ]],
  ['listen with a name', '[sidecar.admin]\nlisten = "host:port"\n', [
    `firma.toml:2:1: sidecar.admin.listen: ${LISTEN_HOST}, got "host:port" (string)`,
  ]],
  ['listen with a DNS name', '[sidecar.admin]\nlisten = "example.com:80"\n', [
    `firma.toml:2:1: sidecar.admin.listen: ${LISTEN_HOST}, got "example.com:80" (string)`,
  ]],
  ['listen with unbracketed IPv6', '[sidecar.admin]\nlisten = "::1:80"\n', [
    'firma.toml:2:1: sidecar.admin.listen: expected an IPv6 host in brackets (e.g. "[::1]:8080"), got "::1:80" (string)',
  ]],
  ['listen port not numeric', '[sidecar.admin]\nlisten = "127.0.0.1:http"\n', [
    `firma.toml:2:1: sidecar.admin.listen: ${LISTEN_PORT}, got "127.0.0.1:http" (string)`,
  ]],
  ['bypass hosts: bad patterns point at the element', '[sidecar.interceptor.mitm]\nbypass_hosts = ["../../x", "*.com.*",\n  "a b"]\n', [
    `firma.toml:2:17: sidecar.interceptor.mitm.bypass_hosts[0]: ${HOST_EXPECTED}, got "../../x" (string): contains "/" (a host only, no scheme or path)`,
    `firma.toml:2:28: sidecar.interceptor.mitm.bypass_hosts[1]: ${HOST_EXPECTED}, got "*.com.*" (string): "*" is only allowed as the whole first label ("*.example.com")`,
    `firma.toml:3:3: sidecar.interceptor.mitm.bypass_hosts[2]: ${HOST_EXPECTED}, got "a b" (string): contains whitespace or control characters`,
  ]],
  ['bypass hosts: more bad patterns', `[sidecar.interceptor.mitm]
bypass_hosts = [
  "*",
  "example..com",
  "api.example.com:443",
  "https://a.com",
  "-a.com",
  "${'a'.repeat(64)}.com",
  "${'abcdefghi.'.repeat(26)}com",
  "a*.com",
  "1.2.3.999",
  "bücher.de",
  "",
  3,
]
`, [
    `firma.toml:3:3: sidecar.interceptor.mitm.bypass_hosts[0]: ${HOST_EXPECTED}, got "*" (string): "*" alone would match every host`,
    `firma.toml:4:3: sidecar.interceptor.mitm.bypass_hosts[1]: ${HOST_EXPECTED}, got "example..com" (string): empty label (leading, trailing or double dot)`,
    `firma.toml:5:3: sidecar.interceptor.mitm.bypass_hosts[2]: ${HOST_EXPECTED}, got "api.example.com:443" (string): contains ":" (a host only, no scheme or port)`,
    `firma.toml:6:3: sidecar.interceptor.mitm.bypass_hosts[3]: ${HOST_EXPECTED}, got "https://a.com" (string): contains "/" (a host only, no scheme or path)`,
    `firma.toml:7:3: sidecar.interceptor.mitm.bypass_hosts[4]: ${HOST_EXPECTED}, got "-a.com" (string): label "-a" may only contain a-z, 0-9, "-" and "_" and may not start or end with "-"`,
    `firma.toml:8:3: sidecar.interceptor.mitm.bypass_hosts[5]: ${HOST_EXPECTED}, got "${'a'.repeat(59)}…" (string): label "${'a'.repeat(20)}…" is longer than 63 characters`,
    `firma.toml:9:3: sidecar.interceptor.mitm.bypass_hosts[6]: ${HOST_EXPECTED}, got "${'abcdefghi.'.repeat(5)}abcdefghi…" (string): longer than 253 characters`,
    `firma.toml:10:3: sidecar.interceptor.mitm.bypass_hosts[7]: ${HOST_EXPECTED}, got "a*.com" (string): "*" is only allowed as the whole first label ("*.example.com")`,
    `firma.toml:11:3: sidecar.interceptor.mitm.bypass_hosts[8]: ${HOST_EXPECTED}, got "1.2.3.999" (string): not a valid IP address, and a host name cannot end in a numeric label`,
    `firma.toml:12:3: sidecar.interceptor.mitm.bypass_hosts[9]: ${HOST_EXPECTED}, got "bücher.de" (string): non-ASCII characters (use the xn-- punycode form)`,
    `firma.toml:13:3: sidecar.interceptor.mitm.bypass_hosts[10]: ${HOST_EXPECTED}, got "" (string): empty`,
    'firma.toml:14:3: sidecar.interceptor.mitm.bypass_hosts[11]: expected a string, got 3 (integer)',
  ]],
  ['bypass hosts: duplicates after normalisation', '[sidecar.interceptor.mitm]\nbypass_hosts = ["a.example.com", "*.example.com", "A.Example.COM"]\n', [
    'firma.toml:2:51: sidecar.interceptor.mitm.bypass_hosts[2]: duplicate "a.example.com" (same as [0])',
  ]],
  ['TOML syntax error names the nearest key', '[sidecar]\nagent_id = \n', [
    'firma.toml:2:12: sidecar.agent_id: invalid TOML: invalid value',
  ]],
  ['TOML syntax error in a header', '[sidecar\n', ['firma.toml:1:9: invalid TOML: illegal character in key']],
  ['TOML duplicate key', '[sidecar]\nlog_level = "info"\nlog_level = "warn"\n', [
    'firma.toml:3:1: sidecar.log_level: invalid TOML: trying to redefine an already defined table or value',
  ]],
  ['comments containing keys, brackets and =', '# [sidecar]\n# agent_id = 1\n[sidecar] # [x] = y\n  # log_level = 1\n  log_level = 5 # = [\n', [
    `firma.toml:5:3: sidecar.log_level: expected one of ${LEVELS}, got 5 (integer)`,
  ]],
  ['quoted keys', '[sidecar]\n"agent_id" = 5\n\'log_level\' = 6\n"a b" = 1\n"lo\\u0067_level2" = 1\n', [
    'firma.toml:2:1: sidecar.agent_id: expected a string, got 5 (integer)',
    `firma.toml:3:1: sidecar.log_level: expected one of ${LEVELS}, got 6 (integer)`,
    'firma.toml:4:1: sidecar."a b": unknown key "a b"',
    'firma.toml:5:1: sidecar.log_level2: unknown key "log_level2" (did you mean "log_level"?)',
  ]],
  ['quoted table header', '["sidecar"."admin"]\n"listen" = 1\n', [
    'firma.toml:2:1: sidecar.admin.listen: expected a string, got 1 (integer)',
  ]],
  ['dotted keys at top level', 'sidecar.agent_id = 5\nsidecar . interceptor . lsten = "x"\n', [
    'firma.toml:1:9: sidecar.agent_id: expected a string, got 5 (integer)',
    'firma.toml:2:25: sidecar.interceptor.lsten: unknown key "lsten" (did you mean "listen"?)',
  ]],
  ['inline tables', 'sidecar = { log_level = 3, admin = { listen = "x", extra = true } }\n', [
    `firma.toml:1:13: sidecar.log_level: expected one of ${LEVELS}, got 3 (integer)`,
    `firma.toml:1:38: sidecar.admin.listen: ${LISTEN_EXPECTED}, got "x" (string)`,
    'firma.toml:1:52: sidecar.admin.extra: unknown key "extra"',
  ]],
  ['multi-line strings containing = and [', `[sidecar]
agent_id = """
x = 1
[not.a.table]
"""
notes = '''
[[also.not]] = "
'''
log_level = "x = [1"
connector.default_timeout_ms = "a\\"b = c" # [x]
`, [
    'firma.toml:2:1: sidecar.agent_id: expected 1 to 128 characters of A-Z a-z 0-9 . _ : @ -, got "x = 1\\n[not.a.table]\\n" (string)',
    'firma.toml:6:1: sidecar.notes: unknown key "notes"',
    `firma.toml:9:1: sidecar.log_level: expected one of ${LEVELS}, got "x = [1" (string)`,
    'firma.toml:10:11: sidecar.connector.default_timeout_ms: expected an integer between 1 and 3600000, got "a\\"b = c" (string)',
  ]],
  ['prototype keys are just unknown keys', '__proto__ = 1\n[sidecar]\nconstructor = { polluted = true }\n', [
    'firma.toml:1:1: __proto__: unknown key "__proto__"',
    'firma.toml:3:1: sidecar.constructor: unknown key "constructor"',
  ]],
  ['CRLF line endings and a BOM', '\uFEFF[sidecar]\r\nlog_level = 1\r\n', [
    `firma.toml:2:1: sidecar.log_level: expected one of ${LEVELS}, got 1 (integer)`,
  ]],
];

t.test('bad files: exact file:line:col: key: message', async (t) => {
  for (const [name, text, expected] of BAD) t.same(issues(text), expected, name);
});

t.test('all errors are reported together, in source order', async (t) => {
  let caught: unknown;
  try {
    parseAt('[sidecar.connector]\ndefault_timeout_ms = 0\n[sidecar]\nlog_level = "loud"\nfoo = 1\n[sidecar.admin]\nlisten = "8080"\n');
  } catch (err: unknown) {
    caught = err;
  }
  t.ok(caught instanceof ConfigError);
  t.ok(caught instanceof FirmaError);
  const err = caught as ConfigError;
  t.equal(err.code, 'FIRMA_CONFIG_INVALID');
  t.equal(err.name, 'ConfigError');
  t.same(err.errors.map((i) => [i.line, i.col, i.key]), [
    [2, 1, 'sidecar.connector.default_timeout_ms'],
    [4, 1, 'sidecar.log_level'],
    [5, 1, 'sidecar.foo'],
    [7, 1, 'sidecar.admin.listen'],
  ]);
  t.equal(err.message, err.errors.map(formatConfigIssue).join('\n'));
  t.equal(err.message.split('\n').length, 4);
  t.same(err.errors[0], {
    file: 'firma.toml',
    line: 2,
    col: 1,
    key: 'sidecar.connector.default_timeout_ms',
    message: 'expected an integer between 1 and 3600000, got 0 (integer)',
  });
});

t.test('formatConfigIssue', async (t) => {
  t.equal(formatConfigIssue({ file: 'a.toml', line: 3, col: 7, key: 'x.y[1].z', message: 'bad' }), 'a.toml:3:7: x.y[1].z: bad');
  t.equal(formatConfigIssue({ file: 'a.toml', line: 1, col: 1, key: '', message: 'file not found' }), 'a.toml:1:1: file not found');
  t.equal(formatKeyPath(['sidecar', 'connector', 'hosts', 1, 'rps']), 'sidecar.connector.hosts[1].rps');
  t.equal(formatKeyPath(['a b', 0, 'c.d']), '"a b"[0]."c.d"');
});

// ---------------------------------------------------------------------------------------------------------
// JSON Schema

type Obj = { [key: string]: JsonValue };
const isObj = (v: JsonValue | undefined): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Just enough JSON Schema to check the generated one structurally. */
function jsonSchemaErrors(schema: Obj, value: JsonValue, path = ''): string[] {
  const type = schema['type'];
  if (type === 'object') {
    if (!isObj(value)) return [`${path}: not an object`];
    const props = isObj(schema['properties']) ? schema['properties'] : {};
    const out: string[] = [];
    for (const [k, v] of Object.entries(value)) {
      const sub = props[k];
      if (isObj(sub)) out.push(...jsonSchemaErrors(sub, v, `${path}/${k}`));
      else if (schema['additionalProperties'] === false) out.push(`${path}/${k}: additional property`);
    }
    return out;
  }
  if (type === 'array') {
    if (!Array.isArray(value)) return [`${path}: not an array`];
    const items = schema['items'];
    return isObj(items) ? value.flatMap((v, i) => jsonSchemaErrors(items, v, `${path}/${i}`)) : [];
  }
  if (type === 'string' && typeof value !== 'string') return [`${path}: not a string`];
  if (type === 'integer' && !Number.isInteger(value)) return [`${path}: not an integer`];
  if (Array.isArray(schema['enum']) && !schema['enum'].includes(value)) return [`${path}: not in enum`];
  if (typeof schema['pattern'] === 'string' && typeof value === 'string' && !new RegExp(schema['pattern']).test(value)) {
    return [`${path}: pattern`];
  }
  return [];
}

/** Keys that may be absent with no default: they inherit (per-host overrides) or belong to one mode. */
const OPTIONAL_NO_DEFAULT = new Set([
  'rps', 'burst', 'timeout_ms', 'idle_timeout_ms', 'value_from_env', 'secret_path',
  'role_id_env', 'role_id_file', 'secret_id_env', 'secret_id_file',
]);

t.test('JSON Schema', async (t) => {
  const schema = firmaConfigJsonSchema() as Obj;
  t.equal(schema['$schema'], 'https://json-schema.org/draft/2020-12/schema');
  t.equal(schema['title'], 'firma.toml');

  // every object closed; every key described and defaulted
  const walk = (node: Obj, path: string): void => {
    if (node['type'] === 'object') {
      t.equal(node['additionalProperties'], false, `${path} closed`);
      const props = node['properties'];
      if (!isObj(props)) return void t.fail(`${path} has properties`);
      for (const [k, sub] of Object.entries(props)) {
        if (!isObj(sub)) return void t.fail(`${path}/${k} is a schema`);
        t.type(sub['description'], 'string', `${path}/${k} described`);
        // Optional keys without a default are the per-entry overrides and mode-specific keys.
        const required = Array.isArray(node['required']) ? (node['required'] as string[]) : [];
        if (!required.includes(k)) t.ok('default' in sub || OPTIONAL_NO_DEFAULT.has(k), `${path}/${k} has a default`);
        walk(sub, `${path}/${k}`);
      }
    }
  };
  walk(schema, '');

  const sidecar = (schema['properties'] as Obj)['sidecar'] as Obj;
  const props = sidecar['properties'] as Obj;
  t.same(props['drain_timeout_ms'], {
    description: 'On SIGTERM, how long in-flight requests may finish before they are cut (milliseconds).',
    type: 'integer',
    minimum: 0,
    maximum: 600000,
    default: 10000,
  });
  t.same((((props['interceptor'] as Obj)['properties'] as Obj)['listen'] as Obj)['default'], '127.0.0.1:8080');
  const mitm = ((props['interceptor'] as Obj)['properties'] as Obj)['mitm'] as Obj;
  t.same((mitm['properties'] as Obj)['bypass_hosts'], {
    description: (((mitm['properties'] as Obj)['bypass_hosts'] as Obj)['description'] as string),
    type: 'array',
    items: { type: 'string' },
    uniqueItems: true,
    default: [],
  });
  // the default document is the fully expanded default, and it is what the runtime uses
  const rootDefault = schema['default'] as JsonValue;
  t.same(rootDefault, {
    sidecar: {
      mode: 'enforce',
      mapping: { default_protected: true, rules_paths: ['mappings/*.toml'], body_limit_bytes: 65536 },
      capabilities: {
        required: true,
        public_key_file: 'keys/capability.pub',
        signing_key_file: 'keys/capability.key',
        revocation_file: 'keys/revoked.txt',
        token_file: '',
      },
      policy: { dir: 'policies' },
      agent_id: 'local-agent',
      log_level: 'info',
      reload: { watch: true, debounce_ms: 300 },
      drain_timeout_ms: 10000,
      interceptor: { listen: '127.0.0.1:8080', transparent_listen: '', handshake_timeout_ms: 10000, headers_timeout_ms: 30000, keep_alive_timeout_ms: 30000, max_connections: 0, max_connections_per_client: 0, mitm: { ca_dir: 'certs', bypass_hosts: [] } },
      admin: { listen: '127.0.0.1:9090', token_env: 'FIRMA_ADMIN_TOKEN', token_identity: 'admin', approvers: [] },
      connector: { default_timeout_ms: 30000, idle_timeout_ms: 60000, allow_private: [], hosts: [] },
    },
    credentials: [],
    vault: { ...DEFAULT_VALUES.vault },
    audit: { path: 'audit/audit.jsonl', key_dir: 'keys', fsync: 'interval', fsync_interval_ms: 100, max_file_bytes: 104857600, stdout: false, signatures: 'checkpoint' },
    approvals: { ...DEFAULT_VALUES.approvals },
    redis: { ...DEFAULT_VALUES.redis },
    mcp: { servers: [] },
    llm: { hosts: [], prices_file: '' },
    budgets: [],
  });
  t.same(jsonSchemaErrors(schema, rootDefault), []);
  t.same(parseConfigText(stringify(rootDefault as Obj), 'f', '/work').sidecar, DEFAULT_VALUES.sidecar);

  // rejects unknown keys and wrong types, like the runtime validation
  t.same(jsonSchemaErrors(schema, { sidecar: { listn: 1 } }), ['/sidecar/listn: additional property']);
  t.same(jsonSchemaErrors(schema, { sidecar: { interceptor: { mitm: { extra: [] } } } }), ['/sidecar/interceptor/mitm/extra: additional property']);
  t.same(jsonSchemaErrors(schema, { sidecar: { log_level: 'loud', admin: { listen: '8080' } } }), ['/sidecar/log_level: not in enum', '/sidecar/admin/listen: pattern']);
  t.same(jsonSchemaErrors(schema, { sidecar: { admin: { listen: '[::1]:80' }, agent_id: 'a@b' } }), []);
});

// ---------------------------------------------------------------------------------------------------------
// The DSL on its own, with arrays of tables and required keys (firma.toml has none yet)

const hostsSchema = s.table({
  name: s.string().describe('required'),
  mode: s.enum(['a', 'b']).default('a').describe('mode'),
  hosts: s
    .arrayOfTables({
      host: s.string().describe('host'),
      rps: s.integer({ min: 1, max: 100 }).default(10).describe('rps'),
      tags: s.array(s.string(), { unique: true }).default([]).describe('tags'),
    }, { unique: true })
    .default([])
    .describe('hosts'),
  window: s
    .string()
    .transform((v) => (/^\d+s$/.test(v) ? { seconds: Number(v.slice(0, -1)) } : fail(`expected "<n>s", got ${JSON.stringify(v)}`)))
    .default('5s')
    .describe('window'),
});

t.test('DSL: inferred types, defaults, transforms', async (t) => {
  type Hosts = Infer<typeof hostsSchema>;
  const r = hostsSchema.validate({ name: 'n', hosts: [{ host: 'a' }, { host: 'b', rps: 5n, tags: ['x'] }] }, { integersAreBigInt: true });
  if (!r.ok) return void t.fail(JSON.stringify(r.issues));
  // compile-time: the output type is what we expect (tsc checks this file)
  const typed: { name: string; mode: 'a' | 'b'; hosts: Array<{ host: string; rps: number; tags: string[] }>; window: { seconds: number } } = r.value;
  const back: Hosts = typed;
  t.same(back, { name: 'n', mode: 'a', hosts: [{ host: 'a', rps: 10, tags: [] }, { host: 'b', rps: 5, tags: ['x'] }], window: { seconds: 5 } });
  // JS numbers are accepted when not coming from TOML
  t.equal(s.integer({ min: 0 }).validate(3).ok, true);
  t.same(s.integer().validate(3, { integersAreBigInt: true }), { ok: false, issues: [{ path: [], kind: 'type', message: 'expected an integer, got 3.0 (float)' }] });
  t.same(s.boolean().validate('yes'), { ok: false, issues: [{ path: [], kind: 'type', message: 'expected true or false, got "yes" (string)' }] });
});

t.test('DSL: collects every issue with its path', async (t) => {
  const r = hostsSchema.validate({ mode: 'c', hosts: [{ host: 1, rps: 0, tagz: [] }, { rps: 5 }, { host: 'a', tags: ['x', 'x'] }, { host: 'a' }], window: '5m', extra: 1 });
  t.same(r.ok ? [] : r.issues, [
    { path: ['extra'], kind: 'unknown_key', message: 'unknown key "extra"' },
    { path: ['name'], kind: 'missing_key', message: 'missing required key "name"' },
    { path: ['mode'], kind: 'value', message: 'expected one of "a", "b", got "c" (string)' },
    { path: ['hosts', 0, 'tagz'], kind: 'unknown_key', message: 'unknown key "tagz" (did you mean "tags"?)' },
    { path: ['hosts', 0, 'host'], kind: 'type', message: 'expected a string, got 1 (integer)' },
    { path: ['hosts', 0, 'rps'], kind: 'type', message: 'expected an integer between 1 and 100, got 0 (integer)' },
    { path: ['hosts', 1, 'host'], kind: 'missing_key', message: 'missing required key "host"' },
    { path: ['hosts', 2, 'tags', 1], kind: 'value', message: 'duplicate "x" (same as [0])' },
    { path: ['window'], kind: 'value', message: 'expected "<n>s", got "5m"' },
  ]);
  // whole-table uniqueness (entry 1 equals entry 0 once defaults are applied)
  const dup = hostsSchema.validate({ name: 'n', hosts: [{ host: 'a' }, { host: 'a', rps: 10 }] });
  t.same(dup.ok ? [] : dup.issues, [{ path: ['hosts', 1], kind: 'value', message: 'duplicate entry (same as [0])' }]);
});

t.test('DSL: JSON Schema of arrays of tables and required keys', async (t) => {
  const js = hostsSchema.jsonSchema();
  t.same(js['required'], ['name']);
  t.equal(js['default'], undefined, 'a table with a required key has no default');
  const hosts = (js['properties'] as Obj)['hosts'] as Obj;
  t.same(hosts['type'], 'array');
  t.same(hosts['default'], []);
  t.same((hosts['items'] as Obj)['required'], ['host']);
  t.same((hosts['items'] as Obj)['additionalProperties'], false);
  t.same(((js['properties'] as Obj)['window'] as Obj)['default'], '5s');
});

t.test('arrays of tables end to end: positions of unknown, wrong and missing keys', async (t) => {
  const text = `name = "x"

[[hosts]]
host = "a"

[[hosts]]   # second
rsp = 5
host = "b"

[[hosts]]
rps = 1

[[hosts]]
host = "d"
tags = ["t", "t"]
`;
  t.same(issuesOf(() => parseTomlWithSchema(hostsSchema, text, 'x.toml', '/')), [
    'x.toml:7:1: hosts[1].rsp: unknown key "rsp" (did you mean "rps"?)',
    'x.toml:10:1: hosts[2].host: missing required key "host"',
    'x.toml:15:14: hosts[3].tags[1]: duplicate "t" (same as [0])',
  ]);
  const inline = 'hosts = [ { host = "a" },\n  { host = "b", rps = "many", x = 1 },\n  { rps = 2 } ]\n';
  t.same(issuesOf(() => parseTomlWithSchema(hostsSchema, inline, 'y.toml', '/')), [
    'y.toml:1:1: name: missing required key "name"',
    'y.toml:2:17: hosts[1].rps: expected an integer between 1 and 100, got "many" (string)',
    'y.toml:2:31: hosts[1].x: unknown key "x"',
    'y.toml:3:3: hosts[2].host: missing required key "host"',
  ]);
});

// ---------------------------------------------------------------------------------------------------------
// The position scanner on its own

t.test('positions: tables, arrays of tables, inline values', async (t) => {
  const text = `top = 1 # c
"quoted key" = { a = [1, { b = 2 }], 'c.d' = "]" }

[fruits]   # [not]
name = "x = [y]"

[[fruits.list]]
name = "apple"
[fruits.list.physical]
color = "red"

[[fruits.list]]
name = """
[[fruits.list]]
"""
  [[fruits.list.variety]]
  name = 'a # b'

[ a . "b c" . d ]
e.f = 1979-05-27 07:32:00
g = [
  # comment ]
  [1, 2], [3],
]
`;
  const pos = scanTomlPositions(text);
  const at = (...path: Array<string | number>): string | undefined => {
    const p = pos.key(path);
    return p === undefined ? undefined : `${p.line}:${p.col}`;
  };
  const cases: Array<[Array<string | number>, string | undefined]> = [
    [['top'], '1:1'],
    [['quoted key'], '2:1'],
    [['quoted key', 'a'], '2:18'],
    [['quoted key', 'a', 0], '2:23'],
    [['quoted key', 'a', 1], '2:26'],
    [['quoted key', 'a', 1, 'b'], '2:28'],
    [['quoted key', 'c.d'], '2:38'],
    [['fruits'], '4:2'],
    [['fruits', 'name'], '5:1'],
    [['fruits', 'list'], '7:10'],
    [['fruits', 'list', 0], '7:1'],
    [['fruits', 'list', 0, 'name'], '8:1'],
    [['fruits', 'list', 0, 'physical'], '9:14'],
    [['fruits', 'list', 0, 'physical', 'color'], '10:1'],
    [['fruits', 'list', 1], '12:1'],
    [['fruits', 'list', 1, 'name'], '13:1'],
    [['fruits', 'list', 2], undefined],
    [['fruits', 'list', 1, 'variety', 0], '16:3'],
    [['fruits', 'list', 1, 'variety', 0, 'name'], '17:3'],
    [['a', 'b c', 'd'], '19:15'],
    [['a', 'b c', 'd', 'e', 'f'], '20:3'],
    [['a', 'b c', 'd', 'g'], '21:1'],
    [['a', 'b c', 'd', 'g', 0], '23:3'],
    [['a', 'b c', 'd', 'g', 0, 1], '23:7'],
    [['a', 'b c', 'd', 'g', 1], '23:11'],
    [['a', 'b c', 'd', 'g', 2], undefined],
    [['not'], undefined],
  ];
  for (const [path, expected] of cases) t.equal(at(...path), expected, formatKeyPath(path));
  const header = (...path: Array<string | number>): string | undefined => {
    const p = pos.header(path);
    return p === undefined ? undefined : `${p.line}:${p.col}`;
  };
  t.equal(header('fruits'), '4:1');
  t.equal(header('fruits', 'list', 1), '12:1');
  t.equal(header('fruits', 'list', 0, 'physical'), '9:1');
  t.equal(header('fruits', 'list', 1, 'variety', 0), '16:3');
  t.equal(header('a', 'b c', 'd'), '19:1');
  t.same(pos.nearest(['fruits', 'list', 0, 'physical', 'nope']), { line: 9, col: 14 });
  t.same(pos.keyAt(5, 20), ['fruits', 'name']);
});

t.test('positions: never throws', async (t) => {
  const sample = BAD.map(([, text]) => text).join('\n') + '\n"\\u12\' = """ \'\'\' [[ { [ , ] } ]] \\';
  let seed = 42;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const alphabet = '[]{}"\'=.,#\n \\abc1-_\r\t*';
  const unexpected: string[] = [];
  for (let i = 0; i < 300; i++) {
    const cut = sample.slice(0, rand(sample.length));
    let noise = '';
    for (let j = 0; j < 40; j++) noise += alphabet[rand(alphabet.length)];
    try {
      scanTomlPositions(cut + noise);
      issuesOf(() => parseAt(cut + noise)); // rethrows anything that is not a ConfigError
    } catch (err: unknown) {
      unexpected.push(`${JSON.stringify(cut + noise)}: ${String(err)}`);
    }
  }
  t.same(unexpected, [], '300 truncated + noisy documents');
  t.doesNotThrow(() => scanTomlPositions('a = ' + '['.repeat(100_000)));
  t.doesNotThrow(() => scanTomlPositions('a = ' + '{ b = '.repeat(50_000)));
});

t.test('connector, credentials, vault and redis keys: values and exact errors', async (t) => {
  process.env['FIRMA_CFG_TEST_KEY'] = 'x';
  t.teardown(() => {
    delete process.env['FIRMA_CFG_TEST_KEY'];
  });
  const ok = parseAt(`[sidecar.connector]
idle_timeout_ms = 5000
allow_private = ["10.0.0.0/8:5432", "127.0.0.1", "[fd00::/8]:443"]

[[sidecar.connector.hosts]]
host = "API.OpenAI.com"
rps = 60
burst = 10

[[sidecar.connector.hosts]]
host = "127.0.0.1:9100"
rps = 5
timeout_ms = 100

[[credentials]]
host = "api.openai.com"
mode = "basic"
value_from_env = "FIRMA_CFG_TEST_KEY"
prefix = "Bearer "

[[credentials]]
host = "api.stripe.com"
mode = "vault"
secret_path = "secret/data/stripe#api_key"

[vault]
auth = "approle"
role_id_file = "role"
secret_id_env = "SID"

[redis]
url = "redis://127.0.0.1:6379"
`);
  t.same(ok.sidecar.connector.hosts.map((h) => [h.host.host, h.host.port, h.rps, h.burst, h.timeout_ms]), [
    ['api.openai.com', null, 60, 10, undefined],
    ['127.0.0.1', 9100, 5, undefined, 100],
  ]);
  t.same(ok.sidecar.connector.allow_private.map((r) => [r.family, r.prefix, r.port]), [[4, 8, 5432], [4, 32, null], [6, 8, 443]]);
  t.same(ok.credentials[1]?.secret_path, { path: 'secret/data/stripe', field: 'api_key' });
  t.equal(ok.vault.role_id_file, '/etc/firma/role', 'relative to the config folder');
  t.equal(ok.redis.on_error, 'deny', 'fail closed by default');

  const cases: Array<[string, string, RegExp]> = [
    ['duplicate host', '[[sidecar.connector.hosts]]\nhost = "a.example"\n[[sidecar.connector.hosts]]\nhost = "A.example:443"\n[[sidecar.connector.hosts]]\nhost = "a.example"\n',
      /^firma\.toml:\d+:\d+: sidecar\.connector\.hosts: duplicate host "a\.example" \(entries 1 and 3\)$/],
    ['burst without rps', '[[sidecar.connector.hosts]]\nhost = "a.example"\nburst = 3\n', /^firma\.toml:1:1: sidecar\.connector\.hosts\[0\]: burst needs rps$/],
    ['bad host', '[[sidecar.connector.hosts]]\nhost = "https://a.example/"\n', /^firma\.toml:2:1: sidecar\.connector\.hosts\[0\]\.host: expected an exact host/],
    ['bad cidr', '[sidecar.connector]\nallow_private = ["10.0.0.0/33"]\n', /^firma\.toml:2:\d+: sidecar\.connector\.allow_private\[0\]: .*prefix length "33" must be 0-32$/],
    ['vault without path', '[[credentials]]\nhost = "a.example"\nmode = "vault"\n', /credentials\[0\]: mode = "vault" needs secret_path/],
    ['same header twice on host:443', '[[credentials]]\nhost = "a.example"\nmode = "vault"\nsecret_path = "secret/data/a#k"\n[[credentials]]\nhost = "a.example:443"\nmode = "vault"\nheader = "authorization"\nsecret_path = "secret/data/b#k"\n',
      /^firma\.toml:\d+:\d+: credentials: duplicate host and header "a\.example:443 authorization": entries 1 and 2 both set authorization for a\.example:443$/],
    ['kv v1 path', '[[credentials]]\nhost = "a.example"\nmode = "vault"\nsecret_path = "secret/stripe#k"\n', /credentials\[0\]\.secret_path: expected a KV v2 path/],
    ['missing mode', '[[credentials]]\nhost = "a.example"\n', /^firma\.toml:1:1: credentials\[0\]\.mode: missing required key "mode"$/],
    ['approle ids', '[vault]\nauth = "approle"\nrole_id_env = "R"\n', /vault: auth = "approle" needs exactly one of secret_id_env, secret_id_file/],
    ['kubernetes role', '[vault]\nauth = "kubernetes"\n', /vault: auth = "kubernetes" needs kubernetes_role/],
    ['redis url', '[redis]\nurl = "http://127.0.0.1:6379"\n', /^firma\.toml:2:1: redis\.url: expected "" \(no Redis\) or a redis:\/\//],
    ['redis url with a password, mistyped', '[redis]\nurl = "http://:hunter2@127.0.0.1:6379"\n', /got "http:\/\/\[redacted\]@127\.0\.0\.1:6379" \(string\)$/],
    ['webhook url with a secret path', '[approvals]\nwebhook_url = "ftp://hooks.example/services/T0/B0/hunter2"\n', /approvals\.webhook_url: .*got "ftp:\/\/hooks\.example\/…" \(string\)$/],
  ];
  for (const [name, text, expected] of cases) {
    const issues = issuesOf(() => parseAt(text));
    t.equal(issues.length, 1, `${name}: one issue (${issues.join(' | ')})`);
    t.match(issues[0] ?? '', expected, name);
    t.notOk(issues.join('\n').includes('hunter2'), `${name}: no secret echoed`);
  }
});
