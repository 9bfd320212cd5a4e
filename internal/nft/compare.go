package nft

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// compare reads podnet's table of def's family through c and returns "" when it equals
// def, else a description of the first difference.
func compare(c *nftables.Conn, def tableDef) (string, error) {
	tbl, err := c.ListTableOfFamily(TableName, def.family)
	if errors.Is(err, unix.ENOENT) {
		return "table missing", nil
	}
	if err != nil {
		return "", fmt.Errorf("list table: %w", err)
	}
	if tbl.Flags != 0 {
		return fmt.Sprintf("table flags %#x", tbl.Flags), nil
	}

	if d, err := compareChains(c, tbl, def.chains); d != "" || err != nil {
		return d, err
	}
	return compareSets(c, tbl, def.sets)
}

func compareChains(c *nftables.Conn, tbl *nftables.Table, want []chainDef) (string, error) {
	all, err := c.ListChainsOfTableFamily(tbl.Family)
	if err != nil {
		return "", fmt.Errorf("list chains: %w", err)
	}
	got := make(map[string]*nftables.Chain)
	for _, ch := range all {
		if ch.Table != nil && ch.Table.Name == TableName {
			got[ch.Name] = ch
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("%d chains, want %d", len(got), len(want)), nil
	}
	for _, w := range want {
		ch, ok := got[w.name]
		switch {
		case !ok:
			return fmt.Sprintf("chain %s missing", w.name), nil
		case ch.Type != w.typ || ch.Hooknum == nil || *ch.Hooknum != w.hook ||
			ch.Priority == nil || *ch.Priority != w.priority ||
			ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept:
			return fmt.Sprintf("chain %s: type, hook, priority or policy differs", w.name), nil
		}
		rules, err := c.GetRules(tbl, ch)
		if err != nil {
			return "", fmt.Errorf("list rules of chain %s: %w", w.name, err)
		}
		if len(rules) != len(w.rules) {
			return fmt.Sprintf("chain %s: %d rules, want %d", w.name, len(rules), len(w.rules)), nil
		}
		for i, r := range rules {
			if !sameExprs(r.Exprs, w.rules[i].exprs) {
				return fmt.Sprintf("chain %s: rule %d differs from %q", w.name, i, w.rules[i].text), nil
			}
		}
	}
	return "", nil
}

// sameExprs compares expressions read from the kernel with desired ones. Set IDs only
// exist within a batch and are ignored.
func sameExprs(got, want []expr.Any) bool {
	return reflect.DeepEqual(withoutSetIDs(got), withoutSetIDs(want))
}

func withoutSetIDs(es []expr.Any) []expr.Any {
	out := slices.Clone(es)
	for i, e := range out {
		if l, ok := e.(*expr.Lookup); ok {
			c := *l
			c.SetID = 0
			out[i] = &c
		}
	}
	return out
}

func compareSets(c *nftables.Conn, tbl *nftables.Table, want []setDef) (string, error) {
	sets, err := c.GetSets(tbl)
	if err != nil {
		return "", fmt.Errorf("list sets: %w", err)
	}
	got := make(map[string]*nftables.Set, len(sets))
	for _, s := range sets {
		got[s.Name] = s
	}
	if len(got) != len(want) {
		return fmt.Sprintf("%d sets, want %d", len(got), len(want)), nil
	}
	for _, w := range want {
		s, ok := got[w.name]
		switch {
		case !ok:
			return fmt.Sprintf("set %s missing", w.name), nil
		case s.KeyType.GetNFTMagic() != w.keyType.GetNFTMagic() || s.KeyType.Bytes != w.keyType.Bytes ||
			s.Interval != w.interval || s.Concatenation != w.concat() || s.IsMap != w.isMap() ||
			(w.isMap() && (s.DataType.GetNFTMagic() != w.dataType.GetNFTMagic() || s.DataType.Bytes != w.dataType.Bytes)) ||
			s.Anonymous || s.Constant || s.HasTimeout:
			return fmt.Sprintf("set %s: type or flags differ", w.name), nil
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return "", fmt.Errorf("list elements of set %s: %w", w.name, err)
		}
		if d := compareElems(elems, w); d != "" {
			return fmt.Sprintf("set %s: %s", w.name, d), nil
		}
	}
	return "", nil
}

// compareElems compares the kernel's elements of one set or map with the desired ones.
func compareElems(got []nftables.SetElement, want setDef) string {
	var have []elemDef
	if want.interval && !want.concat() {
		have = ranges(got)
	} else {
		for _, e := range got {
			have = append(have, elemDef{key: e.Key, keyEnd: e.KeyEnd, data: e.Val, comment: e.Comment})
		}
	}
	cmpElem := func(a, b elemDef) int {
		return cmp.Or(bytes.Compare(a.key, b.key), bytes.Compare(a.keyEnd, b.keyEnd))
	}
	slices.SortFunc(have, cmpElem)
	if len(have) != len(want.elems) {
		return fmt.Sprintf("%d elements, want %d", len(have), len(want.elems))
	}
	for i, w := range want.elems {
		h := have[i]
		if !bytes.Equal(h.key, w.key) || !bytes.Equal(h.keyEnd, w.keyEnd) || !bytes.Equal(h.data, w.data) || h.comment != w.comment {
			return fmt.Sprintf("element %s differs", w.text)
		}
	}
	return ""
}

// ranges turns the elements of an interval set (in any order) back into ranges: a start
// element, then the interval end element that follows it in key order if any.
func ranges(els []nftables.SetElement) []elemDef {
	els = slices.Clone(els)
	slices.SortStableFunc(els, func(a, b nftables.SetElement) int {
		// At equal keys, the end of one range comes before the start of the next.
		return cmp.Or(bytes.Compare(a.Key, b.Key), cmpBool(!a.IntervalEnd, !b.IntervalEnd))
	})
	var out []elemDef
	for i := 0; i < len(els); i++ {
		e := els[i]
		if e.IntervalEnd {
			// An end without a start: report it as an element of its own, never equal
			// to a desired one.
			out = append(out, elemDef{keyEnd: e.Key})
			continue
		}
		r := elemDef{key: e.Key, comment: e.Comment}
		if i+1 < len(els) && els[i+1].IntervalEnd {
			r.keyEnd = els[i+1].Key
			i++
		}
		out = append(out, r)
	}
	return out
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}
