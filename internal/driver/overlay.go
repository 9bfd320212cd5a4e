package driver

// The cross-node data paths (api.Network.CrossNode). Every node claims address blocks
// of the network and holds routes to the blocks the other live nodes claimed:
//   - vxlan: one VXLAN device per network and node (pnxXXXXXXXXXXX, VNI and port of the
//     network, no learning), a permanent FDB entry (VTEP MAC -> node address) and
//     neighbour entry (node address -> VTEP MAC) per other live node, and a route per
//     remote block via that node's address, onlink on the device. No multicast, no
//     flooding, no ARP across the tunnel. The device holds the node's tunnel addresses,
//     which the agent allocates from the node's blocks (agent/tunnel.go) and adds to
//     the plan. Either family of blocks crosses an underlay
//     of either family (the kernel applier picks the next hop: an IPv6 block behind an
//     IPv4 node address goes via its VTEP's link-local address, kernel.VTEPLinkLocal).
//   - direct: a route per remote block via the node's address on the underlay (the
//     nodes share one L2 segment). On an IPv4 underlay only the IPv4 blocks: an IPv6
//     route takes no IPv4 next hop, and the node record holds no IPv6 address to route
//     to; a network's IPv6 subnets stay on their nodes (use vxlan to cross them).
//   - bgp: the routes come from the BGP speaker; no device, no static route.
// A bridge network's bridge answers ARP for the remote IPv4 blocks; its pods reach the
// remote IPv6 blocks through their gateway (see bridge).

import (
	"cmp"
	"net"
	"net/netip"
	"slices"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/spec"
)

// Underlay is a node's side of the cross-node data paths: its name, its underlay
// address and the interface that holds it.
type Underlay struct {
	Node string
	IP   netip.Addr
	Dev  string
}

// VTEPMAC is the MAC of a network's VXLAN device on a node: derived from both, so that
// every node computes the others' without storing it.
func VTEPMAC(node, network string) net.HardwareAddr {
	return stableMAC("vtep/" + node + "/" + network)
}

// OverlayFor is the cross-node plan of network n on the node u, from the cluster's
// nodes and the network's blocks: the blocks of the other live nodes that have an
// address of u's family (for direct routing on an IPv4 underlay, their IPv4 blocks
// only). A network without CrossNode has an empty plan.
func OverlayFor(n api.Network, u Underlay, nodes []api.Node, blocks []api.Block) plan.Overlay {
	o := plan.Overlay{Network: n.Name}
	for _, s := range n.Subnets {
		o.Subnets = append(o.Subnets, s.Prefix)
	}
	if n.CrossNode == "" || n.CrossNode == api.CrossNodeBGP {
		return o
	}
	peers := map[string]api.Node{}
	for _, nd := range nodes {
		if nd.Name != u.Node && nd.Alive && nd.IP.IsValid() && nd.IP.Is4() == u.IP.Is4() {
			peers[nd.Name] = nd
		}
	}
	dev := u.Dev
	if n.CrossNode == api.CrossNodeVXLAN {
		dev = spec.VXLANName(n.Name)
		o.Device = plan.VXLAN{Name: dev, VNI: n.VNI, Port: n.VXLANPort, Local: u.IP, Dev: u.Dev, MTU: n.MTU, MAC: VTEPMAC(u.Node, n.Name)}
		for _, nd := range peers {
			o.Peers = append(o.Peers, plan.VTEP{NodeIP: nd.IP, MAC: VTEPMAC(nd.Name, n.Name)})
		}
		slices.SortFunc(o.Peers, func(a, b plan.VTEP) int { return a.NodeIP.Compare(b.NodeIP) })
	}
	for _, b := range blocks {
		nd, ok := peers[b.Node]
		if b.Network != n.Name || !ok || (n.CrossNode == api.CrossNodeDirect && b.Prefix.Addr().Is6() && nd.IP.Is4()) {
			continue
		}
		o.Routes = append(o.Routes, plan.OverlayRoute{Dst: b.Prefix, Via: nd.IP, Dev: dev, Onlink: n.CrossNode == api.CrossNodeVXLAN})
	}
	slices.SortFunc(o.Routes, func(a, b plan.OverlayRoute) int {
		return cmp.Or(a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()))
	})
	return o
}
