#!/bin/sh
# kube-apiserver.sh [COMPONENT]: builds a Kubernetes component (kube-apiserver unless
# named: kube-proxy for the bench's kube section, see hack/kube-proxy.sh) once into a
# cache outside the repo and prints its path on the last line of stdout (progress goes
# to stderr), for the tests of internal/testutil/kubetest, `make kube-apiserver` and
# `make kube-proxy`.
#
# Why a wrapper module: `go install k8s.io/kubernetes/cmd/kube-apiserver@...` refuses,
# because k8s.io/kubernetes replaces every k8s.io/X with ./staging/src/k8s.io/X and its
# module zip has no staging tree. A throw-away module that requires k8s.io/kubernetes and
# replaces each staging module with its published v0.N.M release builds the same binary.
#
# Environment: PODNET_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/podnet) holds the
# result, in COMPONENT-VERSION/COMPONENT; KUBE_VERSION selects the release (default
# v1.37.2). A cold build of kube-apiserver takes about 6 minutes and 2.4 GB of memory;
# with a warm Go build cache about 20 s.
set -eu

component=${1:-kube-apiserver}
case $component in
kube-apiserver | kube-proxy) ;;
*) echo "kube-apiserver.sh: unknown component $component (kube-apiserver or kube-proxy)" >&2; exit 2 ;;
esac

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
# The staging modules are tagged v0.<minor>.<patch> for release v1.<minor>.<patch>.
STAGING_VERSION=v0.${KUBE_VERSION#v1.}
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}

cache=${PODNET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podnet}
dir=$cache/$component-$KUBE_VERSION
bin=$dir/$component

# Reuse the binary only if it runs and is the release asked for.
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION"; then
	echo "$bin"
	exit 0
fi

mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f "$bin.tmp.$$"' EXIT
trap 'exit 130' INT TERM

echo "kube-apiserver.sh: building $component $KUBE_VERSION (a cold build takes minutes)" >&2
cd "$work"
export GOWORK=off
go mod init kubebuild >/dev/null 2>&1
gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
	sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
[ -f "$gomod" ] || { echo "kube-apiserver.sh: no go.mod for k8s.io/kubernetes@$KUBE_VERSION" >&2; exit 1; }

# Every "k8s.io/X => ./staging/src/k8s.io/X" becomes "k8s.io/X => k8s.io/X@v0.N.M". The
# sample modules are not published and neither component needs them.
replaces=$(sed -n 's#^[[:space:]]*\(replace[[:space:]]*\)\{0,1\}\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/src/k8s\.io/.*#\2#p' "$gomod")
[ -n "$replaces" ] || { echo "kube-apiserver.sh: no staging replaces in $gomod" >&2; exit 1; }
for m in $replaces; do
	case $m in k8s.io/sample-cli-plugin | k8s.io/sample-controller) continue ;; esac
	go mod edit -replace="$m=$m@$STAGING_VERSION"
done
go get "k8s.io/kubernetes/cmd/$component@$KUBE_VERSION" >&2

# Build to a temporary name and rename, so an interrupted build leaves no half binary.
CGO_ENABLED=0 nice -n 10 go build -trimpath \
	-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
	-o "$bin.tmp.$$" "k8s.io/kubernetes/cmd/$component"
"$bin.tmp.$$" --version | grep -qx "Kubernetes $KUBE_VERSION" ||
	{ echo "kube-apiserver.sh: built binary does not report $KUBE_VERSION" >&2; exit 1; }
mv -f "$bin.tmp.$$" "$bin"
echo "$bin"
