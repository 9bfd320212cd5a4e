package nft

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// requireRoot skips t without root, or fails it under CI (CI=true).
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("privileged test needs root (CI=true: not skipping)")
	}
	t.Skip("privileged test needs root")
}

// newNetNS creates a throwaway network namespace, closed when t ends (the kernel removes
// it with its last reference). The calling goroutine never changes namespace: a helper
// goroutine creates it on a locked thread and goes back to its original namespace.
func newNetNS(t testing.TB) netns.NsHandle {
	t.Helper()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			// netns.New failed before or after unshare: the thread's namespace is
			// unknown, leave it locked so that it dies with this goroutine.
			ch <- result{err: fmt.Errorf("create netns: %w", err)}
			return
		}
		if err := netns.Set(orig); err != nil {
			ns.Close()
			ch <- result{err: fmt.Errorf("restore netns: %w", err)}
			return // still locked: the thread dies with this goroutine
		}
		runtime.UnlockOSThread()
		ch <- result{ns: ns}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	return r.ns
}

// inNetNS runs fn on a locked thread inside ns. The thread goes back to its namespace
// afterwards, or dies if it cannot.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			return // namespace unknown: the locked thread dies with this goroutine
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restore netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
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
