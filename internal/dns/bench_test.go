package dns

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/internal/dns/dnstest"
)

// benchSnapshot is the benchmark's cluster: 10,000 services with VIPs in 100
// namespaces, 1,000 headless services with 5 backends each, a client pod per namespace.
func benchSnapshot() Snapshot {
	var s Snapshot
	for i := range 10000 {
		ns := fmt.Sprintf("ns-%d", i%100)
		s.Services = append(s.Services, Service{
			Name: fmt.Sprintf("svc-%d", i), Namespace: ns,
			VIPs:  []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})},
			Ports: []Port{{Name: "http", Port: 80, Protocol: "tcp"}},
		})
	}
	for i := range 1000 {
		ns := fmt.Sprintf("ns-%d", i%100)
		svc := Service{Name: fmt.Sprintf("hl-%d", i), Namespace: ns, Headless: true,
			Ports: []Port{{Name: "http", Port: 8080, Protocol: "tcp"}}}
		for j := range 5 {
			a := netip.AddrFrom4([4]byte{10, 200, byte(i >> 5), byte(i%32*8 + j)})
			svc.Backends = append(svc.Backends, Backend{Hostname: fmt.Sprintf("hl-%d-%d", i, j), Addr: a})
			s.Pods = append(s.Pods, Pod{Namespace: ns, Name: fmt.Sprintf("hl-%d-%d", i, j), Addrs: []netip.Addr{a}})
		}
		s.Services = append(s.Services, svc)
	}
	for i := range 100 {
		s.Pods = append(s.Pods, Pod{Namespace: fmt.Sprintf("ns-%d", i), Name: "client",
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 1, byte(i), 10})}})
	}
	return s
}

// packWriter packs every answer, as miekg's server does before writing it.
type packWriter struct {
	remote net.Addr
	size   int
	rcode  int
}

func (w *packWriter) LocalAddr() net.Addr  { return w.remote }
func (w *packWriter) RemoteAddr() net.Addr { return w.remote }
func (w *packWriter) WriteMsg(m *mdns.Msg) error {
	b, err := m.Pack()
	w.size, w.rcode = len(b), m.Rcode
	return err
}
func (w *packWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *packWriter) Close() error                { return nil }
func (w *packWriter) TsigStatus() error           { return nil }
func (w *packWriter) TsigTimersOnly(bool)         {}
func (w *packWriter) Hijack()                     {}

func benchServer(b *testing.B) *Server {
	b.Helper()
	up := dnstest.NewUpstream("example.com. 300 IN A 93.184.216.34")
	s, err := New(Config{
		AllowedClients: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Upstream:       up, SearchDomains: []string{},
	})
	if err != nil {
		b.Fatal(err)
	}
	s.SetSnapshot(benchSnapshot())
	return s
}

func benchQuery(b *testing.B, qname string, qtype uint16, wantAnswers int) {
	s := benchServer(b)
	m := new(mdns.Msg)
	m.SetQuestion(qname, qtype)
	m.SetEdns0(1232, false)
	w := &packWriter{remote: &net.UDPAddr{IP: net.IPv4(10, 1, 42, 10), Port: 40000}} // client of ns-42
	rec := &dnstest.Recorder{Remote: w.remote}
	s.ServeDNS(rec, m) // warm the cache
	if rec.Msg == nil || rec.Msg.Rcode != mdns.RcodeSuccess || len(rec.Msg.Answer) != wantAnswers {
		b.Fatalf("%s: unexpected answer %v", qname, rec.Msg)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s.ServeDNS(w, m)
	}
}

// BenchmarkServiceHit answers the A record of one of 10,000 services.
func BenchmarkServiceHit(b *testing.B) {
	benchQuery(b, "svc-4242.ns-42.svc.cluster.local.", mdns.TypeA, 1)
}

// BenchmarkHeadlessHit answers a headless service with 5 backends.
func BenchmarkHeadlessHit(b *testing.B) {
	benchQuery(b, "hl-42.ns-42.svc.cluster.local.", mdns.TypeA, 5)
}

// BenchmarkHeadlessSRV answers the SRV records of a headless service (5 targets and
// their addresses).
func BenchmarkHeadlessSRV(b *testing.B) {
	benchQuery(b, "_http._tcp.hl-42.ns-42.svc.cluster.local.", mdns.TypeSRV, 5)
}

// BenchmarkAutopathExternal answers a pod's first search expansion of example.com
// (CNAME + the cached upstream answer) in one round trip.
func BenchmarkAutopathExternal(b *testing.B) {
	benchQuery(b, "example.com.ns-42.svc.cluster.local.", mdns.TypeA, 2)
}

// BenchmarkForwardCached answers an outside name from the cache.
func BenchmarkForwardCached(b *testing.B) {
	benchQuery(b, "example.com.", mdns.TypeA, 1)
}

// BenchmarkServiceHitParallel is BenchmarkServiceHit on every CPU.
func BenchmarkServiceHitParallel(b *testing.B) {
	s := benchServer(b)
	m := new(mdns.Msg)
	m.SetQuestion("svc-4242.ns-42.svc.cluster.local.", mdns.TypeA)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &packWriter{remote: &net.UDPAddr{IP: net.IPv4(10, 1, 42, 10), Port: 40000}}
		for pb.Next() {
			s.ServeDNS(w, m)
		}
	})
}

// BenchmarkSetSnapshot builds the indexes of the benchmark's cluster.
func BenchmarkSetSnapshot(b *testing.B) {
	s := benchServer(b)
	snap := benchSnapshot()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s.SetSnapshot(snap)
	}
}

// BenchmarkUpdateServices changes one service of the benchmark's cluster (its VIP), as
// a mirrored Service or EndpointSlice change does.
func BenchmarkUpdateServices(b *testing.B) {
	s := benchServer(b)
	svc := benchSnapshot().Services[4242]
	moved := svc
	moved.VIPs = []netip.Addr{netip.MustParseAddr("10.97.0.1")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			s.UpdateServices([]Service{moved}, nil)
		} else {
			s.UpdateServices([]Service{svc}, nil)
		}
	}
}
