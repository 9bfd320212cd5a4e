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
//   - nftables: the network's subnets in the sets of table inet podnet (isolation,
//     masquerade, the bridge's own subnets), the endpoint's port, MAC and addresses in
//     the anti-spoofing sets of table bridge podnet.

import (
	"net"
	"net/netip"

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
		// Pods see the whole subnet on-link, other nodes' blocks included: the bridge
		// answers their ARP requests for addresses it routes elsewhere (the other nodes'
		// blocks), at once, and never for its own pods (routed through the bridge itself).
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
	bridgeMAC := d.Network(n).Bridge.MAC
	for _, a := range addrs {
		s, ok := n.SubnetFor(a.Addr())
		if !ok {
			continue
		}
		def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if a.Addr().Is6() {
			def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		ep.Routes = append(ep.Routes, plan.Route{Dst: def, GW: s.Gateway})
		ep.SandboxNeighbors = append(ep.SandboxNeighbors, plan.Neighbor{IP: s.Gateway, MAC: bridgeMAC})
		ep.NodeNeighbors = append(ep.NodeNeighbors, plan.Neighbor{IP: a.Addr(), MAC: ep.MAC})
	}
	// In table bridge podnet: frames from the port must carry the sandbox's MAC.
	e.Tables.Endpoints[0].Bridged = true
	e.Tables.Endpoints[0].MAC = ep.MAC
	return e
}
