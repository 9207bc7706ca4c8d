import type { FirmaConfig } from '../config/index.js';
import { ConfigError, firmaConfigJsonSchema, formatConfigIssue, loadConfig, type JsonSchema } from '../config/index.js';
import type { Logger } from '../core/log.js';
import type { AuditRecorder } from '../audit/record.js';
import type { Connector } from '../connector/connector.js';
import { buildEgress, unsharedParts, type EgressParts } from '../connector/egress.js';
import { createPipeline, snapshotOf, type PipelineSetup } from '../pipeline/setup.js';
import { DecisionSet } from '../pipeline/snapshot.js';
import { errorCode } from '../core/errors.js';
import { ReloadWatcher, watchSpecs } from './watch.js';

/** What a reload did: the new policy hash, or every reason the new set was refused. */
export type ReloadResult =
  | {
      readonly ok: true;
      readonly policyHash: string;
      readonly generation: number;
      /** Keys that changed in the file but need a restart (e.g. `sidecar.interceptor.listen`). */
      readonly restartRequired: readonly string[];
    }
  | { readonly ok: false; readonly errors: string[] };

export type ReloadTrigger = 'SIGHUP' | 'watch' | 'api';

/**
 * Keys a reload applies. Anything else that differs from the running config is reported as "takes
 * effect at restart": listeners, the CA, the audit sink, Redis, the admin API, the SSRF allow-list,
 * bypass hosts and the default agent id are bound once at start — and a key added later is safe by
 * default (reported, not half-applied).
 */
const RELOADABLE: readonly string[] = [
  'sidecar.mode',
  'sidecar.log_level',
  'sidecar.drain_timeout_ms',
  'sidecar.reload',
  'sidecar.mapping',
  'mcp',
  'llm',
  'budgets',
  'sidecar.policy',
  'sidecar.capabilities',
  'sidecar.connector.default_timeout_ms',
  'sidecar.connector.idle_timeout_ms',
  'sidecar.connector.hosts',
  'credentials',
  'vault',
];
const CONFIG_SCHEMA = firmaConfigJsonSchema();
/** Not configuration: where it was read from. */
const IGNORED: readonly string[] = ['source', 'baseDir'];

function sameValue(a: unknown, b: unknown): boolean {
  const json = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x)) ?? 'undefined';
  return json(a) === json(b);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Dotted paths of the keys whose values differ. Descends into what `schema` (JSON Schema) declares as
 * a table, so a key is reported as written in firma.toml (`sidecar.admin.listen`, not the fields of
 * the address it parses to); arrays of tables compare whole.
 */
export function changedKeys(a: unknown, b: unknown, schema: JsonSchema, prefix = ''): string[] {
  const props = schema['properties'];
  if (isRecord(props) && isRecord(a) && isRecord(b)) {
    const out: string[] = [];
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const sub = props[k];
      const key = prefix === '' ? k : `${prefix}.${k}`;
      if (isRecord(sub)) out.push(...changedKeys(a[k], b[k], sub as JsonSchema, key));
      else if (!sameValue(a[k], b[k])) out.push(key);
    }
    return out;
  }
  return sameValue(a, b) ? [] : [prefix];
}

function covered(key: string, prefixes: readonly string[]): boolean {
  return prefixes.some((p) => key === p || key.startsWith(`${p}.`));
}

/** The keys of `next` that differ from the config the process started with and are not reloadable. */
export function restartOnlyChanges(started: FirmaConfig, next: FirmaConfig): string[] {
  return changedKeys(started, next, CONFIG_SCHEMA).filter((k) => !covered(k, RELOADABLE) && !covered(k, IGNORED));
}

/** Every reason as `file:line:col: message` where the loaders know the place (what `firma check` prints). */
function reasons(err: unknown): string[] {
  if (err instanceof ConfigError) return err.errors.map(formatConfigIssue);
  if (err instanceof Error) return [err.message];
  return [String(err)];
}

