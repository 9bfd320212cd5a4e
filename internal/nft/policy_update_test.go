package nft

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// withPolicies is r with other policies.
func withPolicies(r Ruleset, ps ...Policy) Ruleset {
	r.Policies = ps
	return r
}

// updatePolicies changes the tables' policies of r from those of r to ps with Update
// (PolicyDelta), twice (the second call changes nothing), and checks that they equal r
// with ps.
func updatePolicies(t *testing.T, tb *Table, r Ruleset, ps ...Policy) Ruleset {
	t.Helper()
	next := withPolicies(r, ps...)
	add, remove, ok := PolicyDelta(r.Policies, ps)
	if !ok {
		t.Fatal("PolicyDelta: Sync needed")
	}
	for range 2 {
		if err := tb.Update(add, remove); err != nil {
			t.Fatal(err)
		}
		wantInSync(t, tb, next, true)
	}
	return next
}

// Update changes a policy's elements as Sync would write them: selected pods, peers and
// ports with ranges that merge and split, isolation shared by two policies; it refuses a
// policy the tables do not have as its layout says.
func TestPrivilegedUpdatePolicies(t *testing.T) {
	tb, _ := openTable(t)
	r := policyExample
	mustSync(t, tb, r)
	if in, out, err := tb.PolicyDrops(); in != 0 || out != 0 || err != nil {
		t.Fatalf("PolicyDrops after Sync = %d, %d, %v", in, out, err)
	}

	// A pod joins webPolicy's selection.
	web := webPolicy
	web.Selected = append(slices.Clone(web.Selected), addrs("10.88.4.4", "fd00:88:4::4")...)
	r = updatePolicies(t, tb, r, denyPolicy, web, dnsPolicy)

	// Peers and ports change: 10.1.0.6 extends 10.0.0.0-10.1.0.5, 10.88.4.12 extends
	// 10.88.4.10/31; port 81 to .3 and the end of 8080 make .2 and .3 one element.
	rule := web.IngressRules[0]
	rule.Peers = append(slices.Clone(rule.Peers), rng("10.1.0.6"), rng("10.88.4.12"), rng("fd00:88:4::11"))
	rule.Ports = []PortRange{ports(rng("10.88.4.2"), "tcp", 80, 81), ports(rng("10.88.4.3"), "tcp", 80), ports(rng("10.88.4.3"), "tcp", 81),
		ports(rng("fd00:88:4::2"), "tcp", 80)}
	web2 := web
	web2.IngressRules = []PolicyRule{rule, web.IngressRules[1]}
	if got, want := elemTexts(t, build(withPolicies(r, web2)), "pol_a1b2c3_in0_ports4"), []string{"10.88.4.2/31 . tcp . 80-81"}; !slices.Equal(got, want) {
		t.Fatalf("ports4 = %q, want %q", got, want)
	}
	r = updatePolicies(t, tb, r, denyPolicy, web2, dnsPolicy)
	// A hole in a range: 10.88.4.10-10.88.4.12 without .11 is two elements (the second
	// Update finds the kernel's range starting and ending where the old one did).
	holed := web2
	rule.Peers = slices.DeleteFunc(slices.Clone(rule.Peers), func(a AddrRange) bool { return a == rng("10.88.4.11") })
	holed.IngressRules = []PolicyRule{rule, web.IngressRules[1]}
	r = updatePolicies(t, tb, r, denyPolicy, holed, dnsPolicy)
	// And back: the merged ranges split again.
	r = updatePolicies(t, tb, r, denyPolicy, web, dnsPolicy)

	// fd00:88:4::9 selected by webPolicy too, then no longer by denyPolicy: it stays in
	// policy_in6 (webPolicy isolates it for ingress) and leaves policy_out6.
	web.Selected = append(web.Selected, addrs("fd00:88:4::9")...)
	r = updatePolicies(t, tb, r, denyPolicy, web, dnsPolicy)
	deny := denyPolicy
	deny.Selected = nil
	_, remove, _ := PolicyDelta(r.Policies, []Policy{deny, web, dnsPolicy})
	if len(remove.IngressIsolated) != 0 || !slices.Equal(remove.EgressIsolated, addrs("fd00:88:4::9")) {
		t.Fatalf("isolation removed: ingress %v, egress %v", remove.IngressIsolated, remove.EgressIsolated)
	}
	r = updatePolicies(t, tb, r, deny, web, dnsPolicy)

	// A policy only in remove: its sets are emptied; its addresses that no other policy
	// isolates leave the isolation sets as remove lists them.
	remove = Delta{Policies: []Policy{dnsPolicy}, EgressIsolated: addrs("10.88.4.2", "fd00:88:4::2")}
	if err := tb.Update(Delta{}, remove); err != nil {
		t.Fatal(err)
	}
	r = withPolicies(r, deny, web, dnsPolicy.emptied())
	wantInSync(t, tb, r, true)
	// A policy only in add fills them again.
	if err := tb.Update(Delta{Policies: []Policy{dnsPolicy}}, Delta{}); err != nil {
		t.Fatal(err)
	}
	r = withPolicies(r, deny, web, dnsPolicy)
	wantInSync(t, tb, r, true)

	// What Update refuses, changing nothing.
	more := web
	more.IngressRules = append(slices.Clone(web.IngressRules), PolicyRule{Peers: []AddrRange{rng("10.0.0.1")}, AnyPort: true})
	anyPeer := web
	anyPeer.IngressRules = []PolicyRule{{AnyPeer: true, Ports: rule.Ports}, web.IngressRules[1]}
	fewer := web
	fewer.IngressRules = web.IngressRules[:1]
	overlap := web
	overlap.IngressRules = []PolicyRule{{Peers: []AddrRange{prefixRange("10.0.0.0/8")}, Ports: rule.Ports}, web.IngressRules[1]}
	for _, tc := range []struct {
		name        string
		add, remove Delta
		want        error
	}{
		{"new policy", Delta{Policies: []Policy{{ID: "zz", Ingress: true}}}, Delta{}, ErrNoTable},
		{"one more rule", Delta{Policies: []Policy{more}}, Delta{Policies: []Policy{more}}, ErrNoTable},
		{"one rule less", Delta{Policies: []Policy{fewer}}, Delta{Policies: []Policy{fewer}}, ErrNoTable},
		{"a rule now with AnyPeer", Delta{Policies: []Policy{anyPeer}}, Delta{Policies: []Policy{anyPeer}}, ErrNoTable},
		{"layouts of add and remove differ", Delta{Policies: []Policy{more}}, Delta{Policies: []Policy{web}}, ErrNoTable},
		// The tables do not hold remove's policy (none): an added range overlaps one
		// in the set.
		{"overlapping range", Delta{Policies: []Policy{overlap}}, Delta{}, ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tb.Update(tc.add, tc.remove); !errors.Is(err, tc.want) {
				t.Fatalf("Update = %v, want %v", err, tc.want)
			}
			wantInSync(t, tb, r, true)
		})
	}

	// A Sync without policies removes every policy set and chain.
	mustSync(t, tb, withPolicies(r))
	if err := tb.Update(Delta{Policies: []Policy{web}}, Delta{}); !errors.Is(err, ErrNoTable) {
		t.Fatalf("Update of a policy without policies in the tables = %v, want ErrNoTable", err)
	}
	if in, out, err := tb.PolicyDrops(); in != 0 || out != 0 || err != nil {
		t.Fatalf("PolicyDrops without policies = %d, %d, %v", in, out, err)
	}
}

