import type { Held } from '../../core/decision.js';
import type { ApprovalStep } from '../../core/approval.js';
import { denied, type ApprovalResolution } from './resolution.js';
import { StandingGrants, auditGrant, grantView, newGrant, type Grant } from './grants.js';
import {
  displayUrl,
  iso,
  mcpCallView,
  newId,
  type ApprovalActionResult,
  type ApprovalChange,
  type ApprovalView,
  type GrantView,
} from './views.js';

/**
 * The approval stage: requests that a policy permits only with a person's approval wait here, held
 * open, until someone approves or denies them, the timeout passes, or every agent waiting on them
 * disconnects. Identical requests from one agent share one approval. An approval may also give a
 * standing grant (see grants.ts) that later requests pass without asking. State is in memory on
 * purpose: a held request cannot outlive the process.
 */

/** Where approval steps are recorded; false = the log cannot take it (then nothing is held: fail closed). */
export interface ApprovalAudit {
  held(held: Held, approvalId: string): boolean;
  approval(step: ApprovalStep): boolean;
}

export interface ApprovalQueueOptions {
  readonly timeoutMs: number;
  readonly maxPending: number;
  readonly maxGrantMinutes: number;
  readonly audit: ApprovalAudit;
  /** Called once per new approval (the webhook); must not throw or block. */
  readonly notify?: (view: ApprovalView) => void;
  readonly now?: () => number;
}

export interface ApproveInput {
  /** Also give a standing grant for this many minutes (agent + action class, see `grantHost`). */
  readonly grantMinutes?: number | undefined;
  /** Limit the grant to this request's host. */
  readonly grantHost?: boolean | undefined;
  readonly reason?: string | undefined;
}

const AUDIT_DOWN = { ok: false, code: 'audit_unavailable', message: 'the audit log cannot be written; try again when it recovers' } as const;

interface Waiter {
  readonly requestId: string;
  readonly resolve: (r: ApprovalResolution) => void;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

interface Pending {
  readonly id: string;
  readonly key: string;
  readonly held: Held;
  readonly requestedAt: number;
  readonly expiresAt: number;
  readonly timer: NodeJS.Timeout;
  readonly waiters: Set<Waiter>;
}

/** Resolved approvals kept for `GET /approvals/:id` and for a clear 409 on a second approve. */
const RECENT_KEPT = 200;
const MAX_REASON_CHARS = 500;

export class ApprovalQueue {
  readonly #o: ApprovalQueueOptions;
  readonly #now: () => number;
  readonly #pending = new Map<string, Pending>();
  readonly #byKey = new Map<string, Pending>();
  readonly #recent = new Map<string, ApprovalView>();
  readonly #grants: StandingGrants;
  readonly #listeners = new Set<(change: ApprovalChange) => void>();
  #closed = false;

