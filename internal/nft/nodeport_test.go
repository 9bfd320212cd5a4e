package nft

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/nftwire"
)

// NodePorts of the tests: the example's services have 30080 (web, IPv4 TCP, 3 backends),
// 30053 (dns, IPv6 UDP, affinity) and 30443 (idle, IPv4 TCP, no backend).

// validateNodePorts (which Table.Sync, Update and InSync apply besides Validate).
func TestValidateNodePort(t *testing.T) {
	vip4, vip6 := netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("fd00:96::1")
	svc := func(name string, vip netip.Addr, proto string, port, nodePort uint16) Service {
		return Service{Name: name, VIP: vip, Protocol: proto, Port: port, NodePort: nodePort}
	}
	for _, tc := range []struct {
		name string
		svcs []Service
		want string // substring of the error, "" for none
	}{
		{"one", []Service{svc("a", vip4, "tcp", 80, 30080)}, ""},
		{"two NodePorts", []Service{svc("a", vip4, "tcp", 80, 30080), svc("b", vip4, "tcp", 81, 30081)}, ""},
		{"same NodePort, other protocol", []Service{svc("a", vip4, "tcp", 53, 30053), svc("a", vip4, "udp", 53, 30053)}, ""},
		{"same NodePort, other family (dual stack)", []Service{svc("a", vip4, "tcp", 80, 30080), svc("a", vip6, "tcp", 80, 30080)}, ""},
		{"same service twice", []Service{svc("a", vip4, "tcp", 80, 30080), svc("a", vip4, "tcp", 80, 30080)}, ""},
		{"NodePort of another service", []Service{svc("a", vip4, "tcp", 80, 30080), svc("b", vip4, "tcp", 81, 30080)},
			`service "b" (tcp 10.96.0.1:81): NodePort tcp 30080 (ipv4) already used by service "a" (tcp 10.96.0.1:80)`},
		{"NodePort of another VIP's service", []Service{svc("a", vip6, "udp", 53, 30053), svc("b", netip.MustParseAddr("fd00:96::2"), "udp", 53, 30053)},
			"NodePort udp 30053 (ipv6) already used"},
		{"service twice, other NodePort", []Service{svc("a", vip4, "tcp", 80, 30080), svc("a", vip4, "tcp", 80, 30081)},
			`service "a" (tcp 10.96.0.1:80): listed twice with NodePorts 30080 and 30081`},
		{"service twice, with and without NodePort", []Service{svc("a", vip4, "tcp", 80, 30080), svc("a", vip4, "tcp", 80, 0)},
			"listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateNodePorts(tc.svcs)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("validateNodePorts = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("validateNodePorts = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// setElems returns the text of the elements of set name in table inet podnet of r.
func setElems(t *testing.T, r Ruleset, name string) []string {
	t.Helper()
	s := build(r).tables[0].set(name)
	if s == nil {
		t.Fatalf("no set %s", name)
	}
	var out []string
	for _, e := range s.elems {
		txt := e.text
		if e.comment != "" {
			txt += " comment " + quote(e.comment)
		}
		out = append(out, txt)
	}
	return out
}

// The elements a NodePort adds: its verdict, its backends again (in index order, also
// above 255 where the host-endian keys do not sort), its record, the masquerade and
// affinity sets; the later of two services with one NodePort loses it (Validate rejects
// that), not its VIP.
func TestNodePortElements(t *testing.T) {
	big := Service{Name: "ns/big", VIP: netip.MustParseAddr("10.96.0.20"), Protocol: "udp", Port: 53, NodePort: 30001}
	for i := range 300 {
		big.Backends = append(big.Backends, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 88, byte(i >> 8), byte(i)}), 53))
	}
	late := Service{Name: "ns/late", VIP: netip.MustParseAddr("10.96.0.30"), Protocol: "tcp", Port: 80, NodePort: webSvc.NodePort,
		Backends: addrPorts("10.88.1.9:80")}
	r := Ruleset{Services: []Service{late, webSvc, dnsSvc, idleSvc, big}}

	for _, tc := range []struct {
		set  string
		want []string
	}{
		{setNodePorts, []string{
			`ipv4 . tcp . 30080 comment "default/web"`,
			`ipv4 . tcp . 30443 comment "default/idle"`,
			`ipv4 . udp . 30001 comment "ns/big"`,
			`ipv6 . udp . 30053 comment "kube-system/dns"`,
		}},
		// Slot codes: 4 slots 3, none 0, 512 slots 10, 2 slots 2.
		{nodePortSlotBitSet(0), []string{"ipv4 . tcp . 30080"}},
		{nodePortSlotBitSet(1), []string{"ipv4 . tcp . 30080", "ipv4 . udp . 30001", "ipv6 . udp . 30053"}},
		{nodePortSlotBitSet(2), nil},
		{nodePortSlotBitSet(3), []string{"ipv4 . udp . 30001"}},
		{setAffinityNodePorts, []string{"ipv6 . udp . 30053"}},
		{mapServiceNodePorts + "4", []string{"10.96.0.10 . tcp . 80 : 30080", "10.96.0.10 . tcp . 443 : 30443", "10.96.0.20 . udp . 53 : 30001"}},
		{mapServiceNodePorts + "6", []string{"fd00:96::a . udp . 53 : 30053"}},
		{mapNodePortBackends + "6", []string{"udp . 30053 . 0 : fd00:88:1::2 . 53", "udp . 30053 . 1 : fd00:88:4::2 . 53"}},
	} {
		if got := setElems(t, r, tc.set); !slices.Equal(got, tc.want) {
			t.Errorf("set %s:\n got %q\nwant %q", tc.set, got, tc.want)
		}
	}
	backends4 := setElems(t, r, mapNodePortBackends+"4")
	var want4 []string
	for i, b := range sortedBackends(webSvc.Backends) {
		want4 = append(want4, fmt.Sprintf("tcp . 30080 . %d : %s", i, addrPortText(b)))
	}
	for i, b := range big.Backends {
		want4 = append(want4, fmt.Sprintf("udp . 30001 . %d : %s", i, addrPortText(b)))
	}
	if !slices.Equal(backends4, want4) {
		t.Errorf("set %s: got %d elements %q..., want %d", mapNodePortBackends+"4", len(backends4), backends4[:min(5, len(backends4))], len(want4))
	}
	// The late service keeps its VIP.
	if got := setElems(t, r, setServices+"4"); !slices.Contains(got, `10.96.0.30 . tcp . 80 comment "ns/late"`) {
		t.Errorf("services4 lacks ns/late: %q", got)
	}
	if got := setElems(t, r, slotBitSet(0, ip4)); !slices.Contains(got, "10.96.0.30 . tcp . 80") {
		t.Errorf("%s lacks ns/late (one slot: code 1): %q", slotBitSet(0, ip4), got)
	}
}

// chainText returns the printed rules of chain name of table inet podnet of r.
func chainText(t *testing.T, r Ruleset, name string) []string {
	t.Helper()
	td := build(r).tables[0]
	for _, c := range td.chains {
		if c.name == name {
			var out []string
			for _, rd := range c.rules {
				out = append(out, td.printRule(rd.exprs))
			}
			return out
		}
	}
	t.Fatalf("no chain %s", name)
	return nil
}

// Precedence: VIPs, then published ports of one host address, then one fib lookup for
// local destinations: published ports of every local address, then NodePorts. Masquerade:
// DNATed connections only enter chain dnatted, which masquerades NodePort connections.
func TestNodePortRules(t *testing.T) {
	for _, chain := range []string{chainPrerouting, chainOutput} {
		want := []string{
			"ip daddr . meta l4proto . th dport @services4 goto service-slots4",
			"ip6 daddr . meta l4proto . th dport @services6 goto service-slots6",
			"dnat ip to ip daddr . meta l4proto . th dport map @hostports4",
			"dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostports6",
			"fib daddr type local goto local-ports",
		}
		if got := chainText(t, example, chain); !slices.Equal(got, want) {
			t.Errorf("chain %s:\n got %q\nwant %q", chain, got, want)
		}
	}
	want := []string{
		"meta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports4",
		"meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @ports6",
		"meta nfproto . meta l4proto . th dport @nodeports goto nodeport-slots",
	}
	if got := chainText(t, example, chainLocalPorts); !slices.Equal(got, want) {
		t.Errorf("chain local-ports:\n got %q\nwant %q", got, want)
	}
	post := chainText(t, example, chainPostrouting)
	if len(post) != 3 || post[0] != "ct status dnat jump dnatted" {
		t.Errorf("chain postrouting: %q, want the jump to dnatted first, then the 2 egress rules", post)
	}
	dnatted := chainText(t, example, chainDNATted)
	for _, want := range []string{
		"meta l4proto tcp meta nfproto . meta l4proto . ct original proto-dst @nodeports masquerade",
		"meta l4proto udp meta nfproto . meta l4proto . ct original proto-dst @nodeports masquerade",
		"tcp dport != 0 ct state new meta nfproto . meta l4proto . ct original proto-dst @affinity_nodeports update @affinity4 { ip saddr . ct original ip daddr . meta l4proto . ct original proto-dst : ip daddr . tcp dport }",
	} {
		if !slices.Contains(dnatted, want) {
			t.Errorf("chain dnatted lacks %q:\n%s", want, strings.Join(dnatted, "\n"))
		}
	}
	// The NodePort pick chains draw as the VIP's do, from the NodePort's backends.
	for _, n := range slotCounts() {
		vip := chainText(t, example, chainPick+fmt.Sprint(n))
		np := chainText(t, example, chainNodePortPick+fmt.Sprint(n))
		if len(vip) != len(np) {
			t.Fatalf("chain %s%d has %d rules, %s%d %d", chainPick, n, len(vip), chainNodePortPick, n, len(np))
		}
		for i := range vip {
			w := strings.NewReplacer("ip daddr . ", "", "ip6 daddr . ", "", "@backends", "@nodeport_backends").Replace(vip[i])
			if np[i] != "meta nfproto ipv"+map[bool]string{true: "4 ", false: "6 "}[strings.HasPrefix(vip[i], "dnat ip ")]+w {
				t.Errorf("chain %s%d rule %d: %q, for %q", chainNodePortPick, n, i, np[i], vip[i])
			}
		}
	}
}

// kernelState is what Update reads of the services of keys when the kernel holds svcs.
func kernelState(svcs ...Service) map[serviceKey]*serviceElems {
	out := map[serviceKey]*serviceElems{}
	for _, s := range normServices(svcs) {
		e := s.elems()
		out[s.key()] = &e
	}
	return out
}

// planText is a plan's elements as "set: element" lines, sorted, deletions and additions.
func planText(p servicePlan) (del, put []string) {
	text := func(d rulesetDef) []string {
		var out []string
		for _, td := range d.tables {
			for _, s := range td.sets {
				for _, e := range s.elems {
					out = append(out, s.name+": "+e.text)
				}
			}
		}
		slices.Sort(out)
		return out
	}
	return text(p.del), text(p.put)
}

// The incremental path: what Update deletes and adds for NodePort changes, from what the
// kernel holds (planServices, without a kernel).
func TestPlanNodePorts(t *testing.T) {
	web := webSvc // NodePort 30080, 3 backends
	with := func(s Service, change func(*Service)) Service {
		s.Backends = slices.Clone(s.Backends)
		change(&s)
		return s
	}
	other := Service{Name: "default/other", VIP: netip.MustParseAddr("10.96.0.11"), Protocol: "tcp", Port: 80, Backends: addrPorts("10.88.1.7:80")}
	type step struct {
		name     string
		kernel   []Service // the services in the kernel, of the keys of the call
		add      []Service
		remove   []Service
		inUse    []uint16 // NodePorts (IPv4 TCP) of other services in the kernel
		del, put []string // "set: element" of the plan
		forget   []affinityForget
		err      error
	}
	key := func(s Service) Service { return Service{VIP: s.VIP, Protocol: s.Protocol, Port: s.Port} }
	webElems := func(port uint16) []string {
		p := fmt.Sprint(port)
		return []string{ // 4 slots: slot code 3
			"nodeport_backends4: tcp . " + p + " . 0 : 10.88.1.2 . 8080",
			"nodeport_backends4: tcp . " + p + " . 1 : 10.88.4.2 . 8080",
			"nodeport_backends4: tcp . " + p + " . 2 : 10.88.4.3 . 8080",
			"nodeport_slot_bit0: ipv4 . tcp . " + p,
			"nodeport_slot_bit1: ipv4 . tcp . " + p,
			"nodeports: ipv4 . tcp . " + p,
			"service_nodeports4: 10.96.0.10 . tcp . 80 : " + p,
		}
	}
	vipElems := []string{
		"backends4: 10.96.0.10 . tcp . 80 . 0 : 10.88.1.2 . 8080",
		"backends4: 10.96.0.10 . tcp . 80 . 1 : 10.88.4.2 . 8080",
		"backends4: 10.96.0.10 . tcp . 80 . 2 : 10.88.4.3 . 8080",
		"services4: 10.96.0.10 . tcp . 80",
		"slot_bit0_4: 10.96.0.10 . tcp . 80",
		"slot_bit1_4: 10.96.0.10 . tcp . 80",
	}
	sorted := func(ss ...[]string) []string { return slices.Sorted(slices.Values(slices.Concat(ss...))) }
	stickyElems := func(port uint16) []string {
		p := fmt.Sprint(port)
		return sorted(webElems(port), []string{"affinity_nodeports: ipv4 . tcp . " + p})
	}
	web31 := with(web, func(s *Service) { s.NodePort = 30081 })
	sticky := with(web, func(s *Service) { s.Affinity = true })
	stickyLess := with(sticky, func(s *Service) { s.Backends = s.Backends[1:] })
	otherTakes := with(other, func(s *Service) { s.NodePort = 30080 })
	for _, st := range []step{
		{name: "add", add: []Service{web}, put: sorted(vipElems, webElems(30080))},
		{name: "add again", kernel: []Service{web}, add: []Service{web}},
		{name: "NodePort added", kernel: []Service{with(web, func(s *Service) { s.NodePort = 0 })}, add: []Service{web}, put: webElems(30080)},
		{name: "NodePort changed", kernel: []Service{web}, add: []Service{web31}, del: webElems(30080), put: webElems(30081)},
		{name: "NodePort removed", kernel: []Service{web}, add: []Service{with(web, func(s *Service) { s.NodePort = 0 })}, del: webElems(30080)},
		{name: "removed by key", kernel: []Service{web}, remove: []Service{key(web)}, del: sorted(vipElems, webElems(30080))},
		{name: "backend added, same slots", kernel: []Service{web},
			add: []Service{with(web, func(s *Service) { s.Backends = append(s.Backends, netip.MustParseAddrPort("10.88.4.4:8080")) })},
			put: []string{"backends4: 10.96.0.10 . tcp . 80 . 3 : 10.88.4.4 . 8080", "nodeport_backends4: tcp . 30080 . 3 : 10.88.4.4 . 8080"}},
		{name: "NodePort of another service", add: []Service{web}, inUse: []uint16{30080}, err: ErrConflict},
		{name: "NodePort of another service, on change", kernel: []Service{web}, add: []Service{web31}, inUse: []uint16{30081}, err: ErrConflict},
		{name: "NodePort handed over in one call", kernel: []Service{web, other}, inUse: []uint16{30080},
			add: []Service{with(web, func(s *Service) { s.NodePort = 0 }), otherTakes},
			del: webElems(30080),
			put: []string{
				"nodeport_backends4: tcp . 30080 . 0 : 10.88.1.7 . 80",
				"nodeport_slot_bit0: ipv4 . tcp . 30080",
				"nodeports: ipv4 . tcp . 30080",
				"service_nodeports4: 10.96.0.11 . tcp . 80 : 30080",
			}},
		{name: "NodePorts swapped in one call", kernel: []Service{web, with(other, func(s *Service) { s.NodePort = 30081 })}, inUse: []uint16{30080, 30081},
			add: []Service{web31, otherTakes},
			del: sorted(webElems(30080), []string{
				"nodeport_backends4: tcp . 30081 . 0 : 10.88.1.7 . 80",
				"nodeport_slot_bit0: ipv4 . tcp . 30081",
				"nodeports: ipv4 . tcp . 30081",
				"service_nodeports4: 10.96.0.11 . tcp . 80 : 30081",
			}),
			put: sorted(webElems(30081), []string{
				"nodeport_backends4: tcp . 30080 . 0 : 10.88.1.7 . 80",
				"nodeport_slot_bit0: ipv4 . tcp . 30080",
				"nodeports: ipv4 . tcp . 30080",
				"service_nodeports4: 10.96.0.11 . tcp . 80 : 30080",
			})},
		// 10.88.4.2 (index 1 of 3) goes: index 1 is 10.88.4.3 now, 4 slots become 2
		// (slot code 3 becomes 2).
		{name: "affinity: a backend removed", kernel: []Service{sticky}, add: []Service{stickyLess},
			del: []string{
				"backends4: 10.96.0.10 . tcp . 80 . 1 : 10.88.4.2 . 8080",
				"backends4: 10.96.0.10 . tcp . 80 . 2 : 10.88.4.3 . 8080",
				"nodeport_backends4: tcp . 30080 . 1 : 10.88.4.2 . 8080",
				"nodeport_backends4: tcp . 30080 . 2 : 10.88.4.3 . 8080",
				"nodeport_slot_bit0: ipv4 . tcp . 30080",
				"slot_bit0_4: 10.96.0.10 . tcp . 80",
			},
			put: []string{
				"backends4: 10.96.0.10 . tcp . 80 . 1 : 10.88.4.3 . 8080",
				"nodeport_backends4: tcp . 30080 . 1 : 10.88.4.3 . 8080",
			},
			forget: []affinityForget{
				{family: ip4, match: sticky.key().bytes(), keep: stickyLess.Backends},
				{family: ip4, nodePort: true, match: sticky.nodePortKey().portBytes(), keep: stickyLess.Backends},
			}},
		{name: "affinity: NodePort changed", kernel: []Service{sticky}, add: []Service{with(sticky, func(s *Service) { s.NodePort = 30081 })},
			del: stickyElems(30080), put: stickyElems(30081),
			forget: []affinityForget{{family: ip4, nodePort: true, match: sticky.nodePortKey().portBytes()}}},
	} {
		t.Run(st.name, func(t *testing.T) {
			want := map[serviceKey]Service{}
			var keys []serviceKey
			for _, s := range normServices(st.remove) {
				keys = append(keys, s.key())
			}
			for _, s := range normServices(st.add) {
				want[s.key()] = s
				keys = append(keys, s.key())
			}
			for _, s := range st.kernel {
				keys = append(keys, s.key())
			}
			slices.SortFunc(keys, func(a, b serviceKey) int { return strings.Compare(string(a.sortKey()), string(b.sortKey())) })
			keys = slices.Compact(keys)
			var asked []uint16
			p, err := planServices(keys, kernelState(st.kernel...), want, func(k nodePortKey) (bool, error) {
				asked = append(asked, k.port)
				return slices.Contains(st.inUse, k.port), nil
			})
			if !errors.Is(err, st.err) || (err == nil) != (st.err == nil) {
				t.Fatalf("planServices = %v, want %v", err, st.err)
			}
			if err != nil {
				return
			}
			for _, port := range asked {
				for _, s := range st.kernel {
					if s.NodePort == port {
						t.Errorf("asked whether NodePort %d is in use, which a service of the call holds", port)
					}
				}
			}
			del, put := planText(p) // (an element's text leaves its comment out)
			if !slices.Equal(del, sorted(st.del)) {
				t.Errorf("deleted:\n got %q\nwant %q", del, sorted(st.del))
			}
			if !slices.Equal(put, sorted(st.put)) {
				t.Errorf("added:\n got %q\nwant %q", put, sorted(st.put))
			}
			if !slices.EqualFunc(p.forget, st.forget, func(a, b affinityForget) bool {
				return a.family == b.family && a.nodePort == b.nodePort && string(a.match) == string(b.match) &&
					slices.Equal(sortedBackends(a.keep), sortedBackends(b.keep))
			}) {
				t.Errorf("forget: got %+v, want %+v", p.forget, st.forget)
			}
		})
	}
}

// Update adds, changes and removes NodePorts as element changes only, refuses a NodePort
// that another service holds (changing nothing), hands one over in a call, and the tables
// then equal what Sync writes; a NodePort element gone behind podnet's back is ErrNoTable.
func TestPrivilegedNodePortUpdate(t *testing.T) {
	tb, ns := openTable(t)
	want := full()
	want.Services = nil
	mustSync(t, tb, want)
	rulesBefore := ruleHandles(t, ns)
	step := func(what string, add, remove Delta, services ...Service) {
		t.Helper()
		if err := tb.Update(add, remove); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		want.Services = services
		wantInSync(t, tb, want, true)
	}
	with := func(s Service, change func(*Service)) Service {
		s.Backends = slices.Clone(s.Backends)
		change(&s)
		return s
	}
	add := func(s ...Service) Delta { return Delta{Services: s} }
	key := func(s Service) Service { return Service{VIP: s.VIP, Protocol: s.Protocol, Port: s.Port} }
	web, dns, idle := webSvc, dnsSvc, idleSvc
	noNP := func(s Service) Service { return with(s, func(s *Service) { s.NodePort = 0 }) }

	step("add without NodePorts", add(noNP(web), noNP(dns)), Delta{}, noNP(web), noNP(dns))
	step("NodePorts added", add(web, dns), Delta{}, web, dns)
	step("add again", add(dns, web), Delta{}, web, dns)
	web31 := with(web, func(s *Service) { s.NodePort = 30081 })
	step("NodePort changed", add(web31), Delta{}, web31, dns)
	step("backends changed", add(with(web31, func(s *Service) { s.Backends = s.Backends[:1] })), Delta{},
		with(web31, func(s *Service) { s.Backends = s.Backends[:1] }), dns)
	step("affinity on", add(with(web31, func(s *Service) { s.Affinity = true })), Delta{}, with(web31, func(s *Service) { s.Affinity = true }), dns)
	step("idle added", add(idle), Delta{}, with(web31, func(s *Service) { s.Affinity = true }), dns, idle)
	step("NodePort removed", add(web), Delta{}, web, dns, idle)
	step("removed by key", Delta{}, add(key(dns)), web, idle)

	// 30080 is web's: taking it fails whole, and changes nothing.
	taker := with(idle, func(s *Service) { s.NodePort = web.NodePort })
	newcomer := Service{Name: "ns/new", VIP: netip.MustParseAddr("10.96.0.99"), Protocol: "tcp", Port: 80, NodePort: 30080}
	for _, d := range []Delta{add(taker), add(newcomer), add(dns, newcomer)} {
		if err := tb.Update(d, Delta{}); !errors.Is(err, ErrConflict) {
			t.Errorf("Update taking web's NodePort = %v, want ErrConflict", err)
		}
		wantInSync(t, tb, want, true)
	}
	// Handed over in one call: web loses it, idle takes it; and swapped back.
	step("handed over", add(noNP(web), taker), Delta{}, noNP(web), taker)
	step("taken back, other removed", add(web), add(key(taker)), web)
	step("swap", add(web31, with(idle, func(s *Service) { s.NodePort = 30080 })), Delta{},
		web31, with(idle, func(s *Service) { s.NodePort = 30080 }))
	step("swap back", add(web, with(idle, func(s *Service) { s.NodePort = 30081 })), Delta{},
		web, with(idle, func(s *Service) { s.NodePort = 30081 }))
	if h := ruleHandles(t, ns); !slices.Equal(h, rulesBefore) || len(h) < 100 {
		t.Errorf("rule handles %v after the updates, %v before: Update changed rules", h, rulesBefore)
	}

	// Two services with one NodePort: Sync and Update refuse them, changing nothing.
	bad := want
	bad.Services = append(slices.Clone(want.Services), newcomer)
	if err := tb.Sync(bad); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("Sync with two services on NodePort 30080 = %v, want an error", err)
	}
	if err := tb.Update(add(newcomer, taker), Delta{}); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("Update adding two services on one NodePort = %v, want an error", err)
	}
	wantInSync(t, tb, want, true)

	// A NodePort's element deleted behind podnet's back: the service does not add up.
	c := otherConn(t, ns)
	np, err := c.GetSetByName(podnetTable(nftables.TableFamilyINet), setNodePorts)
	must(t, err, "get nodeports")
	must(t, c.SetDeleteElements(np, []nftables.SetElement{{Key: web.nodePortKey().bytes()}}), "delete web's NodePort")
	must(t, c.Flush(), "delete web's NodePort")
	if err := tb.Update(add(web31), Delta{}); !errors.Is(err, ErrNoTable) {
		t.Fatalf("Update of a service whose NodePort element is gone = %v, want ErrNoTable", err)
	}
}

