package nft

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
)

// rng is the range from-to; one address when to is omitted.
func rng(from string, to ...string) AddrRange {
	a := netip.MustParseAddr(from)
	if len(to) == 0 {
		return AddrRange{a, a}
	}
	return AddrRange{a, netip.MustParseAddr(to[0])}
}

// prefixRange is the range of prefix p.
func prefixRange(p string) AddrRange {
	pr := netip.MustParsePrefix(p)
	return AddrRange{pr.Masked().Addr(), lastAddr(pr)}
}

func ports(dst AddrRange, proto string, from uint16, to ...uint16) PortRange {
	pr := PortRange{Dst: dst, Protocol: proto, From: from, To: from}
	if len(to) > 0 {
		pr.To = to[0]
	}
	return pr
}

var (
	all4 = prefixRange("0.0.0.0/0")
	all6 = prefixRange("::/0")

	// Policies of the golden ruleset "policy", on network violet (routed). webPolicy:
	// ingress, peers and ports, overlapping and adjacent ranges, a rule with AnyPeer;
	// dnsPolicy: egress with AnyPeer to port 53; denyPolicy: default deny both ways, one
	// IPv6 pod.
	webPolicy = Policy{ID: "a1b2c3", Name: "shop/web", Selected: addrs("10.88.4.3", "10.88.4.2", "fd00:88:4::2"), Ingress: true,
		IngressRules: []PolicyRule{
			{
				Peers: []AddrRange{rng("10.88.4.10"), rng("10.88.4.11"), prefixRange("10.0.0.0/16"), rng("10.0.200.1", "10.1.0.5"),
					rng("fd00:88:4::10")},
				Ports: []PortRange{ports(rng("10.88.4.2"), "tcp", 80), ports(rng("10.88.4.2"), "tcp", 81),
					ports(rng("10.88.4.3"), "tcp", 8080), ports(rng("10.88.4.3"), "tcp", 80), ports(rng("fd00:88:4::2"), "tcp", 80)},
			},
			{AnyPeer: true, Ports: []PortRange{ports(rng("10.88.4.2", "10.88.4.3"), "udp", 5000, 5100)}},
		},
	}
	dnsPolicy = Policy{ID: "d4e5", Name: "shop/dns-only", Selected: addrs("10.88.4.2", "fd00:88:4::2"), Egress: true,
		EgressRules: []PolicyRule{{AnyPeer: true, Ports: []PortRange{
			ports(all4, "udp", 53), ports(all4, "tcp", 53), ports(all6, "udp", 53), ports(all6, "tcp", 53),
		}}},
	}
	denyPolicy = Policy{ID: "f6", Name: "locked/deny-all", Selected: addrs("fd00:88:4::9"), Ingress: true, Egress: true}

	policyExample = Ruleset{
		Networks:  []Network{violet},
		Endpoints: []Endpoint{violetEP},
		Policies:  []Policy{denyPolicy, webPolicy, dnsPolicy},
	}
)

// elemTexts returns the texts of the elements of the named set of table inet podnet.
func elemTexts(t *testing.T, def rulesetDef, set string) []string {
	t.Helper()
	s := def.tables[0].set(set)
	if s == nil {
		t.Fatalf("no set %s", set)
	}
	out := []string{}
	for _, e := range s.elems {
		out = append(out, e.text)
	}
	return out
}

func TestPolicyElems(t *testing.T) {
	def := build(policyExample)
	for set, want := range map[string][]string{
		"policy_in4":      {"10.88.4.2", "10.88.4.3"},
		"policy_in6":      {"fd00:88:4::2", "fd00:88:4::9"},
		"policy_out4":     {"10.88.4.2"},
		"policy_out6":     {"fd00:88:4::2", "fd00:88:4::9"},
		"pol_a1b2c3_sel4": {"10.88.4.2", "10.88.4.3"},
		// 10.0.200.1-10.1.0.5 overlaps 10.0.0.0/16; .10 and .11 touch.
		"pol_a1b2c3_in0_peers4": {"10.0.0.0-10.1.0.5", "10.88.4.10/31"},
		"pol_a1b2c3_in0_peers6": {"fd00:88:4::10"},
		// 80 and 81 to .2 merge; .2 and .3 share port 80.
		"pol_a1b2c3_in0_ports4": {"10.88.4.2 . tcp . 80-81", "10.88.4.3 . tcp . 80", "10.88.4.3 . tcp . 8080"},
		"pol_a1b2c3_in1_ports4": {"10.88.4.2/31 . udp . 5000-5100"},
		"pol_a1b2c3_in1_ports6": {},
		"pol_d4e5_out0_ports4":  {"0.0.0.0/0 . tcp . 53", "0.0.0.0/0 . udp . 53"},
		"pol_d4e5_out0_ports6":  {"::/0 . tcp . 53", "::/0 . udp . 53"},
		"pol_f6_sel6":           {"fd00:88:4::9"},
	} {
		if got := elemTexts(t, def, set); !slices.Equal(got, want) {
			t.Errorf("%s = %q, want %q", set, got, want)
		}
	}
	for _, absent := range []string{"pol_a1b2c3_in1_peers4", "pol_d4e5_out0_peers4", "pol_f6_in0_peers4", "pol_a1b2c3_out0_ports4"} {
		if def.tables[0].set(absent) != nil {
			t.Errorf("set %s exists", absent)
		}
	}
}

