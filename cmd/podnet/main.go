// Command podnet is podnet's CLI and node agent: `podnet agent` runs the agent, every
// other command talks to it over its unix socket (`podnet demo` runs one in-process).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agent"
	"github.com/podnet/podnet/internal/demo"
	"github.com/podnet/podnet/internal/graph"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/spec"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		var exit exitCode
		if errors.As(err, &exit) {
			os.Exit(int(exit))
		}
		fmt.Fprintln(os.Stderr, "podnet:", err)
		os.Exit(1)
	}
}

// exitCode makes the process exit with that code and no message (podnet run).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

type globals struct {
	socket string
	output string
}

func (g *globals) client() *api.Client { return api.NewClient(g.socket) }

func (g *globals) json() bool { return g.output == "json" }

func rootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "podnet",
		Short:         "Container networks for Linux: bridge networks, IPAM, egress NAT, CNI plugin",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	def := os.Getenv("PODNET_SOCKET")
	if def == "" {
		def = api.DefaultSocket
	}
	root.PersistentFlags().StringVar(&g.socket, "socket", def, "agent socket (env PODNET_SOCKET)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.AddCommand(agentCmd(), networkCmd(g), nodeCmd(g), bgpCmd(g), namespaceCmd(g), policyCmd(g), endpointCmd(g), portCmd(g), serviceCmd(g), dnsCmd(g), runCmd(g), graphCmd(g), doctorCmd(g), traceCmd(g), controllerCmd(g), demoCmd(), sandboxInitCommand())
	return root
}

func agentCmd() *cobra.Command {
	var sf storeFlags
	var nsPath, logLevel string
	var interval time.Duration
	var serviceCIDRs []string
	var dnsCfg agent.DNSConfig
	var metricsAddr string
	var bgpPort int
	var fastPath bool
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent (owns the store and the node's kernel configuration)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			socket, _ := cmd.Flags().GetString("socket")
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: %w", logLevel, err)
			}
			log := agent.DefaultLogger(level)
			node, nodePath, err := openNetns(nsPath)
			if err != nil {
				return fmt.Errorf("--netns %q: %w", nsPath, err)
			}
			defer node.Close()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			st, shared, err := openStore(ctx, sf, socket, log)
			if err != nil {
				return err
			}
			name, ip, err := nodeIdentity(sf, node, shared)
			if err != nil {
				st.Close()
				return err
			}
			cfg := agent.Config{Store: st, NodeNS: node, NodeNSPath: nodePath, ReconcileInterval: interval, Logger: log, DNS: dnsCfg,
				NodeName: name, NodeIP: ip, Shared: shared, LeaseTTL: sf.leaseTTL, BGPPort: bgpPort,
				NoFastPath: !fastPath}
			for _, c := range serviceCIDRs {
				p, err := netip.ParsePrefix(c)
				if err != nil || p.Masked() != p {
					st.Close()
					return fmt.Errorf("--service-cidr %q: want a CIDR prefix without host bits", c)
				}
				cfg.ServiceCIDRs = append(cfg.ServiceCIDRs, p)
			}
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			defer a.Close()
			if metricsAddr != "" {
				stopMetrics, err := serveMetrics(node, metricsAddr, a.MetricsHandler(), graph.Handler(a.Graph), log)
				if err != nil {
					return err
				}
				defer stopMetrics()
			}
			return a.Serve(ctx, socket)
		},
	}
	c.Flags().StringVar(&sf.stateDir, "state-dir", api.DefaultStateDir, "directory of the embedded store (podnet.db), used without --store")
	c.Flags().StringVar(&sf.url, "store", "", "cluster store etcd://HOST:PORT[,HOST:PORT...] (default: the embedded file in --state-dir, one node)")
	c.Flags().StringVar(&sf.caCert, "etcd-cacert", "", "CA certificate of etcd's server certificate (TLS)")
	c.Flags().StringVar(&sf.cert, "etcd-cert", "", "client certificate for etcd (TLS)")
	c.Flags().StringVar(&sf.key, "etcd-key", "", "key of --etcd-cert")
	c.Flags().DurationVar(&sf.dialTimeout, "etcd-dial-timeout", 5*time.Second, "how long to wait for etcd to answer at start (then retried, STATUS not ready)")
	c.Flags().StringVar(&sf.nodeName, "node-name", "", "this node's name in the cluster (default: the hostname)")
	c.Flags().StringVar(&sf.nodeIP, "node-ip", "", "this node's underlay address, that other nodes tunnel and route to (default: the source address of the default route)")
	c.Flags().DurationVar(&sf.leaseTTL, "lease-ttl", agent.DefaultLeaseTTL, "how long the node stays alive in the store after its agent stops")
	c.Flags().IntVar(&bgpPort, "bgp-port", 179, "TCP port of the BGP speaker of bgp networks (-1: do not listen, dial only)")
	c.Flags().BoolVar(&fastPath, "fast-path", true, "carry the traffic between pods of the node (of one bridge, or of one routed network) by eBPF (tcx) around the bridge, the forwarding and netfilter, where podnet's rules would pass it; false: the kernel's path only")
	c.Flags().StringVar(&nsPath, "netns", "", "manage the network namespace at this path instead of the agent's own (bgp networks need the agent inside the node's namespace)")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	c.Flags().DurationVar(&interval, "reconcile-interval", 10*time.Second, "how often kernel state is compared with the store")
	c.Flags().StringArrayVar(&serviceCIDRs, "service-cidr", []string{api.DefaultServiceCIDR}, "pool of service virtual IPs (once per family)")
	c.Flags().StringVar(&dnsCfg.Domain, "cluster-domain", api.DefaultClusterDomain, "DNS zone of services and pods")
	c.Flags().StringArrayVar(&dnsCfg.Upstreams, "dns-upstream", nil, "resolver for names outside the zone, IP[:PORT] (repeatable; default: the node's resolv.conf)")
	c.Flags().BoolVar(&dnsCfg.Disable, "no-dns", false, "do not run the cluster DNS server")
	c.Flags().StringVar(&dnsCfg.ResolvConf, "resolv-conf", "/etc/resolv.conf", "the node's resolv.conf (upstreams, search domains, the Default DNS policy)")
	c.Flags().StringVar(&metricsAddr, "metrics-address", "127.0.0.1:9464", "serve Prometheus metrics at /metrics and the live node graph at /graph on this address of the node namespace (empty: neither)")
	return c
}

