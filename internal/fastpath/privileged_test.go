package fastpath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv4"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/probe"
)

const timeout = 2 * time.Second

// bed is a node with bridge pn-fp (10.88.9.0/24, fd00:88:9::/64) and three pods a, b, c
// on it, podnet's tables applied through the fast path.
type bed struct {
	l      *lab.Lab
	fp     *Applier
	rs     nft.Ruleset
	pods   map[string]netns.NsHandle
	addr   map[string]netip.Addr
	addr6  map[string]netip.Addr
	drops  func() uint64
	logged []string
}

// newLab is a bed of a new lab without pods yet.
func newLab(t *testing.T) (*bed, *lab.Lab) {
	t.Helper()
	l := labtest.New(t)
	return &bed{l: l, pods: map[string]netns.NsHandle{}, addr: map[string]netip.Addr{}, addr6: map[string]netip.Addr{}}, l
}

func newBed(t *testing.T) *bed {
	t.Helper()
	b, l := newLab(t)
	if err := l.Bridge("pn-fp", netip.MustParsePrefix("10.88.9.1/24"), netip.MustParsePrefix("fd00:88:9::1/64")); err != nil {
		t.Fatal(err)
	}
	b.rs.Networks = []nft.Network{{Name: "fp", Bridge: "pn-fp", Subnets: []netip.Prefix{
		netip.MustParsePrefix("10.88.9.0/24"), netip.MustParsePrefix("fd00:88:9::/64")}}}
	for i, name := range []string{"a", "b", "c"} {
		ns, err := l.Sandbox()
		if err != nil {
			t.Fatal(err)
		}
		a4 := netip.AddrFrom4([4]byte{10, 88, 9, byte(2 + i)})
		a6 := netip.MustParseAddr(fmt.Sprintf("fd00:88:9::%d", 2+i))
		mac, err := l.Plug(ns, lab.Veth{HostIf: "pnv-fp-" + name, Bridge: "pn-fp",
			Addrs: []netip.Prefix{netip.PrefixFrom(a4, 24), netip.PrefixFrom(a6, 64)}})
		if err != nil {
			t.Fatal(err)
		}
		b.pods[name], b.addr[name], b.addr6[name] = ns, a4, a6
		b.rs.Endpoints = append(b.rs.Endpoints, nft.Endpoint{HostIf: "pnv-fp-" + name, Bridge: "pn-fp", Addrs: []netip.Addr{a4, a6}, MAC: mac})
	}
	b.open(t)
	return b
}

// newRoutedBed is a node with routed network fp-r (10.77.9.0/24, fd00:77:9::/64) and
// three pods x, y, z on it, each behind its host veth, podnet's tables applied through
// the fast path.
func newRoutedBed(t *testing.T) *bed {
	t.Helper()
	b, l := newLab(t)
	for _, key := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if err := kernel.WriteSysctl(l.Node, key, "1"); err != nil {
			t.Fatal(err)
		}
	}
	b.rs.Networks = []nft.Network{{Name: "fp-r", Subnets: []netip.Prefix{
		netip.MustParsePrefix("10.77.9.0/24"), netip.MustParsePrefix("fd00:77:9::/64")}}}
	for i, name := range []string{"x", "y", "z"} {
		ns, err := l.Sandbox()
		if err != nil {
			t.Fatal(err)
		}
		a4 := netip.AddrFrom4([4]byte{10, 77, 9, byte(2 + i)})
		a6 := netip.MustParseAddr(fmt.Sprintf("fd00:77:9::%d", 2+i))
		mac, err := l.Routed(ns, "pnr-fp-"+name, a4, a6)
		if err != nil {
			t.Fatal(err)
		}
		b.pods[name], b.addr[name], b.addr6[name] = ns, a4, a6
		b.rs.Endpoints = append(b.rs.Endpoints, nft.Endpoint{HostIf: "pnr-fp-" + name, Addrs: []netip.Addr{a4, a6}, MAC: mac})
	}
	b.open(t)
	return b
}

