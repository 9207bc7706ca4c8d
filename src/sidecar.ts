import type { AddressInfo } from 'node:net';
import { statSync } from 'node:fs';
import type { FirmaConfig } from './config/index.js';
import type { Logger } from './core/log.js';
import { initCa, type CertificateAuthority } from './intercept/tls/ca.js';
import { LeafCertificates } from './intercept/tls/leaf-certs.js';
import { Interceptor } from './intercept/server.js';
import { RequestPipeline } from './pipeline/run.js';
import { Connector } from './connector/connector.js';
import { AdminServer } from './admin/server.js';
import { createPipeline } from './pipeline/setup.js';
import { AuditWriter } from './audit/writer.js';
import { AuditRecorder } from './audit/record.js';
import { errorCode } from './core/errors.js';
import { buildEgress } from './connector/egress.js';
import { EgressGuard } from './connector/ssrf/guard.js';
import type { LookupFunction } from './connector/ssrf/resolve.js';
import { ApprovalQueue } from './enforce/approval/queue.js';
import type { ApprovalView } from './enforce/approval/views.js';
import { AdminTokens } from './admin/auth.js';
import { ApprovalsApi } from './admin/approvals-api.js';
import { webhookNotifier } from './admin/webhook.js';
import { TransparentListener } from './intercept/transparent/listener.js';
import type { OriginalDestinationLookup } from './intercept/transparent/original-dst.js';
import { Metrics } from './admin/metrics.js';
import { Reloader, type ReloadResult, type ReloadTrigger } from './reload/reloader.js';
import { createUsageLedger } from './enforce/budget/create.js';
import { MemoryLedger } from './enforce/budget/memory.js';
import { RedisLedger } from './enforce/budget/redis.js';
import { windowStart, type UsageLedger } from './enforce/budget/types.js';
import { auditFileSet } from './audit/files.js';
import { readUsageRecords } from './audit/usage-records.js';

export type { ReloadResult, ReloadTrigger } from './reload/reloader.js';

export interface SidecarStartOptions {
  readonly config: FirmaConfig;
  readonly log: Logger;
  /** Extra roots trusted for upstream TLS, on top of Node's bundle and NODE_EXTRA_CA_CERTS. */
  readonly upstreamCaPems?: readonly string[];
  /** Name resolution for upstream dials (default: the system resolver, `dns.lookup`). */
  readonly lookup?: LookupFunction;
  /**
   * How the transparent listener finds the port a redirected connection was made to (default: the
   * conntrack table when readable, else none). Tests on loopback, where nothing is redirected, pass one.
   */
  readonly originalDestination?: OriginalDestinationLookup | null;
}

