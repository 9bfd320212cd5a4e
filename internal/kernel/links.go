package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/spec"
)

// Node is the node network namespace podnet manages.
type Node struct {
	ns netns.NsHandle
	h  *netlink.Handle
}

// OpenNode binds to the namespace ns (the caller keeps ownership of ns).
func OpenNode(ns netns.NsHandle) (*Node, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle for node netns: %w", err)
	}
	return &Node{ns: ns, h: h}, nil
}

// NS is the node's namespace handle.
func (n *Node) NS() netns.NsHandle { return n.ns }

// Close releases the netlink handle.
func (n *Node) Close() { n.h.Close() }

// EnableForwarding turns on IPv4 and IPv6 forwarding in the node namespace.
func (n *Node) EnableForwarding() error {
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if v, err := ReadSysctl(n.ns, k); err == nil && v == "1" {
			continue
		}
		if err := WriteSysctl(n.ns, k, "1"); err != nil {
			return err
		}
	}
	return nil
}

// BridgeNetfilter makes bridged IPv4 and IPv6 packets cross the inet hooks (and
// conntrack) of the node, or not: bridge-nf-call-iptables and -ip6tables of the node's
// namespace (br_netfilter; the sysctls are per namespace). Network policies need it on
// bridge networks, so that traffic between two pods of one bridge meets their rules.
func (n *Node) BridgeNetfilter(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	for _, k := range []string{"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"} {
		if cur, err := ReadSysctl(n.ns, k); err == nil && cur == v {
			continue
		}
		if err := WriteSysctl(n.ns, k, v); err != nil {
			return err
		}
	}
	return nil
}

// EnsureBridge creates or repairs a bridge as planned. Calling it again with the same
// plan changes nothing. The zero Bridge (a network without one: routed) does nothing.
func (n *Node) EnsureBridge(b plan.Bridge) error {
	if b.Name == "" {
		return nil
	}
	link, err := n.h.LinkByName(b.Name)
	if err != nil {
		if !isNotFound(err) {
			return fmt.Errorf("look up bridge %s: %w", b.Name, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: b.Name, MTU: b.MTU, HardwareAddr: b.MAC, TxQLen: -1}}
		if err := n.h.LinkAdd(br); err != nil {
			return fmt.Errorf("create bridge %s: %w", b.Name, err)
		}
		if link, err = n.h.LinkByName(b.Name); err != nil {
			return fmt.Errorf("look up bridge %s: %w", b.Name, err)
		}
		err = Do(n.ns, func() error {
			for _, sc := range b.Sysctls {
				err := writeProcSys(sc.Key, sc.Value)
				if err != nil && !(strings.HasPrefix(sc.Key, "net/ipv6/") && errors.Is(err, fs.ErrNotExist)) {
					return err
				}
			}
			return nil
		})
		if err != nil {
			_ = n.DeleteLink(b.Name)
			return fmt.Errorf("bridge %s: %w", b.Name, err)
		}
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("bridge %s: interface exists with type %s", b.Name, link.Type())
	}
	attrs := link.Attrs()
	if attrs.MTU != b.MTU {
		if err := n.h.LinkSetMTU(link, b.MTU); err != nil {
			return fmt.Errorf("bridge %s: set mtu %d: %w", b.Name, b.MTU, err)
		}
	}
	if b.MAC != nil && attrs.HardwareAddr.String() != b.MAC.String() {
		if err := n.h.LinkSetHardwareAddr(link, b.MAC); err != nil {
			return fmt.Errorf("bridge %s: set mac: %w", b.Name, err)
		}
	}
	if err := n.ensureAddrs(link, b.Addrs, false); err != nil {
		return fmt.Errorf("bridge %s: %w", b.Name, err)
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := n.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("bridge %s: set up: %w", b.Name, err)
		}
	}
	return nil
}

