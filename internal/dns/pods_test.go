package dns

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

// TestUpdatePods follows pods through UpdatePods as a resolver sees them: a pod added
// in a new namespace, one gone with the namespace it alone made exist, one moved to
// another address (its name, PTR record and autopath going with it), and an address
// shared by pods of two namespaces (PTR record to the first namespace by name, no
// autopath) until one of them goes.
func TestUpdatePods(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.ReversePrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	const A, PTR = mdns.TypeA, mdns.TypePTR
	nx := mdns.RcodeNameError
	soaNeg := func() string { return f.srv.zone.Load().soaNeg[0].String() }
	soa4 := func() string { return strings.Replace(soaNeg(), "cluster.local.", "in-addr.arpa.", 1) }
	autopathed := func(from string) query {
		return query{name: "autopath from " + from, from: from, qname: "example.com.ns1.svc.cluster.local.", qtype: A,
			checkSectionsAsGiven: true, answer: []string{
				"example.com.ns1.svc.cluster.local. 5 IN CNAME example.com.", "example.com. 300 IN A 93.184.216.34"}}
	}
	notAutopathed := func(from string) query {
		return query{name: "no autopath from " + from, from: from, qname: "example.com.ns1.svc.cluster.local.", qtype: A,
			rcode: nx, aa: true, ns: []string{soaNeg()}}
	}

	for _, q := range []query{
		{name: "solo's name", qname: "10-3-0-5.ns3.pod.cluster.local.", qtype: A, aa: true,
			answer: []string{"10-3-0-5.ns3.pod.cluster.local. 5 IN A 10.3.0.5"}},
		{name: "solo's PTR", qname: "5.0.3.10.in-addr.arpa.", qtype: PTR, aa: true,
			answer: []string{"5.0.3.10.in-addr.arpa. 5 IN PTR 10-3-0-5.ns3.pod.cluster.local."}},
		{name: "no ns4 yet", qname: "ns4.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg()}},
		autopathed(podNS1),
	} {
		t.Run("before/"+q.name, func(t *testing.T) { f.check(t, q) })
	}

	f.srv.UpdatePods([]Pod{
		{Namespace: "NS4", Name: "new", Addrs: addrs("10.4.0.7")},
		{Namespace: "ns1", Name: "client", Addrs: addrs("10.1.0.11", podNS1v6)}, // moved from podNS1
		{Namespace: "ns2", Name: "twin", Addrs: addrs("10.2.0.99")},
		{Namespace: "ns1", Name: "twin", Addrs: addrs("10.2.0.99")},
	}, []Pod{
		{Namespace: "ns3", Name: "solo", Addrs: addrs("10.3.0.5")},
		{Namespace: "ns3", Name: "never-there"},
	})
	for _, q := range []query{
		{name: "added", qname: "10-4-0-7.ns4.pod.cluster.local.", qtype: A, aa: true,
			answer: []string{"10-4-0-7.ns4.pod.cluster.local. 5 IN A 10.4.0.7"}},
		{name: "added PTR", qname: "7.0.4.10.in-addr.arpa.", qtype: PTR, aa: true,
			answer: []string{"7.0.4.10.in-addr.arpa. 5 IN PTR 10-4-0-7.ns4.pod.cluster.local."}},
		{name: "namespace made by its pod", qname: "ns4.svc.cluster.local.", qtype: A, aa: true, ns: []string{soaNeg()}},
		{name: "removed", qname: "10-3-0-5.ns3.pod.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg()}},
		{name: "removed PTR", qname: "5.0.3.10.in-addr.arpa.", qtype: PTR, rcode: nx, aa: true, ns: []string{soa4()}},
		{name: "namespace gone with its last pod", qname: "ns3.svc.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg()}},
		{name: "moved: old name gone", qname: "10-1-0-10.ns1.pod.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg()}},
		{name: "moved: new name", qname: "10-1-0-11.ns1.pod.cluster.local.", qtype: A, aa: true,
			answer: []string{"10-1-0-11.ns1.pod.cluster.local. 5 IN A 10.1.0.11"}},
		{name: "moved: kept address", qname: "fd00-1--10.ns1.pod.cluster.local.", qtype: mdns.TypeAAAA, aa: true,
			answer: []string{"fd00-1--10.ns1.pod.cluster.local. 5 IN AAAA fd00:1::10"}},
		{name: "moved: new PTR", qname: "11.0.1.10.in-addr.arpa.", qtype: PTR, aa: true,
			answer: []string{"11.0.1.10.in-addr.arpa. 5 IN PTR 10-1-0-11.ns1.pod.cluster.local."}},
		{name: "moved: old PTR gone", qname: "10.0.1.10.in-addr.arpa.", qtype: PTR, rcode: nx, aa: true, ns: []string{soa4()}},
		autopathed("10.1.0.11"),
		notAutopathed(podNS1),
		{name: "shared address: name in both namespaces", qname: "10-2-0-99.ns2.pod.cluster.local.", qtype: A, aa: true,
			answer: []string{"10-2-0-99.ns2.pod.cluster.local. 5 IN A 10.2.0.99"}},
		{name: "shared address: PTR to the first namespace", qname: "99.0.2.10.in-addr.arpa.", qtype: PTR, aa: true,
			answer: []string{"99.0.2.10.in-addr.arpa. 5 IN PTR 10-2-0-99.ns1.pod.cluster.local."}},
		notAutopathed("10.2.0.99"),
	} {
		t.Run("after/"+q.name, func(t *testing.T) { f.check(t, q) })
	}

	f.srv.UpdatePods(nil, []Pod{{Namespace: "ns1", Name: "twin", Addrs: addrs("10.2.0.99")}})
	for _, q := range []query{
		{name: "PTR to the namespace left", qname: "99.0.2.10.in-addr.arpa.", qtype: PTR, aa: true,
			answer: []string{"99.0.2.10.in-addr.arpa. 5 IN PTR 10-2-0-99.ns2.pod.cluster.local."}},
		{name: "name gone from the namespace left", qname: "10-2-0-99.ns1.pod.cluster.local.", qtype: A, rcode: nx, aa: true, ns: []string{soaNeg()}},
		{name: "ns2's autopath", from: "10.2.0.99", qname: "example.com.ns2.svc.cluster.local.", qtype: A,
			checkSectionsAsGiven: true, answer: []string{
				"example.com.ns2.svc.cluster.local. 5 IN CNAME example.com.", "example.com. 300 IN A 93.184.216.34"}},
	} {
		t.Run("unshared/"+q.name, func(t *testing.T) { f.check(t, q) })
	}
}

// TestSnapshotPodTwice checks that a snapshot listing a pod twice makes one pod of both
// entries, as UpdatePods sees it: putting the merged pod changes nothing, removing the
// pod takes both entries' addresses.
func TestSnapshotPodTwice(t *testing.T) {
	f := newFixture(t, nil)
	set := f.srv.set
	twice := Snapshot{Pods: []Pod{
		{Namespace: "ns1", Name: "p", Addrs: addrs("10.1.0.1")},
		{Namespace: "ns1", Name: "p", Addrs: addrs("10.1.0.2", "10.1.0.1")},
	}}
	once := Snapshot{Pods: []Pod{{Namespace: "ns1", Name: "p", Addrs: addrs("10.1.0.1", "10.1.0.2")}}}
	got, want := buildZone(set, twice, 1), buildZone(set, once, 1)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("a pod listed twice:\n%s", zoneDiff(got, want))
	}
	got = got.withPods(set, once.Pods, nil, 1)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the merged pod put again:\n%s", zoneDiff(got, want))
	}
	got, want = got.withPods(set, nil, twice.Pods[:1], 1), buildZone(set, Snapshot{}, 1)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the pod removed:\n%s", zoneDiff(got, want))
	}
}

// TestUpdatePodsMatchesSnapshot replays random changes of pods through UpdatePods,
// mixed with changes of services through UpdateServices, and checks after each that the
// zone is the one SetSnapshot builds from the same pods and services (in any order), and
// that the zone before the change was left as it was (queries in flight keep reading
// it). The pods come from small pools of names, namespaces and addresses, so that pods
// share addresses within and across namespaces, move between addresses, lose all their
// addresses, and empty namespaces that services may or may not keep.
func TestUpdatePodsMatchesSnapshot(t *testing.T) {
	// seen counts the situations the test means to reach, over all seeds.
	seen := map[string]int{}
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 34))
			f := newFixture(t, func(c *Config) { c.Logf = func(string, ...any) {} })
			set := f.srv.set
			pods := map[PodID]Pod{}
			for _, p := range testSnapshot().Pods {
				pods[p.ID()] = p
			}
			services := map[serviceKey]Service{}
			for _, svc := range testSnapshot().Services {
				services[serviceKey{namespaceName(svc.Namespace), strings.ToLower(svc.Name)}] = svc
			}
			snapshot := func() Snapshot {
				var s Snapshot
				for _, svc := range services {
					s.Services = append(s.Services, svc)
				}
				for _, p := range pods {
					s.Pods = append(s.Pods, p)
				}
				rng.Shuffle(len(s.Services), func(i, j int) { s.Services[i], s.Services[j] = s.Services[j], s.Services[i] })
				rng.Shuffle(len(s.Pods), func(i, j int) { s.Pods[i], s.Pods[j] = s.Pods[j], s.Pods[i] })
				return s
			}
			serialOf := func(z *zone) uint32 { return z.soa[0].(*mdns.SOA).Serial }
			for step := range 80 {
				before, beforeSnap := f.srv.zone.Load(), snapshot()
				var what string
				if rng.IntN(4) == 0 {
					put, remove := randomServiceChange(rng, services)
					f.srv.UpdateServices(put, remove)
					what = fmt.Sprintf("services: put %v, remove %v", put, remove)
				} else {
					put, remove := randomPodChange(rng, pods)
					f.srv.UpdatePods(put, remove)
					what = fmt.Sprintf("pods: put %v, remove %v", put, remove)
				}
				got := f.srv.zone.Load()
				if want := buildZone(set, snapshot(), serialOf(got)); !reflect.DeepEqual(got, want) {
					t.Fatalf("step %d: %s: the zone differs from the snapshot's:\n%s", step, what, zoneDiff(got, want))
				}
				if want := buildZone(set, beforeSnap, serialOf(before)); !reflect.DeepEqual(before, want) {
					t.Fatalf("step %d: the zone before the change was modified:\n%s", step, zoneDiff(before, want))
				}
				for name := range before.namespaces {
					if got.namespaces[name] == nil {
						seen["namespace gone"]++
					}
				}
				for a, p := range got.podAddrs {
					switch {
					case len(p.namespaces) > 1:
						seen["address shared by namespaces"]++
					case got.namespaces[p.namespaces[0]].podAddrs[a] > 1:
						seen["address shared in a namespace"]++
					}
					if got.ptr[a] != nil {
						seen["pod address named by a service"]++
					}
				}
				for name, ns := range got.namespaces {
					if len(ns.pods) > 0 && len(ns.services)+len(ns.bare) > 0 {
						seen["pods and services in a namespace"]++
					}
					for _, as := range ns.pods {
						if len(as) == 0 {
							seen["pod without addresses"]++
						}
					}
					if len(ns.pods) == 0 && before.namespaces[name] != nil && len(before.namespaces[name].pods) > 0 {
						seen["namespace kept by services"]++
					}
				}
			}
		})
	}
	t.Logf("reached: %v", seen)
	for _, s := range []string{
		"namespace gone", "address shared by namespaces", "address shared in a namespace",
		"pod address named by a service", "pods and services in a namespace",
		"pod without addresses", "namespace kept by services",
	} {
		if seen[s] == 0 {
			t.Errorf("no step reached %q: the random changes no longer test it", s)
		}
	}
}

