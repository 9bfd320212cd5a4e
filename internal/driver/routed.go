package driver

// The routed driver (Calico style, pure L3). Kernel objects:
//   - node: no bridge; the node answers the sandboxes' IPv4 gateway 169.254.1.1 by
//     proxy ARP, which needs a route to that address through another interface (the
//     node's default route, else the one kernel.Applier.EnsureRoutedGateway adds);
//   - per endpoint: a veth pair; the host end (pnvXXXXXXXXXXX) has the MAC
//     ee:ee:ee:ee:ee:ee, no master and no address but the link-local the kernel
//     derives from that MAC (fe80::ecee:eeff:feee:eeee, the sandboxes' IPv6 gateway;
//     no DAD, EUI-64 generation), proxy_arp and forwarding on, and one node route per
//     sandbox address (POD/32 and POD/128 dev HOSTVETH scope link); the sandbox end
//     has the endpoint's addresses as /32 and /128, the route 169.254.1.1/32 scope
//     link, a default route via 169.254.1.1 and an IPv6 default route via
//     fe80::ecee:eeff:feee:eeee;
//   - nftables: the network's subnets in the sets of table inet podnet (isolation,
//     masquerade), the host veth and its addresses in the anti-spoofing sets of table
//     inet podnet (a routed sandbox's packets enter the node through its host veth).

import (
	"net"
	"net/netip"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/spec"
)

// Gateways and host MAC of routed networks, parsed.
var (
	routedGateway4 = netip.MustParseAddr(api.RoutedGateway4)
	routedGateway6 = netip.MustParseAddr(spec.RoutedGateway6)
	routedHostMAC  = mustMAC(api.RoutedHostMAC)
)

func mustMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return mac
}

type routed struct{}

func (routed) Network(n api.Network) Network {
	return Network{RoutedGateway: true, Tables: tablesNetwork(n)}
}

// Endpoint plans host prefixes in the sandbox, the fixed gateways, node routes and the
// host end's settings (see above). An address outside the network's subnets becomes a
// host prefix too, but gets no route (as with the bridge driver).
func (routed) Endpoint(n api.Network, k api.EndpointKey, addrs []netip.Prefix, mac net.HardwareAddr, ports []api.PortMapping) Endpoint {
	e := newEndpoint(n, k, addrs, mac, ports)
	ep := &e.Kernel
	ep.HostMAC = append(net.HardwareAddr(nil), routedHostMAC...)
	ep.Addrs = nil
	var has4, has6 bool
	for _, a := range addrs {
		host := netip.PrefixFrom(a.Addr(), a.Addr().BitLen())
		ep.Addrs = append(ep.Addrs, host)
		if _, ok := n.SubnetFor(a.Addr()); !ok {
			continue
		}
		ep.NodeRoutes = append(ep.NodeRoutes, plan.Route{Dst: host})
		ep.NodeNeighbors = append(ep.NodeNeighbors, plan.Neighbor{IP: a.Addr(), MAC: ep.MAC})
		switch {
		case a.Addr().Is4() && !has4:
			has4 = true
			ep.Routes = append(ep.Routes,
				plan.Route{Dst: netip.PrefixFrom(routedGateway4, 32)}, // first: the default route needs it
				plan.Route{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), GW: routedGateway4})
			ep.SandboxNeighbors = append(ep.SandboxNeighbors, plan.Neighbor{IP: routedGateway4, MAC: ep.HostMAC})
		case a.Addr().Is6() && !has6:
			has6 = true
			ep.Routes = append(ep.Routes, plan.Route{Dst: netip.PrefixFrom(netip.IPv6Unspecified(), 0), GW: routedGateway6})
			ep.SandboxNeighbors = append(ep.SandboxNeighbors, plan.Neighbor{IP: routedGateway6, MAC: ep.HostMAC})
		}
	}
	conf := func(family, key string) string { return "net/" + family + "/conf/" + ep.HostIf + "/" + key }
	if has4 {
		ep.HostSysctls = append(ep.HostSysctls,
			plan.Sysctl{Key: conf("ipv4", "proxy_arp"), Value: "1"},
			plan.Sysctl{Key: "net/ipv4/neigh/" + ep.HostIf + "/proxy_delay", Value: "0"}, // answer at once
			plan.Sysctl{Key: conf("ipv4", "forwarding"), Value: "1"},
			plan.Sysctl{Key: conf("ipv4", "route_localnet"), Value: "1"},
			plan.Sysctl{Key: conf("ipv4", "rp_filter"), Value: "1"}) // a sandbox sends only from its own addresses
	}
	if has6 {
		ep.HostSysctls = append(ep.HostSysctls,
			plan.Sysctl{Key: conf("ipv6", "proxy_ndp"), Value: "1"},
			plan.Sysctl{Key: conf("ipv6", "forwarding"), Value: "1"},
			// The link-local gateway is usable at once (no DAD) and is the EUI-64 of
			// the MAC whatever the node's default address generation mode.
			plan.Sysctl{Key: conf("ipv6", "accept_dad"), Value: "0"},
			plan.Sysctl{Key: conf("ipv6", "addr_gen_mode"), Value: "0"})
	}
	return e
}
