import { existsSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { ensureSigningKey } from '../enforce/capability/keys.js';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FirmaConfig } from '../config/index.js';
import { ConfigError, type ConfigIssue } from '../config/index.js';
import type { Logger } from '../core/log.js';
import { MappingTable } from '../normalize/mapping.js';
import { McpTable } from '../normalize/mcp.js';
import { LlmHosts } from '../normalize/llm-hosts.js';
import { PriceTable } from '../normalize/llm/prices.js';
import { UsageAccounting } from './usage.js';
import { PolicyEngine } from '../enforce/policy/engine.js';
import { CapabilityVerifier } from '../enforce/capability/verifier.js';
import { ActionCounters } from '../enforce/counters.js';
import { BudgetGate, budgetRulesOf } from '../enforce/budget/gate.js';
import { MemoryLedger } from '../enforce/budget/memory.js';
import type { UsageLedger } from '../enforce/budget/types.js';
import { Enforcer } from '../enforce/enforcer.js';
import type { ApprovalQueue } from '../enforce/approval/queue.js';
import { FirmaError } from '../core/errors.js';
import type { DecisionSnapshot } from './snapshot.js';

/** Mapping rules, MCP servers and policies, loaded and validated together so every error is reported at once. */
export interface DecisionRules {
  readonly mapping: MappingTable;
  /** `[[mcp.servers]]` (docs/mcp.md). */
  readonly mcp: McpTable;
  /** The LLM API hosts, built-in and `[[llm.hosts]]` (docs/llm.md "Hosts"). */
  readonly llm: LlmHosts;
  /** What LLM tokens cost: `[llm] prices_file` over the shipped table (docs/llm.md "Prices"). */
  readonly prices: PriceTable;
  readonly policy: PolicyEngine;
}

/**
 * Load the mapping rules, then the Cedar policies validated against the action classes those rules
 * produce. Throws one ConfigError with every issue of both (what `firma check` prints).
 */
export function loadDecisionRules(config: FirmaConfig): DecisionRules {
  const issues: ConfigIssue[] = [];
  let mapping: MappingTable | null = null;
  const { rulesPaths, policyDir } = ruleLocations(config);
  try {
    mapping = MappingTable.load(rulesPaths);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    issues.push(...err.errors);
  }
  let mcp: McpTable | null = null;
  try {
    mcp = McpTable.fromConfig(config);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    issues.push(...err.errors);
  }
  let policy: PolicyEngine | null = null;
  try {
    policy = PolicyEngine.load({
      dir: policyDir,
      ...(mapping !== null ? { actionClasses: [...mapping.actionClasses, ...(mcp?.actionClasses ?? [])] } : {}),
      mcpArguments: mcp?.argumentFields ?? [],
    });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    issues.push(...err.errors);
  }
  let prices: PriceTable | null = null;
  try {
    const shipped = PriceTable.shipped();
    prices = config.llm.prices_file === '' ? shipped : PriceTable.load(config.llm.prices_file).over(shipped);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    issues.push(...err.errors);
  }
  if (issues.length > 0 || mapping === null || mcp === null || policy === null || prices === null) throw new ConfigError(issues);
  return { mapping, mcp, llm: LlmHosts.fromConfig(config), prices, policy };
}

/** The sidecar's own folder (where `mappings/` and `policies/` ship), from dist/enforce/. */
const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * With a config file, its keys say where rules and policies are. With none (built-in defaults), the
 * shipped mapping packs and default policies are used wherever the sidecar is started from.
 */
export function ruleLocations(config: FirmaConfig): { rulesPaths: readonly string[]; policyDir: string } {
  if (config.source.path !== null) return { rulesPaths: config.sidecar.mapping.rules_paths, policyDir: config.sidecar.policy.dir };
  return { rulesPaths: [join(PACKAGE_ROOT, 'mappings', '*.toml')], policyDir: join(PACKAGE_ROOT, 'policies') };
}

export interface PipelineSetup {
  readonly enforcer: Enforcer;
  readonly rules: DecisionRules;
  /** Stage 1 (null when `[sidecar.capabilities] required = false`); possibly shared with the next setup. */
  readonly verifier: CapabilityVerifier | null;
  /** Per-agent action counts; shared across reloads. */
  readonly counters: ActionCounters;
  /** Per-agent LLM usage per window (docs/llm.md "Budgets"); shared across reloads. */
  readonly ledger: UsageLedger;
  /** Usage readers priced by this setup's table, counting into `ledger` (the snapshot's `usage`). */
  readonly usage: UsageAccounting;
  readonly approvals: ApprovalQueue | null;
  /** Closes the verifier (when a reload reused it, only the last setup holding it should close it). */
  close(): void;
}

