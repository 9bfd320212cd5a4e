package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/plan"
)

// RouteProtocol marks the routes podnet makes to other nodes' blocks (RTM_F protocol
// field), so that SyncOverlay finds its own among the node's routes and leaves every
// other route alone.
const RouteProtocol netlink.RouteProtocol = 0x70

// LearnedProtocol marks the routes to prefixes outside the pod networks that the node
// learned from BGP peers (a top-of-rack router's networks, say).
const LearnedProtocol netlink.RouteProtocol = 0x71

// SyncOverlay makes one network's cross-node data path equal to o: the VXLAN device
// (created, or recreated when its VNI, port, source or underlay changed; MTU, MAC,
// exactly its addresses (but link-local ones) and state set), exactly o.Peers as permanent FDB and neighbour entries on it, and exactly
// o.Routes among the routes of RouteProtocol inside o.Subnets. Applying the same o
// twice changes nothing.
//
// An IPv6 route takes no IPv4 next hop (the kernel refuses RTA_VIA for IPv6), so an
// IPv6 block behind a node of IPv4 address goes via that node's VTEP link-local
// address (VTEPLinkLocal) on the VXLAN device, which a permanent neighbour entry maps
// to the VTEP's MAC; such a route anywhere else is refused (see overlayRoutes).
func (n *Node) SyncOverlay(o plan.Overlay) error {
	var vx netlink.Link
	if o.Device.Name != "" {
		var err error
		if vx, err = n.ensureVXLAN(o.Device); err != nil {
			return fmt.Errorf("network %s: %w", o.Network, err)
		}
		six := slices.ContainsFunc(o.Subnets, func(s netip.Prefix) bool { return s.Addr().Is6() })
		if err := n.syncPeers(vx, o.Peers, six); err != nil {
			return fmt.Errorf("network %s: vxlan %s: %w", o.Network, o.Device.Name, err)
		}
	}
	if err := n.syncOverlayRoutes(o); err != nil {
		return fmt.Errorf("network %s: %w", o.Network, err)
	}
	return nil
}

// RemoveOverlay removes a network's VXLAN device (its FDB, neighbour entries and routes
// go with it) and its routes of RouteProtocol inside subnets.
func (n *Node) RemoveOverlay(device string, subnets []netip.Prefix) error {
	if device != "" {
		if err := n.DeleteLink(device); err != nil {
			return err
		}
	}
	return n.syncOverlayRoutes(plan.Overlay{Subnets: subnets})
}

func (n *Node) ensureVXLAN(d plan.VXLAN) (netlink.Link, error) {
	under, err := n.h.LinkByName(d.Dev)
	if err != nil {
		return nil, fmt.Errorf("vxlan %s: underlay %s: %w", d.Name, d.Dev, err)
	}
	want := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: d.Name, MTU: d.MTU, HardwareAddr: d.MAC, TxQLen: -1},
		VxlanId:   d.VNI, Port: d.Port, SrcAddr: d.Local.AsSlice(), VtepDevIndex: under.Attrs().Index,
		Learning: false,
	}
	link, err := n.h.LinkByName(d.Name)
	switch {
	case err != nil && !isNotFound(err):
		return nil, fmt.Errorf("look up vxlan %s: %w", d.Name, err)
	case err == nil:
		have, ok := link.(*netlink.Vxlan)
		if !ok || have.VxlanId != d.VNI || have.Port != d.Port || ipOf(have.SrcAddr) != d.Local || have.VtepDevIndex != under.Attrs().Index || have.Learning {
			if err := n.h.LinkDel(link); err != nil {
				return nil, fmt.Errorf("replace vxlan %s: %w", d.Name, err)
			}
			link = nil
		}
	default:
		link = nil
	}
	if link == nil {
		if err := n.h.LinkAdd(want); err != nil {
			return nil, fmt.Errorf("create vxlan %s (id %d, port %d, dev %s): %w", d.Name, d.VNI, d.Port, d.Dev, err)
		}
		if link, err = n.h.LinkByName(d.Name); err != nil {
			return nil, fmt.Errorf("look up vxlan %s: %w", d.Name, err)
		}
	}
	a := link.Attrs()
	if a.MTU != d.MTU {
		if err := n.h.LinkSetMTU(link, d.MTU); err != nil {
			return nil, fmt.Errorf("vxlan %s: set mtu %d: %w", d.Name, d.MTU, err)
		}
	}
	if d.MAC != nil && a.HardwareAddr.String() != d.MAC.String() {
		if err := n.h.LinkSetHardwareAddr(link, d.MAC); err != nil {
			return nil, fmt.Errorf("vxlan %s: set mac: %w", d.Name, err)
		}
	}
	if err := n.ensureAddrs(link, d.Addrs, true); err != nil {
		return nil, fmt.Errorf("vxlan %s: %w", d.Name, err)
	}
	if a.Flags&net.FlagUp == 0 {
		if err := n.h.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("vxlan %s: set up: %w", d.Name, err)
		}
	}
	return link, nil
}