// Ports: the elements depend on the allowed (destination, protocol, port) triples only,
// never overlap, and cover exactly the union of the ranges.
func TestPortElems(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	for _, tc := range []struct {
		name string
		in   []PortRange
		want []string
	}{
		{"one", []PortRange{ports(rng("10.0.0.1"), "tcp", 80)}, []string{"10.0.0.1 . tcp . 80"}},
		{"overlapping ports", []PortRange{ports(rng("10.0.0.1"), "tcp", 80, 90), ports(rng("10.0.0.1"), "tcp", 85, 100)},
			[]string{"10.0.0.1 . tcp . 80-100"}},
		{"adjacent addresses", []PortRange{ports(rng("10.0.0.1"), "tcp", 80), ports(rng("10.0.0.2"), "tcp", 80), ports(rng("10.0.0.3"), "tcp", 80)},
			[]string{"10.0.0.1-10.0.0.3 . tcp . 80"}},
		{"prefix", []PortRange{ports(rng("10.0.0.0", "10.0.0.127"), "tcp", 80), ports(rng("10.0.0.128", "10.0.0.255"), "tcp", 80)},
			[]string{"10.0.0.0/24 . tcp . 80"}},
		{"nested boxes", []PortRange{ports(prefixRange("10.0.0.0/24"), "tcp", 80), ports(rng("10.0.0.5"), "tcp", 81)},
			[]string{"10.0.0.0-10.0.0.4 . tcp . 80", "10.0.0.5 . tcp . 80-81", "10.0.0.6-10.0.0.255 . tcp . 80"}},
		{"protocols apart", []PortRange{ports(rng("10.0.0.1"), "udp", 53), ports(rng("10.0.0.1"), "tcp", 53), ports(rng("10.0.0.1"), "sctp", 53)},
			[]string{"10.0.0.1 . tcp . 53", "10.0.0.1 . udp . 53", "10.0.0.1 . sctp . 53"}},
		{"up to the last address and port", []PortRange{ports(rng("255.255.255.254", "255.255.255.255"), "tcp", 65535)},
			[]string{"255.255.255.254/31 . tcp . 65535"}},
		{"twice", []PortRange{ports(rng("10.0.0.1"), "tcp", 80), ports(rng("10.0.0.1"), "tcp", 80)}, []string{"10.0.0.1 . tcp . 80"}},
		{"other family left out", []PortRange{ports(rng("fd00::1"), "tcp", 80)}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := []string{}
			set := setDef{interval: true, keyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)}
			for _, e := range portElems(tc.in, ip4) {
				got = append(got, policyElemText(set, e))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("elements %q, want %q", got, tc.want)
			}
		})
	}

	// Random boxes in a small space: the elements are disjoint, cover the same points,
	// and do not depend on the order or the split of the ranges.
	r := rand.New(rand.NewPCG(1, 2))
	base := a("10.0.0.0")
	at := func(i int) netip.Addr {
		x := base
		for range i {
			x = x.Next()
		}
		return x
	}
	protos := []string{"tcp", "udp"}
	for round := range 200 {
		var in []PortRange
		for range 1 + r.IntN(6) {
			lo := r.IntN(12)
			hi := lo + r.IntN(4)
			p := uint16(1 + r.IntN(10))
			in = append(in, ports(AddrRange{at(lo), at(hi)}, protos[r.IntN(2)], p, p+uint16(r.IntN(4))))
		}
		want := map[[3]int]bool{}
		for _, pr := range in {
			for x := pr.Dst.From; x.Compare(pr.Dst.To) <= 0; x = x.Next() {
				for p := pr.From; p <= pr.To; p++ {
					want[[3]int{int(x.As4()[3]), int(policyProto(pr.Protocol)), int(p)}] = true
				}
			}
		}
		elems := portElems(in, ip4)
		got := map[[3]int]bool{}
		for _, e := range elems {
			for x := e.key[3]; x <= e.keyEnd[3]; x++ {
				for p := int(e.key[8])<<8 | int(e.key[9]); p <= int(e.keyEnd[8])<<8|int(e.keyEnd[9]); p++ {
					k := [3]int{int(x), int(e.key[4]), p}
					if got[k] {
						t.Fatalf("round %d: %v in two elements of %v", round, k, in)
					}
					got[k] = true
				}
			}
		}
		if len(got) != len(want) {
			t.Fatalf("round %d: elements cover %d points, want %d (%v)", round, len(got), len(want), in)
		}
		for k := range want {
			if !got[k] {
				t.Fatalf("round %d: %v not covered", round, k)
			}
		}
		// The same points as one range per point: the same elements.
		var points []PortRange
		for k := range want {
			proto := "tcp"
			if k[1] == 17 {
				proto = "udp"
			}
			points = append(points, ports(AddrRange{at(k[0]), at(k[0])}, proto, uint16(k[2])))
		}
		r.Shuffle(len(points), func(i, j int) { points[i], points[j] = points[j], points[i] })
		if again := portElems(points, ip4); !slices.EqualFunc(again, elems, sameElem) {
			t.Fatalf("round %d: the same points give other elements", round)
		}
	}
}

