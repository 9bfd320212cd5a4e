package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/podnet/podnet/api"
)

const (
	agentStartTimeout = 15 * time.Second
	agentStopTimeout  = 10 * time.Second
)

// agentProcess is a `podnet agent` child process managing the node namespace of a
// testbed (--netns), with its socket, store and log in the testbed's directory.
type agentProcess struct {
	socket  string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error         // exit status; read only after exited is closed
	logPath string        // the agent's stdout and stderr
}

// startAgent starts binDir/podnet as the agent of tb's node namespace and waits until
// its socket accepts connections. On error nothing is left running.
func startAgent(binDir string, tb *testbed) (*agentProcess, error) {
	bin := filepath.Join(binDir, "podnet")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s missing (make build)", bin)
	}
	a := &agentProcess{
		socket:  filepath.Join(tb.dir, "podnet.sock"),
		logPath: filepath.Join(tb.dir, "agent.log"),
		exited:  make(chan struct{}),
	}
	log, err := os.Create(a.logPath)
	if err != nil {
		return nil, fmt.Errorf("create agent log: %w", err)
	}
	defer log.Close()
	a.cmd = exec.Command(bin, "agent",
		"--netns", tb.nodePath,
		"--state-dir", filepath.Join(tb.dir, "state"),
		"--socket", a.socket)
	a.cmd.Stdout, a.cmd.Stderr = log, log
	// Own process group: a ctrl-C reaches the benchmark, which stops the agent in
	// order. Pdeathsig: the agent does not outlive a benchmark that was killed.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.exited)
	}()

	deadline := time.After(agentStartTimeout)
	for {
		if c, err := net.Dial("unix", a.socket); err == nil {
			c.Close()
			return a, nil
		}
		select {
		case <-a.exited:
			return nil, fmt.Errorf("agent exited before serving (%v): %s", a.waitErr, a.logTail())
		case <-deadline:
			a.cmd.Process.Kill()
			<-a.exited
			return nil, fmt.Errorf("agent did not serve %s within %v: %s", a.socket, agentStartTimeout, a.logTail())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// client talks to the agent.
func (a *agentProcess) client() *api.Client { return api.NewClient(a.socket) }

// stop stops the agent with SIGTERM (SIGKILL if it does not exit in time). An agent
// that exits with an error, or had exited by itself during the run, is reported.
// Calling it on nil is harmless.
func (a *agentProcess) stop() error {
	if a == nil {
		return nil
	}
	select {
	case <-a.exited:
		if a.waitErr == nil {
			return fmt.Errorf("agent exited during the run: %s", a.logTail())
		}
	default:
		a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(agentStopTimeout):
			a.cmd.Process.Kill()
			<-a.exited
			return fmt.Errorf("agent ignored SIGTERM for %v, killed: %s", agentStopTimeout, a.logTail())
		}
	}
	var exit *exec.ExitError
	if a.waitErr != nil && !(errors.As(a.waitErr, &exit) && killedBy(exit, syscall.SIGTERM)) {
		return fmt.Errorf("agent stopped with %v: %s", a.waitErr, a.logTail())
	}
	return nil
}

// logTail is the end of the agent's log, for error messages.
func (a *agentProcess) logTail() string {
	b, _ := os.ReadFile(a.logPath)
	s := strings.TrimSpace(string(b))
	if len(s) > 500 {
		s = "..." + s[len(s)-500:]
	}
	if s == "" {
		return "(agent log empty)"
	}
	return oneLine(s)
}

func killedBy(exit *exec.ExitError, sig syscall.Signal) bool {
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
