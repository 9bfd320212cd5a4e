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
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/spec"
)

func runCmd(g *globals) *cobra.Command {
	var network, name, ip string
	var publish []string
	c := &cobra.Command{
		Use:   "run --network NAME [--name NAME] [--ip IP] [-p [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]]... -- CMD ARGS...",
		Short: "Run a command in a new sandbox attached to a network; detach when it exits",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if network == "" {
				return errors.New("--network is required")
			}
			var ports []api.PortMapping
			for _, p := range publish {
				m, err := spec.ParsePort(p)
				if err != nil {
					return fmt.Errorf("--publish: %w", err)
				}
				ports = append(ports, m)
			}
			return runSandbox(cmd.Context(), g.client(), network, name, ip, ports, args)
		},
	}
	c.Flags().StringVar(&network, "network", "", "network to attach to")
	c.Flags().StringVar(&name, "name", "", "name of the sandbox")
	c.Flags().StringVar(&ip, "ip", "", "static address(es), comma-separated")
	c.Flags().StringArrayVarP(&publish, "publish", "p", nil, "publish a port: [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp] (repeatable)")
	return c
}

func runSandbox(ctx context.Context, client *api.Client, network, name, ip string, ports []api.PortMapping, args []string) error {
	sb, err := kernel.NewNS()
	if err != nil {
		return fmt.Errorf("create sandbox netns: %w", err)
	}
	defer sb.Close()
	id := make([]byte, 16)
	rand.Read(id)
	key := api.EndpointKey{Network: network, ContainerID: "run-" + hex.EncodeToString(id), IfName: "eth0"}
	req := api.AttachRequest{EndpointKey: key, Name: name, Netns: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(sb)), Ports: ports}
	if ip != "" {
		req.IPs = strings.FieldsFunc(ip, func(r rune) bool { return r == ',' })
	}
	res, err := client.Attach(ctx, req, int(sb))
	if err != nil {
		return err
	}
	// Detach whatever happens from here on (also on SIGINT/SIGTERM, forwarded to CMD).
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := client.Detach(dctx, api.DetachRequest{EndpointKey: key}, -1); err != nil {
			fmt.Fprintln(os.Stderr, "podnet: detach:", err)
		}
	}()
	for _, ipc := range res.IPs {
		fmt.Fprintf(os.Stderr, "podnet: sandbox %s: %s\n", key.ContainerID, ipc.Address)
	}
	child := exec.Command(args[0], args[1:]...)
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