// Random changes of the elements of two policies, one after the other with Update: the
// tables equal what Sync writes after each, and a second Update of the same change
// changes nothing.
func TestPrivilegedUpdatePoliciesRandom(t *testing.T) {
	tb, _ := openTable(t)
	rnd := rand.New(rand.NewPCG(3, 4))
	addr := func(fam int) netip.Addr {
		if fam == 0 {
			return netip.AddrFrom4([4]byte{10, 0, 0, byte(rnd.IntN(32))})
		}
		return netip.AddrFrom16([16]byte{0xfd, 15: byte(rnd.IntN(32))})
	}
	span := func() AddrRange {
		fam := rnd.IntN(2)
		a, b := addr(fam), addr(fam)
		if b.Less(a) {
			a, b = b, a
		}
		if rnd.IntN(8) == 0 { // up to the end of the key space
			b = lastOfFamily([]ipFamily{ip4, ip6}[fam])
		}
		return AddrRange{a, b}
	}
	random := func(id string, in, out bool) Policy {
		p := Policy{ID: id, Name: "ns/" + id, Ingress: in, Egress: out}
		for range rnd.IntN(6) {
			p.Selected = append(p.Selected, addr(rnd.IntN(2)))
		}
		rule := func() PolicyRule {
			var r PolicyRule
			for range rnd.IntN(5) {
				r.Peers = append(r.Peers, span())
			}
			for range rnd.IntN(5) {
				from := uint16(1 + rnd.IntN(20))
				r.Ports = append(r.Ports, ports(span(), []string{"tcp", "udp", "sctp"}[rnd.IntN(3)], from, from+uint16(rnd.IntN(5))))
			}
			return r
		}
		if in {
			p.IngressRules = []PolicyRule{rule(), rule()}
		}
		if out {
			p.EgressRules = []PolicyRule{rule()}
		}
		return p
	}
	r := Ruleset{Policies: []Policy{random("a", true, true), random("b", true, false)}}
	mustSync(t, tb, r)
	for round := range 40 {
		next := []Policy{random("a", true, true), random("b", true, false)}
		if rnd.IntN(3) == 0 {
			next[1] = r.Policies[1] // one policy unchanged
		}
		add, remove, ok := PolicyDelta(r.Policies, next)
		if !ok {
			t.Fatalf("round %d: PolicyDelta not ok", round)
		}
		for range 2 {
			if err := tb.Update(add, remove); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		r.Policies = next
		wantInSync(t, tb, r, true)
	}
}
