package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agentproc"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/testutil"
	"github.com/podnet/podnet/internal/testutil/birdtest"
)

// The cross-node bgp mode on three nodes whose agents run inside their namespaces, with
// Debian's etcd and BIRD 2 on the underlay (192.168.77.1) as a top-of-rack router of
// another AS that every node peers with: the nodes mesh and learn each other's blocks,
// pods of a bridge and of a routed network talk across nodes, BIRD learns every
// node's blocks and routes the underlay to the pods, the nodes install the router's own
// prefix, and a removed peer's route, a dead node's blocks are withdrawn.
func TestPrivilegedClusterBGP(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommands(t, "etcd", "bird", "birdc")
	c, err := lab.NewCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tor := lab.UnderlayGateway.Addr()
	etcd, err := agentproc.StartEtcdIn(t.TempDir(), c.Underlay, tor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Stop)

	const torAS, torPrefix = 65001, "198.51.100.0/24"
	var neighbours strings.Builder
	for i := range 3 {
		fmt.Fprintf(&neighbours, `
protocol bgp n%d {
	local %s as %d;
	neighbor %s as %d;
	hold time 9;
	keepalive time 3;
	connect delay time 1;
	connect retry time 1;
	error wait time 1, 2;
	ipv4 { import all; export all; };
}
`, i, tor, torAS, lab.UnderlayAddr(i).Addr(), api.DefaultASN)
	}
	bird := birdtest.Start(t, c.Underlay, fmt.Sprintf(`
log stderr all;
router id %s;
protocol device {
}
protocol kernel {
	ipv4 { import none; export filter { if proto = "static4" then reject; accept; }; };
}
protocol static static4 {
	ipv4;
	route %s unreachable;
}
%s`, tor, torPrefix, neighbours.String()))

	var agents []*clusterAgent
	for i := range 3 {
		agents = append(agents, runClusterAgent(t, c, i, etcd.Endpoint(), true))
	}
	ctx := context.Background()
	for _, spec := range []api.NetworkSpec{
		{Name: "bgpbr", Subnets: []string{"10.95.0.0/16"}, CrossNode: api.CrossNodeBGP},
		{Name: "bgprt", Driver: api.DriverRouted, Subnets: []string{"10.96.0.0/16"}, CrossNode: api.CrossNodeBGP},
	} {
		if _, err := agents[0].c.CreateNetwork(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	// The peer, configured once on n1, is every node's.
	peer := decodeJSON[api.BGPPeer](t, mustCLI(t, agents[1], "-o", "json", "bgp", "peer", "add", "tor", "--address", tor.String(), "--as", fmt.Sprint(torAS)))
	if peer != (api.BGPPeer{Name: "tor", Address: tor, ASN: torAS}) {
		t.Errorf("bgp peer add: %+v", peer)
	}
	// Refused: a node's address (the mesh has it) and a zero AS, each named.
	for args, want := range map[string]string{
		"peer add n2 --address " + lab.UnderlayAddr(2).Addr().String() + " --as 65002": `address "192.168.77.12": is node "n2"`,
		"peer add zero --address 192.168.77.99 --as 0":                                 `asn "0": must be 1 to 4294967295`,
	} {
		if r := runPodnet(t, agents[0].Socket(), nil, append([]string{"bgp"}, strings.Fields(args)...)...); r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Errorf("bgp %s: want an error with %q, got %s", args, want, r)
		}
	}

	pods := map[string][]clusterPod{}
	for i, a := range agents {
		for _, net := range []string{"bgpbr", "bgprt"} {
			pods[net] = append(pods[net], attachOn(t, c, a, net, fmt.Sprintf("%s%d", net, i), nil))
		}
	}
	// Each node learns the other two nodes' blocks of both networks from the mesh, and
	// the router's prefix from BIRD.
	for i := range 3 {
		eventuallyState(t, fmt.Sprintf("routes learned by n%d", i), func() (bool, string) {
			r, l := crossRoutes(t, c, i), learnedRoutes(t, c.Nodes[i].Node)
			return len(r) == 4 && slices.Equal(l, []string{torPrefix + " via " + tor.String()}), fmt.Sprint(r, l)
		})
	}
	for _, net := range []string{"bgpbr", "bgprt"} {
		mustCross(t, pods[net][0], pods[net][1], 8080)
		mustCross(t, pods[net][2], pods[net][0], 8090)
	}

	// BIRD learned every node's blocks with the node as next hop, and routes the
	// underlay to the pods: the routed network's pod answers the router without NAT.
	for i, a := range agents {
		info := nodeInfo(t, a, fmt.Sprintf("n%d", i))
		for _, net := range []string{"bgpbr", "bgprt"} {
			for _, b := range info.Blocks[net] {
				bird.Wait(fmt.Sprintf("BIRD's route to n%d's block %s", i, b), func(out string) bool {
					return strings.Contains(out, "via "+lab.UnderlayAddr(i).Addr().String())
				}, "show", "route", "for", b.Addr().String(), "all")
			}
		}
	}
	p := pods["bgprt"][1]
	if got, err := probe.TCP(ctx, c.Underlay, p.ns, netip.AddrPortFrom(p.ip, 8100), 5*time.Second); err != nil || got != tor {
		t.Errorf("router -> %s (n1): seen from %s, %v; want %s", p.ip, got, err, tor)
	}

	// bgp status: both mesh sessions and the router's, established; the router sent
	// its prefix (its copies of the nodes' blocks carry our AS and are refused).
	sessions := decodeJSON[[]api.BGPSession](t, mustCLI(t, agents[0], "-o", "json", "bgp", "status"))
	var states []string
	for _, s := range sessions {
		states = append(states, fmt.Sprintf("%s mesh=%v %s", s.Peer, s.Mesh, s.State))
		if s.Peer == "tor" && (s.Received != 1 || s.Advertised < 2 || s.UptimeSeconds < 0) {
			t.Errorf("session with tor: %+v", s)
		}
	}
	if want := []string{"n1 mesh=true established", "n2 mesh=true established", "tor mesh=false established"}; !slices.Equal(states, want) {
		t.Errorf("bgp status of n0: %v; want %v", states, want)
	}

	// The peer removed: every node withdraws the router's prefix.
	mustCLI(t, agents[2], "bgp", "peer", "rm", "tor")
	for i := range 3 {
		eventuallyState(t, fmt.Sprintf("n%d without the router's route", i), func() (bool, string) {
			l := learnedRoutes(t, c.Nodes[i].Node)
			return len(l) == 0, fmt.Sprint(l)
		})
	}

	// n2's agent killed: once its lease expires, the others drop it from the mesh and
	// its blocks' routes; restarted, they come back and its pods kept their addresses.
	agents[2].Kill()
	for i := range 2 {
		eventuallyState(t, fmt.Sprintf("n%d without n2's blocks", i), func() (bool, string) {
			r := crossRoutes(t, c, i)
			return len(r) == 2 && !strings.Contains(strings.Join(r, ","), lab.UnderlayAddr(2).Addr().String()), strings.Join(r, ", ")
		})
	}
	// (GoBGP holds a peer whose session went down idle for 5 s before it accepts or
	// dials again.)
	agents[2].start(t)
	for i := range 3 {
		eventuallyWithin(t, fmt.Sprintf("routes of n%d after n2's restart", i), 30*time.Second, func() (bool, string) {
			r := crossRoutes(t, c, i)
			return len(r) == 4, strings.Join(r, ", ")
		})
	}
	for _, net := range []string{"bgpbr", "bgprt"} {
		mustCross(t, pods[net][0], pods[net][2], 8110)
	}
}

// mustCLI runs the CLI against a cluster agent and fails the test unless it exits 0.
func mustCLI(t *testing.T, a *clusterAgent, args ...string) cliResult {
	t.Helper()
	r := runPodnet(t, a.Socket(), nil, args...)
	if r.code != 0 {
		t.Fatalf("podnet %s: %s", strings.Join(args, " "), r)
	}
	return r
}

func nodeInfo(t *testing.T, a *clusterAgent, name string) api.NodeInfo {
	t.Helper()
	nodes, err := a.c.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("node %s not in %+v", name, nodes)
	return api.NodeInfo{}
}

// learnedRoutes lists the routes of ns to prefixes outside the pod networks that the
// node learned over BGP (kernel.LearnedProtocol), "DST via GW", sorted.
func learnedRoutes(t *testing.T, ns netns.NsHandle) []string {
	t.Helper()
	r, err := lab.RoutesOf(ns, kernel.LearnedProtocol)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
