// Package spec turns a user's network definition (api.NetworkSpec) into a validated,
// canonical api.Network, and checks it against the other networks and the node's
// routes. It is pure: no kernel, no store.
package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/podnet/podnet/api"
)

// RoutedGateway6 is the IPv6 gateway every sandbox of a routed network uses: the
// link-local address the kernel gives each host veth from its MAC api.RoutedHostMAC
// (EUI-64 of ee:ee:ee:ee:ee:ee). api.RoutedGateway4 is its IPv4 counterpart.
const RoutedGateway6 = "fe80::ecee:eeff:feee:eeee"

// Gateways of routed networks, parsed.
var (
	routedGateway4 = netip.MustParseAddr(api.RoutedGateway4)
	routedGateway6 = netip.MustParseAddr(RoutedGateway6)
)

// drivers are the known network drivers, in the order error messages list them.
var drivers = []string{api.DriverBridge, api.DriverRouted}

// invalid returns the *api.ValidationError of field of network: `network "blue":
// subnet "10.0.0.0/33": not a CIDR prefix`.
func invalid(network, field, value, format string, args ...any) error {
	return api.Invalid(fmt.Sprintf("network %q", network), field, value, format, args...)
}

// ValidateName checks a network name (api.CheckNetworkName).
func ValidateName(name string) error {
	if err := api.CheckNetworkName(name); err != nil {
		return invalid(name, "name", name, "%v", err)
	}
	return nil
}

// Canonicalize validates s and returns the network it defines (Created left zero).
// Errors are *api.ValidationError naming the network, the field and the value; each
// field on its own is judged by the validators of package api that the CNI plugin
// shares (api.ParseSubnet, api.ParseGateway, api.CheckMTU).
func Canonicalize(s api.NetworkSpec) (api.Network, error) {
	if err := ValidateName(s.Name); err != nil {
		return api.Network{}, err
	}
	n := api.Network{Name: s.Name, Driver: s.Driver, MTU: s.MTU, Masquerade: !s.NoMasquerade, PortMode: s.PortMode}
	switch n.PortMode {
	case "":
		n.PortMode = api.PortModeNAT
	case api.PortModeNAT, api.PortModeProxy:
	default:
		return api.Network{}, invalid(s.Name, "portMode", s.PortMode, "unknown port mode (known: %s, %s)", api.PortModeNAT, api.PortModeProxy)
	}
	if n.Driver == "" {
		n.Driver = api.DriverBridge
	}
	if !slices.Contains(drivers, n.Driver) {
		return api.Network{}, invalid(s.Name, "driver", s.Driver, "unknown driver (known: %s)", strings.Join(drivers, ", "))
	}
	routed := n.Driver == api.DriverRouted
	if len(s.Subnets) == 0 {
		return api.Network{}, invalid(s.Name, "subnets", "", "at least one subnet is required")
	}
	var has4, has6 bool
	for _, str := range s.Subnets {
		p, err := api.ParseSubnet(str)
		if err != nil {
			return api.Network{}, invalid(s.Name, "subnet", str, "%v", err)
		}
		if p.Addr().Is4() {
			if has4 {
				return api.Network{}, invalid(s.Name, "subnet", str, "only one IPv4 subnet per network")
			}
			has4 = true
		} else {
			if has6 {
				return api.Network{}, invalid(s.Name, "subnet", str, "only one IPv6 subnet per network")
			}
			has6 = true
		}
		gw := p.Addr().Next()
		switch {
		case routed && p.Addr().Is4():
			gw = routedGateway4
		case routed:
			gw = routedGateway6
		}
		n.Subnets = append(n.Subnets, api.Subnet{Prefix: p, Gateway: gw})
	}
	// Canonical order, IPv4 first, so that two definitions of one network compare equal.
	slices.SortStableFunc(n.Subnets, func(a, b api.Subnet) int { return a.Prefix.Addr().BitLen() - b.Prefix.Addr().BitLen() })
	if routed && len(s.Gateways) > 0 {
		return api.Network{}, invalid(s.Name, "gateway", s.Gateways[0], "not allowed for a routed network: its sandboxes use %s (IPv4) and %s (IPv6), answered by the node", api.RoutedGateway4, RoutedGateway6)
	}
	gatewaySet := map[int]bool{}
	for _, str := range s.Gateways {
		g, err := api.ParseGateway(str)
		if err != nil {
			return api.Network{}, invalid(s.Name, "gateway", str, "%v", err)
		}
		idx := -1
		for i, sub := range n.Subnets {
			if sub.Prefix.Contains(g) {
				idx = i
			}
		}
		if idx < 0 {
			return api.Network{}, invalid(s.Name, "gateway", str, "not inside any subnet of the network")
		}
		if g == n.Subnets[idx].Prefix.Addr() || g.Is4() && g == LastAddr(n.Subnets[idx].Prefix) {
			return api.Network{}, invalid(s.Name, "gateway", str, "is the network or broadcast address of %s", n.Subnets[idx].Prefix)
		}
		if gatewaySet[idx] {
			return api.Network{}, invalid(s.Name, "gateway", str, "only one gateway per subnet")
		}
		gatewaySet[idx] = true
		n.Subnets[idx].Gateway = g
	}
	if err := api.CheckMTU(s.MTU, has6); err != nil {
		return api.Network{}, invalid(s.Name, "mtu", fmt.Sprint(s.MTU), "%v", err)
	}
	if n.MTU == 0 {
		n.MTU = api.DefaultMTU
	}
	if n.Driver == api.DriverBridge {
		n.Bridge = BridgeName(n.Name)
	}
	if err := crossNode(s, &n); err != nil {
		return api.Network{}, err
	}
	return n, nil
}

