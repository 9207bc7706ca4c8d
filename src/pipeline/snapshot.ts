import type { Enforcer } from '../enforce/enforcer.js';
import type { MappingTable } from '../normalize/mapping.js';
import type { McpTable } from '../normalize/mcp.js';
import type { LlmAccounting } from '../core/llm.js';
import type { LlmHosts } from '../normalize/llm-hosts.js';

/**
 * Everything a request is decided under, as one immutable value. A request reads it once, when it
 * starts, and uses that same snapshot for classification, the body limit, the stages and the mode; the
 * audit's policy_hash comes from the decision the snapshot's pipeline made. So a reload never mixes two
 * configurations inside one request.
 */
export interface DecisionSnapshot {
  /** The normalize stage's rules. */
  readonly mapping: MappingTable;
  /** The declared MCP endpoints (docs/mcp.md); McpTable.EMPTY when none. */
  readonly mcp: McpTable;
  /** The LLM API hosts (docs/llm.md "Hosts"): normalize sets `envelope.llm` from it. */
  readonly llm: LlmHosts;
  /** Usage readers for calls to LLM hosts, and the ledger their usage counts in (docs/llm.md "Usage"); the same ledger in every snapshot. */
  readonly usage: LlmAccounting;
  /** Stage 1 and stage 2. */
  readonly enforcer: Enforcer;
  /** For rules with body_fields: how much of a JSON body is read before deciding. */
  readonly bodyLimitBytes: number;
  readonly policyHash: string;
  readonly mode: 'enforce' | 'monitor';
  /** 1 at start, +1 per accepted reload (for logs and tests). */
  readonly generation: number;
}

/** Where the pipeline reads the snapshot a new request is decided under. */
export interface DecisionSource {
  current(): DecisionSnapshot;
}

/** The holder a reload swaps: one reference assignment, so the swap is atomic for every reader. */
export class DecisionSet implements DecisionSource {
  #current: DecisionSnapshot;

  constructor(initial: DecisionSnapshot) {
    this.#current = initial;
  }

  current(): DecisionSnapshot {
    return this.#current;
  }

  /** Install `next`; returns the snapshot it replaces (requests that already read it keep it). */
  swap(next: DecisionSnapshot): DecisionSnapshot {
    const previous = this.#current;
    this.#current = next;
    return previous;
  }
}
