package kernel_test

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/spec"
)

// mustRepair runs RepairEndpoint and compares what it reports (sorted) with want.
func mustRepair(t *testing.T, node *kernel.Node, ep plan.Endpoint, want ...string) {
	t.Helper()
	got, err := node.RepairEndpoint(ep)
	if err != nil {
		t.Fatalf("RepairEndpoint %s: %v (repaired %q)", ep.HostIf, err, got)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("RepairEndpoint %s repaired\n %q\nwant\n %q", ep.HostIf, got, want)
	}
}

func sysctlRepair(key, value string) string {
	return "sysctl " + strings.ReplaceAll(key, "/", ".") + "=" + value
}

// A routed endpoint: intact, nothing to repair (twice); with its host veth down, its
// MAC and MTU changed and every sysctl flipped (a link down loses its routes and
// neighbour entries too), everything comes back, CHECK passes and traffic flows; then
// nothing to repair again. A single deleted route is the only repair.
func TestPrivilegedRepairEndpointRouted(t *testing.T) {
	rn, _ := newLabNode(t)
	a, b := rn.sandbox(), rn.sandbox()
	epA := rn.attach(a, "a", nil, "10.77.0.5/16", "fd00:77::5/64")
	epB := rn.attach(b, "b", nil, "10.77.0.6/16", "fd00:77::6/64")
	mustTCP(t, rn.ns, a, epA.Addrs[0].Addr(), netip.Addr{})
	mustTCP(t, rn.ns, a, epA.Addrs[1].Addr(), netip.Addr{})
	for range 2 {
		mustRepair(t, rn.node, epA)
		mustRepair(t, rn.node, epB)
	}

	h := rn.handle()
	host, err := h.LinkByName(epA.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetDown(host); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetHardwareAddr(host, net.HardwareAddr{0x02, 0, 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMTU(host, 1400); err != nil {
		t.Fatal(err)
	}
	want := []string{"up", "mac " + api.RoutedHostMAC, "mtu 1500"}
	for _, sc := range epA.HostSysctls {
		if sc.Key == "net/ipv6/conf/"+epA.HostIf+"/addr_gen_mode" {
			continue // changing it regenerates addresses: not a drift to play with here
		}
		wrong := "0"
		switch {
		case strings.Contains(sc.Key, "/neigh/"):
			wrong = "80" // proxy_delay, in 1/100 s (1 may read back as 0)
		case sc.Value == "0":
			wrong = "1"
		}
		if err := kernel.WriteSysctl(rn.ns, sc.Key, wrong); err != nil {
			t.Fatal(err)
		}
		want = append(want, sysctlRepair(sc.Key, sc.Value))
	}
	for _, r := range epA.NodeRoutes {
		want = append(want, "route "+r.Dst.String())
	}
	for _, ne := range epA.NodeNeighbors {
		want = append(want, "neighbour "+ne.IP.String())
	}
	mustRepair(t, rn.node, epA, want...)
	mustRepair(t, rn.node, epA)
	if err := rn.node.CheckEndpoint(a, epA); err != nil {
		t.Fatalf("CheckEndpoint after repair: %v", err)
	}
	if ok, err := rn.node.EndpointComplete(epA.HostIf); err != nil || !ok {
		t.Errorf("EndpointComplete after repair = %v, %v", ok, err)
	}
	for i := range 2 {
		mustTCP(t, b, a, epA.Addrs[i].Addr(), epB.Addrs[i].Addr())
		mustTCP(t, rn.ns, a, epA.Addrs[i].Addr(), netip.Addr{})
	}

	// One route deleted: that route, nothing else.
	v4 := rn.nodeRoutes(epA.NodeRoutes[0].Dst)[0]
	if err := h.RouteDel(&v4); err != nil {
		t.Fatal(err)
	}
	mustRepair(t, rn.node, epA, "route "+epA.NodeRoutes[0].Dst.String())
	mustRepair(t, rn.node, epA)
}

// The node's neighbour entry for a sandbox with another MAC than planned: rewritten
// when the kernel has not confirmed it (here a permanent entry), left alone once it is
// reachable (the sandbox answered with that MAC). A missing entry alone is not drift.
func TestPrivilegedRepairEndpointNeighbor(t *testing.T) {
	rn, _ := newLabNode(t)
	sb := rn.sandbox()
	ep := rn.attach(sb, "a", nil, "10.77.0.5/16")
	h := rn.handle()
	host, err := h.LinkByName(ep.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	ip := ep.NodeNeighbors[0].IP
	wrong := &netlink.Neigh{LinkIndex: host.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0, 9}}
	if err := h.NeighSet(wrong); err != nil {
		t.Fatal(err)
	}
	mustRepair(t, rn.node, ep, "neighbour "+ip.String())
	if mac, ok := rn.nodeNeighbor(ip); !ok || mac != ep.MAC.String() {
		t.Fatalf("node neighbour for %s = %q (%v) after repair, want %s", ip, mac, ok, ep.MAC)
	}
	mustTCP(t, rn.ns, sb, ip, netip.Addr{})
	mustRepair(t, rn.node, ep)

	wrong.State = netlink.NUD_REACHABLE
	if err := h.NeighSet(wrong); err != nil {
		t.Fatal(err)
	}
	mustRepair(t, rn.node, ep)

	if err := h.NeighDel(wrong); err != nil {
		t.Fatal(err)
	}
	mustRepair(t, rn.node, ep)
}

// A bridge endpoint after its bridge was deleted and recreated: EnsureBridge brings the
// bridge back empty, RepairEndpoint makes the host veths its ports again (hairpin on),
// writes the node's neighbour entries again, and the sandboxes reach each other.
func TestPrivilegedRepairEndpointBridge(t *testing.T) {
	rn, _ := newLabNode(t)
	n, err := spec.Canonicalize(api.NetworkSpec{Name: "blue", Subnets: []string{"10.89.0.0/24", "fd89::/64"}})
	if err != nil {
		t.Fatal(err)
	}
	br := driver.NetworkFor(n).Bridge
	if err := rn.node.EnsureBridge(br); err != nil {
		t.Fatal(err)
	}
	a, b := rn.sandbox(), rn.sandbox()
	key := func(id string) api.EndpointKey {
		return api.EndpointKey{Network: n.Name, ContainerID: id, IfName: "eth0"}
	}
	epA := driver.For(n).Endpoint(n, key("a"), []netip.Prefix{netip.MustParsePrefix("10.89.0.5/24"), netip.MustParsePrefix("fd89::5/64")}, nil, nil).Kernel
	epB := driver.For(n).Endpoint(n, key("b"), []netip.Prefix{netip.MustParsePrefix("10.89.0.6/24"), netip.MustParsePrefix("fd89::6/64")}, nil, nil).Kernel
	if err := rn.node.AddEndpoint(a, epA); err != nil {
		t.Fatal(err)
	}
	if err := rn.node.AddEndpoint(b, epB); err != nil {
		t.Fatal(err)
	}
	mustTCP(t, a, b, epB.Addrs[0].Addr(), epA.Addrs[0].Addr())
	mustRepair(t, rn.node, epA)
	mustRepair(t, rn.node, epB)

	if err := rn.node.DeleteLink(br.Name); err != nil {
		t.Fatal(err)
	}
	if err := rn.node.EnsureBridge(br); err != nil {
		t.Fatal(err)
	}
	for _, ep := range []plan.Endpoint{epA, epB} {
		want := []string{"master " + br.Name}
		for _, ne := range ep.NodeNeighbors {
			want = append(want, "neighbour "+ne.IP.String())
		}
		mustRepair(t, rn.node, ep, want...)
		mustRepair(t, rn.node, ep)
	}
	h := rn.handle()
	for _, ep := range []plan.Endpoint{epA, epB} {
		host, err := h.LinkByName(ep.HostIf)
		if err != nil {
			t.Fatal(err)
		}
		if pi, err := h.LinkGetProtinfo(host); err != nil || !pi.Hairpin {
			t.Errorf("%s: hairpin %v (%v), want on", ep.HostIf, pi.Hairpin, err)
		}
	}
	if err := rn.node.CheckEndpoint(a, epA); err != nil {
		t.Fatalf("CheckEndpoint after repair: %v", err)
	}
	for i := range 2 {
		mustTCP(t, a, b, epB.Addrs[i].Addr(), epA.Addrs[i].Addr())
		mustTCP(t, b, a, epA.Addrs[i].Addr(), epB.Addrs[i].Addr())
		mustTCP(t, rn.ns, a, epA.Addrs[i].Addr(), netip.Addr{})
	}
}

// Without its host veth there is nothing to repair, and the error says so.
func TestPrivilegedRepairEndpointGone(t *testing.T) {
	rn, _ := newLabNode(t)
	sb := rn.sandbox()
	ep := rn.attach(sb, "a", nil, "10.77.0.5/16")
	if err := rn.node.DeleteLink(ep.HostIf); err != nil {
		t.Fatal(err)
	}
	got, err := rn.node.RepairEndpoint(ep)
	if !errors.Is(err, kernel.ErrHostIfGone) || len(got) != 0 {
		t.Fatalf("RepairEndpoint without the host veth = %q, %v; want ErrHostIfGone", got, err)
	}
}
