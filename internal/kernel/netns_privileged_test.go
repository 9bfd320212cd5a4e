package kernel_test

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/testutil"
)

// nsTest is a throwaway namespace and the namespace of the test's threads, which every
// thread must be back in once Do returns.
type nsTest struct {
	t       *testing.T
	ns      netns.NsHandle
	nsIno   uint64
	origIno uint64
}

func newNSTest(t *testing.T) *nsTest {
	t.Helper()
	testutil.RequireRoot(t)
	// Not /proc/self/ns/net: that is the main thread's, which an earlier test may have
	// left in its namespace (see threadsIn).
	origIno := callerNSInode(t)
	ns, err := kernel.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	nt := &nsTest{t: t, ns: ns, nsIno: fdInode(t, int(ns)), origIno: origIno}
	if nt.nsIno == nt.origIno {
		t.Fatal("NewNS returned the caller's own namespace")
	}
	if got := callerNSInode(t); got != origIno {
		t.Fatalf("NewNS moved the caller from namespace %d to %d", origIno, got)
	}
	return nt
}

// callerNSInode is the inode of the namespace of the thread the calling goroutine runs
// on.
func callerNSInode(t *testing.T) uint64 {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ino, err := threadNSInode()
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// callerOutside fails the test unless the calling goroutine's thread is in the original
// namespace.
func (nt *nsTest) callerOutside() {
	nt.t.Helper()
	if got := callerNSInode(nt.t); got != nt.origIno {
		nt.t.Errorf("the caller's thread is in namespace %d after Do, want %d", got, nt.origIno)
	}
}

func fdInode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// threadNSInode is the inode of the network namespace of the current thread.
func threadNSInode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// threadsIn lists the threads of the process inside the namespace with inode ino, but
// for the main thread: when a goroutine exits locked to it, the runtime does not
// terminate it but parks it for good (runtime.mexit), so a discarded main thread stays
// in the namespace without ever running Go code again.
func threadsIn(ino uint64) ([]string, error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	var in []string
	main := strconv.Itoa(os.Getpid())
	for _, task := range tasks {
		if task.Name() == main {
			continue
		}
		var st unix.Stat_t
		err := unix.Stat("/proc/self/task/"+task.Name()+"/ns/net", &st)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			continue // the thread has just exited
		}
		if err != nil {
			return nil, err
		}
		if st.Ino == ino {
			in = append(in, task.Name())
		}
	}
	return in, nil
}

// noThreadIn fails the test if a thread of the process is still in the test namespace
// after wait (a discarded thread takes a moment to exit).
func (nt *nsTest) noThreadIn(wait time.Duration) {
	nt.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		in, err := threadsIn(nt.nsIno)
		if err != nil {
			nt.t.Fatal(err)
		}
		if len(in) == 0 {
			return
		}
		if time.Now().After(deadline) {
			nt.t.Fatalf("threads %v are still in the namespace", in)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inside is a fn for Do that fails unless it runs inside nt.ns.
func (nt *nsTest) inside() error {
	ino, err := threadNSInode()
	if err != nil {
		return err
	}
	if ino != nt.nsIno {
		return fmt.Errorf("fn runs in namespace %d, want %d", ino, nt.nsIno)
	}
	return nil
}

// fn runs inside the namespace: it sees that namespace's links through a netlink socket
// opened on its thread, and its thread is in it.
func TestPrivilegedDoRunsInsideNamespace(t *testing.T) {
	nt := newNSTest(t)
	h, err := netlink.NewHandleAt(nt.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "podnet-do0"}}); err != nil {
		t.Fatal(err)
	}
	err = kernel.Do(nt.ns, func() error {
		if err := nt.inside(); err != nil {
			return err
		}
		_, err := netlink.LinkByName("podnet-do0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	nt.callerOutside()
	if _, err := netlink.LinkByName("podnet-do0"); err == nil {
		t.Error("the caller sees the link of the namespace")
	}
	nt.noThreadIn(0)
}

// fn's error comes back as it is; failing to enter the namespace is an error too.
func TestPrivilegedDoReturnsError(t *testing.T) {
	nt := newNSTest(t)
	errFn := errors.New("fn failed")
	if err := kernel.Do(nt.ns, func() error { return errFn }); err != errFn {
		t.Errorf("Do = %v, want %v", err, errFn)
	}
	called := false
	err := kernel.Do(netns.None(), func() error { called = true; return nil })
	if err == nil || !strings.Contains(err.Error(), "enter netns") || called {
		t.Errorf("Do(None) = %v, fn called %v; want an enter netns error, fn not called", err, called)
	}
	nt.noThreadIn(0)
}

// While 100 Do calls run concurrently, goroutines locked to their threads keep finding
// those threads in the process's namespace; afterwards no thread is left inside.
func TestPrivilegedDoConcurrentCallersStayOutside(t *testing.T) {
	nt := newNSTest(t)
	stop := make(chan struct{})
	var checkers sync.WaitGroup
	checkErrs := make(chan error, 8)
	for range 8 {
		checkers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				runtime.LockOSThread()
				ino, err := threadNSInode()
				runtime.UnlockOSThread()
				if err == nil && ino != nt.origIno {
					err = fmt.Errorf("a checker thread is in namespace %d, want %d", ino, nt.origIno)
				}
				if err != nil {
					checkErrs <- err
					return
				}
				runtime.Gosched()
			}
		})
	}
	var callers sync.WaitGroup
	callErrs := make(chan error, 100)
	for range 100 {
		callers.Go(func() {
			err := kernel.Do(nt.ns, func() error {
				time.Sleep(time.Millisecond) // overlap with the checkers
				return nt.inside()
			})
			if err == nil {
				// Whatever thread the caller is on now is outside.
				runtime.LockOSThread()
				var ino uint64
				if ino, err = threadNSInode(); err == nil && ino != nt.origIno {
					err = fmt.Errorf("a caller's thread is in namespace %d after Do", ino)
				}
				runtime.UnlockOSThread()
			}
			if err != nil {
				callErrs <- err
			}
		})
	}
	callers.Wait()
	close(stop)
	checkers.Wait()
	close(callErrs)
	close(checkErrs)
	for err := range callErrs {
		t.Error(err)
	}
	for err := range checkErrs {
		t.Error(err)
	}
	nt.noThreadIn(0)
}