// crossNode checks and completes the cross-node settings of n.
func crossNode(s api.NetworkSpec, n *api.Network) error {
	n.CrossNode = s.CrossNode
	switch s.CrossNode {
	case "":
		for _, f := range []struct {
			name string
			v    int
		}{{"blockSize", s.BlockSize}, {"vni", s.VNI}, {"vxlanPort", s.VXLANPort}} {
			if f.v != 0 {
				return invalid(s.Name, f.name, fmt.Sprint(f.v), "only for a cross-node network (crossNode vxlan, direct or bgp)")
			}
		}
		return nil
	case api.CrossNodeVXLAN, api.CrossNodeDirect, api.CrossNodeBGP:
	default:
		return invalid(s.Name, "crossNode", s.CrossNode, "unknown cross-node mode (known: %s, %s, %s)", api.CrossNodeVXLAN, api.CrossNodeDirect, api.CrossNodeBGP)
	}
	bs := s.BlockSize
	if bs == 0 {
		bs = api.DefaultBlockSize
	}
	for _, sub := range n.Subnets {
		bits := bs
		if sub.Prefix.Addr().Is6() {
			bits = 128 - (32 - bs) // as many addresses as the IPv4 block
		}
		if bs < 1 || bits < sub.Prefix.Bits() || bits > sub.Prefix.Addr().BitLen()-2 {
			return invalid(s.Name, "blockSize", fmt.Sprint(bs), "a block of /%d does not fit in subnet %s (want a prefix length from %d to %d)",
				bits, sub.Prefix, sub.Prefix.Bits(), sub.Prefix.Addr().BitLen()-2)
		}
		if sub.Prefix.Addr().Is4() {
			n.BlockSize4 = bits
		} else {
			n.BlockSize6 = bits
		}
	}
	if s.CrossNode != api.CrossNodeVXLAN {
		if s.VNI != 0 || s.VXLANPort != 0 {
			return invalid(s.Name, "crossNode", s.CrossNode, "vni and vxlanPort are for crossNode vxlan")
		}
		return nil
	}
	n.VNI, n.VXLANPort = s.VNI, s.VXLANPort
	if n.VNI == 0 {
		n.VNI = DefaultVNI(n.Name)
	}
	if n.VNI < 1 || n.VNI > 1<<24-1 {
		return invalid(s.Name, "vni", fmt.Sprint(s.VNI), "want 1 to %d", 1<<24-1)
	}
	if n.VXLANPort == 0 {
		n.VXLANPort = api.DefaultVXLANPort
	}
	if n.VXLANPort < 1 || n.VXLANPort > 65535 {
		return invalid(s.Name, "vxlanPort", fmt.Sprint(s.VXLANPort), "want a UDP port, 1 to 65535")
	}
	return nil
}

// DefaultVNI is the VNI of a vxlan network that names none: derived from its name
// (4096 and up; the agent refuses a network whose VNI another network has).
func DefaultVNI(network string) int {
	h := sha256.Sum256([]byte(network))
	return 4096 + int(uint32(h[0])<<16|uint32(h[1])<<8|uint32(h[2]))%(1<<24-4097)
}

// VXLANName is the VXLAN device of a network on every node. 14 bytes.
func VXLANName(network string) string {
	return "pnx" + hash(network)[:11]
}

