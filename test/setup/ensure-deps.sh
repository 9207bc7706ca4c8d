#!/usr/bin/env bash
# Installs the Debian packages the test suite drives as real clients/servers, only when missing.
# Runs before `npm test` (package.json "pretest"). Safe to run repeatedly; needs root only to install.
set -euo pipefail

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Network namespaces, veth and iptables REDIRECT: transparent mode (test/e2e/transparent-netns.test.ts) and
# deploy/k8s/firma-iptables.sh (test/e2e/deploy.test.ts).
# Only root can build namespaces; without root that test skips, so these are not required then.
if [[ $(id -u) -eq 0 ]]; then
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
fi
# Debian's python3-requests serves /usr/bin/python3 (the python3 first on PATH may be another one).
if [[ ! -x /usr/bin/python3 ]] || ! /usr/bin/python3 -c 'import requests' >/dev/null 2>&1; then
  missing+=(python3-requests)
fi
# The approvals page is tested in a real browser (playwright-core drives Debian's chromium).
[[ -x /usr/bin/chromium ]] || missing+=(chromium)

if ((${#missing[@]} == 0)); then exit 0; fi

if [[ $(id -u) -ne 0 ]]; then
  echo "ensure-deps: missing Debian packages: ${missing[*]} (not root, cannot install; run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "ensure-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