// A thread that cannot go back to its namespace (fn dropped its CAP_SYS_ADMIN) is
// discarded: Do says so and no thread of the process stays inside; Do works afterwards.
func TestPrivilegedDoDiscardsThreadThatCannotGoBack(t *testing.T) {
	nt := newNSTest(t)
	errFn := errors.New("fn failed")
	err := kernel.Do(nt.ns, func() error {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_ADMIN // this thread only
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return err
		}
		return errFn
	})
	nt.callerOutside()
	nt.noThreadIn(5 * time.Second)
	if !errors.Is(err, errFn) || err == nil || !strings.Contains(err.Error(), "thread discarded") {
		t.Errorf("Do = %v, want fn's error joined with a restore error", err)
	}
	if err := kernel.Do(nt.ns, nt.inside); err != nil {
		t.Fatal(err)
	}
	nt.noThreadIn(0)
}

// A panic in fn reaches the caller as a *kernel.PanicError with fn's value and stack,
// once the thread is back; Do works afterwards.
func TestPrivilegedDoPanic(t *testing.T) {
	nt := newNSTest(t)
	errBoom := errors.New("boom")
	r := func() (r any) {
		defer func() { r = recover() }()
		_ = kernel.Do(nt.ns, func() error { panicInNamespace(errBoom); return nil })
		return nil
	}()
	nt.callerOutside()
	nt.noThreadIn(0)
	pe, ok := r.(*kernel.PanicError)
	if !ok {
		t.Fatalf("recovered %T %v, want *kernel.PanicError", r, r)
	}
	if pe.Value != errBoom || !errors.Is(pe, errBoom) {
		t.Errorf("panic value %v, want %v", pe.Value, errBoom)
	}
	if !strings.Contains(string(pe.Stack), "panicInNamespace") || !strings.Contains(pe.Error(), "boom") {
		t.Errorf("panic error lacks fn's stack:\n%s", pe.Error())
	}
	if err := kernel.Do(nt.ns, nt.inside); err != nil {
		t.Fatal(err)
	}
}

//go:noinline
func panicInNamespace(v any) { panic(v) }

// runtime.Goexit in fn (t.FailNow) ends the caller's goroutine too, once the thread is
// back.
func TestPrivilegedDoGoexit(t *testing.T) {
	nt := newNSTest(t)
	returned := false
	var callerIno uint64
	var callerErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { // runs as the caller's goroutine exits
			runtime.LockOSThread()
			callerIno, callerErr = threadNSInode()
			runtime.UnlockOSThread()
		}()
		_ = kernel.Do(nt.ns, func() error { runtime.Goexit(); return nil })
		returned = true
	}()
	<-done
	if returned {
		t.Error("Do returned after fn called runtime.Goexit")
	}
	if callerErr != nil || callerIno != nt.origIno {
		t.Errorf("the caller's thread was in namespace %d (%v), want %d", callerIno, callerErr, nt.origIno)
	}
	nt.noThreadIn(0)
	if err := kernel.Do(nt.ns, nt.inside); err != nil {
		t.Fatal(err)
	}
}

// NewNS returns a new namespace, distinct each time, and leaves no thread inside it.
func TestPrivilegedNewNS(t *testing.T) {
	nt := newNSTest(t) // one NewNS, checked distinct from the process's namespace
	ns2, err := kernel.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer ns2.Close()
	if !kernel.IsNetNS(int(ns2)) {
		t.Error("NewNS returned something else than a network namespace")
	}
	if same, err := kernel.SameNS(int(ns2), int(nt.ns)); err != nil || same {
		t.Errorf("two NewNS calls gave the same namespace (%v)", err)
	}
	nt.noThreadIn(0)
	if in, err := threadsIn(fdInode(t, int(ns2))); err != nil || len(in) > 0 {
		t.Errorf("threads %v in the second namespace (%v)", in, err)
	}
	if in, err := threadsIn(nt.origIno); err != nil || len(in) == 0 {
		t.Errorf("no thread in the process's namespace (%v)", err)
	}
}
