package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// floor does the kernel work of a bridge CNI plugin directly with netlink, in-process,
// with no IPAM store, no NAT rules and no exec: the lower bound for any implementation
// that creates the same objects.
//
// Kernel objects: in the node namespace, bridge pnbr0 with 10.97.0.1/16 and
// ip_forward on (Setup, untimed); per pod, veth pnbh<i>, up and in the bridge, whose
// peer is created directly in the sandbox as eth0, then given 10.97.x.y/16, set up
// and a default route via the bridge address. DEL deletes pnbh<i>, which takes eth0
// along.
//
// The peer is created in the sandbox rather than created in the node namespace and
// moved there, as the reference bridge plugin also does: moving a link to another
// namespace waits for an RCU grace period (14-28 ms per pod on the 6.18 test VM,
// against ~0.5 ms for the whole create), which would put the "floor" above the
// reference plugin.
type floor struct {
	tb     *testbed
	node   *netlink.Handle // netlink socket in the node namespace
	bridge int             // ifindex of pnbr0
}

var _ runner = (*floor)(nil)

var (
	floorSubnet  = netip.MustParsePrefix("10.97.0.0/16")
	floorGateway = netip.MustParseAddr("10.97.0.1")
)

func (f *floor) Setup(tb *testbed) error {
	f.tb = tb
	var err error
	if f.node, err = netlink.NewHandleAt(tb.node); err != nil {
		return fmt.Errorf("netlink handle in node netns: %w", err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "pnbr0", Flags: net.FlagUp}}
	if err := f.node.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %q: %w", br.Name, err)
	}
	f.bridge = br.Index
	gw := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(floorGateway, floorSubnet.Bits()))}
	if err := f.node.AddrAdd(br, gw); err != nil {
		return fmt.Errorf("add %s to bridge %q: %w", gw.IPNet, br.Name, err)
	}
	return writeSysctlIn(tb.node, "net/ipv4/ip_forward", "1")
}

func (f *floor) Add(i int) error {
	sandbox, err := netns.GetFromPath(f.tb.sandboxes[i])
	if err != nil {
		return fmt.Errorf("open sandbox netns: %w", err)
	}
	defer sandbox.Close()
	host := fmt.Sprintf("pnbh%d", i)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: host, Flags: net.FlagUp, MasterIndex: f.bridge},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(sandbox)),
	}
	if err := f.node.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %q: %w", host, err)
	}

	h, err := netlink.NewHandleAt(sandbox)
	if err != nil {
		return fmt.Errorf("netlink handle in sandbox: %w", err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0 in sandbox: %w", err)
	}
	addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(podAddr(i), floorSubnet.Bits()))}
	if err := h.AddrAdd(eth0, addr); err != nil {
		return fmt.Errorf("add %s to eth0: %w", addr.IPNet, err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("set eth0 up: %w", err)
	}
	route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: floorGateway.AsSlice()}
	if err := h.RouteAdd(route); err != nil {
		return fmt.Errorf("add default route via %s: %w", floorGateway, err)
	}
	return nil
}

func (f *floor) Del(i int) error {
	host := fmt.Sprintf("pnbh%d", i)
	l, err := f.node.LinkByName(host)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find veth %q: %w", host, err)
	}
	if err := f.node.LinkDel(l); err != nil {
		return fmt.Errorf("delete veth %q: %w", host, err)
	}
	return nil
}

func (f *floor) Teardown() error {
	if f.node != nil {
		f.node.Close()
	}
	return nil
}

// podAddr is pod i's address in floorSubnet, after the network and gateway addresses.
func podAddr(i int) netip.Addr {
	b := floorSubnet.Addr().As4()
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(i)+2)
	return netip.AddrFrom4(b)
}

// ipNet converts at the netlink edge.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
