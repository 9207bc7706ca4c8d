/**
 * Checks across the keys of one firma.toml entry or list (firma-config.ts refines with them): keys
 * that belong to another mode, two entries that collide.
 */
import type { UpstreamHostKey } from './validators.js';

export function hostKey(h: UpstreamHostKey): string {
  return h.port === null ? h.host : `${h.host}:${h.port}`;
}

/**
 * Two entries that would set the same header on the same host and port (`h` means 443, and 80 too
 * with allow_plaintext; so `h` and `h:443` collide): the agent would get the header twice.
 */
export function duplicateCredential(creds: ReadonlyArray<{ host: UpstreamHostKey; header: string; allow_plaintext: boolean }>): string | undefined {
  const seen = new Map<string, number>();
  for (const [i, c] of creds.entries()) {
    const ports = c.host.port !== null ? [c.host.port] : c.allow_plaintext ? [443, 80] : [443];
    for (const port of ports) {
      const key = `${c.host.host}:${port} ${c.header.toLowerCase()}`;
      const first = seen.get(key);
      if (first !== undefined) {
        return `duplicate host and header ${JSON.stringify(`${hostKey(c.host)} ${c.header.toLowerCase()}`)}: entries ${first + 1} and ${i + 1} both set ${c.header} for ${c.host.host}:${port}`;
      }
      seen.set(key, i);
    }
  }
  return undefined;
}

/** A message naming the first repeated key, or undefined. */
export function duplicateOf(keys: readonly string[], what: string): string | undefined {
  const seen = new Map<string, number>();
  for (const [i, k] of keys.entries()) {
    const first = seen.get(k);
    if (first !== undefined) return `duplicate ${what} ${JSON.stringify(k)} (entries ${first + 1} and ${i + 1})`;
    seen.set(k, i);
  }
  return undefined;
}

interface CredentialFields {
  mode: 'basic' | 'vault';
  value_from_env?: string | undefined;
  secret_path?: unknown;
}

/**
 * Mode-specific keys. Whether a "basic" variable is set is not part of the file's validity: only the
 * process that injects the value needs it (see `unsetCredentialVariables`, docs/configuration.md "[[credentials]]").
 */
export function checkCredential(c: CredentialFields): string | undefined {
  if (c.mode === 'basic') {
    if (c.secret_path !== undefined) return 'secret_path is for mode = "vault"';
    if (c.value_from_env === undefined) return 'mode = "basic" needs value_from_env';
    return undefined;
  }
  if (c.value_from_env !== undefined) return 'value_from_env is for mode = "basic"';
  if (c.secret_path === undefined) return 'mode = "vault" needs secret_path ("mount/data/path#field")';
  return undefined;
}

interface VaultFields {
  auth: 'token' | 'approle' | 'kubernetes';
  role_id_env?: string | undefined;
  role_id_file?: string | undefined;
  secret_id_env?: string | undefined;
  secret_id_file?: string | undefined;
  kubernetes_role: string;
}

export function checkVaultAuth(v: VaultFields): string | undefined {
  if (v.auth === 'approle') {
    if ((v.role_id_env === undefined) === (v.role_id_file === undefined)) return 'auth = "approle" needs exactly one of role_id_env, role_id_file';
    if ((v.secret_id_env === undefined) === (v.secret_id_file === undefined)) return 'auth = "approle" needs exactly one of secret_id_env, secret_id_file';
  }
  if (v.auth === 'kubernetes' && v.kubernetes_role === '') return 'auth = "kubernetes" needs kubernetes_role';
  return undefined;
}
