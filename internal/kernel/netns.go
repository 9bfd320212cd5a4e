// Package kernel applies plans to the Linux kernel through netlink: bridges, veth pairs,
// addresses, routes and sysctls, in the node namespace and in sandbox namespaces. Every
// function takes the namespace it works in explicitly; the caller's own namespace is
// never changed.
package kernel

import (
	"fmt"
	"os"
	"path/filepath"
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

// NetnsDir is where named namespaces are bind-mounted (as iproute2 does).
const NetnsDir = "/run/netns"

// NewNamedNS creates a namespace bind-mounted at NetnsDir/name, so that it has a path
// other processes can open. RemoveNamedNS undoes it.
func NewNamedNS(name string) (netns.NsHandle, string, error) {
	if strings.ContainsAny(name, "/\x00") || name == "" || name == "." || name == ".." {
		return netns.None(), "", fmt.Errorf("netns name %q: invalid", name)
	}
	ns, err := NewNS()
	if err != nil {
		return netns.None(), "", err
	}
	path := filepath.Join(NetnsDir, name)
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		ns.Close()
		return netns.None(), "", err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		ns.Close()
		return netns.None(), "", fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()
	src := fmt.Sprintf("/proc/self/fd/%d", int(ns))
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		ns.Close()
		return netns.None(), "", fmt.Errorf("bind-mount netns at %s: %w", path, err)
	}
	return ns, path, nil
}

// RemoveNamedNS unmounts and removes a namespace made by NewNamedNS. Missing is fine.
func RemoveNamedNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
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
