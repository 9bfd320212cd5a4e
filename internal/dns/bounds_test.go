package dns

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/internal/dns/dnstest"
)

// withTSIG passes questions on to an upstream and appends a TSIG record to its answers:
// an answer of a broken or spoofed upstream.
type withTSIG struct{ next Exchanger }

func (u withTSIG) Exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	r, err := u.next.Exchange(ctx, m)
	if err != nil {
		return nil, err
	}
	r.Extra = append(r.Extra, &mdns.TSIG{
		Hdr:       mdns.RR_Header{Name: "key.example.", Rrtype: mdns.TypeTSIG, Class: mdns.ClassANY},
		Algorithm: mdns.HmacSHA256, MAC: "00", OrigId: r.Id,
	})
	return r, nil
}

// TestUDPAnswerCapped checks the amplification bound: whatever the EDNS0 size of a UDP
// query (65535 here), the answer packs into DefaultMaxUDPSize bytes (512 without EDNS0),
// with TC set when records had to go, for the zone's answers as for forwarded and cached
// ones, an upstream's oversized answer included; TCP carries every answer whole.
func TestUDPAnswerCapped(t *testing.T) {
	bigUpstream := func() *dnstest.Upstream {
		u := testUpstream()
		for i := range 200 {
			u.Add(fmt.Sprintf("big.example.com. 300 IN A 192.0.%d.%d", 2+i/250, 1+i%250))
		}
		return u
	}
	for _, tc := range []struct {
		name     string
		upstream Exchanger
		backends int // of the headless service big.ns1
		qname    string
		edns     uint16
		records  int // in the whole answer
		fits     bool
	}{
		{name: "headless, 60 backends", backends: 60, qname: "big.ns1.svc.cluster.local.", edns: 65535, records: 60, fits: true},
		{name: "headless, 200 backends", backends: 200, qname: "big.ns1.svc.cluster.local.", edns: 65535, records: 200},
		{name: "headless, 200 backends, no edns", backends: 200, qname: "big.ns1.svc.cluster.local.", records: 200},
		{name: "forwarded", upstream: bigUpstream(), qname: "big.example.com.", edns: 65535, records: 200},
		{name: "forwarded, upstream answer with tsig", upstream: withTSIG{bigUpstream()}, qname: "big.example.com.", edns: 65535, records: 200},
		{name: "forwarded, upstream answer with tsig, no edns", upstream: withTSIG{bigUpstream()}, qname: "big.example.com.", records: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) {
				if tc.upstream != nil {
					c.Upstream = tc.upstream
				}
			})
			snap := testSnapshot()
			snap.Services = append(snap.Services, bigSnapshot(tc.backends).Services...)
			f.srv.SetSnapshot(snap)
			m := new(mdns.Msg)
			m.SetQuestion(tc.qname, mdns.TypeA)
			if tc.edns != 0 {
				m.SetEdns0(tc.edns, false)
			}
			query, err := m.Pack()
			if err != nil {
				t.Fatal(err)
			}
			limit := DefaultMaxUDPSize
			if tc.edns == 0 {
				limit = mdns.MinMsgSize
			}
			// Twice over UDP: the second answer comes from the cache when forwarded.
			for _, try := range []string{"first", "second"} {
				w := dnstest.UDP(podNS1)
				f.srv.ServeDNS(w, m.Copy())
				r := w.Msg
				t.Logf("udp %s: %d-byte query, %d-byte answer (%.1fx), %d records, tc %v",
					try, len(query), w.Size, float64(w.Size)/float64(len(query)), len(r.Answer), r.Truncated)
				if w.Size > limit {
					t.Errorf("udp %s: answer of %d bytes, want at most %d", try, w.Size, limit)
				}
				if tc.fits && (r.Truncated || len(r.Answer) != tc.records) {
					t.Errorf("udp %s: tc %v with %d records, want all %d", try, r.Truncated, len(r.Answer), tc.records)
				}
				if !tc.fits && (!r.Truncated || len(r.Answer) == 0 || len(r.Answer) == tc.records) {
					t.Errorf("udp %s: tc %v with %d records, want TC and as many as fit", try, r.Truncated, len(r.Answer))
				}
				if len(withoutMeta(r.Extra)) != 0 {
					t.Errorf("udp %s: additional section %v", try, r.Extra)
				}
			}
			w := dnstest.TCP(podNS1)
			f.srv.ServeDNS(w, m.Copy())
			if w.Msg.Truncated || len(w.Msg.Answer) != tc.records {
				t.Errorf("tcp: tc %v with %d records, want all %d", w.Msg.Truncated, len(w.Msg.Answer), tc.records)
			}
		})
	}
}

// gated holds the questions for names under slow.example. until release is closed (or
// their context ends), telling arrived of each; other names go to next at once.
type gated struct {
	next    Exchanger
	arrived chan string
	release chan struct{}
}

func (g *gated) Exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	if name := m.Question[0].Name; strings.HasSuffix(name, ".slow.example.") {
		g.arrived <- name
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.next.Exchange(ctx, m)
}

