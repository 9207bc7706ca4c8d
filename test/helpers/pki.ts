import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A CA and a server certificate for the test upstreams, made with the openssl CLI (independent of our code). */
export interface UpstreamPki {
  readonly caPem: string;
  readonly caPath: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/** Whether the openssl CLI is here (tests that cross-check our certificates with it skip without it). */
export function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

let cached: UpstreamPki | null = null;

export function upstreamPki(): UpstreamPki {
  if (cached !== null) return cached;
  const dir = mkdtempSync(join(tmpdir(), 'firma-upstream-pki-'));
  const run = (args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  };
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt',
    '-days', '2', '-subj', '/CN=Firma Test Upstream CA', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr',
    '-subj', '/CN=localhost']);
  writeFileSync(join(dir, 'ext.cnf'),
    'subjectAltName=DNS:localhost,DNS:upstream.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  run(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.crt',
    '-days', '2', '-extfile', 'ext.cnf']);
  cached = {
    caPem: readFileSync(join(dir, 'ca.crt'), 'utf8'),
    caPath: join(dir, 'ca.crt'),
    certPem: readFileSync(join(dir, 'srv.crt'), 'utf8'),
    keyPem: readFileSync(join(dir, 'srv.key'), 'utf8'),
  };
  return cached;
}
