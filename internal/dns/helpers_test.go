package dns

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/internal/dns/dnstest"
)

var (
	_ Exchanger = (*dnstest.Upstream)(nil)
	_ Clock     = (*dnstest.Clock)(nil)
)

// Clients of the test cluster.
const (
	podNS1   = "10.1.0.10" // pod "client" of namespace ns1
	podNS1v6 = "fd00:1::10"
	podNS2   = "10.2.0.10" // pod "other" of namespace ns2
	node     = "10.0.0.1"  // an allowed address that is no pod
	stranger = "192.0.2.1" // not allowed
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// testSnapshot is the cluster most tests ask about.
func testSnapshot() Snapshot {
	return Snapshot{
		Services: []Service{
			{Name: "web", Namespace: "ns1", VIPs: addrs("10.96.0.10", "fd00:96::10"), Ports: []Port{
				{Name: "http", Port: 80, Protocol: "tcp"},
				{Port: 8080, Protocol: "tcp"},
				{Name: "dns", Port: 53, Protocol: "udp"},
			}},
			{Name: "db", Namespace: "ns1", Headless: true, Ports: []Port{{Name: "pg", Port: 5432, Protocol: "tcp"}},
				Backends: []Backend{
					{Hostname: "db-1", Addr: netip.MustParseAddr("10.1.0.21")},
					{Hostname: "db-0", Addr: netip.MustParseAddr("10.1.0.20")},
					{Hostname: "db-1", Addr: netip.MustParseAddr("fd00:1::21")},
					{Addr: netip.MustParseAddr("10.1.0.22")}, // manual backend
				}},
			{Name: "empty", Namespace: "ns1", Headless: true, Ports: []Port{{Name: "pg", Port: 5432, Protocol: "tcp"}}},
			{Name: "v4only", Namespace: "ns2", VIPs: addrs("10.96.0.20")},
		},
		Pods: []Pod{
			{Namespace: "ns1", Name: "client", Addrs: addrs(podNS1, podNS1v6)},
			{Namespace: "ns1", Name: "db-0", Addrs: addrs("10.1.0.20")},
			{Namespace: "ns1", Name: "db-1", Addrs: addrs("10.1.0.21", "fd00:1::21")},
			{Namespace: "ns2", Name: "other", Addrs: addrs(podNS2)},
			{Namespace: "ns3", Name: "solo", Addrs: addrs("10.3.0.5")},
		},
	}
}

// testUpstream is the world outside the cluster.
func testUpstream() *dnstest.Upstream {
	return dnstest.NewUpstream(
		"example.com. 300 IN A 93.184.216.34",
		"www.example.com. 300 IN CNAME example.com.",
		"v6only.example. 300 IN AAAA 2001:db8::1",
		"intranet.corp.example. 60 IN A 10.50.0.1",
	)
}

type fixture struct {
	srv      *Server
	upstream *dnstest.Upstream
	clock    *dnstest.Clock
}

// newFixture serves testSnapshot with testUpstream; edit adjusts the config.
func newFixture(t testing.TB, edit func(*Config)) *fixture {
	t.Helper()
	f := &fixture{upstream: testUpstream(), clock: dnstest.NewClock(epoch)}
	cfg := Config{
		AllowedClients:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")},
		Upstream:        f.upstream,
		SearchDomains:   []string{},
		ReversePrefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
		Clock:           f.clock,
		Logf:            t.Logf,
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.SetSnapshot(testSnapshot())
	f.srv = s
	return f
}

// query describes one question and the answer expected, sections as zone lines.
type query struct {
	name  string
	from  string // client address; podNS1 when empty
	tcp   bool
	qname string
	qtype uint16
	edns  uint16 // EDNS0 buffer size; 0: no OPT
	do    bool

	rcode                int
	aa                   bool
	answer, ns, extra    []string
	tc                   bool
	checkSectionsAsGiven bool // answer order matters (CNAME first)
}

func (f *fixture) ask(t *testing.T, q query) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(q.qname, q.qtype)
	if q.edns != 0 {
		m.SetEdns0(q.edns, q.do)
	}
	from := q.from
	if from == "" {
		from = podNS1
	}
	w := dnstest.UDP(from)
	if q.tcp {
		w = dnstest.TCP(from)
	}
	f.srv.ServeDNS(w, m)
	if w.Msg == nil {
		t.Fatalf("%s %s: no answer", q.qname, mdns.TypeToString[q.qtype])
	}
	return w.Msg
}

func (f *fixture) check(t *testing.T, q query) {
	t.Helper()
	r := f.ask(t, q)
	what := q.qname + " " + mdns.TypeToString[q.qtype]
	if r.Rcode != q.rcode {
		t.Errorf("%s: rcode %s, want %s\n%v", what, mdns.RcodeToString[r.Rcode], mdns.RcodeToString[q.rcode], r)
	}
	if r.Authoritative != q.aa {
		t.Errorf("%s: aa %v, want %v", what, r.Authoritative, q.aa)
	}
	if r.Truncated != q.tc {
		t.Errorf("%s: tc %v, want %v", what, r.Truncated, q.tc)
	}
	if len(r.Question) != 1 || r.Question[0].Name != q.qname {
		t.Errorf("%s: question %v", what, r.Question)
	}
	sectionEqual(t, what+" answer", r.Answer, q.answer, q.checkSectionsAsGiven)
	sectionEqual(t, what+" authority", r.Ns, q.ns, false)
	sectionEqual(t, what+" additional", withoutMeta(r.Extra), q.extra, false)
}

// sectionEqual compares records with zone lines (in order when ordered, else as sets).
func sectionEqual(t *testing.T, what string, got []mdns.RR, want []string, ordered bool) {
	t.Helper()
	var g, w []string
	for _, rr := range got {
		g = append(g, rr.String())
	}
	for _, line := range want {
		rr, err := mdns.NewRR(line)
		if err != nil {
			t.Fatalf("%s: zone line %q: %v", what, line, err)
		}
		w = append(w, rr.String())
	}
	if !ordered {
		slices.Sort(g)
		slices.Sort(w)
	}
	if !slices.Equal(g, w) {
		t.Errorf("%s:\n got: %s\nwant: %s", what, strings.Join(g, "\n      "), strings.Join(w, "\n      "))
	}
}

// SOA lines of the test zone (serial: epoch, the first snapshot after New's empty one).
const (
	soaNeg = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1735689601 7200 1800 86400 5"
	soa4   = "in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1735689601 7200 1800 86400 5"
	soa6   = "ip6.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1735689601 7200 1800 86400 5"
)
