import type { IncomingMessage } from 'node:http';

/** Whether the request carries a body at all (chunked, or a non-zero Content-Length). */
export function hasRequestBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const cl = req.headers['content-length'];
  return cl !== undefined && cl !== '0';
}