/** What a reload carries over from the running setup instead of building anew. */
export interface PipelineReuse {
  /**
   * The running setup. Its action counters are always kept (a reload must not reset count-based
   * policies); its verifier is kept, with its token cache and revocation watch, when the public key
   * (path and bytes) and the revocation file are unchanged.
   */
  readonly previous?: PipelineSetup;
  /** The approval stage (held requests and grants outlive a reload); default: the previous setup's. */
  readonly approvals?: ApprovalQueue | null;
  /** The LLM usage ledger (the composition root builds it from `[redis]`); default: the previous setup's, else a new in-memory one. */
  readonly ledger?: UsageLedger;
}

/** Which verifier a set of capability settings needs; equal keys can share one. */
const verifierKeys = new WeakMap<CapabilityVerifier, string>();

function verifierKey(caps: FirmaConfig['sidecar']['capabilities']): string | null {
  let keyBytes: Buffer;
  try {
    keyBytes = readFileSync(caps.public_key_file);
  } catch {
    return null; // CapabilityVerifier.create reports it
  }
  const digest = createHash('sha256').update(keyBytes).digest('hex');
  return JSON.stringify([caps.public_key_file, digest, caps.revocation_file]);
}

/** Everything stage 1 and stage 2 need, from the config. Throws ConfigError / FirmaError when invalid. */
export function createPipeline(config: FirmaConfig, log: Logger, reuse: PipelineReuse = {}): PipelineSetup {
  const rules = loadDecisionRules(config);
  const caps = config.sidecar.capabilities;
  if (caps.required && !existsSync(caps.public_key_file) && !existsSync(caps.signing_key_file)) {
    // First start on a fresh machine, like the CA: make the pair so `firma token issue` works. A
    // deployment installs only the public key (the signing key stays with whoever issues tokens).
    ensureSigningKey(caps.signing_key_file, caps.public_key_file);
    log.info({ public_key: caps.public_key_file }, 'created the capability signing key pair; issue tokens with `firma token issue`');
  }
  // Read before the verifier exists, so a failure here leaves no watcher behind.
  let selfToken: string | null = null;
  if (caps.token_file !== '') {
    try {
      selfToken = readFileSync(caps.token_file, 'utf8').trim();
    } catch (err) {
      throw new FirmaError('FIRMA_TOKEN_FILE_UNREADABLE', `cannot read [sidecar.capabilities] token_file ${caps.token_file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  let verifier: CapabilityVerifier | null = null;
  if (caps.required) {
    const key = verifierKey(caps);
    const running = reuse.previous?.verifier ?? null;
    if (running !== null && key !== null && verifierKeys.get(running) === key) {
      verifier = running;
    } else {
      verifier = CapabilityVerifier.create({ publicKeyFile: caps.public_key_file, revocationFile: caps.revocation_file, log });
      if (key !== null) verifierKeys.set(verifier, key);
    }
  }
  if (rules.mapping.ruleCount === 0 && config.sidecar.mapping.default_protected) {
    log.warn({ rules_paths: config.sidecar.mapping.rules_paths }, 'no mapping rules loaded: every request will be denied as unclassified');
  }
  const counters = reuse.previous?.counters ?? new ActionCounters();
  const approvals = reuse.approvals !== undefined ? reuse.approvals : (reuse.previous?.approvals ?? null);
  const ledger = reuse.ledger ?? reuse.previous?.ledger ?? new MemoryLedger();
  const policy = rules.policy;
  const budgets = BudgetGate.create({
    rules: budgetRulesOf(config),
    ledger,
    policyReadsUsage: policy.readsLlmUsage ? (actionClass) => policy.readsLlmUsageFor(actionClass) : null,
  });
  const enforcer = new Enforcer({
    mode: config.sidecar.mode,
    defaultProtected: config.sidecar.mapping.default_protected,
    coversHost: (host) => rules.mapping.coversHost(host) || rules.mcp.coversHost(host),
    capabilities: verifier,
    selfToken,
    policy: rules.policy,
    counters,
    approvals,
    budgets,
    onError: (err, requestId) => log.error({ err, request_id: requestId }, 'enforcement failed; denied'),
  });
  return {
    enforcer,
    rules,
    verifier,
    counters,
    ledger,
    usage: new UsageAccounting(rules.prices, ledger, log),
    approvals,
    close: () => {
      verifier?.close();
    },
  };
}

/** The snapshot requests are decided under, from a config and its setup (docs/architecture.md "Enforce"). */
export function snapshotOf(config: FirmaConfig, setup: PipelineSetup, generation: number): DecisionSnapshot {
  return {
    mapping: setup.rules.mapping,
    mcp: setup.rules.mcp,
    llm: setup.rules.llm,
    usage: setup.usage,
    enforcer: setup.enforcer,
    bodyLimitBytes: config.sidecar.mapping.body_limit_bytes,
    policyHash: setup.rules.policy.policyHash,
    mode: config.sidecar.mode,
    generation,
  };
}
