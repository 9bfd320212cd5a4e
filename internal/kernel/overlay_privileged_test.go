package kernel_test

import (
	"context"
	"net"
	"net/netip"
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

// overlayNode is one node of the overlay tests: a bridge pn-x with the network's
// gateway 10.90.0.1/16 (the same on every node) and proxy ARP on, and one pod.
type overlayNode struct {
	node *kernel.Node
	ns   netns.NsHandle
	pod  netns.NsHandle
	ip   netip.Addr
}

var overlaySubnet = netip.MustParsePrefix("10.90.0.0/16")

// overlayCluster builds two nodes on an underlay; pod i has 10.90.i.10 (node i's block
// is 10.90.i.0/26).
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
		if err := node.EnsureBridge(plan.Bridge{Name: "pn-x", MTU: 1500, Addrs: []netip.Prefix{gw}, Sysctls: []plan.Sysctl{
			{Key: "net/ipv4/conf/pn-x/proxy_arp", Value: "1"}, {Key: "net/ipv4/neigh/pn-x/proxy_delay", Value: "0"}}}); err != nil {
			t.Fatal(err)
		}
		pod, err := l.Sandbox()
		if err != nil {
			t.Fatal(err)
		}
		ip := netip.AddrFrom4([4]byte{10, 90, byte(i), 10})
		if _, err := l.Plug(pod, lab.Veth{HostIf: "vpod", Bridge: "pn-x", Addrs: []netip.Prefix{netip.PrefixFrom(ip, 16)}, Gateways: []netip.Addr{gw.Addr()}}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &overlayNode{node: node, ns: l.Node, pod: pod, ip: ip})
	}
	return nodes
}

// vxlanOverlay is node i's overlay towards the other node j.
func vxlanOverlay(i, j int) plan.Overlay {
	mac := func(k int) net.HardwareAddr { return net.HardwareAddr{0x0e, 0, 0, 0, 0x90, byte(k)} }
	remote := lab.UnderlayAddr(j).Addr()
	return plan.Overlay{Network: "x", Subnets: []netip.Prefix{overlaySubnet},
		Device: plan.VXLAN{Name: "pnx-x", VNI: 90, Port: 4789, Local: lab.UnderlayAddr(i).Addr(), Dev: lab.Uplink, MTU: 1450, MAC: mac(i)},
		Peers:  []plan.VTEP{{NodeIP: remote, MAC: mac(j)}},
		Routes: []plan.OverlayRoute{{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 90, byte(j), 0}), 26), Via: remote, Dev: "pnx-x", Onlink: true}},
	}
}

func syncOverlay(t *testing.T, nodes []*overlayNode, o func(i, j int) plan.Overlay) {
	t.Helper()
	for i, n := range nodes {
		if err := n.node.SyncOverlay(o(i, 1-i)); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
}

// Pods on two nodes of one bridge network: no path before the overlay (node 0 has no
// route to node 1's block, the pod's ARP gets no answer); with the VXLAN overlay TCP
// (also 1 MB of full-size segments) and a 1,400-byte UDP datagram cross; the same
// overlay again changes nothing; without peers and routes the path is gone again; direct
// routing over the shared underlay works as well.
func TestPrivilegedOverlay(t *testing.T) {
	nodes := overlayCluster(t)
	ctx := context.Background()
	dst := netip.AddrPortFrom(nodes[1].ip, 8080)
	if err := probe.Unreachable(ctx, nodes[0].pod, nodes[1].pod, dst, 5*time.Second); err != nil {
		t.Fatalf("pod 0 -> pod 1 without the overlay: %v", err)
	}

	syncOverlay(t, nodes, vxlanOverlay)
	mustCross(t, nodes)
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

	// A route deleted by hand comes back with the next sync.
	routes, _ := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: kernel.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if len(routes) != 1 {
		t.Fatalf("cross-node routes %+v, want 1", routes)
	}
	if err := h.RouteDel(&routes[0]); err != nil {
		t.Fatal(err)
	}
	syncOverlay(t, nodes, vxlanOverlay)
	mustCross(t, nodes)

	// Node 1 gone: no peers, no routes.
	if err := nodes[0].node.SyncOverlay(plan.Overlay{Network: "x", Subnets: []netip.Prefix{overlaySubnet}, Device: vxlanOverlay(0, 1).Device}); err != nil {
		t.Fatal(err)
	}
	if err := probe.Unreachable(ctx, nodes[0].pod, nodes[1].pod, dst, 5*time.Second); err != nil {
		t.Errorf("pod 0 -> pod 1 once node 1 is withdrawn: %v", err)
	}

	// Direct routing: the blocks via the other node's underlay address.
	for i, n := range nodes {
		if err := n.node.RemoveOverlay("pnx-x", []netip.Prefix{overlaySubnet}); err != nil {
			t.Fatal(err)
		}
		dev, ok, err := n.node.OnLink(lab.UnderlayAddr(1 - i).Addr())
		if err != nil || !ok || dev != lab.Uplink {
			t.Fatalf("node %d: the other node on link: %q %v %v", i, dev, ok, err)
		}
	}
	syncOverlay(t, nodes, func(i, j int) plan.Overlay {
		return plan.Overlay{Network: "x", Subnets: []netip.Prefix{overlaySubnet}, Routes: []plan.OverlayRoute{
			{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 90, byte(j), 0}), 26), Via: lab.UnderlayAddr(j).Addr(), Dev: lab.Uplink}}}
	})
	mustCross(t, nodes)
}

// mustCross checks TCP both ways, 1 MB from pod 0 to pod 1, and a 1,400-byte UDP
// datagram echoed.
func mustCross(t *testing.T, nodes []*overlayNode) {
	t.Helper()
	ctx := context.Background()
	for i := range 2 {
		a, b := nodes[i], nodes[1-i]
		got, err := probe.TCP(ctx, a.pod, b.pod, netip.AddrPortFrom(b.ip, 8080), probeTimeout)
		if err != nil || got != a.ip {
			t.Fatalf("pod %d -> pod %d: seen from %s, %v (want %s: no NAT)", i, 1-i, got, err, a.ip)
		}
	}
	if err := probe.Bulk(ctx, nodes[0].pod, nodes[1].pod, netip.AddrPortFrom(nodes[1].ip, 8081), 1<<20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := probe.UDPSize(ctx, nodes[0].pod, nodes[1].pod, netip.AddrPortFrom(nodes[1].ip, 8082), 1400, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
