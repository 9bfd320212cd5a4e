package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/api"
)

// bgpCmd is `podnet bgp`: the cluster's BGP settings and peers (stored once for all
// nodes) and the sessions of the agent's node.
func bgpCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "bgp", Short: "BGP of the bgp cross-node mode: AS, node mesh, peers, sessions"}

	var asn uint32
	var mesh bool
	config := &cobra.Command{
		Use:   "config [--as ASN] [--node-mesh=true|false]",
		Short: "Show the cluster's BGP settings, or set its AS and node mesh (every node peers with every other)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg api.BGPConfig
			var err error
			setAS, setMesh := cmd.Flags().Changed("as"), cmd.Flags().Changed("node-mesh")
			switch {
			case setMesh && !setAS:
				return fmt.Errorf("--node-mesh needs --as (the cluster's AS)")
			case setAS:
				req := api.BGPConfigRequest{ASN: asn}
				if setMesh {
					req.NodeMesh = &mesh
				}
				cfg, err = g.client().SetBGPConfig(cmd.Context(), req)
			default:
				cfg, err = g.client().BGPConfig(cmd.Context())
			}
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), cfg)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "AS %d, node mesh %v\n", cfg.ASN, cfg.NodeMesh)
			return nil
		},
	}
	config.Flags().Uint32Var(&asn, "as", 0, "the AS of every node")
	config.Flags().BoolVar(&mesh, "node-mesh", true, "every node peers with every other node (turn off with route reflectors)")

	peer := &cobra.Command{Use: "peer", Short: "BGP peers that are not nodes: route reflectors, top-of-rack routers"}
	var addr, node string
	var peerAS uint32
	add := &cobra.Command{
		Use:   "add NAME --address IP --as ASN [--node NODE]",
		Short: "Peer with a router: every node, or only --node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ip, err := netip.ParseAddr(addr)
			if err != nil {
				return api.AsError(api.Invalid(fmt.Sprintf("bgp peer %q", args[0]), "address", addr, "not an IP address"))
			}
			p, err := g.client().AddBGPPeer(cmd.Context(), api.BGPPeer{Name: args[0], Address: ip, ASN: peerAS, Node: node})
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), p)
			}
			fmt.Fprintln(cmd.OutOrStdout(), p.Name)
			return nil
		},
	}
	add.Flags().StringVar(&addr, "address", "", "the peer's address (required)")
	add.Flags().Uint32Var(&peerAS, "as", 0, "the peer's AS (required)")
	add.Flags().StringVar(&node, "node", "", "only this node peers with it (default: every node)")
	add.MarkFlagRequired("address")
	add.MarkFlagRequired("as")
	ls := &cobra.Command{
		Use: "ls", Short: "List the configured peers", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			peers, err := g.client().BGPPeers(cmd.Context())
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), g.json(), peers, bgpPeerColumns)
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Remove a configured peer (its sessions end)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().RemoveBGPPeer(cmd.Context(), args[0]); err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]string{"removed": args[0]})
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return nil
		},
	}
	peer.AddCommand(add, ls, rm)

	status := &cobra.Command{
		Use: "status", Short: "The BGP sessions of this node: peer, state, uptime, prefixes received and advertised", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ss, err := g.client().BGPStatus(cmd.Context())
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), g.json(), ss, bgpSessionColumns)
		},
	}
	c.AddCommand(config, peer, status)
	return c
}

var bgpPeerColumns = []column[api.BGPPeer]{
	{"NAME", func(p api.BGPPeer) string { return p.Name }},
	{"ADDRESS", func(p api.BGPPeer) string { return p.Address.String() }},
	{"AS", func(p api.BGPPeer) string { return strconv.FormatUint(uint64(p.ASN), 10) }},
	{"NODE", func(p api.BGPPeer) string {
		if p.Node == "" {
			return "(all)"
		}
		return p.Node
	}},
}

var bgpSessionColumns = []column[api.BGPSession]{
	{"PEER", func(s api.BGPSession) string {
		if s.Mesh {
			return s.Peer + " (node)"
		}
		return s.Peer
	}},
	{"ADDRESS", func(s api.BGPSession) string { return s.Address.String() }},
	{"AS", func(s api.BGPSession) string { return strconv.FormatUint(uint64(s.ASN), 10) }},
	{"STATE", func(s api.BGPSession) string { return s.State }},
	{"UPTIME", func(s api.BGPSession) string {
		if s.UptimeSeconds == 0 {
			return "-"
		}
		return (time.Duration(s.UptimeSeconds) * time.Second).String()
	}},
	{"RECEIVED", func(s api.BGPSession) string { return strconv.Itoa(s.Received) }},
	{"ADVERTISED", func(s api.BGPSession) string { return strconv.Itoa(s.Advertised) }},
}
