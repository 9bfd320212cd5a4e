package nft

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// VIPs of the service tests (documentation ranges unused by the topology).
var (
	vipWeb    = []netip.Addr{netip.MustParseAddr("192.0.2.80"), netip.MustParseAddr("2001:db8:5e::80")}
	vipSelf   = []netip.Addr{netip.MustParseAddr("192.0.2.81"), netip.MustParseAddr("2001:db8:5e::81")}
	vipSticky = []netip.Addr{netip.MustParseAddr("192.0.2.82"), netip.MustParseAddr("2001:db8:5e::82")}
)

// serveID listens on testPort in ns (all addresses), TCP and, with udp, UDP, and answers
// every connection or datagram with "name source-address".
func serveID(t testing.TB, ns netns.NsHandle, name string, udp bool) {
	t.Helper()
	var (
		ln net.Listener
		pc net.PacketConn
	)
	err := inNetNS(ns, func() error {
		var err error
		if ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", testPort)); err != nil || !udp {
			return err
		}
		pc, err = net.ListenPacket("udp", fmt.Sprintf("[::]:%d", testPort))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			c.Close()
		}
	}()
	if pc == nil {
		return
	}
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

// reply is what a backend answered: its name and the source address it saw.
type reply struct {
	name string
	src  netip.Addr
}

// dialID connects once from namespace from to dst and returns the answer of serveID.
func (tp *topo) dialID(from, proto string, dst netip.AddrPort, timeout time.Duration) (reply, error) {
	var nc net.Conn
	err := inNetNS(tp.ns[from], func() error {
		var err error
		nc, err = net.DialTimeout(proto, dst.String(), timeout)
		return err
	})
	if err != nil {
		return reply{}, err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(timeout))
	if proto == "udp" {
		if _, err := nc.Write([]byte("?")); err != nil {
			return reply{}, err
		}
	}
	buf := make([]byte, 128)
	n, err := nc.Read(buf)
	if err != nil {
		return reply{}, fmt.Errorf("read reply: %w", err)
	}
	name, src, _ := strings.Cut(strings.TrimSpace(string(buf[:n])), " ")
	a, err := netip.ParseAddr(src)
	return reply{name, a}, err
}

// mustDialID connects from -> dst, retrying for a while (links and neighbours settle).
func (tp *topo) mustDialID(t testing.TB, from, proto string, dst netip.AddrPort) reply {
	t.Helper()
	var (
		r   reply
		err error
	)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r, err = tp.dialID(from, proto, dst, time.Second); err == nil {
			return r
		}
	}
	t.Fatalf("%s %s -> %s: %v", proto, from, dst, err)
	return r
}

// names makes n connections from -> dst and counts the backends that answered.
func (tp *topo) names(t testing.TB, n int, from, proto string, dst netip.AddrPort) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		seen[tp.mustDialID(t, from, proto, dst).name]++
	}
	return seen
}

// wantRefused checks that a connection from -> dst is refused (TCP reset, ICMP port
// unreachable: ECONNREFUSED), not left to time out. A datagram of the node itself is
// dropped by the output hook: sending it fails with EPERM.
func (tp *topo) wantRefused(t testing.TB, from, proto string, dst netip.AddrPort) {
	t.Helper()
	r, err := tp.dialID(from, proto, dst, 3*time.Second)
	switch {
	case err == nil:
		t.Errorf("%s %s -> %s: answered by %s, want refused", proto, from, dst, r.name)
	case from == "node" && proto == "udp" && errors.Is(err, unix.EPERM):
	case !errors.Is(err, unix.ECONNREFUSED):
		t.Errorf("%s %s -> %s: %v, want connection refused", proto, from, dst, err)
	}
}

// backends returns, for each sandbox name, its address of family f, port testPort.
func (tp *topo) backends(f int, names ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, n := range names {
		out = append(out, netip.AddrPortFrom(tp.a(n, f), testPort))
	}
	return out
}