// randomPodChange changes pods (by namespace and name, updated as UpdatePods does:
// removals first) and returns the change: pods removed as they were put, pods not there
// removed, pods added, pods put again with other addresses, and pods removed and put
// back in one call. The pods have few names in a few namespaces (case varying, one no
// DNS label), shared with randomService's, and their addresses come from a small pool
// (a service VIP, a mapped form, an invalid address among them).
func randomPodChange(rng *rand.Rand, pods map[PodID]Pod) (put, remove []Pod) {
	pick := func(ss ...string) string { return ss[rng.IntN(len(ss))] }
	pool := []netip.Addr{
		netip.MustParseAddr(podNS1), netip.MustParseAddr(podNS1v6), netip.MustParseAddr(podNS2),
		netip.MustParseAddr("10.1.0.20"), netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("::ffff:10.9.0.1"),
		netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.9.0.2"), {},
	}
	randomAddrs := func() []netip.Addr {
		var as []netip.Addr
		for range rng.IntN(4) {
			as = append(as, pool[rng.IntN(len(pool))])
		}
		return as
	}
	// held are the pods before the change, in an order the seed decides.
	held := slices.SortedFunc(maps.Keys(pods), func(a, b PodID) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	putOnce := map[PodID]bool{}
	for range 1 + rng.IntN(3) {
		p := Pod{Name: pick("a", "A", "b", "client", "solo"), Namespace: pick("ns1", "NS1", "ns2", "ns3", "ns9", "", "bad_ns")}
		k := p.ID()
		switch rng.IntN(6) {
		case 0, 1: // a held pod goes, as it was put
			if len(held) > 0 {
				remove = append(remove, pods[held[rng.IntN(len(held))]])
			}
		case 2: // removed and put back in the same call, elsewhere
			if len(held) == 0 {
				continue
			}
			hk := held[rng.IntN(len(held))]
			if putOnce[hk] {
				continue // one put per pod
			}
			putOnce[hk] = true
			h := pods[hk]
			remove = append(remove, h)
			h.Addrs = randomAddrs()
			put = append(put, h)
		default: // added, or put again with its new addresses
			if putOnce[k] {
				continue // one put per pod
			}
			putOnce[k] = true
			if _, ok := pods[k]; !ok && rng.IntN(4) == 0 {
				remove = append(remove, p) // not there: harmless
			}
			p.Addrs = randomAddrs()
			put = append(put, p)
		}
	}
	for _, p := range remove {
		delete(pods, p.ID())
	}
	for _, p := range put {
		pods[p.ID()] = p
	}
	return put, remove
}

// randomServiceChange makes one to three random changes of services (by key, updated):
// each a put or a removal, one per name.
func randomServiceChange(rng *rand.Rand, services map[serviceKey]Service) (put []Service, remove []ServiceName) {
	changed := map[serviceKey]bool{}
	for range 1 + rng.IntN(3) {
		svc := randomService(rng)
		k := serviceKey{namespaceName(svc.Namespace), strings.ToLower(svc.Name)}
		if changed[k] {
			continue // one change per name
		}
		changed[k] = true
		if rng.IntN(3) == 0 {
			remove = append(remove, ServiceName{Namespace: svc.Namespace, Name: svc.Name})
			delete(services, k)
		} else {
			put = append(put, svc)
			services[k] = svc
		}
	}
	return put, remove
}

// TestUpdatePodsShares checks that UpdatePods copies only what it changes: the entries
// of other namespaces, the services of the changed namespace and the services' PTR
// records are the previous zone's.
func TestUpdatePodsShares(t *testing.T) {
	f := newFixture(t, nil)
	before := f.srv.zone.Load()
	f.srv.UpdatePods([]Pod{{Namespace: "ns1", Name: "new", Addrs: addrs("10.1.0.99")}}, nil)
	after := f.srv.zone.Load()
	same := func(a, b any) bool { return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer() }
	for name, ns := range before.namespaces {
		if name != "ns1" && after.namespaces[name] != ns {
			t.Errorf("namespace %s copied", name)
		}
	}
	b, a := before.namespaces["ns1"], after.namespaces["ns1"]
	if a == b || same(a.pods, b.pods) || same(a.podAddrs, b.podAddrs) {
		t.Errorf("namespace ns1's pods changed in place")
	}
	if !same(a.services, b.services) || !same(a.bare, b.bare) {
		t.Errorf("namespace ns1's services copied")
	}
	if !same(after.ptr, before.ptr) {
		t.Errorf("the services' PTR records copied")
	}
}

// BenchmarkUpdatePods attaches and detaches one pod of the benchmark's cluster, as an
// ADD and a DEL do.
func BenchmarkUpdatePods(b *testing.B) {
	s := benchServer(b)
	pod := Pod{Namespace: "ns-42", Name: "new", Addrs: []netip.Addr{netip.MustParseAddr("10.1.42.99")}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			s.UpdatePods([]Pod{pod}, nil)
		} else {
			s.UpdatePods(nil, []Pod{pod})
		}
	}
}
