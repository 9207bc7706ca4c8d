import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { createRequire } from 'node:module';
import type { Agent as UndiciAgent } from 'undici';
import { isIssuedAllowed, type Allowed } from '../core/decision.js';
import { FirmaError } from '../core/errors.js';
import type { RateLimitMetrics } from '../core/metrics.js';
import type { BufferedBody, DispatchOutcome } from '../core/outcome.js';
import type { ExchangeTap } from '../core/llm.js';
import { sendReply, sendReplyRaw } from '../core/reply.js';
import type { EgressGuard } from './ssrf/guard.js';
import { createGuardedConnect } from './dial.js';
import { preflight, refusedOutcome, type EgressSettings } from './preflight.js';

type Agent = UndiciAgent;
/**
 * undici's Agent module alone, not the package index: the index also loads fetch, WebSocket, the
 * cache stores, mock agents and the api helpers, none of which the connector calls (it only uses
 * `dispatch`, `close` and `destroy`). Measured: ~4 MiB less resident memory at idle (bench/README.md
 * "Memory"). Same module instances as `require('undici')`, so a later full load shares them.
 */
const Agent = createRequire(import.meta.url)('undici/lib/dispatcher/agent.js') as typeof UndiciAgent;
import { forwardExchange } from './forward.js';
import { upgradeExchange } from './upgrade.js';
import { dialUpstream, relayBlind, type TunnelDial } from './tunnel.js';
import { bundledAndEnvRoots } from './roots.js';

export type { EgressSettings } from './preflight.js';
export type { TunnelDial } from './tunnel.js';

export interface ConnectorOptions extends EgressSettings {
  /** SSRF guard applied when a connection is dialled. */
  readonly guard: EgressGuard;
  /** Extra trusted roots for upstream TLS, added to Node's bundled roots (and NODE_EXTRA_CA_CERTS). */
  readonly extraCaPems?: readonly string[];
  /** Rate-limit waits and rejections per configured bucket (`/metrics`). */
  readonly metrics?: RateLimitMetrics;
}

/**
 * Upper bound for the TCP/TLS connect itself, which undici shares among the requests queued for an
 * origin. Each request's own deadline answers it sooner (connector/relay.ts); this only closes the socket.
 */
const MAX_CONNECT_MS = 60_000;

/**
 * The egress half (docs/architecture.md "Connector"): takes an `Allowed` from the pipeline and nothing
 * else, applies the host's limits, injects the credential the agent must never hold, dispatches with
 * undici (keep-alive pools per origin, dialled through the SSRF guard) and streams both bodies with
 * backpressure. It never retries, never rewrites the payload and never decides on policy; it reports a
 * typed outcome.
 */
export class Connector {
  readonly #agent: Agent;
  readonly #opts: ConnectorOptions;
  #egress: EgressSettings;

  constructor(opts: ConnectorOptions) {
    this.#opts = opts;
    this.#egress = { hosts: opts.hosts, limiter: opts.limiter, credentials: opts.credentials };
    const ca = opts.extraCaPems !== undefined && opts.extraCaPems.length > 0 ? [...bundledAndEnvRoots(), ...opts.extraCaPems] : undefined;
    this.#agent = new Agent({
      connect: createGuardedConnect(opts.guard, { ...(ca !== undefined ? { ca } : {}), timeoutMs: MAX_CONNECT_MS }),
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
    });
  }

  /** Hot reload: requests that have not started their preflight use `egress`; the others keep theirs. */
  setEgress(egress: EgressSettings): void {
    this.#egress = egress;
  }

  #check(allowed: Allowed): void {
    // The type system already demands an Allowed; this catches a cast that forged one.
    if (!isIssuedAllowed(allowed)) {
      throw new FirmaError('FIRMA_NOT_ALLOWED', 'connector refused a request the pipeline did not allow');
    }
  }

  /**
   * Forward an ordinary HTTP exchange and stream the answer into `res`. `tap`, when given, is shown
   * both bodies as they pass and is ended exactly once, whether or not the request went out.
   */
  async forward(allowed: Allowed, req: IncomingMessage, res: ServerResponse, buffered: BufferedBody | null = null, tap: ExchangeTap | null = null): Promise<DispatchOutcome> {
    this.#check(allowed);
    // Read once: a reload meanwhile does not mix two sets of settings.
    const pre = await preflight(allowed, this.#egress, this.#opts.metrics);
    if (!pre.ok) {
      tap?.end(false);
      sendReply(res, { ...pre.reply, requestId: allowed.envelope.requestId, errorCode: pre.errorCode });
      return refusedOutcome(pre);
    }
    return forwardExchange(this.#agent, allowed, pre, req, res, buffered, tap);
  }

  /** Relay a WebSocket (or other `Upgrade`) handshake. */
  async upgrade(allowed: Allowed, req: IncomingMessage, client: Duplex, head: Buffer): Promise<DispatchOutcome> {
    this.#check(allowed);
    const pre = await preflight(allowed, this.#egress, this.#opts.metrics);
    if (!pre.ok) {
      sendReplyRaw(client, { ...pre.reply, requestId: allowed.envelope.requestId, errorCode: pre.errorCode });
      return refusedOutcome(pre);
    }
    return upgradeExchange(this.#agent, allowed, pre, req, client, head);
  }

  /**
   * Open the upstream TCP connection of a blind (bypassed) tunnel, through the same limits and SSRF
   * guard. The caller answers the CONNECT only after this succeeded, so an unreachable upstream is a
   * real 502/504, not a dead tunnel. Credentials cannot be injected into a tunnel we do not decrypt.
   */
  async dialTunnel(allowed: Allowed): Promise<TunnelDial> {
    this.#check(allowed);
    const pre = await preflight(allowed, this.#egress, this.#opts.metrics);
    if (!pre.ok) return { ok: false, error: pre.error, reply: pre.reply };
    return dialUpstream(this.#opts.guard, allowed, pre);
  }

  /** Relay the bytes of a blind tunnel dialled by `dialTunnel`, `firstBytes` first. */
  relayTunnel(allowed: Allowed, client: Duplex, upstream: Socket, firstBytes: Buffer): Promise<DispatchOutcome> {
    this.#check(allowed);
    return relayBlind(client, upstream, firstBytes);
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }

  async destroy(): Promise<void> {
    await this.#agent.destroy();
  }
}