// syncPeers makes the device's permanent FDB entries and neighbour entries exactly one
// per peer: FDB MAC -> node IP, neighbour node IP -> MAC (the next hop of the routes);
// with six (the network has IPv6 subnets), also VTEPLinkLocal(MAC) -> MAC for a peer of
// IPv4 address (the next hop of its IPv6 routes).
func (n *Node) syncPeers(vx netlink.Link, peers []plan.VTEP, six bool) error {
	idx := vx.Attrs().Index
	fdb, err := retry(func() ([]netlink.Neigh, error) { return n.h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("list fdb: %w", err)
	}
	wantFDB := map[string]netip.Addr{}
	for _, p := range peers {
		wantFDB[p.MAC.String()] = p.NodeIP
	}
	for _, e := range fdb {
		if e.State&netlink.NUD_PERMANENT == 0 || e.HardwareAddr == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(e.IP)
		if ip, ok := wantFDB[e.HardwareAddr.String()]; ok && ip == dst.Unmap() {
			delete(wantFDB, e.HardwareAddr.String())
			continue
		}
		if err := n.h.NeighDel(&e); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete fdb %s dst %s: %w", e.HardwareAddr, dst, err)
		}
	}
	for _, p := range peers {
		if _, missing := wantFDB[p.MAC.String()]; !missing {
			continue
		}
		e := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
			IP: p.NodeIP.AsSlice(), HardwareAddr: p.MAC}
		if err := n.h.NeighSet(e); err != nil {
			return fmt.Errorf("fdb %s dst %s: %w", p.MAC, p.NodeIP, err)
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		neighs, err := retry(func() ([]netlink.Neigh, error) { return n.h.NeighList(idx, fam) })
		if err != nil {
			return fmt.Errorf("list neighbours: %w", err)
		}
		want := map[netip.Addr]string{}
		for _, p := range peers {
			if (fam == netlink.FAMILY_V4) == p.NodeIP.Is4() {
				want[p.NodeIP] = p.MAC.String()
			}
			if fam == netlink.FAMILY_V6 && six && p.NodeIP.Is4() {
				want[VTEPLinkLocal(p.MAC)] = p.MAC.String()
			}
		}
		for _, e := range neighs {
			ip, _ := netip.AddrFromSlice(e.IP)
			ip = ip.Unmap()
			if mac, ok := want[ip]; ok && e.State&netlink.NUD_PERMANENT != 0 && e.HardwareAddr.String() == mac {
				delete(want, ip)
				continue
			}
			// The kernel's own entries (link-local, multicast) stay; a permanent
			// link-local one is a VTEP's of a peer gone.
			if (ip.IsLinkLocalUnicast() && e.State&netlink.NUD_PERMANENT == 0) || ip.IsMulticast() {
				continue
			}
			if err := n.h.NeighDel(&e); err != nil && !isNotFound(err) {
				return fmt.Errorf("delete neighbour %s: %w", ip, err)
			}
		}
		for ip, mac := range want {
			hw, _ := net.ParseMAC(mac)
			e := &netlink.Neigh{LinkIndex: idx, Family: fam, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: hw}
			if err := n.h.NeighSet(e); err != nil {
				return fmt.Errorf("neighbour %s lladdr %s: %w", ip, mac, err)
			}
		}
	}
	return nil
}

