// Package plan turns a network and an endpoint's allocation into the kernel objects the
// driver needs, as plain data. It is pure: the kernel package applies what it returns.
//
// Bridge driver, kernel objects:
//   - node: one Linux bridge per network (pn-NAME) with a fixed MAC and the gateway
//     address of every subnet, MTU of the network, up;
//   - per endpoint: a veth pair; the host end (pnvXXXXXXXXXXX) is a port of the bridge,
//     the sandbox end is created directly in the sandbox namespace under the CNI
//     interface name, with the endpoint's addresses, a MAC derived from its IPv4
//     address (or the one requested), and a default route per family via the gateway.
//
// Routed driver (Calico style, pure L3), kernel objects:
//   - node: no bridge; the node answers the sandboxes' IPv4 gateway 169.254.1.1 by
//     proxy ARP, which needs a route to that address through another interface (the
//     node's default route, else the one kernel.Node.EnsureRoutedGateway adds);
//   - per endpoint: a veth pair; the host end (pnvXXXXXXXXXXX) has the MAC
//     ee:ee:ee:ee:ee:ee, no master and no address but the link-local the kernel
//     derives from that MAC (fe80::ecee:eeff:feee:eeee, the sandboxes' IPv6 gateway;
//     no DAD, EUI-64 generation), proxy_arp and forwarding on, and one node route per
//     sandbox address (POD/32 and POD/128 dev HOSTVETH scope link); the sandbox end
//     has the endpoint's addresses as /32 and /128, the route 169.254.1.1/32 scope
//     link, a default route via 169.254.1.1 and an IPv6 default route via
//     fe80::ecee:eeff:feee:eeee.
package plan

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
)

// Bridge is the node-side object of a bridge network.
type Bridge struct {
	Name  string
	MTU   int
	MAC   net.HardwareAddr
	Addrs []netip.Prefix // gateway/prefix length, one per subnet
	// Sysctls are written when the bridge is created; IPv6 keys are skipped on a node
	// without IPv6.
	Sysctls []Sysctl
}

// Route is a route through one interface (the sandbox end, or the host end for node
// routes); a zero GW means on-link (scope link).
type Route struct {
	Dst netip.Prefix
	GW  netip.Addr
}

// Sysctl is one /proc/sys value; Key is the path below /proc/sys, with slashes.
type Sysctl struct {
	Key   string
	Value string
}

// Endpoint is everything one attachment needs in the kernel.
type Endpoint struct {
	HostIf string
	Master string // bridge the host end joins; "" for none (routed)
	// HostMAC is the hardware address of the host end; nil lets the kernel choose.
	HostMAC   net.HardwareAddr
	MTU       int
	SandboxIf string
	MAC       net.HardwareAddr
	Addrs     []netip.Prefix
	Routes    []Route
	// NodeRoutes are routes of the node through the host end, added once it is up.
	NodeRoutes []Route
	// HostSysctls are written in the node namespace before the host end comes up.
	HostSysctls []Sysctl
	// Hairpin lets the bridge send a frame back out of the port it came in by: a
	// sandbox reaching its own published port gets its DNATed packet back that way.
	Hairpin bool
	// SandboxNeighbors (the gateways, in the sandbox) and NodeNeighbors (the sandbox's
	// addresses, in the node on the bridge or the host veth) are neighbour entries
	// written in advance, state stale: the first packets need no address resolution.
	// A new IPv6 address joins its solicited-node group asynchronously, and a
	// solicitation that comes first is lost (a 1 s stall of the first connection).
	SandboxNeighbors []Neighbor
	NodeNeighbors    []Neighbor
}

// Neighbor is a neighbour entry to write in advance.
type Neighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

// Gateways and host MAC of routed networks, parsed.
var (
	routedGateway4 = netip.MustParseAddr(api.RoutedGateway4)
	routedGateway6 = netip.MustParseAddr(spec.RoutedGateway6)
	routedHostMAC  = mustMAC(api.RoutedHostMAC)
)

