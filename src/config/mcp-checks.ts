/**
 * The checks of `[[mcp.servers]]` and `[[mcp.servers.tools]]` (docs/mcp.md "Configuration"): names
 * that become action-class segments, endpoint path globs, tool-name globs that can match a tool name,
 * argument fields, and duplicates across entries.
 */
import { describeValue } from './values.js';
import { s } from './schema-dsl.js';
import { parseUpstreamHost } from './validators.js';
import { hostKey } from './entry-checks.js';
import type { UpstreamHostKey } from './validators.js';

/** A server name is one action-class segment: `mcp.<name>.<tool>`. */
const SERVER_NAME = /^[a-z0-9_-]{1,64}$/;
/** What an MCP tool name may contain (MCP spec: A-Z a-z 0-9 _ - .), plus `*` in a glob. */
const TOOL_GLOB = /^[A-Za-z0-9_.*-]{1,128}$/;
const ARGUMENT_FIELD = /^[A-Za-z0-9_$-]+(?:\.[A-Za-z0-9_$-]+)*$/;
const UNSAFE_SEGMENTS: ReadonlySet<string> = new Set(['__proto__', 'prototype', 'constructor']);
/** Printable ASCII without `?`, `#` and `%` (an endpoint path is written as it is matched). */
const PATH_CHARS = /^\/[\x21-\x7e]*$/;

export function checkServerName(text: string): string | undefined {
  return SERVER_NAME.test(text)
    ? undefined
    : `expected 1-64 of a-z 0-9 _ - (the name becomes the action class segment in mcp.<name>.<tool>), got ${describeValue(text)}`;
}

/**
 * An endpoint path glob, already in the normal form request paths are matched in (normalize/path.ts):
 * `*` within a segment, `**` a whole segment. No escapes, dot segments or empty segments.
 */
export function checkEndpointPath(text: string): string | undefined {
  if (!PATH_CHARS.test(text) || text.includes('?') || text.includes('#') || text.includes('%')) {
    return `expected a path starting with "/" of printable ASCII without "?", "#" or "%", got ${describeValue(text)}`;
  }
  const segments = text.slice(1).split('/');
  for (const [i, seg] of segments.entries()) {
    if (seg === '' && !(i === segments.length - 1)) return `path has an empty segment ("//"), got ${describeValue(text)}`;
    if (seg === '.' || seg === '..') return `path has a dot segment, got ${describeValue(text)}`;
    if (seg.includes('**') && seg !== '**') return `"**" must be a whole path segment, got ${describeValue(text)}`;
  }
  if (text.includes('/**/**')) return 'path has "**/**": write a single "**"';
  return undefined;
}

/**
 * A tool-name glob (`*` = any run of characters) that can match some tool name: only the characters a
 * tool name has, 1-128 of them, and not `**` (which means nothing more than `*`).
 */
export function checkToolGlob(text: string): string | undefined {
  if (text.includes('**')) return `"**" in a tool name glob matches nothing "*" does not: write "*", got ${describeValue(text)}`;
  if (!TOOL_GLOB.test(text)) {
    return `a tool name has 1-128 of A-Z a-z 0-9 _ - . (MCP), so this glob can never match one: use those and "*", got ${describeValue(text)}`;
  }
  if (text.replaceAll('*', '').length > 128) return 'the glob needs more than 128 characters: no tool name is that long';
  return undefined;
}

export function checkArgumentField(text: string): string | undefined {
  if (!ARGUMENT_FIELD.test(text)) return `expected an argument name or dotted path (A-Z a-z 0-9 _ $ -, e.g. "project" or "issue.labels"), got ${describeValue(text)}`;
  for (const segment of text.split('.')) {
    if (UNSAFE_SEGMENTS.has(segment)) return `field name segment ${JSON.stringify(segment)} is not allowed`;
  }
  return undefined;
}

interface ServerEntry {
  readonly name: string;
  readonly host: UpstreamHostKey;
  readonly path: string;
}

/** Two servers with one name, or one endpoint (host, port, path) declared twice. */
export function checkServers(servers: readonly ServerEntry[]): string | undefined {
  const names = new Map<string, number>();
  const endpoints = new Map<string, number>();
  for (const [i, srv] of servers.entries()) {
    const first = names.get(srv.name);
    if (first !== undefined) return `duplicate server name ${JSON.stringify(srv.name)} (entries ${first + 1} and ${i + 1})`;
    names.set(srv.name, i);
    const endpoint = `${hostKey(srv.host)}${srv.path.length > 1 && srv.path.endsWith('/') ? srv.path.slice(0, -1) : srv.path}`;
    const other = endpoints.get(endpoint);
    if (other !== undefined) return `duplicate endpoint ${JSON.stringify(endpoint)} (entries ${other + 1} and ${i + 1})`;
    endpoints.set(endpoint, i);
  }
  return undefined;
}

/** Two tool rules of one server with the same glob. */
export function checkTools(tools: ReadonlyArray<{ readonly name: string }>): string | undefined {
  const seen = new Map<string, number>();
  for (const [i, tool] of tools.entries()) {
    const first = seen.get(tool.name);
    if (first !== undefined) return `duplicate tool rule ${JSON.stringify(tool.name)} (entries ${first + 1} and ${i + 1})`;
    seen.set(tool.name, i);
  }
  return undefined;
}

const RISK_TIERS = ['low', 'medium', 'high', 'critical'] as const;

/** `[mcp]`: `[[mcp.servers]]` with their `[[mcp.servers.tools]]` (firma-config.ts declares it as `mcp`). */
export const mcpSchema = s
  .table({
    servers: s
      .array(
        s.table({
          name: s.string().refine(checkServerName).describe('Server name: its calls are classified mcp.<name>.<tool> (1-64 of a-z 0-9 _ -).'),
          host: s
            .string()
            .transform(parseUpstreamHost)
            .describe('Exact host of the MCP server, optionally with :port (without: the scheme default, 443 or 80).'),
          path: s.string().refine(checkEndpointPath).default('/mcp').describe('Endpoint path glob (as mapping rules: "*" within a segment, "**" across segments).'),
          risk: s.enum(RISK_TIERS).default('medium').describe('Risk of a tools/call no tool rule names, and of methods that are not read-only listings.'),
          tools: s
            .array(
              s.table({
                name: s.string().refine(checkToolGlob).describe('Tool name glob ("*" = any run of characters); the most specific rule matching a tool name wins.'),
                risk: s.enum(RISK_TIERS).describe('Risk tier of a call to the tools it matches.'),
                arguments: s
                  .array(s.string().refine(checkArgumentField), { unique: true, maxItems: 32 })
                  .default([])
                  .describe('Argument fields (top-level or dotted) offered to Cedar as context.mcp.arguments, as strings.'),
              }),
            )
            .default([])
            .refine(checkTools)
            .describe('Tool rules: [[mcp.servers.tools]].'),
        }),
      )
      .default([])
      .refine(checkServers)
      .describe('MCP servers whose Streamable HTTP endpoint is read as JSON-RPC: [[mcp.servers]] (docs/mcp.md).'),
  })
  .describe('MCP tool calls as actions (docs/mcp.md).');
