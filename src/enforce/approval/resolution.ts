/**
 * What a held request gets back from the approval queue: let through (approved, or by a standing
 * grant), or refused with a reason the 403 carries (stage `approval`, docs/errors.md).
 */

/** Why a held request was not let through (the 403's `reason`, stage `approval`). */
export type ApprovalDenyReason =
  | 'approval_denied'
  | 'approval_timeout'
  | 'approval_cancelled'
  | 'shutdown'
  | 'approval_capacity'
  | 'audit_unavailable';

export type ApprovalResolution =
  | { readonly kind: 'approved'; readonly approvalId: string; readonly approver: string; readonly via: 'approved' | 'grant' }
  | { readonly kind: 'denied'; readonly approvalId: string | null; readonly reason: ApprovalDenyReason; readonly message: string };

export function denied(approvalId: string | null, reason: ApprovalDenyReason, message: string): ApprovalResolution {
  return { kind: 'denied', approvalId, reason, message };
}