  constructor(opts: ApprovalQueueOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#grants = new StandingGrants({
      record: (step) => opts.audit.approval(step),
      now: this.#now,
      ended: () => this.#emit('grant'),
    });
  }

  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * Hold one request until its approval is resolved. `bodyHash` identifies the body for joining
   * identical requests (null: the body could not be hashed, so the request never joins another).
   * `signal` aborts when the agent disconnects.
   */
  wait(held: Held, opts: { bodyHash: string | null; signal: AbortSignal }): Promise<ApprovalResolution> {
    const e = held.envelope;
    const requestId = e.requestId;
    if (this.#closed) return Promise.resolve(denied(null, 'shutdown', 'the sidecar is shutting down'));
    if (opts.signal.aborted) return Promise.resolve(denied(null, 'approval_cancelled', 'the agent disconnected'));
    const t = e.target;
    const key = opts.bodyHash === null
      ? `unique\0${requestId}`
      : `${e.agentId}\0${e.method}\0${t.scheme}://${t.host}:${t.port}\0${e.path ?? ''}\0${e.query ?? ''}\0${opts.bodyHash}`;
    let p = this.#byKey.get(key);
    const isNew = p === undefined;
    if (p === undefined && this.#pending.size >= this.#o.maxPending) {
      return Promise.resolve(denied(null, 'approval_capacity', `${this.#o.maxPending} requests are already waiting for approval`));
    }
    const approvalId = p?.id ?? newId('apr');
    if (!this.#o.audit.held(held, approvalId)) {
      return Promise.resolve(denied(p === undefined ? null : approvalId, 'audit_unavailable', 'the audit log cannot be written, so nothing is held or sent until it can'));
    }
    if (p === undefined) {
      const ok = this.#o.audit.approval({ approvalId, action: 'requested', approver: null, reason: held.message, requestId, agentId: e.agentId });
      if (!ok) return Promise.resolve(denied(approvalId, 'audit_unavailable', 'the audit log cannot be written, so nothing is held or sent until it can'));
      const requestedAt = this.#now();
      const created: Pending = {
        id: approvalId,
        key,
        held,
        requestedAt,
        expiresAt: requestedAt + this.#o.timeoutMs,
        timer: setTimeout(() => this.#expire(approvalId), this.#o.timeoutMs),
        waiters: new Set(),
      };
      created.timer.unref();
      p = created;
      this.#pending.set(approvalId, created);
      this.#byKey.set(key, created);
    }
    const pending = p;
    const promise = new Promise<ApprovalResolution>((resolve) => {
      const waiter: Waiter = {
        requestId,
        resolve,
        signal: opts.signal,
        onAbort: () => this.#leave(pending, waiter),
      };
      pending.waiters.add(waiter);
      opts.signal.addEventListener('abort', waiter.onAbort, { once: true });
    });
    this.#emit('pending');
    if (isNew) this.#o.notify?.(this.#view(pending, 'pending', null, null));
    return promise;
  }

  /** A standing grant covering this request, counted as used; null when none. */
  useGrant(agentId: string, actionClass: string, host: string): { approvalId: string; grantedBy: string } | null {
    return this.#grants.use(agentId, actionClass, host);
  }

  approve(id: string, approver: string, input: ApproveInput = {}): ApprovalActionResult<{ approval: ApprovalView; grant: GrantView | null }> {
    const p = this.#pending.get(id);
    if (p === undefined) return this.#notPending(id);
    const reason = cleanReason(input.reason);
    if (reason === false) return badInput(`reason: at most ${MAX_REASON_CHARS} characters`);
    let grant: Grant | null = null;
    if (input.grantMinutes !== undefined) {
      const m = input.grantMinutes;
      if (!Number.isInteger(m) || m < 1 || m > this.#o.maxGrantMinutes) {
        return badInput(`grant_minutes: expected a whole number from 1 to ${this.#o.maxGrantMinutes}`);
      }
      grant = newGrant(p.held, p.id, approver, m, input.grantHost === true, this.#now());
    }
    const recorded = this.#o.audit.approval({
      approvalId: p.id,
      action: 'approved',
      approver,
      reason,
      requestId: p.held.envelope.requestId,
      agentId: p.held.envelope.agentId,
      grant: grant === null ? null : auditGrant(grant),
    });
    // An approval nobody can read about later did not happen: the request stays held, the approver is told.
    if (!recorded) return AUDIT_DOWN;
    if (grant !== null) this.#grants.add(grant);
    const view = this.#resolve(p, 'approved', approver, reason, { kind: 'approved', approvalId: p.id, approver, via: 'approved' });
    if (grant !== null) this.#emit('grant');
    return { ok: true, value: { approval: view, grant: grant === null ? null : grantView(grant) } };
  }

  deny(id: string, approver: string, reasonText?: string): ApprovalActionResult<ApprovalView> {
    const p = this.#pending.get(id);
    if (p === undefined) return this.#notPending(id);
    const reason = cleanReason(reasonText);
    if (reason === false) return badInput(`reason: at most ${MAX_REASON_CHARS} characters`);
    // A deny is safe to carry out unrecorded (the request is refused either way); the write is still tried.
    this.#o.audit.approval({ approvalId: p.id, action: 'denied', approver, reason, requestId: p.held.envelope.requestId, agentId: p.held.envelope.agentId });
    const message = `denied by ${approver}${reason === null ? '' : `: ${reason}`}`;
    return { ok: true, value: this.#resolve(p, 'denied', approver, reason, denied(p.id, 'approval_denied', message)) };
  }

  revokeGrant(id: string, by: string): ApprovalActionResult<GrantView> {
    return this.#grants.revoke(id, by);
  }

  get(id: string): ApprovalView | null {
    const p = this.#pending.get(id);
    if (p !== undefined) return this.#view(p, 'pending', null, null);
    return this.#recent.get(id) ?? null;
  }

  list(): { pending: ApprovalView[]; grants: GrantView[] } {
    return { pending: [...this.#pending.values()].map((p) => this.#view(p, 'pending', null, null)), grants: this.grants() };
  }

  grants(): GrantView[] {
    return this.#grants.list();
  }

  /** Live views subscribe here; returns the unsubscribe function. */
  subscribe(listener: (change: ApprovalChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Deny everything still pending with reason `shutdown` (audited); later requests are refused. */
  shutdown(): number {
    this.#closed = true;
    let n = 0;
    for (const p of [...this.#pending.values()]) {
      this.#o.audit.approval({ approvalId: p.id, action: 'denied', approver: null, reason: 'shutdown', requestId: p.held.envelope.requestId, agentId: p.held.envelope.agentId });
      this.#resolve(p, 'denied', null, 'shutdown', denied(p.id, 'shutdown', 'the sidecar is shutting down; pending approvals are denied'));
      n++;
    }
    return n;
  }

  #expire(id: string): void {
    const p = this.#pending.get(id);
    if (p === undefined) return;
    this.#o.audit.approval({ approvalId: p.id, action: 'expired', approver: null, reason: `no decision within ${this.#o.timeoutMs} ms`, requestId: p.held.envelope.requestId, agentId: p.held.envelope.agentId });
    this.#resolve(p, 'expired', null, 'timeout', denied(p.id, 'approval_timeout', `nobody approved this request within ${Math.round(this.#o.timeoutMs / 1000)} s`));
  }

  /** A waiting agent disconnected; the approval is cancelled when no one waits on it any more. */
  #leave(p: Pending, w: Waiter): void {
    if (!p.waiters.delete(w)) return;
    w.resolve(denied(p.id, 'approval_cancelled', 'the agent disconnected while waiting for approval'));
    if (p.waiters.size > 0 || !this.#pending.has(p.id)) {
      this.#emit('pending');
      return;
    }
    this.#o.audit.approval({ approvalId: p.id, action: 'cancelled', approver: null, reason: 'agent_disconnected', requestId: w.requestId, agentId: p.held.envelope.agentId });
    this.#resolve(p, 'cancelled', null, 'agent_disconnected', null);
  }

  #resolve(
    p: Pending,
    state: ApprovalView['state'],
    by: string | null,
    reason: string | null,
    resolution: ApprovalResolution | null,
  ): ApprovalView {
    clearTimeout(p.timer);
    this.#pending.delete(p.id);
    if (this.#byKey.get(p.key) === p) this.#byKey.delete(p.key);
    const view = this.#view(p, state, by, reason);
    const waiters = [...p.waiters];
    p.waiters.clear();
    for (const w of waiters) {
      w.signal.removeEventListener('abort', w.onAbort);
      if (resolution !== null) w.resolve(resolution);
    }
    this.#recent.set(p.id, view);
    if (this.#recent.size > RECENT_KEPT) {
      const oldest = this.#recent.keys().next();
      if (oldest.done !== true) this.#recent.delete(oldest.value);
    }
    this.#emit('resolved');
    return view;
  }

  #notPending(id: string): ApprovalActionResult<never> {
    const done = this.#recent.get(id);
    if (done !== undefined) return { ok: false, code: 'already_resolved', message: `approval ${id} is already ${done.state}` };
    return { ok: false, code: 'not_found', message: `no approval ${id}` };
  }

  #view(p: Pending, state: ApprovalView['state'], by: string | null, reason: string | null): ApprovalView {
    const e = p.held.envelope;
    return {
      id: p.id,
      state,
      agent_id: e.agentId,
      method: e.method,
      url: displayUrl(p.held),
      host: e.target.host,
      action_class: e.actionClass ?? '',
      risk: e.risk,
      policy_ids: p.held.policyIds,
      reason: p.held.message,
      body_fields: e.body,
      mcp: mcpCallView(e),
      requested_at: iso(p.requestedAt),
      expires_at: iso(p.expiresAt),
      waiting: p.waiters.size,
      request_ids: [...p.waiters].map((w) => w.requestId),
      resolved_by: by,
      resolution_reason: reason,
    };
  }

  #emit(change: ApprovalChange): void {
    for (const l of this.#listeners) {
      try {
        l(change);
      } catch {
        // A broken live view must not disturb the queue.
      }
    }
  }
}

function badInput(message: string): ApprovalActionResult<never> {
  return { ok: false, code: 'bad_input', message };
}

/** Trimmed, single-line reason text; null when empty; false when too long. */
function cleanReason(text: string | undefined): string | null | false {
  if (text === undefined) return null;
  const t = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  if (t === '') return null;
  return t.length > MAX_REASON_CHARS ? false : t;
}