// open wraps podnet's tables of the node in the fast path.
func (b *bed) open(t *testing.T) {
	t.Helper()
	tbl, err := nft.Open(int(b.l.Node))
	if err != nil {
		t.Fatal(err)
	}
	if b.fp, err = New(b.l.Node, tbl, func(format string, args ...any) {
		b.logged = append(b.logged, fmt.Sprintf(format, args...))
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.fp.Close(); err != nil {
			t.Error(err)
		}
	})
	b.drops = func() uint64 {
		in, _, err := tbl.PolicyDrops()
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
}

// sync writes the bed's tables and waits until the fast path holds its three pods.
func (b *bed) sync(t *testing.T) {
	t.Helper()
	if err := b.fp.Sync(b.rs); err != nil {
		t.Fatal(err)
	}
	b.waitEntries(t, 3, 6)
}

// waitEntries waits until the fast path holds n addresses in each map (the links are
// followed asynchronously).
func (b *bed) waitEntries(t *testing.T, ports, n int) {
	t.Helper()
	var s Stats
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var err error
		if s, err = b.fp.Stats(); err != nil {
			t.Fatal(err)
		}
		if s.Ports == ports && s.SrcEntries == n && s.DstEntries == n {
			return
		}
	}
	t.Fatalf("fast path holds %d ports, %d/%d entries; want %d ports, %d entries (log: %q)", s.Ports, s.SrcEntries, s.DstEntries, ports, n, b.logged)
}

// quiet waits until the fast path has redirected nothing for 300 ms (the end of the
// connections before: FIN, last ACK), at most 3 s, and returns its counters: what a
// check counts from there on is its own traffic.
func (b *bed) quiet(t *testing.T) Stats {
	t.Helper()
	s := b.stats(t)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		next := b.stats(t)
		if next.Redirected == s.Redirected {
			return next
		}
		s = next
	}
	return s
}

