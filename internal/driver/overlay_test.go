package driver

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
)

// OverlayFor: routes to the blocks of the other live nodes only (not its own, not a
// dead node's, not another network's), one VTEP per other live node, in a stable order.
func TestOverlayFor(t *testing.T) {
	n, err := spec.Canonicalize(api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.0.0/16", "fd00:88::/64"}, CrossNode: api.CrossNodeVXLAN, MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr
	nodes := []api.Node{
		{Name: "n1", IP: ip("192.168.77.10"), Alive: true},
		{Name: "n3", IP: ip("192.168.77.12"), Alive: true},
		{Name: "n2", IP: ip("192.168.77.11"), Alive: true},
		{Name: "dead", IP: ip("192.168.77.13")},
	}
	block := func(node, p string) api.Block {
		return api.Block{Network: "blue", Node: node, Prefix: netip.MustParsePrefix(p)}
	}
	blocks := []api.Block{block("n1", "10.88.0.0/26"), block("n3", "10.88.0.128/26"), block("n2", "10.88.0.64/26"),
		block("n2", "fd00:88::/122"), block("dead", "10.88.0.192/26"), {Network: "red", Node: "n2", Prefix: netip.MustParsePrefix("10.99.0.0/26")}}
	u := Underlay{Node: "n1", IP: ip("192.168.77.10"), Dev: "eth0"}
	o := OverlayFor(n, u, nodes, blocks)
	var got []string
	got = append(got, fmt.Sprintf("device %s vni %d port %d local %s dev %s mtu %d mac %s", o.Device.Name, o.Device.VNI, o.Device.Port, o.Device.Local, o.Device.Dev, o.Device.MTU, o.Device.MAC))
	for _, p := range o.Peers {
		got = append(got, fmt.Sprintf("peer %s %s", p.NodeIP, p.MAC))
	}
	for _, r := range o.Routes {
		got = append(got, fmt.Sprintf("route %s via %s dev %s onlink %v", r.Dst, r.Via, r.Dev, r.Onlink))
	}
	dev := spec.VXLANName("blue")
	want := []string{
		fmt.Sprintf("device %s vni %d port 4789 local 192.168.77.10 dev eth0 mtu 1450 mac %s", dev, spec.DefaultVNI("blue"), VTEPMAC("n1", "blue")),
		fmt.Sprintf("peer 192.168.77.11 %s", VTEPMAC("n2", "blue")),
		fmt.Sprintf("peer 192.168.77.12 %s", VTEPMAC("n3", "blue")),
		"route 10.88.0.64/26 via 192.168.77.11 dev " + dev + " onlink true",
		"route 10.88.0.128/26 via 192.168.77.12 dev " + dev + " onlink true",
		"route fd00:88::/122 via 192.168.77.11 dev " + dev + " onlink true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("vxlan overlay\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// direct: the same routes on the underlay, no device, no peers; on an IPv4
	// underlay, no route to an IPv6 block (an IPv6 route takes no IPv4 next hop).
	n.CrossNode = api.CrossNodeDirect
	o = OverlayFor(n, u, nodes, blocks)
	if o.Device.Name != "" || len(o.Peers) != 0 || len(o.Routes) != 2 || o.Routes[0].Dev != "eth0" || o.Routes[0].Onlink || o.Routes[1].Dst.Addr().Is6() {
		t.Errorf("direct overlay %+v", o)
	}
	// A network of one node: nothing.
	n.CrossNode = ""
	if o = OverlayFor(n, u, nodes, blocks); o.Device.Name != "" || len(o.Routes) != 0 {
		t.Errorf("overlay of a one-node network %+v", o)
	}
}
