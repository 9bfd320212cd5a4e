package nft

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

// conntrackHas reports whether the conntrack table of ns has an entry whose original
// direction goes from src to dst.
func conntrackHas(t *testing.T, ns netns.NsHandle, src, dst netip.Addr) bool {
	t.Helper()
	flows, err := kernel.ConntrackFlows(ns, dst.Is6())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		s, _ := netip.AddrFromSlice(f.Forward.SrcIP)
		d, _ := netip.AddrFromSlice(f.Forward.DstIP)
		if s.Unmap() == src && d.Unmap() == dst {
			return true
		}
	}
	return false
}

// wantTracked checks, for families fs, whether conntrack has an entry from sandbox from
// to to (a sandbox, or "gw" for from's gateway, the bridge's address).
func (tp *topo) wantTracked(t *testing.T, want bool, from, to string, fs ...int) {
	t.Helper()
	for _, f := range fs {
		var dst netip.Addr
		if to == "gw" {
			dst = host(netA.Subnets, 1)[f].Addr()
		} else {
			dst = tp.a(to, f)
		}
		if got := conntrackHas(t, tp.ns["node"], tp.a(from, f), dst); got != want {
			t.Errorf("conntrack entry %s (%v) -> %s (%v): %v, want %v", from, tp.a(from, f), to, dst, got, want)
		}
	}
}

// Traffic between two pods of one bridge that no policy isolates is not tracked
// (notrackRules), TCP and UDP; a pod's traffic to its gateway (the node) is, routed pods'
// traffic is, and so is traffic to a pod once a policy isolates it. A TCP connection
// opened untracked outlives a policy that comes to deny such connections (conntrack picks
// it up, chain policies lets its segments without SYN pass); a UDP flow is judged like a
// new one at its next datagram.
func TestPrivilegedUntrackedWithinBridge(t *testing.T) {
	tp := buildTopo(t)
	writeSysctls(t, tp.ns["node"], "1", "/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables")
	for _, name := range []string{"a1", "a2", "r1", "r2", "node"} {
		servePort(t, tp.ns[name], testPort, true)
	}
	tb := tp.open(t)
	base := tp.ruleset()
	mustSync(t, tb, base)

	udp := func(cs []conn) []conn {
		for i := range cs {
			cs[i].proto = "udp"
		}
		return cs
	}
	gw := func(from string) []conn {
		var out []conn
		for _, f := range fams {
			dst := netip.AddrPortFrom(host(netA.Subnets, 1)[f].Addr(), testPort)
			out = append(out, conn{from: from, dst: dst, want: []netip.Addr{tp.a(from, f)}})
		}
		return out
	}
	tp.check(t, joined(tp.both(true, "a1", "a2", testPort), udp(tp.both(true, "a1", "a2", testPort)),
		tp.both(true, "r1", "r2", testPort), udp(tp.both(true, "r1", "r2", testPort)), gw("a1"))...)
	if t.Failed() {
		t.Fatal("the topology does not connect")
	}
	tp.wantTracked(t, true, "a1", "gw", fams...) // the check: conntrack is on and read
	tp.wantTracked(t, false, "a1", "a2", fams...)
	tp.wantTracked(t, true, "r1", "r2", fams...)

	// A UDP socket and a TCP connection a1 -> a2, untracked.
	var dgram net.Conn
	must(t, inNetNS(tp.ns["a1"], func() error {
		var err error
		dgram, err = net.Dial("udp", netip.AddrPortFrom(tp.a("a2", 0), testPort).String())
		return err
	}), "dial udp")
	defer dgram.Close()
	ask := func() error {
		dgram.SetDeadline(time.Now().Add(time.Second))
		if _, err := dgram.Write([]byte("?")); err != nil {
			return err
		}
		_, err := dgram.Read(make([]byte, 64))
		return err
	}
	must(t, ask(), "udp a1 -> a2 before the policy")
	persistent := dialEcho(t, tp.ns["a1"], tp.ns["a2"], netip.AddrPortFrom(tp.a("a2", 0), persistentPort))
	must(t, persistent.roundTrip("before"), "round trip before the policy")
	tp.wantTracked(t, false, "a1", "a2", fams...)

	// Default deny ingress on a2.
	r := base
	r.Policies = []Policy{{ID: "srv", Name: "test/server", Group: "srv", Selected: tp.sandboxAddrs("a2"), Ingress: true}}
	mustSync(t, tb, r)
	must(t, persistent.roundTrip("after"), "round trip on the connection opened untracked, after the policy")
	before, _ := policyDrops(t, tb)
	if err := ask(); !noAnswer(conn{proto: "udp"}, err) {
		t.Errorf("udp a1 -> a2 after the policy denies it: %v, want no answer", err)
	}
	if after, _ := policyDrops(t, tb); after <= before {
		t.Errorf("ingress drops %d after the denied datagram, were %d", after, before)
	}
	tp.check(t, tp.both(false, "a1", "a2", testPort)...)
	// The picked-up connection and datagram (IPv4; the denied IPv6 connections were
	// dropped before conntrack confirmed them).
	tp.wantTracked(t, true, "a1", "a2", 0)

	// The policy allows a1: its new connections to a2 are tracked.
	rule := PolicyRule{Peers: addrRanges(tp.sandboxAddrs("a1")...), AnyPort: true}
	r.Policies[0].IngressRules = []PolicyRule{rule}
	mustSync(t, tb, r)
	tp.check(t, tp.both(true, "a1", "a2", testPort)...)
	tp.wantTracked(t, true, "a1", "a2", fams...)
}
