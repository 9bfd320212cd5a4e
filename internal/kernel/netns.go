// Package kernel applies plans to the Linux kernel through netlink: bridges, veth pairs,
// addresses, routes and sysctls, in the node namespace and in sandbox namespaces. Every
// function takes the namespace it works in explicitly; the caller's own namespace is
// never changed.
package kernel

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs fn on a locked OS thread switched into ns. If the thread cannot be switched
// back, it is left locked so that the runtime discards it with the goroutine.
func Do(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread stays in ns; never reuse it.
		return fmt.Errorf("restore netns: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// NewNS creates a new, empty network namespace and returns a handle to it, without
// moving the caller. The namespace lives as long as a handle or a process holds it.
func NewNS() (netns.NsHandle, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return netns.None(), err
	}
	defer orig.Close()
	ns, err := netns.New()
	if serr := netns.Set(orig); serr != nil {
		if ns.IsOpen() {
			ns.Close()
		}
		return netns.None(), fmt.Errorf("restore netns: %w", serr) // thread stays locked: discarded
	}
	runtime.UnlockOSThread()
	if err != nil {
		return netns.None(), fmt.Errorf("create netns: %w", err)
	}
	return ns, nil
}

// WriteSysctl writes value to /proc/sys/<key> (key with slashes) inside ns.
func WriteSysctl(ns netns.NsHandle, key, value string) error {
	return Do(ns, func() error { return writeProcSys(key, value) })
}

// writeProcSys writes a /proc/sys key on the current thread (inside Do).
func writeProcSys(key, value string) error {
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}

// ReadSysctl reads /proc/sys/<key> (key with slashes) inside ns.
func ReadSysctl(ns netns.NsHandle, key string) (string, error) {
	path := "/proc/sys/" + key
	var out string
	err := Do(ns, func() error {
		b, err := os.ReadFile(path)
		out = strings.TrimSpace(string(b))
		return err
	})
	return out, err
}

// IsNetNS reports whether fd refers to a network namespace (whatever path it was opened
// from: /proc/PID/ns/net, a bind mount under /run/netns, a passed descriptor).
func IsNetNS(fd int) bool {
	const nsGetNSType = 0xb703 // NS_GET_NSTYPE, linux/nsfs.h
	t, err := unix.IoctlRetInt(fd, nsGetNSType)
	return err == nil && t == unix.CLONE_NEWNET
}

// SameNS reports whether the descriptors a and b refer to the same namespace (the same
// nsfs inode).
func SameNS(a, b int) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Fstat(a, &sa); err != nil {
		return false, fmt.Errorf("stat namespace: %w", err)
	}
	if err := unix.Fstat(b, &sb); err != nil {
		return false, fmt.Errorf("stat namespace: %w", err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}