// Agrees reports whether an existing network is what the spec defines (CNI configs
// that carry a definition must not contradict the network they attach to). The error
// names the first field that differs.
func Agrees(existing api.Network, s api.NetworkSpec) error {
	want, err := Canonicalize(s)
	if err != nil {
		return err
	}
	switch {
	case want.Driver != existing.Driver:
		return invalid(s.Name, "driver", want.Driver, "network exists with driver %q", existing.Driver)
	case want.MTU != existing.MTU && s.MTU != 0:
		return invalid(s.Name, "mtu", fmt.Sprint(want.MTU), "network exists with mtu %d", existing.MTU)
	case want.Masquerade != existing.Masquerade:
		return invalid(s.Name, "noMasquerade", fmt.Sprint(!want.Masquerade), "network exists with masquerade=%v", existing.Masquerade)
	case s.CrossNode != "" && want.CrossNode != existing.CrossNode:
		return invalid(s.Name, "crossNode", want.CrossNode, "network exists with crossNode %q", existing.CrossNode)
	case len(want.Subnets) != len(existing.Subnets):
		return invalid(s.Name, "subnets", strings.Join(s.Subnets, ","), "network exists with subnets %s", subnetList(existing))
	}
	for i := range want.Subnets {
		if want.Subnets[i].Prefix != existing.Subnets[i].Prefix {
			return invalid(s.Name, "subnets", strings.Join(s.Subnets, ","), "network exists with subnets %s", subnetList(existing))
		}
		if len(s.Gateways) > 0 && want.Subnets[i].Gateway != existing.Subnets[i].Gateway {
			return invalid(s.Name, "gateway", want.Subnets[i].Gateway.String(), "network exists with gateway %s", existing.Subnets[i].Gateway)
		}
	}
	return nil
}

func subnetList(n api.Network) string {
	var parts []string
	for _, s := range n.Subnets {
		parts = append(parts, s.Prefix.String())
	}
	return strings.Join(parts, ",")
}

// Tunnel is an overlay device of the node (vxlan, geneve, ipip, gre), as the graph
// draws it.
type Tunnel struct {
	Name string
	Kind string // as netlink names it: vxlan, geneve, ipip, gre, gretap...
	// ID is the VNI (vxlan, geneve); 0 for the others.
	ID   int
	Port int // UDP destination port (vxlan, geneve)
	// Local is the underlay source address, Dev the underlay device ("" when unbound),
	// Remote the fixed far end or vxlan group (invalid when none).
	Local  netip.Addr
	Remote netip.Addr
	Dev    string
	MTU    int
	// Learning: a vxlan device that learns FDB entries from what it receives.
	Learning bool
}

// NodeRoute is a route of the node, as far as overlap checks need it.
type NodeRoute struct {
	Dst netip.Prefix
	Dev string
}

// CheckOverlap refuses a network whose subnets overlap another podnet network or a
// route of the node (other than the default route and routes through podnet's own
// bridges, named in own; an empty name in own, the Bridge of a routed network, matches
// nothing).
func CheckOverlap(n api.Network, others []api.Network, routes []NodeRoute, own map[string]bool) error {
	for _, s := range n.Subnets {
		for _, o := range others {
			if o.Name == n.Name {
				continue
			}
			for _, os := range o.Subnets {
				if os.Prefix.Overlaps(s.Prefix) {
					return invalid(n.Name, "subnet", s.Prefix.String(), "overlaps subnet %s of podnet network %q", os.Prefix, o.Name)
				}
			}
		}
		for _, r := range routes {
			if r.Dst.Bits() == 0 || r.Dev != "" && own[r.Dev] || r.Dst.Addr().IsLinkLocalUnicast() || r.Dst.Addr().IsMulticast() {
				continue
			}
			if r.Dst.Overlaps(s.Prefix) {
				return invalid(n.Name, "subnet", s.Prefix.String(), "overlaps node route %s dev %s", r.Dst, r.Dev)
			}
		}
	}
	return nil
}

// BridgeName is the host bridge of a network: "pn-" + name when it fits in 15 bytes,
// else "pnh" + a hash of the name (the two forms cannot collide).
func BridgeName(network string) string {
	if name := "pn-" + network; len(name) <= 15 {
		return name
	}
	return "pnh" + hash(network)[:12]
}

// IsPodnetLink reports whether an interface name is one podnet gives: a bridge
// (BridgeName) or a host veth (HostVethName).
func IsPodnetLink(name string) bool {
	return strings.HasPrefix(name, "pn-") || strings.HasPrefix(name, "pnh") || strings.HasPrefix(name, VethPrefix) || strings.HasPrefix(name, "pnx")
}

// HostVethName is the host-side veth of an endpoint: derived from the endpoint key so
// that a restarted agent finds it again. 14 bytes.
func HostVethName(k api.EndpointKey) string {
	return VethPrefix + hash(k.String())[:11]
}

// VethPrefix starts the name of every host veth podnet creates.
const VethPrefix = "pnv"

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// LastAddr is the last address of p (the IPv4 broadcast address).
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
