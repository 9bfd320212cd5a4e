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
)

const (
	agentStartTimeout = 15 * time.Second
	agentStopTimeout  = 10 * time.Second
)

// podnet is a podnet agent managing the node namespace (started here as a child
// process with --netns) and the podnet-cni plugin exec'd per pod like a runtime would.
type podnet struct {
	bin     string // directory holding podnet and podnet-cni
	cni     *cniPlugin
	agent   *exec.Cmd
	served  bool          // the agent's socket answered once
	exited  chan struct{} // closed when the agent process has exited
	waitErr error         // agent's exit status; read only after exited is closed
	logPath string        // agent's stdout and stderr
}

var _ runner = (*podnet)(nil)

func (p *podnet) Setup(tb *testbed) error {
	agentBin, pluginBin := filepath.Join(p.bin, "podnet"), filepath.Join(p.bin, "podnet-cni")
	for _, bin := range []string{agentBin, pluginBin} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s missing (make build)", bin)
		}
	}
	sock := filepath.Join(tb.dir, "podnet.sock")
	if err := p.startAgent(agentBin, tb, sock); err != nil {
		return err
	}
	var err error
	p.cni, err = newCNIPlugin(tb, pluginBin, p.bin, map[string]any{
		"cniVersion": "1.0.0",
		"name":       "bench",
		"type":       "podnet-cni",
		"network":    "bench",
		"socket":     sock,
		"driver":     "bridge",
		"subnets":    []string{"10.98.0.0/16"},
	})
	return err
}

// startAgent starts the agent and waits until its socket accepts connections.
func (p *podnet) startAgent(bin string, tb *testbed, sock string) error {
	p.logPath = filepath.Join(tb.dir, "agent.log")
	log, err := os.Create(p.logPath)
	if err != nil {
		return fmt.Errorf("create agent log: %w", err)
	}
	defer log.Close()
	p.agent = exec.Command(bin, "agent",
		"--netns", tb.nodePath,
		"--state-dir", filepath.Join(tb.dir, "state"),
		"--socket", sock)
	p.agent.Stdout, p.agent.Stderr = log, log
	// Own process group: a ctrl-C reaches the benchmark, which stops the agent in
	// order. Pdeathsig: the agent does not outlive a benchmark that was killed.
	p.agent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := p.agent.Start(); err != nil {
		p.agent = nil
		return fmt.Errorf("start agent: %w", err)
	}
	p.exited = make(chan struct{})
	go func() {
		p.waitErr = p.agent.Wait()
		close(p.exited)
	}()

	deadline := time.After(agentStartTimeout)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			p.served = true
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("agent exited before serving (%v): %s", p.waitErr, p.logTail())
		case <-deadline:
			return fmt.Errorf("agent did not serve %s within %v: %s", sock, agentStartTimeout, p.logTail())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (p *podnet) Add(i int) error { return p.cni.add(i) }
func (p *podnet) Del(i int) error { return p.cni.del(i) }

// Teardown stops the agent with SIGTERM (SIGKILL if it does not exit in time). An
// agent that exits with an error, or had exited by itself after serving, is
// reported; one that never served was already reported by Setup.
func (p *podnet) Teardown() error {
	if p.agent == nil {
		return nil
	}
	select {
	case <-p.exited:
		if !p.served {
			return nil
		}
		if p.waitErr == nil {
			return fmt.Errorf("agent exited during the run: %s", p.logTail())
		}
	default:
		p.agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(agentStopTimeout):
			p.agent.Process.Kill()
			<-p.exited
			return fmt.Errorf("agent ignored SIGTERM for %v, killed: %s", agentStopTimeout, p.logTail())
		}
	}
	var exit *exec.ExitError
	if p.waitErr != nil && !(errors.As(p.waitErr, &exit) && killedBy(exit, syscall.SIGTERM)) {
		return fmt.Errorf("agent stopped with %v: %s", p.waitErr, p.logTail())
	}
	return nil
}

// logTail is the end of the agent's log, for error messages.
func (p *podnet) logTail() string {
	b, _ := os.ReadFile(p.logPath)
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
