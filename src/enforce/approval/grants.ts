import type { Held } from '../../core/decision.js';
import type { ApprovalStep, GrantRecord } from '../../core/approval.js';
import { iso, newId, type ApprovalActionResult, type GrantView } from './views.js';

/**
 * Standing grants: an approval may also let this agent + action class (optionally one host) through
 * for N minutes without asking again. Every end of a grant (revoked, expired) is audited.
 */

/** A standing grant as the queue keeps it. */
export interface Grant {
  readonly id: string;
  readonly approvalId: string;
  readonly agentId: string;
  readonly actionClass: string;
  readonly host: string | null;
  readonly grantedBy: string;
  readonly grantedAt: number;
  readonly expiresAt: number;
  uses: number;
}

export interface StandingGrantsOptions {
  /** Records an approval step (the queue's audit port); a grant's end is recorded whatever it returns. */
  readonly record: (step: ApprovalStep) => boolean;
  readonly now: () => number;
  /** A grant ended (for live views). */
  readonly ended: () => void;
}

export class StandingGrants {
  readonly #o: StandingGrantsOptions;
  readonly #grants = new Map<string, Grant>();

  constructor(opts: StandingGrantsOptions) {
    this.#o = opts;
  }

  /** A standing grant covering this request, counted as used; null when none. */
  use(agentId: string, actionClass: string, host: string): { approvalId: string; grantedBy: string } | null {
    if (this.#grants.size === 0) return null;
    const now = this.#o.now();
    for (const g of this.#grants.values()) {
      if (g.expiresAt <= now) {
        this.#end(g, 'expired', null);
        continue;
      }
      if (g.agentId === agentId && g.actionClass === actionClass && (g.host === null || g.host === host)) {
        g.uses++;
        return { approvalId: g.approvalId, grantedBy: g.grantedBy };
      }
    }
    return null;
  }

  add(g: Grant): void {
    this.#grants.set(g.id, g);
  }

  revoke(id: string, by: string): ApprovalActionResult<GrantView> {
    const g = this.#grants.get(id);
    if (g === undefined) return { ok: false, code: 'not_found', message: `no active grant ${id}` };
    this.#end(g, 'revoked', by);
    return { ok: true, value: grantView(g) };
  }

  /** The active grants (expired ones are ended first). */
  list(): GrantView[] {
    const now = this.#o.now();
    for (const g of this.#grants.values()) if (g.expiresAt <= now) this.#end(g, 'expired', null);
    return [...this.#grants.values()].map(grantView);
  }

  #end(g: Grant, action: 'revoked' | 'expired', by: string | null): void {
    if (!this.#grants.delete(g.id)) return;
    this.#o.record({
      approvalId: g.approvalId,
      action,
      approver: by,
      reason: action === 'expired' ? 'grant expired' : 'grant revoked',
      requestId: null,
      agentId: g.agentId,
      grant: auditGrant(g),
    });
    this.#o.ended();
  }
}

/** The grant an approval of `held` gives for `minutes` (already validated), from `now`. */
export function newGrant(held: Held, approvalId: string, approver: string, minutes: number, hostOnly: boolean, now: number): Grant {
  const e = held.envelope;
  return {
    id: newId('grt'),
    approvalId,
    agentId: e.agentId,
    actionClass: e.actionClass ?? '',
    host: hostOnly ? e.target.host : null,
    grantedBy: approver,
    grantedAt: now,
    expiresAt: now + minutes * 60_000,
    uses: 0,
  };
}

export function auditGrant(g: Grant): GrantRecord {
  return { id: g.id, agent_id: g.agentId, action_class: g.actionClass, host: g.host, expires_at: iso(g.expiresAt) };
}

export function grantView(g: Grant): GrantView {
  return {
    id: g.id,
    approval_id: g.approvalId,
    agent_id: g.agentId,
    action_class: g.actionClass,
    host: g.host,
    granted_by: g.grantedBy,
    granted_at: iso(g.grantedAt),
    expires_at: iso(g.expiresAt),
    uses: g.uses,
  };
}