// BridgeFor plans the bridge of a network: the zero Bridge for a network without one
// (routed).
func BridgeFor(n api.Network) Bridge {
	if n.Bridge == "" {
		return Bridge{}
	}
	b := Bridge{Name: n.Bridge, MTU: n.MTU, MAC: stableMAC("bridge/" + n.Name), Sysctls: []Sysctl{
		// Published ports answer on 127.0.0.1: DNATed packets with a loopback source
		// may leave through the bridge.
		{"net/ipv4/conf/" + n.Bridge + "/route_localnet", "1"},
		// The gateway must answer at once (no DAD), and the bridge takes no RAs.
		{"net/ipv6/conf/" + n.Bridge + "/accept_dad", "0"},
		{"net/ipv6/conf/" + n.Bridge + "/accept_ra", "0"},
		{"net/ipv6/conf/" + n.Bridge + "/autoconf", "0"},
	}}
	for _, s := range n.Subnets {
		b.Addrs = append(b.Addrs, netip.PrefixFrom(s.Gateway, s.Prefix.Bits()))
	}
	return b
}

// EndpointFor plans one endpoint. mac may be nil (derived from the addresses).
func EndpointFor(n api.Network, k api.EndpointKey, addrs []netip.Prefix, mac net.HardwareAddr) Endpoint {
	ep := Endpoint{
		HostIf:    spec.HostVethName(k),
		Master:    n.Bridge,
		Hairpin:   n.Bridge != "",
		MTU:       n.MTU,
		SandboxIf: k.IfName,
		MAC:       mac,
		Addrs:     addrs,
	}
	if ep.MAC == nil {
		ep.MAC = MACFor(addrs)
	}
	if n.Driver == api.DriverRouted {
		return routedEndpoint(n, ep)
	}
	bridgeMAC := BridgeFor(n).MAC
	for _, a := range addrs {
		s, ok := n.SubnetFor(a.Addr())
		if !ok {
			continue
		}
		def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if a.Addr().Is6() {
			def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		ep.Routes = append(ep.Routes, Route{Dst: def, GW: s.Gateway})
		ep.SandboxNeighbors = append(ep.SandboxNeighbors, Neighbor{IP: s.Gateway, MAC: bridgeMAC})
		ep.NodeNeighbors = append(ep.NodeNeighbors, Neighbor{IP: a.Addr(), MAC: ep.MAC})
	}
	return ep
}

// routedEndpoint completes a routed endpoint: host prefixes in the sandbox, the fixed
// gateways, node routes and the host end's settings (see the package comment). An
// address outside the network's subnets becomes a host prefix too, but gets no route
// (as with the bridge driver).
func routedEndpoint(n api.Network, ep Endpoint) Endpoint {
	ep.Master = ""
	ep.HostMAC = append(net.HardwareAddr(nil), routedHostMAC...)
	addrs := ep.Addrs
	ep.Addrs = nil
	var has4, has6 bool
	for _, a := range addrs {
		host := netip.PrefixFrom(a.Addr(), a.Addr().BitLen())
		ep.Addrs = append(ep.Addrs, host)
		if _, ok := n.SubnetFor(a.Addr()); !ok {
			continue
		}
		ep.NodeRoutes = append(ep.NodeRoutes, Route{Dst: host})
		ep.NodeNeighbors = append(ep.NodeNeighbors, Neighbor{IP: a.Addr(), MAC: ep.MAC})
		switch {
		case a.Addr().Is4() && !has4:
			has4 = true
			ep.Routes = append(ep.Routes,
				Route{Dst: netip.PrefixFrom(routedGateway4, 32)}, // first: the default route needs it
				Route{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), GW: routedGateway4})
			ep.SandboxNeighbors = append(ep.SandboxNeighbors, Neighbor{IP: routedGateway4, MAC: ep.HostMAC})
		case a.Addr().Is6() && !has6:
			has6 = true
			ep.Routes = append(ep.Routes, Route{Dst: netip.PrefixFrom(netip.IPv6Unspecified(), 0), GW: routedGateway6})
			ep.SandboxNeighbors = append(ep.SandboxNeighbors, Neighbor{IP: routedGateway6, MAC: ep.HostMAC})
		}
	}
	conf := func(family, key string) string { return "net/" + family + "/conf/" + ep.HostIf + "/" + key }
	if has4 {
		ep.HostSysctls = append(ep.HostSysctls,
			Sysctl{conf("ipv4", "proxy_arp"), "1"},
			Sysctl{"net/ipv4/neigh/" + ep.HostIf + "/proxy_delay", "0"}, // answer at once
			Sysctl{conf("ipv4", "forwarding"), "1"},
			Sysctl{conf("ipv4", "route_localnet"), "1"},
			Sysctl{conf("ipv4", "rp_filter"), "1"}) // a sandbox sends only from its own addresses
	}
	if has6 {
		ep.HostSysctls = append(ep.HostSysctls,
			Sysctl{conf("ipv6", "proxy_ndp"), "1"},
			Sysctl{conf("ipv6", "forwarding"), "1"},
			// The link-local gateway is usable at once (no DAD) and is the EUI-64 of
			// the MAC whatever the node's default address generation mode.
			Sysctl{conf("ipv6", "accept_dad"), "0"},
			Sysctl{conf("ipv6", "addr_gen_mode"), "0"})
	}
	return ep
}