// masqueradedSrc returns the addresses a backend may see for a client of another network:
// the node's addresses on the backend's network (any node address for a routed one).
func (tp *topo) masqueradedSrc(backend string, f int) []netip.Addr {
	switch backend {
	case "a1", "a2":
		return []netip.Addr{host(subnetA, 1)[f].Addr()}
	case "b1":
		return []netip.Addr{host(subnetB, 1)[f].Addr()}
	}
	return tp.nodeAddrsAll(f)
}

// Service VIPs, IPv4 and IPv6: reachable from sandboxes of the bridged networks A and B,
// of the routed network R and from the node, spread over the backends, to a backend from
// itself (hairpin), over UDP; client affinity; a service without backends rejects; Update
// changes backends at once.
func TestPrivilegedServices(t *testing.T) {
	tp := buildTopo(t)
	for _, name := range []string{"a1", "a2", "b1", "r1"} {
		serveID(t, tp.ns[name], name, true)
	}
	svcs := func(f int) []Service {
		return []Service{
			{Name: "default/web", VIP: vipWeb[f], Protocol: "tcp", Port: 80, Backends: tp.backends(f, "a1", "b1", "r1")},
			{Name: "default/self", VIP: vipSelf[f], Protocol: "tcp", Port: 80, Backends: tp.backends(f, "a1")},
			{Name: "default/dns", VIP: vipWeb[f], Protocol: "udp", Port: 53, Backends: tp.backends(f, "a2", "b1")},
			{Name: "default/empty", VIP: vipWeb[f], Protocol: "tcp", Port: 81},
			{Name: "default/empty-udp", VIP: vipWeb[f], Protocol: "udp", Port: 54},
			{Name: "default/sticky", VIP: vipSticky[f], Protocol: "tcp", Port: 80, Backends: tp.backends(f, "a1", "a2", "b1"), Affinity: true},
		}
	}
	rs := tp.ruleset()
	rs.Services = append(svcs(0), svcs(1)...)
	tb := tp.open(t)
	mustSync(t, tb, rs)

	for _, f := range fams {
		at := func(a []netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a[f], port) }
		web := at(vipWeb, 80)
		// No backend: refused at once, TCP and UDP, from a sandbox and from the node. (First:
		// the kernel rate-limits ICMP errors per client, 1/s after a burst of 6, and in IPv6
		// the redirects that the node sends when a2 reaches a1 through it count too.)
		for _, from := range []string{"a2", "node"} {
			tp.wantRefused(t, from, "tcp", at(vipWeb, 81))
			tp.wantRefused(t, from, "udp", at(vipWeb, 54))
		}
		// From every network and from the node. Sandboxes are masqueraded behind the node
		// (as for published ports); the node keeps its address.
		for _, from := range []string{"a2", "b1", "r2", "node"} {
			r := tp.mustDialID(t, from, "tcp", web)
			want := tp.masqueradedSrc(r.name, f)
			if from == "node" {
				want = tp.nodeAddrsAll(f)
			}
			if !slices.Contains([]string{"a1", "b1", "r1"}, r.name) || !slices.Contains(want, r.src) {
				t.Errorf("tcp %s -> %s: answered by %s, which saw %v; want a1, b1 or r1 seeing one of %v", from, web, r.name, r.src, want)
			}
		}
		// Hairpin: a backend reaches its own service.
		if r := tp.mustDialID(t, "a1", "tcp", at(vipSelf, 80)); r.name != "a1" || r.src != host(subnetA, 1)[f].Addr() {
			t.Errorf("hairpin a1 -> %s: answered by %s, which saw %v; want a1 seeing the bridge's address", at(vipSelf, 80), r.name, r.src)
		}
		// Spread: 60 connections reach each of the 3 backends.
		if seen := tp.names(t, 60, "a2", "tcp", web); len(seen) != 3 {
			t.Errorf("60 connections a2 -> %s reached %v, want a1, b1 and r1", web, seen)
		}
		// UDP.
		if seen := tp.names(t, 20, "r2", "udp", at(vipWeb, 53)); len(seen) != 2 || seen["a2"] == 0 || seen["b1"] == 0 {
			t.Errorf("20 datagrams r2 -> %s reached %v, want a2 and b1", at(vipWeb, 53), seen)
		}
		// Affinity: each client keeps one backend.
		for _, from := range []string{"a2", "r2", "node"} {
			if seen := tp.names(t, 20, from, "tcp", at(vipSticky, 80)); len(seen) != 1 {
				t.Errorf("20 connections %s -> %s (affinity) reached %v, want one backend", from, at(vipSticky, 80), seen)
			}
		}
		// Not a service port of the VIP: not DNATed (routed towards outside, unanswered).
		if r, err := tp.dialID("a2", "tcp", at(vipWeb, 82), 500*time.Millisecond); err == nil {
			t.Errorf("tcp a2 -> %s: answered by %s, want no answer", at(vipWeb, 82), r.name)
		}
		// Services are no way around isolation: b1 cannot reach a1 directly.
		tp.check(t, tp.to("b1", "a1", f))
	}

	// Update changes one service's backends at once, and the tables equal Sync's.
	replace := func(s Service) {
		t.Helper()
		must(t, tb.Update(Delta{Services: []Service{s}}, Delta{}), "update "+s.Name)
		i := slices.IndexFunc(rs.Services, func(o Service) bool { return o.key() == s.key() })
		rs.Services[i] = s
		wantInSync(t, tb, rs, true)
	}
	for _, f := range fams {
		self := rs.Services[slices.IndexFunc(rs.Services, func(s Service) bool { return s.VIP == vipSelf[f] })]
		dst := netip.AddrPortFrom(vipSelf[f], 80)
		self.Backends = tp.backends(f, "a1", "a2") // a backend added
		replace(self)
		if seen := tp.names(t, 30, "b1", "tcp", dst); len(seen) != 2 {
			t.Errorf("after adding a2: 30 connections b1 -> %s reached %v, want a1 and a2", dst, seen)
		}
		self.Backends = tp.backends(f, "a2") // a backend removed
		replace(self)
		if seen := tp.names(t, 10, "b1", "tcp", dst); len(seen) != 1 || seen["a2"] != 10 {
			t.Errorf("after removing a1: 10 connections b1 -> %s reached %v, want a2 only", dst, seen)
		}
		self.Backends = nil // all removed: refused
		replace(self)
		tp.wantRefused(t, "b1", "tcp", dst)
		self.Backends = tp.backends(f, "r1") // back
		replace(self)
		if r := tp.mustDialID(t, "b1", "tcp", dst); r.name != "r1" {
			t.Errorf("b1 -> %s: answered by %s, want r1", dst, r.name)
		}

		// Affinity follows churn: a client whose backend is removed moves to another
		// one, and keeps it.
		sticky := rs.Services[slices.IndexFunc(rs.Services, func(s Service) bool { return s.VIP == vipSticky[f] })]
		dst = netip.AddrPortFrom(vipSticky[f], 80)
		before := tp.mustDialID(t, "a2", "tcp", dst).name
		sticky.Backends = slices.DeleteFunc(slices.Clone(sticky.Backends), func(b netip.AddrPort) bool {
			return b.Addr() == tp.a(before, f)
		})
		replace(sticky)
		seen := tp.names(t, 10, "a2", "tcp", dst)
		if len(seen) != 1 || seen[before] != 0 {
			t.Errorf("affinity after removing %s: 10 connections a2 -> %s reached %v, want one other backend", before, dst, seen)
		}
	}

	// A full affinity map (affinitySize clients) costs new clients their affinity, not
	// their connections: r1 never connected to the sticky service. (Filled until the kernel
	// refuses: an entry deleted by the packet path counts until the set's garbage collector
	// removes it.)
	c := otherConn(t, tp.ns["node"])
	aff, err := c.GetSetByName(podnetTable(nftables.TableFamilyINet), mapAffinity+"4")
	must(t, err, "get affinity4")
	filler := func(i int) nftables.SetElement {
		client := netip.AddrFrom4([4]byte{10, 250, byte(i >> 8), byte(i)})
		return nftables.SetElement{
			Key: slices.Concat(client.AsSlice(), serviceKey{vipSticky[0], protoNumber("tcp"), 80}.bytes()),
			Val: addrPortBytes(tp.backends(0, "a1")[0]),
		}
	}
	for i, n := 0, 1000; n > 0; {
		var chunk []nftables.SetElement
		for j := range n {
			chunk = append(chunk, filler(i+j))
		}
		must(t, c.SetAddElements(aff, chunk), "fill affinity4")
		switch err := c.Flush(); {
		case err == nil:
			i += n
		case errors.Is(err, unix.ENFILE):
			n /= 10
		default:
			t.Fatalf("fill affinity4: %v", err)
		}
	}
	if seen := tp.names(t, 30, "r1", "tcp", netip.AddrPortFrom(vipSticky[0], 80)); len(seen) < 2 {
		t.Errorf("affinity map full: 30 connections r1 -> %s reached %v, want them balanced", vipSticky[0], seen)
	}

	// Removing a service: its VIP is no longer DNATed.
	gone := rs.Services[0]
	must(t, tb.Update(Delta{}, Delta{Services: []Service{{VIP: gone.VIP, Protocol: gone.Protocol, Port: gone.Port}}}), "remove service")
	rs.Services = rs.Services[1:]
	wantInSync(t, tb, rs, true)
	if r, err := tp.dialID("a2", "tcp", netip.AddrPortFrom(gone.VIP, gone.Port), 500*time.Millisecond); err == nil {
		t.Errorf("tcp a2 -> removed service %s: answered by %s", gone.key(), r.name)
	}
}

