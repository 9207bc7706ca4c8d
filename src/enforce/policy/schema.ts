/**
 * The Cedar schema stage 2 policies are validated against (docs/architecture.md "Enforce"), namespace `Firma`:
 *
 *   principal  Firma::Agent::"<agent id>"                      (no attributes)
 *   action     Firma::Action::"<action class>"                 (e.g. "payments.refund")
 *   resource   Firma::Resource::"<host><path>"                 { host, path }
 *   context    method, path, host, risk, hour, weekday, count_*, llm_* and an optional `body` record
 *
 * Actions. Action classes are open-ended (they come from the mapping rules), and Cedar's validator
 * rejects any action a policy names that the schema does not declare. So the schema is built at load
 * time from the classes the mapping table knows: a typo such as `Action::"paymnets.refund"` is then a
 * startup error instead of a policy that silently never matches. Each dotted prefix also becomes an
 * action *group* named `<prefix>.*`, so `action in Firma::Action::"payments.*"` covers every
 * `payments.…` class (groups nest: "github.repo.delete" ∈ "github.repo.*" ∈ "github.*"). Group names
 * end in `.*`, which no action class can, so a group and a class never collide. The hierarchy is
 * derived from the names alone, so the engine can resolve it for any class without the schema.
 *
 * Body. `context.body` is optional (present only when the mapping rule opted into body fields) and is a
 * closed record whose attributes are all optional and typed: Cedar has no "any" type, and an open record
 * would let policies test `has` but never read a value. Policies therefore write
 * `context has body && context.body has amount && context.body.amount > 100`; the validator rejects the
 * unguarded form. The typed field list is DEFAULT_BODY_FIELDS plus whatever the caller adds; a dotted
 * field name is one attribute (`context.body["metadata.order_id"]`).
 *
 * MCP. `context.mcp` is present only on a request to a declared MCP endpoint (docs/mcp.md "Policies"):
 * the JSON-RPC method and the tool name as sent ("" when there is none), and the argument fields the
 * tool rules opt into, each an optional String (the schema cannot know a tool's argument types: numbers
 * and booleans arrive as their JSON text).
 */
import { ConfigError } from '../../config/index.js';
import type { ConfigIssue } from '../../config/index.js';

export type BodyFieldType = 'Long' | 'String' | 'Boolean';

/** Code-unit order (locale-independent): how schema text, policy ids and file names are sorted. */
export function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export const AGENT_TYPE = 'Firma::Agent';
export const ACTION_TYPE = 'Firma::Action';
export const RESOURCE_TYPE = 'Firma::Resource';

/** Body fields the shipped mapping packs opt into (Stripe amounts, currency, payout destination). */
export const DEFAULT_BODY_FIELDS: Readonly<Record<string, BodyFieldType>> = Object.freeze({
  amount: 'Long',
  amount_to_capture: 'Long',
  currency: 'String',
  destination: 'String',
});

/** The fixed part of the schema; `@BODY@`, `@MCP_ARGUMENTS@` and `@ACTIONS@` are filled in by `firmaSchemaText`. */
export const FIRMA_SCHEMA_TEMPLATE = `namespace Firma {
  // The agent that sent the request: its authenticated agent id.
  entity Agent;

  // Where the request goes. The entity id is host + path ("api.stripe.com/v1/refunds").
  entity Resource = {
    host: String,  // canonical lowercase host
    path: String,  // normalised path, without the query string
  };

  // JSON body fields, present only when the mapping rule opted into them (body_fields).
  type Body = {
@BODY@
  };

  // The MCP message, on requests to a declared MCP endpoint ([[mcp.servers]]).
  type McpArguments = {
@MCP_ARGUMENTS@
  };
  type Mcp = {
    method: String,              // JSON-RPC method ("tools/call"); "" for a response, a GET stream or a DELETE
    tool: String,                // tools/call: the tool name exactly as sent; else ""
    arguments: McpArguments,     // the opted-in argument fields ([[mcp.servers.tools]] arguments)
  };

  type RequestContext = {
    method: String,              // "GET", "POST", …
    path: String,                // same as resource.path
    host: String,                // same as resource.host
    risk: String,                // "low" | "medium" | "high" | "critical" (mapping rule)
    hour: Long,                  // 0..23, UTC
    weekday: Long,               // 0 = Sunday .. 6, UTC
    count_minute: Long,          // this agent's allowed requests in the last 60 s, all classes
    count_hour: Long,            // … in the last hour, all classes
    count_minute_class: Long,    // … in the last 60 s, this action class only
    count_hour_class: Long,      // … in the last hour, this action class only
    llm_tokens_hour: Long,       // this agent's LLM input + output tokens in the current UTC hour
    llm_tokens_day: Long,        // … in the current UTC day
    llm_cost_hour: decimal,      // this agent's LLM cost in USD in the current UTC hour (4 decimal places)
    llm_cost_day: decimal,       // … in the current UTC day
    body?: Body,
    mcp?: Mcp,
  };

@ACTIONS@
}
`;

