package kernel_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/testutil"
)

// overlayNode is one node of the overlay tests: a bridge pn-x with the network's IPv4
// gateway 10.90.0.1/16 (the same on every node) and proxy ARP on, and an IPv6 gateway
// fd00:90:0:I::1/64 of the node's own, and one pod with an address of each.
type overlayNode struct {
	node *kernel.Node
	ns   netns.NsHandle
	pod  netns.NsHandle
	ip   netip.Addr
	ip6  netip.Addr
}

var (
	overlaySubnet  = netip.MustParsePrefix("10.90.0.0/16")
	overlaySubnet6 = netip.MustParsePrefix("fd00:90::/48")
)

// block6 is node i's IPv6 block, fd00:90:0:I::/64.
func block6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x90, 0, 0, 0, byte(i)}), 64)
}

// overlayCluster builds two nodes on an IPv4 underlay; pod i has 10.90.i.10 (node i's
// block is 10.90.i.0/26) and fd00:90:0:I::10 (block6).
func overlayCluster(t *testing.T) []*overlayNode {
	t.Helper()
	testutil.RequireRoot(t)
	c, err := lab.NewCluster(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var nodes []*overlayNode
	for i, l := range c.Nodes {
		node, err := kernel.OpenNode(l.Node)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(node.Close)
		if err := node.EnableForwarding(); err != nil {
			t.Fatal(err)
		}
		gw := netip.MustParsePrefix("10.90.0.1/16")
		gw6 := netip.PrefixFrom(block6(i).Addr().Next(), 64)
		if err := node.EnsureBridge(plan.Bridge{Name: "pn-x", MTU: 1500, Addrs: []netip.Prefix{gw, gw6}, Sysctls: []plan.Sysctl{
			{Key: "net/ipv4/conf/pn-x/proxy_arp", Value: "1"}, {Key: "net/ipv4/neigh/pn-x/proxy_delay", Value: "0"}}}); err != nil {
			t.Fatal(err)
		}
		pod, err := l.Sandbox()
		if err != nil {
			t.Fatal(err)
		}
		ip := netip.AddrFrom4([4]byte{10, 90, byte(i), 10})
		ip6 := block6(i).Addr().As16()
		ip6[15] = 0x10
		n := &overlayNode{node: node, ns: l.Node, pod: pod, ip: ip, ip6: netip.AddrFrom16(ip6)}
		if _, err := l.Plug(pod, lab.Veth{HostIf: "vpod", Bridge: "pn-x", Addrs: []netip.Prefix{netip.PrefixFrom(ip, 16), netip.PrefixFrom(n.ip6, 64)},
			Gateways: []netip.Addr{gw.Addr(), gw6.Addr()}}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// vxlanOverlay is node i's overlay towards the other node j: both of j's blocks via
// j's IPv4 address.
func vxlanOverlay(i, j int) plan.Overlay {
	remote := lab.UnderlayAddr(j).Addr()
	return plan.Overlay{Network: "x", Subnets: []netip.Prefix{overlaySubnet, overlaySubnet6},
		Device: plan.VXLAN{Name: "pnx-x", VNI: 90, Port: 4789, Local: lab.UnderlayAddr(i).Addr(), Dev: lab.Uplink, MTU: 1450, MAC: vtepMAC(i),
			Addrs: []netip.Prefix{tunnelAddr(i), netip.PrefixFrom(block6(i).Addr().Next(), 128)}},
		Peers: []plan.VTEP{{NodeIP: remote, MAC: vtepMAC(j)}},
		Routes: []plan.OverlayRoute{
			{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 90, byte(j), 0}), 26), Via: remote, Dev: "pnx-x", Onlink: true},
			{Dst: block6(j), Via: remote, Dev: "pnx-x", Onlink: true},
		},
	}
}

// tunnelAddr is node i's IPv4 tunnel address: the last of its block.
func tunnelAddr(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 90, byte(i), 62}), 32)
}

func vtepMAC(k int) net.HardwareAddr { return net.HardwareAddr{0x0e, 0, 0, 0, 0x90, byte(k)} }

