package nft

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Ports of the policy traffic test, besides testPort (allowed by the rules).
const (
	otherPort      = testPort + 1 // served, never allowed
	persistentPort = testPort + 2 // the long-lived connection's
	policyHostPort = 18083        // published: -> r2:testPort
)

// addrRanges returns each address as a range of one.
func addrRanges(as ...netip.Addr) []AddrRange {
	out := make([]AddrRange, len(as))
	for i, a := range as {
		out[i] = AddrRange{a, a}
	}
	return out
}

// sandboxAddrs returns the addresses (both families) of sandbox name.
func (tp *topo) sandboxAddrs(name string) []netip.Addr {
	return []netip.Addr{tp.a(name, 0), tp.a(name, 1)}
}

// toPort is the connection from -> to's address of family fam on port; to may be
// "node" (its first uplink address). want nil: blocked (no answer).
func (tp *topo) toPort(from, to string, fam int, port uint16, want ...netip.Addr) conn {
	dst := tp.nodeOut[fam].Addr()
	if to != "node" {
		dst = tp.a(to, fam)
	}
	return conn{from: from, dst: netip.AddrPortFrom(dst, port), want: want}
}

// both is the connection c for each family, with the client's own address as the source
// the server sees when allowed.
func (tp *topo) both(allowed bool, from, to string, port uint16) []conn {
	var out []conn
	for _, f := range fams {
		var want []netip.Addr
		if allowed {
			want = []netip.Addr{tp.a(from, f)}
		}
		out = append(out, tp.toPort(from, to, f, port, want...))
	}
	return out
}

// policyDrops returns the policy drop counters.
func policyDrops(t *testing.T, tb *Table) (in, out uint64) {
	t.Helper()
	in, out, err := tb.PolicyDrops()
	if err != nil {
		t.Fatal(err)
	}
	return in, out
}

// echoConn is a TCP connection from one namespace to a server in another that echoes
// every line.
type echoConn struct{ c net.Conn }

// dialEcho listens on server in serverNS, connects from clientNS and returns the
// connection; the server echoes lines until the test ends.
func dialEcho(t *testing.T, clientNS, serverNS netns.NsHandle, server netip.AddrPort) *echoConn {
	t.Helper()
	var ln net.Listener
	must(t, inNetNS(serverNS, func() error {
		var err error
		ln, err = net.Listen("tcp", server.String())
		return err
	}), "listen on "+server.String())
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { c.Close() })
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	}()
	var c net.Conn
	must(t, inNetNS(clientNS, func() error {
		var err error
		c, err = net.DialTimeout("tcp", server.String(), 5*time.Second)
		return err
	}), "connect to "+server.String())
	t.Cleanup(func() { c.Close() })
	return &echoConn{c}
}

// roundTrip sends a line and waits for its echo.
func (e *echoConn) roundTrip(line string) error {
	e.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(e.c, line); err != nil {
		return err
	}
	got, err := bufio.NewReader(e.c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echo %q, want %q", got, line)
	}
	return nil
}

