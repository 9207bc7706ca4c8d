#!/bin/sh
# Create the three Secrets deploy/k8s/deployment.yaml mounts, from the firma CLI:
#
#   firma-ca          ca.crt + ca.key      `firma ca init` (a new CA for this deployment)
#   firma-admin       token                a random bearer token for approve/deny (FIRMA_ADMIN_TOKEN)
#   firma-capability  capability.pub       the public key that verifies capability tokens
#                     token                the pod's own capability token (`firma token issue`)
#
# Usage: deploy/k8s/create-secrets.sh [NAMESPACE]        (applies them with kubectl)
#   FIRMA_SECRETS_OUT=DIR  write the Secret manifests to DIR instead of applying them
#   FIRMA_SIGNING_DIR      where the token signing key pair lives (default ./firma-signing). It is
#                          created on first use; keep it OUT of the cluster: it mints tokens.
#   FIRMA_AGENT_ID         agent id (default k8s-agent, = [sidecar] agent_id in config/firma.toml)
#   FIRMA_ACTIONS          the token's action classes (default "llm.*")
#   FIRMA_SCOPE            the token's host[/path] scope (default api.openai.com)
#   FIRMA_TTL              token lifetime (default 720h); re-run to rotate
#   FIRMA                  the firma command (default: node <repo>/dist/cli/firma.js)
# Existing Secrets are replaced (kubectl apply). The CA key and tokens are only ever written to a
# private temporary folder, removed on exit, and to the Secret manifests.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
namespace="${1:-}"
firma="${FIRMA:-node $repo/dist/cli/firma.js}"
signing_dir="${FIRMA_SIGNING_DIR:-$PWD/firma-signing}"
agent_id="${FIRMA_AGENT_ID:-k8s-agent}"
actions="${FIRMA_ACTIONS:-llm.*}"
scope="${FIRMA_SCOPE:-api.openai.com}"
ttl="${FIRMA_TTL:-720h}"
out="${FIRMA_SECRETS_OUT:-}"

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$signing_dir"

cat >"$work/firma.toml" <<TOML
[sidecar.interceptor.mitm]
ca_dir = "$work/certs"
[sidecar.capabilities]
signing_key_file = "$signing_dir/capability.key"
public_key_file = "$signing_dir/capability.pub"
TOML

$firma ca init --config "$work/firma.toml" >&2
$firma token issue --config "$work/firma.toml" --agent "$agent_id" --actions "$actions" --scope "$scope" --ttl "$ttl" >"$work/token"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/admin-token"

ns_flag=""
[ -z "$namespace" ] || ns_flag="--namespace=$namespace"

emit() { # $1 = name, then --from-file arguments
  name=$1
  shift
  # shellcheck disable=SC2086 # ns_flag is one word or empty
  kubectl create secret generic "$name" $ns_flag "$@" --dry-run=client -o yaml >"$work/$name.yaml"
  if [ -n "$out" ]; then
    mkdir -p "$out"
    cp "$work/$name.yaml" "$out/$name.yaml"
    echo "wrote $out/$name.yaml" >&2
  else
    kubectl apply -f "$work/$name.yaml"
  fi
}

emit firma-ca --from-file=ca.crt="$work/certs/ca.crt" --from-file=ca.key="$work/certs/ca.key"
emit firma-admin --from-file=token="$work/admin-token"
emit firma-capability --from-file=capability.pub="$signing_dir/capability.pub" --from-file=token="$work/token"
echo "agents trust the CA with: SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS, CURL_CA_BUNDLE (set in deployment.yaml)" >&2
