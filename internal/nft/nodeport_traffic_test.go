package nft

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/lab"
)

// NodePorts of the traffic test.
const (
	npWeb    = 30080 // tcp: a1, b1, r1
	npDNS    = 30053 // udp: a2
	npRemote = 30081 // tcp: a backend on another host (the outside's loopback address)
	npSticky = 30082 // tcp, affinity: a1, a2, b1
	npShadow = 30083 // tcp: a1, but a published port of every address (a2) has it too
	npVIP    = 30084 // tcp: a1, but a service's VIP is the node's second address, port 30084 (b1)
	npMoved  = 30085 // web's NodePort after Update
	// npEmpty is the NodePort of a service without backends (tcp and udp), and where the
	// node itself listens: without the tables, or without the NodePort, the node answers.
	npEmpty = testPort
)

// remoteBackend is, per family, the address of a backend on another host: on the
// outside's loopback, which the node reaches through its default route.
var remoteBackend = pfx("192.0.2.200/32", "2001:db8:5e::200/128")

// NodePorts, IPv4 and IPv6: from outside (the client keeps nothing of its address: the
// backend sees the node's), to either node address, spread over the backends, over UDP,
// to a backend on another host (which only works because of the masquerade); from the
// node to its own address and to 127.0.0.1; from a sandbox; client affinity, which follows
// a backend's removal; a NodePort without backends is refused where the node itself would
// answer, and answered by a backend once it has one; a VIP and a published port win over
// a NodePort; a NodePort is not dispatched for an address that is not the node's; Update
// moves a NodePort and removes it.
func TestPrivilegedNodePorts(t *testing.T) {
	tp := buildTopo(t)
	for _, name := range []string{"a1", "a2", "b1", "r1"} {
		serveID(t, tp.ns[name], name, true)
	}
	node, outside := tp.ns["node"], tp.ns["outside"]
	serveID(t, node, "node", false)
	for _, f := range fams {
		serveUDPAt(t, node, "node", netip.AddrPortFrom(tp.nodeOut[f].Addr(), npEmpty))
	}
	must(t, lab.Loopback(outside, remoteBackend...), "add the remote backend's addresses")
	serveID(t, outside, "remote", false)
	// route_localnet on the interfaces towards the backends: a connection from 127.0.0.1
	// DNATed to a backend leaves through them before it is masqueraded (the uplink: for
	// the remote backend).
	localnet := []string{}
	for _, dev := range []string{netA.Bridge, netB.Bridge, "vr1", lab.Uplink} {
		localnet = append(localnet, "/proc/sys/net/ipv4/conf/"+dev+"/route_localnet")
	}
	writeSysctls(t, node, "1", localnet...)

	at := func(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
	out := func(f int) netip.Addr { return tp.nodeOut[f].Addr() }
	out2 := func(f int) netip.Addr { return tp.nodeOut2[f].Addr() }

	// Without the tables, the node itself answers on npEmpty (the refusals below are the
	// NodePort's, not those of a port nobody listens on).
	for _, f := range fams {
		for _, proto := range []string{"tcp", "udp"} {
			if r := tp.mustDialID(t, "outside", proto, at(out(f), npEmpty)); r.name != "node" {
				t.Fatalf("without the tables: %s outside -> %s answered by %s, want node", proto, at(out(f), npEmpty), r.name)
			}
		}
	}

	svcs := func(f int) []Service {
		return []Service{
			{Name: "default/web", VIP: vipWeb[f], Protocol: "tcp", Port: 80, NodePort: npWeb, Backends: tp.backends(f, "a1", "b1", "r1")},
			{Name: "default/dns", VIP: vipWeb[f], Protocol: "udp", Port: 53, NodePort: npDNS, Backends: tp.backends(f, "a2")},
			{Name: "default/remote", VIP: vipSelf[f], Protocol: "tcp", Port: 80, NodePort: npRemote,
				Backends: []netip.AddrPort{netip.AddrPortFrom(remoteBackend[f].Addr(), testPort)}},
			{Name: "default/sticky", VIP: vipSticky[f], Protocol: "tcp", Port: 80, NodePort: npSticky, Affinity: true,
				Backends: tp.backends(f, "a1", "a2", "b1")},
			{Name: "default/shadowed", VIP: vipSticky[f], Protocol: "tcp", Port: 83, NodePort: npShadow, Backends: tp.backends(f, "a1")},
			{Name: "default/np", VIP: vipSelf[f], Protocol: "tcp", Port: 84, NodePort: npVIP, Backends: tp.backends(f, "a1")},
			{Name: "default/local-vip", VIP: out2(f), Protocol: "tcp", Port: npVIP, Backends: tp.backends(f, "b1")},
			{Name: "default/empty", VIP: vipWeb[f], Protocol: "tcp", Port: 81, NodePort: npEmpty},
			{Name: "default/empty-udp", VIP: vipWeb[f], Protocol: "udp", Port: 54, NodePort: npEmpty},
		}
	}
	var ports []PortMapping
	for _, f := range fams {
		ports = append(ports, PortMapping{Protocol: "tcp", HostPort: npShadow, Addr: tp.a("a2", f), Port: testPort})
	}
	rs := tp.ruleset(ports...)
	rs.Services = append(svcs(0), svcs(1)...)
	tb := tp.open(t)
	mustSync(t, tb, rs)

	// replace updates one service and checks the tables against Sync's.
	replace := func(s Service) {
		t.Helper()
		must(t, tb.Update(Delta{Services: []Service{s}}, Delta{}), "update "+s.Name)
		i := slices.IndexFunc(rs.Services, func(o Service) bool { return o.key() == s.key() })
		rs.Services[i] = s
		wantInSync(t, tb, rs, true)
	}
	service := func(name string, f int) Service {
		i := slices.IndexFunc(rs.Services, func(s Service) bool { return s.Name == name && s.VIP.Is4() == (f == 0) })
		return rs.Services[i]
	}
	// want checks that from -> dst is answered by one of names, which saw one of srcs.
	want := func(from, proto string, dst netip.AddrPort, names []string, srcs func(backend string) []netip.Addr) {
		t.Helper()
		r := tp.mustDialID(t, from, proto, dst)
		if !slices.Contains(names, r.name) || !slices.Contains(srcs(r.name), r.src) {
			t.Errorf("%s %s -> %s: answered by %s, which saw %v; want one of %v seeing one of %v", proto, from, dst, r.name, r.src, names, srcs(r.name))
		}
	}

	for _, f := range fams {
		masq := func(backend string) []netip.Addr { return tp.masqueradedSrc(backend, f) }
		nodeAny := func(string) []netip.Addr { return tp.nodeAddrsAll(f) }
		uplink := func(string) []netip.Addr { return tp.nodeAddrs(f) }
		web := []string{"a1", "b1", "r1"}

		// No backend: refused at once, TCP and UDP, from outside and from the node, where
		// the node itself listens (first: the kernel rate-limits ICMP errors).
		for _, from := range []string{"outside", "node"} {
			tp.wantRefused(t, from, "tcp", at(out(f), npEmpty))
			tp.wantRefused(t, from, "udp", at(out(f), npEmpty))
		}

		// From outside, to either node address: masqueraded behind the node (the backend
		// sees the node's address on its side).
		for _, dst := range []netip.Addr{out(f), out2(f)} {
			want("outside", "tcp", at(dst, npWeb), web, masq)
		}
		want("outside", "udp", at(out(f), npDNS), []string{"a2"}, masq)
		// A backend on another host: its reply comes back through the node only because
		// the connection is masqueraded (without, the outside would get a packet from its
		// own address).
		want("outside", "tcp", at(out(f), npRemote), []string{"remote"}, uplink)
		// From the node itself, and from a sandbox of another network.
		want("node", "tcp", at(out(f), npWeb), web, nodeAny)
		want("node", "tcp", at(out(f), npRemote), []string{"remote"}, uplink)
		want("a2", "tcp", at(out(f), npWeb), web, masq)
		// Spread: 60 connections reach each of the 3 backends.
		if seen := tp.names(t, 60, "outside", "tcp", at(out(f), npWeb)); len(seen) != 3 {
			t.Errorf("60 connections outside -> %s reached %v, want a1, b1 and r1", at(out(f), npWeb), seen)
		}
		// A published port of every address wins over a NodePort of its port; a VIP
		// (here the node's second address) over everything. (Both are masqueraded: what
		// masquerades NodePort connections is their original port.)
		want("outside", "tcp", at(out(f), npShadow), []string{"a2"}, masq)
		want("outside", "tcp", at(out2(f), npVIP), []string{"b1"}, masq)
		want("outside", "tcp", at(out(f), npVIP), []string{"a1"}, masq)
		// Only for the node's addresses: a1 -> a2:npWeb is a2's own (closed) port.
		tp.check(t, conn{from: "a1", dst: at(tp.a("a2", f), npWeb), refused: true})

		// Affinity: a client keeps one backend; when that backend goes, it moves to
		// another one and keeps it.
		sticky := at(out(f), npSticky)
		seen := tp.names(t, 20, "outside", "tcp", sticky)
		if len(seen) != 1 {
			t.Errorf("20 connections outside -> %s (affinity) reached %v, want one backend", sticky, seen)
		}
		var before string
		for name := range seen {
			before = name
		}
		s := service("default/sticky", f)
		s.Backends = slices.DeleteFunc(slices.Clone(s.Backends), func(b netip.AddrPort) bool { return b.Addr() == tp.a(before, f) })
		replace(s)
		if seen := tp.names(t, 10, "outside", "tcp", sticky); len(seen) != 1 || seen[before] != 0 {
			t.Errorf("affinity after removing %s: 10 connections outside -> %s reached %v, want one other backend", before, sticky, seen)
		}

		// The service without backends gets one: the same attempts are answered by it.
		for _, name := range []string{"default/empty", "default/empty-udp"} {
			s := service(name, f)
			s.Backends = tp.backends(f, "a1")
			replace(s)
			want("outside", s.Protocol, at(out(f), npEmpty), []string{"a1"}, masq)
		}

		// Update moves web's NodePort: the old one is the node's own closed port again.
		s = service("default/web", f)
		s.NodePort = npMoved
		replace(s)
		want("outside", "tcp", at(out(f), npMoved), web, masq)
		tp.check(t, conn{from: "outside", dst: at(out(f), npWeb), refused: true})
	}

	// 127.0.0.1 (IPv4 only): masqueraded behind the node, to a local and a remote backend.
	lo := netip.MustParseAddr("127.0.0.1")
	want("node", "tcp", at(lo, npMoved), []string{"a1", "b1", "r1"}, func(string) []netip.Addr { return tp.nodeAddrsAll(0) })
	want("node", "tcp", at(lo, npRemote), []string{"remote"}, func(string) []netip.Addr { return tp.nodeAddrs(0) })

	// Removing a service by key removes its NodePort.
	for _, f := range fams {
		s := service("default/web", f)
		must(t, tb.Update(Delta{}, Delta{Services: []Service{{VIP: s.VIP, Protocol: s.Protocol, Port: s.Port}}}), "remove web")
		rs.Services = slices.DeleteFunc(rs.Services, func(o Service) bool { return o.key() == s.key() })
		wantInSync(t, tb, rs, true)
		tp.check(t, conn{from: "outside", dst: at(out(f), npMoved), refused: true})
	}
}

// serveUDPAt answers every datagram to addr in ns as serveID does, from addr: a socket
// bound to [::] would answer from the address the route prefers, not the one asked (the
// node has two per family on its uplink).
func serveUDPAt(t testing.TB, ns netns.NsHandle, name string, addr netip.AddrPort) {
	t.Helper()
	var pc net.PacketConn
	must(t, inNetNS(ns, func() (err error) {
		pc, err = net.ListenPacket("udp", addr.String())
		return err
	}), "listen on udp "+addr.String())
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(fmt.Appendf(nil, "%s %s\n", name, from.(*net.UDPAddr).AddrPort().Addr().Unmap()), from)
		}
	}()
}