export interface ReloaderOptions {
  /** The config the process started with (restart-only keys stay at these values). */
  readonly config: FirmaConfig;
  readonly log: Logger;
  readonly audit: AuditRecorder;
  readonly connector: Connector;
  /** The running decision setup and egress parts, built by the same functions a reload uses. */
  readonly setup: PipelineSetup;
  readonly egress: EgressParts;
  /** Told the new host list so per-host series follow the configured hosts. */
  readonly metrics?: { setHosts(hosts: FirmaConfig['sidecar']['connector']['hosts']): void };
}

/**
 * Hot reload: re-read firma.toml, the mapping rules and the policies; validate the new set completely
 * with the startup loaders; swap it in atomically, or refuse it (logged and audited) and keep serving
 * the old one. Requests already running keep the snapshot they started with; parts of the old set that
 * the new one does not share are released once no request can still be using them.
 */
export class Reloader {
  readonly decisions: DecisionSet;
  readonly #started: FirmaConfig;
  readonly #log: Logger;
  readonly #audit: AuditRecorder;
  readonly #connector: Connector;
  readonly #metrics: ReloaderOptions['metrics'];
  readonly #watcher: ReloadWatcher;
  #config: FirmaConfig;
  #setup: PipelineSetup;
  #egress: EgressParts;
  /** Reloads run one after another, each reading the files as they are when it starts. */
  #queue: Promise<unknown> = Promise.resolve();
  /** Release of replaced parts, pending until requests that may hold them are over. */
  readonly #retiring = new Map<NodeJS.Timeout, () => Promise<void>>();
  #closed = false;
  #lastRejection: string | null = null;

  constructor(opts: ReloaderOptions) {
    this.#started = opts.config;
    this.#config = opts.config;
    this.#log = opts.log;
    this.#audit = opts.audit;
    this.#connector = opts.connector;
    this.#metrics = opts.metrics;
    this.#setup = opts.setup;
    this.#egress = opts.egress;
    this.decisions = new DecisionSet(snapshotOf(opts.config, opts.setup, 1));
    this.#watcher = new ReloadWatcher({ log: opts.log, onChange: () => void this.reload('watch') });
  }

  /** Start the file watch (when `[sidecar.reload] watch`); called once the sidecar serves. */
  watch(): void {
    this.#arm();
  }

  /** The config now in effect for the reloadable keys (restart-only keys: see `restartOnlyChanges`). */
  get config(): FirmaConfig {
    return this.#config;
  }

  /**
   * The first reason the last reload was refused, while no later one was accepted (for /readyz, which
   * stays ready: the running set is valid).
   */
  get lastRejection(): string | null {
    return this.#lastRejection;
  }

