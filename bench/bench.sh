#!/usr/bin/env bash
# Pod setup benchmark: installs the Debian packages it compares against (once), builds
# bin/podnet-bench and runs it; flags are passed through, e.g.
#   bash bench/bench.sh -only reference,floor -pods 100 -concurrent 20
# Needs root. Everything it creates lives in throwaway network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "bench.sh: needs root (network namespaces)" >&2
	exit 1
fi

# The reference: bridge + host-local from containernetworking-plugins; its ipMasq
# execs the iptables binary (coreos/go-iptables), so iptables is needed too.
missing=()
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
[ -x /usr/sbin/iptables ] || missing+=(iptables)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "bench.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p bin
go build -o bin/podnet-bench ./bench
exec bin/podnet-bench "$@"
