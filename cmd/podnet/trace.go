package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/trace"
)

// traceCmd is `podnet trace`: it marks one flow for nftables tracing in the node
// namespace, optionally sends probes from the source sandbox, and prints the path of the
// flow's packets (internal/trace).
func traceCmd(g *globals) *cobra.Command {
	var (
		from, to, fromNetns, nodeNetns string
		send                           bool
		count                          int
		timeout                        time.Duration
	)
	c := &cobra.Command{
		Use:   "trace --from ENDPOINT|IP --to IP[:PORT][/tcp|udp|icmp] [--send] [--count N] [--timeout D]",
		Short: "Show the path of a flow's packets through the node: hooks, interfaces, every table's chains and rules, verdicts, NAT",
		Long: `trace marks the packets of one flow for nftables tracing in the node namespace (meta
nftrace set 1, in table inet/bridge ` + trace.TableName + `, removed afterwards and when interrupted),
listens for the kernel's trace events, and prints each packet's path hook by hook: the
interfaces, every chain and rule it went through in every table (podnet's and other
tools'), the verdicts, the NAT conntrack applied, and where the packet ended.

--from is an endpoint (NETWORK/CONTAINER[/IFNAME], looked up through the agent) or an IP
address. --send sends probes from inside the source's namespace (an endpoint's, or
--from-netns PATH): TCP connects, UDP datagrams or ICMP echo requests. Without --send,
trace watches the flow's traffic until --timeout or an interrupt.`,
		Example: `  podnet trace --from blue/3f2a9c --to 10.88.0.12:8080 --send
  podnet trace --from 10.88.0.11 --to 10.88.0.12/icmp --from-netns /run/netns/a1 --send --count 3
  podnet trace --from 203.0.113.2 --to 203.0.113.1:18080 --timeout 30s --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return errors.New("trace needs --from and --to")
			}
			f, err := trace.ParseTo(to)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			if send && f.Proto == "" {
				f.Proto = trace.ICMP
			}
			if send && f.Proto != trace.ICMP && f.Port == 0 {
				return fmt.Errorf("--to %s: probes of %s need a port", to, f.Proto)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			src, srcPath, err := resolveSource(ctx, g, from, f.Dst, fromNetns, send)
			if err != nil {
				return err
			}
			f.Src = src
			if err := f.Validate(); err != nil {
				return err
			}

			node, nodePath, err := openNetns(nodeNetns)
			if err != nil {
				return fmt.Errorf("--netns: %w", err)
			}
			defer node.Close()
			source := netns.None()
			if srcPath != "" {
				if source, err = netns.GetFromPath(srcPath); err != nil {
					return fmt.Errorf("namespace of %s: %w", from, err)
				}
				defer source.Close()
			}
			opts := trace.Options{Node: node, NodePath: nodePath, Flow: f, Source: source, Send: send, Count: count, Timeout: timeout}
			if send && opts.Count == 0 {
				opts.Count = 1
			}
			if !send && !g.json() {
				fmt.Fprintf(cmd.ErrOrStderr(), "tracing %s; interrupt (Ctrl-C) to stop\n", f)
			}
			res, err := trace.Run(ctx, opts)
			if err != nil {
				return err
			}
			if g.json() {
				return trace.WriteJSON(cmd.OutOrStdout(), res.Report)
			}
			return trace.WriteText(cmd.OutOrStdout(), res.Report)
		},
	}
	c.Flags().StringVar(&from, "from", "", "source: an endpoint NETWORK/CONTAINER[/IFNAME] or an IP address")
	c.Flags().StringVar(&to, "to", "", "destination: IP[:PORT][/tcp|udp|icmp] (a port alone means tcp)")
	c.Flags().BoolVar(&send, "send", false, "send probes from inside the source's namespace (no protocol: icmp)")
	c.Flags().IntVar(&count, "count", 0, "probes to send with --send (default 1); without --send, stop after this many packets (default: no limit)")
	c.Flags().DurationVar(&timeout, "timeout", 0, "how long each probe waits for its answer with --send (default 2s); without --send, how long to watch (default: until interrupted)")
	c.Flags().StringVar(&nodeNetns, "netns", "", "the node network namespace to trace in (default: the caller's)")
	c.Flags().StringVar(&fromNetns, "from-netns", "", "the source's network namespace (default: the endpoint's, from the agent)")
	return c
}

// resolveSource finds the source address of the flow to dst (of dst's family) and the
// path of its namespace: from --from-netns, else from the agent's endpoints. The
// namespace is required only to send probes.
func resolveSource(ctx context.Context, g *globals, from string, dst netip.Addr, fromNetns string, send bool) (netip.Addr, string, error) {
	if a, err := netip.ParseAddr(from); err == nil {
		a = a.Unmap()
		if fromNetns != "" || !send {
			if fromNetns == "" {
				// Optional: an endpoint's namespace lets the report show its route decision.
				if ep, err := endpointByIP(ctx, g, a); err == nil {
					return a, ep.Netns, nil
				}
			}
			return a, fromNetns, nil
		}
		ep, err := endpointByIP(ctx, g, a)
		if err != nil {
			return a, "", fmt.Errorf("--send: the namespace of %s is unknown (%w): give --from-netns PATH", a, err)
		}
		return a, ep.Netns, nil
	}
	key, err := parseEndpointKey(from)
	if err != nil {
		return netip.Addr{}, "", err
	}
	eps, err := g.client().Endpoints(ctx, key.Network)
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("--from %s: %w", from, err)
	}
	var found []api.Endpoint
	for _, ep := range eps {
		if ep.IfName == key.IfName && (ep.ContainerID == key.ContainerID || strings.HasPrefix(ep.ContainerID, key.ContainerID)) {
			found = append(found, ep)
		}
	}
	switch {
	case len(found) == 0:
		return netip.Addr{}, "", fmt.Errorf("--from %s: no such endpoint", from)
	case len(found) > 1:
		return netip.Addr{}, "", fmt.Errorf("--from %s: %d endpoints match that container id prefix", from, len(found))
	}
	ep := found[0]
	path := ep.Netns
	if fromNetns != "" {
		path = fromNetns
	}
	for _, p := range ep.IPs {
		if p.Addr().Is4() == dst.Is4() {
			return p.Addr(), path, nil
		}
	}
	return netip.Addr{}, "", fmt.Errorf("--from %s: the endpoint has no address of %s's family", from, dst)
}

// parseEndpointKey parses NETWORK/CONTAINER[/IFNAME] (IFNAME eth0 by default).
func parseEndpointKey(s string) (api.EndpointKey, error) {
	parts := strings.Split(s, "/")
	switch {
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return api.EndpointKey{Network: parts[0], ContainerID: parts[1], IfName: "eth0"}, nil
	case len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != "":
		return api.EndpointKey{Network: parts[0], ContainerID: parts[1], IfName: parts[2]}, nil
	}
	return api.EndpointKey{}, fmt.Errorf("--from %q: want an IP address or NETWORK/CONTAINER[/IFNAME]", s)
}

// endpointByIP returns the agent's endpoint that has address a.
func endpointByIP(ctx context.Context, g *globals, a netip.Addr) (api.Endpoint, error) {
	eps, err := g.client().Endpoints(ctx, "")
	if err != nil {
		return api.Endpoint{}, err
	}
	for _, ep := range eps {
		for _, p := range ep.IPs {
			if p.Addr() == a {
				return ep, nil
			}
		}
	}
	return api.Endpoint{}, fmt.Errorf("no endpoint has address %s", a)
}

// openNetns opens the namespace at path, or the caller's when path is "".
func openNetns(path string) (netns.NsHandle, string, error) {
	if path == "" {
		ns, err := netns.Get()
		return ns, fmt.Sprintf("/proc/%d/ns/net", os.Getpid()), err
	}
	ns, err := netns.GetFromPath(path)
	return ns, path, err
}
