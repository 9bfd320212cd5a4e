package lab

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
)

// Gateways of the sandboxes that Routed connects: the IPv4 one is nobody's address
// (proxy ARP answers it), the IPv6 one an address of the node's end.
var (
	routedGateway4 = netip.MustParseAddr(api.RoutedGateway4)
	routedGateway6 = netip.MustParsePrefix("fe80::1/64")
)

// upTimeout bounds the wait for a new link to be operationally up.
const upTimeout = 5 * time.Second

// Bridge creates the bridge name in the node with addrs and sets it up. Like every
// interface of the lab, it does no IPv6 duplicate address detection: its addresses and
// its link-local one are usable at once.
func (l *Lab) Bridge(name string, addrs ...netip.Prefix) error {
	h, err := netlink.NewHandleAt(l.Node)
	if err != nil {
		return err
	}
	defer h.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		return fmt.Errorf("create bridge %q: %w", name, err)
	}
	br, err := linkByName(h, name)
	if err != nil {
		return err
	}
	return configure(l.Node, h, br, addrs)
}

// Veth is a veth pair between the node and a sandbox, as Plug creates it.
type Veth struct {
	// HostIf names the node's end. The sandbox's end is always eth0.
	HostIf string
	// HostAddrs are the addresses of the node's end.
	HostAddrs []netip.Prefix
	// Bridge, if set, is a bridge of the node (see Bridge) that the node's end joins.
	Bridge string
	// Hairpin lets the bridge send a frame back out of the node's end it came in by
	// (a sandbox that reaches itself through a DNAT in the node). Needs Bridge.
	Hairpin bool
	// MAC is the hardware address of eth0; nil lets the kernel choose one.
	MAC net.HardwareAddr
	// Addrs are the addresses of eth0.
	Addrs []netip.Prefix
	// Gateways get one default route each in the sandbox, through eth0.
	Gateways []netip.Addr
	// MTU of both ends (0: the kernel's default, 1500).
	MTU int
}

// Plug connects sandbox to the node by the veth pair v: it sets up lo in the sandbox and
// both ends with their addresses (without IPv6 duplicate address detection), then adds
// the sandbox's default routes. It returns the MAC of eth0 once both ends are
// operationally up (until then the kernel drops what they send). After an error the
// pair may exist in part; Close removes it with the rest.
func (l *Lab) Plug(sandbox netns.NsHandle, v Veth) (net.HardwareAddr, error) {
	if v.Hairpin && v.Bridge == "" {
		return nil, fmt.Errorf("veth %q: hairpin without a bridge", v.HostIf)
	}
	nh, err := netlink.NewHandleAt(l.Node)
	if err != nil {
		return nil, err
	}
	defer nh.Close()
	sh, err := netlink.NewHandleAt(sandbox)
	if err != nil {
		return nil, err
	}
	defer sh.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = v.HostIf
	if v.MTU != 0 {
		attrs.MTU = v.MTU
	}
	if v.Bridge != "" {
		br, err := nh.LinkByName(v.Bridge)
		if err != nil {
			return nil, fmt.Errorf("veth %q: bridge %q: %w", v.HostIf, v.Bridge, err)
		}
		attrs.MasterIndex = br.Attrs().Index
	}
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerHardwareAddr: v.MAC, PeerNamespace: netlink.NsFd(int(sandbox)), PeerTxQLen: -1}
	if err := nh.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth %q: %w", v.HostIf, err)
	}
	host, err := linkByName(nh, v.HostIf)
	if err != nil {
		return nil, err
	}
	if v.Hairpin {
		if err := nh.LinkSetHairpin(host, true); err != nil {
			return nil, fmt.Errorf("hairpin on %q: %w", v.HostIf, err)
		}
	}
	eth0, err := linkByName(sh, "eth0")
	if err != nil {
		return nil, err
	}
	if err := configure(l.Node, nh, host, v.HostAddrs); err != nil {
		return nil, err
	}
	if err := configure(sandbox, sh, eth0, v.Addrs); err != nil {
		return nil, err
	}
	lo, err := linkByName(sh, "lo")
	if err != nil {
		return nil, err
	}
	if err := linkUp(sh, lo); err != nil {
		return nil, err
	}
	for _, gw := range v.Gateways {
		if err := addRoute(sh, netip.PrefixFrom(unspecified(gw), 0), eth0, gw); err != nil {
			return nil, err
		}
	}
	if err := waitUp(nh, v.HostIf); err != nil {
		return nil, err
	}
	if err := waitUp(sh, "eth0"); err != nil {
		return nil, err
	}
	return eth0.Attrs().HardwareAddr, nil
}

