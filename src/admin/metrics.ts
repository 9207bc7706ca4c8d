/**
 * Prometheus metrics for `GET /metrics` on the admin listener (docs/listeners.md).
 *
 * One `Metrics` per sidecar, with its own prom-client `Registry` (never the global default one: two
 * sidecars in one process, as in the tests, must not share or collide on series).
 *
 * Hot paths stay lean. prom-client's bound children (`counter.labels(...).inc()`) still hash and
 * validate the label object on every call (~0.45 µs each, measured); the per-request counters here are
 * plain numbers in cells created once per label set (fixed sets, created up front, or found through
 * nested Maps with no string building), copied into the prom-client metrics only when scraped, by
 * their `collect` callbacks. Gauges read their source at scrape time, so they cost nothing per
 * request. Histograms use prom-client directly: one `observe` per dispatched request (request
 * duration), per rate-limited request (token wait) and per audit batch.
 *
 * Cardinality is bounded: label values come from fixed sets (decisions, stages, status classes, error
 * kinds) or from code-defined reason codes (capped, see MAX_DECISION_SERIES); the only host label
 * values are the hosts configured in `[[sidecar.connector.hosts]]`, every other host is "other".
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { OutcomeErrorKind } from '../core/outcome.js';
import type { Target, EnvelopeKind } from '../core/envelope.js';
import type { AuditWriteMetrics, ConnectionBound, ConnectionMetrics, LeafCertificateStats, RateLimitMetrics, RateLimitRejection, RequestMetrics } from '../core/metrics.js';

export type { AuditWriteMetrics, LeafCertificateStats, RateLimitMetrics, RateLimitRejection, RequestMetrics };
import type { UpstreamHostKey } from '../config/validators.js';
import { LlmUsageMetrics, type LlmUsage } from './llm-metrics.js';

/** Label value of every host not configured in `[[sidecar.connector.hosts]]`. */
export const OTHER_HOST = 'other';
/** Reason label once MAX_DECISION_SERIES label sets exist (a guard: reasons are code-defined). */
export const OTHER_REASON = 'other';
/** Upper bound on distinct decision/stage/reason series. */
export const MAX_DECISION_SERIES = 500;

const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
const ERROR_KINDS: readonly OutcomeErrorKind[] = ['timeout', 'network', 'invalid_request', 'rate_limited', 'credential', 'shutdown'];
const REJECTIONS: readonly RateLimitRejection[] = ['rate_limited', 'limiter_unavailable'];

/** Total time of dispatched requests: from sub-ms local answers to multi-minute model calls. */
const REQUEST_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
/** Rate-limit token waits: bounded by the host's timeout. */
const WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** One batched audit write (+ fsync when `fsync = "always"`). */
const AUDIT_WRITE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

// ------------------------------------------------------------------ cells

interface DecisionCell {
  readonly labels: { decision: string; stage: string; reason: string };
  n: number;
}

/** One `[[sidecar.connector.hosts]]` entry (only `host` and `rps` matter here). */
export interface MetricsHost {
  readonly host: UpstreamHostKey;
  /** Set when the host has a token bucket. */
  readonly rps?: number | undefined;
}

/** Every per-host count of one host label, created up front. */
interface HostCells {
  readonly label: string;
  /** The host has (or had, before a reload) a token bucket: its rate-limit series are exported. */
  limited: boolean;
  /** Upstream responses by class, index = first digit - 1. */
  readonly responses: number[];
  readonly errors: Record<OutcomeErrorKind, number>;
  waits: number;
  readonly rejections: Record<RateLimitRejection, number>;
  readonly wait: Histogram.Internal<'host'>;
}

const NO_SOURCE = (): number => 0;

export interface MetricsOptions {
  /** The `[[sidecar.connector.hosts]]` entries: the only host label values besides "other". */
  readonly hosts: readonly MetricsHost[];
  /** Node.js process metrics (`process_*`, `nodejs_*`); default true. */
  readonly defaultMetrics?: boolean;
}

const CONNECTION_BOUNDS: readonly ConnectionBound[] = ['handshake_timeout', 'headers_timeout', 'max_connections', 'max_connections_per_client'];

export class Metrics implements RequestMetrics, RateLimitMetrics, AuditWriteMetrics, ConnectionMetrics {
  readonly registry: Registry;

