#!/usr/bin/env bash
# podnet benchmarks (pod setup, throughput, ADD with published ports, cluster DNS, service
# VIPs): installs the Debian packages it compares against and builds CoreDNS (once),
# builds bin/podnet-bench and runs it; flags are passed through, e.g.
#   bash bench/bench.sh -only throughput,ports
#   bash bench/bench.sh -only reference,floor -pods 100 -concurrent 20
#   bash bench/bench.sh -only dns,services
# Sections: setup, throughput, ports, dns, services, policy, cluster (all by default), kube
# (Kubernetes mode against kube-proxy: -only kube, about 6 minutes).
# Needs root. Everything it creates lives in throwaway network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "bench.sh: needs root (network namespaces)" >&2
	exit 1
fi

# The reference: bridge + host-local (+ portmap) from containernetworking-plugins; their
# ipMasq and port mappings exec the iptables binary (coreos/go-iptables), so iptables is
# needed too.
missing=()
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
[ -x /usr/sbin/iptables ] || missing+=(iptables)
# The dns section's load generator.
command -v dnsperf >/dev/null || missing+=(dnsperf)
# The cluster section's store.
command -v etcd >/dev/null || missing+=(etcd-server)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "bench.sh: installing ${missing[*]}" >&2
	scripts/apt-install "${missing[@]}"
fi

mkdir -p bin
# The dns section's reference: CoreDNS, built once from its Go module into bin/coredns
# (the version is dnsCoreDNSVersion in bench/dns.go). When it cannot be built, the reason
# goes to bin/coredns.build-error and the section reports it next to podnet's figures.
coredns_version=$(sed -n 's/^const dnsCoreDNSVersion = "\(.*\)"$/\1/p' bench/dns.go)
have=$( (bin/coredns -version 2>/dev/null || true) | head -n 1)
if [ "$have" != "CoreDNS-$coredns_version" ]; then
	echo "bench.sh: building CoreDNS $coredns_version (once, a few minutes)" >&2
	rm -f bin/coredns bin/coredns.build-error
	gobin=$(mktemp -d)
	if GOBIN="$gobin" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
		go install "github.com/coredns/coredns@v$coredns_version" >"$gobin/build.log" 2>&1; then
		mv "$gobin/coredns" bin/coredns
	else
		tail -n 20 "$gobin/build.log" >bin/coredns.build-error
		echo "bench.sh: CoreDNS did not build (bin/coredns.build-error); the dns section runs without it" >&2
	fi
	rm -rf "$gobin"
fi

# The binaries measured are the tree's (make bench builds them too; bench.sh alone must).
make -s build
go build -o bin/podnet-bench ./bench
exec bin/podnet-bench "$@"
