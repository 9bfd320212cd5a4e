package dns

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	mdns "github.com/miekg/dns"
)

// externalNameSnapshot is testSnapshot with ExternalName services: to names upstream, to
// names of the zone, in a chain, in a loop, and invalid.
func externalNameSnapshot() Snapshot {
	snap := testSnapshot()
	snap.Services = append(snap.Services,
		Service{Name: "ext", Namespace: "ns1", ExternalName: "www.example.com"},
		Service{Name: "upper", Namespace: "ns1", ExternalName: "Example.COM."},
		Service{Name: "v6", Namespace: "ns1", ExternalName: "v6only.example"},
		Service{Name: "gone", Namespace: "ns1", ExternalName: "nope.example.com"},
		Service{Name: "alias", Namespace: "ns2", ExternalName: "web.ns1.svc.cluster.local"},
		Service{Name: "chain", Namespace: "ns2", ExternalName: "alias.ns2.svc.cluster.local."},
		Service{Name: "dangling", Namespace: "ns2", ExternalName: "nope.ns1.svc.cluster.local"},
		Service{Name: "loop-a", Namespace: "ns2", ExternalName: "loop-b.ns2.svc.cluster.local"},
		Service{Name: "loop-b", Namespace: "ns2", ExternalName: "loop-a.ns2.svc.cluster.local"},
		// ExternalName wins over everything else a service says: no A, SRV or PTR.
		Service{Name: "both", Namespace: "ns2", ExternalName: "example.com", VIPs: addrs("10.96.5.5"),
			Ports: []Port{{Name: "http", Port: 80, Protocol: "tcp"}}},
		Service{Name: "bad", Namespace: "ns2", ExternalName: "not_a..name"},
		Service{Name: "ip", Namespace: "ns2", ExternalName: "-leading.example.com"},
	)
	return snap
}

