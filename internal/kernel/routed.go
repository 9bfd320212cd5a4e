package kernel

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
)

// RoutedGatewayLink is the discard interface EnsureRoutedGateway routes 169.254.1.1
// to. Its name cannot be a bridge's ("pn-", "pnh") or a host veth's ("pnv").
const RoutedGatewayLink = "pnroutedgw"

var routedGateway4 = netip.MustParseAddr(api.RoutedGateway4)

// EnsureRoutedGateway makes the node able to answer the ARP requests of routed
// sandboxes for their gateway 169.254.1.1. A host veth answers them by proxy ARP, and
// the kernel proxies only for an address it routes through another interface: with a
// default route it does; in a node without one it stays silent and the sandboxes
// cannot resolve their gateway.
//
// So the node gets a route 169.254.1.1/32 scope link through RoutedGatewayLink, an
// ifb interface (up, no address, IPv6 off): like a dummy, it drops whatever is routed
// to it (a sandbox's own packets to 169.254.1.1) and has no ARP. The route is in the
// table "default" (253), which the standard rule "32767: from all lookup default"
// consults only when the main table has no route for the address: a default route or
// any other route of the node for 169.254.1.1 keeps precedence, no traffic is taken
// from it. Calling it again changes nothing. It fails when the node still has no route
// to 169.254.1.1 afterwards (e.g. the rule for table default was removed).
func (n *Node) EnsureRoutedGateway() error {
	link, err := n.ensureIfb(RoutedGatewayLink)
	if err != nil {
		return err
	}
	r := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: routedGateway4.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Scope:     netlink.SCOPE_LINK,
		Table:     unix.RT_TABLE_DEFAULT,
	}
	if err := n.h.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s dev %s table default: %w", routedGateway4, RoutedGatewayLink, err)
	}
	if _, err := n.h.RouteGet(routedGateway4.AsSlice()); err != nil {
		return fmt.Errorf("node has no route to %s despite %s in table default (is the rule \"lookup default\" missing?): %w", routedGateway4, RoutedGatewayLink, err)
	}
	return nil
}

// RemoveRoutedGateway removes what EnsureRoutedGateway created (the ifb interface, and
// its route with it). Success when it does not exist.
func (n *Node) RemoveRoutedGateway() error {
	return n.DeleteLink(RoutedGatewayLink)
}

// ensureIfb returns the ifb interface name of the node, up, creating it if needed. An
// ifb stands in for a dummy interface (not built into every kernel): it has no ARP,
// its carrier is on, and it drops what is routed to it. IPv6 is off on it (no
// link-local address, no MLD).
func (n *Node) ensureIfb(name string) (netlink.Link, error) {
	link, err := n.h.LinkByName(name)
	if err != nil {
		if !isNotFound(err) {
			return nil, fmt.Errorf("look up %s: %w", name, err)
		}
		if err := n.h.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: -1}}); err != nil {
			return nil, fmt.Errorf("create %s (ifb): %w", name, err)
		}
		// Absent when IPv6 is disabled in the node.
		_ = WriteSysctl(n.ns, "net/ipv6/conf/"+name+"/disable_ipv6", "1")
		if link, err = n.h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up %s: %w", name, err)
		}
	}
	if link.Type() != "ifb" {
		return nil, fmt.Errorf("%s: interface exists with type %s, want ifb", name, link.Type())
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := n.h.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("%s: set up: %w", name, err)
		}
	}
	return link, nil
}

// ServiceLink is the interface holding the node's service addresses (the DNS address).
const ServiceLink = "pnsvc0"

// EnsureLocalAddress makes addr (IPv4) a local address of the node, on ServiceLink:
// sandboxes of every network reach it through their gateway, the node answers itself.
// Calling it again changes nothing.
func (n *Node) EnsureLocalAddress(addr netip.Addr) error {
	link, err := n.ensureIfb(ServiceLink)
	if err != nil {
		return err
	}
	if err := n.ensureAddrs(link, []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())}, false); err != nil {
		return fmt.Errorf("%s: %w", ServiceLink, err)
	}
	return nil
}
