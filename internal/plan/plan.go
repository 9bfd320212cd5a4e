// Package plan is the data of kernel plans: the bridge of a network and the links,
// addresses, routes, neighbours and sysctls of an endpoint, as internal/driver decides
// them and internal/kernel applies them. It holds no decisions.
package plan

import (
	"net"
	"net/netip"
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

// Overlay is the cross-node data path of one network on one node: the routes to the
// address blocks other nodes hold and, for vxlan, the network's VXLAN device with one
// static FDB and neighbour entry per remote node (no learning, no flooding, no ARP
// across the tunnel).
type Overlay struct {
	// Network names the network, Subnets bound what the overlay owns: a route of
	// podnet's cross-node protocol inside them that Routes does not list is removed.
	Network string
	Subnets []netip.Prefix
	// Device is the network's VXLAN device; its zero value (direct routing) means none.
	Device VXLAN
	// Peers are the other live nodes' VTEPs on Device (vxlan only).
	Peers []VTEP
	// Routes lead to other nodes' blocks: via the node's IP, on Device (onlink) for
	// vxlan, on the underlay for direct routing.
	Routes []OverlayRoute
}

// VXLAN is a network's VXLAN device on one node.
type VXLAN struct {
	Name string
	VNI  int
	Port int
	// Local is the node's underlay address, Dev its underlay interface.
	Local netip.Addr
	Dev   string
	MTU   int
	// MAC is the device's address, derived from node and network: remote nodes compute
	// it the same way.
	MAC net.HardwareAddr
	// Addrs are the node's tunnel addresses (a host prefix per family, from the node's
	// own blocks): the source of what the node sends through the tunnel, itself or
	// masqueraded, so that the reply comes back through the tunnel too.
	Addrs []netip.Prefix
}

// VTEP is a remote node's end of a network's tunnel: its underlay address and the MAC
// of its VXLAN device.
type VTEP struct {
	NodeIP netip.Addr
	MAC    net.HardwareAddr
}

// OverlayRoute is a route to a remote block through a remote node.
type OverlayRoute struct {
	Dst netip.Prefix
	Via netip.Addr // the node's underlay address (IPv4 or IPv6, whatever Dst's family)
	Dev string
	// Onlink: Via is reachable on Dev without a route of its own (vxlan).
	Onlink bool
}
