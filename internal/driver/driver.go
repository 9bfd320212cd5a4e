// Package driver decides what podnet's network drivers need on the node, as plain data
// that the appliers apply: for a network, its bridge or routed gateway and its subnets
// in the nftables sets; for an endpoint, one plan with its links, addresses, routes,
// neighbours and sysctls (plan.Endpoint, applied by internal/kernel), its nftables
// elements (nft.Delta: anti-spoofing, NAT port mappings) and its userland port proxies
// (portproxy.Mapping); for the whole node, the desired nftables state (Ruleset), a pure
// function of the store's contents. Nothing here touches the kernel or the store.
//
// One file per driver, each starting with the kernel objects it creates: bridge.go
// (Docker style, one Linux bridge per network) and routed.go (Calico style, pure L3).
// Published ports (ports.go) and services (services.go) are the same for both.
package driver

import (
	"crypto/sha256"
	"net"
	"net/netip"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/portproxy"
	"github.com/podnet/podnet/internal/spec"
)

// Network is what a network needs on the node.
type Network struct {
	// Bridge is the network's bridge; the zero Bridge when it has none (routed).
	Bridge plan.Bridge
	// RoutedGateway: the node answers the sandboxes' gateway address (routed), which
	// kernel.Applier.EnsureRoutedGateway sets up once for every routed network.
	RoutedGateway bool
	// Tables is the network's subnets in the nftables sets (isolation, masquerade).
	Tables nft.Network
}

// Endpoint is one endpoint's plan.
type Endpoint struct {
	// Kernel is its links, addresses, routes, neighbours and sysctls.
	Kernel plan.Endpoint
	// Tables is its anti-spoofing elements and, in port mode nat, its published ports.
	Tables nft.Delta
	// Proxies are its published ports in port mode proxy.
	Proxies []portproxy.Mapping
}

// Driver plans the networks of one driver and their endpoints.
type Driver interface {
	// Network plans a validated network (spec.Canonicalize).
	Network(n api.Network) Network
	// Endpoint plans an endpoint of n with its allocated addresses, the requested MAC
	// (nil: derived from the addresses) and published ports (checked by spec).
	Endpoint(n api.Network, k api.EndpointKey, addrs []netip.Prefix, mac net.HardwareAddr, ports []api.PortMapping) Endpoint
}

// For returns the driver of n (bridge unless n.Driver says routed).
func For(n api.Network) Driver {
	if n.Driver == api.DriverRouted {
		return routed{}
	}
	return bridge{}
}

// NetworkFor plans n with its driver.
func NetworkFor(n api.Network) Network { return For(n).Network(n) }

// EndpointFor plans a recorded endpoint of n again, as its ADD did (the record holds
// the MAC the plan chose).
func EndpointFor(n api.Network, ep api.Endpoint) Endpoint {
	mac, _ := api.ParseMAC(ep.MAC) // recorded by ADD from a valid plan
	return For(n).Endpoint(n, ep.EndpointKey, ep.IPs, mac, ep.Ports)
}

// NetworkTables is what a network contributes to the nftables sets on a node whose
// underlay interface is underlay: NetworkFor's, with the underlay as the way in of the
// network's pods on other nodes when they are routed over it (direct, bgp).
func NetworkTables(n api.Network, underlay string) nft.Network {
	t := tablesNetwork(n)
	if (n.CrossNode == api.CrossNodeDirect || n.CrossNode == api.CrossNodeBGP) && underlay != "" {
		t.Ingress = append(t.Ingress, underlay)
	}
	return t
}

// tablesNetwork is what a network contributes to the nftables sets: its subnets, and the
// network's VXLAN device as the way in of its pods on other nodes.
func tablesNetwork(n api.Network) nft.Network {
	tn := nft.Network{Name: n.Name, Bridge: n.Bridge, Masquerade: n.Masquerade}
	for _, s := range n.Subnets {
		tn.Subnets = append(tn.Subnets, s.Prefix)
	}
	if n.CrossNode == api.CrossNodeVXLAN {
		tn.Ingress = []string{spec.VXLANName(n.Name)} // the network's pods on other nodes
	}
	return tn
}

// newEndpoint is the part of an endpoint's plan both drivers share: names, MTU, MAC,
// addresses, the anti-spoofing elements and the published ports.
func newEndpoint(n api.Network, k api.EndpointKey, addrs []netip.Prefix, mac net.HardwareAddr, ports []api.PortMapping) Endpoint {
	if mac == nil {
		mac = MACFor(addrs)
	}
	e := Endpoint{Kernel: plan.Endpoint{
		HostIf:    spec.HostVethName(k),
		MTU:       n.MTU,
		SandboxIf: k.IfName,
		MAC:       mac,
		Addrs:     addrs,
	}}
	te := nft.Endpoint{HostIf: e.Kernel.HostIf, MAC: mac}
	for _, p := range addrs {
		te.Addrs = append(te.Addrs, p.Addr())
	}
	e.Tables.Endpoints = []nft.Endpoint{te}
	e.Tables.Ports, e.Proxies = publish(n, te.Addrs, ports)
	return e
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

// stableMAC is a locally administered unicast MAC derived from s.
func stableMAC(s string) net.HardwareAddr {
	h := sha256.Sum256([]byte(s))
	mac := net.HardwareAddr(h[:6])
	mac[0] = (mac[0] | 0x02) & 0xfe
	return mac
}

// Result renders an attachment as a CNI-shaped result. Interface 0 is the host end,
// interface 1 the sandbox end (netnsPath is reported as its sandbox). Each address
// comes with its subnet's gateway (routed: 169.254.1.1, fe80::ecee:eeff:feee:eeee).
func Result(n api.Network, ep plan.Endpoint, netnsPath string) api.Result {
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
