/**
 * THE declaration of firma.toml. To add a key: add one line here (with `.default(...)` and
 * `.describe(...)`), then document it in docs/configuration.md. Types, validation, defaults and the JSON Schema
 * all follow from this declaration. A table whose keys all have defaults is optional itself.
 */
import { s } from './schema-dsl.js';
import type { Infer } from './schema-dsl.js';
import {
  checkEnvName,
  checkHeaderName,
  checkHttpUrl,
  checkOptionalHttpUrl,
  parseOptionalListenAddress,
  checkRedisUrl,
  parseAllowPrivate,
  parseUpstreamHost,
  parseVaultSecretPath,
  AGENT_ID_PATTERN,
  LISTEN_JSON_PATTERN,
  checkAgentId,
  parseHostPattern,
  parseListenAddress,
  resolveConfigRelativePath,
} from './validators.js';
import { checkCredential, checkVaultAuth, duplicateCredential, duplicateOf, hostKey } from './entry-checks.js';
import { mcpSchema } from './mcp-checks.js';
import { budgetsSchema, llmSchema } from './llm-checks.js';

/**
 * The headers AI SDKs put their API key in (OpenAI and most: Authorization; Anthropic: x-api-key; Azure
 * OpenAI: api-key; Google: x-goog-api-key). Where the sidecar injects a credential, the agent's
 * placeholder in any of them is removed, so one request never carries two keys (docs/configuration.md "[[credentials]]").
 */
export const AGENT_AUTH_HEADERS: readonly string[] = ['authorization', 'x-api-key', 'api-key', 'x-goog-api-key'];

const listenAddress = () => s.string().transform(parseListenAddress, { pattern: LISTEN_JSON_PATTERN });

