package nft

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
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
)

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Ruleset
	}{
		{"empty", Ruleset{}},
		{"one", Ruleset{Networks: []Network{blue}}},
		{"three", Ruleset{Networks: []Network{red, green, blue}}},
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

// The order of networks and subnets does not change the table.
func TestRenderOrderIndependent(t *testing.T) {
	a := Render(Ruleset{Networks: []Network{blue, red, green}})
	g := green
	g.Subnets = pfx("fd00:88:3::/64", "10.88.3.0/25")
	b := Render(Ruleset{Networks: []Network{g, blue, red}})
	if a != b {
		t.Errorf("order changes Render:\n%s\n%s", a, b)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		nets []Network
		want string // substring of the error, "" for none
	}{
		{"ok", []Network{blue, red, green}, ""},
		{"empty bridge", []Network{{Name: "x"}}, `network "x": bridge "": empty interface name`},
		{"long bridge", []Network{{Name: "x", Bridge: "0123456789abcdef"}}, "longer than 15"},
		{"slash", []Network{{Name: "x", Bridge: "a/b"}}, "contains"},
		{"space", []Network{{Name: "x", Bridge: "a b"}}, "contains"},
		{"dot", []Network{{Name: "x", Bridge: ".."}}, "invalid interface name"},
		{"dup bridge", []Network{blue, {Name: "x", Bridge: "pn-blue"}}, `already used by network "blue"`},
		{"bad subnet", []Network{{Name: "x", Bridge: "b", Subnets: []netip.Prefix{{}}}}, "invalid prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Ruleset{Networks: tc.nets}.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
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
		}, []string{"10.0.0.0/16 a,b"}},
		{"adjacent", []Network{
			{Name: "a", Bridge: "a", Subnets: pfx("10.0.0.0/25"), Masquerade: true},
			{Name: "b", Bridge: "b", Subnets: pfx("10.0.0.128/25"), Masquerade: true},
		}, []string{"10.0.0.0/24 a,b"}},
		{"not a prefix", []Network{
			{Name: "a", Bridge: "a", Subnets: pfx("10.0.0.0/24"), Masquerade: true},
			{Name: "b", Bridge: "b", Subnets: pfx("10.0.1.0/25"), Masquerade: true},
		}, []string{"10.0.0.0-10.0.1.127 a,b"}},
		{"disjoint, unmasked input", []Network{
			{Name: "a", Bridge: "a", Subnets: pfx("10.0.2.7/24"), Masquerade: true},
			{Name: "b", Bridge: "b", Subnets: pfx("10.0.0.0/24"), Masquerade: true},
		}, []string{"10.0.0.0/24 b", "10.0.2.0/24 a"}},
		{"everything", []Network{
			{Name: "a", Bridge: "a", Subnets: pfx("0.0.0.0/0", "::/0"), Masquerade: true},
			{Name: "b", Bridge: "b", Subnets: pfx("255.255.255.0/24"), Masquerade: true},
		}, []string{"0.0.0.0/0 a,b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			def := build(Ruleset{Networks: tc.nets})
			var got []string
			for _, e := range def.sets[2].elems {
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
	for _, set := range def.sets[2:] {
		var els []nftables.SetElement
		for _, e := range set.elems {
			els = append(els, e.kernelElems()...)
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
	for i := range 2500 {
		nets = append(nets, Network{
			Name:       strings.Repeat("n", 40) + string(rune('a'+i%26)),
			Bridge:     "br" + strconv.Itoa(i),
			Subnets:    pfx(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 25).String()),
			Masquerade: true,
		})
	}
	def := build(Ruleset{Networks: nets})
	for _, s := range def.sets {
		total := 0
		for _, c := range s.chunks() {
			if len(c) > maxElemsPerMsg {
				t.Errorf("set %s: chunk of %d elements", s.name, len(c))
			}
			if c[0].IntervalEnd {
				t.Errorf("set %s: chunk starts with an interval end", s.name)
			}
			size := 0
			for _, e := range c {
				size += 16 + len(e.Key) + len(e.Comment)
			}
			if size > 60<<10 {
				t.Errorf("set %s: chunk of about %d bytes", s.name, size)
			}
			total += len(c)
		}
		want := 0
		for _, e := range s.elems {
			want += len(e.kernelElems())
		}
		if total != want {
			t.Errorf("set %s: %d elements in chunks, want %d", s.name, total, want)
		}
	}
}
