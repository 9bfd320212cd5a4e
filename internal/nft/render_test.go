package nft

import (
	"flag"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/podnet/podnet/internal/nftwire"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func pfx(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

var (
	blue  = Network{Name: "blue", Bridge: "pn-blue", Subnets: pfx("10.88.1.0/24", "fd00:88:1::/64"), Masquerade: true}
	red   = Network{Name: "red", Bridge: "pn-red", Subnets: pfx("fd00:88:2::/64", "10.88.2.0/24")}
	green = Network{Name: "green", Bridge: "pn-green", Subnets: pfx("10.88.3.0/25", "fd00:88:3::/64"), Masquerade: true}
	// A routed network (no bridge).
	violet = Network{Name: "violet", Subnets: pfx("10.88.4.0/24", "fd00:88:4::/64"), Masquerade: true}

	// Endpoints and published ports of the example ruleset.
	blueEP   = Endpoint{HostIf: "pnv-blue-1", Bridge: "pn-blue", Addrs: addrs("10.88.1.2", "fd00:88:1::2"), MAC: net.HardwareAddr{0x0a, 0x58, 0x0a, 0x58, 0x01, 0x02}}
	violetEP = Endpoint{HostIf: "pnv-violet-1", Addrs: addrs("10.88.4.2", "fd00:88:4::2")}
	webPort  = PortMapping{Protocol: "tcp", HostPort: 8080, Addr: netip.MustParseAddr("10.88.1.2"), Port: 80}
	dnsPort  = PortMapping{Protocol: "udp", HostIP: netip.MustParseAddr("fd00:ff::1"), HostPort: 5353,
		Addr: netip.MustParseAddr("fd00:88:4::2"), Port: 53}
	// Services of the example ruleset: one with 3 backends (4 slots), one with affinity,
	// one without backends; each with a NodePort.
	webSvc = Service{Name: "default/web", VIP: netip.MustParseAddr("10.96.0.10"), Protocol: "tcp", Port: 80,
		Backends: addrPorts("10.88.4.2:8080", "10.88.1.2:8080", "10.88.4.3:8080"), NodePort: 30080}
	dnsSvc = Service{Name: "kube-system/dns", VIP: netip.MustParseAddr("fd00:96::a"), Protocol: "udp", Port: 53,
		Backends: addrPorts("[fd00:88:1::2]:53", "[fd00:88:4::2]:53"), Affinity: true, NodePort: 30053}
	idleSvc = Service{Name: "default/idle", VIP: netip.MustParseAddr("10.96.0.10"), Protocol: "tcp", Port: 443, NodePort: 30443}
	example = Ruleset{
		Networks:  []Network{blue, violet},
		Endpoints: []Endpoint{blueEP, violetEP},
		Ports:     []PortMapping{webPort, dnsPort},
		Services:  []Service{webSvc, dnsSvc, idleSvc},
	}
)

func addrPorts(s ...string) []netip.AddrPort {
	out := make([]netip.AddrPort, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddrPort(a)
	}
	return out
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Ruleset
	}{
		{"empty", Ruleset{}},
		{"one", Ruleset{Networks: []Network{blue}}},
		{"three", Ruleset{Networks: []Network{red, green, blue}}},
		{"example", example},
		{"policy", policyExample},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Render(tc.r)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Render mismatch (run with -update to accept)\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

// The order of networks, subnets, endpoints, addresses and ports does not change the
// tables, nor do duplicates.
func TestRenderOrderIndependent(t *testing.T) {
	r := full()
	a := Render(r)
	g := green
	g.Subnets = pfx("fd00:88:3::/64", "10.88.3.0/25")
	ep := blueEP
	ep.Addrs = []netip.Addr{ep.Addrs[1], ep.Addrs[0]}
	unspec := webPort
	unspec.HostIP = netip.IPv4Unspecified() // the same as no host IP
	web := webSvc
	web.Backends = append(slices.Clone(web.Backends[1:]), web.Backends[0], web.Backends[1])
	b := Render(Ruleset{
		Networks:  []Network{violet, g, blue, red},
		Endpoints: []Endpoint{violetEP, ep, blueEP},
		Ports:     []PortMapping{dnsPort, unspec, webPort, dnsPort},
		Services:  []Service{idleSvc, dnsSvc, web, webSvc},
	})
	if a != b {
		t.Errorf("order changes Render:\n%s\n%s", a, b)
	}
}

func TestValidate(t *testing.T) {
	a4 := netip.MustParseAddr("10.88.1.2")
	a6 := netip.MustParseAddr("fd00:88:1::2")
	vip := netip.MustParseAddr("10.96.0.1")
	port := func(proto string, hostIP string, hostPort uint16, addr netip.Addr, p uint16) PortMapping {
		m := PortMapping{Protocol: proto, HostPort: hostPort, Addr: addr, Port: p}
		if hostIP != "" {
			m.HostIP = netip.MustParseAddr(hostIP)
		}
		return m
	}
	for _, tc := range []struct {
		name string
		r    Ruleset
		want string // substring of the error, "" for none
	}{
		{"ok", full(), ""},
		{"routed", Ruleset{Networks: []Network{blue, {Name: "x", Subnets: pfx("10.88.9.0/24")}, {Name: "y"}}}, ""},
		{"long bridge", Ruleset{Networks: []Network{{Name: "x", Bridge: "0123456789abcdef"}}}, "must be 1-15 bytes"},
		{"slash", Ruleset{Networks: []Network{{Name: "x", Bridge: "a/b"}}}, "without '/'"},
		{"space", Ruleset{Networks: []Network{{Name: "x", Bridge: "a b"}}}, "or spaces"},
		{"dot", Ruleset{Networks: []Network{{Name: "x", Bridge: ".."}}}, "must be 1-15 bytes"},
		{"dup bridge", Ruleset{Networks: []Network{blue, {Name: "x", Bridge: "pn-blue"}}}, `already used by network "blue"`},
		{"bad subnet", Ruleset{Networks: []Network{{Name: "x", Bridge: "b", Subnets: []netip.Prefix{{}}}}}, "invalid prefix"},
		{"overlap", Ruleset{Networks: []Network{blue, {Name: "x", Subnets: pfx("10.88.0.0/16")}}},
			`network "x": subnet 10.88.0.0/16: overlaps subnet 10.88.1.0/24 of network "blue"`},
		{"overlap within a network", Ruleset{Networks: []Network{{Name: "x", Subnets: pfx("10.0.0.0/16", "10.0.1.0/24")}}}, ""},
		{"endpoint without interface", Ruleset{Endpoints: []Endpoint{{Addrs: []netip.Addr{a4}}}}, `endpoint "": host interface: must be 1-15 bytes`},
		{"endpoint address", Ruleset{Endpoints: []Endpoint{{HostIf: "v", Addrs: []netip.Addr{{}}}}}, "invalid sandbox address"},
		{"endpoint unspecified", Ruleset{Endpoints: []Endpoint{{HostIf: "v", Addrs: []netip.Addr{netip.IPv6Unspecified()}}}}, "invalid sandbox address"},
		{"endpoint mapped", Ruleset{Endpoints: []Endpoint{{HostIf: "v", Addrs: addrs("::ffff:10.0.0.1")}}}, "invalid sandbox address"},
		{"endpoint twice", Ruleset{Endpoints: []Endpoint{{HostIf: "v", Addrs: []netip.Addr{a4}}, {HostIf: "v", Addrs: []netip.Addr{a6}}}}, ""},
		{"endpoint bridged and routed", Ruleset{Endpoints: []Endpoint{{HostIf: "v", Bridge: "br"}, {HostIf: "v"}}}, "both as bridged and as routed"},
		{"endpoint in two bridges", Ruleset{Endpoints: []Endpoint{{HostIf: "v", Bridge: "br"}, {HostIf: "v", Bridge: "br2"}}}, `port of bridges "br" and "br2"`},
		{"endpoint's bridge", Ruleset{Endpoints: []Endpoint{{HostIf: "v", Bridge: "a-bridge-name-too-long"}}}, `endpoint "v": bridge`},
		{"protocol", Ruleset{Ports: []PortMapping{port("sctp", "", 80, a4, 80)}}, `protocol "sctp"`},
		{"host port 0", Ruleset{Ports: []PortMapping{port("tcp", "", 0, a4, 80)}}, "host port 0"},
		{"port 0", Ruleset{Ports: []PortMapping{port("tcp", "", 80, a4, 0)}}, "port 0"},
		{"no address", Ruleset{Ports: []PortMapping{port("tcp", "", 80, netip.Addr{}, 80)}}, "invalid endpoint address"},
		{"host IP family", Ruleset{Ports: []PortMapping{port("tcp", "192.0.2.1", 80, a6, 80)}}, "not of the endpoint address's family"},
		{"host port twice", Ruleset{Ports: []PortMapping{port("tcp", "", 80, a4, 80), port("tcp", "", 80, a4, 81)}},
			"tcp :80 -> 10.88.1.2:81: host side already mapped to 10.88.1.2:80"},
		{"unspecified host IP is every address", Ruleset{Ports: []PortMapping{port("tcp", "", 80, a4, 80), port("tcp", "0.0.0.0", 80, a4, 81)}},
			"already mapped"},
		{"same mapping twice", Ruleset{Ports: []PortMapping{port("tcp", "", 80, a4, 80), port("tcp", "", 80, a4, 80)}}, ""},
		{"one host port, several keys", Ruleset{Ports: []PortMapping{
			port("tcp", "", 80, a4, 80), port("udp", "", 80, a4, 81), port("tcp", "192.0.2.1", 80, a4, 82),
			port("tcp", "", 80, a6, 83), port("tcp", "2001:db8::1", 80, a6, 84),
		}}, ""},
		{"service", Ruleset{Services: []Service{webSvc, dnsSvc, idleSvc}}, ""},
		{"service protocol", Ruleset{Services: []Service{{Name: "x", VIP: vip, Protocol: "sctp", Port: 80}}},
			`service "x" (sctp 10.96.0.1:80): protocol "sctp": want tcp or udp`},
		{"service port 0", Ruleset{Services: []Service{{Name: "x", VIP: vip, Protocol: "udp"}}}, "udp 10.96.0.1:0): port 0"},
		{"service VIP", Ruleset{Services: []Service{{Name: "x", VIP: netip.IPv4Unspecified(), Protocol: "tcp", Port: 80}}}, "VIP 0.0.0.0: invalid address"},
		{"service mapped VIP", Ruleset{Services: []Service{{Name: "x", VIP: netip.MustParseAddr("::ffff:10.0.0.1"), Protocol: "tcp", Port: 80}}}, "invalid address"},
		{"backend family", Ruleset{Services: []Service{{Name: "x", VIP: vip, Protocol: "tcp", Port: 80, Backends: addrPorts("[fd00::1]:80")}}},
			"backend [fd00::1]:80: invalid address or not of the VIP's family"},
		{"backend port 0", Ruleset{Services: []Service{{Name: "x", VIP: vip, Protocol: "tcp", Port: 80, Backends: addrPorts("10.0.0.1:0")}}},
			"backend 10.0.0.1:0: port 0"},
		{"backends twice", Ruleset{Services: []Service{{Name: "x", VIP: vip, Protocol: "tcp", Port: 80, Backends: addrPorts("10.0.0.1:80", "10.0.0.1:80")}}}, ""},
		{"too many backends", Ruleset{Services: []Service{{Name: "x", VIP: vip, Protocol: "tcp", Port: 80, Backends: make([]netip.AddrPort, MaxBackends+1)}}},
			"4097 backends, at most 4096"},
		{"service twice", Ruleset{Services: []Service{webSvc, {Name: webSvc.Name, VIP: webSvc.VIP, Protocol: "tcp", Port: 80,
			Backends: []netip.AddrPort{webSvc.Backends[2], webSvc.Backends[0], webSvc.Backends[1]}, NodePort: webSvc.NodePort}}}, ""},
		{"service twice, other backends", Ruleset{Services: []Service{webSvc, {Name: webSvc.Name, VIP: webSvc.VIP, Protocol: "tcp", Port: 80, NodePort: webSvc.NodePort}}},
			`service "default/web" (tcp 10.96.0.10:80): listed twice with different backends or affinity`},
		{"VIP and port of another service", Ruleset{Services: []Service{webSvc, {Name: "y", VIP: webSvc.VIP, Protocol: "tcp", Port: 80}}},
			`service "y" (tcp 10.96.0.10:80): VIP and port already used by service "default/web"`},
		{"same VIP, other port or protocol", Ruleset{Services: []Service{webSvc, idleSvc, {Name: "u", VIP: webSvc.VIP, Protocol: "udp", Port: 80}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// reg names registers the way the kernel dumps them.
func TestReg(t *testing.T) {
	for bytes, want := range map[uint32]uint32{0: 1, 4: 9, 8: 10, 12: 11, 16: 2, 20: 13, 32: 3, 48: 4} {
		if got := reg(bytes); got != want {
			t.Errorf("reg(%d) = %d, want %d", bytes, got, want)
		}
	}
}

// A delta holds only the sets of its elements, in the table of each endpoint.
func TestDeltaBuild(t *testing.T) {
	d := Delta{Endpoints: []Endpoint{blueEP}, Ports: []PortMapping{dnsPort}}.build()
	var got []string
	for _, td := range d.tables {
		for _, s := range td.sets {
			for _, e := range s.elems {
				got = append(got, td.name()+" "+s.name+" "+e.text)
			}
		}
	}
	want := []string{
		"inet podnet bridge_pods4 \"pn-blue\" . 10.88.1.2",
		"inet podnet bridge_pods6 \"pn-blue\" . fd00:88:1::2",
		"inet podnet hostports6 fd00:ff::1 . udp . 5353 : fd00:88:4::2 . 53",
		`bridge podnet endpoint_addrs4 "pnv-blue-1" . 10.88.1.2`,
		`bridge podnet endpoint_addrs6 "pnv-blue-1" . fd00:88:1::2`,
		`bridge podnet endpoint_targets6 "pnv-blue-1" . 0xfd000088000100000000000000000002`,
		`bridge podnet endpoints "pnv-blue-1"`,
		`bridge podnet endpoint_macs "pnv-blue-1" . 0a:58:0a:58:01:02`,
		`bridge podnet endpoint_src4 "pnv-blue-1" . 0a:58:0a:58:01:02 . 10.88.1.2`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("delta elements:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !(Delta{}).build().empty() {
		t.Error("empty delta builds elements")
	}
}

func TestRangeElems(t *testing.T) {
	for _, tc := range []struct {
		name string
		nets []Network
		want []string // element texts with comments
	}{
		{"nested", []Network{
			{Name: "a", Bridge: "a", Subnets: pfx("10.0.0.0/16"), Masquerade: true},
			{Name: "b", Bridge: "b", Subnets: pfx("10.0.1.0/24"), Masquerade: true},
		}, []string{"10.0.0.0/16 a"}}, // b overlaps a: Validate rejects it, build leaves it out
		// Ranges of two networks stay apart, so that Update can add and remove each
		// network's elements alone.
		{"adjacent networks", []Network{
			{Name: "a", Bridge: "a", Subnets: pfx("10.0.0.0/25"), Masquerade: true},
			{Name: "b", Bridge: "b", Subnets: pfx("10.0.0.128/25"), Masquerade: true},
		}, []string{"10.0.0.0/25 a", "10.0.0.128/25 b"}},
		{"adjacent subnets of one network", []Network{
			{Name: "a", Bridge: "a", Subnets: pfx("10.0.0.128/25", "10.0.0.0/25"), Masquerade: true},
		}, []string{"10.0.0.0/24 a"}},
		{"not a prefix", []Network{
			{Name: "a", Bridge: "a", Subnets: pfx("10.0.0.0/24", "10.0.1.0/25"), Masquerade: true},
		}, []string{"10.0.0.0-10.0.1.127 a"}},
		{"disjoint, unmasked input", []Network{
			{Name: "a", Bridge: "a", Subnets: pfx("10.0.2.7/24"), Masquerade: true},
			{Name: "b", Bridge: "b", Subnets: pfx("10.0.0.0/24"), Masquerade: true},
		}, []string{"10.0.0.0/24 b", "10.0.2.0/24 a"}},
		{"everything", []Network{
			{Name: "a", Bridge: "a", Subnets: pfx("0.0.0.0/0", "::/0"), Masquerade: true},
			{Name: "b", Bridge: "b", Subnets: pfx("255.255.255.0/24"), Masquerade: true},
		}, []string{"0.0.0.0/0 a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			def := build(Ruleset{Networks: tc.nets})
			var got []string
			for _, e := range def.tables[0].set(setMasq4).elems {
				got = append(got, e.text+" "+e.comment)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("masq4 = %q, want %q", got, tc.want)
			}
		})
	}
}

// An interval set's elements, read back from the kernel in any order, give back the
// desired ranges.
func TestRangesRoundTrip(t *testing.T) {
	def := build(Ruleset{Networks: []Network{
		{Name: "a", Bridge: "a", Subnets: pfx("10.0.0.0/24", "10.0.2.0/24", "10.0.4.0/23", "::/0"), Masquerade: true},
		{Name: "b", Bridge: "b", Subnets: pfx("255.0.0.0/8", "10.0.1.0/24"), Masquerade: true},
	}})
	for _, name := range []string{setPods4, setPods6, setMasq4, setMasq6} {
		set := *def.tables[0].set(name)
		var els []nftables.SetElement
		for _, e := range set.elems {
			els = append(els, setElements(set.kernelElems(e))...)
		}
		// Reverse, as the kernel's rbtree dumps them.
		for i, j := 0, len(els)-1; i < j; i, j = i+1, j-1 {
			els[i], els[j] = els[j], els[i]
		}
		if d := compareElems(els, set); d != "" {
			t.Errorf("set %s: %s", set.name, d)
		}
		if d := compareElems(els[1:], set); d == "" {
			t.Errorf("set %s: a missing element is not noticed", set.name)
		}
	}
}

func TestChunks(t *testing.T) {
	var nets []Network
	for i := range 300 {
		nets = append(nets, Network{
			Name:       strings.Repeat("n", 40) + string(rune('a'+i%26)),
			Bridge:     "br" + strconv.Itoa(i),
			Subnets:    pfx(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 25).String()),
			Masquerade: true,
		})
	}
	r := bigRuleset(0, 3000, 3000)
	r.Networks = nets
	def := build(r)
	for _, td := range def.tables {
		for _, s := range td.sets {
			total := 0
			for _, c := range s.chunks(s.elems) {
				if len(c) > maxElemsPerMsg {
					t.Errorf("set %s: chunk of %d elements", s.name, len(c))
				}
				if c[0].IntervalEnd {
					t.Errorf("set %s: chunk starts with an interval end", s.name)
				}
				size := 0
				for _, e := range c {
					size += 16 + len(e.Key) + len(e.KeyEnd) + len(e.Data) + len(e.Comment)
					if e.Verdict != nil {
						size += len(e.Verdict.Chain)
					}
				}
				if size > 60<<10 {
					t.Errorf("set %s: chunk of about %d bytes", s.name, size)
				}
				total += len(c)
			}
			want := 0
			for _, e := range s.elems {
				want += len(s.kernelElems(e))
			}
			if total != want {
				t.Errorf("set %s: %d elements in chunks, want %d", s.name, total, want)
			}
		}
	}
}

// The draws of a pick chain give every backend a share of 1/N, off by at most
// 2^-pickAttempts (relative), for every backend count.
func TestDrawShares(t *testing.T) {
	bound := math.Ldexp(1, -pickAttempts)
	for n := 1; n <= MaxBackends; n++ {
		s := slots(n)
		if s < uint32(n) || (n > 1 && s >= 2*uint32(n)) || !slices.Contains(slotCounts(), s) {
			t.Fatalf("slots(%d) = %d", n, s)
		}
		share := make([]float64, n) // of each index, from the successive draws
		left := 1.0                 // probability that no draw hit a backend yet
		for _, mod := range drawModuli(s) {
			for i := range min(int(mod), n) {
				share[i] += left / float64(mod)
			}
			left *= 1 - float64(min(int(mod), n))/float64(mod)
		}
		if left > 1e-12 {
			t.Fatalf("%d backends: the draws miss with probability %g", n, left)
		}
		for i, p := range share {
			if d := math.Abs(p*float64(n) - 1); d > bound+1e-12 {
				t.Fatalf("%d backends: index %d gets %g, off by %.4f (bound %.4f)", n, i, p, d, bound)
			}
		}
	}
}

// setElements is els as google/nftables reads them back from the kernel.
func setElements(els []nftwire.Elem) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(els))
	for _, e := range els {
		out = append(out, nftables.SetElement{Key: e.Key, KeyEnd: e.KeyEnd, Val: e.Data, IntervalEnd: e.IntervalEnd,
			Comment: e.Comment, VerdictData: e.Verdict})
	}
	return out
}
