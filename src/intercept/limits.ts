/**
 * Bounds on client connections (docs/listeners.md "Connection bounds"): how many may be open at once,
 * overall and per source address. The time bounds (handshake, headers, keep-alive) are enforced where
 * each state lives (connect.ts, server.ts); this module only counts.
 */
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { ConnectionBound } from '../core/metrics.js';

export interface ConnectionLimits {
  readonly handshakeTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  /** 0: from the open-files limit (`autoMaxConnections`). */
  readonly maxConnections: number;
  /** 0: no cap of its own. */
  readonly maxConnectionsPerClient: number;
}

const AUTO_CAP = 16_384;

/**
 * The accept queue of both listeners. Node's default (511) overflowed when a burst of agents connected
 * while the loop was busy; the kernel caps it at net.core.somaxconn (4096 on current kernels).
 */
export const LISTEN_BACKLOG = 4096;
/** File descriptors kept back for listeners, the audit log, Redis, Vault, logs and the admin listener. */
const RESERVED_FDS = 128;

/**
 * Each proxied connection holds two descriptors (client and upstream), so the soft open-files limit
 * minus a reserve, halved, is what can be served without `EMFILE` starving `/healthz` and the audit log.
 */
export function autoMaxConnections(limitsFile = '/proc/self/limits'): number {
  try {
    const line = readFileSync(limitsFile, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line === undefined ? NaN : Number(line.slice('Max open files'.length).trim().split(/\s+/)[0]);
    if (Number.isFinite(soft) && soft > RESERVED_FDS) return Math.max(1, Math.min(AUTO_CAP, Math.floor((soft - RESERVED_FDS) / 2)));
  } catch {
    // not Linux: the fixed cap below
  }
  return 1024;
}

/** Counts open client connections; `admit` says which cap, if any, refuses a new one. */
export class ConnectionGate {
  readonly max: number;
  readonly #perClient: number;
  readonly #byAddress = new Map<string, number>();
  #open = 0;

  constructor(maxConnections: number, maxConnectionsPerClient: number) {
    this.max = maxConnections;
    this.#perClient = maxConnectionsPerClient;
  }

  get open(): number {
    return this.#open;
  }

  /** Count `socket` until it closes, or return the bound that refuses it (then it is not counted). */
  admit(socket: Socket): ConnectionBound | null {
    if (this.#open >= this.max) return 'max_connections';
    const address = socket.remoteAddress ?? '';
    const mine = this.#byAddress.get(address) ?? 0;
    if (this.#perClient > 0 && mine >= this.#perClient) return 'max_connections_per_client';
    this.#open++;
    this.#byAddress.set(address, mine + 1);
    socket.once('close', () => this.#release(address));
    return null;
  }

  #release(address: string): void {
    this.#open--;
    const left = (this.#byAddress.get(address) ?? 1) - 1;
    if (left <= 0) this.#byAddress.delete(address);
    else this.#byAddress.set(address, left);
  }
}
