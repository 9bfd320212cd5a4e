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