// Routed connects sandbox to the node by a veth pair hostIf <-> eth0, in outline the
// way podnet's routed driver does (Calico style, no bridge): eth0 holds each of addrs as
// a host prefix (/32, /128) and routes everything through 169.254.1.1, which proxy ARP
// on hostIf answers at once, and through fe80::1, an address of hostIf; the node routes
// each of addrs to hostIf. The node needs forwarding on to route between sandboxes.
// Unlike the driver, Routed sets nothing more: hostIf keeps the kernel's MAC, and has no
// proxy NDP and no reverse path filter. It returns the MAC of eth0.
func (l *Lab) Routed(sandbox netns.NsHandle, hostIf string, addrs ...netip.Addr) (net.HardwareAddr, error) {
	var hosts []netip.Prefix
	for _, a := range addrs {
		hosts = append(hosts, netip.PrefixFrom(a, a.BitLen()))
	}
	mac, err := l.Plug(sandbox, Veth{HostIf: hostIf, HostAddrs: []netip.Prefix{routedGateway6}, Addrs: hosts})
	if err != nil {
		return nil, err
	}
	for _, sc := range [][2]string{
		{"net/ipv4/conf/" + hostIf + "/proxy_arp", "1"},
		{"net/ipv4/neigh/" + hostIf + "/proxy_delay", "0"},
	} {
		if err := kernel.WriteSysctl(l.Node, sc[0], sc[1]); err != nil {
			return nil, err
		}
	}
	var has4, has6 bool
	for _, p := range hosts {
		if err := AddRoute(l.Node, p, hostIf, netip.Addr{}); err != nil {
			return nil, err
		}
		has4, has6 = has4 || p.Addr().Is4(), has6 || p.Addr().Is6()
	}
	var routes []route
	if has4 {
		routes = append(routes,
			route{netip.PrefixFrom(routedGateway4, 32), netip.Addr{}}, // first: the default route needs it
			route{netip.PrefixFrom(netip.IPv4Unspecified(), 0), routedGateway4})
	}
	if has6 {
		routes = append(routes, route{netip.PrefixFrom(netip.IPv6Unspecified(), 0), routedGateway6.Addr()})
	}
	for _, r := range routes {
		if err := AddRoute(sandbox, r.dst, "eth0", r.gw); err != nil {
			return nil, err
		}
	}
	return mac, nil
}

// route is a route to dst, via gw if valid, else on-link.
type route struct {
	dst netip.Prefix
	gw  netip.Addr
}

// AddAddrs adds addrs to the interface ifname of ns (IPv6 ones without duplicate address
// detection).
func AddAddrs(ns netns.NsHandle, ifname string, addrs ...netip.Prefix) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := linkByName(h, ifname)
	if err != nil {
		return err
	}
	return addAddrs(h, link, addrs)
}

// AddRoute adds the route to dst through the interface dev of ns: via gw if it is valid,
// else on-link (scope link, as "ip route add DST dev DEV" does). A default route has
// dst 0.0.0.0/0 or ::/0.
func AddRoute(ns netns.NsHandle, dst netip.Prefix, dev string, gw netip.Addr) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := linkByName(h, dev)
	if err != nil {
		return err
	}
	return addRoute(h, dst, link, gw)
}

// Loopback sets lo up in ns and adds addrs to it (sockets can then bind to them).
func Loopback(ns netns.NsHandle, addrs ...netip.Prefix) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := linkByName(h, "lo")
	if err != nil {
		return err
	}
	if err := addAddrs(h, lo, addrs); err != nil {
		return err
	}
	return linkUp(h, lo)
}

// configure turns off duplicate address detection on link (before it is up: its
// link-local address would otherwise stay tentative for a second), adds addrs and sets
// it up.
func configure(ns netns.NsHandle, h *netlink.Handle, link netlink.Link, addrs []netip.Prefix) error {
	name := link.Attrs().Name
	if err := kernel.WriteSysctl(ns, "net/ipv6/conf/"+name+"/accept_dad", "0"); err != nil {
		return err
	}
	if err := addAddrs(h, link, addrs); err != nil {
		return err
	}
	return linkUp(h, link)
}

func addAddrs(h *netlink.Handle, link netlink.Link, addrs []netip.Prefix) error {
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: ipnet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil {
			return fmt.Errorf("add %s to %q: %w", p, link.Attrs().Name, err)
		}
	}
	return nil
}

func addRoute(h *netlink.Handle, dst netip.Prefix, link netlink.Link, gw netip.Addr) error {
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipnet(dst), Scope: netlink.SCOPE_LINK}
	if gw.IsValid() {
		r.Gw, r.Scope = gw.AsSlice(), netlink.SCOPE_UNIVERSE
	}
	if err := h.RouteAdd(r); err != nil {
		if gw.IsValid() {
			return fmt.Errorf("add route %s via %s dev %q: %w", dst, gw, link.Attrs().Name, err)
		}
		return fmt.Errorf("add route %s dev %q: %w", dst, link.Attrs().Name, err)
	}
	return nil
}

func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("link %q: %w", name, err)
	}
	return link, nil
}

func linkUp(h *netlink.Handle, link netlink.Link) error {
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %q up: %w", link.Attrs().Name, err)
	}
	return nil
}

// waitUp waits for the link name to be operationally up: the kernel activates a link's
// queueing discipline asynchronously (linkwatch) after its carrier comes up, and drops
// what the link sends until then (a lost first UDP datagram is never resent).
func waitUp(h *netlink.Handle, name string) error {
	deadline := time.Now().Add(upTimeout)
	for {
		link, err := linkByName(h, name)
		if err != nil {
			return err
		}
		if link.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%q not operationally up after %s (state %s)", name, upTimeout, link.Attrs().OperState)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// unspecified returns the unspecified address of a's family.
func unspecified(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}