func syncOverlay(t *testing.T, nodes []*overlayNode, o func(i, j int) plan.Overlay) {
	t.Helper()
	for i, n := range nodes {
		if err := n.node.SyncOverlay(o(i, 1-i)); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
}

// Pods on two nodes of one dual-stack bridge network on an IPv4 underlay: no path
// before the overlay (node 0 has no route to node 1's blocks, the pod's ARP gets no
// answer); with the VXLAN overlay TCP (also 1 MB of full-size segments) and a
// 1,400-byte UDP datagram cross over IPv4 and IPv6 (the IPv6 block via the peer VTEP's
// link-local address, a permanent neighbour entry); the same overlay again changes
// nothing; routes deleted by hand come back; without peers and routes the path is gone
// again, the neighbour entries with it; direct routing over the shared underlay works
// for IPv4, and refuses an IPv6 block via an IPv4 address while applying the rest.
func TestPrivilegedOverlay(t *testing.T) {
	nodes := overlayCluster(t)
	ctx := context.Background()
	for _, ip := range []func(*overlayNode) netip.Addr{v4, v6} {
		if err := probe.Unreachable(ctx, nodes[0].pod, nodes[1].pod, netip.AddrPortFrom(ip(nodes[1]), 8080), 5*time.Second); err != nil {
			t.Fatalf("pod 0 -> pod 1 without the overlay: %v", err)
		}
	}

	syncOverlay(t, nodes, vxlanOverlay)
	mustCross(t, nodes, v4)
	mustCross(t, nodes, v6)
	syncOverlay(t, nodes, vxlanOverlay) // idempotent
	h, err := netlink.NewHandleAt(nodes[0].ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	vx, err := h.LinkByName("pnx-x")
	if err != nil {
		t.Fatal(err)
	}
	if v := vx.(*netlink.Vxlan); v.VxlanId != 90 || v.Port != 4789 || v.Learning || vx.Attrs().MTU != 1450 {
		t.Errorf("vxlan %+v: want id 90, port 4789, no learning, mtu 1450", v)
	}
	fdb, _ := h.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
	perm := 0
	for _, e := range fdb {
		if e.State&netlink.NUD_PERMANENT != 0 && e.HardwareAddr.String() == "0e:00:00:00:90:01" {
			perm++
		}
	}
	if perm != 1 {
		t.Errorf("%d permanent fdb entries for node 1's VTEP after two syncs, want 1: %+v", perm, fdb)
	}
	ll := kernel.VTEPLinkLocal(vtepMAC(1))
	if ll.String() != "fe80::c00:ff:fe00:9001" {
		t.Errorf("link-local of VTEP %s: %s, want fe80::c00:ff:fe00:9001", vtepMAC(1), ll)
	}
	if got := permanentNeighbors(t, h, vx, netlink.FAMILY_V6); got != ll.String()+" 0e:00:00:00:90:01" {
		t.Errorf("permanent IPv6 neighbours of pnx-x: %q, want node 1's VTEP link-local -> its MAC", got)
	}

	// The device holds exactly its tunnel addresses (and its link-local one), an address
	// added by hand goes with the next sync, and what the node sends to the other node's
	// pods leaves from its tunnel address.
	if err := h.AddrAdd(vx, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP{10, 90, 0, 9}, Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	syncOverlay(t, nodes, vxlanOverlay)
	addrs, err := h.AddrList(vx, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			got = append(got, a.IPNet.String())
		}
	}
	slices.Sort(got)
	if want := []string{"10.90.0.62/32", "fd00:90::1/128"}; !slices.Equal(got, want) {
		t.Errorf("addresses of pnx-x: %v, want %v", got, want)
	}
	for dst, want := range map[netip.Addr]netip.Addr{v4(nodes[1]): tunnelAddr(0).Addr(), v6(nodes[1]): block6(0).Addr().Next()} {
		rs, err := h.RouteGet(dst.AsSlice())
		if err != nil || len(rs) != 1 {
			t.Fatalf("route to %s: %v %v", dst, rs, err)
		}
		if src, _ := netip.AddrFromSlice(rs[0].Src); src.Unmap() != want {
			t.Errorf("node 0's source towards %s: %s, want its tunnel address %s", dst, src, want)
		}
	}

	// Routes deleted by hand come back with the next sync.
	for fam, want := range map[int]string{
		netlink.FAMILY_V4: "10.90.1.0/26 via 192.168.77.11 onlink",
		netlink.FAMILY_V6: "fd00:90:0:1::/64 via " + ll.String() + " onlink",
	} {
		routes, _ := h.RouteListFiltered(fam, &netlink.Route{Protocol: kernel.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if len(routes) != 1 || fmt.Sprintf("%s via %s onlink", routes[0].Dst, routes[0].Gw) != want || routes[0].Flags&int(netlink.FLAG_ONLINK) == 0 || routes[0].LinkIndex != vx.Attrs().Index {
			t.Fatalf("cross-node routes %+v, want %s dev pnx-x", routes, want)
		}
		if err := h.RouteDel(&routes[0]); err != nil {
			t.Fatal(err)
		}
	}
	syncOverlay(t, nodes, vxlanOverlay)
	mustCross(t, nodes, v4)
	mustCross(t, nodes, v6)

	// Node 1 gone: no peers, no routes, no neighbour entries.
	o := vxlanOverlay(0, 1)
	o.Peers, o.Routes = nil, nil
	if err := nodes[0].node.SyncOverlay(o); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []func(*overlayNode) netip.Addr{v4, v6} {
		if err := probe.Unreachable(ctx, nodes[0].pod, nodes[1].pod, netip.AddrPortFrom(ip(nodes[1]), 8080), 5*time.Second); err != nil {
			t.Errorf("pod 0 -> pod 1 once node 1 is withdrawn: %v", err)
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if got := permanentNeighbors(t, h, vx, fam); got != "" {
			t.Errorf("permanent neighbours of pnx-x once node 1 is withdrawn: %s", got)
		}
	}

	// Direct routing: the blocks via the other node's underlay address.
	for i, n := range nodes {
		if err := n.node.RemoveOverlay("pnx-x", []netip.Prefix{overlaySubnet, overlaySubnet6}); err != nil {
			t.Fatal(err)
		}
		dev, ok, err := n.node.OnLink(lab.UnderlayAddr(1 - i).Addr())
		if err != nil || !ok || dev != lab.Uplink {
			t.Fatalf("node %d: the other node on link: %q %v %v", i, dev, ok, err)
		}
	}
	direct := func(i, j int) plan.Overlay {
		return plan.Overlay{Network: "x", Subnets: []netip.Prefix{overlaySubnet, overlaySubnet6}, Routes: []plan.OverlayRoute{
			{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 90, byte(j), 0}), 26), Via: lab.UnderlayAddr(j).Addr(), Dev: lab.Uplink}}}
	}
	// An IPv6 block via an IPv4 address on the underlay cannot be routed: refused,
	// naming the route; the rest is applied.
	o = direct(0, 1)
	o.Routes = append(o.Routes, plan.OverlayRoute{Dst: block6(1), Via: lab.UnderlayAddr(1).Addr(), Dev: lab.Uplink})
	if err := nodes[0].node.SyncOverlay(o); err == nil || !strings.Contains(err.Error(), "route fd00:90:0:1::/64 via 192.168.77.11 dev "+lab.Uplink+": an IPv6 route cannot go via an IPv4 address") {
		t.Errorf("direct overlay with an IPv6 block via an IPv4 address: %v", err)
	}
	syncOverlay(t, nodes, direct)
	mustCross(t, nodes, v4)
}

func v4(n *overlayNode) netip.Addr { return n.ip }
func v6(n *overlayNode) netip.Addr { return n.ip6 }

// permanentNeighbors lists the permanent neighbour entries of link in family, "IP MAC",
// sorted, joined by ", ".
func permanentNeighbors(t *testing.T, h *netlink.Handle, link netlink.Link, family int) string {
	t.Helper()
	neighs, err := h.NeighList(link.Attrs().Index, family)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range neighs {
		if e.State&netlink.NUD_PERMANENT != 0 {
			out = append(out, e.IP.String()+" "+e.HardwareAddr.String())
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// mustCross checks TCP both ways, 1 MB from pod 0 to pod 1, and a 1,400-byte UDP
// datagram echoed, on the pods' addresses that ip picks.
func mustCross(t *testing.T, nodes []*overlayNode, ip func(*overlayNode) netip.Addr) {
	t.Helper()
	ctx := context.Background()
	for i := range 2 {
		a, b := nodes[i], nodes[1-i]
		got, err := probe.TCP(ctx, a.pod, b.pod, netip.AddrPortFrom(ip(b), 8080), probeTimeout)
		if err != nil || got != ip(a) {
			t.Fatalf("pod %d -> pod %d: seen from %s, %v (want %s: no NAT)", i, 1-i, got, err, ip(a))
		}
	}
	if err := probe.Bulk(ctx, nodes[0].pod, nodes[1].pod, netip.AddrPortFrom(ip(nodes[1]), 8081), 1<<20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := probe.UDPSize(ctx, nodes[0].pod, nodes[1].pod, netip.AddrPortFrom(ip(nodes[1]), 8082), 1400, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
