import { createHash, timingSafeEqual } from 'node:crypto';

/** One configured bearer token, kept only as its SHA-256 (the token itself is not retained). */
interface TokenEntry {
  readonly name: string;
  readonly digest: Buffer;
}

export interface AdminTokenSource {
  /** Approver name recorded for calls with this token. */
  readonly name: string;
  /** The environment variable the token is read from. */
  readonly env: string;
}

/**
 * Bearer tokens for mutating admin calls, each naming the approver it stands for. Tokens come from
 * environment variables (never from firma.toml, which is often in a ConfigMap or a repository). With
 * no token configured every mutation is refused: there is no "open" default.
 */
export class AdminTokens {
  readonly #entries: readonly TokenEntry[];
  /** Variables named in config but unset or empty, for the startup warning. */
  readonly missing: readonly string[];

  constructor(sources: readonly AdminTokenSource[], env: NodeJS.ProcessEnv = process.env) {
    const entries: TokenEntry[] = [];
    const missing: string[] = [];
    for (const s of sources) {
      const token = env[s.env];
      if (token === undefined || token === '') missing.push(s.env);
      else entries.push({ name: s.name, digest: digest(token) });
    }
    this.#entries = entries;
    this.missing = missing;
  }

  get configured(): boolean {
    return this.#entries.length > 0;
  }

  /** The approver a request's `Authorization: Bearer …` header stands for, or null. */
  identify(authorization: string | undefined): string | null {
    if (authorization === undefined || this.#entries.length === 0) return null;
    const space = authorization.indexOf(' ');
    if (space === -1 || authorization.slice(0, space).toLowerCase() !== 'bearer') return null;
    const given = digest(authorization.slice(space + 1).trim());
    let found: string | null = null;
    // Compare against every entry (no early exit) so timing says nothing about which one matched.
    for (const e of this.#entries) if (timingSafeEqual(given, e.digest) && found === null) found = e.name;
    return found;
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}
