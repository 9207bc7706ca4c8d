/**
 * The MCP methods the sidecar knows (docs/mcp.md "Classification"): each gets the action class
 * `mcp.<server>.<method with "/" → ".">` (lowercased where the method is mixed case), and listings,
 * handshakes and notifications are `low` risk; every other known method takes the server's risk.
 * A method outside this list is `mcp.<server>.other`, at the server's risk, so its name (chosen by the
 * client) can never collide with a tool's class or pick its own.
 */
export const KNOWN_METHODS: Readonly<Record<string, { readonly cls: string; readonly low: boolean }>> = Object.freeze({
  'initialize': { cls: 'initialize', low: true },
  'ping': { cls: 'ping', low: true },
  'tools/list': { cls: 'tools.list', low: true },
  'resources/list': { cls: 'resources.list', low: true },
  'resources/templates/list': { cls: 'resources.templates.list', low: true },
  'resources/read': { cls: 'resources.read', low: false },
  'resources/subscribe': { cls: 'resources.subscribe', low: false },
  'resources/unsubscribe': { cls: 'resources.unsubscribe', low: true },
  'prompts/list': { cls: 'prompts.list', low: true },
  'prompts/get': { cls: 'prompts.get', low: false },
  'completion/complete': { cls: 'completion.complete', low: false },
  'logging/setLevel': { cls: 'logging.setlevel', low: false },
  'notifications/initialized': { cls: 'notifications.initialized', low: true },
  'notifications/cancelled': { cls: 'notifications.cancelled', low: true },
  'notifications/progress': { cls: 'notifications.progress', low: true },
  'notifications/roots/list_changed': { cls: 'notifications.roots.list_changed', low: true },
});

/**
 * Class suffixes of everything that is not a tool of its own: the known methods, the HTTP exchanges on
 * the endpoint (`stream` for GET, `session.end` for DELETE), a response the client sends (`response`),
 * an unknown method (`other`), and a tool whose name cannot be a class segment (`tools.call`).
 */
export const KNOWN_METHOD_CLASSES: readonly string[] = Object.freeze([
  ...Object.values(KNOWN_METHODS).map((m) => m.cls),
  'stream', 'session.end', 'response', 'other', 'tools.call',
]);
