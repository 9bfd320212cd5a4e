package driver_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/policy"
)

// A PolicyCompiler that follows changes one by one holds what a compiler built afresh
// from the same inputs holds: for random sequences of pods attached, relabelled,
// renumbered (named ports), moved to another namespace, detached; namespaces relabelled
// and their records removed; policies applied, changed and removed (all of
// policyCases' policies, which TestPoliciesAgreeWithEvaluator checks against the
// evaluator).
func TestPolicyCompilerFollowsChanges(t *testing.T) {
	var all []api.NetworkPolicy
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range policyCases {
			if !yield(k) {
				return
			}
		}
	}) {
		pols, err := policy.Parse(strings.NewReader(policyCases[name]))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pols...)
	}
	namespaces := []string{"x", "y", "z", "w"}
	podNames := []string{"a", "b", "c", "d"}
	portSets := [][]api.NamedPort{
		nil,
		{{Name: "http", Port: 80, Protocol: "tcp"}, {Name: "dns", Port: 53, Protocol: "udp"}},
		{{Name: "http", Port: 81, Protocol: "tcp"}},
		{{Name: "web", Port: 80, Protocol: "tcp"}},
	}
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 7))
		pols := map[string]api.NetworkPolicy{}
		nss := map[string]api.Namespace{}
		eps := map[api.EndpointKey]api.Endpoint{}
		local := map[api.EndpointKey]bool{}
		c := driver.NewPolicyCompiler(nil, nil, nil, nil)
		for step := range 120 {
			var what string
			switch op := rng.IntN(10); {
			case op < 4: // a pod attached or changed
				i := rng.IntN(12)
				ep := api.Endpoint{EndpointKey: api.EndpointKey{Network: "pods", ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"},
					Name: podNames[rng.IntN(len(podNames))], Namespace: namespaces[rng.IntN(len(namespaces))],
					Labels:     map[string]string{"pod": podNames[rng.IntN(len(podNames))]},
					NamedPorts: portSets[rng.IntN(len(portSets))],
					IPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 4), byte(i%4 + 1)}), 16),
						netip.MustParsePrefix(fmt.Sprintf("fd00::%d:%d/64", i/4, i%4+1))}}
				if rng.IntN(6) == 0 {
					ep.State = api.StateDetaching
				}
				if rng.IntN(5) == 0 {
					ep.Labels = nil
				}
				mine := i%3 != 0
				eps[ep.EndpointKey], local[ep.EndpointKey] = ep, mine
				c.SetEndpoint(ep, mine)
				what = fmt.Sprintf("endpoint %s %s/%s %v %s", ep.ContainerID, ep.Namespace, ep.Name, ep.Labels, ep.State)
			case op < 5: // a pod deleted
				k := api.EndpointKey{Network: "pods", ContainerID: fmt.Sprintf("c%d", rng.IntN(12)), IfName: "eth0"}
				delete(eps, k)
				c.DeleteEndpoint(k)
				what = "delete " + k.ContainerID
			case op < 7: // a namespace relabelled or unrecorded
				name := namespaces[rng.IntN(len(namespaces))]
				if rng.IntN(3) == 0 {
					delete(nss, name)
					c.DeleteNamespace(name)
					what = "namespace record removed " + name
					break
				}
				ns := api.Namespace{Name: name, Labels: map[string]string{"ns": namespaces[rng.IntN(len(namespaces))]}}
				nss[name] = ns
				c.SetNamespace(ns)
				what = fmt.Sprintf("namespace %s %v", name, ns.Labels)
			default: // a policy applied, changed (another one's spec) or removed
				p := all[rng.IntN(len(all))]
				key := p.Namespace + "/" + p.Name
				if _, ok := pols[key]; ok && rng.IntN(2) == 0 {
					delete(pols, key)
					c.DeletePolicy(p.Namespace, p.Name)
					what = "policy removed " + key
					break
				}
				if rng.IntN(3) == 0 {
					p.Spec = all[rng.IntN(len(all))].Spec
				}
				pols[key] = p
				c.SetPolicy(p)
				what = "policy " + key
			}
			var allEps, localEps []api.Endpoint
			for _, k := range slices.SortedFunc(func(yield func(api.EndpointKey) bool) {
				for k := range eps {
					if !yield(k) {
						return
					}
				}
			}, func(a, b api.EndpointKey) int { return strings.Compare(a.ContainerID, b.ContainerID) }) {
				allEps = append(allEps, eps[k])
				if local[k] {
					localEps = append(localEps, eps[k])
				}
			}
			var polList []api.NetworkPolicy
			for _, p := range pols {
				polList = append(polList, p)
			}
			var nsList []api.Namespace
			for _, ns := range nss {
				nsList = append(nsList, ns)
			}
			want := driver.Policies(polList, nsList, allEps, localEps)
			if got := c.Policies(); !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d (%s): the compiler that followed the changes holds\n%+v\nnot, as one built afresh,\n%+v", seed, step, what, got, want)
			}
		}
	}
}
