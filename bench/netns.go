package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
)

// netnsDir is where named network namespaces are bind-mounted, as iproute2 does, so
// that a path can be handed to a CNI plugin as CNI_NETNS.
const netnsDir = "/run/netns"

// inNetns runs fn inside ns without moving the caller (kernel.Do). A process that fn
// starts (exec.Cmd.Run) is forked from fn's thread and so runs inside ns.
func inNetns(ns netns.NsHandle, fn func() error) error {
	return kernel.Do(ns, fn)
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
	if err := bindNetns(path); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("create netns %q: %w", name, err)
	}
	return path, nil
}

// bindNetns creates a new network namespace and bind-mounts it at path; the mount keeps
// it alive.
func bindNetns(path string) error {
	ns, err := kernel.NewNS()
	if err != nil {
		return err
	}
	defer ns.Close()
	return kernel.Do(ns, func() error {
		return unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	})
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
