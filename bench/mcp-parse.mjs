// Micro-benchmark: what reading a 64 KiB JSON-RPC tools/call body costs on a declared MCP endpoint
// (docs/mcp.md "Classification"): JSON.parse, the message checks and the repeated-key scan. Run after
// `npm run build`: node bench/mcp-parse.mjs
import { parseConfigText } from '../dist/config/index.js';
import { McpTable } from '../dist/normalize/mcp.js';
import { parseMcpBody } from '../dist/normalize/mcp-messages.js';

const table = McpTable.fromConfig(parseConfigText(`
[[mcp.servers]]
name = "tracker"
host = "mcp.example.com"
[[mcp.servers.tools]]
name = "search"
risk = "low"
arguments = ["query"]
`, 'firma.toml', '/tmp'));
const server = table.servers[0];
const size = 64 * 1024;
const msg = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'search', arguments: { query: 'q', text: '' } } };
msg.params.arguments.text = 'x'.repeat(size - JSON.stringify(msg).length);
const body = Buffer.from(JSON.stringify(msg));
const many = { ...msg, params: { ...msg.params, arguments: Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`k${i}`, `value ${i} ${'y'.repeat(20)}`])) } };
const wide = Buffer.from(JSON.stringify(many));
for (const [name, buf] of [['one 64 KiB string', body], [`2000 keys (${wide.length} bytes)`, wide]]) {
  for (let i = 0; i < 500; i++) parseMcpBody(server, buf);
  const n = 2000;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) parseMcpBody(server, buf);
  const us = Number(process.hrtime.bigint() - start) / 1000 / n;
  console.log(`${name}: ${us.toFixed(1)} µs per body (${buf.length} bytes)`);
}