export const firmaConfigSchema = s
  .table({
    sidecar: s
      .table({
        mode: s
          .enum(['enforce', 'monitor'])
          .default('enforce')
          .describe('"enforce" blocks what the pipeline denies; "monitor" decides and reports everything but blocks nothing (responses carry x-firma-would-deny).'),
        agent_id: s
          .string()
          .refine(checkAgentId, { pattern: AGENT_ID_PATTERN, minLength: 1, maxLength: 128 })
          .default('local-agent')
          .describe('Agent identity used for requests that carry no Proxy-Authorization (1-128 of A-Z a-z 0-9 . _ : @ -).'),
        log_level: s
          .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
          .default('info')
          .describe('Minimum level of the JSON log lines written to stdout (pretty when stdout is a terminal).'),
        reload: s
          .table({
            watch: s.boolean().default(true).describe('Re-read firma.toml, mapping rules and policies when one of them changes on disk (SIGHUP always does).'),
            debounce_ms: s.integer({ min: 10, max: 60_000 }).default(300).describe('Wait this long after the last file change before reloading.'),
          })
          .describe('Hot reload of config, mapping rules and policies.'),
        drain_timeout_ms: s
          .integer({ min: 0, max: 600_000 })
          .default(10_000)
          .describe('On SIGTERM, how long in-flight requests may finish before they are cut (milliseconds).'),

        interceptor: s
          .table({
            listen: listenAddress()
              .default('127.0.0.1:8080')
              .describe('Proxy listener as host:port (IPv4, [IPv6] or localhost; port 0 = ephemeral).'),
            transparent_listen: s
              .string()
              .transform(parseOptionalListenAddress, { pattern: `^$|${LISTEN_JSON_PATTERN}` })
              .default('')
              .describe('Transparent listener for connections redirected by iptables REDIRECT, e.g. "0.0.0.0:15001"; "" = off. TLS is told from the first bytes (target = SNI), plain HTTP uses Host.'),
            handshake_timeout_ms: s
              .integer({ min: 100, max: 600_000 })
              .default(10_000)
              .describe('From the CONNECT answer (or a redirected connection\'s accept) to a completed TLS handshake: the ClientHello and the handshake after it.'),
            headers_timeout_ms: s
              .integer({ min: 100, max: 600_000 })
              .default(30_000)
              .describe('How long a request\'s headers may take to arrive, on plain connections and inside tunnels alike; a connection opened (or a tunnel set up) without a request is closed after it too (408).'),
            keep_alive_timeout_ms: s
              .integer({ min: 100, max: 600_000 })
              .default(30_000)
              .describe('How long a connection may stay idle between requests before the sidecar closes it.'),
            max_connections: s
              .integer({ min: 0, max: 1_000_000 })
              .default(0)
              .describe('Client connections open at once (both listeners); past it new ones get 503 at once. 0 = from the open-files limit: (soft RLIMIT_NOFILE - 128) / 2, at most 16384.'),
            max_connections_per_client: s
              .integer({ min: 0, max: 1_000_000 })
              .default(0)
              .describe('Client connections open at once from one source address; 0 = no cap of its own (max_connections still applies).'),
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
            token_env: s
              .string()
              .refine(checkEnvName)
              .default('FIRMA_ADMIN_TOKEN')
              .describe('Environment variable holding the bearer token for mutating admin calls (approve, deny, grants). Unset or empty: every mutation is refused (401).'),
            token_identity: s
              .string()
              .refine(checkAgentId, { pattern: AGENT_ID_PATTERN, minLength: 1, maxLength: 128 })
              .default('admin')
              .describe('Approver name recorded in the audit for calls made with the token_env token.'),
            approvers: s
              .array(
                s.table({
                  name: s
                    .string()
                    .refine(checkAgentId, { pattern: AGENT_ID_PATTERN, minLength: 1, maxLength: 128 })
                    .describe('Approver name recorded in the audit for calls made with this token.'),
                  token_env: s.string().refine(checkEnvName).describe('Environment variable holding this approver\'s bearer token.'),
                }),
              )
              .default([])
              .describe('More named approvers, each with a token of their own (in addition to token_env).'),
          })
          .describe('The admin API.'),

        mapping: s
          .table({
            default_protected: s
              .boolean()
              .default(true)
              .describe('Requests no mapping rule classifies are denied ("unclassified"); false lets them through unprotected (no credentials, still logged and audited).'),
            rules_paths: s
              .array(s.string().transform(resolveConfigRelativePath), { unique: true })
              .default(['mappings/*.toml'])
              .describe('Mapping rule files ([[rules]] method/host/path/action_class/risk); "*" and "?" may be used in the file name part.'),
            body_limit_bytes: s
              .integer({ min: 1, max: 16_777_216 })
              .default(65_536)
              .describe('For rules with body_fields: how much of a JSON request body is read to extract them; a larger body is denied.'),
          })
          .describe('Normalization: mapping rules give each request an action class and a risk tier.'),

        capabilities: s
          .table({
            required: s
              .boolean()
              .default(true)
              .describe('Stage 1: every classified request needs a valid capability token (PASETO v4.public) covering its action class and host/path.'),
            public_key_file: s
              .string()
              .transform(resolveConfigRelativePath)
              .default('keys/capability.pub')
              .describe('Ed25519 public key (PEM) that verifies capability tokens.'),
            signing_key_file: s
              .string()
              .transform(resolveConfigRelativePath)
              .default('keys/capability.key')
              .describe('Ed25519 private key (PEM, 0600) used by `firma token issue`; created with the public key on first use.'),
            revocation_file: s
              .string()
              .transform(resolveConfigRelativePath)
              .default('keys/revoked.txt')
              .describe('Revoked token ids, one per line; watched, so `firma token revoke` takes effect without a restart.'),
            token_file: s
              .string()
              .default('')
              .transform((v, ctx) => (v === '' ? '' : resolveConfigRelativePath(v, ctx)))
              .describe('The sidecar\'s own capability token, used for requests without Proxy-Authorization ("" = none).'),
          })
          .describe('Stage 1: capability tokens.'),

        policy: s
          .table({
            dir: s
              .string()
              .transform(resolveConfigRelativePath)
              .default('policies')
              .describe('Folder of Cedar policies (*.cedar), validated against the shipped schema at startup and by `firma check`.'),
          })
          .describe('Stage 2: runtime policies (Cedar).'),

        connector: s
          .table({
            default_timeout_ms: s
              .integer({ min: 1, max: 3_600_000 })
              .default(30_000)
              .describe('For hosts without their own timeout_ms: bound on rate-limit wait + connect + time to response headers (milliseconds).'),
            idle_timeout_ms: s
              .integer({ min: 1, max: 86_400_000 })
              .default(60_000)
              .describe('Longest silence allowed inside a streaming request or response body before it is cut; total duration is never bounded (milliseconds).'),
            allow_private: s
              .array(s.string().transform(parseAllowPrivate), { unique: true })
              .default([])
              .describe('Private destinations allowed past the SSRF guard, as CIDR or CIDR:port ("10.0.0.0/8:5432", "127.0.0.1/32", "[fd00::/8]:443"). Cloud metadata addresses are never allowed.'),
            hosts: s
              .array(
                s
                  .table({
                    host: s
                      .string()
                      .transform(parseUpstreamHost)
                      .describe('Exact upstream host, optionally with :port (without a port: the scheme default, 443 or 80).'),
                    rps: s
                      .integer({ min: 1, max: 1_000_000 })
                      .optional()
                      .describe('Token-bucket refill rate, requests per second. Absent: no rate limit.'),
                    burst: s
                      .integer({ min: 1, max: 1_000_000 })
                      .optional()
                      .describe('Token-bucket size (requests that may go at once). Default: rps.'),
                    timeout_ms: s
                      .integer({ min: 1, max: 3_600_000 })
                      .optional()
                      .describe('Bound on rate-limit wait + connect + time to response headers. Default: default_timeout_ms.'),
                    idle_timeout_ms: s
                      .integer({ min: 1, max: 86_400_000 })
                      .optional()
                      .describe('Longest silence inside a streaming body. Default: idle_timeout_ms.'),
                  })
                  .refine((h) => (h.burst !== undefined && h.rps === undefined ? 'burst needs rps' : undefined)),
              )
              .default([])
              .refine((hosts) => duplicateOf(hosts.map((h) => hostKey(h.host)), 'host'))
              .describe('Per-host limits: [[sidecar.connector.hosts]].'),
          })
          .describe('Upstream dispatch.'),
      })
      .describe('Sidecar settings.'),

    credentials: s
      .array(
        s
          .table({
            host: s
              .string()
              .transform(parseUpstreamHost)
              .describe('Exact upstream host the credential is injected for, optionally with :port (without: 443, or 80 with allow_plaintext).'),
            mode: s.enum(['basic', 'vault']).describe('"basic": value from an environment variable; "vault": from HashiCorp Vault KV v2.'),
            header: s.string().refine(checkHeaderName).default('Authorization').describe('Header to set; replaces any header of that name the agent sent.'),
            remove_headers: s
              .array(s.string().refine(checkHeaderName))
              .default([...AGENT_AUTH_HEADERS])
              .describe('Headers removed from the agent\'s request where this credential is injected (an SDK\'s own placeholder key must not reach the upstream beside it); [] removes only `header`.'),
            prefix: s.string().default('').describe('Prepended to the value, e.g. "Bearer ".'),
            value_from_env: s.string().refine(checkEnvName).optional().describe('mode = "basic": environment variable holding the value (checked at startup).'),
            secret_path: s.string().transform(parseVaultSecretPath).optional().describe('mode = "vault": KV v2 "mount/data/path#field".'),
            allow_plaintext: s.boolean().default(false).describe('Also inject over plain http:// (never by default).'),
          })
          .refine(checkCredential),
      )
      .default([])
      .refine((creds) => duplicateCredential(creds))
      .describe('Credentials injected by the connector after a request is allowed: [[credentials]].'),

    vault: s
      .table({
        address: s.string().refine(checkHttpUrl).default('http://127.0.0.1:8200').describe('Vault server URL.'),
        auth: s.enum(['token', 'approle', 'kubernetes']).default('token').describe('How the sidecar logs in to Vault.'),
        namespace: s.string().default('').describe('Vault Enterprise namespace (X-Vault-Namespace); "" for none.'),
        token_env: s.string().refine(checkEnvName).default('VAULT_TOKEN').describe('auth = "token": environment variable holding the token.'),
        approle_mount: s.string().default('approle').describe('auth = "approle": mount path of the AppRole auth method.'),
        role_id_env: s.string().refine(checkEnvName).optional().describe('auth = "approle": environment variable holding the role_id.'),
        role_id_file: s.string().transform(resolveConfigRelativePath).optional().describe('auth = "approle": file holding the role_id.'),
        secret_id_env: s.string().refine(checkEnvName).optional().describe('auth = "approle": environment variable holding the secret_id.'),
        secret_id_file: s.string().transform(resolveConfigRelativePath).optional().describe('auth = "approle": file holding the secret_id.'),
        kubernetes_mount: s.string().default('kubernetes').describe('auth = "kubernetes": mount path of the Kubernetes auth method.'),
        kubernetes_role: s.string().default('').describe('auth = "kubernetes": Vault role to log in as.'),
        kubernetes_jwt_file: s
          .string()
          .transform(resolveConfigRelativePath)
          .default('/var/run/secrets/kubernetes.io/serviceaccount/token')
          .describe('auth = "kubernetes": service account token file.'),
        cache_ttl_ms: s.integer({ min: 0, max: 86_400_000 }).default(60_000).describe('How long a secret value is reused before it is read again (rotation takes effect within this).'),
        timeout_ms: s.integer({ min: 1, max: 60_000 }).default(5_000).describe('Timeout of each Vault HTTP call.'),
      })
      .refine(checkVaultAuth)
      .describe('HashiCorp Vault, for credentials with mode = "vault".'),

    audit: s
      .table({
        path: s
          .string()
          .transform(resolveConfigRelativePath)
          .default('audit/audit.jsonl')
          .describe('Append-only JSON Lines audit log (created 0600). Rotated files keep the hash chain.'),
        key_dir: s
          .string()
          .transform(resolveConfigRelativePath)
          .default('keys')
          .describe('Folder of the audit signing key pair (audit.key 0600, audit.pub), created on first start.'),
        fsync: s
          .enum(['always', 'interval', 'never'])
          .default('interval')
          .describe('"always": a request is dispatched only once its decision event is fsynced (group commit); "interval": fsync every fsync_interval_ms; "never": leave it to the OS. What a crash can lose: docs/audit.md "Durability".'),
        fsync_interval_ms: s.integer({ min: 1, max: 60_000 }).default(100).describe('With fsync = "interval": how often.'),
        max_file_bytes: s
          .integer({ min: 4096, max: 1_099_511_627_776 })
          .default(104_857_600)
          .describe('Rotate the audit file past this size; the first event of the new file links to the last of the old.'),
        stdout: s.boolean().default(false).describe('Also write every event as a JSON line to stdout (through the logger), e.g. for a log collector.'),
        signatures: s
          .enum(['checkpoint', 'event'])
          .default('checkpoint')
          .describe('"checkpoint": events are hash-chained unsigned and a signed checkpoint event follows within 100 ms or 1,000 events (and at stop and rotation); "event": every event signed. Why and what each costs: docs/audit.md "Checkpoints".'),
      })
      .describe('The signed, hash-chained audit log (docs/audit.md).'),

    approvals: s
      .table({
        timeout_ms: s
          .integer({ min: 1_000, max: 86_400_000 })
          .default(300_000)
          .describe('How long a request that needs approval is held before it is refused (403 approval_timeout).'),
        max_pending: s.integer({ min: 1, max: 100_000 }).default(1_000).describe('Pending approvals held at once; past it new ones are refused (403 approval_capacity).'),
        max_grant_minutes: s.integer({ min: 1, max: 10_080 }).default(1_440).describe('Longest standing grant an approver may give.'),
        webhook_url: s
          .string()
          .refine(checkOptionalHttpUrl)
          .default('')
          .describe('Slack-compatible webhook (JSON with a "text" field) sent once per new approval; "" = none. Failures are logged, never block.'),
        webhook_timeout_ms: s.integer({ min: 100, max: 60_000 }).default(5_000).describe('Bound on each webhook call.'),
        page_url: s
          .string()
          .refine(checkOptionalHttpUrl)
          .default('')
          .describe('Address of the approvals page as approvers reach it, linked from the webhook; "" = http://<admin listen>/approvals/ui.'),
      })
      .describe('Human approval of requests that a policy marks @approval.'),

    redis: s
      .table({
        url: s.string().refine(checkRedisUrl).default('').describe('Redis for rate limits and LLM usage totals shared across replicas, e.g. "redis://127.0.0.1:6379"; "" keeps them in memory.'),
        key_prefix: s.string().default('firma').describe('Prefix of the Redis keys.'),
        on_error: s
          .enum(['deny', 'local'])
          .default('deny')
          .describe('When Redis cannot be reached: "deny" refuses rate-limited requests and LLM calls under a budget (fail closed); "local" falls back to per-replica buckets and totals.'),
        timeout_ms: s.integer({ min: 1, max: 60_000 }).default(500).describe('Bound on each Redis call; past it the on_error rule applies.'),
      })
      .describe('Shared rate-limit and LLM budget state.'),

    mcp: mcpSchema,

    llm: llmSchema,

    budgets: budgetsSchema,
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
