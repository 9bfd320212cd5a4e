package nft

import (
	"os"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/testutil"
)

// requireRoot skips t without root, or fails it under CI (CI=true).
func requireRoot(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t)
}

// newNetNS creates a throwaway network namespace, closed when t ends (the kernel removes
// it with its last reference). The calling goroutine never changes namespace
// (kernel.NewNS).
func newNetNS(t testing.TB) netns.NsHandle {
	t.Helper()
	ns, err := kernel.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// inNetNS runs fn inside ns (kernel.Do). fn runs on another goroutine: it returns its
// failures instead of calling t.Fatal.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	return kernel.Do(ns, fn)
}

// writeSysctls writes value to each /proc/sys path from a thread inside ns.
func writeSysctls(t testing.TB, ns netns.NsHandle, value string, paths ...string) {
	t.Helper()
	err := inNetNS(ns, func() error {
		for _, p := range paths {
			if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
