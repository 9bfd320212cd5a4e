package agentproc

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Child is a server process a test, demo or benchmark started (etcd, kube-apiserver): its
// output is appended to a log file, it runs in a process group of its own and is killed
// if its parent dies first (Pdeathsig), and Stop ends it by its PID.
type Child struct {
	Cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
}

// StartChild starts cmd with its output appended to logPath. start starts it (nil:
// cmd.Start; kernel.StartIn to start it inside a network namespace).
func StartChild(cmd *exec.Cmd, logPath string, start func(*exec.Cmd) error) (*Child, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	c := &Child{Cmd: cmd, log: log, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if start == nil {
		start = (*exec.Cmd).Start
	}
	if err := start(cmd); err != nil {
		log.Close()
		return nil, err
	}
	go func() { cmd.Wait(); close(c.done) }()
	return c, nil
}

// Done is closed once the process has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Stop sends SIGTERM to the process, SIGKILL after grace, and waits until it has exited.
func (c *Child) Stop(grace time.Duration) {
	c.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.Cmd.Process.Kill()
		<-c.done
	}
	c.log.Close()
}

// Tail is the last n lines of a log file, or why it cannot be read.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return LastLines(string(b), n)
}

// LastLines is the last n lines of s, "(empty)" for none.
func LastLines(s string, n int) string {
	if strings.TrimSpace(s) == "" {
		return "(empty)"
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