// syncOverlayRoutes makes the node's routes of RouteProtocol inside o.Subnets exactly
// o.Routes.
func (n *Node) syncOverlayRoutes(o plan.Overlay) error {
	routes, err := overlayRoutes(o)
	return errors.Join(err, n.syncRoutes(RouteProtocol, routes, func(dst netip.Prefix) bool {
		return slices.ContainsFunc(o.Subnets, func(s netip.Prefix) bool { return s.Overlaps(dst) })
	}))
}

// overlayRoutes is o.Routes as the kernel takes them: an IPv6 block via a node of IPv4
// address goes via VTEPLinkLocal of that node's VTEP instead. Such a route that is not
// on o's VXLAN device towards one of o.Peers cannot be made (nothing would resolve its
// next hop: direct routing of IPv6 needs an IPv6 underlay); it is left out with an
// error.
func overlayRoutes(o plan.Overlay) ([]plan.OverlayRoute, error) {
	macs := map[netip.Addr]net.HardwareAddr{}
	for _, p := range o.Peers {
		macs[p.NodeIP] = p.MAC
	}
	routes := make([]plan.OverlayRoute, 0, len(o.Routes))
	var errs []error
	for _, r := range o.Routes {
		if r.Dst.Addr().Is6() && r.Via.Is4() {
			mac, ok := macs[r.Via]
			if !ok || r.Dev != o.Device.Name {
				errs = append(errs, fmt.Errorf("route %s via %s dev %s: an IPv6 route cannot go via an IPv4 address (only through the network's VXLAN device, to a VTEP)", r.Dst, r.Via, r.Dev))
				continue
			}
			r.Via = VTEPLinkLocal(mac)
		}
		routes = append(routes, r)
	}
	return routes, errors.Join(errs...)
}

// VTEPLinkLocal is the IPv6 next hop of the routes through a VXLAN peer of IPv4
// address: the modified EUI-64 link-local address of its VTEP's MAC (what the peer's
// device derives for itself by default; nothing depends on it having it, the frame goes
// to the MAC).
func VTEPLinkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	if len(mac) == 6 {
		a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15] = mac[0]^0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]
	}
	return netip.AddrFrom16(a)
}

// SyncLearnedRoutes makes routes the exact set of routes of LearnedProtocol: the
// routes to prefixes outside the pod networks that the node learned over BGP.
func (n *Node) SyncLearnedRoutes(routes []plan.OverlayRoute) error {
	return n.syncRoutes(LearnedProtocol, routes, func(netip.Prefix) bool { return true })
}