// Update adds, replaces and removes services by key, and the tables then equal what Sync
// writes for the result.
func TestPrivilegedServiceUpdate(t *testing.T) {
	tb, ns := openTable(t)
	want := full()
	want.Services = nil
	if err := tb.Update(Delta{Services: []Service{webSvc}}, Delta{}); !errors.Is(err, ErrNoTable) {
		t.Fatalf("Update without tables = %v, want ErrNoTable", err)
	}
	mustSync(t, tb, want)
	step := func(what string, add, remove Delta, services ...Service) {
		t.Helper()
		if err := tb.Update(add, remove); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		want.Services = services
		wantInSync(t, tb, want, true)
	}
	with := func(s Service, change func(*Service)) Service {
		s.Backends = slices.Clone(s.Backends)
		change(&s)
		return s
	}
	add := func(s ...Service) Delta { return Delta{Services: s} }
	web, dns, idle := webSvc, dnsSvc, idleSvc

	step("add", add(web, dns, idle), Delta{}, web, dns, idle)
	step("add again", add(idle, dns, web), Delta{}, web, dns, idle)
	web4 := with(web, func(s *Service) { s.Backends = append(s.Backends, netip.MustParseAddrPort("10.88.1.9:8080")) })
	step("add a backend, same slot count", add(web4), Delta{}, web4, dns, idle)
	web5 := with(web4, func(s *Service) { s.Backends = append(s.Backends, netip.MustParseAddrPort("10.88.1.1:8080")) })
	step("add a backend, more slots", add(web5), Delta{}, web5, dns, idle)
	web2 := with(web, func(s *Service) { s.Backends = s.Backends[1:] })
	step("remove backends", add(web2), Delta{}, web2, dns, idle)
	dnsPlain := with(dns, func(s *Service) { s.Affinity = false })
	step("affinity off", add(dnsPlain), Delta{}, web2, dnsPlain, idle)
	idleSticky := with(idle, func(s *Service) { s.Affinity, s.Backends = true, addrPorts("10.88.1.2:443") })
	step("affinity on, backends added", add(idleSticky), Delta{}, web2, dnsPlain, idleSticky)
	renamed := with(web2, func(s *Service) { s.Name = "default/www" })
	step("renamed", add(renamed), Delta{}, renamed, dnsPlain, idleSticky)
	key := func(s Service) Service { return Service{VIP: s.VIP, Protocol: s.Protocol, Port: s.Port} }
	step("remove by key", Delta{}, add(key(dnsPlain)), renamed, idleSticky)
	step("remove what is gone", Delta{}, add(key(dnsPlain), key(dns)), renamed, idleSticky)
	step("remove and add: add wins", add(web), add(key(web), key(idleSticky)), web)

	// Many backends: several read requests, indexes above 255 (host-endian keys).
	big := with(web, func(s *Service) {
		s.Backends = nil
		for i := range 300 {
			s.Backends = append(s.Backends, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 88, byte(i >> 8), byte(i)}), 8080))
		}
	})
	step("300 backends", add(big), Delta{}, big)
	big299 := with(big, func(s *Service) { s.Backends = s.Backends[1:] })
	step("299 backends", add(big299), Delta{}, big299)
	step("1 backend", add(web2), Delta{}, web2)

	// Invalid deltas change nothing.
	for _, d := range []Delta{
		add(Service{Name: "x", VIP: web.VIP, Protocol: "sctp", Port: 80}),
		add(web, with(web, func(s *Service) { s.Backends = nil })),
	} {
		if err := tb.Update(d, Delta{}); err == nil {
			t.Errorf("Update(%+v) succeeded", d)
		}
		if err := tb.Update(Delta{}, d); err == nil {
			t.Errorf("Update(remove %+v) succeeded", d)
		}
	}
	wantInSync(t, tb, want, true)

	// Update reads what is in the kernel: a service changed behind podnet's back is
	// replaced all the same, and one whose elements are partly gone makes it fail.
	other := with(web2, func(s *Service) { s.Backends = addrPorts("10.88.4.4:8080", "10.88.4.5:8080") })
	mustSync(t, tb, Ruleset{Networks: want.Networks, Endpoints: want.Endpoints, Ports: want.Ports, Services: []Service{other}})
	step("replace a service changed behind podnet's back", add(web2), Delta{}, web2)
	c := otherConn(t, ns)
	backends, err := c.GetSetByName(podnetTable(nftables.TableFamilyINet), mapBackends+"4")
	must(t, err, "get backends4")
	must(t, c.SetDeleteElements(backends, []nftables.SetElement{{Key: backendKey(web2.key(), 1)}}), "delete backend 1")
	must(t, c.Flush(), "delete backend 1")
	if err := tb.Update(add(web), Delta{}); !errors.Is(err, ErrNoTable) {
		t.Fatalf("Update of a service with a backend gone = %v, want ErrNoTable", err)
	}

	if err := tb.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Update(add(web), Delta{}); !errors.Is(err, ErrNoTable) {
		t.Fatalf("Update after Delete = %v, want ErrNoTable", err)
	}
	if err := tb.Update(Delta{}, add(web)); !errors.Is(err, ErrNoTable) {
		t.Fatalf("Update (remove) after Delete = %v, want ErrNoTable", err)
	}
}

