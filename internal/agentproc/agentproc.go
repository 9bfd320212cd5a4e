// Package agentproc runs `podnet agent` as a child process, for the cluster demo, the
// end-to-end tests and the benchmarks: started with its arguments, ready once its
// socket answers STATUS ready, stopped with SIGTERM or killed with SIGKILL (by its PID:
// the only process it ends is the one it started), its log kept in a file.
package agentproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
)

// Proc is one agent process.
type Proc struct {
	bin, socket, log string
	args             []string
	cmd              *exec.Cmd
	exited           chan struct{}
	waitErr          error
	killed           bool // Kill ended it: its exit is no surprise
	// ns, when open, is the network namespace the process starts in (In).
	ns netns.NsHandle
}

// New prepares an agent: the podnet binary, its socket (passed as --socket), its log
// file (appended to) and the other arguments after "agent".
func New(bin, socket, log string, args ...string) *Proc {
	return &Proc{bin: bin, socket: socket, log: log, args: args, ns: netns.None()}
}

// In makes the agent start inside ns (a node's namespace: what an agent serving bgp
// networks needs) instead of the caller's; it returns p.
func (p *Proc) In(ns netns.NsHandle) *Proc {
	p.ns = ns
	return p
}

// Client talks to the agent.
func (p *Proc) Client() *api.Client { return api.NewClient(p.socket) }

// LogPath is the agent's log file.
func (p *Proc) LogPath() string { return p.log }

// Socket is the agent's socket path.
func (p *Proc) Socket() string { return p.socket }

// Start starts the agent and waits until it reports ready, or timeout passes, or it
// exits.
func (p *Proc) Start(timeout time.Duration) error {
	log, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	p.cmd = exec.Command(p.bin, append([]string{"agent", "--socket", p.socket}, p.args...)...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	// Its own process group (a ctrl-C reaches the caller, which stops it in order), and
	// it does not outlive a caller that was killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := p.cmd.Start
	if p.ns.IsOpen() {
		start = func() error { return kernel.StartIn(p.ns, p.cmd) }
	}
	if err := start(); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	p.exited, p.killed = make(chan struct{}), false
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(timeout)
	c := p.Client()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.Status(ctx)
		cancel()
		if err == nil && st.Ready {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("agent exited (%v):\n%s", p.waitErr, p.LogTail(20))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Kill()
			return fmt.Errorf("agent not ready within %v:\n%s", timeout, p.LogTail(20))
		}
	}
}

// PID is the agent's process id (0 before Start).
func (p *Proc) PID() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill ends the agent with SIGKILL, as a crash would: nothing is cleaned up, its lease
// is not revoked.
func (p *Proc) Kill() {
	if p.running() {
		p.killed = true
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// Stop ends the agent with SIGTERM (SIGKILL after 10 s). It reports an agent that
// exited by itself before (not by Kill), or that exits with an error. Stopping a nil,
// unstarted, killed or stopped Proc does nothing.
func (p *Proc) Stop() error {
	if p == nil || p.exited == nil || p.killed {
		return nil
	}
	select {
	case <-p.exited:
		return fmt.Errorf("agent exited by itself (%v):\n%s", p.waitErr, p.LogTail(20))
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.Kill()
		return errors.New("agent did not stop within 10 s of SIGTERM: killed")
	}
	p.killed = true // stopped: a second Stop does nothing
	var exit *exec.ExitError
	if errors.As(p.waitErr, &exit) && !KilledBy(exit, syscall.SIGTERM) {
		return fmt.Errorf("agent exited with %v:\n%s", p.waitErr, p.LogTail(20))
	}
	return nil
}

// KilledBy reports whether a process ended by sig (an agent: before its handler was set
// up).
func KilledBy(exit *exec.ExitError, sig syscall.Signal) bool {
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

func (p *Proc) running() bool {
	if p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// LogTail is the last n lines of the agent's log.
func (p *Proc) LogTail(n int) string { return Tail(p.log, n) }
