/**
 * A request to a declared MCP endpoint read as JSON-RPC 2.0 (docs/mcp.md "Classification"): one message
 * or a batch, each becoming a call with its action class, risk and `McpFacts`. Nothing is skipped: a
 * notification and a response the client sends (to a server's sampling or elicitation request) are
 * classified like requests. A body that is not JSON-RPC is `mcp_malformed`; a key read twice or an
 * opted-in argument that is not one scalar is `mcp_ambiguous`.
 */
import type { JsonRpcId, McpFacts, Risk } from '../core/envelope.js';
import { KNOWN_METHODS } from './mcp-methods.js';
import { NO_PATHS, PLAIN_TOOL, RESERVED_SEGMENTS, toolRule, type McpServer, type McpToolRule } from './mcp.js';
import { repeatedMcpKey } from './mcp-scan.js';

/** The most messages one batch may carry (each is decided on its own). */
export const MAX_BATCH = 64;

export interface McpCall {
  readonly actionClass: string;
  readonly risk: Risk;
  /** `mcp:<server>` or `mcp:<server>:<tool rule glob>`. */
  readonly ruleId: string;
  readonly facts: McpFacts;
}

export type McpParse =
  | { readonly ok: true; readonly calls: readonly McpCall[] }
  | { readonly ok: false; readonly reason: 'mcp_malformed' | 'mcp_ambiguous'; readonly message: string; readonly rpcIds: readonly JsonRpcId[]; readonly batch: boolean };

type Json = Record<string, unknown>;

