package fastpath

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/podnet/podnet/internal/nft"
)

var (
	macA = net.HardwareAddr{0x0a, 0x58, 0, 0, 0, 2}
	macB = net.HardwareAddr{0x0a, 0x58, 0, 0, 0, 3}
	a4   = netip.MustParseAddr("10.88.0.2")
	b4   = netip.MustParseAddr("10.88.0.3")
	r4   = netip.MustParseAddr("10.77.0.5")
)

func ruleset() nft.Ruleset {
	return nft.Ruleset{
		Networks: []nft.Network{{Name: "blue", Bridge: "pn-blue", Subnets: []netip.Prefix{netip.MustParsePrefix("10.88.0.0/24")}},
			{Name: "r", Subnets: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24")}}},
		Endpoints: []nft.Endpoint{
			{HostIf: "pnv-a", Bridge: "pn-blue", Addrs: []netip.Addr{a4}, MAC: macA},
			{HostIf: "pnv-b", Bridge: "pn-blue", Addrs: []netip.Addr{b4}, MAC: macB},
			{HostIf: "pnr-r", Addrs: []netip.Addr{r4}}, // routed
		},
	}
}

func keys[V any](m map[netip.Addr]V) []netip.Addr {
	var out []netip.Addr
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func TestModelEndpoints(t *testing.T) {
	m := modelOf(ruleset())
	if !m.bridges["pn-blue"] || len(m.bridges) != 1 {
		t.Errorf("bridges %v, want pn-blue", m.bridges)
	}
	if got := keys(m.owners); !slices.Equal(got, []netip.Addr{r4, a4, b4}) {
		t.Errorf("addresses %v, want the pods'", got)
	}
	if got := m.routedNetwork(r4); got != "r" || m.routedNetwork(a4) != "" {
		t.Errorf("routed network of %s: %q, want r (of %s: %q, want none)", r4, got, a4, m.routedNetwork(a4))
	}
	// An endpoint listed twice has the union of its addresses; an address of two
	// endpoints has two owners (and no entry: Applier.want).
	tt := newTouched()
	extra := netip.MustParseAddr("10.88.0.9")
	m.apply(nft.Delta{Endpoints: []nft.Endpoint{
		{HostIf: "pnv-a", Bridge: "pn-blue", Addrs: []netip.Addr{extra}, MAC: macA},
		{HostIf: "pnv-c", Bridge: "pn-blue", Addrs: []netip.Addr{b4}, MAC: macB},
	}}, nft.Delta{}, tt)
	if got := m.eps["pnv-a"].addrs; !slices.Contains(got, a4) || !slices.Contains(got, extra) {
		t.Errorf("pnv-a has %v, want both addresses", got)
	}
	if got := m.owners[b4]; len(got) != 2 {
		t.Errorf("owners of %s: %v, want pnv-b and pnv-c", b4, got)
	}
	// Removing an endpoint takes it out with its addresses, and touches them.
	tt = newTouched()
	m.apply(nft.Delta{}, nft.Delta{Endpoints: []nft.Endpoint{{HostIf: "pnv-a"}}}, tt)
	if m.eps["pnv-a"] != nil || m.owners[a4] != nil || m.owners[extra] != nil {
		t.Errorf("pnv-a still known: %v %v", m.eps["pnv-a"], m.owners[a4])
	}
	if !tt.addrs[a4] || !tt.addrs[extra] || !tt.hostIfs["pnv-a"] {
		t.Errorf("touched %v %v, want pnv-a and its addresses", tt.addrs, tt.hostIfs)
	}
	// A network removed takes its bridge; a routed one touches the routed pods.
	m.apply(nft.Delta{}, nft.Delta{Networks: ruleset().Networks[:1]}, newTouched())
	if m.bridges["pn-blue"] {
		t.Error("bridge pn-blue still known")
	}
	tt = newTouched()
	m.apply(nft.Delta{}, nft.Delta{Networks: ruleset().Networks[1:]}, tt)
	if m.routedNetwork(r4) != "" || !tt.hostIfs["pnr-r"] {
		t.Errorf("routed network r removed: %q, touched %v", m.routedNetwork(r4), tt.hostIfs)
	}
}

func TestModelIsolation(t *testing.T) {
	r := ruleset()
	none := nft.Policy{ID: "p1", Name: "ns/p1", Group: "g", Ingress: true}
	r.Policies = []nft.Policy{none}
	m := modelOf(r)
	if m.isolated(a4) || m.isolated(b4) {
		t.Fatal("isolated without a selected pod")
	}
	sel := none
	sel.Selected = []netip.Addr{b4}
	tt := newTouched()
	m.apply(nft.Delta{Policies: []nft.Policy{sel}}, nft.Delta{Policies: []nft.Policy{none}}, tt)
	if !m.isolated(b4) || m.isolated(a4) || !tt.addrs[b4] {
		t.Fatalf("b selected: isolated a %v, b %v, touched %v", m.isolated(a4), m.isolated(b4), tt.addrs)
	}
	// A Delta that stops selecting b without listing it leaves b in the tables'
	// isolation set (nft.Delta): b stays isolated here too, until listed.
	m.apply(nft.Delta{Policies: []nft.Policy{none}}, nft.Delta{Policies: []nft.Policy{sel}}, newTouched())
	if !m.isolated(b4) {
		t.Error("b unselected but not listed: not isolated, want isolated as in the tables")
	}
	tt = newTouched()
	m.apply(nft.Delta{}, nft.Delta{IngressIsolated: []netip.Addr{b4}}, tt)
	if m.isolated(b4) || !tt.addrs[b4] {
		t.Errorf("b listed in remove: isolated %v, touched %v; want neither isolated, touched", m.isolated(b4), tt.addrs)
	}
	// Two policies select b: it stays isolated while one does.
	sel2 := nft.Policy{ID: "p2", Name: "ns/p2", Group: "g", Egress: true, Selected: []netip.Addr{b4}}
	m.setPolicies([]nft.Policy{sel, sel2}, newTouched())
	m.setPolicies([]nft.Policy{none, sel2}, newTouched())
	if !m.isolated(b4) {
		t.Error("b selected by p2 (egress): not isolated")
	}
	// UpdatePolicies makes the sets the union of the policies: an address a Delta left
	// goes.
	m.apply(nft.Delta{Policies: []nft.Policy{{ID: "p2", Name: "ns/p2", Group: "g", Egress: true}}}, nft.Delta{Policies: []nft.Policy{sel2}}, newTouched())
	if !m.isolated(b4) {
		t.Error("b left by a Delta: not isolated")
	}
	tt = newTouched()
	m.setPolicies([]nft.Policy{none}, tt)
	if m.isolated(b4) || !tt.addrs[b4] {
		t.Errorf("after UpdatePolicies: b isolated %v, touched %v", m.isolated(b4), tt.addrs)
	}
}
