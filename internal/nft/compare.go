package nft

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nftwire"
)

// compare reads podnet's table of def's family through c (and nl, for the rules) and
// returns "" when it equals def, else a description of the first difference.
func compare(c *nftables.Conn, nl *netlink.Conn, def tableDef) (string, error) {
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

	if d, err := compareChains(c, nl, tbl, def); d != "" || err != nil {
		return d, err
	}
	return compareSets(c, tbl, def.sets)
}

func compareChains(c *nftables.Conn, nl *netlink.Conn, tbl *nftables.Table, def tableDef) (string, error) {
	want := def.chains
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
		case !w.base() && (ch.Hooknum != nil || ch.Type != ""):
			return fmt.Sprintf("chain %s: a base chain, want a regular one", w.name), nil
		case w.base() && (ch.Type != w.typ || ch.Hooknum == nil || *ch.Hooknum != w.hook ||
			ch.Priority == nil || *ch.Priority != w.priority ||
			ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept):
			return fmt.Sprintf("chain %s: type, hook, priority or policy differs", w.name), nil
		}
		rules, err := nftwire.DumpRules(nl, tbl.Family, TableName, w.name)
		if err != nil {
			return "", fmt.Errorf("list rules of chain %s: %w", w.name, err)
		}
		if len(rules) != len(w.rules) {
			return fmt.Sprintf("chain %s: %d rules, want %d", w.name, len(rules), len(w.rules)), nil
		}
		for i, rule := range rules {
			r, err := rule.Expressions()
			if err != nil {
				return "", fmt.Errorf("list rules of chain %s: rule %d: %w", w.name, i, err)
			}
			if !sameExprs(r, w.rules[i].exprs) {
				return fmt.Sprintf("chain %s: rule %d differs: %s", w.name, i, ruleDiff(def, r, w.rules[i].exprs)), nil
			}
		}
	}
	return "", nil
}

// ruleDiff describes how the rule got differs from want: both printed, or, when they
// print the same (the expressions differ in what nft does not print, such as
// registers), the expressions.
func ruleDiff(def tableDef, got, want []expr.Any) string {
	g, w := def.printRule(got), def.printRule(want)
	if g != w {
		return fmt.Sprintf("%q, want %q", g, w)
	}
	return fmt.Sprintf("%q, in expressions %s, want %s", g, exprsText(got), exprsText(want))
}

// exprsText prints expressions as Go values, for a difference that nft syntax hides.
func exprsText(es []expr.Any) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = fmt.Sprintf("%+v", e)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// sameExprs compares expressions read from the kernel with desired ones. Set IDs only
// exist within a batch and counters count traffic: both are ignored.
func sameExprs(got, want []expr.Any) bool {
	return reflect.DeepEqual(normalExprs(got), normalExprs(want))
}

// normalExprs returns es without set IDs and with counters at zero.
func normalExprs(es []expr.Any) []expr.Any {
	out := slices.Clone(es)
	for i, e := range out {
		switch e := e.(type) {
		case *expr.Counter:
			out[i] = &expr.Counter{}
		case *expr.Lookup:
			c := *e
			c.SetID = 0
			out[i] = &c
		case *expr.Dynset:
			c := *e
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
		case !sameTypes(s, w) || s.Interval != w.interval || s.Concatenation != w.concat() || s.IsMap != w.isMap() ||
			s.Dynamic != w.dynamic || s.HasTimeout != (w.timeout != 0) || s.Timeout != w.timeout || s.Size != w.size ||
			s.Anonymous || s.Constant:
			return fmt.Sprintf("set %s: type or flags differ", w.name), nil
		}
		if w.dynamic {
			continue // the packet path adds the elements
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

// sameTypes reports whether the key and data types of s are those of w. google/nftables
// v0.3.0 reads the data type of a verdict map into KeyType (setsFromMsg): for a verdict
// map only that can be checked.
func sameTypes(s *nftables.Set, w setDef) bool {
	same := func(a, b nftables.SetDatatype) bool { return a.GetNFTMagic() == b.GetNFTMagic() && a.Bytes == b.Bytes }
	switch {
	case w.isVerdictMap():
		return s.KeyType.GetNFTMagic() == nftables.TypeVerdict.GetNFTMagic()
	case w.isMap():
		return same(s.KeyType, w.keyType) && same(s.DataType, w.dataType)
	}
	return same(s.KeyType, w.keyType)
}

// compareElems compares the kernel's elements of one set or map with the desired ones.
func compareElems(got []nftables.SetElement, want setDef) string {
	var have []elemDef
	if want.interval && !want.concat() {
		have = ranges(got)
	} else {
		for _, e := range got {
			h := elemDef{key: e.Key, keyEnd: e.KeyEnd, data: e.Val, comment: e.Comment}
			if want.isVerdictMap() {
				h.data, h.jump = nil, gotoChain(e.Val)
			}
			have = append(have, h)
		}
	}
	cmpElem := func(a, b elemDef) int {
		return cmp.Or(bytes.Compare(a.key, b.key), bytes.Compare(a.keyEnd, b.keyEnd))
	}
	slices.SortFunc(have, cmpElem)
	wantElems := slices.SortedFunc(slices.Values(want.elems), cmpElem)
	if len(have) != len(wantElems) {
		return fmt.Sprintf("%d elements, want %d", len(have), len(wantElems))
	}
	for i, w := range wantElems {
		h := have[i]
		if !bytes.Equal(h.key, w.key) || !bytes.Equal(h.keyEnd, w.keyEnd) || !bytes.Equal(h.data, w.data) ||
			h.jump != w.jump || h.comment != w.comment {
			return fmt.Sprintf("element %s differs", w.text)
		}
	}
	return ""
}

// gotoChain returns the chain of a "goto chain" verdict, as google/nftables v0.3.0 reads
// the data of a verdict map's element (the attributes of NFTA_DATA_VERDICT), or "" for
// another verdict.
func gotoChain(data []byte) string {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return ""
	}
	ad.ByteOrder = binary.BigEndian
	var (
		code  int32
		chain string
	)
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if ad.Err() != nil || code != unix.NFT_GOTO {
		return ""
	}
	return chain
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