// Network policy with real traffic, routed pair r1 (client) -> r2 (server), and bridged
// a1 -> a2: default deny, rules that allow a peer on a port and nothing else, egress
// (to another pod and to the node itself), replies of allowed connections, an
// established connection that outlives a change that denies new ones, published ports
// subject to the ingress policy, the drop counters.
func TestPrivilegedPolicyTraffic(t *testing.T) {
	tp := buildTopo(t)
	// Bridged pods go through the inet forward hook only with br_netfilter's calls
	// (per namespace; new namespaces start with 1): written here, in the node's
	// namespace only.
	writeSysctls(t, tp.ns["node"], "1", "/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables")
	for _, name := range []string{"r1", "r2", "a1", "a2", "node"} {
		servePort(t, tp.ns[name], testPort, false)
		servePort(t, tp.ns[name], otherPort, false)
	}
	tb := tp.open(t)
	var published []PortMapping
	for _, f := range fams {
		published = append(published, PortMapping{Protocol: "tcp", HostPort: policyHostPort, Addr: tp.a("r2", f), Port: testPort})
	}
	base := tp.ruleset(published...)
	with := func(ps ...Policy) Ruleset {
		r := base
		r.Policies = ps
		return r
	}
	published4 := conn{from: "outside", dst: netip.AddrPortFrom(tp.nodeOut[0].Addr(), policyHostPort), want: []netip.Addr{tp.a("outside", 0)}}

	// Without policy: connected.
	mustSync(t, tb, base)
	tp.check(t, append(tp.both(true, "r1", "r2", testPort), tp.both(true, "r1", "r2", otherPort)...)...)
	tp.check(t, published4)
	if t.Failed() {
		t.Fatal("the topology does not connect without policies")
	}

	// Default deny ingress on r2: nothing new reaches it, the drops are counted; r2's
	// own connections work (their replies are established). (r2's and r1's policies are
	// each of a group of its own, a2's of group "".)
	r2Deny := Policy{ID: "srv", Name: "test/server", Group: "srv", Selected: tp.sandboxAddrs("r2"), Ingress: true}
	mustSync(t, tb, with(r2Deny))
	tp.check(t, append(tp.both(false, "r1", "r2", testPort), tp.both(true, "r2", "r1", testPort)...)...)
	if in, out := policyDrops(t, tb); in == 0 || out != 0 {
		t.Errorf("drops after default deny ingress: ingress %d, egress %d; want ingress > 0, egress 0", in, out)
	}

	// A rule allows r1 on testPort (and persistentPort): r1 connects there and not on
	// otherPort; the published port's clients (outside) are not allowed either.
	rule := PolicyRule{Peers: addrRanges(tp.sandboxAddrs("r1")...)}
	for _, a := range tp.sandboxAddrs("r2") {
		rule.Ports = append(rule.Ports, ports(AddrRange{a, a}, "tcp", testPort), ports(AddrRange{a, a}, "tcp", persistentPort))
	}
	r2Allow := r2Deny
	r2Allow.IngressRules = []PolicyRule{rule}
	mustSync(t, tb, with(r2Allow))
	before, _ := policyDrops(t, tb)
	tp.check(t, append(tp.both(true, "r1", "r2", testPort), tp.both(false, "r1", "r2", otherPort)...)...)
	published4.want = nil
	tp.check(t, published4)
	if after, _ := policyDrops(t, tb); after <= before {
		t.Errorf("ingress drops %d after blocked connections, were %d", after, before)
	}

	// An established connection outlives an Update that denies new ones: neither Update
	// nor Sync touches conntrack.
	persistent := dialEcho(t, tp.ns["r1"], tp.ns["r2"], netip.AddrPortFrom(tp.a("r2", 0), persistentPort))
	must(t, persistent.roundTrip("before"), "round trip before the change")
	noPeer := r2Allow
	noPeer.IngressRules = []PolicyRule{{Ports: rule.Ports}}
	add, remove, ok := PolicyDelta([]Policy{r2Allow}, []Policy{noPeer})
	if !ok {
		t.Fatal("PolicyDelta: Sync needed")
	}
	must(t, tb.Update(add, remove), "update")
	wantInSync(t, tb, with(noPeer), true)
	tp.check(t, tp.both(false, "r1", "r2", testPort)...)
	must(t, persistent.roundTrip("after"), "round trip on the established connection after the change")
	// Allowed by address again: the outside's published port too.
	outside := r2Allow
	outside.IngressRules = []PolicyRule{{Peers: append(joined(rule.Peers), addrRanges(tp.a("outside", 0), tp.a("outside", 1))...), Ports: rule.Ports}}
	add, remove, _ = PolicyDelta([]Policy{noPeer}, []Policy{outside})
	must(t, tb.Update(add, remove), "update")
	wantInSync(t, tb, with(outside), true)
	published4.want = []netip.Addr{tp.a("outside", 0)}
	tp.check(t, append(tp.both(true, "r1", "r2", testPort), published4)...)

	// Default deny egress on r1: to r2 (which no ingress policy isolates now) and to
	// the node itself (chain input); connections to r1 work (their replies are
	// established).
	r1Deny := Policy{ID: "cli", Name: "test/client", Group: "cli", Selected: tp.sandboxAddrs("r1"), Egress: true}
	mustSync(t, tb, with(r1Deny))
	// Without neighbour entries, the node resolves r1 again: r1's neighbour
	// advertisement, from its own (isolated) address to the node, is not policed.
	flushNeighbours(t, tp.ns["node"], "vr1")
	flushNeighbours(t, tp.ns["r1"], "eth0")
	tp.check(t, joined(tp.both(false, "r1", "r2", testPort), tp.both(false, "r1", "node", testPort), tp.both(true, "r2", "r1", testPort))...)
	if in, out := policyDrops(t, tb); in != 0 || out == 0 {
		t.Errorf("drops after default deny egress: ingress %d, egress %d; want ingress 0, egress > 0", in, out)
	}
	// An egress rule with any peer, testPort only: to r2 and to the node on testPort,
	// not on otherPort.
	r1Allow := r1Deny
	r1Allow.EgressRules = []PolicyRule{{AnyPeer: true, Ports: []PortRange{ports(all4, "tcp", testPort), ports(all6, "tcp", testPort)}}}
	mustSync(t, tb, with(r1Allow))
	node := func(allowed bool, port uint16) []conn {
		var out []conn
		for _, f := range fams {
			var want []netip.Addr
			if allowed {
				want = []netip.Addr{tp.a("r1", f)}
			}
			out = append(out, tp.toPort("r1", "node", f, port, want...))
		}
		return out
	}
	tp.check(t, joined(tp.both(true, "r1", "r2", testPort), tp.both(false, "r1", "r2", otherPort), node(true, testPort), node(false, otherPort))...)

	// Bridged pods: a2 isolated, a1 allowed on testPort.
	a2Rule := PolicyRule{Peers: addrRanges(tp.sandboxAddrs("a1")...)}
	for _, a := range tp.sandboxAddrs("a2") {
		a2Rule.Ports = append(a2Rule.Ports, ports(AddrRange{a, a}, "tcp", testPort))
	}
	a2Deny := Policy{ID: "bridged", Name: "test/bridged", Selected: tp.sandboxAddrs("a2"), Ingress: true}
	mustSync(t, tb, with(a2Deny))
	tp.check(t, tp.both(false, "a1", "a2", testPort)...)
	a2Allow := a2Deny
	a2Allow.IngressRules = []PolicyRule{a2Rule}
	mustSync(t, tb, with(a2Allow))
	tp.check(t, append(tp.both(true, "a1", "a2", testPort), tp.both(false, "a1", "a2", otherPort)...)...)

	// The three groups at once: each pod's connections cross the chains of its group,
	// and the drops of every group's chain are counted. r1 may connect to r2 on any
	// port (its egress), r2 admits it on testPort only (its ingress).
	r1ToR2 := r1Deny
	r1ToR2.EgressRules = []PolicyRule{{Peers: addrRanges(tp.sandboxAddrs("r2")...), AnyPort: true}}
	mustSync(t, tb, with(a2Allow, r2Allow, r1ToR2))
	tp.check(t, joined(tp.both(true, "r1", "r2", testPort), tp.both(false, "r1", "r2", otherPort), node(false, testPort),
		tp.both(true, "a1", "a2", testPort), tp.both(false, "a1", "a2", otherPort))...)
	if in, out := policyDrops(t, tb); in < 4 || out < 2 {
		t.Errorf("drops with three groups: ingress %d, egress %d; want at least 4 (r1 to r2's, a1 to a2's other port: groups srv and \"\") and 2 (r1 to the node: group cli)", in, out)
	}
}

// joined concatenates lists.
func joined[T any](lists ...[]T) []T {
	var out []T
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// flushNeighbours deletes the IPv6 neighbour entries of interface ifname in ns, but
// permanent ones.
func flushNeighbours(t *testing.T, ns netns.NsHandle, ifname string) {
	t.Helper()
	h := handleAt(t, ns)
	link := linkByName(t, h, ifname)
	neighs, err := h.NeighList(link.Attrs().Index, netlink.FAMILY_V6)
	must(t, err, "list neighbours of "+ifname)
	for _, n := range neighs {
		if n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
			continue
		}
		must(t, h.NeighDel(&n), "delete neighbour "+n.IP.String())
	}
}
