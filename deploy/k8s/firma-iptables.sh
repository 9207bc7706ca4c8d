#!/bin/sh
# firma-iptables: run once per pod, as the "firma-iptables" init container (root, NET_ADMIN + NET_RAW,
# nothing else). Installs, in the pod's network namespace, the Istio-style redirect:
#
#   every outbound TCP connection to ports FIRMA_REDIRECT_PORTS (80,443) from any process of the pod
#   goes to the sidecar's transparent listener (FIRMA_REDIRECT_TO_PORT, 15001), except
#     - connections made by FIRMA_PROXY_UID (1337, the UID the sidecar container runs as: its own
#       upstream connections must leave, or they would loop back into it), and
#     - loopback traffic (the agent talking to the sidecar's explicit proxy at 127.0.0.1:8080).
#
# IPv6: the transparent listener is IPv4, so the same ports over IPv6 are rejected for everyone but the
# sidecar UID (fail closed) instead of being left open as a way around it.
#
# Idempotent: a re-run (an init container restarted in the same pod sandbox) replaces its own chains.
# Env: FIRMA_PROXY_UID, FIRMA_REDIRECT_TO_PORT, FIRMA_REDIRECT_PORTS (comma-separated),
#      FIRMA_IPTABLES / FIRMA_IP6TABLES (e.g. iptables-legacy on nodes whose kernel lacks nf_tables).
set -eu

PROXY_UID="${FIRMA_PROXY_UID:-1337}"
TO_PORT="${FIRMA_REDIRECT_TO_PORT:-15001}"
PORTS="${FIRMA_REDIRECT_PORTS:-80,443}"
IPT="${FIRMA_IPTABLES:-iptables}"
IP6T="${FIRMA_IP6TABLES:-ip6tables}"

die() { echo "firma-iptables: $*" >&2; exit 1; }
case "$PROXY_UID" in '' | *[!0-9]*) die "FIRMA_PROXY_UID must be a number, got '$PROXY_UID'" ;; esac
case "$TO_PORT" in '' | *[!0-9]*) die "FIRMA_REDIRECT_TO_PORT must be a number, got '$TO_PORT'" ;; esac
case "$PORTS" in '' | *[!0-9,]* | ,* | *, | *,,*) die "FIRMA_REDIRECT_PORTS must be comma-separated port numbers, got '$PORTS'" ;; esac
[ "$PROXY_UID" -ne 0 ] || die "FIRMA_PROXY_UID must not be 0: every root process would be exempt"

# (Re)create a chain and hook it into a built-in chain exactly once.
chain() { # $1 = iptables binary, $2 = table, $3 = built-in chain, $4 = our chain, $5... = match for the jump
  bin=$1 table=$2 parent=$3 name=$4
  shift 4
  "$bin" -t "$table" -N "$name" 2>/dev/null || "$bin" -t "$table" -F "$name"
  "$bin" -t "$table" -C "$parent" "$@" -j "$name" 2>/dev/null || "$bin" -t "$table" -A "$parent" "$@" -j "$name"
}

chain "$IPT" nat OUTPUT FIRMA_OUTPUT -p tcp
"$IPT" -t nat -A FIRMA_OUTPUT -m owner --uid-owner "$PROXY_UID" -j RETURN
"$IPT" -t nat -A FIRMA_OUTPUT -o lo -j RETURN
"$IPT" -t nat -A FIRMA_OUTPUT -p tcp -m multiport --dports "$PORTS" -j REDIRECT --to-ports "$TO_PORT"
echo "firma-iptables: IPv4 TCP to ports $PORTS redirected to :$TO_PORT, except UID $PROXY_UID and loopback"

if [ -e /proc/net/if_inet6 ]; then
  chain "$IP6T" filter OUTPUT FIRMA_OUTPUT6 -p tcp
  "$IP6T" -t filter -A FIRMA_OUTPUT6 -m owner --uid-owner "$PROXY_UID" -j RETURN
  "$IP6T" -t filter -A FIRMA_OUTPUT6 -o lo -j RETURN
  "$IP6T" -t filter -A FIRMA_OUTPUT6 -p tcp -m multiport --dports "$PORTS" -j REJECT --reject-with tcp-reset
  echo "firma-iptables: IPv6 TCP to ports $PORTS rejected, except UID $PROXY_UID and loopback"
else
  echo "firma-iptables: IPv6 is off in this pod: nothing to do for it"
fi
