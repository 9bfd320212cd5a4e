// Package birdtest runs BIRD 2 (Debian's bird2) as a real BGP peer for tests: the
// daemon in the foreground inside a network namespace, driven through birdc.
package birdtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/testutil"
)

// BIRD is a BIRD daemon running in a namespace.
type BIRD struct {
	t      *testing.T
	socket string
	cmd    *exec.Cmd
	log    *lockedBuffer
}

// Start runs bird with config inside ns, its control socket in a temporary directory,
// and waits until it answers. It is stopped (SIGTERM, then SIGKILL, by its PID) when
// the test ends, and its log printed if the test failed. The test needs the commands
// bird and birdc (testutil.RequireCommands).
func Start(t *testing.T, ns netns.NsHandle, config string) *BIRD {
	t.Helper()
	testutil.RequireCommands(t, "bird", "birdc")
	dir := t.TempDir()
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &BIRD{t: t, socket: filepath.Join(dir, "bird.ctl"), log: &lockedBuffer{}}
	b.cmd = exec.Command(testutil.Command("bird"), "-f", "-c", conf, "-s", b.socket)
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := kernel.StartIn(ns, b.cmd); err != nil {
		t.Fatalf("start bird: %v", err)
	}
	t.Cleanup(func() {
		b.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { b.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("bird (pid %d) still running 10s after SIGTERM: killing it", b.cmd.Process.Pid)
			b.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("bird log:\n%s", b.log.String())
		}
	})
	var out string
	var err error
	for range 500 {
		if out, err = b.Run("show", "status"); err == nil && strings.Contains(out, "Daemon is up and running") {
			return b
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("bird does not answer on its control socket within 10 s: %s (%v)", out, err)
	return nil
}

// Run runs birdc against the daemon's control socket. birdc talks to the socket only:
// it needs no namespace.
func (b *BIRD) Run(args ...string) (string, error) {
	out, err := exec.Command(testutil.Command("birdc"), append([]string{"-s", b.socket}, args...)...).CombinedOutput()
	return string(out), err
}

// C runs birdc and fails the test if it fails.
func (b *BIRD) C(args ...string) string {
	b.t.Helper()
	out, err := b.Run(args...)
	if err != nil {
		b.t.Fatalf("birdc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Wait polls birdc args every 50 ms until cond holds for its output, or fails the test
// after 20 s.
func (b *BIRD) Wait(what string, cond func(out string) bool, args ...string) string {
	b.t.Helper()
	var out string
	for range 400 {
		if out = b.C(args...); cond(out) {
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("%s: not within 20 s; birdc %s:\n%s", what, strings.Join(args, " "), out)
	return ""
}

// lockedBuffer is a bytes.Buffer safe for a child's output and the test's reads.
type lockedBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
