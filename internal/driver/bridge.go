package driver

// The bridge driver (Docker style). Kernel objects:
//   - node: one Linux bridge per network (pn-NAME) with a fixed MAC and the gateway
//     address of every subnet, MTU of the network, up; route_localnet on (published
//     ports answer on 127.0.0.1), no DAD, no RAs;
//   - per endpoint: a veth pair; the host end (pnvXXXXXXXXXXX) is a port of the bridge
//     with hairpin on (a sandbox reaches its own published port), the sandbox end is
//     created directly in the sandbox namespace under the CNI interface name, with the
//     endpoint's addresses, a MAC derived from its IPv4 address (or the one requested),
//     a default route per family via the gateway, and neighbour entries written in
//     advance (the gateway in the sandbox, the sandbox in the node);
//   - cross-node networks: the bridge answers ARP for the other nodes' IPv4 blocks
//     (proxy ARP: pods see the whole IPv4 subnet on-link). IPv6 has no proxy for a
//     prefix (proxy NDP answers per address), so a pod's IPv6 address has the length of
//     its node's block (/122 by default): its own block is on-link, the rest of the
//     subnet goes via the gateway, with a host route to the gateway when the block
//     does not hold it;
//   - nftables: the network's subnets in the sets of table inet podnet (isolation,
//     masquerade, the bridge's own subnets), the endpoint's port, MAC and addresses in
//     the anti-spoofing sets of table bridge podnet.

import (
	"net"
	"net/netip"
	"slices"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/plan"
)

type bridge struct{}

func (bridge) Network(n api.Network) Network {
	b := plan.Bridge{Name: n.Bridge, MTU: n.MTU, MAC: stableMAC("bridge/" + n.Name), Sysctls: []plan.Sysctl{
		// Published ports answer on 127.0.0.1: DNATed packets with a loopback source
		// may leave through the bridge.
		{Key: "net/ipv4/conf/" + n.Bridge + "/route_localnet", Value: "1"},
		// The gateway must answer at once (no DAD), and the bridge takes no RAs.
		{Key: "net/ipv6/conf/" + n.Bridge + "/accept_dad", Value: "0"},
		{Key: "net/ipv6/conf/" + n.Bridge + "/accept_ra", Value: "0"},
		{Key: "net/ipv6/conf/" + n.Bridge + "/autoconf", Value: "0"},
	}}
	for _, s := range n.Subnets {
		b.Addrs = append(b.Addrs, netip.PrefixFrom(s.Gateway, s.Prefix.Bits()))
	}
	if n.CrossNode != "" {
		// Pods see the whole IPv4 subnet on-link, other nodes' blocks included: the
		// bridge answers their ARP requests for addresses it routes elsewhere (the other
		// nodes' blocks), at once, and never for its own pods (routed through the bridge
		// itself). IPv6: see Endpoint.
		b.Sysctls = append(b.Sysctls,
			plan.Sysctl{Key: "net/ipv4/conf/" + n.Bridge + "/proxy_arp", Value: "1"},
			plan.Sysctl{Key: "net/ipv4/neigh/" + n.Bridge + "/proxy_delay", Value: "0"})
	}
	return Network{Bridge: b, Tables: tablesNetwork(n)}
}

func (d bridge) Endpoint(n api.Network, k api.EndpointKey, addrs []netip.Prefix, mac net.HardwareAddr, ports []api.PortMapping) Endpoint {
	e := newEndpoint(n, k, addrs, mac, ports)
	ep := &e.Kernel
	ep.Master, ep.Hairpin = n.Bridge, true
	ep.Addrs = slices.Clone(ep.Addrs) // IPv6 ones may change length below; the caller's stay
	bridgeMAC := d.Network(n).Bridge.MAC
	for i, a := range addrs {
		s, ok := n.SubnetFor(a.Addr())
		if !ok {
			continue
		}
		def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if a.Addr().Is6() {
			def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			if bits := n.BlockSize6; n.CrossNode != "" && bits > a.Bits() {
				ep.Addrs[i] = netip.PrefixFrom(a.Addr(), bits)
				if !ep.Addrs[i].Masked().Contains(s.Gateway) {
					ep.Routes = append(ep.Routes, plan.Route{Dst: netip.PrefixFrom(s.Gateway, 128)}) // first: the default route needs it
				}
			}
		}
		ep.Routes = append(ep.Routes, plan.Route{Dst: def, GW: s.Gateway})
		ep.SandboxNeighbors = append(ep.SandboxNeighbors, plan.Neighbor{IP: s.Gateway, MAC: bridgeMAC})
		ep.NodeNeighbors = append(ep.NodeNeighbors, plan.Neighbor{IP: a.Addr(), MAC: ep.MAC})
	}
	// The bridge the port is in (traffic between its pods may skip conntrack; table
	// bridge podnet checks the source MAC of the port's frames).
	e.Tables.Endpoints[0].Bridge = n.Bridge
	return e
}