  reload(trigger: ReloadTrigger = 'api'): Promise<ReloadResult> {
    const run = this.#queue.then(() => this.#reload(trigger));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** No more reloads (stop has begun): stop watching and let a reload under way finish. */
  async quiesce(): Promise<void> {
    this.#closed = true;
    this.#watcher.close();
    await this.#queue;
  }

  /** After the drain: release the running and the retiring parts. */
  async close(): Promise<void> {
    await this.quiesce();
    const releases = [...this.#retiring.values()];
    for (const t of this.#retiring.keys()) clearTimeout(t);
    this.#retiring.clear();
    this.#setup.close();
    const egress = unsharedParts(this.#egress, null);
    for (const release of [...releases, ...(egress !== null ? [egress] : [])]) {
      try {
        await release();
      } catch (err) {
        this.#log.warn({ code: errorCode(err) }, 'error releasing connector parts at stop');
      }
    }
  }

  #arm(): void {
    const r = this.#config.sidecar.reload;
    this.#watcher.arm(r.watch ? watchSpecs(this.#config) : [], r.debounce_ms);
  }

  async #reload(trigger: ReloadTrigger): Promise<ReloadResult> {
    if (this.#closed) return { ok: false, errors: ['the sidecar is stopping'] };
    const path = this.#started.source.path;
    let config: FirmaConfig;
    let setup: PipelineSetup;
    let egress: EgressParts;
    try {
      // Without a config file the built-in defaults cannot change: only the shipped rules are re-read.
      config = path === null ? this.#started : loadConfig(path, this.#started.baseDir);
      setup = createPipeline(config, this.#log, { previous: this.#setup });
      try {
        egress = buildEgress(config, this.#log, this.#egress, this.#started.redis);
      } catch (err) {
        if (setup.verifier !== this.#setup.verifier) setup.close();
        throw err;
      }
    } catch (err) {
      const errors = reasons(err);
      this.#log.error(
        { trigger, errors, code: errorCode(err) },
        `reload rejected, the running configuration keeps serving: ${errors[0] ?? 'unknown error'}${errors.length > 1 ? ` (+${errors.length - 1} more)` : ''}`,
      );
      this.#audit.lifecycle('reload', `rejected (${trigger}): ${clip(errors.join('; '))}`);
      this.#lastRejection = `last reload rejected: ${errors[0] ?? 'unknown error'}`;
      this.#arm(); // a folder that reappeared is watched again
      return { ok: false, errors };
    }

    const previous = this.decisions.current();
    const generation = previous.generation + 1;
    const next = snapshotOf(config, setup, generation);
    // The swap: two reference assignments in one synchronous step, so no request sees half of it.
    this.decisions.swap(next);
    this.#connector.setEgress(egress);
    this.#metrics?.setHosts(config.sidecar.connector.hosts);
    // Only a changed key moves the level: an embedder's own choice survives reloads that do not touch it.
    if (config.sidecar.log_level !== this.#config.sidecar.log_level) this.#log.level = config.sidecar.log_level;

    const oldSetup = this.#setup;
    const oldEgress = this.#egress;
    this.#setup = setup;
    this.#egress = egress;
    this.#config = config;
    this.#lastRejection = null;
    // The verifier is the only pipeline part holding resources (a watch): a closed one still answers
    // correctly, so a request decided by the old snapshot a moment later is not affected.
    if (oldSetup.verifier !== setup.verifier) oldSetup.close();
    const release = unsharedParts(oldEgress, egress);
    if (release !== null) this.#retire(release, oldEgress.longestWaitMs);

    const restartRequired = restartOnlyChanges(this.#started, config);
    for (const key of restartRequired) this.#log.warn({ key }, `${key} changed in file, takes effect at restart`);
    this.#audit.lifecycle(
      'reload',
      `ok (${trigger}) policy_hash=${next.policyHash} mode=${next.mode}${restartRequired.length > 0 ? ` restart_required=${restartRequired.join(',')}` : ''}`,
    );
    this.#log.info(
      {
        trigger,
        generation,
        policy_hash: next.policyHash,
        previous_policy_hash: previous.policyHash,
        mode: next.mode,
        mapping_rules: setup.rules.mapping.ruleCount,
        policies: setup.rules.policy.policyIds.length,
        capabilities: config.sidecar.capabilities.required ? 'required' : 'off',
      },
      'configuration reloaded',
    );
    this.#arm();
    return { ok: true, policyHash: next.policyHash, generation, restartRequired };
  }

  /** Release `fn` after `graceMs`: a request that read the old egress settings is done with them by then. */
  #retire(fn: () => Promise<void>, graceMs: number): void {
    const timer = setTimeout(() => {
      this.#retiring.delete(timer);
      fn().catch((err: unknown) => this.#log.warn({ code: errorCode(err) }, 'error releasing replaced connector parts'));
    }, graceMs + 1000);
    timer.unref();
    this.#retiring.set(timer, fn);
  }
}

/** Audit details stay readable: the full list is in the log line. */
function clip(text: string): string {
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text;
}