/** The attributes of `RequestContext` above, in the order a request's context is built. */
export const CONTEXT_KEYS = [
  'method', 'path', 'host', 'risk', 'hour', 'weekday',
  'count_minute', 'count_hour', 'count_minute_class', 'count_hour_class', 'body', 'mcp',
  'llm_tokens_hour', 'llm_tokens_day', 'llm_cost_hour', 'llm_cost_day',
] as const;
export type ContextKey = (typeof CONTEXT_KEYS)[number];

/** The attributes that need the agent's LLM usage totals (read from the ledger only when a policy reads one). */
export const LLM_CONTEXT_KEYS: ReadonlySet<ContextKey> = new Set(['llm_tokens_hour', 'llm_tokens_day', 'llm_cost_hour', 'llm_cost_day']);

const ACTION_CLASS = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;
const ACTION_GROUP = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.\*$/;
const BODY_FIELD = /^[A-Za-z0-9_$-]+(?:\.[A-Za-z0-9_$-]+)*$/;

/** `a.b.c` → `["a.b.*", "a.*"]` (nearest first); `a` → `[]`; `a.b.*` → `["a.*"]`. */
export function actionGroupsOf(name: string): string[] {
  const base = name.endsWith('.*') ? name.slice(0, -2) : name;
  const groups: string[] = [];
  for (let i = base.lastIndexOf('.'); i > 0; i = base.lastIndexOf('.', i - 1)) groups.push(`${base.slice(0, i)}.*`);
  return groups;
}

export function isActionGroup(name: string): boolean {
  return name.endsWith('.*');
}

export interface SchemaOptions {
  /** Action classes the policies may name (normally every class the mapping rules produce). */
  readonly actionClasses: readonly string[];
  /** Extra groups to declare even when no class falls under them (only used when deriving actions from policies). */
  readonly actionGroups?: readonly string[];
  readonly bodyFields: Readonly<Record<string, BodyFieldType>>;
  /** Argument fields of `context.mcp.arguments` (all String). */
  readonly mcpArguments?: readonly string[];
}

function issue(message: string): ConfigIssue {
  return { file: '<schema>', line: 1, col: 1, key: '', message };
}

/** The complete schema text for these action classes and body fields; ConfigError on unusable names. */
export function firmaSchemaText(opts: SchemaOptions): string {
  const issues: ConfigIssue[] = [];
  const classes = new Set<string>();
  for (const c of opts.actionClasses) {
    if (ACTION_CLASS.test(c)) classes.add(c);
    else issues.push(issue(`action class ${JSON.stringify(c)} cannot be a Cedar action (dot-separated segments of A-Z a-z 0-9 _ - only)`));
  }
  const groups = new Set<string>();
  for (const g of opts.actionGroups ?? []) {
    if (ACTION_GROUP.test(g)) groups.add(g);
    else issues.push(issue(`action group ${JSON.stringify(g)} is not of the form "prefix.*"`));
  }
  for (const name of [...classes, ...groups]) for (const g of actionGroupsOf(name)) groups.add(g);
  const body: string[] = [];
  for (const [field, type] of Object.entries(opts.bodyFields).sort(([a], [b]) => compare(a, b))) {
    if (!BODY_FIELD.test(field)) issues.push(issue(`body field ${JSON.stringify(field)} is not a usable name`));
    else body.push(`    ${JSON.stringify(field)}?: ${type === 'Boolean' ? 'Bool' : type},`);
  }
  const mcpArguments: string[] = [];
  for (const field of [...new Set(opts.mcpArguments ?? [])].sort(compare)) {
    if (!BODY_FIELD.test(field)) issues.push(issue(`MCP argument field ${JSON.stringify(field)} is not a usable name`));
    else mcpArguments.push(`    ${JSON.stringify(field)}?: String,`);
  }
  if (issues.length > 0) throw new ConfigError(issues);

  const parentClause = (name: string): string => {
    const parent = actionGroupsOf(name)[0];
    return parent === undefined ? '' : ` in [${JSON.stringify(parent)}]`;
  };
  const actions: string[] = [];
  // Sorted so the same inputs always give the same text (and the same validation messages).
  for (const g of [...groups].sort()) actions.push(`  action ${JSON.stringify(g)}${parentClause(g)};`);
  for (const c of [...classes].sort()) {
    actions.push(`  action ${JSON.stringify(c)}${parentClause(c)} appliesTo { principal: Agent, resource: Resource, context: RequestContext };`);
  }
  if (classes.size === 0) {
    // A schema with no request-capable action makes every policy "impossible"; keep one placeholder so
    // validation still type-checks the conditions.
    actions.push('  action "firma.none" appliesTo { principal: Agent, resource: Resource, context: RequestContext };');
  }
  return FIRMA_SCHEMA_TEMPLATE.replace('@BODY@', body.join('\n')).replace('@MCP_ARGUMENTS@', mcpArguments.join('\n')).replace('@ACTIONS@', actions.join('\n'));
}
