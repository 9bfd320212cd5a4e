// Package lab builds throwaway network namespaces for the demo, the privileged tests
// and the benchmarks: a "node" namespace wired by a veth uplink to an "outside"
// namespace that plays the rest of the world, plus sandbox namespaces, empty or wired
// to the node by hand (a bridge port, a routed veth) for tests that exercise the
// kernel or nftables without the agent. Nothing touches the caller's own namespace;
// Close removes everything.
package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
)

// Addresses of the uplink between node and outside (documentation ranges).
var (
	NodeAddr4    = netip.MustParsePrefix("203.0.113.1/24")
	OutsideAddr4 = netip.MustParsePrefix("203.0.113.2/24")
	NodeAddr6    = netip.MustParsePrefix("2001:db8:ffff::1/64")
	OutsideAddr6 = netip.MustParsePrefix("2001:db8:ffff::2/64")
)

// Uplink is the name of the node's end of the uplink; the outside's end is eth0.
const Uplink = "uplink0"

// Lab is a node namespace with an uplink to an outside namespace.
type Lab struct {
	Node    netns.NsHandle
	Outside netns.NsHandle

	mu        sync.Mutex // guards sandboxes
	sandboxes []netns.NsHandle
}

// New builds the node and outside namespaces: lo up in both, uplink veth Uplink (node)
// <-> "eth0" (outside) with the addresses above, operationally up, and default routes
// in the node pointing to the outside. The outside has no route to any sandbox subnet,
// so replies reach sandboxes only through the node's masquerade.
func New() (*Lab, error) {
	l := &Lab{}
	var err error
	if l.Node, err = kernel.NewNS(); err != nil {
		return nil, err
	}
	if l.Outside, err = kernel.NewNS(); err != nil {
		l.Close()
		return nil, err
	}
	if err := l.wire(); err != nil {
		l.Close()
		return nil, fmt.Errorf("wire lab: %w", err)
	}
	return l, nil
}

func (l *Lab) wire() error {
	nh, err := netlink.NewHandleAt(l.Node)
	if err != nil {
		return err
	}
	defer nh.Close()
	oh, err := netlink.NewHandleAt(l.Outside)
	if err != nil {
		return err
	}
	defer oh.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: Uplink}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(l.Outside))}
	if err := nh.LinkAdd(veth); err != nil {
		return fmt.Errorf("create uplink: %w", err)
	}
	for _, side := range []struct {
		ns    netns.NsHandle
		h     *netlink.Handle
		name  string
		addrs []netip.Prefix
	}{
		{l.Node, nh, Uplink, []netip.Prefix{NodeAddr4, NodeAddr6}},
		{l.Outside, oh, "eth0", []netip.Prefix{OutsideAddr4, OutsideAddr6}},
	} {
		link, err := side.h.LinkByName(side.name)
		if err != nil {
			return err
		}
		// No DAD: a tentative link-local address would delay neighbour discovery by ~1s.
		if err := kernel.WriteSysctl(side.ns, "net/ipv6/conf/"+side.name+"/accept_dad", "0"); err != nil {
			return err
		}
		for _, p := range side.addrs {
			a := &netlink.Addr{IPNet: ipnet(p)}
			if p.Addr().Is6() {
				a.Flags = unix.IFA_F_NODAD
			}
			if err := side.h.AddrAdd(link, a); err != nil {
				return fmt.Errorf("add %s to %s: %w", p, side.name, err)
			}
		}
		if err := side.h.LinkSetUp(link); err != nil {
			return err
		}
		if lo, err := side.h.LinkByName("lo"); err == nil {
			if err := side.h.LinkSetUp(lo); err != nil {
				return err
			}
		}
	}
	up, err := nh.LinkByName(Uplink)
	if err != nil {
		return err
	}
	// Neighbour entries in advance: a new IPv6 address joins its solicited-node group
	// asynchronously, and a first solicitation that comes before is lost (1 s stall).
	out, err := oh.LinkByName("eth0")
	if err != nil {
		return err
	}
	for _, ne := range []struct {
		h    *netlink.Handle
		dev  netlink.Link
		addr netip.Prefix
		mac  net.HardwareAddr
	}{
		{nh, up, OutsideAddr4, out.Attrs().HardwareAddr}, {nh, up, OutsideAddr6, out.Attrs().HardwareAddr},
		{oh, out, NodeAddr4, up.Attrs().HardwareAddr}, {oh, out, NodeAddr6, up.Attrs().HardwareAddr},
	} {
		n := &netlink.Neigh{LinkIndex: ne.dev.Attrs().Index, State: netlink.NUD_STALE, IP: ne.addr.Addr().AsSlice(), HardwareAddr: ne.mac, Family: netlink.FAMILY_V4}
		if ne.addr.Addr().Is6() {
			n.Family = netlink.FAMILY_V6
		}
		if err := ne.h.NeighSet(n); err != nil {
			return fmt.Errorf("neighbour %s: %w", ne.addr.Addr(), err)
		}
	}
	for _, gw := range []netip.Addr{OutsideAddr4.Addr(), OutsideAddr6.Addr()} {
		r := &netlink.Route{LinkIndex: up.Attrs().Index, Gw: gw.AsSlice()}
		if err := nh.RouteAdd(r); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	if err := waitUp(nh, Uplink); err != nil {
		return err
	}
	return waitUp(oh, "eth0")
}

// Sandbox returns a new empty namespace that Close removes.
func (l *Lab) Sandbox() (netns.NsHandle, error) {
	ns, err := kernel.NewNS()
	if err != nil {
		return ns, err
	}
	l.mu.Lock()
	l.sandboxes = append(l.sandboxes, ns)
	l.mu.Unlock()
	return ns, nil
}

// Close releases every namespace of the lab; the kernel destroys them (and their
// interfaces) once no process holds them.
func (l *Lab) Close() error {
	var errs []error
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ns := range append(l.sandboxes, l.Node, l.Outside) {
		if ns.IsOpen() {
			errs = append(errs, ns.Close())
		}
	}
	l.sandboxes = nil
	return errors.Join(errs...)
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