  /** host → port → cells (an entry without a port covers 443 and 80, as HostPolicies). */
  #byHost = new Map<string, Map<number, HostCells>>();
  /** Label = bucket key (`host` or `host:port`, as HostPolicies names buckets) → cells. */
  #byLabel = new Map<string, HostCells>();
  readonly #other: HostCells;
  /** Every host label ever configured (kept across setHosts, so no counter goes backwards). */
  readonly #allHosts: HostCells[] = [];
  readonly #waitHistogram: Histogram<'host'>;
  /** decision → stage → reason → cell: three Map lookups, no key string built per request. */
  readonly #decisions = new Map<string, Map<string, Map<string, DecisionCell>>>();
  readonly #decisionCells: DecisionCell[] = [];
  readonly #requestDuration: Histogram;
  readonly #auditWrite: Histogram;
  #auditWriteFailures = 0;
  #pendingApprovals: () => number = NO_SOURCE;
  #inFlight: () => number = NO_SOURCE;
  #openConnections: () => number = NO_SOURCE;
  readonly #boundHits: Counter<'bound'>;
  readonly #mcpCalls: Counter<'server' | 'method' | 'tool' | 'decision'>;
  readonly #llm: LlmUsageMetrics;
  #auditAvailable: () => boolean = () => true;
  #leafCerts: () => LeafCertificateStats = () => ({ minted: 0, cacheHits: 0, evictions: 0 });

