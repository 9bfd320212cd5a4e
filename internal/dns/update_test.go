package dns

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

// TestUpdateServices follows services through UpdateServices as a resolver sees them:
// added, changed, deleted, with the PTR of an address going back to its pod's and a
// namespace that only services made exist going away with its last one.
func TestUpdateServices(t *testing.T) {
	f := newFixture(t, nil)
	const A, PTR, SRV = mdns.TypeA, mdns.TypePTR, mdns.TypeSRV
	nx := mdns.RcodeNameError
	soaNeg := func() string { return f.srv.zone.Load().soaNeg[0].String() }

	f.srv.UpdateServices([]Service{
		{Name: "api", Namespace: "ns9", VIPs: addrs("10.96.0.30"), Ports: []Port{{Name: "http", Port: 80, Protocol: "tcp"}}},
		// db now has one backend left, db-0 (10.1.0.21 was db-1's).
		{Name: "db", Namespace: "ns1", Headless: true, Ports: []Port{{Name: "pg", Port: 5432, Protocol: "tcp"}},
			Backends: []Backend{{Hostname: "db-0", Addr: netip.MustParseAddr("10.1.0.20")}}},
	}, []ServiceName{{Namespace: "ns2", Name: "v4only"}, {Namespace: "ns1", Name: "gone-already"}})
	for _, q := range []query{
		{name: "added", qname: "api.ns9.svc.cluster.local.", qtype: A, aa: true,
			answer: []string{"api.ns9.svc.cluster.local. 5 IN A 10.96.0.30"}},
		{name: "added PTR", qname: "30.0.96.10.in-addr.arpa.", qtype: PTR, aa: true,
			answer: []string{"30.0.96.10.in-addr.arpa. 5 IN PTR api.ns9.svc.cluster.local."}},
		{name: "changed backends", qname: "db.ns1.svc.cluster.local.", qtype: A, aa: true,
			answer: []string{"db.ns1.svc.cluster.local. 5 IN A 10.1.0.20"}},
		{name: "changed SRV", qname: "_pg._tcp.db.ns1.svc.cluster.local.", qtype: SRV, aa: true,
			answer: []string{"_pg._tcp.db.ns1.svc.cluster.local. 5 IN SRV 0 100 5432 db-0.db.ns1.svc.cluster.local."},
			extra:  []string{"db-0.db.ns1.svc.cluster.local. 5 IN A 10.1.0.20"}},
		{name: "backend gone", qname: "db-1.db.ns1.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg()}},
		{name: "PTR back to the pod", qname: "21.0.1.10.in-addr.arpa.", qtype: PTR, aa: true,
			answer: []string{"21.0.1.10.in-addr.arpa. 5 IN PTR 10-1-0-21.ns1.pod.cluster.local."}},
		{name: "deleted", qname: "v4only.ns2.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg()}},
		{name: "deleted PTR", qname: "20.0.96.10.in-addr.arpa.", qtype: PTR, rcode: nx, aa: true,
			ns: []string{strings.Replace(soaNeg(), "cluster.local.", "in-addr.arpa.", 1)}},
		{name: "namespace kept by its pod", qname: "ns2.svc.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg()}},
		{name: "unchanged", qname: "web.ns1.svc.cluster.local.", qtype: A, aa: true,
			answer: []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
	} {
		t.Run(q.name, func(t *testing.T) { f.check(t, q) })
	}

	f.srv.UpdateServices(nil, []ServiceName{{Namespace: "ns9", Name: "api"}})
	f.check(t, query{name: "namespace gone with its last service", qname: "ns9.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg()}})
}

// TestUpdateServicesMatchesSnapshot replays random changes of services through
// UpdateServices and checks after each that the zone is the one SetSnapshot builds from
// the same services (in any order), and that the zone before the change was left as it
// was (queries in flight keep reading it).
func TestUpdateServicesMatchesSnapshot(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 12))
			f := newFixture(t, nil)
			set := f.srv.set
			pods := testSnapshot().Pods
			model := map[serviceKey]Service{}
			for _, svc := range testSnapshot().Services {
				model[serviceKey{namespaceName(svc.Namespace), strings.ToLower(svc.Name)}] = svc
			}
			snapshot := func() Snapshot {
				s := Snapshot{Pods: pods}
				for _, svc := range model {
					s.Services = append(s.Services, svc)
				}
				rng.Shuffle(len(s.Services), func(i, j int) { s.Services[i], s.Services[j] = s.Services[j], s.Services[i] })
				return s
			}
			serialOf := func(z *zone) uint32 { return z.soa[0].(*mdns.SOA).Serial }
			for step := range 60 {
				before, beforeSnap := f.srv.zone.Load(), snapshot()
				put, remove := randomServiceChange(rng, model)
				f.srv.UpdateServices(put, remove)
				got := f.srv.zone.Load()
				if want := buildZone(set, snapshot(), serialOf(got)); !reflect.DeepEqual(got, want) {
					t.Fatalf("step %d: put %v, remove %v: the zone differs from the snapshot's:\n%s", step, put, remove, zoneDiff(got, want))
				}
				if want := buildZone(set, beforeSnap, serialOf(before)); !reflect.DeepEqual(before, want) {
					t.Fatalf("step %d: the zone before the change was modified:\n%s", step, zoneDiff(before, want))
				}
			}
		})
	}
}

// randomService is a service of a few names in a few namespaces (case varying) with
// VIPs and backends from small pools, so that services share addresses (and PTR names)
// with each other and with the test snapshot's pods.
func randomService(rng *rand.Rand) Service {
	pick := func(ss ...string) string { return ss[rng.IntN(len(ss))] }
	svc := Service{
		Name:      pick("a", "b", "web", "Web", "db", "bad_name"),
		Namespace: pick("ns1", "NS1", "ns2", "ns9", ""),
	}
	pool := addrs("10.96.0.10", "10.96.0.40", "fd00:96::40", "10.1.0.20", "10.1.0.21", "fd00:1::21", "10.9.0.1")
	for _, p := range []Port{{Name: "http", Port: 80, Protocol: "tcp"}, {Name: "dns", Port: 53, Protocol: "udp"}, {Port: 8080, Protocol: "tcp"}} {
		if rng.IntN(2) == 0 {
			svc.Ports = append(svc.Ports, p)
		}
	}
	switch rng.IntN(5) {
	case 0, 1:
		for range rng.IntN(3) {
			svc.VIPs = append(svc.VIPs, pool[rng.IntN(len(pool))])
		}
	case 2, 3:
		svc.Headless = true
		for range rng.IntN(4) {
			svc.Backends = append(svc.Backends, Backend{Hostname: pick("", "h0", "h1", "H1", "bad_host"), Addr: pool[rng.IntN(len(pool))]})
		}
	default:
		svc.ExternalName = pick("example.com", "Target.Example.", "not a name")
	}
	return svc
}

// zoneDiff names the parts of two zones that differ.
func zoneDiff(got, want *zone) string {
	var b strings.Builder
	for name, ns := range want.namespaces {
		g := got.namespaces[name]
		switch {
		case g == nil:
			fmt.Fprintf(&b, "namespace %s missing\n", name)
		case !reflect.DeepEqual(g, ns):
			for svc := range ns.services {
				if !reflect.DeepEqual(g.services[svc], ns.services[svc]) {
					fmt.Fprintf(&b, "service %s/%s differs\n", name, svc)
				}
			}
			fmt.Fprintf(&b, "namespace %s: bare %v, want %v; services %d, want %d\n", name, g.bare, ns.bare, len(g.services), len(ns.services))
			if !reflect.DeepEqual(g.pods, ns.pods) || !reflect.DeepEqual(g.podAddrs, ns.podAddrs) {
				fmt.Fprintf(&b, "namespace %s: pods %v, want %v; pod addresses %v, want %v\n", name, g.pods, ns.pods, g.podAddrs, ns.podAddrs)
			}
		}
	}
	for name := range got.namespaces {
		if want.namespaces[name] == nil {
			fmt.Fprintf(&b, "namespace %s extra\n", name)
		}
	}
	for a, s := range want.ptr {
		if !reflect.DeepEqual(got.ptr[a], s) {
			fmt.Fprintf(&b, "PTR %s: %v, want %v\n", a, got.ptr[a], s)
		}
	}
	for a := range got.ptr {
		if _, ok := want.ptr[a]; !ok {
			fmt.Fprintf(&b, "PTR %s extra\n", a)
		}
	}
	for a, p := range want.podAddrs {
		if g, ok := got.podAddrs[a]; !ok || !reflect.DeepEqual(g, p) {
			fmt.Fprintf(&b, "pod address %s: namespaces %v, PTR %v; want %v, %v\n", a, g.namespaces, g.ptr, p.namespaces, p.ptr)
		}
	}
	for a := range got.podAddrs {
		if _, ok := want.podAddrs[a]; !ok {
			fmt.Fprintf(&b, "pod address %s extra\n", a)
		}
	}
	if !reflect.DeepEqual(got.clientNS, want.clientNS) {
		fmt.Fprintf(&b, "client namespaces %v, want %v\n", got.clientNS, want.clientNS)
	}
	if b.Len() == 0 {
		b.WriteString("(elsewhere: SOA, apex)")
	}
	return b.String()
}
