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
import { buildEgress } from './connector/egress.js';
import { EgressGuard, type LookupFunction } from './connector/ssrf.js';
import { Reloader, type ReloadResult, type ReloadTrigger } from './reload/reloader.js';

export type { ReloadResult, ReloadTrigger } from './reload/reloader.js';

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
  readonly #reloader: Reloader;
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
    reloader: Reloader;
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
    this.#reloader = parts.reloader;
  }

  static async start(opts: SidecarStartOptions): Promise<Sidecar> {
    const { config, log } = opts;
    const { ca, created } = initCa(config.sidecar.interceptor.mitm.ca_dir);
    if (created) log.info({ ca_cert: ca.certPath }, 'created a new local CA; give agents its certificate (firma ca export --env)');
    const decisions = createPipeline(config, log);
    const a = config.audit;
    const writer = AuditWriter.open({
      path: a.path,
      keyDir: a.key_dir,
      fsync: a.fsync,
      fsyncIntervalMs: a.fsync_interval_ms,
      maxFileBytes: a.max_file_bytes,
      onStateChange: (available, err) => {
        if (available) log.warn({ audit: a.path }, 'audit log writable again: dispatching resumes');
        else log.error({ audit: a.path, code: errorCode(err) }, 'audit log cannot be written: refusing requests (fail closed)');
      },
    });
    const audit = new AuditRecorder(writer, { stdout: a.stdout ? log : null });
    const leafCerts = new LeafCertificates(ca);
    const egress = buildEgress(config, log);
    // The guard must know the sidecar's own listeners (to refuse loops); they are bound just below.
    const listeners: Array<{ address: string; port: number }> = [];
    const guard = new EgressGuard({
      allowPrivate: config.sidecar.connector.allow_private,
      ownListeners: () => listeners,
      ...(opts.lookup !== undefined ? { lookup: opts.lookup } : {}),
    });
    const connector = new Connector({
      hosts: egress.hosts,
      limiter: egress.limiter,
      credentials: egress.credentials,
      guard,
      ...(opts.upstreamCaPems !== undefined ? { extraCaPems: opts.upstreamCaPems } : {}),
    });
    const reloader = new Reloader({ config, log, audit, connector, setup: decisions, egress });
    const interceptor = new Interceptor({
      listenHost: config.sidecar.interceptor.listen.host,
      listenPort: config.sidecar.interceptor.listen.port,
      defaultAgentId: config.sidecar.agent_id,
      bypassHosts: config.sidecar.interceptor.mitm.bypass_hosts,
      leafCerts,
      decisions: reloader.decisions,
      audit,
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
      reloader,
    });
    reloader.watch();
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
      config: this.#reloader.lastRejection === null ? { ok: true } : { ok: true, detail: this.#reloader.lastRejection },
      ca: { ok: true },
      policies: { ok: true, detail: this.#reloader.decisions.current().policyHash },
      audit: this.audit.available ? { ok: true } : { ok: false, detail: 'audit log cannot be written' },
      proxy: this.#state === 'ready' ? { ok: true } : { ok: false, detail: this.#state },
    };
  }

  /**
   * Re-read firma.toml, the mapping rules and the policies (SIGHUP and the file watch call this too).
   * An invalid set is refused, logged and audited, and the running one keeps serving.
   */
  reload(trigger: ReloadTrigger = 'api'): Promise<ReloadResult> {
    if (this.#state !== 'ready') return Promise.resolve({ ok: false, errors: [`the sidecar is ${this.#state}`] });
    return this.#reloader.reload(trigger);
  }

  /** Drain in-flight requests for up to `drain_timeout_ms`, then close everything. Idempotent. */
  async stop(): Promise<{ cut: number }> {
    if (this.#state !== 'ready') return { cut: 0 };
    this.#state = 'draining';
    await this.#reloader.quiesce();
    const grace = this.#reloader.config.sidecar.drain_timeout_ms;
    this.#log.info({ in_flight: this.#interceptor.inFlight, grace_ms: grace }, 'draining');
    const { cut } = await this.#interceptor.drain(grace);
    await this.#connector.destroy();
    this.audit.lifecycle('stop', cut > 0 ? `cut ${cut} in-flight request(s) at the drain bound` : null);
    try {
      await this.audit.close();
    } catch (err) {
      this.#log.error({ code: errorCode(err), err }, 'audit log not fully written at stop');
    }
    await this.#reloader.close();
    await this.#admin.close();
    this.#state = 'stopped';
    this.#log.info({ cut }, 'stopped');
    return { cut };
  }
}
