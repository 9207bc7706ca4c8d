/**
 * Which hosts are LLM APIs and which response shape each speaks (docs/llm.md "Hosts"): the
 * built-in api.openai.com and api.anthropic.com, plus `[[llm.hosts]]`, an entry for a built-in host
 * overriding it. Normalize sets the envelope's `llm` from it; the budget stage and the usage reader act
 * only on envelopes that carry one.
 */
import type { FirmaConfig } from '../config/index.js';
import type { Target } from '../core/envelope.js';
import type { LlmFacts, LlmFormat } from '../core/llm.js';

interface HostEntry {
  /** null: the default port of the request's scheme. */
  readonly port: number | null;
  readonly facts: LlmFacts;
}

const BUILT_IN: ReadonlyArray<readonly [string, LlmFormat]> = [
  ['api.openai.com', 'openai'],
  ['api.anthropic.com', 'anthropic'],
];

export class LlmHosts {
  /** host → its entries (one per port written; usually one). */
  readonly #byHost: ReadonlyMap<string, readonly HostEntry[]>;

  private constructor(byHost: ReadonlyMap<string, readonly HostEntry[]>) {
    this.#byHost = byHost;
  }

  /** The built-in hosts only (what a config without `[[llm.hosts]]` gives). */
  static readonly BUILT_IN: LlmHosts = LlmHosts.#build([]);

  /** From a validated config: the built-in hosts, then `[[llm.hosts]]` (same host and port: the entry wins). */
  static fromConfig(config: Pick<FirmaConfig, 'llm'>): LlmHosts {
    const configured = config.llm.hosts.map((h) => ({ host: h.host.host, port: h.host.port, text: h.host.text, format: h.format }));
    return configured.length === 0 ? LlmHosts.BUILT_IN : LlmHosts.#build(configured);
  }

  static #build(configured: ReadonlyArray<{ host: string; port: number | null; text: string; format: LlmFormat }>): LlmHosts {
    const byHost = new Map<string, HostEntry[]>();
    const add = (host: string, port: number | null, text: string, format: LlmFormat): void => {
      const list = (byHost.get(host) ?? []).filter((e) => e.port !== port);
      list.push({ port, facts: Object.freeze({ host: text, format }) });
      // An exact port is more specific than "the scheme's default": it is looked at first.
      list.sort((a, b) => (a.port === null ? 1 : 0) - (b.port === null ? 1 : 0));
      byHost.set(host, list);
    };
    for (const [host, format] of BUILT_IN) add(host, null, host, format);
    for (const h of configured) add(h.host, h.port, h.text, h.format);
    return new LlmHosts(byHost);
  }

  /**
   * The LLM facts of a request to `target`, or null when it is no LLM API. One Map lookup on the
   * canonical host; a host written without a port matches the scheme's default port only.
   */
  formatFor(target: Target): LlmFacts | null {
    const entries = this.#byHost.get(target.host);
    if (entries === undefined) return null;
    for (const e of entries) {
      const port = e.port ?? (target.scheme === 'https' ? 443 : 80);
      if (port === target.port) return e.facts;
    }
    return null;
  }

  /** Every host the sidecar reads usage from (`host` or `host:port`), for `firma check` and logs. */
  get hosts(): readonly string[] {
    return [...this.#byHost.values()].flatMap((list) => list.map((e) => e.facts.host)).sort();
  }
}
