package dns

import (
	"errors"
	"testing"

	mdns "github.com/miekg/dns"
)

// TestAutopath checks the search-list shortcut: the answer a pod's stub would reach
// after walking its search list, in one round trip.
func TestAutopath(t *testing.T) {
	const (
		A, AAAA  = mdns.TypeA, mdns.TypeAAAA
		ok, nx   = mdns.RcodeSuccess, mdns.RcodeNameError
		comSOA   = "example. 30 IN SOA ns.example. hostmaster.example. 1 7200 1800 86400 30"
		exampleA = "example.com. 300 IN A 93.184.216.34"
	)
	for _, q := range []query{
		{name: "external name", qname: "example.com.ns1.svc.cluster.local.", qtype: A, answer: []string{
			"example.com.ns1.svc.cluster.local. 5 IN CNAME example.com.", exampleA}},
		{name: "external name from a v6 pod", from: podNS1v6, qname: "example.com.ns1.svc.cluster.local.", qtype: A, answer: []string{
			"example.com.ns1.svc.cluster.local. 5 IN CNAME example.com.", exampleA}},
		{name: "external name without AAAA: CNAME and NODATA", qname: "example.com.ns1.svc.cluster.local.", qtype: AAAA,
			answer: []string{"example.com.ns1.svc.cluster.local. 5 IN CNAME example.com."}, ns: []string{comSOA}},
		{name: "v6-only name A: CNAME and NODATA", qname: "v6only.example.ns1.svc.cluster.local.", qtype: A,
			answer: []string{"v6only.example.ns1.svc.cluster.local. 5 IN CNAME v6only.example."}, ns: []string{comSOA}},
		{name: "v6-only name AAAA", qname: "v6only.example.ns1.svc.cluster.local.", qtype: AAAA, answer: []string{
			"v6only.example.ns1.svc.cluster.local. 5 IN CNAME v6only.example.", "v6only.example. 300 IN AAAA 2001:db8::1"}},
		{name: "external CNAME chain", qname: "www.example.com.ns1.svc.cluster.local.", qtype: A, answer: []string{
			"www.example.com.ns1.svc.cluster.local. 5 IN CNAME www.example.com.",
			"www.example.com. 300 IN CNAME example.com.", exampleA}},
		{name: "client's spelling kept", qname: "EXAMPLE.com.NS1.svc.cluster.local.", qtype: A, answer: []string{
			"EXAMPLE.com.NS1.svc.cluster.local. 5 IN CNAME EXAMPLE.com.", exampleA}},
		{name: "service of another namespace: svc.<zone> candidate", qname: "v4only.ns2.ns1.svc.cluster.local.", qtype: A, aa: true, answer: []string{
			"v4only.ns2.ns1.svc.cluster.local. 5 IN CNAME v4only.ns2.svc.cluster.local.",
			"v4only.ns2.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "<zone> candidate", qname: "web.ns1.svc.ns1.svc.cluster.local.", qtype: A, aa: true, answer: []string{
			"web.ns1.svc.ns1.svc.cluster.local. 5 IN CNAME web.ns1.svc.cluster.local.",
			"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "nothing anywhere: the original NXDOMAIN", qname: "nx.example.ns1.svc.cluster.local.", qtype: A,
			rcode: nx, aa: true, ns: []string{soaNeg}},

		// Never a change for names that exist in the zone.
		{name: "existing service", qname: "web.ns1.svc.cluster.local.", qtype: A, aa: true,
			answer: []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "existing service, NODATA", qname: "v4only.ns2.svc.cluster.local.", qtype: AAAA, aa: true, ns: []string{soaNeg}},
		{name: "own namespace, NODATA", qname: "ns1.svc.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},
		{name: "hostname", qname: "db-0.db.ns1.svc.cluster.local.", qtype: A, aa: true,
			answer: []string{"db-0.db.ns1.svc.cluster.local. 5 IN A 10.1.0.20"}},
		{name: "protocol non-terminal", qname: "_tcp.web.ns1.svc.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},
		{name: "SRV", qname: "_http._tcp.web.ns1.svc.cluster.local.", qtype: mdns.TypeSRV, aa: true,
			answer: []string{"_http._tcp.web.ns1.svc.cluster.local. 5 IN SRV 0 100 80 web.ns1.svc.cluster.local."},
			extra:  []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10", "web.ns1.svc.cluster.local. 5 IN AAAA fd00:96::10"}},

		// Not a ClusterFirst expansion of this client.
		{name: "not a pod", from: node, qname: "example.com.ns1.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "pod of another namespace", from: podNS2, qname: "example.com.ns1.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "second search domain", qname: "example.com.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "CNAME query", qname: "example.com.ns1.svc.cluster.local.", qtype: mdns.TypeCNAME, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "DO bit: left alone", edns: 1232, do: true, qname: "example.com.ns1.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
	} {
		t.Run(q.name, func(t *testing.T) {
			f := newFixture(t, nil)
			q.checkSectionsAsGiven = true
			f.check(t, q)
		})
	}
}

// TestAutopathRoundTrips checks that only the last candidate goes upstream (the zone's
// candidates are answered locally) and that A and AAAA stop at the same candidate.
func TestAutopathRoundTrips(t *testing.T) {
	f := newFixture(t, nil)
	a := f.ask(t, query{qname: "example.com.ns1.svc.cluster.local.", qtype: mdns.TypeA})
	aaaa := f.ask(t, query{qname: "example.com.ns1.svc.cluster.local.", qtype: mdns.TypeAAAA})
	if f.upstream.Total() != 2 || f.upstream.Queries("example.com.", mdns.TypeA) != 1 || f.upstream.Queries("example.com.", mdns.TypeAAAA) != 1 {
		t.Errorf("upstream queries: %d in all, want A and AAAA of example.com. once each", f.upstream.Total())
	}
	if a.Answer[0].(*mdns.CNAME).Target != aaaa.Answer[0].(*mdns.CNAME).Target {
		t.Errorf("A and AAAA went different ways: %v / %v", a.Answer[0], aaaa.Answer[0])
	}
}

// TestAutopathNodeSearch checks that the node's search domains are walked before the
// name itself.
func TestAutopathNodeSearch(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SearchDomains = []string{"corp.example"} })
	f.check(t, query{qname: "intranet.ns1.svc.cluster.local.", qtype: mdns.TypeA, checkSectionsAsGiven: true, answer: []string{
		"intranet.ns1.svc.cluster.local. 5 IN CNAME intranet.corp.example.",
		"intranet.corp.example. 60 IN A 10.50.0.1"}})
	if n := f.upstream.Queries("intranet.", mdns.TypeA); n != 0 {
		t.Errorf("the bare name was asked before the search domain")
	}
	f.check(t, query{qname: "example.com.ns1.svc.cluster.local.", qtype: mdns.TypeA, checkSectionsAsGiven: true, answer: []string{
		"example.com.ns1.svc.cluster.local. 5 IN CNAME example.com.", "example.com. 300 IN A 93.184.216.34"}})
	if n := f.upstream.Queries("example.com.corp.example.", mdns.TypeA); n != 1 {
		t.Errorf("search domain candidate asked %d times, want 1", n)
	}
}

// TestAutopathFailure checks that an upstream failure stops the walk: the client gets
// the true NXDOMAIN of its question and meets the failure itself.
func TestAutopathFailure(t *testing.T) {
	f := newFixture(t, nil)
	f.upstream.Fail(errors.New("unreachable"))
	f.check(t, query{qname: "example.com.ns1.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, aa: true, ns: []string{soaNeg}})
	f.upstream.Fail(nil)
	f.upstream.SetRcode(mdns.RcodeServerFailure)
	f.check(t, query{qname: "example.com.ns1.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, aa: true, ns: []string{soaNeg}})
}

// TestAutopathOff checks Config.Autopath.
func TestAutopathOff(t *testing.T) {
	off := false
	f := newFixture(t, func(c *Config) { c.Autopath = &off })
	f.check(t, query{qname: "example.com.ns1.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, aa: true, ns: []string{soaNeg}})
	if n := f.upstream.Total(); n != 0 {
		t.Errorf("autopath off, yet %d upstream queries", n)
	}
}

// TestAutopathAmbiguousClient checks that an address shared by pods of two namespaces
// gets no autopath (its search list is unknown).
func TestAutopathAmbiguousClient(t *testing.T) {
	f := newFixture(t, nil)
	snap := testSnapshot()
	snap.Pods = append(snap.Pods, Pod{Namespace: "ns2", Name: "twin", Addrs: addrs(podNS1)})
	f.srv.SetSnapshot(snap)
	r := f.ask(t, query{qname: "example.com.ns1.svc.cluster.local.", qtype: mdns.TypeA})
	if r.Rcode != mdns.RcodeNameError {
		t.Errorf("ambiguous client autopathed: %v", r)
	}
}
