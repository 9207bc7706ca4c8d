import type { AddressInfo } from 'node:net';
import type { FirmaConfig } from './config/index.js';
import type { Logger } from './log.js';
import { initCa, type CertificateAuthority } from './intercept/ca.js';
import { LeafCertificates } from './intercept/leaf-certs.js';
import { Interceptor } from './intercept/proxy.js';
import { Connector } from './connector/connector.js';
import { AdminServer } from './admin/server.js';

export interface SidecarStartOptions {
  readonly config: FirmaConfig;
  readonly log: Logger;
  /** Extra roots trusted for upstream TLS, on top of Node's bundle and NODE_EXTRA_CA_CERTS. */
  readonly upstreamCaPems?: readonly string[];
}

export type SidecarState = 'ready' | 'draining' | 'stopped';

/** Until the connector issue brings `idle_timeout_ms`, streaming bodies may be silent this long. */
const DEFAULT_IDLE_TIMEOUT_MS = 300_000;

/**
 * One running sidecar: CA, interceptor, connector and admin listener wired together. `start()`
 * returns only when both listeners accept connections; `stop()` drains and releases everything.
 */
export class Sidecar {
  readonly config: FirmaConfig;
  readonly ca: CertificateAuthority;
  readonly proxyAddress: AddressInfo;
  readonly adminAddress: AddressInfo;
  readonly #log: Logger;
  readonly #interceptor: Interceptor;
  readonly #connector: Connector;
  readonly #admin: AdminServer;
  #state: SidecarState = 'ready';

  private constructor(parts: {
    config: FirmaConfig;
    log: Logger;
    ca: CertificateAuthority;
    interceptor: Interceptor;
    connector: Connector;
    admin: AdminServer;
    proxyAddress: AddressInfo;
    adminAddress: AddressInfo;
  }) {
    this.config = parts.config;
    this.#log = parts.log;
    this.ca = parts.ca;
    this.#interceptor = parts.interceptor;
    this.#connector = parts.connector;
    this.#admin = parts.admin;
    this.proxyAddress = parts.proxyAddress;
    this.adminAddress = parts.adminAddress;
  }

  static async start(opts: SidecarStartOptions): Promise<Sidecar> {
    const { config, log } = opts;
    const { ca, created } = initCa(config.sidecar.interceptor.mitm.ca_dir);
    if (created) log.info({ ca_cert: ca.certPath }, 'created a new local CA; give agents its certificate (firma ca export --env)');
    const leafCerts = new LeafCertificates(ca);
    const connector = new Connector({
      defaultTimeoutMs: config.sidecar.connector.default_timeout_ms,
      idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
      ...(opts.upstreamCaPems !== undefined ? { extraCaPems: opts.upstreamCaPems } : {}),
    });
    const interceptor = new Interceptor({
      listenHost: config.sidecar.interceptor.listen.host,
      listenPort: config.sidecar.interceptor.listen.port,
      defaultAgentId: config.sidecar.agent_id,
      bypassHosts: config.sidecar.interceptor.mitm.bypass_hosts,
      leafCerts,
      connector,
      log,
    });
    let sidecar: Sidecar | null = null;
    const admin = new AdminServer({
      host: config.sidecar.admin.listen.host,
      port: config.sidecar.admin.listen.port,
      log,
      readiness: () => sidecar?.readiness() ?? { startup: { ok: false, detail: 'starting' } },
    });
    const proxyAddress = await interceptor.listen();
    let adminAddress: AddressInfo;
    try {
      adminAddress = await admin.listen();
    } catch (err) {
      await interceptor.drain(0);
      throw err;
    }
    sidecar = new Sidecar({ config, log, ca, interceptor, connector, admin, proxyAddress, adminAddress });
    log.info(
      {
        proxy: `${proxyAddress.address}:${proxyAddress.port}`,
        admin: `${adminAddress.address}:${adminAddress.port}`,
        config: config.source.path ?? '(built-in defaults)',
        ca_cert: ca.certPath,
      },
      'firma sidecar ready',
    );
    return sidecar;
  }

  get state(): SidecarState {
    return this.#state;
  }

  readiness(): Record<string, { ok: boolean; detail?: string }> {
    return {
      config: { ok: true },
      ca: { ok: true },
      proxy: this.#state === 'ready' ? { ok: true } : { ok: false, detail: this.#state },
    };
  }

  /** Drain in-flight requests for up to `drain_timeout_ms`, then close everything. Idempotent. */
  async stop(): Promise<{ cut: number }> {
    if (this.#state !== 'ready') return { cut: 0 };
    this.#state = 'draining';
    const grace = this.config.sidecar.drain_timeout_ms;
    this.#log.info({ in_flight: this.#interceptor.inFlight, grace_ms: grace }, 'draining');
    const { cut } = await this.#interceptor.drain(grace);
    await this.#connector.destroy();
    await this.#admin.close();
    this.#state = 'stopped';
    this.#log.info({ cut }, 'stopped');
    return { cut };
  }
}