  constructor(opts: MetricsOptions) {
    const registry = new Registry();
    this.registry = registry;
    const registers = [registry];
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });

    const waitHistogram: Histogram<'host'> = new Histogram({
      name: 'firma_rate_limit_wait_seconds',
      help: 'Time requests to a rate-limited host waited for a token (0 when one was available at once).',
      labelNames: ['host'] as const,
      buckets: WAIT_BUCKETS,
      registers,
    });
    this.#waitHistogram = waitHistogram;
    this.#other = this.#cellsFor(OTHER_HOST);
    this.setHosts(opts.hosts);

    const hosts = this.#allHosts;
    const requests: Counter<'decision' | 'stage' | 'reason'> = new Counter({
      name: 'firma_requests_total',
      help: 'Requests decided, by decision (allow, deny, passthrough, require_approval), stage and reason, as in their audit decision events.',
      labelNames: ['decision', 'stage', 'reason'] as const,
      registers,
      collect: () => {
        requests.reset();
        for (const c of this.#decisionCells) requests.inc(c.labels, c.n);
      },
    });
    const responses: Counter<'host' | 'class'> = new Counter({
      name: 'firma_upstream_responses_total',
      help: 'Responses received from upstreams, by status class; host is a configured [[sidecar.connector.hosts]] entry or "other".',
      labelNames: ['host', 'class'] as const,
      registers,
      collect: () => {
        responses.reset();
        for (const h of hosts) STATUS_CLASSES.forEach((cls, i) => responses.inc({ host: h.label, class: cls }, h.responses[i] ?? 0));
      },
    });
    const errors: Counter<'host' | 'kind'> = new Counter({
      name: 'firma_connector_errors_total',
      help: 'Dispatches that ended in a connector error, by kind (timeout, network, invalid_request, rate_limited, credential), or cut by the shutdown drain (shutdown).',
      labelNames: ['host', 'kind'] as const,
      registers,
      collect: () => {
        errors.reset();
        for (const h of hosts) for (const kind of ERROR_KINDS) errors.inc({ host: h.label, kind }, h.errors[kind]);
      },
    });
    const buckets = (): HostCells[] => hosts.filter((h) => h.limited);
    const waits: Counter<'host'> = new Counter({
      name: 'firma_rate_limit_waits_total',
      help: 'Requests that had to wait for a rate-limit token before being dispatched.',
      labelNames: ['host'] as const,
      registers,
      collect: () => {
        waits.reset();
        for (const h of buckets()) waits.inc({ host: h.label }, h.waits);
      },
    });
    const rejections: Counter<'host' | 'reason'> = new Counter({
      name: 'firma_rate_limit_rejections_total',
      help: 'Requests refused by the rate limiter: rate_limited (429, no token within the timeout) or limiter_unavailable (503, shared limiter unreachable).',
      labelNames: ['host', 'reason'] as const,
      registers,
      collect: () => {
        rejections.reset();
        for (const h of buckets()) for (const reason of REJECTIONS) rejections.inc({ host: h.label, reason }, h.rejections[reason]);
      },
    });
    const inFlight: Gauge = new Gauge({
      name: 'firma_requests_in_flight',
      help: 'Requests, WebSocket upgrades and blind tunnels in progress (being decided or dispatched).',
      registers,
      collect: () => inFlight.set(this.#inFlight()),
    });
    const connections: Gauge = new Gauge({
      name: 'firma_client_connections',
      help: 'Client connections open on the proxy and transparent listeners (tunnels count once).',
      registers,
      collect: () => connections.set(this.#openConnections()),
    });
    this.#boundHits = new Counter({
      name: 'firma_connection_bounds_total',
      help: 'Client connections closed or refused by a bound: handshake or headers timeout, connection caps.',
      labelNames: ['bound'] as const,
      registers,
    });
    for (const bound of CONNECTION_BOUNDS) this.#boundHits.inc({ bound }, 0);
    // Labels bounded by the config: declared servers, known methods, tool rule globs (docs/mcp.md "Metrics").
    this.#mcpCalls = new Counter({
      name: 'firma_mcp_calls_total',
      help: 'Requests to declared MCP endpoints decided, by server, method (known or "other"), tool (the tool rule\'s glob, "(other)" or "") and decision.',
      labelNames: ['server', 'method', 'tool', 'decision'] as const,
      registers,
    });
    this.#llm = new LlmUsageMetrics(registry);
    const pending: Gauge = new Gauge({
      name: 'firma_approvals_pending',
      help: 'Requests held open waiting for a human approval.',
      registers,
      collect: () => pending.set(this.#pendingApprovals()),
    });
    const minted: Counter = new Counter({
      name: 'firma_tls_certificates_minted_total',
      help: 'Leaf certificates minted from the local CA for intercepted hosts.',
      registers,
      collect: () => {
        minted.reset();
        minted.inc(this.#leafCerts().minted);
      },
    });
    const hits: Counter = new Counter({
      name: 'firma_tls_certificate_cache_hits_total',
      help: 'TLS interceptions served a cached leaf certificate.',
      registers,
      collect: () => {
        hits.reset();
        hits.inc(this.#leafCerts().cacheHits);
      },
    });
    const evictions: Counter = new Counter({
      name: 'firma_tls_certificate_cache_evictions_total',
      help: 'Leaf certificates dropped from the cache to keep it within its size.',
      registers,
      collect: () => {
        evictions.reset();
        evictions.inc(this.#leafCerts().evictions);
      },
    });
    this.#requestDuration = new Histogram({
      name: 'firma_request_duration_seconds',
      help: 'Total time of dispatched HTTP requests, from arrival at the proxy to the end of the response.',
      buckets: REQUEST_DURATION_BUCKETS,
      registers,
    });
    this.#auditWrite = new Histogram({
      name: 'firma_audit_write_duration_seconds',
      help: 'Time of one batched write of audit events to the log file (including fsync when fsync = "always").',
      buckets: AUDIT_WRITE_BUCKETS,
      registers,
    });
    const auditFailures: Counter = new Counter({
      name: 'firma_audit_write_failures_total',
      help: 'Failed attempts to write, fsync, rotate or reopen the audit log (requests are refused meanwhile).',
      registers,
      collect: () => {
        auditFailures.reset();
        auditFailures.inc(this.#auditWriteFailures);
      },
    });
    const auditUp: Gauge = new Gauge({
      name: 'firma_audit_available',
      help: '1 while the audit log can be written, 0 while it cannot (fail closed: nothing is dispatched).',
      registers,
      collect: () => auditUp.set(this.#auditAvailable() ? 1 : 0),
    });
  }

  /** The exposition body for `GET /metrics`. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * The host label values: `[[sidecar.connector.hosts]]` entries. Called at start and may be called on a
   * config reload: hosts seen before keep their series (counters never go backwards), new ones get theirs.
   */
  setHosts(hosts: readonly MetricsHost[]): void {
    const byHost = new Map<string, Map<number, HostCells>>();
    const byLabel = new Map<string, HostCells>();
    for (const { host: h, rps } of hosts) {
      const label = h.port === null ? h.host : `${h.host}:${h.port}`;
      // A host literally named "other" shares the "other" series rather than duplicating them.
      const cells = byLabel.get(label) ?? this.#allHosts.find((c) => c.label === label) ?? this.#cellsFor(label);
      byLabel.set(label, cells);
      // Sticky: a series, once exported, stays (zero() would also wipe the histogram's observations).
      if (rps !== undefined && !cells.limited) {
        cells.limited = true;
        this.#waitHistogram.zero({ host: label });
      }
      let ports = byHost.get(h.host);
      if (ports === undefined) byHost.set(h.host, (ports = new Map()));
      // An explicit :443 entry wins over a portless one for the same host (as HostPolicies).
      if (h.port !== null) ports.set(h.port, cells);
      else for (const p of [443, 80]) if (!ports.has(p)) ports.set(p, cells);
    }
    this.#byHost = byHost;
    this.#byLabel = byLabel;
  }

  #cellsFor(label: string): HostCells {
    const cells: HostCells = {
      label,
      limited: false,
      responses: [0, 0, 0, 0, 0],
      errors: { timeout: 0, network: 0, invalid_request: 0, rate_limited: 0, credential: 0, shutdown: 0 },
      waits: 0,
      rejections: { rate_limited: 0, limiter_unavailable: 0 },
      wait: this.#waitHistogram.labels(label),
    };
    this.#allHosts.push(cells);
    return cells;
  }

  // ------------------------------------------------------------------ sources read at scrape time

  /** Wire the approvals module in: `metrics.setPendingApprovalsSource(() => approvals.pendingCount)`. */
  setPendingApprovalsSource(source: () => number): void {
    this.#pendingApprovals = source;
  }

  setInFlightSource(source: () => number): void {
    this.#inFlight = source;
  }

  setOpenConnectionsSource(source: () => number): void {
    this.#openConnections = source;
  }

  mcpCall(server: string, method: string, tool: string, decision: string): void {
    this.#mcpCalls.inc({ server, method, tool, decision });
  }

  llmUsage(agentId: string, usage: LlmUsage): void { this.#llm.record(agentId, usage); }
  llmUsageUnread(reason: string): void { this.#llm.unread(reason); }

  connectionBoundHit(bound: ConnectionBound): void {
    this.#boundHits.inc({ bound });
  }

  setAuditAvailableSource(source: () => boolean): void {
    this.#auditAvailable = source;
  }

  setLeafCertificateSource(source: () => LeafCertificateStats): void {
    this.#leafCerts = source;
  }

  // ------------------------------------------------------------------ hot path

  decision(decision: string, stage: string, reason: string): void {
    let byStage = this.#decisions.get(decision);
    if (byStage === undefined) this.#decisions.set(decision, (byStage = new Map()));
    let byReason = byStage.get(stage);
    if (byReason === undefined) byStage.set(stage, (byReason = new Map()));
    let cell = byReason.get(reason);
    if (cell === undefined) {
      const capped = this.#decisionCells.length >= MAX_DECISION_SERIES;
      cell = capped ? byReason.get(OTHER_REASON) : undefined;
      if (cell === undefined) {
        cell = { labels: { decision, stage, reason: capped ? OTHER_REASON : reason }, n: 0 };
        this.#decisionCells.push(cell);
        byReason.set(cell.labels.reason, cell);
      }
    }
    cell.n++;
  }

  outcome(kind: EnvelopeKind, target: Target, upstreamStatus: number | null, error: OutcomeErrorKind | null, durationMs: number): void {
    const cells = this.#byHost.get(target.host)?.get(target.port) ?? this.#other;
    if (upstreamStatus !== null) {
      const i = Math.floor(upstreamStatus / 100) - 1;
      if (i >= 0 && i < 5) cells.responses[i]!++;
    }
    if (error !== null) cells.errors[error]++;
    if (kind === 'request') this.#requestDuration.observe(durationMs / 1000);
  }

  rateLimitGranted(bucket: string, waitedMs: number): void {
    const cells = this.#byLabel.get(bucket) ?? this.#other;
    if (waitedMs > 0) cells.waits++;
    cells.wait.observe(waitedMs / 1000);
  }

  rateLimitRejected(bucket: string, reason: RateLimitRejection): void {
    (this.#byLabel.get(bucket) ?? this.#other).rejections[reason]++;
  }

  auditWritten(seconds: number): void {
    this.#auditWrite.observe(seconds);
  }

  auditWriteFailed(): void {
    this.#auditWriteFailures++;
  }
}
