package agentproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

// Etcd is Debian's etcd server (etcd-server) run as a child process on free ports of
// 127.0.0.1, with its data in a directory of the caller's: the store of the cluster
// demo and benchmarks.
type Etcd struct {
	// URL is the client URL (http://127.0.0.1:PORT), Version what `etcd --version`
	// says first.
	URL, Version string
	proc         *Child
}

// StartEtcd starts etcd with its data and log in dir, on free ports of 127.0.0.1, and
// waits until it accepts connections.
func StartEtcd(dir string) (*Etcd, error) {
	client, peer := freePort(), freePort()
	if client == "" || peer == "" {
		return nil, errors.New("no free port on 127.0.0.1 for etcd")
	}
	return startEtcd(dir, netns.None(), client, peer)
}

// StartEtcdIn starts etcd inside ns, listening on addr port 2379 for clients and 2380
// for peers (a cluster's underlay, where agents running inside node namespaces reach
// it), and waits until it accepts connections.
func StartEtcdIn(dir string, ns netns.NsHandle, addr netip.Addr) (*Etcd, error) {
	return startEtcd(dir, ns, netip.AddrPortFrom(addr, 2379).String(), netip.AddrPortFrom(addr, 2380).String())
}

func startEtcd(dir string, ns netns.NsHandle, client, peer string) (*Etcd, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, errors.New("etcd not found: install Debian's etcd-server (make demo and make bench do)")
	}
	out, _ := exec.Command(bin, "--version").Output()
	e := &Etcd{Version: strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]), URL: "http://" + client}
	cmd := exec.Command(bin, "--name", "podnet", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", e.URL, "--advertise-client-urls", e.URL,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "podnet=http://"+peer, "--logger", "zap", "--log-level", "error")
	start := (*exec.Cmd).Start
	if ns.IsOpen() {
		start = func(cmd *exec.Cmd) error { return kernel.StartIn(ns, cmd) }
	}
	logPath := filepath.Join(dir, "etcd.log")
	if e.proc, err = StartChild(cmd, logPath, start); err != nil {
		return nil, err
	}
	dial := func() (net.Conn, error) { return net.DialTimeout("tcp", client, 100*time.Millisecond) }
	if ns.IsOpen() {
		dial = func() (net.Conn, error) {
			return kernel.DialIn(context.Background(), ns, "tcp", client, 100*time.Millisecond)
		}
	}
	for range 250 {
		if c, err := dial(); err == nil {
			c.Close()
			return e, nil
		}
		select {
		case <-e.proc.Done():
			e.proc.Stop(0)
			b, _ := os.ReadFile(logPath)
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
func (e *Etcd) Stop() { e.proc.Stop(5 * time.Second) }

// freePort returns 127.0.0.1:PORT with a port that was free a moment ago.
func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer l.Close()
	return l.Addr().String()
}