// ensureAddrs adds the addresses of want that link lacks; with exact, it also removes
// the others (but link-local ones, which the kernel gives).
func (n *Node) ensureAddrs(link netlink.Link, want []netip.Prefix, exact bool) error {
	// A dump of a busy node (thousands of veths) is often interrupted: retried.
	have, err := retry(func() ([]netlink.Addr, error) { return n.h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range have {
		p := prefixOf(a.IPNet)
		if !exact || p.Addr().IsLinkLocalUnicast() || slices.Contains(want, p) {
			continue
		}
		if err := n.h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("delete address %s: %w", p, err)
		}
	}
	for _, p := range want {
		found := slices.ContainsFunc(have, func(a netlink.Addr) bool { return prefixOf(a.IPNet) == p })
		if found {
			continue
		}
		if err := n.h.AddrAdd(link, addrOf(p)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s: %w", p, err)
		}
	}
	return nil
}

// DeleteLink removes an interface by name; success when it does not exist.
func (n *Node) DeleteLink(name string) error {
	link, err := n.h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := n.h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// LinkExists reports whether an interface of that name exists in the node.
func (n *Node) LinkExists(name string) (bool, error) {
	_, err := n.h.LinkByName(name)
	if err == nil {
		return true, nil
	}
	if isNotFound(err) {
		return false, nil
	}
	return false, err
}

// LinksWithPrefix lists node interfaces whose name starts with prefix, name to index.
func (n *Node) LinksWithPrefix(prefix string) (map[string]int, error) {
	links, err := retry(func() ([]netlink.Link, error) { return n.h.LinkList() })
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[string]int{}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			out[l.Attrs().Name] = l.Attrs().Index
		}
	}
	return out, nil
}

// DeleteLinkIndex removes the interface with that index; success when it does not
// exist. Unlike a name, an index is never given to a newer interface soon after.
func (n *Node) DeleteLinkIndex(index int) error {
	if err := n.h.LinkDel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete interface %d: %w", index, err)
	}
	return nil
}

// Routes lists the node's main-table routes (IPv4 and IPv6) with their device names.
func (n *Node) Routes() ([]spec.NodeRoute, error) {
	routes, err := retry(func() ([]netlink.Route, error) { return n.h.RouteList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	names := map[int]string{}
	if links, err := retry(func() ([]netlink.Link, error) { return n.h.LinkList() }); err == nil {
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	var out []spec.NodeRoute
	for _, r := range routes {
		if r.Dst == nil {
			continue // default route
		}
		out = append(out, spec.NodeRoute{Dst: prefixOf(r.Dst).Masked(), Dev: names[r.LinkIndex]})
	}
	return out, nil
}

// Tunnels lists the node's overlay devices (vxlan, geneve, ipip, gre), sorted by name.
func (n *Node) Tunnels() ([]spec.Tunnel, error) {
	links, err := retry(func() ([]netlink.Link, error) { return n.h.LinkList() })
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []spec.Tunnel
	for _, l := range links {
		if t, ok := TunnelOf(l, names); ok {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b spec.Tunnel) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// TunnelOf describes l when it is an overlay device (vxlan, geneve, ipip, gre, gretap,
// wireguard); names maps the namespace's interface indexes to names (its underlay).
func TunnelOf(l netlink.Link, names map[int]string) (spec.Tunnel, bool) {
	t := spec.Tunnel{Name: l.Attrs().Name, Kind: l.Type(), MTU: l.Attrs().MTU}
	switch l := l.(type) {
	case *netlink.Vxlan:
		t.ID, t.Port, t.Dev, t.Learning = l.VxlanId, l.Port, names[l.VtepDevIndex], l.Learning
		t.Local, t.Remote = ipOf(l.SrcAddr), ipOf(l.Group)
	case *netlink.Geneve:
		t.ID, t.Port, t.Remote = int(l.ID), int(l.Dport), ipOf(l.Remote)
	case *netlink.Iptun:
		t.Dev, t.Local, t.Remote = names[int(l.Link)], ipOf(l.Local), ipOf(l.Remote)
	case *netlink.Gretun:
		t.Dev, t.Local, t.Remote = names[int(l.Link)], ipOf(l.Local), ipOf(l.Remote)
	case *netlink.Gretap:
		t.Dev, t.Local, t.Remote = names[int(l.Link)], ipOf(l.Local), ipOf(l.Remote)
	case *netlink.Wireguard:
	default:
		return spec.Tunnel{}, false
	}
	return t, true
}

// ipOf is ip as an address; invalid for none or the unspecified address.
func ipOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || a.Unmap().IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}

// Neighbor returns the node's neighbour entry (MAC) for ip, if any.
func (n *Node) Neighbor(ip netip.Addr) (net.HardwareAddr, bool, error) {
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	neighs, err := retry(func() ([]netlink.Neigh, error) { return n.h.NeighList(0, fam) })
	if err != nil {
		return nil, false, err
	}
	for _, ne := range neighs {
		if a, ok := netip.AddrFromSlice(ne.IP); ok && a.Unmap() == ip && ne.HardwareAddr != nil {
			return ne.HardwareAddr, true, nil
		}
	}
	return nil, false, nil
}

func retry[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 5 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func addrOf(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// EnsureLoopbackUp sets lo up in ns (a new namespace starts with it down, without
// 127.0.0.1); it changes nothing where lo is up already.
func EnsureLoopbackUp(ns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("loopback: netlink handle: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback: set up: %w", err)
	}
	return nil
}
