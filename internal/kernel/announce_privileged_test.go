package kernel_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/testutil"
)

// The announcement replaces a stale neighbour entry that the node holds for a routed
// sandbox's address on its host veth (IPv4: gratuitous ARP, accepted although the
// host veth answers by proxy ARP with rp_filter=1; IPv6: unsolicited NA, accepted
// although the host veth forwards).
func TestPrivilegedRoutedAnnounceReplacesStaleEntry(t *testing.T) {
	testutil.RequireRoot(t)
	nodeNS, err := kernel.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer nodeNS.Close()
	sandbox, err := kernel.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer sandbox.Close()
	n, err := kernel.OpenNode(nodeNS)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if lo, err := n.Handle().LinkByName("lo"); err != nil || n.Handle().LinkSetUp(lo) != nil {
		t.Fatalf("set lo up: %v", err)
	}
	if err := n.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	network, err := spec.Canonicalize(api.NetworkSpec{Name: "green", Driver: api.DriverRouted, Subnets: []string{"10.77.0.0/16", "fd00:77::/64"}})
	if err != nil {
		t.Fatal(err)
	}
	ep := driver.For(network).Endpoint(network, api.EndpointKey{Network: "green", ContainerID: "a", IfName: "eth0"},
		[]netip.Prefix{netip.MustParsePrefix("10.77.0.7/16"), netip.MustParsePrefix("fd00:77::7/64")}, nil, nil).Kernel
	if err := n.AddEndpoint(sandbox, ep); err != nil {
		t.Fatal(err)
	}
	host, err := n.Handle().LinkByName(ep.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	stale := net.HardwareAddr{0x0a, 0x58, 0xde, 0xad, 0xbe, 0xef}
	for _, a := range ep.Addrs {
		fam := netlink.FAMILY_V4
		if a.Addr().Is6() {
			fam = netlink.FAMILY_V6
		}
		ne := &netlink.Neigh{LinkIndex: host.Attrs().Index, Family: fam, State: netlink.NUD_REACHABLE, IP: a.Addr().AsSlice(), HardwareAddr: stale}
		if err := n.Handle().NeighSet(ne); err != nil {
			t.Fatal(err)
		}
		if mac, ok, _ := n.Neighbor(a.Addr()); !ok || mac.String() != stale.String() {
			t.Fatalf("seeded entry for %s = %s (%v)", a.Addr(), mac, ok)
		}
	}
	sh, err := netlink.NewHandleAt(sandbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	link, err := sh.LinkByName(ep.SandboxIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Announce(sandbox, sh, link, ep); err != nil {
		t.Fatal(err)
	}
	for _, a := range ep.Addrs {
		deadline := time.Now().Add(2 * time.Second)
		for {
			mac, ok, err := n.Neighbor(a.Addr())
			if err != nil {
				t.Fatal(err)
			}
			if ok && mac.String() == ep.MAC.String() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node neighbour for %s = %s (%v) after the announcement, want %s", a.Addr(), mac, ok, ep.MAC)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
