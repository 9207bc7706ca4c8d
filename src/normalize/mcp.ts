/**
 * MCP servers (docs/mcp.md): which requests go to a declared Streamable HTTP endpoint, and the tool
 * rules of each server, compiled from `[[mcp.servers]]` at load. Reading the JSON-RPC body is
 * mcp-messages.ts.
 *
 * A tool rule's `name` is a glob over the exact tool name (`*` = any run of characters, nothing else
 * is special); the most specific matching rule wins: more literal characters, then fewer `*`, then the
 * higher risk, then the earlier rule.
 */
import type { FirmaConfig } from '../config/index.js';
import { ConfigError } from '../config/index.js';
import type { Risk, Target } from '../core/envelope.js';
import { compilePathPattern, type PathPattern } from './glob.js';
import { normalizePath } from './path.js';
import { KNOWN_METHOD_CLASSES } from './mcp-methods.js';

const RISK_RANK: Readonly<Record<Risk, number>> = { low: 0, medium: 1, high: 2, critical: 3 };
/** A tool name that can be an action-class segment of its own (capability patterns are lowercase). */
export const PLAIN_TOOL = /^[a-z0-9_-]{1,64}$/;

export interface McpToolRule {
  readonly glob: string;
  readonly risk: Risk;
  /** Argument fields Cedar sees, and every dotted prefix of them (for the repeated-key scan). */
  readonly arguments: readonly string[];
  readonly argumentPaths: ReadonlySet<string>;
  readonly literalChars: number;
  readonly stars: number;
  readonly order: number;
  matches(name: string): boolean;
}

export interface McpServer {
  readonly name: string;
  readonly host: string;
  /** null: the default port of the request's scheme. */
  readonly port: number | null;
  readonly path: PathPattern;
  readonly risk: Risk;
  /** Most specific first. */
  readonly tools: readonly McpToolRule[];
}

/** `a*b*c` → matcher over the exact string; greedy is exact for `*`-only globs. */
export function compileToolGlob(glob: string): (name: string) => boolean {
  const parts = glob.split('*');
  if (parts.length === 1) return (name) => name === glob;
  const first = parts[0] ?? '';
  const last = parts[parts.length - 1] ?? '';
  const middle = parts.slice(1, -1);
  return (name) => {
    if (name.length < first.length + last.length || !name.startsWith(first) || !name.endsWith(last)) return false;
    const end = name.length - last.length;
    let pos = first.length;
    for (const part of middle) {
      const found = name.indexOf(part, pos);
      if (found === -1 || found + part.length > end) return false;
      pos = found + part.length;
    }
    return true;
  };
}

function prefixesOf(fields: readonly string[]): ReadonlySet<string> {
  const out = new Set<string>();
  for (const f of fields) {
    const parts = f.split('.');
    for (let i = 1; i <= parts.length; i++) out.add(parts.slice(0, i).join('.'));
  }
  return out;
}

export const NO_PATHS: ReadonlySet<string> = new Set();

export class McpTable {
  readonly servers: readonly McpServer[];
  /** Every action class a policy may name for these servers (declared in the Cedar schema). */
  readonly actionClasses: readonly string[];
  /** Every argument field a tool rule opts into (typed String in the Cedar schema). */
  readonly argumentFields: readonly string[];

  private constructor(servers: readonly McpServer[]) {
    this.servers = servers;
    const classes = new Set<string>();
    const fields = new Set<string>();
    for (const srv of servers) {
      for (const c of KNOWN_METHOD_CLASSES) classes.add(`mcp.${srv.name}.${c}`);
      for (const tool of srv.tools) {
        if (PLAIN_TOOL.test(tool.glob) && !RESERVED_SEGMENTS.has(tool.glob)) classes.add(`mcp.${srv.name}.${tool.glob}`);
        for (const f of tool.arguments) fields.add(f);
      }
    }
    this.actionClasses = Object.freeze([...classes].sort());
    this.argumentFields = Object.freeze([...fields].sort());
  }

  static readonly EMPTY = new McpTable([]);

  /** Compile `[[mcp.servers]]` (already validated by the config schema). */
  static fromConfig(config: FirmaConfig): McpTable {
    const servers: McpServer[] = [];
    for (const [i, srv] of config.mcp.servers.entries()) {
      const compiled = compilePathPattern(srv.path, normalizePath);
      if (!compiled.ok) {
        throw new ConfigError([{ file: config.source.path ?? '<defaults>', line: 1, col: 1, key: `mcp.servers[${i}].path`, message: compiled.message }]);
      }
      const tools: McpToolRule[] = srv.tools.map((t, order) => ({
        glob: t.name,
        risk: t.risk,
        arguments: Object.freeze([...t.arguments]),
        argumentPaths: prefixesOf(t.arguments),
        literalChars: t.name.replaceAll('*', '').length,
        stars: t.name.split('*').length - 1,
        order,
        matches: compileToolGlob(t.name),
      }));
      tools.sort((a, b) => b.literalChars - a.literalChars || a.stars - b.stars || RISK_RANK[b.risk] - RISK_RANK[a.risk] || a.order - b.order);
      servers.push(Object.freeze({ name: srv.name, host: srv.host.host, port: srv.host.port, path: compiled.pattern, risk: srv.risk, tools: Object.freeze(tools) }));
    }
    return servers.length === 0 ? McpTable.EMPTY : new McpTable(Object.freeze(servers));
  }

  /** The server whose endpoint this request goes to, or null. `normalizedPath` from normalizePath. */
  endpoint(target: Target, normalizedPath: string): McpServer | null {
    for (const srv of this.servers) {
      if (srv.host !== target.host) continue;
      const port = srv.port ?? (target.scheme === 'https' ? 443 : 80);
      if (port === target.port && srv.path.matches(normalizedPath)) return srv;
    }
    return null;
  }

  coversHost(host: string): boolean {
    return this.servers.some((s) => s.host === host);
  }
}

/** The most specific tool rule matching the exact tool name, or null. */
export function toolRule(server: McpServer, tool: string): McpToolRule | null {
  for (const rule of server.tools) if (rule.matches(tool)) return rule;
  return null;
}

/**
 * First segments a tool's own action class may not take, because method classes use them
 * (`mcp.<server>.tools.list`, `.ping`, `.stream`…): a tool named so is classified `tools.call`.
 */
export const RESERVED_SEGMENTS: ReadonlySet<string> = new Set([
  'initialize', 'ping', 'tools', 'resources', 'prompts', 'completion', 'logging', 'notifications',
  'sampling', 'elicitation', 'roots', 'tasks', 'stream', 'session', 'response', 'other',
]);
