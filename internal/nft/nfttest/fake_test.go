package nfttest

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/podnet/podnet/internal/nft"
)

func TestFake(t *testing.T) {
	var f Fake
	r := nft.Ruleset{Networks: []nft.Network{{
		Name: "blue", Bridge: "pn-blue", Subnets: []netip.Prefix{netip.MustParsePrefix("10.88.1.0/24")}, Masquerade: true,
	}}}
	if ok, err := f.InSync(nft.Ruleset{}); ok || err != nil {
		t.Fatalf("InSync of an empty Fake = %v, %v; want false (no table)", ok, err)
	}
	if _, ok := f.Last(); ok {
		t.Fatal("Last before any Sync reports a ruleset")
	}
	for range 2 {
		if err := f.Sync(r); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := f.InSync(r); !ok {
		t.Fatal("InSync false after Sync")
	}
	if ok, _ := f.InSync(nft.Ruleset{}); ok {
		t.Fatal("InSync true for another ruleset")
	}
	if f.Syncs() != 2 || f.Dump() != nft.Render(r) {
		t.Fatalf("Syncs = %d, Dump = %q", f.Syncs(), f.Dump())
	}
	last, _ := f.Last()
	last.Networks[0].Subnets[0] = netip.Prefix{} // a copy: does not change the Fake
	if ok, _ := f.InSync(r); !ok {
		t.Fatal("changing Last's result changed the Fake")
	}

	f.Break()
	if ok, _ := f.InSync(r); ok {
		t.Fatal("InSync true after Break")
	}
	if err := f.Sync(r); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.InSync(r); !ok {
		t.Fatal("Sync did not repair Break")
	}

	for range 2 {
		if err := f.Delete(); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := f.InSync(r); ok || f.Dump() != "" {
		t.Fatal("table still there after Delete")
	}

	if err := f.Sync(nft.Ruleset{Networks: []nft.Network{{Name: "x", Bridge: "a/b"}}}); err == nil {
		t.Fatal("Sync accepted an invalid ruleset")
	}
	boom := errors.New("boom")
	f.SetErr(boom)
	if err := f.Sync(r); !errors.Is(err, boom) {
		t.Fatalf("Sync = %v, want boom", err)
	}
	if _, err := f.InSync(r); !errors.Is(err, boom) {
		t.Fatalf("InSync = %v, want boom", err)
	}
	if err := f.Delete(); !errors.Is(err, boom) {
		t.Fatalf("Delete = %v, want boom", err)
	}
}

func TestFakeUpdate(t *testing.T) {
	var f Fake
	a := netip.MustParseAddr("10.88.1.2")
	ep := nft.Endpoint{HostIf: "pnv-1", Bridge: "pn-1", Addrs: []netip.Addr{a, netip.MustParseAddr("fd00::2")}}
	web := nft.PortMapping{Protocol: "tcp", HostPort: 8080, Addr: a, Port: 80}
	base := nft.Ruleset{Networks: []nft.Network{{Name: "blue", Bridge: "pn-blue", Subnets: []netip.Prefix{netip.MustParsePrefix("10.88.1.0/24")}}}}
	with := base
	with.Endpoints = []nft.Endpoint{ep}
	with.Ports = []nft.PortMapping{web}
	add := nft.Delta{Endpoints: []nft.Endpoint{ep}, Ports: []nft.PortMapping{web}}

	if err := f.Update(add, nft.Delta{}); !errors.Is(err, nft.ErrNoTable) {
		t.Fatalf("Update without a table = %v, want ErrNoTable", err)
	}
	if err := f.Sync(base); err != nil {
		t.Fatal(err)
	}
	for range 2 { // adding what exists is a no-op
		if err := f.Update(add, nft.Delta{}); err != nil {
			t.Fatal(err)
		}
		if ok, _ := f.InSync(with); !ok {
			t.Fatalf("after Update:\n%s\nwant\n%s", f.Dump(), nft.Render(with))
		}
	}
	if last, _ := f.Last(); nft.Render(last) != nft.Render(with) {
		t.Fatalf("Last does not have the Update:\n%s", nft.Render(last))
	}

	moved := web
	moved.Port = 81
	if err := f.Update(nft.Delta{Ports: []nft.PortMapping{moved}}, nft.Delta{}); !errors.Is(err, nft.ErrConflict) {
		t.Fatalf("Update of a mapped port = %v, want ErrConflict", err)
	}
	if err := f.Update(nft.Delta{Ports: []nft.PortMapping{moved}}, nft.Delta{Ports: []nft.PortMapping{web}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Update(nft.Delta{}, nft.Delta{Endpoints: []nft.Endpoint{ep}, Ports: []nft.PortMapping{moved}}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // removing what is gone is a no-op
		if err := f.Update(nft.Delta{}, add); err != nil {
			t.Fatal(err)
		}
		if ok, _ := f.InSync(base); !ok {
			t.Fatalf("after removal:\n%s", f.Dump())
		}
	}
	if err := f.Update(nft.Delta{Endpoints: []nft.Endpoint{{HostIf: ""}}}, nft.Delta{}); err == nil {
		t.Fatal("Update accepted an invalid delta")
	}

	calls := f.Updates()
	if len(calls) != 6 || calls[2].Add.Ports[0] != moved || calls[2].Remove.Ports[0] != web {
		t.Fatalf("Updates = %+v", calls)
	}
	calls[0].Add.Endpoints[0].Addrs[0] = netip.Addr{} // a copy: does not change the Fake
	if f.Updates()[0].Add.Endpoints[0].Addrs[0] != a {
		t.Fatal("changing Updates' result changed the Fake")
	}

	boom := errors.New("boom")
	f.SetErr(boom)
	if err := f.Update(add, nft.Delta{}); !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
}

// Networks come and go by name; one overlapping a network of the tables is a conflict.
func TestFakeUpdateNetworks(t *testing.T) {
	var f Fake
	blue := nft.Network{Name: "blue", Bridge: "pn-blue", Subnets: []netip.Prefix{netip.MustParsePrefix("10.88.1.0/24")}}
	red := nft.Network{Name: "red", Subnets: []netip.Prefix{netip.MustParsePrefix("10.88.2.0/24")}}
	if err := f.Sync(nft.Ruleset{Networks: []nft.Network{blue}}); err != nil {
		t.Fatal(err)
	}
	both := nft.Ruleset{Networks: []nft.Network{blue, red}}
	for range 2 {
		if err := f.Update(nft.Delta{Networks: []nft.Network{red}}, nft.Delta{}); err != nil {
			t.Fatal(err)
		}
		if ok, _ := f.InSync(both); !ok {
			t.Fatalf("after adding red:\n%s", f.Dump())
		}
	}
	wide := nft.Network{Name: "wide", Subnets: []netip.Prefix{netip.MustParsePrefix("10.88.0.0/16")}}
	if err := f.Update(nft.Delta{Networks: []nft.Network{wide}}, nft.Delta{}); !errors.Is(err, nft.ErrConflict) {
		t.Fatalf("Update with an overlapping network = %v, want ErrConflict", err)
	}
	if err := f.Update(nft.Delta{}, nft.Delta{Networks: []nft.Network{blue}}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.InSync(nft.Ruleset{Networks: []nft.Network{red}}); !ok {
		t.Fatalf("after removing blue:\n%s", f.Dump())
	}
}

func TestFakeServices(t *testing.T) {
	var f Fake
	vip := netip.MustParseAddr("10.96.0.10")
	web := nft.Service{Name: "default/web", VIP: vip, Protocol: "tcp", Port: 80,
		Backends: []netip.AddrPort{netip.MustParseAddrPort("10.88.1.2:8080")}}
	dns := nft.Service{Name: "default/dns", VIP: vip, Protocol: "udp", Port: 53}
	if err := f.Sync(nft.Ruleset{Services: []nft.Service{web}}); err != nil {
		t.Fatal(err)
	}
	replaced := web
	replaced.Backends = []netip.AddrPort{netip.MustParseAddrPort("10.88.1.3:8080"), netip.MustParseAddrPort("10.88.1.4:8080")}
	replaced.Affinity = true
	for range 2 { // adding again replaces the service with that key
		if err := f.Update(nft.Delta{Services: []nft.Service{replaced, dns}}, nft.Delta{}); err != nil {
			t.Fatal(err)
		}
		if ok, _ := f.InSync(nft.Ruleset{Services: []nft.Service{dns, replaced}}); !ok {
			t.Fatalf("after replacing:\n%s", f.Dump())
		}
	}
	byKey := nft.Service{VIP: vip, Protocol: "tcp", Port: 80}
	for range 2 { // removing by key; what is gone stays gone
		if err := f.Update(nft.Delta{}, nft.Delta{Services: []nft.Service{byKey}}); err != nil {
			t.Fatal(err)
		}
		if ok, _ := f.InSync(nft.Ruleset{Services: []nft.Service{dns}}); !ok {
			t.Fatalf("after removing:\n%s", f.Dump())
		}
	}
	// In both: add wins.
	if err := f.Update(nft.Delta{Services: []nft.Service{web}}, nft.Delta{Services: []nft.Service{byKey, dns}}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.InSync(nft.Ruleset{Services: []nft.Service{web}}); !ok {
		t.Fatalf("after remove and add:\n%s", f.Dump())
	}
	calls := f.Updates()
	calls[0].Add.Services[0].Backends[0] = netip.AddrPort{} // a copy: does not change the Fake
	if f.Updates()[0].Add.Services[0].Backends[0] != replaced.Backends[0] {
		t.Fatal("changing Updates' result changed the Fake")
	}
	if err := f.Update(nft.Delta{Services: []nft.Service{{Name: "x", VIP: vip, Protocol: "sctp", Port: 1}}}, nft.Delta{}); err == nil {
		t.Fatal("Update accepted an invalid service")
	}
}

// Policies: Update changes their elements as PolicyDelta forms them, refuses what the
// tables do not have with that layout, and keeps the isolation sets as the kernel would:
// an address another policy still selects stays isolated, one the caller forgets to list
// makes InSync false.
func TestFakePolicies(t *testing.T) {
	var f Fake
	a, b := netip.MustParseAddr("10.88.1.2"), netip.MustParseAddr("10.88.1.3")
	one := func(x netip.Addr) nft.AddrRange { return nft.AddrRange{From: x, To: x} }
	web := nft.Policy{ID: "web", Name: "ns/web", Selected: []netip.Addr{a, b}, Ingress: true,
		IngressRules: []nft.PolicyRule{{Peers: []nft.AddrRange{one(a)}, Ports: []nft.PortRange{{Dst: one(b), Protocol: "tcp", From: 80, To: 80}}}}}
	deny := nft.Policy{ID: "deny", Name: "ns/deny", Selected: []netip.Addr{a}, Ingress: true, Egress: true}
	r := nft.Ruleset{Policies: []nft.Policy{web, deny}}
	if err := f.Sync(r); err != nil {
		t.Fatal(err)
	}
	if in, out, err := f.PolicyDrops(); in != 0 || out != 0 || err != nil {
		t.Fatalf("PolicyDrops = %d, %d, %v", in, out, err)
	}
	f.SetPolicyDrops(3, 4)
	if in, out, _ := f.PolicyDrops(); in != 3 || out != 4 {
		t.Fatalf("PolicyDrops = %d, %d after SetPolicyDrops(3, 4)", in, out)
	}

	// web no longer selects a: deny still isolates it for ingress.
	web2 := web
	web2.Selected = []netip.Addr{b}
	web2.IngressRules = []nft.PolicyRule{{Peers: []nft.AddrRange{one(a), one(b)}, Ports: web.IngressRules[0].Ports}}
	next := nft.Ruleset{Policies: []nft.Policy{web2, deny}}
	add, remove, ok := nft.PolicyDelta(r.Policies, next.Policies)
	if !ok || len(remove.IngressIsolated) != 0 {
		t.Fatalf("PolicyDelta = %+v, %+v, %v", add, remove, ok)
	}
	for range 2 {
		if err := f.Update(add, remove); err != nil {
			t.Fatal(err)
		}
		if ok, _ := f.InSync(next); !ok {
			t.Fatalf("after Update:\n%s", f.Dump())
		}
	}
	if last, _ := f.Last(); nft.Render(last) != nft.Render(next) {
		t.Fatalf("Last does not have the Update:\n%s", nft.Render(last))
	}

	// deny no longer selects a, and the caller forgets that a is no longer isolated:
	// the tables still isolate it, InSync is false; listing it repairs that.
	deny2 := deny
	deny2.Selected = nil
	final := nft.Ruleset{Policies: []nft.Policy{web2, deny2}}
	add, remove, _ = nft.PolicyDelta(next.Policies, final.Policies)
	forgot := remove
	forgot.IngressIsolated, forgot.EgressIsolated = nil, nil
	if err := f.Update(add, forgot); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.InSync(final); ok {
		t.Fatal("InSync true with an address left in the isolation sets")
	}
	if err := f.Update(add, remove); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.InSync(final); !ok {
		t.Fatalf("after Update:\n%s", f.Dump())
	}

	// What needs Sync.
	more := web2
	more.IngressRules = append(more.IngressRules, nft.PolicyRule{AnyPeer: true, AnyPort: true})
	for name, d := range map[string]nft.Delta{
		"new policy":    {Policies: []nft.Policy{{ID: "new", Ingress: true}}},
		"one more rule": {Policies: []nft.Policy{more}},
	} {
		if err := f.Update(d, nft.Delta{}); !errors.Is(err, nft.ErrNoTable) {
			t.Errorf("%s: Update = %v, want ErrNoTable", name, err)
		}
	}
	// Only in remove: emptied, the layout stays.
	if err := f.Update(nft.Delta{}, nft.Delta{Policies: []nft.Policy{web2}, IngressIsolated: []netip.Addr{b}}); err != nil {
		t.Fatal(err)
	}
	emptied := nft.Policy{ID: "web", Name: "ns/web", Ingress: true, IngressRules: []nft.PolicyRule{{}}}
	if ok, _ := f.InSync(nft.Ruleset{Policies: []nft.Policy{emptied, deny2}}); !ok {
		t.Fatalf("after emptying:\n%s", f.Dump())
	}
	calls := f.Updates()
	calls[0].Add.Policies[0].Selected[0] = netip.Addr{} // a copy: does not change the Fake
	if f.Updates()[0].Add.Policies[0].Selected[0] != b {
		t.Fatal("changing Updates' result changed the Fake")
	}
}

// UpdatePolicies replaces the tables' policies when they are old, and refuses what
// nft.Table refuses; the isolation sets follow as the kernel's do.
func TestFakeUpdatePolicies(t *testing.T) {
	var f Fake
	var lines []string
	f.Record = func(l string) { lines = append(lines, l) }
	a, b := netip.MustParseAddr("10.88.1.2"), netip.MustParseAddr("10.88.1.3")
	web := nft.Policy{ID: "web", Name: "ns/web", Selected: []netip.Addr{a, b}, Ingress: true,
		IngressRules: []nft.PolicyRule{{AnyPeer: true, AnyPort: true}}}
	deny := nft.Policy{ID: "deny", Name: "ns/deny", Selected: []netip.Addr{a}, Ingress: true, Egress: true}
	only := nft.Policy{ID: "only", Name: "ns/only", Selected: []netip.Addr{b}, Egress: true}
	blue := nft.Network{Name: "blue", Bridge: "pn-blue", Subnets: []netip.Prefix{netip.MustParsePrefix("10.88.1.0/24")}}
	r := nft.Ruleset{Networks: []nft.Network{blue}, Policies: []nft.Policy{web, deny}}

	if err := f.UpdatePolicies(r.Policies, r.Policies); !errors.Is(err, nft.ErrNoTable) {
		t.Fatalf("UpdatePolicies without tables = %v, want ErrNoTable", err)
	}
	if err := f.Sync(r); err != nil {
		t.Fatal(err)
	}
	f.SetPolicyDrops(1, 2)
	gen, _ := f.Generation()

	// web goes, only comes (in any order): b, which only web isolated for ingress,
	// leaves policy_in; only isolates it for egress.
	old := []nft.Policy{deny, web}
	next := nft.Ruleset{Networks: r.Networks, Policies: []nft.Policy{only, deny}}
	for range 2 {
		if err := f.UpdatePolicies(old, next.Policies); err != nil {
			t.Fatal(err)
		}
		if ok, _ := f.InSync(next); !ok {
			t.Fatalf("after UpdatePolicies:\n%s", f.Dump())
		}
		old, next.Policies = next.Policies, []nft.Policy{deny, only} // again, from next to next
	}
	r.Policies = old
	if g, _ := f.Generation(); g != gen+1 { // the second changed nothing
		t.Fatalf("Generation = %d, want %d", g, gen+1)
	}
	if last, _ := f.Last(); nft.Render(last) != nft.Render(next) {
		t.Fatalf("Last does not have the update:\n%s", nft.Render(last))
	}
	if in, out, _ := f.PolicyDrops(); in != 1 || out != 2 {
		t.Fatalf("PolicyDrops = %d, %d; want 1, 2", in, out)
	}
	if want := "nft update policies: -policy web ns/web selected [10.88.1.2 10.88.1.3]; +policy only ns/only selected [10.88.1.3]"; lines[2] != want {
		t.Fatalf("recorded %q, want %q", lines[2], want)
	}
	if calls := f.PolicyUpdates(); len(calls) != 2 || calls[0].Next[0].ID != "only" || calls[1].Old[0].ID != "only" {
		t.Fatalf("PolicyUpdates = %+v", calls)
	}

	noEgress := web
	for _, tc := range []struct {
		name      string
		old, next []nft.Policy
	}{
		{"no policy left", r.Policies, nil},
		{"no policy before", nil, r.Policies},
		{"no policy with Egress left", r.Policies, []nft.Policy{noEgress}},
		{"old not held", []nft.Policy{deny, web}, []nft.Policy{deny}},
	} {
		if err := f.UpdatePolicies(tc.old, tc.next); !errors.Is(err, nft.ErrNoTable) {
			t.Errorf("%s: UpdatePolicies = %v, want ErrNoTable", tc.name, err)
		}
	}
	if err := f.UpdatePolicies(r.Policies, []nft.Policy{{ID: "BAD"}}); err == nil || errors.Is(err, nft.ErrNoTable) {
		t.Errorf("UpdatePolicies of an invalid policy = %v", err)
	}
	if ok, _ := f.InSync(next); !ok {
		t.Fatal("a refused UpdatePolicies changed the tables")
	}

	// Break stays in force; SetErr fails it.
	f.Break()
	if err := f.UpdatePolicies(r.Policies, []nft.Policy{deny}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.InSync(nft.Ruleset{Networks: r.Networks, Policies: []nft.Policy{deny}}); ok {
		t.Fatal("InSync true after Break and UpdatePolicies")
	}
	boom := errors.New("boom")
	f.SetErr(boom)
	if err := f.UpdatePolicies([]nft.Policy{deny}, []nft.Policy{deny}); !errors.Is(err, boom) {
		t.Fatalf("UpdatePolicies = %v, want boom", err)
	}
}