// TestExternalName checks spec 2.5: the CNAME record of an ExternalName service, and the
// answer going on with the target's records for other types.
func TestExternalName(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.SetSnapshot(externalNameSnapshot())
	const (
		A, AAAA, SRV, CNAME, ANY, PTR = mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV, mdns.TypeCNAME, mdns.TypeANY, mdns.TypePTR
		nx, servfail                  = mdns.RcodeNameError, mdns.RcodeServerFailure
		comSOA                        = "example. 30 IN SOA ns.example. hostmaster.example. 1 7200 1800 86400 30"
		soa                           = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1735689602 7200 1800 86400 5"
		soaRev                        = "in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1735689602 7200 1800 86400 5"
		extCNAME                      = "ext.ns1.svc.cluster.local. 5 IN CNAME www.example.com."
		exampleA                      = "example.com. 300 IN A 93.184.216.34"
	)
	for _, q := range []query{
		{name: "CNAME query: the record alone", qname: "ext.ns1.svc.cluster.local.", qtype: CNAME, aa: true,
			answer: []string{extCNAME}},
		{name: "ANY query: the record alone", qname: "ext.ns1.svc.cluster.local.", qtype: ANY, aa: true,
			answer: []string{extCNAME}},
		{name: "A query follows the target upstream", qname: "ext.ns1.svc.cluster.local.", qtype: A, aa: true,
			checkSectionsAsGiven: true, answer: []string{extCNAME, "www.example.com. 300 IN CNAME example.com.", exampleA}},
		{name: "target without the type: CNAME and NODATA", qname: "ext.ns1.svc.cluster.local.", qtype: AAAA, aa: true,
			checkSectionsAsGiven: true, answer: []string{extCNAME, "www.example.com. 300 IN CNAME example.com."}, ns: []string{comSOA}},
		{name: "AAAA of a v6 target", qname: "v6.ns1.svc.cluster.local.", qtype: AAAA, aa: true, checkSectionsAsGiven: true,
			answer: []string{"v6.ns1.svc.cluster.local. 5 IN CNAME v6only.example.", "v6only.example. 300 IN AAAA 2001:db8::1"}},
		{name: "external name in lower case, fully qualified", qname: "upper.ns1.svc.cluster.local.", qtype: A, aa: true,
			checkSectionsAsGiven: true, answer: []string{"upper.ns1.svc.cluster.local. 5 IN CNAME example.com.", exampleA}},
		{name: "client's spelling of the owner kept", qname: "EXT.ns1.svc.cluster.local.", qtype: CNAME, aa: true,
			answer: []string{"EXT.ns1.svc.cluster.local. 5 IN CNAME www.example.com."}},
		{name: "target does not exist: CNAME and NXDOMAIN", qname: "gone.ns1.svc.cluster.local.", qtype: A, rcode: nx, aa: true,
			answer: []string{"gone.ns1.svc.cluster.local. 5 IN CNAME nope.example.com."}, ns: []string{comSOA}},

		// Targets inside the zone: answered from the zone, chains followed.
		{name: "target in the zone", qname: "alias.ns2.svc.cluster.local.", qtype: A, aa: true, checkSectionsAsGiven: true,
			answer: []string{"alias.ns2.svc.cluster.local. 5 IN CNAME web.ns1.svc.cluster.local.", "web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "target in the zone, SRV: NODATA of the target", qname: "alias.ns2.svc.cluster.local.", qtype: SRV, aa: true,
			answer: []string{"alias.ns2.svc.cluster.local. 5 IN CNAME web.ns1.svc.cluster.local."}, ns: []string{soa}},
		{name: "chain of aliases", qname: "chain.ns2.svc.cluster.local.", qtype: AAAA, aa: true, checkSectionsAsGiven: true,
			answer: []string{
				"chain.ns2.svc.cluster.local. 5 IN CNAME alias.ns2.svc.cluster.local.",
				"alias.ns2.svc.cluster.local. 5 IN CNAME web.ns1.svc.cluster.local.",
				"web.ns1.svc.cluster.local. 5 IN AAAA fd00:96::10",
			}},
		{name: "target in the zone does not exist", qname: "dangling.ns2.svc.cluster.local.", qtype: A, rcode: nx, aa: true,
			answer: []string{"dangling.ns2.svc.cluster.local. 5 IN CNAME nope.ns1.svc.cluster.local."}, ns: []string{soa}},
		{name: "loop: SERVFAIL", qname: "loop-a.ns2.svc.cluster.local.", qtype: A, rcode: servfail, aa: true, checkSectionsAsGiven: true,
			answer: []string{
				"loop-a.ns2.svc.cluster.local. 5 IN CNAME loop-b.ns2.svc.cluster.local.",
				"loop-b.ns2.svc.cluster.local. 5 IN CNAME loop-a.ns2.svc.cluster.local.",
			}},
		{name: "loop, CNAME query: the record alone", qname: "loop-a.ns2.svc.cluster.local.", qtype: CNAME, aa: true,
			answer: []string{"loop-a.ns2.svc.cluster.local. 5 IN CNAME loop-b.ns2.svc.cluster.local."}},

		// Nothing but the CNAME.
		{name: "no SRV for an alias", qname: "_http._tcp.both.ns2.svc.cluster.local.", qtype: SRV, rcode: nx, aa: true, ns: []string{soa}},
		{name: "no names below an alias", qname: "x.ext.ns1.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soa}},
		{name: "no PTR for an alias's VIPs", qname: "5.5.96.10.in-addr.arpa.", qtype: PTR, rcode: nx, aa: true, ns: []string{soaRev}},
		{name: "alias with VIPs: the CNAME", qname: "both.ns2.svc.cluster.local.", qtype: A, aa: true, checkSectionsAsGiven: true,
			answer: []string{"both.ns2.svc.cluster.local. 5 IN CNAME example.com.", exampleA}},
		{name: "invalid external name: no records", qname: "bad.ns2.svc.cluster.local.", qtype: CNAME, rcode: nx, aa: true, ns: []string{soa}},
		{name: "label starting with a hyphen: no records", qname: "ip.ns2.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soa}},
	} {
		t.Run(q.name, func(t *testing.T) {
			if q.from == "" {
				q.from = node
			}
			f.check(t, q)
		})
	}
}

// TestExternalNameUpstream checks how the answer goes on when the target cannot be
// asked upstream: none configured, or failing.
func TestExternalNameUpstream(t *testing.T) {
	const cname = "ext.ns1.svc.cluster.local. 5 IN CNAME www.example.com."

	t.Run("no upstream: the CNAME alone", func(t *testing.T) {
		empty := filepath.Join(t.TempDir(), "resolv.conf")
		if err := os.WriteFile(empty, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		f := newFixture(t, func(c *Config) { c.Upstream = nil; c.ResolvConf = empty })
		f.srv.SetSnapshot(externalNameSnapshot())
		f.check(t, query{qname: "ext.ns1.svc.cluster.local.", qtype: mdns.TypeA, from: node, aa: true, answer: []string{cname}})
	})
	t.Run("upstream fails: SERVFAIL after the CNAME", func(t *testing.T) {
		f := newFixture(t, nil)
		f.srv.SetSnapshot(externalNameSnapshot())
		f.upstream.SetRcode(mdns.RcodeServerFailure)
		f.check(t, query{qname: "ext.ns1.svc.cluster.local.", qtype: mdns.TypeA, from: node, rcode: mdns.RcodeServerFailure, aa: true,
			answer: []string{cname}})
	})
	t.Run("target asked once through the cache", func(t *testing.T) {
		f := newFixture(t, nil)
		f.srv.SetSnapshot(externalNameSnapshot())
		for range 3 {
			f.check(t, query{qname: "ext.ns1.svc.cluster.local.", qtype: mdns.TypeA, from: node, aa: true, checkSectionsAsGiven: true,
				answer: []string{cname, "www.example.com. 300 IN CNAME example.com.", "example.com. 300 IN A 93.184.216.34"}})
		}
		if n := f.upstream.Queries("www.example.com.", mdns.TypeA); n != 1 {
			t.Errorf("upstream asked %d times for www.example.com. A, want 1", n)
		}
		if n := f.upstream.Total(); n != 1 {
			t.Errorf("upstream asked %d questions, want 1", n)
		}
	})
}

// TestExternalNameAutopath checks that autopath neither takes over the NXDOMAIN of an
// alias's missing target nor skips an alias candidate.
func TestExternalNameAutopath(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.SetSnapshot(externalNameSnapshot())
	const comSOA = "example. 30 IN SOA ns.example. hostmaster.example. 1 7200 1800 86400 30"
	// From a pod of ns1: its own namespace's alias, whose target does not exist. The
	// NXDOMAIN is the target's; the pod's search list is not walked.
	f.check(t, query{qname: "gone.ns1.svc.cluster.local.", qtype: mdns.TypeA, from: podNS1, rcode: mdns.RcodeNameError, aa: true,
		answer: []string{"gone.ns1.svc.cluster.local. 5 IN CNAME nope.example.com."}, ns: []string{comSOA}})
	if n := f.upstream.Queries("gone.ns1.svc.cluster.local.", mdns.TypeA); n != 0 {
		t.Errorf("autopath asked upstream for the alias's name")
	}
	// "dangling.ns2" from a pod of ns1: the svc.<zone> candidate is an alias whose target
	// does not exist; it exists, so the walk stops there.
	f.check(t, query{qname: "dangling.ns2.ns1.svc.cluster.local.", qtype: mdns.TypeA, from: podNS1, rcode: mdns.RcodeNameError, aa: true,
		checkSectionsAsGiven: true, answer: []string{
			"dangling.ns2.ns1.svc.cluster.local. 5 IN CNAME dangling.ns2.svc.cluster.local.",
			"dangling.ns2.svc.cluster.local. 5 IN CNAME nope.ns1.svc.cluster.local.",
		}, ns: []string{"cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1735689602 7200 1800 86400 5"}})
	// "alias.ns2" from a pod of ns1: through the alias to the service's VIP.
	f.check(t, query{qname: "alias.ns2.ns1.svc.cluster.local.", qtype: mdns.TypeA, from: podNS1, aa: true,
		checkSectionsAsGiven: true, answer: []string{
			"alias.ns2.ns1.svc.cluster.local. 5 IN CNAME alias.ns2.svc.cluster.local.",
			"alias.ns2.svc.cluster.local. 5 IN CNAME web.ns1.svc.cluster.local.",
			"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10",
		}})
}

// TestExternalNameInvalidLogged checks that an external name that is no DNS name is
// logged, naming the service and the name.
func TestExternalNameInvalidLogged(t *testing.T) {
	var (
		mu    sync.Mutex
		lines []string
	)
	f := newFixture(t, func(c *Config) {
		c.Logf = func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			lines = append(lines, fmt.Sprintf(format, args...))
		}
	})
	f.srv.SetSnapshot(externalNameSnapshot())
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{`service ns2/bad: external name "not_a..name"`, `service ns2/ip: external name "-leading.example.com"`} {
		found := false
		for _, l := range lines {
			found = found || strings.Contains(l, want)
		}
		if !found {
			t.Errorf("no log line with %s in:\n%s", want, strings.Join(lines, "\n"))
		}
	}
}

// TestExternalTarget checks which external names are accepted, and their form.
func TestExternalTarget(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"www.example.com", "www.example.com."},
		{"www.example.com.", "www.example.com."},
		{"DB.Example.Org", "db.example.org."},
		{"localhost", "localhost."},
		{"1.2.3.4", "1.2.3.4."}, // a name of digits, as Kubernetes takes it
		{strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com."},
		{"", ""},
		{".", ""},
		{"a..b", ""},
		{"under_score.example", ""},
		{"-a.example", ""},
		{"a-.example", ""},
		{"a.example..", ""},
		{strings.Repeat("a", 64) + ".com", ""},
		{strings.Repeat("abcdefghi.", 26) + "com", ""}, // 263 characters
		{"spa ce.example", ""},
	} {
		got, ok := externalTarget(tc.in)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("externalTarget(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}
