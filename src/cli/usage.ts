/** `firma help`, and the tail of every usage error (exit code 2); docs/commands.md. */
export const USAGE = `firma — egress sidecar proxy for AI agents

usage:
  firma start [--config PATH]        run the sidecar (config: --config, $FIRMA_CONFIG, ./firma.toml, built-in defaults)
  firma check [--require-env] [--config PATH]
                                     validate the configuration, mapping rules and policies; print every
                                     error as file:line:col and exit 1 (--require-env: a credential
                                     variable unset in this shell is an error, not a warning)
  firma ca init [--config PATH]      create the local CA under ca_dir (never overwrites)
  firma ca export [--env] [--config PATH]
                                     print the CA certificate PEM, or the env lines that make clients trust it
  firma ca export --admin URL        print the CA a running sidecar serves on its admin listener
  firma token issue --agent ID --actions a,b --scope HOST[/PATH] [--ttl 1h] [--config PATH]
                                     mint a capability token (PASETO v4.public) with the local signing key
  firma token revoke TOKEN_ID [--config PATH]
                                     add a token id to the revocation list (takes effect without restart)
  firma audit verify [PATH...] [--public-key FILE] [--allow-unsigned-tail]
                                     verify the hash chain and every signature; exit 1 naming the first bad
                                     line, or the events after the last checkpoint (not signed yet) unless
                                     --allow-unsigned-tail
  firma audit key                    print the audit public key (to verify elsewhere)
  firma audit repair [--config PATH] move a torn last line (left by an older version) aside and record it;
                                     run with the sidecar stopped (start does this by itself)
  firma audit tail [-f] [--decision D] [--agent A] [--host H]
                                     a readable view of the audit log, one line per request
  firma usage [--agent A] [--since 24h] [--by agent|model] [PATH...] [--config PATH]
                                     LLM calls, tokens and cost per agent (or model) from the audit log,
                                     rotated files included (--since: 90m, 24h, 7d or a date)
  firma approvals list [--admin URL] requests held for approval, and standing grants
  firma approvals approve ID [--grant-minutes N [--grant-host]] [--reason TEXT]
                                     release a held request (and identical ones); optionally grant the
                                     agent this action class (on this host) for N minutes
  firma approvals deny ID [--reason TEXT]
  firma approvals grants | revoke GRANT_ID
                                     (mutations use the token in the variable named by [sidecar.admin] token_env)
  firma schema                       print the JSON Schema of firma.toml (for editors)
  firma version
`;

/** Exit with a message on stderr; expected failures are not stack traces. */
export function fail(message: string, code = 1): never {
  process.stderr.write(message.endsWith('\n') ? message : message + '\n');
  process.exit(code);
}
