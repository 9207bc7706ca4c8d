/**
 * What instrumented modules report to the metrics (docs/listeners.md, `GET /metrics`). The ports live
 * here so the connector, the audit recorder and the leaf-certificate cache report without importing
 * admin/, which implements them.
 */
import type { Target, EnvelopeKind } from './envelope.js';
import type { OutcomeErrorKind } from './outcome.js';
import type { LlmUsage } from './llm.js';

export type RateLimitRejection = 'rate_limited' | 'limiter_unavailable';

/** Decisions and outcomes, reported by the audit recorder (the one place every request passes). */
export interface RequestMetrics {
  /** One request decided (labels as in its audit decision event). */
  decision(decision: string, stage: string, reason: string): void;
  /**
   * One request to a declared MCP endpoint decided, by server, method and tool label (bounded: a known
   * method or "other"; the tool rule's glob, "(other)" or ""; docs/mcp.md "Metrics").
   */
  mcpCall?(server: string, method: string, tool: string, decision: string): void;
  /** One LLM call's usage, once its response was read (docs/llm.md "Metrics"; labels bounded there). */
  llmUsage?(agentId: string, usage: LlmUsage): void;
  /** An LLM call whose response usage could not be read, by reason (a fixed set; docs/llm.md "Reason codes"). */
  llmUsageUnread?(reason: string): void;
  /** One dispatch finished: upstream status class, connector error, and total time of plain requests. */
  outcome(kind: EnvelopeKind, target: Target, upstreamStatus: number | null, error: OutcomeErrorKind | null, durationMs: number): void;
}

/** Token buckets, reported by the connector for configured (hence labelled) buckets only. */
export interface RateLimitMetrics {
  /** A token was granted after `waitedMs` (0 when one was there at once). */
  rateLimitGranted(bucket: string, waitedMs: number): void;
  rateLimitRejected(bucket: string, reason: RateLimitRejection): void;
}

/** The audit writer's batches. */
export interface AuditWriteMetrics {
  /** One batch written (and fsynced when configured) in `seconds`. */
  auditWritten(seconds: number): void;
  /** A write, fsync, rotation or reopen of the audit file failed. */
  auditWriteFailed(): void;
}

/** Counters kept by LeafCertificates (`stats`), read at scrape time. */
export interface LeafCertificateStats {
  readonly minted: number;
  readonly cacheHits: number;
  readonly evictions: number;
}

/** Which bound closed or refused a client connection (docs/listeners.md "Connection bounds"). */
export type ConnectionBound = 'handshake_timeout' | 'headers_timeout' | 'max_connections' | 'max_connections_per_client';

/** Client connections, reported by the interceptor. */
export interface ConnectionMetrics {
  connectionBoundHit(bound: ConnectionBound): void;
}