func TestValidatePolicies(t *testing.T) {
	ok := Policy{ID: "p1", Name: "ns/p", Selected: addrs("10.0.0.1"), Ingress: true,
		IngressRules: []PolicyRule{{Peers: []AddrRange{rng("10.0.0.2")}, Ports: []PortRange{ports(rng("10.0.0.1"), "sctp", 80, 81)}}}}
	with := func(f func(p *Policy)) []Policy {
		p := ok
		p.IngressRules = slices.Clone(ok.IngressRules)
		f(&p)
		return []Policy{p}
	}
	for _, tc := range []struct {
		name string
		ps   []Policy
		want string
	}{
		{"ok", []Policy{ok, webPolicy, dnsPolicy, denyPolicy}, ""},
		{"no ID", with(func(p *Policy) { p.ID = "" }), `policy "ns/p": ID "": want 1-12 bytes of a-z and 0-9`},
		{"long ID", with(func(p *Policy) { p.ID = "0123456789abc" }), "want 1-12 bytes"},
		{"upper case ID", with(func(p *Policy) { p.ID = "A" }), "want 1-12 bytes"},
		{"ID twice", []Policy{ok, {ID: "p1", Name: "ns/q"}}, `policy "ns/q": ID "p1" already used by policy "ns/p"`},
		{"selected", with(func(p *Policy) { p.Selected = addrs("::") }), "selected address ::: invalid pod address"},
		{"rules without type", with(func(p *Policy) { p.Ingress = false }), "1 ingress rules without type ingress"},
		{"egress rules without type", with(func(p *Policy) { p.EgressRules = []PolicyRule{{AnyPeer: true, AnyPort: true}} }),
			"1 egress rules without type egress"},
		{"protocol", with(func(p *Policy) { p.IngressRules[0].Ports = []PortRange{ports(rng("10.0.0.1"), "icmp", 1)} }),
			`ingress rule 0: port icmp 1 to 10.0.0.1: protocol "icmp": want tcp, udp or sctp`},
		{"port 0", with(func(p *Policy) { p.IngressRules[0].Ports = []PortRange{ports(rng("10.0.0.1"), "tcp", 0)} }), "want 1 <= From <= To"},
		{"ports reversed", with(func(p *Policy) { p.IngressRules[0].Ports = []PortRange{ports(rng("10.0.0.1"), "tcp", 81, 80)} }), "want 1 <= From <= To"},
		{"peers reversed", with(func(p *Policy) { p.IngressRules[0].Peers = []AddrRange{rng("10.0.0.2", "10.0.0.1")} }),
			"peer 10.0.0.2-10.0.0.1: From above To"},
		{"two families", with(func(p *Policy) { p.IngressRules[0].Peers = []AddrRange{rng("10.0.0.2", "fd00::1")} }), "addresses of two families"},
		{"mapped", with(func(p *Policy) { p.IngressRules[0].Peers = []AddrRange{rng("::ffff:10.0.0.1")} }), "invalid"},
		{"destination", with(func(p *Policy) { p.IngressRules[0].Ports = []PortRange{{Protocol: "tcp", From: 1, To: 1}} }), "destination: address invalid IP: invalid"},
		{"peers with AnyPeer", with(func(p *Policy) { p.IngressRules[0].AnyPeer = true }), "peers listed with AnyPeer"},
		{"ports with AnyPort", with(func(p *Policy) { p.IngressRules[0].AnyPort = true }), "ports listed with AnyPort"},
		{"empty rule lists match nothing", with(func(p *Policy) { p.IngressRules[0] = PolicyRule{} }), ""},
		{"whole address space", with(func(p *Policy) { p.IngressRules[0].Peers = []AddrRange{all4, all6} }), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Ruleset{Policies: tc.ps}.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if err := (Delta{IngressIsolated: addrs("0.0.0.0")}).Validate(); err == nil {
		t.Error("Delta.Validate accepts an unspecified isolated address")
	}
}

// A ruleset without policies renders as before policies existed (the golden files
// without policies do not change); with one, forward jumps to chain policies and chain
// input exists only with an egress policy.
func TestPolicyChainsOnlyWithPolicies(t *testing.T) {
	chains := func(r Ruleset) []string {
		var out []string
		for _, c := range build(r).tables[0].chains {
			out = append(out, c.name)
		}
		return out
	}
	without := chains(Ruleset{})
	for _, c := range []string{chainInput, chainPolicy, chainPolicyIngress, chainPolicyEgress} {
		if slices.Contains(without, c) {
			t.Errorf("chain %s without policies", c)
		}
	}
	in := chains(Ruleset{Policies: []Policy{{ID: "x", Ingress: true}}})
	if slices.Contains(in, chainInput) || !slices.Contains(in, chainPolicyIngress) {
		t.Errorf("chains with an ingress policy: %v", in)
	}
	if out := chains(Ruleset{Policies: []Policy{{ID: "x", Egress: true}}}); !slices.Contains(out, chainInput) {
		t.Errorf("chains with an egress policy: %v", out)
	}
	fwd := build(Ruleset{Policies: []Policy{{ID: "x", Ingress: true}}}).tables[0]
	var rules []string
	for _, c := range fwd.chains {
		if c.name == chainForward {
			for _, r := range c.rules[:4] {
				rules = append(rules, fwd.printRule(r.exprs))
			}
		}
	}
	if want := []string{"ct state established,related accept", "ct state untracked iifname . oifname @bridge_self accept",
		"jump policies", "ct status dnat accept"}; !slices.Equal(rules, want) {
		t.Errorf("forward starts with %q, want %q", rules, want)
	}
}

// The order of policies, addresses and ranges does not change the tables, nor do
// duplicates.
func TestPolicyRenderOrderIndependent(t *testing.T) {
	web := webPolicy
	web.Selected = append(slices.Clone(web.Selected[1:]), web.Selected[0], web.Selected[1])
	rule := web.IngressRules[0]
	rule.Peers = append(slices.Clone(rule.Peers), rule.Peers[0])
	slices.Reverse(rule.Peers)
	rule.Ports = slices.Clone(rule.Ports)
	slices.Reverse(rule.Ports)
	web.IngressRules = []PolicyRule{rule, web.IngressRules[1]}
	r := policyExample
	r.Policies = []Policy{dnsPolicy, web, denyPolicy}
	if a, b := Render(policyExample), Render(r); a != b {
		t.Errorf("order changes Render:\n%s\n%s", a, b)
	}
}

func TestPolicyDelta(t *testing.T) {
	// Another policy selecting 10.88.4.2 for ingress, and 10.88.4.3 alone.
	other := Policy{ID: "b7", Name: "shop/other", Selected: addrs("10.88.4.2"), Ingress: true}
	old := []Policy{webPolicy, dnsPolicy, other}

	// Unchanged: nothing to do.
	add, remove, ok := PolicyDelta(old, []Policy{other, dnsPolicy, webPolicy})
	if !ok || len(add.Policies)+len(remove.Policies)+len(remove.IngressIsolated)+len(remove.EgressIsolated) != 0 {
		t.Fatalf("unchanged policies: %+v, %+v, %v", add, remove, ok)
	}

	// Listed otherwise, the same elements: nothing to do either.
	reordered := webPolicy
	reordered.Selected = append(slices.Clone(webPolicy.Selected[1:]), webPolicy.Selected[0], webPolicy.Selected[0])
	if add, remove, ok := PolicyDelta(old, []Policy{reordered, dnsPolicy, other}); !ok || len(add.Policies)+len(remove.Policies) != 0 {
		t.Errorf("reordered policy: %+v, %+v, %v", add, remove, ok)
	}

	// webPolicy no longer selects 10.88.4.2 and 10.88.4.3: other still selects .2, so
	// only .3 leaves policy_in4.
	web := webPolicy
	web.Selected = addrs("fd00:88:4::2")
	add, remove, ok = PolicyDelta(old, []Policy{web, dnsPolicy, other})
	switch {
	case !ok:
		t.Fatal("PolicyDelta: not ok")
	case len(add.Policies) != 1 || add.Policies[0].ID != web.ID || len(remove.Policies) != 1 || remove.Policies[0].ID != web.ID:
		t.Errorf("policies: add %v, remove %v", add.Policies, remove.Policies)
	case !slices.Equal(remove.IngressIsolated, addrs("10.88.4.3")) || len(remove.EgressIsolated) != 0:
		t.Errorf("isolation removed: %v, %v", remove.IngressIsolated, remove.EgressIsolated)
	}

	// Layout changes need Sync.
	more := webPolicy
	more.IngressRules = append(slices.Clone(more.IngressRules), PolicyRule{AnyPeer: true, AnyPort: true})
	egressToo := other
	egressToo.Egress = true
	renamed := other
	renamed.Name = "shop/renamed"
	regrouped := other
	regrouped.Group = "elsewhere"
	for name, next := range map[string][]Policy{
		"group changed":  {webPolicy, dnsPolicy, regrouped},
		"policy added":   {webPolicy, dnsPolicy, other, denyPolicy},
		"policy removed": {webPolicy, dnsPolicy},
		"policy swapped": {webPolicy, dnsPolicy, denyPolicy},
		"rule added":     {more, dnsPolicy, other},
		"type added":     {webPolicy, dnsPolicy, egressToo},
		"renamed":        {webPolicy, dnsPolicy, renamed},
		"invalid":        {webPolicy, dnsPolicy, {ID: "B7"}},
	} {
		if _, _, ok := PolicyDelta(old, next); ok {
			t.Errorf("%s: PolicyDelta ok", name)
		}
	}

	// 10.88.4.2 leaves webPolicy and other, and a policy of another group now selects
	// it: it would move from one group's isolation set to another's, which Update does
	// not do (UpdatePolicies does).
	elsewhere := Policy{ID: "e1", Name: "other/e1", Group: "other", Ingress: true}
	taker := elsewhere
	taker.Selected = addrs("10.88.4.2")
	web.Selected = addrs("10.88.4.3")
	lone := other
	lone.Selected = nil
	if _, _, ok := PolicyDelta([]Policy{webPolicy, other, elsewhere}, []Policy{web, lone, taker}); ok {
		t.Error("an address moving to another group: PolicyDelta ok")
	}
}

// An isolated address of a Delta goes to the set of the group of the delta's policy
// that selects it: one that none selects is refused, naming the address.
func TestDeltaIsolatedNeedsItsPolicy(t *testing.T) {
	d := Delta{Policies: []Policy{webPolicy}, IngressIsolated: addrs("10.88.4.3")}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := isolationSetsOf(Delta{Policies: []Policy{{ID: "g1", Group: "shop", Selected: addrs("10.88.4.3"), Ingress: true}}, IngressIsolated: addrs("10.88.4.3")}); len(got) != 4 || got[0].name != "policy_in_shop4" || len(got[0].elems) != 1 ||
		got[1].name != "isolated_in4" || len(got[1].elems) != 1 {
		t.Errorf("isolation sets of a delta of group shop: %+v", got)
	}
	d.EgressIsolated = addrs("10.88.4.3")
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "egress isolated address 10.88.4.3") {
		t.Errorf("Validate = %v, want the egress isolated address named", err)
	}
}

// Sync refuses policies of two groups that select the same address, naming both.
func TestPolicyGroupsApart(t *testing.T) {
	a := Policy{ID: "a1", Name: "x/a", Group: "gx", Selected: addrs("10.88.4.5"), Ingress: true}
	b := Policy{ID: "b1", Name: "y/b", Group: "gy", Selected: addrs("10.88.4.6", "10.88.4.5"), Egress: true}
	err := withPolicies(policyExample, a, b).Validate()
	if err == nil || !strings.Contains(err.Error(), `selected address 10.88.4.5: also selected by policy "x/a" of group "gx"`) {
		t.Fatalf("Validate = %v, want the address and both groups named", err)
	}
	b.Group = "gx"
	if err := withPolicies(policyExample, a, b).Validate(); err != nil {
		t.Fatalf("one group: %v", err)
	}
	a.Group = "G"
	if err := withPolicies(policyExample, a).Validate(); err == nil || !strings.Contains(err.Error(), `group "G"`) {
		t.Fatalf("Validate = %v, want the invalid group named", err)
	}
}