// Services added, replaced and removed one by one, in random order, give the tables that
// Sync writes for the result.
func TestPrivilegedServiceUpdateRandomOrder(t *testing.T) {
	tb, _ := openTable(t)
	mustSync(t, tb, Ruleset{})
	rng := rand.New(rand.NewPCG(3, 4))
	randomService := func(i int) Service {
		s := Service{Name: fmt.Sprintf("ns/svc-%d", i), Protocol: []string{"tcp", "udp"}[i%2], Port: uint16(80 + i%3), Affinity: rng.IntN(3) == 0}
		v6 := i%4 == 3
		s.VIP = netip.AddrFrom4([4]byte{10, 96, 0, byte(i / 6)})
		if v6 {
			s.VIP = netip.AddrFrom16([16]byte{0xfd, 0, 0x96, 15: byte(i / 6)})
		}
		for range rng.IntN(7) {
			b := netip.AddrFrom4([4]byte{10, 88, 1, byte(rng.IntN(20))})
			if v6 {
				b = netip.AddrFrom16([16]byte{0xfd, 0, 0x88, 15: byte(rng.IntN(20))})
			}
			s.Backends = append(s.Backends, netip.AddrPortFrom(b, uint16(8080+rng.IntN(2))))
		}
		return s
	}
	state := map[serviceKey]Service{}
	for range 300 {
		s := randomService(rng.IntN(24))
		add, remove := Delta{Services: []Service{s}}, Delta{}
		if rng.IntN(4) == 0 {
			add, remove = remove, add
			delete(state, s.key())
		} else {
			state[s.key()] = s
		}
		must(t, tb.Update(add, remove), "update")
	}
	var want Ruleset
	for _, s := range state {
		want.Services = append(want.Services, s)
	}
	wantInSync(t, tb, want, true)
}
