/**
 * What the approval stage reports to the audit log (docs/audit.md, `approval` events). Here, not in
 * enforce/ or audit/, because both sides speak it and neither may import the other.
 */
/** `abandoned`: still open when the sidecar died (SIGKILL); the audit writer closes it at the next start. */
export type ApprovalAction = 'requested' | 'approved' | 'denied' | 'expired' | 'cancelled' | 'revoked' | 'abandoned';

/** What a standing grant lets through without asking: this agent, this action class (on this host). */
export interface GrantRecord {
  readonly id: string;
  readonly agent_id: string;
  readonly action_class: string;
  /** null: any host. */
  readonly host: string | null;
  /** RFC 3339 UTC. */
  readonly expires_at: string;
}

/** One step of an approval, as the approval stage reports it. */
export interface ApprovalStep {
  readonly approvalId: string;
  readonly action: ApprovalAction;
  /** The approver's configured name; null when no person acted. */
  readonly approver: string | null;
  readonly reason: string | null;
  readonly requestId: string | null;
  readonly agentId: string | null;
  readonly grant?: GrantRecord | null;
}
