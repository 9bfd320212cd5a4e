package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted, as iproute2 does, so
// that a path can be handed to a CNI plugin as CNI_NETNS.
const netnsDir = "/run/netns"

// onNetnsThread runs fn on a fresh OS thread that enter has moved into another network
// namespace, then moves the thread back. The caller's own thread never changes
// namespace. If the thread cannot be moved back it stays locked, so the Go runtime
// discards it when the goroutine exits instead of reusing it in the wrong namespace.
func onNetnsThread(enter, fn func() error) error {
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
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restore netns (thread discarded): %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// inNetns runs fn on a thread inside ns. A process that fn starts (exec.Cmd.Run) is
// forked from that thread and so runs inside ns.
func inNetns(ns netns.NsHandle, fn func() error) error {
	return onNetnsThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return nil
	}, fn)
}

// createNamedNetns creates a new network namespace bind-mounted at /run/netns/name and
// returns its path. It fails if the name is taken.
func createNamedNetns(name string) (string, error) {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	path := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	f.Close()
	err = onNetnsThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		return nil
	}, func() error {
		return unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	})
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	return path, nil
}

// deleteNamedNetns unmounts and removes a namespace made by createNamedNetns. The
// kernel destroys the namespace, and every link in it, once nothing else refers to
// it. A namespace that is already gone is not an error.
func deleteNamedNetns(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %q: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %q: %w", path, err)
	}
	return nil
}

// namedNetnsWithPrefix lists the namespaces under /run/netns whose name starts with prefix.
func namedNetnsWithPrefix(prefix string) []string {
	entries, _ := os.ReadDir(netnsDir)
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}
