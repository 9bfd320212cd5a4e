package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/internal/dns/dnstest"
)

// TestRefused checks that only allowed clients get answers: no open resolver.
func TestRefused(t *testing.T) {
	f := newFixture(t, nil)
	for _, q := range []query{
		{name: "stranger, zone name", from: stranger, qname: "web.ns1.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeRefused},
		{name: "stranger, outside name", from: stranger, qname: "example.com.", qtype: mdns.TypeA, rcode: mdns.RcodeRefused},
		{name: "stranger over tcp", from: "2001:db8::1", tcp: true, qname: "example.com.", qtype: mdns.TypeA, rcode: mdns.RcodeRefused},
		{name: "loopback", from: "127.0.0.1", qname: "web.ns1.svc.cluster.local.", qtype: mdns.TypeA, aa: true,
			answer: []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "v6 pod", from: podNS1v6, qname: "web.ns1.svc.cluster.local.", qtype: mdns.TypeA, aa: true,
			answer: []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "v4-mapped client", from: "::ffff:10.1.0.10", qname: "web.ns1.svc.cluster.local.", qtype: mdns.TypeA, aa: true,
			answer: []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
	} {
		t.Run(q.name, func(t *testing.T) { f.check(t, q) })
	}
	if n := f.upstream.Total(); n != 0 {
		t.Errorf("a stranger's query went upstream")
	}
	r := f.ask(t, query{from: stranger, qname: "example.com.", qtype: mdns.TypeA})
	if r.RecursionAvailable {
		t.Errorf("REFUSED answer offers recursion")
	}
}

// TestProtocol checks opcode, class, EDNS version and zone transfer handling.
func TestProtocol(t *testing.T) {
	f := newFixture(t, nil)
	serve := func(m *mdns.Msg) *mdns.Msg {
		w := dnstest.UDP(node)
		f.srv.ServeDNS(w, m)
		return w.Msg
	}

	m := new(mdns.Msg)
	m.SetQuestion("web.ns1.svc.cluster.local.", mdns.TypeA)
	m.Opcode = mdns.OpcodeUpdate
	if r := serve(m); r.Rcode != mdns.RcodeNotImplemented {
		t.Errorf("UPDATE: %s, want NOTIMP", mdns.RcodeToString[r.Rcode])
	}

	m = new(mdns.Msg)
	m.SetQuestion("web.ns1.svc.cluster.local.", mdns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	r := serve(m)
	if r.Rcode != mdns.RcodeBadVers || r.IsEdns0() == nil || len(r.Answer) != 0 {
		t.Errorf("EDNS version 1: rcode %s, opt %v; want BADVERS with OPT", mdns.RcodeToString[r.Rcode], r.IsEdns0())
	}

	m = new(mdns.Msg)
	m.SetQuestion("version.bind.", mdns.TypeTXT)
	m.Question[0].Qclass = mdns.ClassCHAOS
	if r := serve(m); r.Rcode != mdns.RcodeRefused {
		t.Errorf("CHAOS: %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}

	m = new(mdns.Msg)
	m.SetQuestion("cluster.local.", mdns.TypeAXFR)
	if r := serve(m); r.Rcode != mdns.RcodeRefused {
		t.Errorf("AXFR: %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}

	m = new(mdns.Msg)
	m.SetQuestion("web.ns1.svc.cluster.local.", mdns.TypeA)
	m.Response = true
	w := dnstest.UDP(node)
	f.srv.ServeDNS(w, m)
	if w.Msg != nil {
		t.Errorf("answered an answer")
	}
}

// bigSnapshot has a headless service with n backends (an answer of n records).
func bigSnapshot(n int) Snapshot {
	svc := Service{Name: "big", Namespace: "ns1", Headless: true}
	for i := range n {
		svc.Backends = append(svc.Backends, Backend{Hostname: fmt.Sprintf("b-%d", i), Addr: netip.AddrFrom4([4]byte{10, 7, byte(i / 250), byte(1 + i%250)})})
	}
	return Snapshot{Services: []Service{svc}}
}

// TestEDNSAndTruncation checks that a UDP answer fits the client's buffer (512 without
// EDNS0, its EDNS0 size up to MaxUDPSize), is truncated with TC otherwise, and that TCP
// gets it all.
func TestEDNSAndTruncation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		maxUDP  uint16
		tcp     bool
		edns    uint16
		limit   int // largest acceptable packed size
		wantTC  bool
		wantOPT uint16 // advertised size; 0: no OPT expected
	}{
		{name: "udp without edns", limit: 512, wantTC: true},
		{name: "udp edns 1000", edns: 1000, limit: 1000, wantTC: true, wantOPT: 1232},
		{name: "udp edns 4096 capped at 1232", edns: 4096, limit: 1232, wantTC: true, wantOPT: 1232},
		{name: "udp edns below 512 means 512", edns: 100, limit: 512, wantTC: true, wantOPT: 1232},
		{name: "udp edns 4096, server max 4096", maxUDP: 4096, edns: 4096, limit: 4096, wantOPT: 4096},
		{name: "tcp", tcp: true, limit: mdns.MaxMsgSize},
		{name: "tcp with edns", tcp: true, edns: 1232, limit: mdns.MaxMsgSize, wantOPT: 1232},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Config{AllowedClients: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
				Upstream: dnstest.NewUpstream(), SearchDomains: []string{}, MaxUDPSize: tc.maxUDP})
			if err != nil {
				t.Fatal(err)
			}
			s.SetSnapshot(bigSnapshot(200)) // 200 A records: ~3.3 KB compressed
			m := new(mdns.Msg)
			m.SetQuestion("big.ns1.svc.cluster.local.", mdns.TypeA)
			if tc.edns != 0 {
				m.SetEdns0(tc.edns, true)
			}
			w := dnstest.UDP(node)
			if tc.tcp {
				w = dnstest.TCP(node)
			}
			s.ServeDNS(w, m)
			r := w.Msg
			if w.Size > tc.limit {
				t.Errorf("packed size %d > %d", w.Size, tc.limit)
			}
			if r.Truncated != tc.wantTC {
				t.Errorf("TC %v, want %v", r.Truncated, tc.wantTC)
			}
			if !tc.wantTC && len(r.Answer) != 200 {
				t.Errorf("%d answers, want 200", len(r.Answer))
			}
			if tc.wantTC && (len(r.Answer) == 0 || len(r.Answer) == 200) {
				t.Errorf("truncated answer has %d records, want as many as fit", len(r.Answer))
			}
			opt := r.IsEdns0()
			switch {
			case tc.wantOPT == 0 && opt != nil:
				t.Errorf("OPT in an answer to a query without")
			case tc.wantOPT != 0 && opt == nil:
				t.Errorf("no OPT in the answer")
			case opt != nil && (opt.UDPSize() != tc.wantOPT || !opt.Do()):
				t.Errorf("OPT size %d do %v, want %d and the DO bit copied", opt.UDPSize(), opt.Do(), tc.wantOPT)
			}
			if !r.Compress {
				t.Errorf("answer not compressed")
			}
		})
	}
}

// TestForward checks names outside the zone: forwarded, cached positive and negative
// for their TTL, with TTLs counting down, errors not cached.
func TestForward(t *testing.T) {
	f := newFixture(t, nil)
	f.upstream.SetNegativeSOA("example. 3600 IN SOA ns.example. hostmaster.example. 1 7200 1800 86400 30")
	ask := func(qname string, qtype uint16, rcode int, answer, ns []string) {
		t.Helper()
		f.check(t, query{qname: qname, qtype: qtype, from: node, rcode: rcode, answer: answer, ns: ns})
	}

	ask("example.com.", mdns.TypeA, 0, []string{"example.com. 300 IN A 93.184.216.34"}, nil)
	r := f.ask(t, query{qname: "example.com.", qtype: mdns.TypeA, from: node})
	if !r.RecursionAvailable || r.Authoritative {
		t.Errorf("forwarded answer: ra %v aa %v, want ra and not aa", r.RecursionAvailable, r.Authoritative)
	}
	if n := f.upstream.Queries("example.com.", mdns.TypeA); n != 1 {
		t.Errorf("upstream asked %d times, want 1 (cache)", n)
	}
	f.clock.Advance(100 * time.Second)
	ask("EXAMPLE.com.", mdns.TypeA, 0, []string{"example.com. 200 IN A 93.184.216.34"}, nil)
	f.clock.Advance(200 * time.Second)
	ask("example.com.", mdns.TypeA, 0, []string{"example.com. 300 IN A 93.184.216.34"}, nil)
	if n := f.upstream.Queries("example.com.", mdns.TypeA); n != 2 {
		t.Errorf("upstream asked %d times, want 2 (expired after 300 s)", n)
	}

	// Negative: NXDOMAIN and NODATA, cached for min(SOA TTL, MINIMUM) = 30 s.
	neg := "example. 3600 IN SOA ns.example. hostmaster.example. 1 7200 1800 86400 30"
	ask("nx.example.", mdns.TypeA, mdns.RcodeNameError, nil, []string{neg})
	ask("example.com.", mdns.TypeAAAA, 0, nil, []string{neg})
	f.clock.Advance(10 * time.Second)
	ask("nx.example.", mdns.TypeA, mdns.RcodeNameError, nil, []string{"example. 3590 IN SOA ns.example. hostmaster.example. 1 7200 1800 86400 30"})
	ask("example.com.", mdns.TypeAAAA, 0, nil, []string{"example. 3590 IN SOA ns.example. hostmaster.example. 1 7200 1800 86400 30"})
	if n := f.upstream.Queries("nx.example.", mdns.TypeA) + f.upstream.Queries("example.com.", mdns.TypeAAAA); n != 2 {
		t.Errorf("upstream asked %d times for the negative names, want 2", n)
	}
	f.clock.Advance(21 * time.Second)
	ask("nx.example.", mdns.TypeA, mdns.RcodeNameError, nil, []string{neg})
	if n := f.upstream.Queries("nx.example.", mdns.TypeA); n != 2 {
		t.Errorf("negative answer cached for more than 30 s (%d queries)", n)
	}

	// Failures: SERVFAIL, not cached.
	f.upstream.Fail(errors.New("boom"))
	ask("down.example.", mdns.TypeA, mdns.RcodeServerFailure, nil, nil)
	f.upstream.Fail(nil)
	f.upstream.SetRcode(mdns.RcodeServerFailure)
	ask("down.example.", mdns.TypeA, mdns.RcodeServerFailure, nil, nil)
	f.upstream.SetRcode(0)
	ask("down.example.", mdns.TypeA, mdns.RcodeNameError, nil, []string{neg})
	if n := f.upstream.Queries("down.example.", mdns.TypeA); n != 3 {
		t.Errorf("failures were cached: %d queries, want 3", n)
	}

	// Reverse names of addresses the cluster does not own go upstream too.
	f.upstream.Add("34.216.184.93.in-addr.arpa. 300 IN PTR example.com.")
	ask("34.216.184.93.in-addr.arpa.", mdns.TypePTR, 0, []string{"34.216.184.93.in-addr.arpa. 300 IN PTR example.com."}, nil)
}

// TestNoUpstream checks that without upstream resolvers, outside names are REFUSED.
func TestNoUpstream(t *testing.T) {
	s, err := New(Config{AllowedClients: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, ResolvConf: "testdata/empty.conf"})
	if err != nil {
		t.Fatal(err)
	}
	w := dnstest.UDP(node)
	m := new(mdns.Msg)
	m.SetQuestion("example.com.", mdns.TypeA)
	s.ServeDNS(w, m)
	if w.Msg.Rcode != mdns.RcodeRefused {
		t.Errorf("rcode %s, want REFUSED", mdns.RcodeToString[w.Msg.Rcode])
	}
}

// TestUpstreamsFromResolvConf checks that the node's nameservers become the upstreams,
// without the server's own address, and its search domains autopath's tail.
func TestUpstreamsFromResolvConf(t *testing.T) {
	s, err := New(Config{ResolvConf: "testdata/node.conf"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53"), netip.MustParseAddrPort("[2001:db8::53]:53")}
	if got := s.Upstreams(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("upstreams %v, want %v", got, want)
	}
	if got, want := fmt.Sprint(s.set.searchTail), "[svc.cluster.local. cluster.local. corp.example. example.org. ]"; got != want {
		t.Errorf("search tail %s, want %s", got, want)
	}
	if _, err := New(Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort("169.254.20.10:53")}, SearchDomains: []string{}}); err == nil {
		t.Errorf("own address accepted as upstream")
	}
	if _, err := New(Config{Domain: "bad domain", SearchDomains: []string{}, Upstream: dnstest.NewUpstream()}); err == nil {
		t.Errorf("invalid domain accepted")
	}
}

// TestConcurrent serves queries of every kind while snapshots are replaced (run with
// -race): the zone's shared records must never be written.
func TestConcurrent(t *testing.T) {
	f := newFixture(t, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			f.srv.SetSnapshot(testSnapshot())
		}
	}()
	names := []struct {
		name string
		t    uint16
	}{
		{"web.ns1.svc.cluster.local.", mdns.TypeA}, {"WEB.ns1.svc.cluster.local.", mdns.TypeAAAA},
		{"_pg._tcp.db.ns1.svc.cluster.local.", mdns.TypeSRV}, {"example.com.ns1.svc.cluster.local.", mdns.TypeA},
		{"example.com.", mdns.TypeA}, {"10.0.96.10.in-addr.arpa.", mdns.TypePTR}, {"cluster.local.", mdns.TypeNS},
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				n := names[(i+j)%len(names)]
				m := new(mdns.Msg)
				m.SetQuestion(n.name, n.t)
				m.SetEdns0(512, false)
				w := dnstest.UDP(podNS1)
				f.srv.ServeDNS(w, m)
				if w.Msg == nil || w.Msg.Rcode != mdns.RcodeSuccess {
					t.Errorf("%s: %v", n.name, w.Msg)
					return
				}
			}
		}()
	}
	wg.Wait()
	<-done
}
