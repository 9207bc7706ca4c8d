import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type FirmaConfig } from '../../src/config/index.js';
import { createPipeline, snapshotOf, type PipelineSetup } from '../../src/pipeline/setup.js';
import { createLogger } from '../../src/core/log.js';
import type { DecisionSnapshot } from '../../src/pipeline/snapshot.js';
import type { Identity, RawRequest } from '../../src/core/envelope.js';
import { REPO } from './sidecar.js';

/**
 * The stages as the sidecar builds them, without a socket: the shipped mapping packs and default
 * policies, capabilities off unless `opts.capabilities` says otherwise.
 */
export function shippedStages(opts: { sidecar?: string; mapping?: string; capabilities?: string } = {}): { setup: PipelineSetup; snapshot: DecisionSnapshot; config: FirmaConfig } {
  const dir = mkdtempSync(join(tmpdir(), 'firma-stages-'));
  writeFileSync(join(dir, 'firma.toml'), `
[sidecar]
${opts.sidecar ?? ''}
[sidecar.mapping]
rules_paths = ["${join(REPO, 'mappings', '*.toml')}"]
${opts.mapping ?? ''}
[sidecar.policy]
dir = "${join(REPO, 'policies')}"
[sidecar.capabilities]
${opts.capabilities ?? 'required = false'}
`);
  const config = loadConfig(join(dir, 'firma.toml'), dir);
  const setup = createPipeline(config, createLogger('silent'));
  const snapshot = snapshotOf(config, setup, 1);

  return { setup, snapshot, config };
}

export const AGENT: Identity = { agentId: 'agent-a', token: null, source: 'default' };

let seq = 0;
/** A request as the interceptor hands it to the pipeline. */
export function rawRequest(method: string, host: string, pathAndQuery: string | null, kind: RawRequest['kind'] = 'request'): RawRequest {
  return {
    requestId: `req-${++seq}`,
    kind,
    identity: AGENT,
    method,
    target: { scheme: 'https', host, kind: 'dns', port: 443 },
    pathAndQuery,
  };
}
