package kernel_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/spec"
)

const probeTimeout = 3 * time.Second

var (
	gateway4 = netip.MustParseAddr(api.RoutedGateway4)
	gateway6 = netip.MustParseAddr(spec.RoutedGateway6)
)

// routedNode is a node namespace with a routed network "green" (10.77.0.0/16,
// fd00:77::/64) and forwarding on, as the agent sets it up, in a lab.
type routedNode struct {
	t    *testing.T
	lab  *lab.Lab
	ns   netns.NsHandle
	node *kernel.Node
	net  api.Network
}

// newLabNode is the lab's node: an uplink and default routes.
func newLabNode(t *testing.T) (*routedNode, *lab.Lab) {
	t.Helper()
	l := labtest.New(t)
	return openRoutedNode(t, l, l.Node), l
}

// newBareNode is a node namespace without any route: a sandbox of the lab with only lo,
// up as on every real node (with lo down there is no local routing table at all, and
// the kernel then takes every address for a broadcast address: no neighbour would ever
// be resolved).
func newBareNode(t *testing.T) *routedNode {
	t.Helper()
	l := labtest.New(t)
	ns, err := l.Sandbox()
	if err != nil {
		t.Fatal(err)
	}
	if err := kernel.EnsureLoopbackUp(ns); err != nil {
		t.Fatal(err)
	}
	return openRoutedNode(t, l, ns)
}

