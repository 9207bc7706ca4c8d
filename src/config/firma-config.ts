/**
 * THE declaration of firma.toml. To add a key: add one line here (with `.default(...)` and
 * `.describe(...)`), then document it in the README. Types, validation, defaults and the JSON Schema
 * all follow from this declaration. A table whose keys all have defaults is optional itself.
 */
import { s } from './schema-dsl.js';
import type { Infer } from './schema-dsl.js';
import {
  AGENT_ID_PATTERN,
  LISTEN_JSON_PATTERN,
  checkAgentId,
  parseHostPattern,
  parseListenAddress,
  resolveConfigRelativePath,
} from './validators.js';

const listenAddress = () => s.string().transform(parseListenAddress, { pattern: LISTEN_JSON_PATTERN });

export const firmaConfigSchema = s
  .table({
    sidecar: s
      .table({
        agent_id: s
          .string()
          .refine(checkAgentId, { pattern: AGENT_ID_PATTERN, minLength: 1, maxLength: 128 })
          .default('local-agent')
          .describe('Agent identity used for requests that carry no Proxy-Authorization (1-128 of A-Z a-z 0-9 . _ : @ -).'),
        log_level: s
          .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
          .default('info')
          .describe('Minimum level of the JSON log lines written to stdout (pretty when stdout is a terminal).'),
        drain_timeout_ms: s
          .integer({ min: 0, max: 600_000 })
          .default(10_000)
          .describe('On SIGTERM, how long in-flight requests may finish before they are cut (milliseconds).'),

        interceptor: s
          .table({
            listen: listenAddress()
              .default('127.0.0.1:8080')
              .describe('Proxy listener as host:port (IPv4, [IPv6] or localhost; port 0 = ephemeral).'),
            mitm: s
              .table({
                ca_dir: s
                  .string()
                  .transform(resolveConfigRelativePath)
                  .default('certs')
                  .describe("Folder holding the local CA; relative paths resolve against the config file's folder."),
                bypass_hosts: s
                  .array(s.string().transform(parseHostPattern), { unique: true })
                  .default([])
                  .describe('Hosts tunneled without TLS interception (policy on host only): "api.example.com", "*.example.com" (subdomains, not the apex) or IP addresses.'),
              })
              .describe('TLS interception with the local CA.'),
          })
          .describe('The agent-facing proxy listener.'),

        admin: s
          .table({
            listen: listenAddress()
              .default('127.0.0.1:9090')
              .describe('Admin API listener (health, readiness, metrics, approvals) as host:port.'),
          })
          .describe('The admin API.'),

        connector: s
          .table({
            default_timeout_ms: s
              .integer({ min: 1, max: 3_600_000 })
              .default(30_000)
              .describe('Upstream timeout for hosts without their own timeout_ms (milliseconds).'),
          })
          .describe('Upstream dispatch.'),
      })
      .describe('Sidecar settings.'),
  })
  .describe('Firma Sidecar configuration (firma.toml).');

export type FirmaConfigValues = Infer<typeof firmaConfigSchema>;

/** The validated, defaulted and transformed configuration. */
export type FirmaConfig = FirmaConfigValues & {
  /** The file the config came from; null when the built-in defaults were used. */
  source: { path: string | null };
  /** Folder relative paths resolved against (the config file's folder, or cwd for built-in defaults). */
  baseDir: string;
};