// MACFor derives a locally administered unicast MAC from the endpoint's first IPv4
// address (0a:58:a.b.c.d, as several CNIs do), so that an address keeps one MAC; for
// IPv6-only endpoints from the low 32 bits of the IPv6 address.
func MACFor(addrs []netip.Prefix) net.HardwareAddr {
	if len(addrs) == 0 || !addrs[0].IsValid() {
		return nil
	}
	pick := addrs[0].Addr()
	for _, a := range addrs {
		if a.Addr().Is4() {
			pick = a.Addr()
			break
		}
	}
	b := pick.AsSlice()
	tail := b[len(b)-4:]
	return net.HardwareAddr{0x0a, 0x58, tail[0], tail[1], tail[2], tail[3]}
}

func mustMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return mac
}

// stableMAC is a locally administered unicast MAC derived from s.
func stableMAC(s string) net.HardwareAddr {
	h := sha256.Sum256([]byte(s))
	mac := net.HardwareAddr(h[:6])
	mac[0] = (mac[0] | 0x02) & 0xfe
	return mac
}

// ResultFor renders an attachment as a CNI-shaped result. Interface 0 is the host end,
// interface 1 the sandbox end (netnsPath is reported as its sandbox). Each address
// comes with its subnet's gateway (routed: 169.254.1.1, fe80::ecee:eeff:feee:eeee).
func ResultFor(n api.Network, ep Endpoint, netnsPath string) api.Result {
	r := api.Result{
		Interfaces: []api.Interface{
			{Name: ep.HostIf, MAC: ep.HostMAC.String(), MTU: ep.MTU},
			{Name: ep.SandboxIf, MAC: ep.MAC.String(), MTU: ep.MTU, Sandbox: netnsPath},
		},
	}
	for _, a := range ep.Addrs {
		ipc := api.IPConfig{Address: a, Interface: 1}
		if s, ok := n.SubnetFor(a.Addr()); ok {
			ipc.Gateway = s.Gateway
		}
		r.IPs = append(r.IPs, ipc)
	}
	for _, rt := range ep.Routes {
		r.Routes = append(r.Routes, api.Route{Dst: rt.Dst, GW: rt.GW})
	}
	return r
}

// ParseMAC parses a requested MAC; it must be unicast.
func ParseMAC(s string) (net.HardwareAddr, error) {
	if s == "" {
		return nil, nil
	}
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("mac %q: not a 6-byte hardware address", s)
	}
	if mac[0]&1 == 1 {
		return nil, fmt.Errorf("mac %q: multicast address cannot be an interface address", s)
	}
	if [6]byte(mac) == [6]byte{} {
		return nil, fmt.Errorf("mac %q: the all-zero address cannot be an interface address", s)
	}
	return mac, nil
}
