/** The test upstream certificate's DNS name (helpers/pki.ts puts it in the SANs). */
export const UPSTREAM_NAME = 'upstream.test';

/**
 * Mapping rules of the transparent-mode tests: every path of `host` is `demo.call` (low risk, allowed by
 * the default policies) and `/admin/**` is `demo.admin` (critical, denied).
 */
export function callAndAdminRules(host: string): string {
  return `
[[rules]]
host = "${host}"
action_class = "demo.call"
risk = "low"

[[rules]]
host = "${host}"
path = "/admin/**"
action_class = "demo.admin"
risk = "critical"
`;
}