// serveMetrics serves h at /metrics and gh at graph.Paths (the live /graph page and its
// data) on addr, a TCP address of the node namespace, until the returned function is
// called.
func serveMetrics(node netns.NsHandle, addr string, h, gh http.Handler, log *slog.Logger) (stop func(), err error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().IsLoopback() {
		if err := kernel.EnsureLoopbackUp(node); err != nil {
			return nil, fmt.Errorf("--metrics-address %q: %w", addr, err)
		}
	}
	l, err := kernel.ListenIn(node, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address %q: %w (another agent's metrics? pass another address, or an empty one)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	for _, p := range graph.Paths {
		mux.Handle("GET "+p, gh)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	log.Info("metrics served", "address", l.Addr().String())
	return func() { srv.Close() }, nil
}

func networkCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "network", Short: "Manage networks"}
	var s api.NetworkSpec
	var gateway string
	create := &cobra.Command{
		Use:   "create NAME --subnet CIDR [--subnet CIDR6] [--gateway IP] [--mtu N] [--no-masquerade]",
		Short: "Create a network",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s.Name = args[0]
			if gateway != "" {
				s.Gateways = strings.Split(gateway, ",")
			}
			n, err := g.client().CreateNetwork(cmd.Context(), s)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), n)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n", n.Name)
			return nil
		},
	}
	create.Flags().StringVar(&s.Driver, "driver", api.DriverBridge, "network driver: bridge or routed")
	create.Flags().StringSliceVar(&s.Subnets, "subnet", nil, "subnet in CIDR form (once per family)")
	create.Flags().StringVar(&gateway, "gateway", "", "gateway address(es), comma-separated (default: first address of the subnet)")
	create.Flags().IntVar(&s.MTU, "mtu", 0, "MTU of the bridge and veths (default 1500)")
	create.Flags().BoolVar(&s.NoMasquerade, "no-masquerade", false, "do not masquerade traffic leaving the network")
	create.Flags().StringVar(&s.CrossNode, "cross-node", "", "how pods reach other nodes' pods: vxlan, direct or bgp (default: none on the embedded store, vxlan on etcd)")
	create.Flags().IntVar(&s.BlockSize, "block-size", 0, "prefix length of the IPv4 address blocks nodes claim (default 26; IPv6 blocks hold as many addresses)")
	create.Flags().IntVar(&s.VNI, "vni", 0, "VXLAN network identifier (default: derived from the name)")
	create.Flags().IntVar(&s.VXLANPort, "vxlan-port", 0, "VXLAN UDP port (default 4789)")
	create.Flags().StringVar(&s.PortMode, "port-mode", api.PortModeNAT, "how published ports reach endpoints: nat (DNAT) or proxy (userland proxy in the agent; the client address is lost)")

	ls := &cobra.Command{
		Use: "ls", Short: "List networks", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns, err := g.client().Networks(cmd.Context())
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), g.json(), ns, networkColumns)
		},
	}
	inspect := &cobra.Command{
		Use: "inspect NAME", Short: "Show a network and its endpoints as JSON", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := g.client().Network(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			eps, err := g.client().Endpoints(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), struct {
				api.Network
				Endpoints []api.Endpoint `json:"endpoints"`
			}{n, eps})
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME...", Short: "Remove networks (refused while endpoints are attached)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				if err := g.client().DeleteNetwork(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
			}
			return nil
		},
	}
	c.AddCommand(create, ls, inspect, rm)
	return c
}

func endpointCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "endpoint", Short: "Inspect attachments"}
	var network string
	var allNodes bool
	ls := &cobra.Command{
		Use: "ls", Short: "List what is attached where", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if allNodes {
				eps, err := g.client().AllEndpoints(cmd.Context(), network)
				if err != nil {
					return err
				}
				cols := append([]column[api.Endpoint]{{"NODE", func(ep api.Endpoint) string { return ep.Node }}}, endpointColumns...)
				return printList(cmd.OutOrStdout(), g.json(), eps, cols)
			}
			eps, err := g.client().Endpoints(cmd.Context(), network)
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), g.json(), eps, endpointColumns)
		},
	}
	ls.Flags().StringVar(&network, "network", "", "only this network")
	ls.Flags().BoolVar(&allNodes, "all-nodes", false, "the endpoints of every node of the cluster (adds a NODE column)")
	var key api.EndpointKey
	label := &cobra.Command{
		Use:   "label --network NET --container ID [--ifname eth0] k=v...",
		Short: "Replace the labels of an endpoint (services follow at once)",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			labels, err := spec.ParseLabels(args)
			if err != nil {
				return err
			}
			ep, err := g.client().SetLabels(cmd.Context(), api.LabelsRequest{EndpointKey: key, Labels: labels})
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), ep)
			}
			fmt.Fprintln(cmd.OutOrStdout(), ep.EndpointKey.String())
			return nil
		},
	}
	label.Flags().StringVar(&key.Network, "network", "", "network of the endpoint")
	label.Flags().StringVar(&key.ContainerID, "container", "", "container id of the endpoint")
	label.Flags().StringVar(&key.IfName, "ifname", "eth0", "interface name of the endpoint")
	c.AddCommand(ls, label)
	return c
}

func portCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "port", Short: "Inspect published ports"}
	var network string
	ls := &cobra.Command{
		Use: "ls", Short: "List published ports and the endpoints they lead to", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			eps, err := g.client().Endpoints(cmd.Context(), network)
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), g.json(), portRows(eps), portColumns)
		},
	}
	ls.Flags().StringVar(&network, "network", "", "only this network")
	c.AddCommand(ls)
	return c
}

func demoCmd() *cobra.Command {
	var verbose, cluster bool
	c := &cobra.Command{
		Use:   "demo [--cluster]",
		Short: "Show podnet at work in throwaway namespaces (touches nothing of the host's network)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cluster {
				bin, err := os.Executable()
				if err != nil {
					return err
				}
				return demo.RunCluster(cmd.Context(), cmd.OutOrStdout(), bin)
			}
			return demo.Run(cmd.Context(), cmd.OutOrStdout(), verbose)
		},
	}
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "show the agent's log")
	c.Flags().BoolVar(&cluster, "cluster", false, "three nodes on an underlay with a real etcd (Debian's etcd-server): vxlan and direct networks, a cross-node service, a node failure")
	return c
}

func nodeCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "node", Short: "Inspect the nodes of the cluster"}
	ls := &cobra.Command{
		Use: "ls", Short: "List the nodes: address, lease, podCIDRs (podnet controller --node-pod-cidrs), blocks per network, agent version", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nodes, err := g.client().Nodes(cmd.Context())
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), g.json(), nodes, nodeColumns)
		},
	}
	inspect := &cobra.Command{
		Use: "inspect NAME", Short: "Show one node", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			nodes, err := g.client().Nodes(cmd.Context())
			if err != nil {
				return err
			}
			for _, n := range nodes {
				if n.Name == args[0] {
					return printJSON(cmd.OutOrStdout(), n)
				}
			}
			return api.Errorf(api.CodeNotFound, "node %q does not exist", args[0])
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Force-release a dead node: its blocks, addresses and endpoint records", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().RemoveNode(cmd.Context(), args[0]); err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]string{"removed": args[0]})
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return nil
		},
	}
	c.AddCommand(ls, inspect, rm)
	return c
}
