package doctor

import (
	"net/netip"
	"slices"
)

// The route lookup of the rules: a model of the kernel's FIB lookup over the snapshot,
// good enough to tell which route wins for an address. Rules are walked in priority
// order; a rule matches on its from/to prefixes only: a rule with an iif, oif, fwmark
// or another selector is taken not to match (the doctor asks for traffic of no
// particular interface or mark). In a table the longest prefix wins, then the lowest
// metric; a throw route, or a result a rule's suppress_prefixlength hides, goes on to
// the next rule.

// defaultRules are the kernel's rules of a new namespace, used when a snapshot has none
// of a family (a hand-written one).
var defaultRules = []Rule{
	{Priority: 0, Action: "lookup", Table: tableLocal, SuppressPrefixlen: -1},
	{Priority: 32766, Action: "lookup", Table: tableMain, SuppressPrefixlen: -1},
	{Priority: 32767, Action: "lookup", Table: tableDefault, SuppressPrefixlen: -1},
}

// fib indexes a snapshot's routes and rules for lookups.
type fib struct {
	tables map[int][]Route
	rules  map[int][]Rule // family (4, 6) -> rules by priority
}

func newFIB(s *Snapshot) *fib {
	f := &fib{tables: map[int][]Route{}, rules: map[int][]Rule{}}
	for _, r := range s.Routes {
		t := r.Table
		if t == 0 {
			t = tableMain
		}
		f.tables[t] = append(f.tables[t], r)
	}
	for _, r := range s.Rules {
		f.rules[r.Family] = append(f.rules[r.Family], r)
	}
	for _, fam := range []int{4, 6} {
		if len(f.rules[fam]) == 0 {
			f.rules[fam] = defaultRules
		}
		slices.SortStableFunc(f.rules[fam], func(a, b Rule) int { return a.Priority - b.Priority })
	}
	return f
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// lookup returns the route the kernel picks for a packet to dst, from src when src is
// valid (a rule "from PREFIX" matches only then). ok is false when no route matches
// (the kernel answers "network unreachable"). A rule with action blackhole,
// unreachable or prohibit is returned as a route of that type to dst with table -1.
func (f *fib) lookup(dst, src netip.Addr) (Route, bool) {
	return f.lookupWhere(dst, src, func(Route) bool { return true })
}

// lookupWhere is lookup among the routes keep accepts.
func (f *fib) lookupWhere(dst, src netip.Addr, keep func(Route) bool) (Route, bool) {
	for _, rule := range f.rules[family(dst)] {
		match := rule.Iif == "" && rule.Oif == "" && rule.Mark == 0 && !rule.Other &&
			(!rule.Src.IsValid() || rule.Src.Bits() == 0 || (src.IsValid() && rule.Src.Contains(src))) &&
			(!rule.Dst.IsValid() || rule.Dst.Contains(dst))
		if rule.Invert {
			match = !match
		}
		if !match {
			continue
		}
		switch rule.Action {
		case "blackhole", "unreachable", "prohibit":
			return Route{Table: -1, Type: rule.Action, Dst: netip.PrefixFrom(dst, dst.BitLen())}, true
		case "lookup", "":
		default: // goto, nop
			continue
		}
		best, ok := f.best(rule.Table, dst, keep)
		if !ok || best.Type == "throw" {
			continue
		}
		if rule.SuppressPrefixlen >= 0 && best.Dst.Bits() <= rule.SuppressPrefixlen {
			continue
		}
		return best, true
	}
	return Route{}, false
}

// best returns the longest-prefix, then lowest-metric route of table to dst.
func (f *fib) best(table int, dst netip.Addr, keep func(Route) bool) (Route, bool) {
	var best Route
	found := false
	for _, r := range f.tables[table] {
		if !r.Dst.Contains(dst) || !keep(r) {
			continue
		}
		if !found || r.Dst.Bits() > best.Dst.Bits() || (r.Dst.Bits() == best.Dst.Bits() && r.Metric < best.Metric) {
			best, found = r, true
		}
	}
	return best, found
}