// ruleHandles returns the handles of the rules of table inet podnet in ns: a rule added
// or replaced gets a new one.
func ruleHandles(t *testing.T, ns netns.NsHandle) []uint64 {
	t.Helper()
	nl, err := nftwire.Dial(int(ns))
	must(t, err, "dial nftables")
	defer nl.Close()
	rules, err := nftwire.DumpRules(nl, nftables.TableFamilyINet, TableName, "")
	must(t, err, "list rules")
	var out []uint64
	for _, r := range rules {
		out = append(out, r.Handle)
	}
	return out
}

// Services with random NodePorts from a small pool, added, replaced and removed one by one
// in random order: a NodePort another service holds is refused (and changes nothing), and
// the tables end equal to what Sync writes for the result.
func TestPrivilegedNodePortUpdateRandomOrder(t *testing.T) {
	tb, _ := openTable(t)
	mustSync(t, tb, Ruleset{})
	rng := rand.New(rand.NewPCG(5, 6))
	random := func(i int) Service {
		s := Service{Name: fmt.Sprintf("ns/svc-%d", i), Protocol: []string{"tcp", "udp"}[i%2], Port: 80, Affinity: rng.IntN(3) == 0}
		s.VIP = netip.AddrFrom4([4]byte{10, 96, 0, byte(i)})
		if i%4 >= 2 {
			s.VIP = netip.AddrFrom16([16]byte{0xfd, 0, 0x96, 15: byte(i)})
		}
		if n := rng.IntN(5); n > 0 {
			s.NodePort = uint16(30000 + n)
		}
		for range rng.IntN(6) {
			b := netip.AddrFrom4([4]byte{10, 88, 1, byte(rng.IntN(20))})
			if !s.VIP.Is4() {
				b = netip.AddrFrom16([16]byte{0xfd, 0, 0x88, 15: byte(rng.IntN(20))})
			}
			s.Backends = append(s.Backends, netip.AddrPortFrom(b, 8080))
		}
		return s
	}
	state := map[serviceKey]Service{}
	conflicts := 0
	for range 300 {
		s := random(rng.IntN(16))
		if rng.IntN(4) == 0 {
			must(t, tb.Update(Delta{}, Delta{Services: []Service{s}}), "remove")
			delete(state, s.key())
			continue
		}
		taken := false
		for k, o := range state {
			if k != s.key() && s.NodePort != 0 && o.NodePort != 0 && o.nodePortKey() == s.nodePortKey() {
				taken = true
			}
		}
		err := tb.Update(Delta{Services: []Service{s}}, Delta{})
		switch {
		case taken && !errors.Is(err, ErrConflict):
			t.Fatalf("add %s with NodePort %d, held by another service: %v, want ErrConflict", s.key(), s.NodePort, err)
		case taken:
			conflicts++
		case err != nil:
			t.Fatalf("add %s: %v", s.key(), err)
		default:
			state[s.key()] = s
		}
	}
	if conflicts == 0 {
		t.Error("no conflict in 300 steps: the test does not test it")
	}
	var want Ruleset
	for _, s := range state {
		want.Services = append(want.Services, s)
	}
	wantInSync(t, tb, want, true)
}

