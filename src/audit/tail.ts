import type { AuditDecision, AuditEvent, DecisionEvent, OutcomeEvent } from './events.js';
import { usageText } from './usage-records.js';

export interface TailFilter {
  readonly decision?: AuditDecision | string;
  readonly agent?: string;
  readonly host?: string;
}

/** `  mcp=tracker tools/call delete_item #7` for a request to an MCP endpoint (older events have no mcp field). */
function mcpPart(e: DecisionEvent): string {
  const m = e.mcp;
  if (m === null || m === undefined) return '';
  const parts = [`mcp=${m.server}`, m.method ?? '-', ...(m.tool === null ? [] : [JSON.stringify(m.tool)]), ...(m.rpc_id === null ? [] : [`#${String(m.rpc_id)}`])];
  return `  ${parts.join(' ')}${m.calls > 1 ? ` (batch of ${m.calls})` : ''}`;
}

const short = (id: string | null): string => (id === null ? '-' : id.length > 8 ? `${id.slice(0, 8)}…` : id);

/**
 * One readable line per event for `firma audit tail`, fields separated by two spaces, e.g.
 * `2026-11-22T10:00:00.123Z  deny  agent-7  POST api.stripe.com/v1/refunds  payments.refund/high  policy:policy_deny (limit.refunds)  req=ab12cd34…`.
 */
export function formatEventLine(e: AuditEvent): string {
  const agent = e.agent_id ?? '-';
  const req = `req=${short(e.request_id)}`;
  switch (e.type) {
    case 'decision': {
      const port = (e.scheme === 'https' && e.port === 443) || (e.scheme === 'http' && e.port === 80) ? '' : `:${e.port}`;
      const cls = `${e.action_class ?? 'unclassified'}/${e.risk ?? '-'}${mcpPart(e)}`;
      // The reason says why; the rule (mapping or policy file:line) says where it was decided.
      const why = e.rule === null ? `${e.stage}:${e.reason}` : `${e.stage}:${e.reason} (${e.rule})`;
      const monitor = e.would_deny === null ? '' : `  would_deny=${e.would_deny}`;
      return `${e.ts}  ${e.decision}  ${agent}  ${e.method} ${e.host}${port}${e.path}  ${cls}  ${why}${monitor}  ${req}`;
    }
    case 'outcome': {
      const result = e.error === null ? String(e.status ?? '-') : `${e.error}${e.error_code === null ? '' : `(${e.error_code})`}`;
      const cred = e.credential_injected ? '  cred' : '';
      return `${e.ts}  outcome  ${agent}  ${result}  in=${e.bytes_in}B out=${e.bytes_out}B  ${e.duration_ms}ms${cred}${usageText(e)}  ${req}`;
    }
    case 'approval':
      return `${e.ts}  approval  ${agent}  ${e.action} ${e.approval_id}  by=${e.approver ?? '-'}${e.reason === null ? '' : `  ${e.reason}`}  ${req}`;
    case 'lifecycle':
      return `${e.ts}  lifecycle  ${e.event}${e.detail === null ? '' : `  ${e.detail}`}`;
  }
}

/**
 * Tail filters. `decision` and `host` only match decision events (the others carry neither field; a
 * caller wanting the outcomes too can follow their `request_id`); `host` is case-insensitive.
 */
export function filterEvent(e: AuditEvent, f: TailFilter): boolean {
  if (f.agent !== undefined && e.agent_id !== f.agent) return false;
  if (f.decision !== undefined && (e.type !== 'decision' || e.decision !== f.decision)) return false;
  if (f.host !== undefined && (e.type !== 'decision' || e.host.toLowerCase() !== f.host.toLowerCase())) return false;
  return true;
}

/** Most decisions kept waiting for their outcome; past it the oldest is printed as in progress. */
const MAX_PENDING = 10_000;