// TestForwardBounds checks that questions waiting for an upstream are bounded per
// client: beyond maxForwardsPerClient the client's next uncached name gets SERVFAIL at
// once, without reaching the upstream, while its zone and cached names are answered and
// another client's questions still go upstream.
func TestForwardBounds(t *testing.T) {
	up := testUpstream()
	up.Add("*.slow.example. 300 IN A 192.0.2.7")
	g := &gated{next: up, arrived: make(chan string, 2*maxForwardsPerClient), release: make(chan struct{})}
	f := newFixture(t, func(c *Config) { c.Upstream = g })
	released := false
	release := func() {
		if !released {
			released = true
			close(g.release)
		}
	}
	t.Cleanup(release)
	serve := func(from, qname string) <-chan *mdns.Msg {
		out := make(chan *mdns.Msg, 1)
		go func() {
			m := new(mdns.Msg)
			m.SetQuestion(qname, mdns.TypeA)
			w := dnstest.UDP(from)
			f.srv.ServeDNS(w, m)
			out <- w.Msg
		}()
		return out
	}
	// answered waits for the answer to a question that must not go upstream.
	answered := func(what string, c <-chan *mdns.Msg) *mdns.Msg {
		t.Helper()
		select {
		case r := <-c:
			return r
		case name := <-g.arrived:
			t.Fatalf("%s: %s went upstream", what, name)
		}
		return nil
	}
	if r := answered("warming the cache", serve(podNS1, "example.com.")); r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("example.com: %s", mdns.RcodeToString[r.Rcode])
	}

	var waiting []<-chan *mdns.Msg
	for i := range maxForwardsPerClient {
		waiting = append(waiting, serve(podNS1, fmt.Sprintf("n%d.slow.example.", i)))
	}
	for range maxForwardsPerClient {
		<-g.arrived
	}

	r := answered("one question too many", serve(podNS1, "more.slow.example."))
	if r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("one question too many: %s, want SERVFAIL", mdns.RcodeToString[r.Rcode])
	}
	r = answered("zone name", serve(podNS1, "web.ns1.svc.cluster.local."))
	sectionEqual(t, "zone name", r.Answer, []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}, false)
	r = answered("cached name", serve(podNS1, "example.com."))
	sectionEqual(t, "cached name", r.Answer, []string{"example.com. 300 IN A 93.184.216.34"}, false)

	other := serve(podNS2, "other.slow.example.")
	if name := <-g.arrived; name != "other.slow.example." {
		t.Errorf("another client's question: %s went upstream", name)
	}
	release()
	for i, c := range append(waiting, other) {
		if r := <-c; r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("held question %d: %s with %d records", i, mdns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	// The slots are back: the question refused before now goes upstream.
	c := serve(podNS1, "more.slow.example.")
	<-g.arrived
	if r := <-c; r.Rcode != mdns.RcodeSuccess {
		t.Errorf("once the others were answered: %s, want NOERROR", mdns.RcodeToString[r.Rcode])
	}
}

// TestInflight checks the bounds of inflight, per client and in all.
func TestInflight(t *testing.T) {
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	l := newInflight(3, 2)
	for _, step := range []struct {
		release bool
		client  netip.Addr
		want    bool
	}{
		{client: a, want: true},
		{client: a, want: true},
		{client: a, want: false}, // a at its bound
		{client: b, want: true},
		{client: c, want: false}, // everyone at the bound
		{release: true, client: a},
		{client: c, want: true},
		{client: a, want: false}, // everyone at the bound again
		{release: true, client: b},
		{client: a, want: true},
	} {
		if step.release {
			l.release(step.client)
			continue
		}
		if got := l.acquire(step.client); got != step.want {
			t.Errorf("acquire %s after %d in all, %v: %v, want %v", step.client, l.n, l.clients, got, step.want)
		}
	}
	for _, cl := range []netip.Addr{a, a, c} {
		l.release(cl)
	}
	if l.n != 0 || len(l.clients) != 0 {
		t.Errorf("all released: %d in all, clients %v", l.n, l.clients)
	}
}

// TestPlausibleQuery checks the header test of the UDP read loop.
func TestPlausibleQuery(t *testing.T) {
	pack := func(edit func(*mdns.Msg)) []byte {
		m := new(mdns.Msg)
		m.SetQuestion("web.ns1.svc.cluster.local.", mdns.TypeA)
		m.SetEdns0(1232, false)
		if edit != nil {
			edit(m)
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rr := func(line string) mdns.RR {
		r, err := mdns.NewRR(line)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"query", pack(nil), true},
		{"update opcode (NOTIMP)", pack(func(m *mdns.Msg) { m.Opcode = mdns.OpcodeUpdate }), true},
		{"empty", nil, false},
		{"short header", pack(nil)[:11], false},
		{"header only", pack(nil)[:12], false},
		{"response", pack(func(m *mdns.Msg) { m.Response = true }), false},
		{"two questions", pack(func(m *mdns.Msg) { m.Question = append(m.Question, m.Question[0]) }), false},
		{"no question", pack(func(m *mdns.Msg) { m.Question = nil }), false},
		{"answer records", pack(func(m *mdns.Msg) { m.Answer = []mdns.RR{rr("x. 5 IN A 192.0.2.1")} }), false},
		{"authority records", pack(func(m *mdns.Msg) { m.Ns = []mdns.RR{rr("x. 5 IN A 192.0.2.1")} }), false},
		{"three additional", pack(func(m *mdns.Msg) {
			m.Extra = append(m.Extra, rr("x. 5 IN A 192.0.2.1"), rr("x. 5 IN A 192.0.2.2"))
		}), false},
	} {
		if got := plausibleQuery(tc.b); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