interface Message {
  readonly kind: 'request' | 'notification' | 'response';
  readonly method: string | null;
  readonly id: JsonRpcId;
  readonly tool: string | null;
  readonly rule: McpToolRule | null;
  readonly args: Json | null;
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isId(v: unknown): v is string | number {
  return typeof v === 'string' || (typeof v === 'number' && Number.isSafeInteger(v));
}

/** One message's shape, or why it is not JSON-RPC 2.0 as MCP uses it. */
function readMessage(server: McpServer, v: unknown): Message | string {
  if (!isObject(v)) return 'a JSON-RPC message must be an object';
  if (v['jsonrpc'] !== '2.0') return 'a JSON-RPC message must carry "jsonrpc": "2.0"';
  const hasId = Object.hasOwn(v, 'id');
  if (hasId && !isId(v['id'])) return 'a JSON-RPC id must be a string or an integer (MCP never uses null)';
  const id = hasId ? (v['id'] as string | number) : null;
  if (Object.hasOwn(v, 'method')) {
    const method = v['method'];
    if (typeof method !== 'string' || method === '') return 'a JSON-RPC method must be a non-empty string';
    if (Object.hasOwn(v, 'result') || Object.hasOwn(v, 'error')) return 'a message cannot be both a request and a response';
    const params = v['params'];
    if (params !== undefined && !isObject(params)) return `the params of ${method} must be an object`;
    if (method !== 'tools/call') return { kind: hasId ? 'request' : 'notification', method, id, tool: null, rule: null, args: null };
    if (!hasId) return 'tools/call must be a request (with an id), not a notification';
    const name = params?.['name'];
    if (typeof name !== 'string' || name === '') return 'tools/call needs params.name, the tool name as a string';
    const args = params?.['arguments'];
    if (args !== undefined && !isObject(args)) return 'the arguments of a tools/call must be an object';
    return { kind: 'request', method, id, tool: name, rule: toolRule(server, name), args: args ?? null };
  }
  const isResult = Object.hasOwn(v, 'result');
  if (isResult === Object.hasOwn(v, 'error')) return 'a JSON-RPC message needs a method (a request or notification) or exactly one of result and error (a response)';
  if (!hasId) return 'a JSON-RPC response needs the id of the request it answers';
  return { kind: 'response', method: null, id, tool: null, rule: null, args: null };
}

/** The opted-in arguments as strings, or the field that is not one scalar. */
function argumentsOf(rule: McpToolRule, args: Json | null): Record<string, string> | { readonly ambiguous: string } {
  const out: Record<string, string> = {};
  for (const field of rule.arguments) {
    let node: unknown = args;
    for (const part of field.split('.')) node = isObject(node) && Object.hasOwn(node, part) ? node[part] : undefined;
    if (node === undefined || node === null) continue;
    if (typeof node === 'object') return { ambiguous: field };
    out[field] = typeof node === 'string' ? node : JSON.stringify(node);
  }
  return out;
}

function classOf(server: McpServer, m: Message): { cls: string; risk: Risk; methodLabel: string; toolLabel: string; ruleId: string } {
  const base = `mcp.${server.name}.`;
  if (m.kind === 'response') return { cls: `${base}response`, risk: server.risk, methodLabel: 'response', toolLabel: '', ruleId: `mcp:${server.name}` };
  if (m.tool !== null) {
    const own = PLAIN_TOOL.test(m.tool) && !RESERVED_SEGMENTS.has(m.tool);
    return {
      cls: own ? `${base}${m.tool}` : `${base}tools.call`,
      risk: m.rule?.risk ?? server.risk,
      methodLabel: 'tools/call',
      toolLabel: m.rule?.glob ?? '(other)',
      ruleId: m.rule === null ? `mcp:${server.name}` : `mcp:${server.name}:${m.rule.glob}`,
    };
  }
  const known = Object.hasOwn(KNOWN_METHODS, m.method as string) ? KNOWN_METHODS[m.method as string] : undefined;
  if (known === undefined) return { cls: `${base}other`, risk: server.risk, methodLabel: 'other', toolLabel: '', ruleId: `mcp:${server.name}` };
  return { cls: `${base}${known.cls}`, risk: known.low ? 'low' : server.risk, methodLabel: m.method as string, toolLabel: '', ruleId: `mcp:${server.name}` };
}

/** Read and classify a POST body to `server`'s endpoint (already read whole, within the body limit). */
export function parseMcpBody(server: McpServer, body: Buffer): McpParse {
  const text = body.toString('utf8');
  const malformed = (message: string, rpcIds: readonly JsonRpcId[] = [null], batch = false): McpParse =>
    ({ ok: false, reason: 'mcp_malformed', message, rpcIds, batch });
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return malformed('the body of a request to an MCP endpoint must be JSON-RPC 2.0 (valid JSON)');
  }
  const batch = Array.isArray(parsed);
  const items: unknown[] = batch ? (parsed as unknown[]) : [parsed];
  if (items.length === 0) return malformed('an empty JSON-RPC batch carries no call');
  if (items.length > MAX_BATCH) return malformed(`a JSON-RPC batch may carry at most ${MAX_BATCH} messages`);
  const messages: Message[] = [];
  for (const [i, item] of items.entries()) {
    const m = readMessage(server, item);
    if (typeof m === 'string') return malformed(batch ? `message ${i + 1} of the batch: ${m}` : m);
    messages.push(m);
  }
  const rpcIds = messages.map((m) => m.id);
  const repeated = repeatedMcpKey(text, (i) => messages[i]?.rule?.argumentPaths ?? NO_PATHS);
  if (repeated !== null) {
    return { ok: false, reason: 'mcp_ambiguous', rpcIds, batch,
      message: `${batch ? `message ${repeated.message + 1} of the batch` : 'the message'} has the key ${repeated.key} more than once, which a server may read differently` };
  }
  const classes = messages.map((m) => classOf(server, m));
  const callLabels = Object.freeze(classes.map((c) => Object.freeze({ method: c.methodLabel, tool: c.toolLabel })));
  const calls: McpCall[] = [];
  for (const [index, m] of messages.entries()) {
    let args: Record<string, string> | null = null;
    if (m.rule !== null && m.rule.arguments.length > 0) {
      const a = argumentsOf(m.rule, m.args);
      if ('ambiguous' in a && typeof a.ambiguous === 'string') {
        return { ok: false, reason: 'mcp_ambiguous', rpcIds, batch,
          message: `${m.tool ?? 'the tool'} is checked on its argument ${a.ambiguous}, which must be a single value (a string, number or boolean)` };
      }
      args = a as Record<string, string>;
    }
    const c = classes[index] as ReturnType<typeof classOf>;
    calls.push({
      actionClass: c.cls,
      risk: c.risk,
      ruleId: c.ruleId,
      facts: Object.freeze({
        server: server.name, method: m.method, tool: m.tool, rpcId: m.id, arguments: args,
        methodLabel: c.methodLabel, toolLabel: c.toolLabel, rpcIds, callLabels, batch, index,
      }),
    });
  }
  return { ok: true, calls };
}

/** A GET (the server's stream) or DELETE (ending the session) on the endpoint; null for another method. */
export function exchangeCall(server: McpServer, httpMethod: string): McpCall | null {
  const suffix = httpMethod === 'GET' ? 'stream' : httpMethod === 'DELETE' ? 'session.end' : null;
  if (suffix === null) return null;
  return {
    actionClass: `mcp.${server.name}.${suffix}`,
    risk: 'low',
    ruleId: `mcp:${server.name}`,
    facts: requestFacts(server, suffix),
  };
}

/** The facts of a request to `server` before (or without) a message: no method, tool or id. */
export function requestFacts(server: McpServer, methodLabel = 'other'): McpFacts {
  return Object.freeze({
    server: server.name, method: null, tool: null, rpcId: null, arguments: null, methodLabel, toolLabel: '',
    rpcIds: [null], callLabels: [Object.freeze({ method: methodLabel, tool: '' })], batch: false, index: 0,
  });
}
