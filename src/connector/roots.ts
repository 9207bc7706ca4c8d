import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';

/** Node's bundled roots plus NODE_EXTRA_CA_CERTS, because setting `ca` replaces both. */
export function bundledAndEnvRoots(): string[] {
  const roots: string[] = [...rootCertificates];
  const extra = process.env['NODE_EXTRA_CA_CERTS'];
  if (extra !== undefined && extra !== '') {
    try {
      roots.push(readFileSync(extra, 'utf8'));
    } catch {
      // Node itself only warns on an unreadable NODE_EXTRA_CA_CERTS; do the same (no crash, no trust).
    }
  }
  return roots;
}