// TestSlotTree walks the slot trees of the VIPs (both families) and of the NodePorts for
// every slot count, as the kernel would for a key whose slot_bit sets hold the bits of its
// code: each ends in the pick chain of that count (no-backends for none), past the jump to
// chain affinity at the root.
func TestSlotTree(t *testing.T) {
	chains := map[string]chainDef{}
	for _, c := range serviceChains() {
		chains[c.name] = c
	}
	for _, tree := range []struct {
		root, affinity, pick string
		bitSet               func(int) string
	}{
		{chainServiceSlots + "4", setAffinityServices + "4", chainPick, func(b int) string { return slotBitSet(b, ip4) }},
		{chainServiceSlots + "6", setAffinityServices + "6", chainPick, func(b int) string { return slotBitSet(b, ip6) }},
		{chainNodePortSlots, setAffinityNodePorts, chainNodePortPick, nodePortSlotBitSet},
	} {
		for _, n := range append([]uint32{0}, slotCounts()...) {
			code := slotCode(n)
			want := chainNoBackends
			if n > 0 {
				want = tree.pick + strconv.Itoa(int(n))
			}
			var path []string
			at, sawAffinity := tree.root, false
			for steps := 0; at != want && steps <= slotCodeBits; steps++ {
				c, ok := chains[at]
				if !ok {
					t.Fatalf("%s, %d slots: goes to %q, no such chain (path %v)", tree.root, n, at, path)
				}
				path = append(path, at)
				next := ""
				for _, r := range c.rules {
					var set string
					var v *expr.Verdict
					for _, e := range r.exprs {
						switch e := e.(type) {
						case *expr.Lookup:
							set = e.SetName
						case *expr.Verdict:
							v = e
						}
					}
					switch {
					case set == tree.affinity && v.Kind == expr.VerdictJump && v.Chain == chainAffinity:
						sawAffinity = true
						continue
					case set == "":
						next = v.Chain
					case hasBit(tree.bitSet, set, code):
						next = v.Chain
					}
					if next != "" {
						break
					}
				}
				at = next
			}
			if at != want {
				t.Errorf("%s, %d slots (code %d): ends in %q, want %q (path %v)", tree.root, n, code, at, want, path)
			}
			if !sawAffinity {
				t.Errorf("%s, %d slots: no jump to chain affinity on the way (path %v)", tree.root, n, path)
			}
		}
	}
}

// hasBit reports whether set is the slot_bit set of a bit that code has.
func hasBit(bitSet func(int) string, set string, code uint8) bool {
	for b := range slotCodeBits {
		if bitSet(b) == set {
			return code>>b&1 == 1
		}
	}
	return false
}
