/**
 * An MCP server on the official SDK's Streamable HTTP server transport (loopback HTTP, stateless), and
 * the SDK's `Client` sending through the sidecar the way docs/mcp.md "Client setup" says (undici fetch
 * with a ProxyAgent as the transport's `fetch`).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fetch as undiciFetch, ProxyAgent } from 'undici';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

/** What the MCP server was sent and did. */
export interface McpUpstream {
  readonly server: Server;
  readonly port: number;
  /** `http://127.0.0.1:<port>/mcp` */
  readonly url: string;
  /** Every parsed POST body, in order. */
  readonly bodies: unknown[];
  /** Tool calls the server ran, as `name` and arguments. */
  readonly calls: Array<{ name: string; arguments: unknown }>;
  close(): Promise<void>;
}

function tools(up: McpUpstream): McpServer {
  const server = new McpServer({ name: 'tracker', version: '1.0.0' });
  const ran = (name: string, args: unknown): void => {
    up.calls.push({ name, arguments: args });
  };
  server.registerTool('search', { inputSchema: { query: z.string() } }, (a) => {
    ran('search', a);
    return { content: [{ type: 'text', text: `found: ${a.query}` }] };
  });
  server.registerTool('create_item', { inputSchema: { title: z.string(), project: z.string(), note: z.string().optional() } }, (a) => {
    ran('create_item', a);
    return { content: [{ type: 'text', text: `created: ${a.title}` }] };
  });
  server.registerTool('delete_item', { inputSchema: { id: z.string() } }, (a) => {
    ran('delete_item', a);
    return { content: [{ type: 'text', text: 'deleted' }] };
  });
  return server;
}

/**
 * One request to a stateless Streamable HTTP MCP endpoint: the POST body parsed and kept in `bodies`,
 * then a fresh server (from `makeServer`) and transport answer it.
 */
export async function serveStatelessMcp(makeServer: () => McpServer, bodies: unknown[], req: IncomingMessage, res: ServerResponse): Promise<void> {
  let parsed: unknown;
  if (req.method === 'POST') {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    bodies.push(parsed);
  }
  const server = makeServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    void transport.close();
    void server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, parsed);
}

/** The MCP server with the tools `search`, `create_item` and `delete_item`, on 127.0.0.1. */
export async function startMcpUpstream(): Promise<McpUpstream> {
  const up = { bodies: [], calls: [] } as unknown as McpUpstream;
  const server = createServer((req, res) => {
    serveStatelessMcp(() => tools(up), up.bodies, req, res).catch(() => res.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  Object.assign(up, {
    server,
    port,
    url: `http://127.0.0.1:${port}/mcp`,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  });
  return up;
}

/** The SDK client connected (initialize done) to `url` through the sidecar's proxy listener. */
export async function connectMcp(proxyUrl: string, url: string): Promise<Client> {
  const agent = new ProxyAgent({ uri: proxyUrl });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    fetch: (u, init) => undiciFetch(u as string, { ...(init as object), dispatcher: agent }) as unknown as Promise<Response>,
  });
  const client = new Client({ name: 'e2e-agent', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

/** The call's rejection (a sidecar denial or a server error), or null when it succeeded. */
export function rejection(p: Promise<unknown>): Promise<Error | null> {
  return p.then(() => null, (e: unknown) => (e instanceof Error ? e : new Error(String(e))));
}
