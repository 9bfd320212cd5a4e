package dns

import (
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
)

// TestZone checks every record of the spec, and NXDOMAIN against NODATA, through
// ServeDNS (no sockets). Clients are not pods unless said: autopath is tested apart.
func TestZone(t *testing.T) {
	f := newFixture(t, nil)
	const (
		A, AAAA, SRV, TXT, PTR = mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV, mdns.TypeTXT, mdns.TypePTR
		ok, nx                 = mdns.RcodeSuccess, mdns.RcodeNameError
	)
	for _, q := range []query{
		// 2.2 schema version
		{name: "dns-version", qname: "dns-version.cluster.local.", qtype: TXT, aa: true,
			answer: []string{`dns-version.cluster.local. 5 IN TXT "1.1.0"`}},
		{name: "dns-version A is NODATA", qname: "dns-version.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},
		{name: "below dns-version", qname: "x.dns-version.cluster.local.", qtype: TXT, rcode: nx, aa: true, ns: []string{soaNeg}},

		// apex
		{name: "apex SOA", qname: "cluster.local.", qtype: mdns.TypeSOA, aa: true,
			answer: []string{"cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1735689601 7200 1800 86400 5"}},
		{name: "apex NS", qname: "cluster.local.", qtype: mdns.TypeNS, aa: true,
			answer: []string{"cluster.local. 5 IN NS ns.dns.cluster.local."},
			extra:  []string{"ns.dns.cluster.local. 5 IN A 169.254.20.10"}},
		{name: "apex A is NODATA", qname: "cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},
		{name: "name server", qname: "ns.dns.cluster.local.", qtype: A, aa: true,
			answer: []string{"ns.dns.cluster.local. 5 IN A 169.254.20.10"}},
		{name: "unknown top label", qname: "nope.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},

		// 2.3 service with VIPs
		{name: "service A", qname: "web.ns1.svc.cluster.local.", qtype: A, aa: true,
			answer: []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "service AAAA", qname: "web.ns1.svc.cluster.local.", qtype: AAAA, aa: true,
			answer: []string{"web.ns1.svc.cluster.local. 5 IN AAAA fd00:96::10"}},
		{name: "case kept", qname: "WEB.Ns1.svc.Cluster.LOCAL.", qtype: A, aa: true,
			answer: []string{"WEB.Ns1.svc.Cluster.LOCAL. 5 IN A 10.96.0.10"}},
		{name: "service TXT is NODATA", qname: "web.ns1.svc.cluster.local.", qtype: TXT, aa: true, ns: []string{soaNeg}},
		{name: "single-stack service AAAA is NODATA", qname: "v4only.ns2.svc.cluster.local.", qtype: AAAA, aa: true, ns: []string{soaNeg}},
		{name: "SRV named port", qname: "_http._tcp.web.ns1.svc.cluster.local.", qtype: SRV, aa: true,
			answer: []string{"_http._tcp.web.ns1.svc.cluster.local. 5 IN SRV 0 100 80 web.ns1.svc.cluster.local."},
			extra:  []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10", "web.ns1.svc.cluster.local. 5 IN AAAA fd00:96::10"}},
		{name: "SRV udp port", qname: "_dns._udp.web.ns1.svc.cluster.local.", qtype: SRV, aa: true,
			answer: []string{"_dns._udp.web.ns1.svc.cluster.local. 5 IN SRV 0 100 53 web.ns1.svc.cluster.local."},
			extra:  []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10", "web.ns1.svc.cluster.local. 5 IN AAAA fd00:96::10"}},
		{name: "SRV case-insensitive", qname: "_HTTP._TCP.web.ns1.svc.cluster.local.", qtype: SRV, aa: true,
			answer: []string{"_HTTP._TCP.web.ns1.svc.cluster.local. 5 IN SRV 0 100 80 web.ns1.svc.cluster.local."},
			extra:  []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10", "web.ns1.svc.cluster.local. 5 IN AAAA fd00:96::10"}},
		{name: "SRV name A is NODATA", qname: "_http._tcp.web.ns1.svc.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},
		{name: "SRV wrong protocol", qname: "_http._udp.web.ns1.svc.cluster.local.", qtype: SRV, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "unnamed port has no SRV", qname: "_8080._tcp.web.ns1.svc.cluster.local.", qtype: SRV, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "protocol label is an empty non-terminal", qname: "_tcp.web.ns1.svc.cluster.local.", qtype: SRV, aa: true, ns: []string{soaNeg}},
		{name: "below a SRV name", qname: "x._http._tcp.web.ns1.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "no hostnames under a VIP service", qname: "db-0.web.ns1.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},

		// 2.4 headless service
		{name: "headless A", qname: "db.ns1.svc.cluster.local.", qtype: A, aa: true, answer: []string{
			"db.ns1.svc.cluster.local. 5 IN A 10.1.0.20",
			"db.ns1.svc.cluster.local. 5 IN A 10.1.0.21",
			"db.ns1.svc.cluster.local. 5 IN A 10.1.0.22",
		}},
		{name: "headless AAAA", qname: "db.ns1.svc.cluster.local.", qtype: AAAA, aa: true,
			answer: []string{"db.ns1.svc.cluster.local. 5 IN AAAA fd00:1::21"}},
		{name: "hostname A", qname: "db-1.db.ns1.svc.cluster.local.", qtype: A, aa: true,
			answer: []string{"db-1.db.ns1.svc.cluster.local. 5 IN A 10.1.0.21"}},
		{name: "hostname AAAA", qname: "db-1.db.ns1.svc.cluster.local.", qtype: AAAA, aa: true,
			answer: []string{"db-1.db.ns1.svc.cluster.local. 5 IN AAAA fd00:1::21"}},
		{name: "single-stack hostname AAAA is NODATA", qname: "db-0.db.ns1.svc.cluster.local.", qtype: AAAA, aa: true, ns: []string{soaNeg}},
		{name: "manual backend identifier", qname: "10-1-0-22.db.ns1.svc.cluster.local.", qtype: A, aa: true,
			answer: []string{"10-1-0-22.db.ns1.svc.cluster.local. 5 IN A 10.1.0.22"}},
		{name: "unknown hostname", qname: "db-9.db.ns1.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "headless SRV", qname: "_pg._tcp.db.ns1.svc.cluster.local.", qtype: SRV, aa: true, answer: []string{
			"_pg._tcp.db.ns1.svc.cluster.local. 5 IN SRV 0 33 5432 10-1-0-22.db.ns1.svc.cluster.local.",
			"_pg._tcp.db.ns1.svc.cluster.local. 5 IN SRV 0 33 5432 db-0.db.ns1.svc.cluster.local.",
			"_pg._tcp.db.ns1.svc.cluster.local. 5 IN SRV 0 33 5432 db-1.db.ns1.svc.cluster.local.",
		}, extra: []string{
			"10-1-0-22.db.ns1.svc.cluster.local. 5 IN A 10.1.0.22",
			"db-0.db.ns1.svc.cluster.local. 5 IN A 10.1.0.20",
			"db-1.db.ns1.svc.cluster.local. 5 IN A 10.1.0.21",
			"db-1.db.ns1.svc.cluster.local. 5 IN AAAA fd00:1::21",
		}},
		{name: "headless without ready backends is NXDOMAIN", qname: "empty.ns1.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "no SRV without ready backends", qname: "_pg._tcp.empty.ns1.svc.cluster.local.", qtype: SRV, rcode: nx, aa: true, ns: []string{soaNeg}},

		// intermediate names
		{name: "svc label", qname: "svc.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},
		{name: "namespace", qname: "ns1.svc.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},
		{name: "namespace with pods only", qname: "ns3.svc.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},
		{name: "unknown namespace", qname: "nope.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "unknown service", qname: "nope.ns1.svc.cluster.local.", qtype: A, from: node, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "escaped label", qname: `web\.x.ns1.svc.cluster.local.`, qtype: A, from: node, rcode: nx, aa: true, ns: []string{soaNeg}},

		// 2.6 pod records (verified: only addresses of the namespace's pods)
		{name: "pod A", qname: "10-1-0-10.ns1.pod.cluster.local.", qtype: A, aa: true,
			answer: []string{"10-1-0-10.ns1.pod.cluster.local. 5 IN A 10.1.0.10"}},
		{name: "pod AAAA", qname: "fd00-1--10.ns1.pod.cluster.local.", qtype: AAAA, aa: true,
			answer: []string{"fd00-1--10.ns1.pod.cluster.local. 5 IN AAAA fd00:1::10"}},
		{name: "pod AAAA expanded spelling", qname: "fd00-1-0-0-0-0-0-10.ns1.pod.cluster.local.", qtype: AAAA, aa: true,
			answer: []string{"fd00-1-0-0-0-0-0-10.ns1.pod.cluster.local. 5 IN AAAA fd00:1::10"}},
		{name: "pod A of a v6 name is NODATA", qname: "fd00-1--10.ns1.pod.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},
		{name: "pod of another namespace", qname: "10-1-0-10.ns2.pod.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "no pod at that address", qname: "10-9-9-9.ns1.pod.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "not an address", qname: "client.ns1.pod.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg}},
		{name: "pod namespace", qname: "ns1.pod.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},
		{name: "pod label", qname: "pod.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg}},

		// PTR
		{name: "PTR of a VIP", qname: "10.0.96.10.in-addr.arpa.", qtype: PTR, aa: true,
			answer: []string{"10.0.96.10.in-addr.arpa. 5 IN PTR web.ns1.svc.cluster.local."}},
		{name: "PTR of a v6 VIP", qname: mustReverse("fd00:96::10"), qtype: PTR, aa: true,
			answer: []string{mustReverse("fd00:96::10") + " 5 IN PTR web.ns1.svc.cluster.local."}},
		{name: "PTR of a headless backend", qname: "21.0.1.10.in-addr.arpa.", qtype: PTR, aa: true,
			answer: []string{"21.0.1.10.in-addr.arpa. 5 IN PTR db-1.db.ns1.svc.cluster.local."}},
		{name: "PTR of a v6 headless backend", qname: mustReverse("fd00:1::21"), qtype: PTR, aa: true,
			answer: []string{mustReverse("fd00:1::21") + " 5 IN PTR db-1.db.ns1.svc.cluster.local."}},
		{name: "PTR of a pod", qname: "10.0.1.10.in-addr.arpa.", qtype: PTR, aa: true,
			answer: []string{"10.0.1.10.in-addr.arpa. 5 IN PTR 10-1-0-10.ns1.pod.cluster.local."}},
		{name: "reverse name A is NODATA", qname: "10.0.96.10.in-addr.arpa.", qtype: A, aa: true, ns: []string{soa4}},
		{name: "reverse v6 name A is NODATA", qname: mustReverse("fd00:96::10"), qtype: A, aa: true, ns: []string{soa6}},
		{name: "unknown address of a reverse prefix", qname: "99.0.96.10.in-addr.arpa.", qtype: PTR, rcode: nx, aa: true, ns: []string{soa4}},
	} {
		t.Run(q.name, func(t *testing.T) {
			if q.from == "" {
				q.from = node
			}
			f.check(t, q)
		})
	}
	if n := f.upstream.Total(); n != 0 {
		t.Errorf("zone names went upstream: %d queries", n)
	}
}

func mustReverse(a string) string {
	r, err := mdns.ReverseAddr(a)
	if err != nil {
		panic(err)
	}
	return r
}

// TestParseReverse round-trips addresses through their reverse names.
func TestParseReverse(t *testing.T) {
	for _, s := range []string{"10.96.0.1", "0.0.0.0", "255.255.255.255", "fd00:96::10", "2001:db8:1:2:3:4:5:6", "::1"} {
		want := netip.MustParseAddr(s)
		got, ok := parseReverse(mustReverse(s))
		if !ok || got != want {
			t.Errorf("parseReverse(%s) = %v, %v; want %v", mustReverse(s), got, ok, want)
		}
	}
	for _, name := range []string{
		"96.10.in-addr.arpa.", "1.0.96.10.11.in-addr.arpa.", "01.0.96.10.in-addr.arpa.", "256.0.96.10.in-addr.arpa.",
		"x.0.96.10.in-addr.arpa.", "in-addr.arpa.", "0.1.ip6.arpa.", "example.com.",
	} {
		if a, ok := parseReverse(name); ok {
			t.Errorf("parseReverse(%s) = %v, want no address", name, a)
		}
	}
}

// TestSnapshotReplaced checks that SetSnapshot swaps the data and bumps the serial.
func TestSnapshotReplaced(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.SetSnapshot(Snapshot{Services: []Service{{Name: "new", Namespace: "ns9", VIPs: addrs("10.96.9.9")}}})
	f.check(t, query{qname: "new.ns9.svc.cluster.local.", qtype: mdns.TypeA, from: node, aa: true,
		answer: []string{"new.ns9.svc.cluster.local. 5 IN A 10.96.9.9"}})
	f.check(t, query{qname: "web.ns1.svc.cluster.local.", qtype: mdns.TypeA, from: node, rcode: mdns.RcodeNameError, aa: true,
		ns: []string{"cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1735689602 7200 1800 86400 5"}})
}

// TestInvalidNamesSkipped checks that names that are no DNS labels get no records and
// do not break the rest.
func TestInvalidNamesSkipped(t *testing.T) {
	f := newFixture(t, nil)
	snap := testSnapshot()
	snap.Services = append(snap.Services,
		Service{Name: "bad.name", Namespace: "ns1", VIPs: addrs("10.96.7.7")},
		Service{Name: "web", Namespace: "ns1", VIPs: addrs("10.96.7.8")}, // duplicate: first wins
		Service{Name: "hl", Namespace: "ns1", Headless: true, Backends: []Backend{{Hostname: "Bad_Host", Addr: netip.MustParseAddr("10.1.7.7")}}},
	)
	f.srv.SetSnapshot(snap)
	f.check(t, query{qname: "web.ns1.svc.cluster.local.", qtype: mdns.TypeA, from: node, aa: true,
		answer: []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}})
	f.check(t, query{qname: "10-1-7-7.hl.ns1.svc.cluster.local.", qtype: mdns.TypeA, from: node, aa: true,
		answer: []string{"10-1-7-7.hl.ns1.svc.cluster.local. 5 IN A 10.1.7.7"}})
}

// TestTTLConfigured checks the TTL and negative TTL settings.
func TestTTLConfigured(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.TTL = 30e9; c.NegativeTTL = 10e9; c.Domain = "Cluster.Example." })
	f.check(t, query{qname: "web.ns1.svc.cluster.example.", qtype: mdns.TypeA, from: node, aa: true,
		answer: []string{"web.ns1.svc.cluster.example. 30 IN A 10.96.0.10"}})
	f.check(t, query{qname: "web.ns1.svc.cluster.example.", qtype: mdns.TypeTXT, from: node, aa: true,
		ns: []string{"cluster.example. 10 IN SOA ns.dns.cluster.example. hostmaster.cluster.example. 1735689601 7200 1800 86400 10"}})
}
