/**
 * Every error the sidecar raises on purpose is a FirmaError with a stable `code`, so callers branch on
 * codes rather than on message text (the undici/fastify convention). Messages are for humans and must
 * never contain secret material.
 */
export class FirmaError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FirmaError';
    this.code = code;
  }
}

/** Narrowing helper for `catch (err: unknown)` blocks. */
export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}
