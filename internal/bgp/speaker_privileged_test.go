package bgp

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/testutil"
	"github.com/podnet/podnet/internal/testutil/birdtest"
)

// newCluster builds n node namespaces on an underlay bridge (lab.NewCluster): node i
// has lab.UnderlayAddr(i). They are removed when the test ends.
func newCluster(t *testing.T, n int) *lab.Cluster {
	t.Helper()
	testutil.RequireRoot(t)
	c, err := lab.NewCluster(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sorted returns routes sorted as Learned sorts them.
func sorted(routes []Route) []Route {
	routes = slices.Clone(routes)
	sortRoutes(routes)
	return routes
}

func withPeer(routes []Route, peer string) []Route {
	out := slices.Clone(routes)
	for i := range out {
		out[i].Peer = peer
	}
	return out
}

// Two podnet nodes in an iBGP full mesh: each learns the other's blocks (IPv4, and
// IPv6 over the same IPv4 session) with the other's next hop, Watch follows, a
// withdrawal and a next-hop change propagate, removing the peer ends the session and
// its routes, and a stopped speaker refuses further calls.
func TestPrivilegedIBGPMesh(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	addrA, addrB := lab.UnderlayAddr(0).Addr(), lab.UnderlayAddr(1).Addr()
	// a only dials: it does not even listen.
	cfgA := testConfig(addrA.String(), 64512)
	cfgA.ListenPort = -1
	a := startSpeaker(t, "a", c.Nodes[0].Node, cfgA)
	b := startSpeaker(t, "b", c.Nodes[1].Node, testConfig(addrB.String(), 64512))

	routesA := []Route{
		{Prefix: prefix("10.244.0.0/26"), NextHop: addrA},
		{Prefix: prefix("10.244.0.64/26"), NextHop: addrA},
		{Prefix: prefix("fd00:244::/64"), NextHop: addr("fd00:77::10")},
	}
	routesB := []Route{
		{Prefix: prefix("10.244.1.0/26"), NextHop: addrB},
		{Prefix: prefix("fd00:244:1::/64"), NextHop: addr("fd00:77::11")},
	}
	a.Advertise(routesA...)
	b.Advertise(routesB...)
	a.Advertise(routesA...) // the same again: a no-op

	// b waits for a to connect (Passive); a dials.
	a.SetPeers(Peer{Name: "b", Address: addrB, ASN: 64512})
	b.SetPeers(Peer{Name: "a", Address: addrA, ASN: 64512, Passive: true})
	sa := a.waitSession("b", Established)
	b.waitSession("a", Established)
	if sa.Peer != (Peer{Name: "b", Address: addrB, ASN: 64512}) {
		t.Errorf("a's session peer: got %+v", sa.Peer)
	}

	a.waitLearned(withPeer(routesB, "b")...)
	b.waitLearned(withPeer(routesA, "a")...)
	sa = a.waitSession("b", Established)
	if sa.Received != len(routesB) || sa.Advertised != len(routesA) {
		t.Errorf("a's session with b: got %d received, %d advertised; want %d, %d", sa.Received, sa.Advertised, len(routesB), len(routesA))
	}
	// Watch reports the same set.
	eventually(t, "a's Watch reports b's routes", func() (bool, string) {
		w := a.call(helperRequest{Op: "watched"})
		return slices.Equal(w.Routes, sorted(withPeer(routesB, "b"))) && w.WatchErr == "", fmt.Sprintf("%d calls, last %v, err %q", w.WatchCalls, w.Routes, w.WatchErr)
	})

	// Renaming a peer keeps its session: the routes carry the new name at once.
	b.SetPeers(Peer{Name: "node-a", Address: addrA, ASN: 64512, Passive: true})
	if s, ok := b.session("node-a"); !ok || s.State != Established {
		t.Errorf("b's session after renaming a: got %+v (configured: %v), want it still established", s, ok)
	}
	if got, want := b.Learned(), withPeer(routesA, "node-a"); !slices.Equal(got, sorted(want)) {
		t.Errorf("b's routes after renaming a: got %v, want %v", got, want)
	}

	// Withdraw one block and move another to a new next hop.
	moved := Route{Prefix: prefix("10.244.0.0/26"), NextHop: addr("192.168.77.99")}
	a.Advertise(moved, routesA[2])
	b.waitLearned(withPeer([]Route{moved, routesA[2]}, "node-a")...)

	// Removing the peer ends the session: b's routes leave a at once, and b, which
	// still has a configured, loses the session and a's routes.
	a.SetPeers()
	if got := a.Sessions(); len(got) != 0 {
		t.Errorf("a's sessions after removing b: %+v", got)
	}
	a.waitLearned()
	b.waitLearned()
	eventually(t, "b's session with a down", func() (bool, string) {
		s, ok := b.session("node-a")
		return ok && s.State != Established, fmt.Sprintf("%+v", s)
	})

	// Stop ends the speaker: its calls and its Watch return ErrStopped.
	b.call(helperRequest{Op: "stop"})
	if got := b.call(helperRequest{Op: "learned"}); got.Error != ErrStopped.Error() {
		t.Errorf("Learned after Stop: got error %q, want %q", got.Error, ErrStopped)
	}
	eventually(t, "b's Watch returns", func() (bool, string) {
		w := b.call(helperRequest{Op: "watched"})
		return w.WatchErr == ErrStopped.Error(), fmt.Sprintf("watch error %q", w.WatchErr)
	})
}

// BIRD 2 as an external (eBGP) peer, the way a top-of-rack router would be: before
// the peer is configured nothing is exchanged although BIRD keeps trying; once it
// is, BIRD learns the node's block with the node's address as next hop, and the
// speaker learns BIRD's non-pod prefix with BIRD's address as next hop; a withdrawal
// reaches BIRD.
func TestPrivilegedBIRD(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	testutil.RequireCommands(t, "bird", "birdc")
	c := newCluster(t, 2)
	nodeAddr, birdAddr := lab.UnderlayAddr(0).Addr(), lab.UnderlayAddr(1).Addr()
	const nodeASN, birdASN = 64512, 65001
	const birdRoute = "198.51.100.0/24"

	node := startSpeaker(t, "node", c.Nodes[0].Node, testConfig(nodeAddr.String(), nodeASN))
	block := Route{Prefix: prefix("10.244.0.0/26"), NextHop: nodeAddr}
	node.Advertise(block)
	bird := birdtest.Start(t, c.Nodes[1].Node, fmt.Sprintf(`
log stderr all;
router id %[1]s;

protocol device {
}

protocol static static4 {
	ipv4;
	route %[5]s unreachable;
}

protocol bgp podnet {
	local %[1]s as %[2]d;
	neighbor %[3]s as %[4]d;
	hold time 9;
	keepalive time 3;
	connect delay time 1;
	connect retry time 1;
	error wait time 1, 2;
	ipv4 {
		import all;
		export all;
	};
}
`, birdAddr, birdASN, nodeAddr, nodeASN, birdRoute))

	// Negative control: BIRD dials the node, whose speaker has no peer yet and drops
	// the connection. Nothing is learned on either side.
	eventually(t, "BIRD tried to connect to the node and was refused", func() (bool, string) {
		out := bird.C("show", "protocols", "all", "podnet")
		return strings.Contains(out, "Last error"), out
	})
	if out := bird.C("show", "protocols", "podnet"); !strings.Contains(out, "podnet") || strings.Contains(out, "Established") {
		t.Errorf("BIRD's session before the peer is configured: want one, not established; got\n%s", out)
	}
	if got := node.Sessions(); len(got) != 0 {
		t.Errorf("node's sessions before SetPeers: %+v", got)
	}
	if got := node.Learned(); len(got) != 0 {
		t.Errorf("node learned before SetPeers: %v", got)
	}
	if out := bird.C("show", "route", "protocol", "podnet"); strings.Contains(out, block.Prefix.String()) {
		t.Errorf("BIRD learned %s before the session:\n%s", block.Prefix, out)
	}

	node.SetPeers(Peer{Name: "bird", Address: birdAddr, ASN: birdASN})
	node.waitSession("bird", Established)
	eventually(t, "BIRD's session established", func() (bool, string) {
		out := bird.C("show", "protocols", "podnet")
		return strings.Contains(out, "Established"), out
	})

	// BIRD -> podnet: the non-pod prefix, with BIRD's address as next hop.
	node.waitLearned(Route{Prefix: prefix(birdRoute), NextHop: birdAddr, Peer: "bird"})

	// podnet -> BIRD: the block, via the node, AS path = the node's AS.
	query := []string{"show", "route", block.Prefix.String(), "all"}
	eventually(t, "BIRD learns the node's block", func() (bool, string) {
		out := bird.C(query...)
		return strings.Contains(out, block.Prefix.String()), out
	})
	out := bird.C(query...)
	for _, want := range []string{
		"via " + nodeAddr.String(),
		fmt.Sprintf("BGP.as_path: %d", nodeASN),
		"BGP.next_hop: " + nodeAddr.String(),
		"[podnet ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("BIRD's route to %s: want %q in\n%s", block.Prefix, want, out)
		}
	}
	if s := node.waitSession("bird", Established); s.Received != 1 || s.Advertised != 1 {
		t.Errorf("node's session with BIRD: got %d received, %d advertised; want 1, 1", s.Received, s.Advertised)
	}

	// A withdrawal reaches BIRD.
	node.Advertise()
	eventually(t, "BIRD drops the withdrawn block", func() (bool, string) {
		out := bird.C("show", "route", "protocol", "podnet")
		return !strings.Contains(out, block.Prefix.String()), out
	})
}
