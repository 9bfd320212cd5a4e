package agentproc

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

// Etcd is Debian's etcd server (etcd-server) run as a child process on free ports of
// 127.0.0.1, with its data in a directory of the caller's: the store of the cluster
// demo and benchmarks.
type Etcd struct {
	// URL is the client URL (http://127.0.0.1:PORT), Version what `etcd --version`
	// says first.
	URL, Version string
	cmd          *exec.Cmd
	log          *os.File
	done         chan struct{}
}

// StartEtcd starts etcd with its data and log in dir and waits until it accepts
// connections.
func StartEtcd(dir string) (*Etcd, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, errors.New("etcd not found: install Debian's etcd-server (make demo and make bench do)")
	}
	out, _ := exec.Command(bin, "--version").Output()
	e := &Etcd{Version: strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]), done: make(chan struct{})}
	client, peer := freePort(), freePort()
	if client == "" || peer == "" {
		return nil, errors.New("no free port on 127.0.0.1 for etcd")
	}
	e.URL = "http://" + client
	e.cmd = exec.Command(bin, "--name", "podnet", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", e.URL, "--advertise-client-urls", e.URL,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "podnet=http://"+peer, "--logger", "zap", "--log-level", "error")
	if e.log, err = os.Create(filepath.Join(dir, "etcd.log")); err != nil {
		return nil, err
	}
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		e.log.Close()
		return nil, err
	}
	go func() { e.cmd.Wait(); close(e.done) }()
	for range 250 {
		if c, err := net.DialTimeout("tcp", client, 100*time.Millisecond); err == nil {
			c.Close()
			return e, nil
		}
		select {
		case <-e.done:
			e.log.Close()
			b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			return nil, fmt.Errorf("etcd exited: %s", b)
		case <-time.After(20 * time.Millisecond):
		}
	}
	e.Stop()
	return nil, fmt.Errorf("etcd did not listen on %s within 5 s", client)
}

// Endpoint is the agent's --store value for this etcd.
func (e *Etcd) Endpoint() string { return "etcd://" + strings.TrimPrefix(e.URL, "http://") }

// Stop ends etcd (SIGTERM, SIGKILL after 5 s) by the PID it started.
func (e *Etcd) Stop() {
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		e.cmd.Process.Kill()
		<-e.done
	}
	e.log.Close()
}

// freePort returns 127.0.0.1:PORT with a port that was free a moment ago.
func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer l.Close()
	return l.Addr().String()
}
