package nft

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/nftwire"
)

// The kernel holds what the golden files say: each golden ruleset synced, every chain's
// rules read back from the kernel and printed equal the rule lines of its golden file.
// The golden text is printed from the desired expressions; this proves that the kernel
// took them as they are, in every chain and in order.
func TestPrivilegedReadBackGolden(t *testing.T) {
	tb, ns := openTable(t)
	for _, tc := range []struct {
		name   string
		r      Ruleset
		golden string
	}{
		{"empty", Ruleset{}, "empty"},
		{"one", Ruleset{Networks: []Network{blue}}, "one"},
		{"three", Ruleset{Networks: []Network{red, green, blue}}, "three"},
		{"example", example, "example"},
		// The rules do not depend on the ruleset: the fuller one has the example's.
		{"full", full(), "example"},
		{"policy", policyExample, "policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustSync(t, tb, tc.r)
			text, err := os.ReadFile(filepath.Join("testdata", tc.golden+".golden"))
			if err != nil {
				t.Fatal(err)
			}
			compareChainRules(t, "golden "+tc.golden, chainRules(string(text)), kernelRules(t, ns, tc.r))
		})
	}
}

// compareChainRules compares rules by table and chain (the one of what) with the
// kernel's.
func compareChainRules(t *testing.T, what string, want, got map[string][]string) {
	t.Helper()
	if g, w := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)); !slices.Equal(g, w) {
		t.Fatalf("chains in the kernel:\n\t%s\nin %s:\n\t%s", strings.Join(g, "\n\t"), what, strings.Join(w, "\n\t"))
	}
	for chain, w := range want {
		if g := got[chain]; !slices.Equal(g, w) {
			t.Errorf("%s: rules read back from the kernel:\n\t%s\nin %s:\n\t%s",
				chain, strings.Join(g, "\n\t"), what, strings.Join(w, "\n\t"))
		}
	}
}

// chainRules returns the rule lines of every chain of podnet's tables in text (a golden
// file or nft's listing), by "table family podnet chain name".
func chainRules(text string) map[string][]string {
	out := map[string][]string{}
	var table, chain string
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(l, "table "):
			table = strings.TrimSuffix(strings.TrimPrefix(l, "table "), " {")
		case strings.HasPrefix(l, "\tchain "):
			chain = table + " chain " + strings.TrimSuffix(strings.TrimPrefix(l, "\tchain "), " {")
			out[chain] = []string{}
		case l == "\t}":
			chain = ""
		case chain != "" && strings.HasPrefix(l, "\t\t"):
			if strings.HasPrefix(l, "\t\ttype ") && strings.Contains(l, " hook ") {
				continue // a base chain's type, hook, priority and policy
			}
			out[chain] = append(out[chain], strings.TrimPrefix(l, "\t\t"))
		}
	}
	return out
}

// kernelRules reads the rules of every chain of podnet's tables in ns and prints them,
// with the sets of r's tables.
func kernelRules(t *testing.T, ns netns.NsHandle, r Ruleset) map[string][]string {
	t.Helper()
	c := otherConn(t, ns)
	nl, err := nftwire.Dial(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	out := map[string][]string{}
	for _, td := range build(r).tables {
		chains, err := c.ListChainsOfTableFamily(td.family)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chains {
			if ch.Table == nil || ch.Table.Name != TableName {
				continue
			}
			rules, err := nftwire.DumpRules(nl, td.family, TableName, ch.Name)
			if err != nil {
				t.Fatalf("%s chain %s: %v", td.name(), ch.Name, err)
			}
			lines := []string{}
			for _, r := range rules {
				exprs, err := r.Expressions()
				if err != nil {
					t.Fatalf("%s chain %s: %v", td.name(), ch.Name, err)
				}
				lines = append(lines, td.printRule(exprs))
			}
			out[td.name()+" chain "+ch.Name] = lines
		}
	}
	return out
}