/**
 * `firma audit tail` is read per request: a dispatched request's decision and outcome become one line
 * (`… allow … → 200 in=…B out=…B 12ms  req=…`); a deny, which has no outcome, is one line at once.
 * A decision whose outcome has not come yet (a long stream; or the end of the log) is printed by
 * `flush` as `(in progress)`, and its outcome later gets a line of its own. Filters apply to the
 * request, so `--decision allow` shows its outcome too. Events need no `sig` (checkpoint mode).
 */
export class RequestTail {
  readonly #filter: TailFilter;
  readonly #out: (line: string) => void;
  readonly #now: () => number;
  readonly #pending = new Map<string, { readonly event: DecisionEvent; readonly at: number }>();
  /** Requests whose decision the filter dropped, so their outcome is dropped too. */
  readonly #skipped = new Set<string>();

  constructor(filter: TailFilter, out: (line: string) => void, now: () => number = Date.now) {
    this.#filter = filter;
    this.#out = out;
    this.#now = now;
  }

  push(e: AuditEvent): void {
    // A checkpoint is bookkeeping of the signatures (up to ten a second under load): shown only when it
    // signed what a killed run left unsigned (docs/audit.md "Checkpoints").
    if (e.type === 'lifecycle' && e.event === 'checkpoint' && !e.recovered) return;
    if (e.type === 'decision') {
      const dispatched = (e.decision === 'allow' || e.decision === 'passthrough') && e.request_id !== null;
      if (!filterEvent(e, this.#filter)) {
        if (dispatched) this.#bounded(this.#skipped).add(e.request_id as string);
        return;
      }
      if (!dispatched) return this.#out(formatEventLine(e));
      if (this.#pending.size >= MAX_PENDING) this.#printOldest();
      this.#pending.set(e.request_id as string, { event: e, at: this.#now() });
      return;
    }
    if (e.type === 'outcome' && e.request_id !== null) {
      const p = this.#pending.get(e.request_id);
      if (p !== undefined) {
        this.#pending.delete(e.request_id);
        return this.#out(formatRequestLine(p.event, e));
      }
      if (this.#skipped.delete(e.request_id)) return;
      // Its decision was printed as in progress, or is in a file not read: the outcome alone.
      const agentOk = this.#filter.agent === undefined || e.agent_id === this.#filter.agent;
      if (agentOk) this.#out(formatEventLine(e));
      return;
    }
    if (filterEvent(e, this.#filter)) this.#out(formatEventLine(e));
  }

  /** Print the decisions that waited at least `olderThanMs` for their outcome, as in progress. */
  flush(olderThanMs = 0): void {
    const cutoff = this.#now() - olderThanMs;
    for (const [id, p] of this.#pending) {
      if (p.at > cutoff) break; // insertion order is arrival order
      this.#pending.delete(id);
      this.#out(`${formatEventLine(p.event)}  (in progress)`);
    }
  }

  #printOldest(): void {
    const first = this.#pending.entries().next();
    if (first.done === true) return;
    const [id, p] = first.value;
    this.#pending.delete(id);
    this.#out(`${formatEventLine(p.event)}  (in progress)`);
  }

  #bounded(set: Set<string>): Set<string> {
    if (set.size >= MAX_PENDING) {
      const oldest = set.values().next();
      if (oldest.done !== true) set.delete(oldest.value);
    }
    return set;
  }
}

/** A dispatched request on one line: its decision, then `→` what came of it. */
export function formatRequestLine(d: DecisionEvent, o: OutcomeEvent): string {
  const decision = formatEventLine(d);
  const cut = decision.lastIndexOf('  req=');
  const result = o.error === null ? String(o.status ?? '-') : `${o.error}${o.error_code === null ? '' : `(${o.error_code})`} ${o.status ?? '-'}`;
  const cred = o.credential_injected ? '  cred' : '';
  // An LLM call's tokens and cost (docs/llm.md "firma usage"); "" for other requests.
  return `${decision.slice(0, cut)}  → ${result}  in=${o.bytes_in}B out=${o.bytes_out}B  ${o.duration_ms}ms${cred}${usageText(o)}${decision.slice(cut)}`;
}
