package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/spec"
)

// DNS policies of podnet run, as Kubernetes names them.
const (
	dnsClusterFirst = "ClusterFirst"
	dnsDefault      = "Default"
	dnsNone         = "None"
)

type runOptions struct {
	network, name, namespace, ip   string
	publish, labels, namedPorts    []string
	dnsPolicy                      string
	dnsServers, dnsSearch, dnsOpts []string
}

func runCmd(g *globals) *cobra.Command {
	var o runOptions
	c := &cobra.Command{
		Use:   "run --network NAME [--name NAME] [--namespace NS] [--label k=v]... [--ip IP] [-p [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]]... [--named-port NAME=PORT[/PROTO]]... [--dns-policy ClusterFirst|Default|None] -- CMD ARGS...",
		Short: "Run a command in a new sandbox attached to a network; detach when it exits",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSandbox(cmd.Context(), g.client(), o, args)
		},
	}
	c.Flags().StringVar(&o.network, "network", "", "network to attach to")
	c.Flags().StringVar(&o.name, "name", "", "name of the sandbox (its hostname in DNS)")
	c.Flags().StringVarP(&o.namespace, "namespace", "n", api.DefaultNamespace, "namespace of the sandbox")
	c.Flags().StringArrayVarP(&o.labels, "label", "l", nil, "label k=v (repeatable): services select sandboxes by labels")
	c.Flags().StringVar(&o.ip, "ip", "", "static address(es), comma-separated")
	c.Flags().StringArrayVarP(&o.publish, "publish", "p", nil, "publish a port: [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp] (repeatable)")
	c.Flags().StringArrayVar(&o.namedPorts, "named-port", nil, "a named container port NAME=PORT[/tcp|udp|sctp] that network policies may name (repeatable)")
	c.Flags().StringVar(&o.dnsPolicy, "dns-policy", dnsClusterFirst, "resolv.conf of the sandbox: ClusterFirst (cluster DNS), Default (the node's), None (only --dns*)")
	c.Flags().StringArrayVar(&o.dnsServers, "dns", nil, "nameserver (repeatable; with --dns-policy None)")
	c.Flags().StringArrayVar(&o.dnsSearch, "dns-search", nil, "search domain (repeatable; with --dns-policy None)")
	c.Flags().StringArrayVar(&o.dnsOpts, "dns-option", nil, "resolver option (repeatable; with --dns-policy None)")
	return c
}

// sandboxInitCommand is the hidden helper podnet run starts in the sandbox's new mount
// namespace: it bind-mounts the sandbox's resolv.conf and execs the command.
func sandboxInitCommand() *cobra.Command {
	return &cobra.Command{
		Use:                sandboxInitCmd + " RESOLV.CONF CMD ARGS...",
		Hidden:             true,
		Args:               cobra.MinimumNArgs(2),
		DisableFlagParsing: true,
		RunE:               func(_ *cobra.Command, args []string) error { return sandboxInit(args[0], args[1:]) },
	}
}

func runSandbox(ctx context.Context, client *api.Client, o runOptions, args []string) error {
	if o.network == "" {
		return errors.New("--network is required")
	}
	req := api.AttachRequest{Name: o.name, Namespace: o.namespace}
	for _, p := range o.publish {
		m, err := spec.ParsePort(p)
		if err != nil {
			return fmt.Errorf("--publish: %w", err)
		}
		req.Ports = append(req.Ports, m)
	}
	for _, np := range o.namedPorts {
		p, err := spec.ParseNamedPort(np)
		if err != nil {
			return fmt.Errorf("--named-port: %w", err)
		}
		req.NamedPorts = append(req.NamedPorts, p)
	}
	if len(o.labels) > 0 {
		labels, err := spec.ParseLabels(o.labels)
		if err != nil {
			return fmt.Errorf("--label: %w", err)
		}
		req.Labels = labels
	}
	if o.ip != "" {
		req.IPs = strings.FieldsFunc(o.ip, func(r rune) bool { return r == ',' })
	}
	switch o.dnsPolicy {
	case dnsClusterFirst, dnsDefault, dnsNone:
	default:
		return fmt.Errorf("--dns-policy %q: want ClusterFirst, Default or None", o.dnsPolicy)
	}

	sb, err := kernel.NewNS()
	if err != nil {
		return fmt.Errorf("create sandbox netns: %w", err)
	}
	defer sb.Close()
	id := make([]byte, 16)
	rand.Read(id)
	req.EndpointKey = api.EndpointKey{Network: o.network, ContainerID: "run-" + hex.EncodeToString(id), IfName: "eth0"}
	req.Netns = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(sb))
	res, err := client.Attach(ctx, req, int(sb))
	if err != nil {
		return err
	}
	// Detach whatever happens from here on (also on SIGINT/SIGTERM, forwarded to CMD).
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := client.Detach(dctx, api.DetachRequest{EndpointKey: req.EndpointKey}, -1); err != nil {
			fmt.Fprintln(os.Stderr, "podnet: detach:", err)
		}
	}()
	for _, ipc := range res.IPs {
		fmt.Fprintf(os.Stderr, "podnet: sandbox %s: %s\n", req.ContainerID, ipc.Address)
	}

	child := exec.Command(args[0], args[1:]...)
	if o.dnsPolicy != dnsDefault {
		dns := res.DNS
		if o.dnsPolicy == dnsNone {
			dns = api.DNS{Nameservers: o.dnsServers, Search: o.dnsSearch, Options: o.dnsOpts}
		}
		dir, err := os.MkdirTemp("", "podnet-run-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		resolv := filepath.Join(dir, "resolv.conf")
		if err := os.WriteFile(resolv, []byte(renderResolvConf(dns)), 0o644); err != nil {
			return err
		}
		// The command runs in a private mount namespace where a helper (this binary)
		// bind-mounts the sandbox's resolv.conf over /etc/resolv.conf, then execs it.
		self, err := os.Executable()
		if err != nil {
			return err
		}
		child = exec.Command(self, append([]string{sandboxInitCmd, resolv, args[0]}, args[1:]...)...)
		child.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	}
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := kernel.StartIn(sb, child); err != nil {
		return fmt.Errorf("start %s: %w", args[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	for {
		select {
		case s := <-sigs:
			child.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return exitCode(128 + int(ws.Signal()))
				}
				return exitCode(ee.ExitCode())
			}
			return err
		}
	}
}

// renderResolvConf writes a resolv.conf.
func renderResolvConf(d api.DNS) string {
	var b strings.Builder
	b.WriteString("# generated by podnet run\n")
	for _, ns := range d.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if d.Domain != "" {
		fmt.Fprintf(&b, "domain %s\n", d.Domain)
	}
	if len(d.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.Search, " "))
	}
	if len(d.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(d.Options, " "))
	}
	return b.String()
}

const sandboxInitCmd = "__sandbox-init"

func sandboxInit(resolv string, args []string) error {
	// Keep the mounts of this namespace to itself.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount(resolv, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount resolv.conf: %w", err)
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, args, os.Environ())
}
