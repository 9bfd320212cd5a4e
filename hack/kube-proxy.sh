#!/bin/sh
# kube-proxy.sh: builds kube-proxy (the release of hack/kube-apiserver.sh, v1.37.2 unless
# KUBE_VERSION says otherwise) once into ${PODNET_CACHE:-$HOME/.cache/podnet}/kube-proxy-VERSION/
# the same way, and prints its path on the last line of stdout: the reference of the
# bench's kube section (`make kube-proxy`, which `make bench` runs).
exec "$(dirname "$0")/kube-apiserver.sh" kube-proxy
