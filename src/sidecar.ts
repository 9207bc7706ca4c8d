import type { AddressInfo } from 'node:net';
import type { FirmaConfig } from './config/index.js';
import type { Logger } from './log.js';
import { initCa, type CertificateAuthority } from './intercept/ca.js';
import { LeafCertificates } from './intercept/leaf-certs.js';
import { Interceptor } from './intercept/proxy.js';
import { Connector } from './connector/connector.js';
import { AdminServer } from './admin/server.js';
import { createPipeline } from './enforce/setup.js';
import { AuditWriter } from './audit/writer.js';
import { AuditRecorder } from './audit/record.js';
import { errorCode } from './errors.js';
import { HostPolicies } from './connector/host-policy.js';
import { createRateLimiter } from './connector/rate-limit.js';
import { createCredentialInjector } from './connector/credentials.js';
import { EgressGuard, type LookupFunction } from './connector/ssrf.js';
import { Metrics } from './admin/metrics.js';

export interface SidecarStartOptions {
  readonly config: FirmaConfig;
  readonly log: Logger;
  /** Extra roots trusted for upstream TLS, on top of Node's bundle and NODE_EXTRA_CA_CERTS. */
  readonly upstreamCaPems?: readonly string[];
  /** Name resolution for upstream dials (default: the system resolver, `dns.lookup`). */
  readonly lookup?: LookupFunction;
}

export type SidecarState = 'ready' | 'draining' | 'stopped';

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
  readonly #release: () => Promise<void>;
  readonly #policyHash: string;
  /** The audit recorder (decision, outcome, lifecycle events). */
  readonly audit: AuditRecorder;
  #state: SidecarState = 'ready';

  private constructor(parts: {
    config: FirmaConfig;
    log: Logger;
    ca: CertificateAuthority;
    interceptor: Interceptor;
    connector: Connector;
    admin: AdminServer;
    audit: AuditRecorder;
    proxyAddress: AddressInfo;
    adminAddress: AddressInfo;
    release: () => Promise<void>;
    policyHash: string;
  }) {
    this.config = parts.config;
    this.#log = parts.log;
    this.ca = parts.ca;
    this.#interceptor = parts.interceptor;
    this.#connector = parts.connector;
    this.#admin = parts.admin;
    this.audit = parts.audit;
    this.proxyAddress = parts.proxyAddress;
    this.adminAddress = parts.adminAddress;
    this.#release = parts.release;
    this.#policyHash = parts.policyHash;
  }

  static async start(opts: SidecarStartOptions): Promise<Sidecar> {
    const { config, log } = opts;
    const { ca, created } = initCa(config.sidecar.interceptor.mitm.ca_dir);
    if (created) log.info({ ca_cert: ca.certPath }, 'created a new local CA; give agents its certificate (firma ca export --env)');
    const decisions = createPipeline(config, log);
    // One registry per sidecar (never prom-client's global one): sidecars in one process stay apart.
    const metrics = new Metrics({ hosts: config.sidecar.connector.hosts });
    const a = config.audit;
    const writer = AuditWriter.open({
      path: a.path,
      keyDir: a.key_dir,
      fsync: a.fsync,
      fsyncIntervalMs: a.fsync_interval_ms,
      maxFileBytes: a.max_file_bytes,
      metrics,
      onStateChange: (available, err) => {
        if (available) log.warn({ audit: a.path }, 'audit log writable again: dispatching resumes');
        else log.error({ audit: a.path, code: errorCode(err) }, 'audit log cannot be written: refusing requests (fail closed)');
      },
    });
    const audit = new AuditRecorder(writer, { stdout: a.stdout ? log : null, metrics });
    const leafCerts = new LeafCertificates(ca);
    const hosts = new HostPolicies(config.sidecar.connector);
    const buckets = hosts.buckets();
    const limiter = buckets.length === 0 ? null : createRateLimiter(buckets, config.redis, { log });
    const { injector: credentials, close: closeCredentials } = createCredentialInjector(config);
    // The guard must know the sidecar's own listeners (to refuse loops); they are bound just below.
    const listeners: Array<{ address: string; port: number }> = [];
    const guard = new EgressGuard({
      allowPrivate: config.sidecar.connector.allow_private,
      ownListeners: () => listeners,
      ...(opts.lookup !== undefined ? { lookup: opts.lookup } : {}),
    });
    const connector = new Connector({
      hosts,
      limiter,
      credentials,
      guard,
      metrics,
      ...(opts.upstreamCaPems !== undefined ? { extraCaPems: opts.upstreamCaPems } : {}),
    });
    const interceptor = new Interceptor({
      listenHost: config.sidecar.interceptor.listen.host,
      listenPort: config.sidecar.interceptor.listen.port,
      defaultAgentId: config.sidecar.agent_id,
      bypassHosts: config.sidecar.interceptor.mitm.bypass_hosts,
      leafCerts,
      pipeline: decisions.pipeline,
      bodyLimitBytes: config.sidecar.mapping.body_limit_bytes,
      audit,
      connector,
      log,
    });
    metrics.setInFlightSource(() => interceptor.inFlight);
    metrics.setLeafCertificateSource(() => leafCerts.stats);
    metrics.setAuditAvailableSource(() => audit.available);
    let sidecar: Sidecar | null = null;
    const admin = new AdminServer({
      host: config.sidecar.admin.listen.host,
      port: config.sidecar.admin.listen.port,
      log,
      readiness: () => sidecar?.readiness() ?? { startup: { ok: false, detail: 'starting' } },
      metrics,
    });
    const proxyAddress = await interceptor.listen();
    let adminAddress: AddressInfo;
    try {
      adminAddress = await admin.listen();
    } catch (err) {
      await interceptor.drain(0);
      throw err;
    }
    listeners.push(
      { address: proxyAddress.address, port: proxyAddress.port },
      { address: adminAddress.address, port: adminAddress.port },
    );
    audit.lifecycle('start', `policy_hash=${decisions.rules.policy.policyHash} mode=${config.sidecar.mode}`);
    sidecar = new Sidecar({
      config,
      log,
      ca,
      interceptor,
      connector,
      admin,
      audit,
      proxyAddress,
      adminAddress,
      policyHash: decisions.rules.policy.policyHash,
      release: async () => {
        decisions.close();
        await limiter?.close();
        await closeCredentials();
      },
    });
    log.info(
      {
        proxy: `${proxyAddress.address}:${proxyAddress.port}`,
        admin: `${adminAddress.address}:${adminAddress.port}`,
        config: config.source.path ?? '(built-in defaults)',
        ca_cert: ca.certPath,
        mode: config.sidecar.mode,
        mapping_rules: decisions.rules.mapping.ruleCount,
        policies: decisions.rules.policy.policyIds.length,
        policy_hash: decisions.rules.policy.policyHash,
        capabilities: config.sidecar.capabilities.required ? 'required' : 'off',
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
      policies: { ok: true, detail: this.#policyHash },
      audit: this.audit.available ? { ok: true } : { ok: false, detail: 'audit log cannot be written' },
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
    this.audit.lifecycle('stop', cut > 0 ? `cut ${cut} in-flight request(s) at the drain bound` : null);
    try {
      await this.audit.close();
    } catch (err) {
      this.#log.error({ code: errorCode(err), err }, 'audit log not fully written at stop');
    }
    await this.#release();
    await this.#admin.close();
    this.#state = 'stopped';
    this.#log.info({ cut }, 'stopped');
    return { cut };
  }
}