// syncRoutes makes routes the exact set of routes of proto in the main table among
// those whose destination owns accepts; it leaves every other route alone.
func (n *Node) syncRoutes(proto netlink.RouteProtocol, routes []plan.OverlayRoute, owns func(dst netip.Prefix) bool) error {
	have, err := retry(func() ([]netlink.Route, error) {
		return n.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: proto, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list routes of protocol %d: %w", proto, err)
	}
	want := map[string]plan.OverlayRoute{}
	for _, r := range routes {
		want[r.Dst.String()] = r
	}
	names := map[int]string{}
	var errs []error
	for _, r := range have {
		if r.Dst == nil {
			continue
		}
		dst := prefixOf(r.Dst).Masked()
		if !owns(dst) {
			continue // another network's
		}
		if w, ok := want[dst.String()]; ok && n.routeIs(r, w, names) {
			delete(want, dst.String())
			continue
		}
		if err := n.h.RouteDel(&r); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", dst, err))
		}
	}
	for _, r := range routes {
		if _, missing := want[r.Dst.String()]; !missing {
			continue
		}
		link, err := n.h.LinkByName(r.Dev)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s dev %s: %w", r.Dst, r.Via, r.Dev, err))
			continue
		}
		rt := &netlink.Route{Dst: &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
			LinkIndex: link.Attrs().Index, Protocol: proto, Table: unix.RT_TABLE_MAIN}
		switch {
		case r.Dst.Addr().Is4() == r.Via.Is4():
			rt.Gw = r.Via.AsSlice()
		case r.Dst.Addr().Is4():
			// An IPv4 route via an IPv6 next hop (RFC 5549, kernel 5.2+). The other
			// way round has no RTA_VIA: the kernel refuses it.
			rt.Via = &netlink.Via{AddrFamily: netlink.FAMILY_V6, Addr: r.Via.AsSlice()}
		default:
			errs = append(errs, fmt.Errorf("route %s via %s dev %s: an IPv6 route cannot go via an IPv4 address", r.Dst, r.Via, r.Dev))
			continue
		}
		if r.Onlink {
			rt.Flags = int(netlink.FLAG_ONLINK)
		}
		if err := n.h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s dev %s: %w", r.Dst, r.Via, r.Dev, err))
		}
	}
	return errors.Join(errs...)
}

// routeIs reports whether the kernel route r is w (same next hop and device).
func (n *Node) routeIs(r netlink.Route, w plan.OverlayRoute, names map[int]string) bool {
	if _, ok := names[r.LinkIndex]; !ok {
		if l, err := n.h.LinkByIndex(r.LinkIndex); err == nil {
			names[r.LinkIndex] = l.Attrs().Name
		}
	}
	if names[r.LinkIndex] != w.Dev || (r.Flags&int(netlink.FLAG_ONLINK) != 0) != w.Onlink {
		return false
	}
	var via netip.Addr
	if r.Gw != nil {
		via, _ = netip.AddrFromSlice(r.Gw)
	} else if r.Via != nil {
		if v, ok := r.Via.(*netlink.Via); ok {
			via, _ = netip.AddrFromSlice(v.Addr)
		}
	}
	return via.Unmap() == w.Via
}

// Underlay returns the interface that holds the local address addr, and its MTU.
func (n *Node) Underlay(addr netip.Addr) (string, int, error) {
	addrs, err := retry(func() ([]netlink.Addr, error) { return n.h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return "", 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			l, err := n.h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", 0, err
			}
			return l.Attrs().Name, l.Attrs().MTU, nil
		}
	}
	return "", 0, fmt.Errorf("no interface of the node has address %s", addr)
}

// DefaultRouteAddr returns the preferred source address of the node's IPv4 default
// route (what a node's underlay address is unless told otherwise).
func (n *Node) DefaultRouteAddr() (netip.Addr, error) {
	routes, err := n.h.RouteGet(net.IPv4(8, 8, 8, 8))
	if err != nil || len(routes) == 0 || routes[0].Src == nil {
		return netip.Addr{}, fmt.Errorf("the node has no IPv4 default route to take its address from (give --node-ip): %v", err)
	}
	a, _ := netip.AddrFromSlice(routes[0].Src)
	return a.Unmap(), nil
}

// OnLink reports whether the node reaches addr directly on dev: a route of the main
// table for it through dev without a gateway (the same L2 segment, what direct routing
// needs).
func (n *Node) OnLink(addr netip.Addr) (dev string, ok bool, err error) {
	routes, err := n.h.RouteGet(addr.AsSlice())
	if err != nil {
		return "", false, fmt.Errorf("route to %s: %w", addr, err)
	}
	for _, r := range routes {
		if r.Gw != nil || r.Via != nil {
			return "", false, nil
		}
		l, err := n.h.LinkByIndex(r.LinkIndex)
		if err != nil {
			return "", false, err
		}
		if strings.HasPrefix(l.Type(), "vxlan") {
			return "", false, nil
		}
		return l.Attrs().Name, true, nil
	}
	return "", false, nil
}
