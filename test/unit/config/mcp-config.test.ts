/**
 * `[[mcp.servers]]` and `[[mcp.servers.tools]]` (docs/mcp.md "Configuration"): validated like the rest
 * of firma.toml, every issue with file:line:col and its key.
 */
import t from 'tap';
import { ConfigError, formatConfigIssue, parseConfigText } from '../../../src/config/index.js';

function issues(text: string): string[] {
  try {
    parseConfigText(text, 'firma.toml', '/etc/firma');
  } catch (err: unknown) {
    if (err instanceof ConfigError) return err.errors.map(formatConfigIssue);
    throw err;
  }
  return ['<no error thrown>'];
}

t.test('a valid server with tool rules, defaults filled in', async (t) => {
  const config = parseConfigText(`
[[mcp.servers]]
name = "tracker"
host = "mcp.example.com:8443"

[[mcp.servers.tools]]
name = "delete_*"
risk = "critical"
arguments = ["project", "issue.id"]
`, 'firma.toml', '/etc/firma');
  t.same(config.mcp.servers, [{
    name: 'tracker',
    host: { host: 'mcp.example.com', port: 8443, text: 'mcp.example.com:8443' },
    path: '/mcp',
    risk: 'medium',
    tools: [{ name: 'delete_*', risk: 'critical', arguments: ['project', 'issue.id'] }],
  }]);
});

t.test('a server without host, a bad name, a risk outside the tiers, a bad path', async (t) => {
  t.same(issues(`
[[mcp.servers]]
name = "Tracker"
path = "/a/../mcp"
risk = "urgent"
`), [
    'firma.toml:2:1: mcp.servers[0].host: missing required key "host"',
    'firma.toml:3:1: mcp.servers[0].name: expected 1-64 of a-z 0-9 _ - (the name becomes the action class segment in mcp.<name>.<tool>), got "Tracker" (string)',
    'firma.toml:4:1: mcp.servers[0].path: path has a dot segment, got "/a/../mcp" (string)',
    'firma.toml:5:1: mcp.servers[0].risk: expected one of "low", "medium", "high", "critical", got "urgent" (string)',
  ]);
});

t.test('duplicate server names and endpoints', async (t) => {
  t.same(issues(`
[[mcp.servers]]
name = "tracker"
host = "a.example.com"

[[mcp.servers]]
name = "tracker"
host = "b.example.com"
`), ['firma.toml:2:7: mcp.servers: duplicate server name "tracker" (entries 1 and 2)']);
  t.same(issues(`
[[mcp.servers]]
name = "one"
host = "a.example.com"
path = "/mcp/"

[[mcp.servers]]
name = "two"
host = "A.example.com"
path = "/mcp"
`), ['firma.toml:2:7: mcp.servers: duplicate endpoint "a.example.com/mcp" (entries 1 and 2)']);
});

t.test('tool globs that can never match, duplicate tool rules, bad argument fields', async (t) => {
  t.same(issues(`
[[mcp.servers]]
name = "tracker"
host = "a.example.com"

[[mcp.servers.tools]]
name = "delete item"
risk = "low"

[[mcp.servers.tools]]
name = "a**"
risk = "low"

[[mcp.servers.tools]]
name = "search"
risk = "low"
arguments = ["__proto__", "ok"]
`), [
    'firma.toml:7:1: mcp.servers[0].tools[0].name: a tool name has 1-128 of A-Z a-z 0-9 _ - . (MCP), so this glob can never match one: use those and "*", got "delete item" (string)',
    'firma.toml:11:1: mcp.servers[0].tools[1].name: "**" in a tool name glob matches nothing "*" does not: write "*", got "a**" (string)',
    'firma.toml:17:14: mcp.servers[0].tools[2].arguments[0]: field name segment "__proto__" is not allowed',
  ]);
  t.same(issues(`
[[mcp.servers]]
name = "tracker"
host = "a.example.com"

[[mcp.servers.tools]]
name = "search"
risk = "low"

[[mcp.servers.tools]]
name = "search"
risk = "high"
`), ['firma.toml:6:15: mcp.servers[0].tools: duplicate tool rule "search" (entries 1 and 2)']);
});
