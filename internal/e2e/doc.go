// Package e2e holds podnet's end-to-end tests across processes: real `podnet agent`
// processes on node namespaces of an underlay (internal/lab.Cluster), sharing a real
// etcd started by the test. It has no code of its own.
package e2e
