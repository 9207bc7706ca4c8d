import { FirmaError } from '../core/errors.js';

/** Why the audit writer refused to open, or gave up on close (docs/errors.md). */
export class AuditWriterError extends FirmaError {
  constructor(code: 'FIRMA_AUDIT_CORRUPT' | 'FIRMA_AUDIT_OPEN' | 'FIRMA_AUDIT_REPAIR' | 'FIRMA_AUDIT_UNAVAILABLE', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'AuditWriterError';
  }
}