/** The admin listener as a URL (a wildcard address is reached on loopback). */
function adminUrl(a: AddressInfo): string {
  const host = a.address === '0.0.0.0' ? '127.0.0.1' : a.address === '::' ? '[::1]' : a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return `http://${host}:${a.port}`;
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
  /** The transparent listener's address, or null when `transparent_listen` is off. */
  readonly transparentAddress: AddressInfo | null;
  readonly #transparent: TransparentListener | null;
  readonly #log: Logger;
  readonly #interceptor: Interceptor;
  readonly #connector: Connector;
  readonly #admin: AdminServer;
  readonly #reloader: Reloader;
  /** LLM usage totals, kept across reloads (docs/llm.md "Budgets"). */
  readonly #ledger: UsageLedger;
  /** The audit recorder (decision, outcome, lifecycle events). */
  readonly audit: AuditRecorder;
  /** Requests held for a person's approval, and standing grants. */
  readonly approvals: ApprovalQueue;
  #state: SidecarState = 'ready';

  private constructor(parts: {
    config: FirmaConfig;
    log: Logger;
    ca: CertificateAuthority;
    interceptor: Interceptor;
    connector: Connector;
    admin: AdminServer;
    audit: AuditRecorder;
    approvals: ApprovalQueue;
    proxyAddress: AddressInfo;
    adminAddress: AddressInfo;
    transparent: { listener: TransparentListener; address: AddressInfo } | null;
    reloader: Reloader;
    ledger: UsageLedger;
  }) {
    this.config = parts.config;
    this.#log = parts.log;
    this.ca = parts.ca;
    this.#interceptor = parts.interceptor;
    this.#connector = parts.connector;
    this.#admin = parts.admin;
    this.audit = parts.audit;
    this.approvals = parts.approvals;
    this.proxyAddress = parts.proxyAddress;
    this.adminAddress = parts.adminAddress;
    this.#transparent = parts.transparent?.listener ?? null;
    this.transparentAddress = parts.transparent?.address ?? null;
    this.#reloader = parts.reloader;
    this.#ledger = parts.ledger;
  }

  static async start(opts: SidecarStartOptions): Promise<Sidecar> {
    const { config, log } = opts;
    const { ca, created } = initCa(config.sidecar.interceptor.mitm.ca_dir);
    if (created) log.info({ ca_cert: ca.certPath }, 'created a new local CA; give agents its certificate (firma ca export --env)');
    // Filled in once the admin listener is bound (the webhook links to the page on it).
    let notify: ((view: ApprovalView) => void) | undefined;
    // The audit log is opened after the rules load (a config error must not create log files); the
    // queue only writes to it once requests flow.
    let recorder: AuditRecorder | null = null;
    const approvals = new ApprovalQueue({
      timeoutMs: config.approvals.timeout_ms,
      maxPending: config.approvals.max_pending,
      maxGrantMinutes: config.approvals.max_grant_minutes,
      audit: {
        held: (h, id) => recorder?.held(h, id) ?? false,
        approval: (step) => recorder?.approval(step) ?? false,
      },
      notify: (view) => notify?.(view),
    });
    const ledger = await startUsageLedger(config, log);
    const decisions = createPipeline(config, log, { approvals, ledger });
    // One registry per sidecar (never prom-client's global one): sidecars in one process stay apart.
    const metrics = new Metrics({ hosts: config.sidecar.connector.hosts });
    metrics.setPendingApprovalsSource(() => approvals.pendingCount);
    // Credentials are read (and a missing variable refused) before the audit log is opened, for the
    // same reason as the rules above.
    const egress = buildEgress(config, log);
    const a = config.audit;
    const writer = AuditWriter.open({
      path: a.path,
      keyDir: a.key_dir,
      fsync: a.fsync,
      fsyncIntervalMs: a.fsync_interval_ms,
      maxFileBytes: a.max_file_bytes,
      signatures: a.signatures,
      metrics,
      onStateChange: (available, err) => {
        if (available) log.warn({ audit: a.path }, 'audit log writable again: dispatching resumes');
        else log.error({ audit: a.path, code: errorCode(err) }, 'audit log cannot be written: refusing requests (fail closed)');
      },
    });
    // The stdout copy is its own child at info, so `log_level = "warn"` does not silence the audit.
    const audit = new AuditRecorder(writer, { stdout: a.stdout ? log.child({}, { level: 'info' }) : null, metrics });
    recorder = audit;
    const leafCerts = new LeafCertificates(ca);
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
      metrics,
      ...(opts.upstreamCaPems !== undefined ? { extraCaPems: opts.upstreamCaPems } : {}),
    });
    const reloader = new Reloader({ config, log, audit, connector, setup: decisions, egress, metrics });
    const pipeline = new RequestPipeline({ decisions: reloader.decisions, audit, connector, log });
    const interceptor = new Interceptor({
      listenHost: config.sidecar.interceptor.listen.host,
      listenPort: config.sidecar.interceptor.listen.port,
      defaultAgentId: config.sidecar.agent_id,
      bypassHosts: config.sidecar.interceptor.mitm.bypass_hosts,
      leafCerts,
      pipeline,
      log,
      limits: {
        handshakeTimeoutMs: config.sidecar.interceptor.handshake_timeout_ms,
        headersTimeoutMs: config.sidecar.interceptor.headers_timeout_ms,
        keepAliveTimeoutMs: config.sidecar.interceptor.keep_alive_timeout_ms,
        maxConnections: config.sidecar.interceptor.max_connections,
        maxConnectionsPerClient: config.sidecar.interceptor.max_connections_per_client,
      },
      metrics,
    });
    metrics.setInFlightSource(() => pipeline.inFlight);
    metrics.setOpenConnectionsSource(() => interceptor.openConnections);
    metrics.setLeafCertificateSource(() => leafCerts.stats);
    metrics.setAuditAvailableSource(() => audit.available);
    let sidecar: Sidecar | null = null;
    const adminCfg = config.sidecar.admin;
    const tokens = new AdminTokens([
      { name: adminCfg.token_identity, env: adminCfg.token_env },
      ...adminCfg.approvers.map((ap) => ({ name: ap.name, env: ap.token_env })),
    ]);
    if (!tokens.configured) log.warn({ token_env: adminCfg.token_env }, 'no admin token set: approvals can be seen but not decided (set the token variable)');
    const admin = new AdminServer({
      host: adminCfg.listen.host,
      port: adminCfg.listen.port,
      log,
      readiness: () => sidecar?.readiness() ?? { startup: { ok: false, detail: 'starting' } },
      approvals: new ApprovalsApi({ queue: approvals, tokens, log }),
      metrics,
      ca: { certPem: ca.certPem, fingerprint256: ca.fingerprint256 },
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
    const transparentListen = config.sidecar.interceptor.transparent_listen;
    let transparent: { listener: TransparentListener; address: AddressInfo } | null = null;
    if (transparentListen !== null) {
      try {
        transparent = await TransparentListener.start({
          host: transparentListen.host,
          port: transparentListen.port,
          acceptor: interceptor,
          log,
          ...(opts.originalDestination !== undefined ? { originalDestination: opts.originalDestination } : {}),
        });
      } catch (err) {
        await interceptor.drain(0);
        await admin.close();
        throw err;
      }
      // A redirected connection whose target is the sidecar itself must be refused like any other loop.
      listeners.push({ address: transparent.address.address, port: transparent.address.port });
    }
    const pageUrl = config.approvals.page_url !== '' ? config.approvals.page_url : `${adminUrl(adminAddress)}/approvals/ui`;
    if (config.approvals.webhook_url !== '') {
      notify = webhookNotifier({ url: config.approvals.webhook_url, timeoutMs: config.approvals.webhook_timeout_ms, pageUrl, log });
    }
    audit.lifecycle('start', `policy_hash=${decisions.rules.policy.policyHash} mode=${config.sidecar.mode} audit_key=${audit.keyFingerprint}`);
    sidecar = new Sidecar({
      config,
      log,
      ca,
      interceptor,
      connector,
      admin,
      audit,
      approvals,
      proxyAddress,
      adminAddress,
      transparent,
      reloader,
      ledger,
    });
    reloader.watch();
    log.info(
      {
        proxy: `${proxyAddress.address}:${proxyAddress.port}`,
        admin: `${adminAddress.address}:${adminAddress.port}`,
        transparent: transparent === null ? undefined : `${transparent.address.address}:${transparent.address.port}`,
        transparent_original_port: transparent?.listener.originalPortSource,
        config: config.source.path ?? '(built-in defaults)',
        ca_cert: ca.certPath,
        mode: config.sidecar.mode,
        mapping_rules: decisions.rules.mapping.ruleCount,
        policies: decisions.rules.policy.policyIds.length,
        policy_hash: decisions.rules.policy.policyHash,
        capabilities: config.sidecar.capabilities.required ? 'required' : 'off',
        approvals_page: pageUrl,
        max_connections: interceptor.maxConnections,
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
    // Held requests cannot outlive the process: deny them now (audited) so they end before the drain.
    const denied = this.approvals.shutdown();
    if (denied > 0) this.#log.info({ approvals: denied }, 'pending approvals denied at shutdown');
    await this.#reloader.quiesce();
    const grace = this.#reloader.config.sidecar.drain_timeout_ms;
    this.#log.info({ in_flight: this.#interceptor.inFlight, grace_ms: grace }, 'draining');
    // Stop taking redirected connections first; the ones already accepted are the interceptor's to drain.
    const transparentClosed = this.#transparent?.close();
    const { cut } = await this.#interceptor.drain(grace);
    await transparentClosed;
    await this.#connector.destroy();
    this.audit.lifecycle('stop', cut > 0 ? `cut ${cut} in-flight request(s) at the drain bound` : null);
    try {
      await this.audit.close();
    } catch (err) {
      this.#log.error({ code: errorCode(err), err }, 'audit log not fully written at stop');
    }
    await this.#reloader.close();
    await this.#ledger.close();
    await this.#admin.close();
    this.#state = 'stopped';
    this.#log.info({ cut }, 'stopped');
    return { cut };
  }
}

/**
 * The LLM usage ledger (docs/llm.md "Budgets"): shared through Redis when `[redis] url` is set;
 * else in memory, with today's UTC day rebuilt from the audit log's outcome events, so a restart does
 * not reset a day's budget.
 */
async function startUsageLedger(config: FirmaConfig, log: Logger): Promise<UsageLedger> {
  const ledger = createUsageLedger(config.redis, log);
  if (ledger instanceof RedisLedger) {
    // Budgeted calls are refused (or counted locally) until Redis answers: give it a moment at start.
    if (!(await ledger.ready(Math.max(config.redis.timeout_ms, 1000)))) log.warn({ redis: 'unreachable' }, 'LLM usage totals: Redis not reachable at start');
    return ledger;
  }
  if (!(ledger instanceof MemoryLedger)) return ledger;
  const started = Date.now();
  const dayStart = windowStart('day', started);
  // A file last written before today holds none of today's calls: only the newest files are read.
  const files = auditFileSet(config.audit.path).filter((f) => {
    try {
      return statSync(f).mtimeMs >= dayStart;
    } catch {
      return false;
    }
  });
  const calls = await ledger.rebuild(readUsageRecords(files, dayStart), started);
  if (calls > 0) log.info({ calls, ms: Date.now() - started }, 'LLM usage of today rebuilt from the audit log');
  return ledger;
}
