// Package e2e holds podnet's end-to-end tests. They build the real binaries once
// (podnet, podnet-cni), run `podnet agent` as a child process managing a throwaway node
// namespace (internal/lab), and drive it the way users and runtimes do: podnet-cni
// through libcni as podman and containerd exec it, and the podnet CLI. The cluster test
// runs three agents on node namespaces of one underlay (lab.Cluster) sharing a real
// etcd started in the test process. Nothing runs in or changes the machine's own
// network namespace. The tests need root; they skip
// without it, except under CI=true where they fail.
package e2e
