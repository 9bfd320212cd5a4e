// Package kernel applies plans to the Linux kernel through netlink: bridges, veth pairs,
// addresses, routes and sysctls, in the node namespace and in sandbox namespaces. Every
// function takes the namespace it works in explicitly; the caller's own namespace is
// never changed.
package kernel

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs fn inside the network namespace ns and returns fn's error. The caller's
// goroutine, and the thread it runs on, never change namespace: fn runs on a new
// goroutine locked to its OS thread, which enters ns, calls fn and goes back to the
// namespace it came from. If the thread cannot go back, it stays locked and the Go
// runtime terminates it together with the goroutine (Go 1.10 and later), so no
// goroutine ever runs on a thread left in ns; Do then returns an error saying so,
// joined with fn's. (Should that thread be the process's main thread, the runtime
// parks it for good instead: it never runs Go code again, but stays in ns, and
// /proc/self/ns/net then names ns.)
//
// Because fn runs on another goroutine:
//   - Only fn's own goroutine is in ns. Goroutines that fn starts run on other threads,
//     in the process's namespace. Sockets fn creates and processes it forks
//     (exec.Cmd.Start) stay in ns.
//   - fn sees none of the caller's goroutine- or thread-local state: not the caller's
//     runtime.LockOSThread, nor a lock "held by the caller" (taking a mutex the caller
//     holds deadlocks: Do waits for fn, fn waits for the caller). fn may call Do again.
//   - If fn panics, Do panics in the caller with a *PanicError carrying the value and
//     fn's stack. If fn calls runtime.Goexit (t.FailNow, t.Fatal), the caller's
//     goroutine exits the same way. Both happen after the thread went back to its
//     namespace or was left to be discarded.
func Do(ns netns.NsHandle, fn func() error) error {
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return nil
	}, fn)
}

// NewNS creates a new, empty network namespace and returns a handle to it, without
// moving the caller: like Do, it creates the namespace from a fresh locked thread that
// goes back to its own namespace afterwards, or is discarded. The namespace lives as
// long as a handle or a process holds it.
func NewNS() (netns.NsHandle, error) {
	ns := netns.None()
	err := onThread(func() error { return nil }, func() error {
		var err error
		// netns.New unshares the thread's namespace, then opens it.
		if ns, err = netns.New(); err != nil {
			return fmt.Errorf("create netns: %w", err)
		}
		return nil
	})
	if err != nil {
		if ns.IsOpen() {
			ns.Close()
		}
		return netns.None(), err
	}
	return ns, nil
}

// PanicError is the value Do panics with in the caller when fn panicked: Value is what
// fn panicked with, Stack the stack of fn's goroutine at that moment.
type PanicError struct {
	Value any
	Stack []byte
}

// Error prints the value and fn's stack, as the runtime would have for a panic there.
func (p *PanicError) Error() string {
	return fmt.Sprintf("panic in netns thread: %v\n\n%s", p.Value, p.Stack)
}

// Unwrap returns Value if it is an error.
func (p *PanicError) Unwrap() error {
	err, _ := p.Value.(error)
	return err
}

// threadResult is how fn ended on the thread of onThread.
type threadResult struct {
	err    error
	panic  *PanicError
	goexit bool // fn called runtime.Goexit
}

// onThread runs enter and then, if enter succeeded, fn on a new goroutine locked to its
// OS thread, then moves the thread back to the network namespace it started in (enter
// may have left it anywhere, even when it failed). It unlocks the thread only once it
// is back: otherwise the goroutine exits still locked and the runtime terminates the
// thread. The caller waits and gets fn's outcome: an error, or fn's panic or
// runtime.Goexit re-raised on the caller's goroutine.
func onThread(enter, fn func() error) error {
	done := make(chan threadResult, 1)
	go func() {
		res := threadResult{goexit: true} // unless fn returns or panics
		defer func() { done <- res }()    // last: after the thread is back or given up
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread() // nothing changed yet
			res = threadResult{err: fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		defer func() {
			if err := netns.Set(orig); err != nil {
				// Still locked: the runtime terminates the thread with the goroutine.
				res.err = errors.Join(res.err, fmt.Errorf("restore netns (thread discarded): %w", err))
				return
			}
			runtime.UnlockOSThread()
		}()
		if err := enter(); err != nil {
			res = threadResult{err: err}
			return
		}
		res = call(fn)
	}()
	res := <-done
	switch {
	case res.panic != nil:
		panic(res.panic)
	case res.goexit:
		runtime.Goexit()
	}
	return res.err
}

// call calls fn and turns a panic into a result. If fn calls runtime.Goexit, call does
// not return.
func call(fn func() error) (res threadResult) {
	defer func() {
		if v := recover(); v != nil {
			res = threadResult{panic: &PanicError{Value: v, Stack: debug.Stack()}}
		}
	}()
	return threadResult{err: fn()}
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
