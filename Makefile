# podnet: `make build` puts bin/podnet and bin/podnet-cni in place (the plugin linked
# statically: a runtime execs it once per pod and verb, and dynamic loading costs ~2 ms),
# `make test` runs the whole suite (privileged tests need root; under CI=true they never skip), `make demo`
# runs the demo, `make bench` the benchmarks (installs Debian's reference CNI plugins).
GO ?= go
GOFLAGS_BUILD ?= -trimpath

.PHONY: build test test-deps kube-apiserver kube-proxy demo bench fuzz vet clean

build:
	$(GO) build $(GOFLAGS_BUILD) -o bin/podnet ./cmd/podnet
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -ldflags='-s -w' -o bin/podnet-cni ./cmd/podnet-cni

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

# Debian packages the tests run: nft (the nftables listing test, as an operator would),
# chromium (the live graph page, loaded in a headless browser), iptables and ipset (the
# legacy tables and sets another plugin leaves, for the doctor's tests), bird2 (BIRD, the
# BGP peer of the speaker's tests), etcd-server (the etcd of the bgp end-to-end test, which runs
# on the underlay where agents inside node namespaces reach it). scripts/apt-install starts none of
# their services.
TEST_PACKAGES := nftables chromium iptables ipset bird2 etcd-server
TEST_COMMANDS := nft chromium iptables-legacy ip6tables-legacy ipset bird etcd
test-deps:
	@(for c in $(TEST_COMMANDS); do PATH="$$PATH:/usr/sbin:/sbin" command -v $$c >/dev/null || exit 1; done) || scripts/apt-install $(TEST_PACKAGES)

# The kube-apiserver of internal/testutil/kubetest's tests (under ./...), built once into
# a cache outside the repo (a cold build takes minutes; hack/kube-apiserver.sh says where).
kube-apiserver:
	hack/kube-apiserver.sh

# kube-proxy (the same release, built the same way into the same cache): the reference
# of the bench's kube section, which also runs the kube-apiserver. Its nftables mode execs
# Debian's nft (inside its node namespace), installed here when missing. Not needed by `test`.
kube-proxy:
	@PATH="$$PATH:/usr/sbin:/sbin" command -v nft >/dev/null || scripts/apt-install nftables
	hack/kube-proxy.sh

test: build vet test-deps kube-apiserver
	$(GO) test -count=1 -timeout 30m ./...

# The cluster demo runs Debian's etcd-server (installed here when missing).
DEMO_PACKAGES := etcd-server
demo: build
	@command -v etcd >/dev/null 2>&1 || scripts/apt-install $(DEMO_PACKAGES)
	./bin/podnet demo
	./bin/podnet demo --cluster

bench: build kube-apiserver kube-proxy
	bash bench/bench.sh

# Short fuzzing runs of the decoders (the seed corpora also run in `make test`).
fuzz:
	$(GO) test -run XXX -fuzz FuzzParseConfig -fuzztime 30s ./internal/cniplugin/
	$(GO) test -run XXX -fuzz FuzzDecodeAttachRequest -fuzztime 30s ./internal/agent/

clean:
	rm -rf bin