func openRoutedNode(t *testing.T, l *lab.Lab, ns netns.NsHandle) *routedNode {
	t.Helper()
	node, err := kernel.OpenNode(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	if err := node.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	n, err := spec.Canonicalize(api.NetworkSpec{Name: "green", Driver: api.DriverRouted, Subnets: []string{"10.77.0.0/16", "fd00:77::/64"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.EnsureBridge(driver.NetworkFor(n).Bridge); err != nil { // no bridge: nothing to do
		t.Fatal(err)
	}
	return &routedNode{t: t, lab: l, ns: ns, node: node, net: n}
}

// sandbox returns a new empty sandbox namespace of the lab.
func (rn *routedNode) sandbox() netns.NsHandle {
	rn.t.Helper()
	ns, err := rn.lab.Sandbox()
	if err != nil {
		rn.t.Fatal(err)
	}
	return ns
}

// attach adds a routed endpoint with the given allocation (subnet prefix lengths, as
// IPAM hands them out) to sb.
func (rn *routedNode) attach(sb netns.NsHandle, id string, mac net.HardwareAddr, addrs ...string) plan.Endpoint {
	rn.t.Helper()
	var ps []netip.Prefix
	for _, a := range addrs {
		ps = append(ps, netip.MustParsePrefix(a))
	}
	ep := driver.For(rn.net).Endpoint(rn.net, api.EndpointKey{Network: rn.net.Name, ContainerID: id, IfName: "eth0"}, ps, mac, nil).Kernel
	if err := rn.node.AddEndpoint(sb, ep); err != nil {
		rn.t.Fatalf("AddEndpoint %s: %v", id, err)
	}
	return ep
}

func (rn *routedNode) handle() *netlink.Handle {
	rn.t.Helper()
	h, err := netlink.NewHandleAt(rn.ns)
	if err != nil {
		rn.t.Fatal(err)
	}
	rn.t.Cleanup(h.Close)
	return h
}

// nodeRoutes lists the node's main-table routes to dst.
func (rn *routedNode) nodeRoutes(dst netip.Prefix) []netlink.Route {
	rn.t.Helper()
	h := rn.handle()
	routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		rn.t.Fatal(err)
	}
	var out []netlink.Route
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == dst.String() {
			out = append(out, r)
		}
	}
	return out
}

func mustTCP(t *testing.T, client, server netns.NsHandle, addr netip.Addr, want netip.Addr) {
	t.Helper()
	got, err := probe.TCP(context.Background(), client, server, netip.AddrPortFrom(addr, 8080), probeTimeout)
	if err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	if want.IsValid() && got != want {
		t.Errorf("connection to %s came from %s, want %s (no NAT in between)", addr, got, want)
	}
}

// sandboxNeighbor returns the MAC of the sandbox's neighbour entry for ip on eth0.
func sandboxNeighbor(t *testing.T, sb netns.NsHandle, ip netip.Addr) (string, bool) {
	t.Helper()
	h, err := netlink.NewHandleAt(sb)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	neighs, err := h.NeighList(link.Attrs().Index, fam)
	if err != nil {
		t.Fatal(err)
	}
	for _, ne := range neighs {
		if a, ok := netip.AddrFromSlice(ne.IP); ok && a.Unmap() == ip && ne.HardwareAddr != nil {
			return ne.HardwareAddr.String(), true
		}
	}
	return "", false
}

// checkGatewayNeighbors verifies that the sandbox resolved both gateways to the host
// veth's fixed MAC.
func checkGatewayNeighbors(t *testing.T, sb netns.NsHandle) {
	t.Helper()
	for _, gw := range []netip.Addr{gateway4, gateway6} {
		mac, ok := sandboxNeighbor(t, sb, gw)
		if !ok || mac != api.RoutedHostMAC {
			t.Errorf("sandbox neighbour entry for %s = %q (present %v), want %s", gw, mac, ok, api.RoutedHostMAC)
		}
	}
}

// Two routed sandboxes on a node with a default route (lab): they reach each other
// over IPv4 and IPv6 through the node's routes, without NAT; the node reaches them;
// each resolved its gateways to ee:ee:ee:ee:ee:ee; CHECK passes.
func TestPrivilegedRoutedConnectivity(t *testing.T) {
	rn, _ := newLabNode(t)
	a, b := rn.sandbox(), rn.sandbox()
	epA := rn.attach(a, "a", nil, "10.77.0.5/16", "fd00:77::5/64")
	epB := rn.attach(b, "b", nil, "10.77.0.6/16", "fd00:77::6/64")
	for i := range 2 {
		mustTCP(t, a, b, epB.Addrs[i].Addr(), epA.Addrs[i].Addr())
		mustTCP(t, b, a, epA.Addrs[i].Addr(), epB.Addrs[i].Addr())
	}
	// From the node: the source is an address of the node's uplink.
	mustTCP(t, rn.ns, a, epA.Addrs[0].Addr(), lab.NodeAddr4.Addr())
	mustTCP(t, rn.ns, a, epA.Addrs[1].Addr(), lab.NodeAddr6.Addr())
	for _, sb := range []netns.NsHandle{a, b} {
		checkGatewayNeighbors(t, sb)
	}
	for _, c := range []struct {
		sb netns.NsHandle
		ep plan.Endpoint
	}{{a, epA}, {b, epB}} {
		if err := rn.node.CheckEndpoint(c.sb, c.ep); err != nil {
			t.Errorf("CheckEndpoint %s: %v", c.ep.HostIf, err)
		}
		if ok, err := rn.node.EndpointComplete(c.ep.HostIf); err != nil || !ok {
			t.Errorf("EndpointComplete(%s) = %v, %v; want true", c.ep.HostIf, ok, err)
		}
	}
	// The host end: fixed MAC, no master, no address but the link-local gateway.
	h := rn.handle()
	host, err := h.LinkByName(epA.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	if host.Attrs().HardwareAddr.String() != api.RoutedHostMAC || host.Attrs().MasterIndex != 0 {
		t.Errorf("host veth mac %s master %d, want %s and none", host.Attrs().HardwareAddr, host.Attrs().MasterIndex, api.RoutedHostMAC)
	}
	addrs, err := h.AddrList(host, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IP.String() != spec.RoutedGateway6 {
		t.Errorf("host veth addresses %v, want only %s", addrs, spec.RoutedGateway6)
	}
}

// Proxy ARP answers for 169.254.1.1 only if the node routes that address through
// another interface. A node without any route (bare namespace) stays silent: the
// sandboxes cannot resolve their IPv4 gateway (IPv6 works: the gateway is a real
// link-local address of the host veth). EnsureRoutedGateway fixes that.
func TestPrivilegedRoutedGatewayWithoutDefaultRoute(t *testing.T) {
	rn := newBareNode(t)
	a, b := rn.sandbox(), rn.sandbox()
	epA := rn.attach(a, "a", nil, "10.77.0.5/16", "fd00:77::5/64")
	epB := rn.attach(b, "b", nil, "10.77.0.6/16", "fd00:77::6/64")
	// Positive controls: the same sandboxes, veths and listener work over IPv6 now, and
	// over IPv4 once the node has the route (below). The IPv4 failure is checked first,
	// on the bare node as it comes: it is the state this test is about.
	mustTCP(t, a, b, epB.Addrs[1].Addr(), epA.Addrs[1].Addr())
	// Nobody answers a's ARP requests for its gateway: once its solicitations are used
	// up (about 3 s) the kernel gives up with "no route to host".
	dst := netip.AddrPortFrom(epB.Addrs[0].Addr(), 8080)
	if _, err := probe.TCP(context.Background(), a, b, dst, 10*time.Second); !errors.Is(err, unix.EHOSTUNREACH) {
		t.Fatalf("without a route to %s in the node: %v, want host unreachable (ARP for the gateway unanswered)", gateway4, err)
	}
	if mac, ok := sandboxNeighbor(t, a, gateway4); ok {
		t.Fatalf("sandbox resolved %s to %s although the node has no route to it", gateway4, mac)
	}

	for range 2 { // idempotent
		if err := rn.node.EnsureRoutedGateway(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		mustTCP(t, a, b, epB.Addrs[i].Addr(), epA.Addrs[i].Addr())
		mustTCP(t, b, a, epA.Addrs[i].Addr(), epB.Addrs[i].Addr())
	}
	checkGatewayNeighbors(t, a)
	checkGatewayNeighbors(t, b)

	if err := rn.node.RemoveRoutedGateway(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := rn.node.LinkExists(kernel.RoutedGatewayLink); ok {
		t.Error("RemoveRoutedGateway left the interface")
	}
	if err := rn.node.RemoveRoutedGateway(); err != nil {
		t.Errorf("RemoveRoutedGateway when gone: %v", err)
	}
}

// The route EnsureRoutedGateway adds never takes traffic from a route the node has:
// with a default route (lab) or a more specific route for the link-local range, the
// node still routes 169.254.1.1 as before.
func TestPrivilegedRoutedGatewayKeepsNodeRoutes(t *testing.T) {
	rn, _ := newLabNode(t)
	if err := rn.node.EnsureRoutedGateway(); err != nil {
		t.Fatal(err)
	}
	h := rn.handle()
	uplink, err := h.LinkByName(lab.Uplink)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		routes, err := h.RouteGet(gateway4.AsSlice())
		if err != nil || len(routes) == 0 {
			t.Fatalf("%s: route get %s: %v", what, gateway4, err)
		}
		if routes[0].LinkIndex != uplink.Attrs().Index {
			t.Errorf("%s: node routes %s through interface %d, want uplink0 (%d)", what, gateway4, routes[0].LinkIndex, uplink.Attrs().Index)
		}
	}
	check("default route")
	if err := lab.AddRoute(rn.ns, netip.MustParsePrefix("169.254.0.0/16"), lab.Uplink, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	check("169.254.0.0/16 dev uplink0")
	// And it still answers the sandboxes.
	a, b := rn.sandbox(), rn.sandbox()
	rn.attach(a, "a", nil, "10.77.0.5/16")
	epB := rn.attach(b, "b", nil, "10.77.0.6/16")
	mustTCP(t, a, b, epB.Addrs[0].Addr(), netip.Addr{})
	// The dummy interface stays inert when the main table has a route.
	if routes := rn.nodeRoutes(netip.MustParsePrefix("169.254.1.1/32")); len(routes) != 0 {
		t.Errorf("main table has %v, want no route of podnet for %s", routes, gateway4)
	}
}

// CHECK verifies the routed shape and names what is missing; deleting the host veth
// removes its node routes.
func TestPrivilegedRoutedCheckEndpoint(t *testing.T) {
	rn, _ := newLabNode(t)
	sb := rn.sandbox()
	ep := rn.attach(sb, "a", nil, "10.77.0.5/16", "fd00:77::5/64")
	if err := rn.node.CheckEndpoint(sb, ep); err != nil {
		t.Fatalf("CheckEndpoint: %v", err)
	}
	// The sandbox end announces its addresses (set through netlink for IPv4).
	for _, key := range []string{"net/ipv4/conf/" + ep.SandboxIf + "/arp_notify", "net/ipv6/conf/" + ep.SandboxIf + "/ndisc_notify"} {
		if v, err := kernel.ReadSysctl(sb, key); err != nil || v != "1" {
			t.Errorf("%s in the sandbox = %q, %v; want 1", key, v, err)
		}
	}
	h := rn.handle()
	host, err := h.LinkByName(ep.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ep.NodeRoutes {
		routes := rn.nodeRoutes(r.Dst)
		if len(routes) != 1 || routes[0].LinkIndex != host.Attrs().Index {
			t.Fatalf("node routes for %s: %v, want one through %s", r.Dst, routes, ep.HostIf)
		}
		if r.Dst.Addr().Is4() && routes[0].Scope != netlink.SCOPE_LINK {
			t.Errorf("node route %s has scope %s, want link", r.Dst, routes[0].Scope)
		}
	}

	// A node route deleted: CHECK fails and names it, the endpoint is not complete.
	v6 := rn.nodeRoutes(ep.NodeRoutes[1].Dst)[0]
	if err := h.RouteDel(&v6); err != nil {
		t.Fatal(err)
	}
	err = rn.node.CheckEndpoint(sb, ep)
	if want := "node lacks route fd00:77::5/128 dev " + ep.HostIf; err == nil || err.Error() != want {
		t.Errorf("CheckEndpoint without the IPv6 node route = %v, want %q", err, want)
	}
	if ok, err := rn.node.EndpointComplete(ep.HostIf); err != nil || ok {
		t.Errorf("EndpointComplete without a node route = %v, %v; want false", ok, err)
	}
	if err := h.RouteAdd(&v6); err != nil {
		t.Fatal(err)
	}
	if err := rn.node.CheckEndpoint(sb, ep); err != nil {
		t.Fatalf("CheckEndpoint after restoring the route: %v", err)
	}

	// Proxy ARP off (diagnosis item 4): CHECK says so.
	if err := kernel.WriteSysctl(rn.ns, "net/ipv4/conf/"+ep.HostIf+"/proxy_arp", "0"); err != nil {
		t.Fatal(err)
	}
	err = rn.node.CheckEndpoint(sb, ep)
	if err == nil || !strings.Contains(err.Error(), "proxy_arp is 0, want 1") {
		t.Errorf("CheckEndpoint with proxy_arp=0 = %v, want it named", err)
	}
	if err := kernel.WriteSysctl(rn.ns, "net/ipv4/conf/"+ep.HostIf+"/proxy_arp", "1"); err != nil {
		t.Fatal(err)
	}

	// A wrong host MAC.
	other := ep
	other.HostMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	if err := rn.node.CheckEndpoint(sb, other); err == nil || !strings.Contains(err.Error(), "has mac ee:ee:ee:ee:ee:ee, want 02:00:00:00:00:01") {
		t.Errorf("CheckEndpoint with another host MAC planned = %v", err)
	}

	// Deleting the host veth removes its routes.
	if err := rn.node.DeleteLink(ep.HostIf); err != nil {
		t.Fatal(err)
	}
	for _, r := range ep.NodeRoutes {
		if routes := rn.nodeRoutes(r.Dst); len(routes) != 0 {
			t.Errorf("node route %s survived its host veth: %v", r.Dst, routes)
		}
	}
	if err := rn.node.CheckEndpoint(sb, ep); err == nil {
		t.Error("CheckEndpoint passed after the host veth was deleted")
	}
}

// The routed sandbox side: host prefixes, the gateway routes, forwarding data on the
// host end.
func TestPrivilegedRoutedSandboxShape(t *testing.T) {
	rn, _ := newLabNode(t)
	sb := rn.sandbox()
	ep := rn.attach(sb, "a", nil, "10.77.0.5/16", "fd00:77::5/64")
	h, err := netlink.NewHandleAt(sb)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var global []string
	for _, a := range addrs {
		if a.Scope == unix.RT_SCOPE_UNIVERSE {
			global = append(global, a.IPNet.String())
		}
	}
	if strings.Join(global, " ") != "10.77.0.5/32 fd00:77::5/128" {
		t.Errorf("sandbox addresses %v, want 10.77.0.5/32 fd00:77::5/128", global)
	}
	routes, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range routes {
		s := "0.0.0.0/0"
		if r.Dst != nil {
			s = r.Dst.String()
		}
		if r.Gw != nil {
			s += " via " + r.Gw.String()
		}
		s += " scope " + r.Scope.String()
		got = append(got, s)
	}
	if want := "0.0.0.0/0 via 169.254.1.1 scope universe,169.254.1.1/32 scope link"; strings.Join(got, ",") != want {
		t.Errorf("sandbox IPv4 routes %q, want %q (no route for the subnet: it is not on-link)", strings.Join(got, ","), want)
	}
	for _, sc := range ep.HostSysctls {
		v, err := kernel.ReadSysctl(rn.ns, sc.Key)
		if err != nil || v != sc.Value {
			t.Errorf("node sysctl %s = %q, %v; want %q", sc.Key, v, err, sc.Value)
		}
	}
}

// nodeNeighbor returns the node's neighbour entry for ip (any device).
func (rn *routedNode) nodeNeighbor(ip netip.Addr) (string, bool) {
	rn.t.Helper()
	mac, ok, err := rn.node.Neighbor(ip)
	if err != nil {
		rn.t.Fatal(err)
	}
	return mac.String(), ok
}

// An address handed out again, to the same attachment (podman's network reload is
// DEL then ADD of one key) or to another one after DEL. In routed mode the node's
// neighbour entries for a sandbox live on its own host veth and die with it, so the
// old MAC cannot survive into the new endpoint: the node reaches the new sandbox at
// once and then holds its MAC. (That the announcement replaces an entry that does
// exist is TestPrivilegedRoutedAnnounceReplacesStaleEntry.)
func TestPrivilegedRoutedAddressReuse(t *testing.T) {
	for _, sameKey := range []bool{true, false} {
		name := "other attachment after DEL"
		if sameKey {
			name = "same attachment"
		}
		t.Run(name, func(t *testing.T) {
			rn, _ := newLabNode(t)
			old := rn.sandbox()
			epOld := rn.attach(old, "a", nil, "10.77.0.7/16", "fd00:77::7/64")
			for _, a := range epOld.Addrs {
				mustTCP(t, rn.ns, old, a.Addr(), netip.Addr{})
				if mac, ok := rn.nodeNeighbor(a.Addr()); !ok || mac != epOld.MAC.String() {
					t.Fatalf("node neighbour for %s = %q (%v), want the old sandbox's %s", a.Addr(), mac, ok, epOld.MAC)
				}
			}
			key := "a"
			if !sameKey {
				key = "b"
				if err := rn.node.DeleteLink(epOld.HostIf); err != nil {
					t.Fatal(err)
				}
			}
			sb := rn.sandbox()
			newMAC := net.HardwareAddr{0x0a, 0x58, 0x0a, 0x4d, 0x77, 0x77}
			ep := rn.attach(sb, key, newMAC, "10.77.0.7/16", "fd00:77::7/64")
			for _, a := range ep.Addrs {
				if mac, ok := rn.nodeNeighbor(a.Addr()); ok && mac != newMAC.String() {
					t.Errorf("after AddEndpoint the node holds %s for %s, want %s or no entry", mac, a.Addr(), newMAC)
				}
				// Within the probe timeout, not after a stale entry's ~30 s. (IPv6 may
				// take one neighbour-solicitation retry, 1 s: the kernel joins an
				// address's solicited-node group asynchronously, for bridge
				// endpoints too.)
				start := time.Now()
				mustTCP(t, rn.ns, sb, a.Addr(), netip.Addr{})
				t.Logf("node -> reused %s connected in %s", a.Addr(), time.Since(start))
				if mac, ok := rn.nodeNeighbor(a.Addr()); !ok || mac != newMAC.String() {
					t.Errorf("node neighbour for %s = %q (%v), want %s", a.Addr(), mac, ok, newMAC)
				}
			}
			if err := rn.node.CheckEndpoint(sb, ep); err != nil {
				t.Errorf("CheckEndpoint: %v", err)
			}
		})
	}
}

// Without the standard rule that consults table default, the route EnsureRoutedGateway
// adds there is inert: it says so instead of succeeding.
func TestPrivilegedRoutedGatewayNeedsDefaultTableRule(t *testing.T) {
	rn := newBareNode(t)
	h := rn.handle()
	rules, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	deleted := false
	for _, r := range rules {
		if r.Table == unix.RT_TABLE_DEFAULT {
			if err := h.RuleDel(&r); err != nil {
				t.Fatal(err)
			}
			deleted = true
		}
	}
	if !deleted {
		t.Fatal("a new namespace has no rule for table default")
	}
	err = rn.node.EnsureRoutedGateway()
	if err == nil || !strings.Contains(err.Error(), `is the rule "lookup default" missing?`) {
		t.Fatalf("EnsureRoutedGateway without the rule = %v, want an error naming it", err)
	}
}

// Tunnels lists the node's overlay devices with their VNI, port, underlay device and
// source, and nothing else.
func TestPrivilegedTunnels(t *testing.T) {
	rn, _ := newLabNode(t)
	h := rn.handle()
	if got, err := rn.node.Tunnels(); err != nil || len(got) != 0 {
		t.Fatalf("Tunnels of a node without any: %+v, %v", got, err)
	}
	up, err := h.LinkByName(lab.Uplink)
	if err != nil {
		t.Fatal(err)
	}
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx-test", MTU: 1450}, VxlanId: 4096, Port: 4789,
		VtepDevIndex: up.Attrs().Index, SrcAddr: lab.NodeAddr4.Addr().AsSlice()}
	if err := h.LinkAdd(vx); err != nil {
		t.Fatal(err)
	}
	got, err := rn.node.Tunnels()
	want := []spec.Tunnel{{Name: "vx-test", Kind: "vxlan", ID: 4096, Port: 4789, Local: lab.NodeAddr4.Addr(), Dev: lab.Uplink, MTU: 1450}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Tunnels: %+v, %v; want %+v", got, err, want)
	}
}
