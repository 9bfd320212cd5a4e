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
}

// Route is a route inside the sandbox; a zero GW means on-link.
type Route struct {
	Dst netip.Prefix
	GW  netip.Addr
}

// Endpoint is everything one attachment needs in the kernel.
type Endpoint struct {
	HostIf    string
	Master    string // bridge the host end joins
	MTU       int
	SandboxIf string
	MAC       net.HardwareAddr
	Addrs     []netip.Prefix
	Routes    []Route
}

// BridgeFor plans the bridge of a network.
func BridgeFor(n api.Network) Bridge {
	b := Bridge{Name: n.Bridge, MTU: n.MTU, MAC: stableMAC("bridge/" + n.Name)}
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
		MTU:       n.MTU,
		SandboxIf: k.IfName,
		MAC:       mac,
		Addrs:     addrs,
	}
	if ep.MAC == nil {
		ep.MAC = MACFor(addrs)
	}
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

// stableMAC is a locally administered unicast MAC derived from s.
func stableMAC(s string) net.HardwareAddr {
	h := sha256.Sum256([]byte(s))
	mac := net.HardwareAddr(h[:6])
	mac[0] = (mac[0] | 0x02) & 0xfe
	return mac
}

// ResultFor renders an attachment as a CNI-shaped result. Interface 0 is the host end,
// interface 1 the sandbox end (netnsPath is reported as its sandbox).
func ResultFor(n api.Network, ep Endpoint, netnsPath string) api.Result {
	r := api.Result{
		Interfaces: []api.Interface{
			{Name: ep.HostIf, MTU: ep.MTU},
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
