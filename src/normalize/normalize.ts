import type { Envelope, RawRequest } from '../core/envelope.js';
import { splitTarget } from '../core/envelope.js';
import { normalizePath } from './path.js';
import type { MappingTable } from './mapping.js';
import { LlmHosts } from './llm-hosts.js';

const NO_FIELDS: readonly string[] = [];

/**
 * The normalize stage's entry: RawRequest → Envelope. The path is normalised, then the mapping rules
 * give the action class, risk and the body fields a rule opts into (docs/architecture.md "Normalize").
 * A blind tunnel is classified as `CONNECT host` with no path.
 */
export function normalize(raw: RawRequest, mapping: MappingTable, llmHosts: LlmHosts = LlmHosts.BUILT_IN): Envelope {
  const envelope = unclassifiedEnvelope(raw, true);
  // A blind tunnel's bytes are never read, so there is no usage to count or budget to hold it to.
  const llm = raw.kind === 'tunnel' ? null : llmHosts.formatFor(raw.target);
  const method = raw.kind === 'tunnel' ? 'CONNECT' : raw.method;
  const c = mapping.classify(method, raw.target.host, envelope.normalizedPath);
  if (c === null) return llm === null ? envelope : { ...envelope, llm };
  return { ...envelope, actionClass: c.actionClass, risk: c.risk, ruleId: c.ruleId, bodyFields: c.bodyFields, llm };
}

/**
 * The envelope of a request before classification. `normalizePaths` is false only when normalising
 * itself failed (then rules would not have matched anyway, and the raw path is recorded).
 */
export function unclassifiedEnvelope(raw: RawRequest, normalizePaths: boolean): Envelope {
  const { path, query } = splitTarget(raw.pathAndQuery);
  return {
    requestId: raw.requestId,
    kind: raw.kind,
    agentId: raw.identity.agentId,
    method: raw.method,
    target: raw.target,
    path,
    query,
    normalizedPath: path === null ? '/' : normalizePaths ? normalizePath(path) : path,
    actionClass: null,
    risk: null,
    ruleId: null,
    bodyFields: NO_FIELDS,
    body: null,
    llm: null,
  };
}
