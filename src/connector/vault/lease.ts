import { closedError } from './errors.js';
import type { Session, VaultAuth } from './auth.js';

/**
 * The token in hand and its lease: one lookup or login shared by every caller that needs a token,
 * renewal (or a fresh login) ahead of expiry on a timer that never keeps the process alive, and
 * forgetting a token Vault refused.
 */

/** Renew at this fraction of the lease (Vault Agent's LifetimeWatcher uses about the same). */
const RENEW_AT = 2 / 3;
/** Never spin: a maintenance timer waits at least this long. */
const MIN_TIMER_MS = 200;

export class VaultLease {
  readonly #auth: VaultAuth;
  readonly #now: () => number;
  readonly #isClosed: () => boolean;
  #session: Session | null = null;
  /** In-flight login / lookup, so concurrent reads share one. */
  #establishing: Promise<Session> | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(auth: VaultAuth, now: () => number, isClosed: () => boolean) {
    this.#auth = auth;
    this.#now = now;
    this.#isClosed = isClosed;
  }

  /** The session in hand, if any (its token is scrubbed from quoted Vault errors). */
  get current(): Session | null {
    return this.#session;
  }

  /** A token believed valid now: the current one, or a fresh lookup/login shared by all callers. */
  async acquire(): Promise<Session> {
    if (this.#isClosed()) throw closedError();
    const current = this.#session;
    if (this.#auth.method === 'token') {
      // The env var is read at every use: a token rotated in the environment is picked up at once.
      const token = this.#auth.requireEnvToken();
      if (current !== null && current.token === token) return current;
    } else if (current !== null && this.#usable(current)) {
      return current;
    }
    return this.#shared();
  }

  /** Forget a token Vault refused, unless another caller already replaced it. */
  drop(session: Session): void {
    if (this.#session !== session) return;
    this.#session = null;
    this.#clearTimer();
  }

  /** Stop the renewal timer and forget the token. */
  close(): void {
    this.#clearTimer();
    this.#session = null;
  }

  /** The lookup or login in flight, or a new one: concurrent callers share one. */
  #shared(): Promise<Session> {
    this.#establishing ??= this.#establish().finally(() => {
      this.#establishing = null;
    });
    return this.#establishing;
  }

  /** Lookup or login; installs the session and its renewal timer. */
  async #establish(): Promise<Session> {
    const session = await this.#auth.establish();
    if (this.#isClosed()) throw closedError();
    this.#install(session);
    return session;
  }

  #install(session: Session): void {
    this.#clearTimer();
    this.#session = session;
    this.#schedule(session);
  }

  /** Still comfortably before expiry (leave a margin for the request in flight and clock skew). */
  #usable(s: Session): boolean {
    if (s.expiresAt === null) return true;
    const margin = Math.min(1000, s.leaseMs / 10);
    return this.#now() < s.expiresAt - margin;
  }

  /** Renew (or re-login) at 2/3 of the remaining lease, so a slow or briefly down Vault still has slack. */
  #schedule(session: Session): void {
    if (session.expiresAt === null || this.#isClosed()) return;
    const canRenew = session.renewable && !session.renewExhausted;
    // With token auth there is nothing to fall back on once renewal stops: the token just runs out.
    if (!canRenew && this.#auth.method === 'token') return;
    const remaining = session.expiresAt - this.#now();
    const delay = Math.max(MIN_TIMER_MS, Math.floor(remaining * RENEW_AT));
    this.#timer = setTimeout(() => void this.#maintain(session), delay);
    // A renewal timer must never keep the process alive on its own.
    this.#timer.unref();
  }

  async #maintain(session: Session): Promise<void> {
    this.#timer = null;
    if (this.#isClosed() || this.#session !== session) return;
    try {
      if (session.renewable && !session.renewExhausted) {
        try {
          await this.#renew(session);
          return;
        } catch (err: unknown) {
          // A login method can fall back to a fresh login; token auth has nothing else to try.
          if (this.#auth.method === 'token') throw err;
        }
      }
      if (this.#auth.method === 'token') return;
      await this.#shared();
    } catch {
      // Vault down or refusing: keep the token in hand while it lasts and try again closer to its
      // expiry (2/3 of what is left each time). Past that, the next read logs in (or fails) on demand
      // and reports why to its caller.
      if (!this.#isClosed() && this.#session === session && this.#usable(session)) this.#schedule(session);
    }
  }

  async #renew(session: Session): Promise<void> {
    const before = session.expiresAt === null ? Infinity : session.expiresAt - this.#now();
    const renewed = await this.#auth.renewSelf(session.token);
    if (this.#isClosed() || this.#session !== session) return;
    // Same token, longer life. When Vault grants no more than was left, the max TTL is reached:
    // further renewals are pointless, so re-login (login methods) or let it run out (token auth).
    // A lease of 0 here is "nothing left" (not "never expires", which only a lookup can say).
    session.renewExhausted = renewed.leaseMs <= before;
    if (renewed.leaseMs > 0) {
      session.expiresAt = renewed.expiresAt;
      session.leaseMs = renewed.leaseMs;
    }
    session.renewable = renewed.renewable;
    this.#schedule(session);
  }

  #clearTimer(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }
}