func (b *bed) stats(t *testing.T) Stats {
	t.Helper()
	s, err := b.fp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// connect makes a TCP connection from pod from to pod to (IPv4, or IPv6 with v6) and
// returns how many packets the fast path redirected and passed meanwhile.
func (b *bed) connect(t *testing.T, from, to string, v6 bool) (redirected, passed uint64) {
	t.Helper()
	dst, src := b.addr[to], b.addr[from]
	if v6 {
		dst, src = b.addr6[to], b.addr6[from]
	}
	before := b.quiet(t)
	got, err := probe.TCP(context.Background(), b.pods[from], b.pods[to], netip.AddrPortFrom(dst, 8080), timeout)
	if err != nil || got != src {
		t.Fatalf("%s -> %s: the server saw %v (%v), want %s", from, to, got, err, src)
	}
	after := b.stats(t)
	return after.Redirected.Packets - before.Redirected.Packets, after.Passed.Packets - before.Passed.Packets
}

// Pods of one bridge reach each other through the fast path, both ways, IPv4 and IPv6;
// neighbour resolution still takes the kernel's path.
func TestPrivilegedFastPathRedirects(t *testing.T) {
	b := newBed(t)
	b.sync(t)
	for _, v6 := range []bool{false, true} {
		// A TCP connection with its data and close: at least 3 segments each way.
		if red, _ := b.connect(t, "a", "b", v6); red < 6 {
			t.Errorf("v6=%v: a -> b: %d packets redirected, want the connection's (>= 6)", v6, red)
		}
	}
	if s := b.stats(t); s.Passed.Packets == 0 {
		t.Errorf("no packet passed to the kernel's path; want neighbour discovery there")
	}
}

// An address that a policy isolates leaves the fast path before the tables change, both
// ways, and comes back after: the policy's drop counter counts the denied connect, and
// the same connect made before the policy and after it goes through.
func TestPrivilegedFastPathIsolation(t *testing.T) {
	b := newBed(t)
	none := nft.Policy{ID: "p1", Name: "ns/deny", Group: "g1", Ingress: true}
	b.rs.Policies = []nft.Policy{none}
	b.sync(t)
	if red, _ := b.connect(t, "a", "b", false); red == 0 {
		t.Fatal("a -> b: nothing redirected before the policy")
	}

	deny := none
	deny.Selected = []netip.Addr{b.addr["b"], b.addr6["b"]}
	if err := b.fp.Update(nft.Delta{Policies: []nft.Policy{deny}}, nft.Delta{Policies: []nft.Policy{none}}); err != nil {
		t.Fatal(err)
	}
	if s := b.stats(t); s.SrcEntries != 4 || s.DstEntries != 4 {
		t.Errorf("b isolated: %d/%d entries, want 4/4 (a's and c's)", s.SrcEntries, s.DstEntries)
	}
	drops, before := b.drops(), b.quiet(t)
	if err := probe.Blocked(context.Background(), b.pods["a"], b.pods["b"], netip.AddrPortFrom(b.addr["b"], 8080), time.Second); err != nil {
		t.Errorf("a -> b, b isolated: %v", err)
	}
	if d := b.drops() - drops; d == 0 {
		t.Errorf("a -> b, b isolated: the policy dropped nothing")
	}
	if red := b.stats(t).Redirected.Packets - before.Redirected.Packets; red != 0 {
		t.Errorf("a -> b, b isolated: %d packets redirected, want 0", red)
	}
	// b's own egress is not isolated, but its replies are tracked: a's connection to c
	// still takes the fast path, b's to c does not.
	if red, _ := b.connect(t, "a", "c", false); red == 0 {
		t.Errorf("a -> c: nothing redirected")
	}
	if red, _ := b.connect(t, "b", "c", false); red != 0 {
		t.Errorf("b -> c, b isolated: %d packets redirected, want 0", red)
	}

	if err := b.fp.Update(nft.Delta{Policies: []nft.Policy{none}}, nft.Delta{Policies: []nft.Policy{deny}, IngressIsolated: deny.Selected}); err != nil {
		t.Fatal(err)
	}
	b.waitEntries(t, 3, 6)
	if red, _ := b.connect(t, "a", "b", false); red == 0 {
		t.Errorf("a -> b after the policy: nothing redirected")
	}

	// UpdatePolicies: a new policy isolating b for egress.
	egress := nft.Policy{ID: "p2", Name: "ns/out", Group: "g1", Egress: true, Selected: []netip.Addr{b.addr["b"]}}
	if err := b.fp.UpdatePolicies([]nft.Policy{none}, []nft.Policy{none, egress}); err != nil {
		// A first Egress policy needs Sync (nft.Applier).
		if !errors.Is(err, nft.ErrNoTable) {
			t.Fatal(err)
		}
		b.rs.Policies = []nft.Policy{none, egress}
		if err := b.fp.Sync(b.rs); err != nil {
			t.Fatal(err)
		}
	}
	if s := b.stats(t); s.SrcEntries != 5 || s.DstEntries != 5 {
		t.Errorf("b's IPv4 isolated for egress: %d/%d entries, want 5/5", s.SrcEntries, s.DstEntries)
	}
}

// A pod that sends from an address that is not its own is not redirected: the
// anti-spoofing rules drop it. The same pod with its own address is.
func TestPrivilegedFastPathSpoofed(t *testing.T) {
	b := newBed(t)
	b.sync(t)
	if red, _ := b.connect(t, "c", "b", false); red == 0 {
		t.Fatal("c -> b: nothing redirected")
	}
	// c takes 10.88.9.50 instead of its own address.
	h, err := netlink.NewHandleAt(b.pods["c"])
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	own, _ := netlink.ParseAddr(netip.PrefixFrom(b.addr["c"], 24).String())
	spoofed, _ := netlink.ParseAddr("10.88.9.50/24")
	if err := h.AddrDel(eth0, own); err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(eth0, spoofed); err != nil {
		t.Fatal(err)
	}
	before := b.quiet(t)
	if err := probe.Blocked(context.Background(), b.pods["c"], b.pods["b"], netip.AddrPortFrom(b.addr["b"], 8080), time.Second); err != nil {
		t.Errorf("c -> b from 10.88.9.50: %v", err)
	}
	after := b.stats(t)
	if red := after.Redirected.Packets - before.Redirected.Packets; red != 0 {
		t.Errorf("c -> b from 10.88.9.50: %d packets redirected, want 0", red)
	}
	if after.Passed.Packets == before.Passed.Packets {
		t.Errorf("c -> b from 10.88.9.50: no packet passed to the kernel's path")
	}
}

// The fast path follows the links: a host veth that goes down takes its entries with
// it, and they come back with it; an endpoint removed by Update leaves the fast path
// and loses its program.
func TestPrivilegedFastPathLinks(t *testing.T) {
	b := newBed(t)
	b.sync(t)
	h, err := netlink.NewHandleAt(b.l.Node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	veth, err := h.LinkByName("pnv-fp-c")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetDown(veth); err != nil {
		t.Fatal(err)
	}
	b.waitEntries(t, 3, 4)
	if err := h.LinkSetUp(veth); err != nil {
		t.Fatal(err)
	}
	b.waitEntries(t, 3, 6)

	gone := b.rs.Endpoints[2]
	if err := b.fp.Update(nft.Delta{}, nft.Delta{Endpoints: []nft.Endpoint{gone}}); err != nil {
		t.Fatal(err)
	}
	b.waitEntries(t, 2, 4)
	progs, err := TCXIngress(b.l.Node)
	if err != nil {
		t.Fatal(err)
	}
	attached := map[string]bool{}
	for _, p := range progs {
		attached[p.Ifname] = p.Name == ProgName
	}
	if !attached["pnv-fp-a"] || !attached["pnv-fp-b"] || attached["pnv-fp-c"] || len(attached) != 2 {
		t.Errorf("attached to %v, want pnv-fp-a and pnv-fp-b", attached)
	}
}

// Bypass keeps a flow on the kernel's path (where a trace sees it) until undone.
func TestPrivilegedFastPathBypass(t *testing.T) {
	b := newBed(t)
	b.sync(t)
	undo, err := Bypass(b.l.Node, b.addr["a"], b.addr["b"])
	if err != nil {
		t.Fatal(err)
	}
	if red, passed := b.connect(t, "a", "b", false); red != 0 || passed < 6 {
		t.Errorf("a -> b bypassed: %d redirected, %d passed; want 0, >= 6", red, passed)
	}
	if red, _ := b.connect(t, "a", "c", false); red == 0 {
		t.Errorf("a -> c, not bypassed: nothing redirected")
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	if red, _ := b.connect(t, "b", "a", false); red == 0 {
		t.Errorf("b -> a after the bypass: nothing redirected")
	}

	// Without a source: every pod's flows with b.
	if undo, err = Bypass(b.l.Node, netip.Addr{}, b.addr["b"]); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"a", "c"} {
		if red, _ := b.connect(t, from, "b", false); red != 0 {
			t.Errorf("%s -> b bypassed: %d redirected, want 0", from, red)
		}
	}
	if red, _ := b.connect(t, "a", "c", false); red == 0 {
		t.Errorf("a -> c, not bypassed: nothing redirected")
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	if red, _ := b.connect(t, "c", "b", false); red == 0 {
		t.Errorf("c -> b after the bypass: nothing redirected")
	}
}

// Routed pods reach each other through the fast path, both ways, IPv4 and IPv6, one hop
// further (the TTL goes down by one as the node's forwarding would take it); a packet
// whose TTL ends at the node takes the kernel's path.
func TestPrivilegedFastPathRouted(t *testing.T) {
	b := newRoutedBed(t)
	b.sync(t)
	for _, v6 := range []bool{false, true} {
		if red, _ := b.connect(t, "x", "y", v6); red < 6 {
			t.Errorf("v6=%v: x -> y: %d packets redirected, want the connection's (>= 6)", v6, red)
		}
	}
	for _, c := range []struct {
		ttl, want int
	}{{64, 63}, {2, 1}} {
		before := b.quiet(t)
		if got := udpTTL(t, b.pods["x"], b.pods["y"], b.addr["y"], c.ttl); got != c.want {
			t.Errorf("datagram sent with TTL %d arrived with %d, want %d", c.ttl, got, c.want)
		}
		if red := b.stats(t).Redirected.Packets - before.Redirected.Packets; red != 1 {
			t.Errorf("datagram with TTL %d: %d redirected, want 1", c.ttl, red)
		}
	}
	// TTL 1 ends at the node: the kernel's path drops it (ICMP time exceeded).
	before := b.quiet(t)
	if got := udpTTL(t, b.pods["x"], b.pods["y"], b.addr["y"], 1); got != -1 {
		t.Errorf("datagram sent with TTL 1 arrived (TTL %d), want it dropped at the node", got)
	}
	if after := b.stats(t); after.Redirected.Packets != before.Redirected.Packets || after.Passed.Packets == before.Passed.Packets {
		t.Errorf("datagram with TTL 1: redirected %d -> %d, passed %d -> %d; want it passed",
			before.Redirected.Packets, after.Redirected.Packets, before.Passed.Packets, after.Passed.Packets)
	}
}

// udpTTL sends one datagram with the given TTL from ns from to to:9999 in ns to and
// returns the TTL it arrived with, or -1 when none arrived within a second.
func udpTTL(t *testing.T, from, to netns.NsHandle, dst netip.Addr, ttl int) int {
	t.Helper()
	pc, err := kernel.ListenPacketIn(to, "udp4", netip.AddrPortFrom(dst, 9999).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	p := ipv4.NewPacketConn(pc)
	if err := p.SetControlMessage(ipv4.FlagTTL, true); err != nil {
		t.Fatal(err)
	}
	c, err := kernel.DialIn(context.Background(), from, "udp4", netip.AddrPortFrom(dst, 9999).String(), timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := ipv4.NewConn(c).SetTTL(ttl); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ttl")); err != nil {
		t.Fatal(err)
	}
	p.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 16)
	_, cm, _, err := p.ReadFrom(buf)
	if err != nil {
		return -1
	}
	return cm.TTL
}

// A routed pod that a policy comes to isolate keeps its open connections (conntrack
// picks them up mid-way: the policies' pickup rule for routed pods), while new ones
// are denied; before the policy the same connect went through the fast path.
func TestPrivilegedFastPathRoutedIsolationKeepsConnections(t *testing.T) {
	b := newRoutedBed(t)
	none := nft.Policy{ID: "p1", Name: "ns/deny", Group: "g1", Ingress: true}
	b.rs.Policies = []nft.Policy{none}
	b.sync(t)
	if red, _ := b.connect(t, "x", "y", false); red == 0 {
		t.Fatal("x -> y: nothing redirected before the policy")
	}
	// An open connection x -> y, echoed by y.
	l, err := kernel.ListenIn(b.pods["y"], "tcp", netip.AddrPortFrom(b.addr["y"], 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go probe.ServeEcho(l)
	c, err := kernel.DialIn(context.Background(), b.pods["x"], "tcp", netip.AddrPortFrom(b.addr["y"], 7000).String(), timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func(what string) error { return probe.EchoOnce(c, what, timeout) }
	before := b.quiet(t)
	if err := echo("before"); err != nil {
		t.Fatalf("echo before the policy: %v", err)
	}
	if b.stats(t).Redirected.Packets == before.Redirected.Packets {
		t.Fatal("echo before the policy: not on the fast path")
	}

	deny := none
	deny.Selected = []netip.Addr{b.addr["y"], b.addr6["y"]}
	if err := b.fp.Update(nft.Delta{Policies: []nft.Policy{deny}}, nft.Delta{Policies: []nft.Policy{none}}); err != nil {
		t.Fatal(err)
	}
	before = b.quiet(t)
	if err := echo("after"); err != nil {
		t.Errorf("echo on the open connection after y was isolated: %v", err)
	}
	if red := b.stats(t).Redirected.Packets - before.Redirected.Packets; red != 0 {
		t.Errorf("y isolated: %d packets redirected, want 0", red)
	}
	drops := b.drops()
	if err := probe.Blocked(context.Background(), b.pods["x"], b.pods["y"], netip.AddrPortFrom(b.addr["y"], 8080), time.Second); err != nil {
		t.Errorf("new connection x -> y, y isolated: %v", err)
	}
	if b.drops() == drops {
		t.Error("new connection x -> y, y isolated: the policy dropped nothing")
	}
}
