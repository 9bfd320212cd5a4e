package nft

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nftwire"
)

// policyChangesLocked returns the element changes of the policies' own sets that make
// them go from remove's policies to add's (see Delta): gone are elements of plain sets
// (selected addresses), which the batch adds then deletes, so that an absent one is no
// error; del are range elements that the kernel holds, which it deletes; put are the
// elements to add, with the addresses that add's policies newly select in the isolation
// sets of their types. It first checks that the tables have the sets of each policy, as
// its layout says, and fails with ErrNoTable when they do not. It reads the kernel a few
// requests per policy, and per range element to delete (whether it is there, so that
// calling Update twice is harmless), never whole sets.
func (t *Table) policyChangesLocked(add, remove []Policy) (gone, del, put rulesetDef, err error) {
	if len(add) == 0 && len(remove) == 0 {
		return rulesetDef{}, rulesetDef{}, rulesetDef{}, nil
	}
	olds, news := map[string]Policy{}, map[string]Policy{}
	var ids []string
	for _, p := range normPolicies(remove) {
		olds[p.ID] = p
		ids = append(ids, p.ID)
	}
	for _, p := range normPolicies(add) {
		news[p.ID] = p
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)

	r, err := t.elemReaderLocked()
	if err != nil {
		return rulesetDef{}, rulesetDef{}, rulesetDef{}, err
	}
	defer r.close()
	var goneSets, delSets, putSets []setDef
	for _, id := range ids {
		o, hasOld := olds[id]
		n, hasNew := news[id]
		switch {
		case hasOld && hasNew && !o.SameLayout(n):
			return rulesetDef{}, rulesetDef{}, rulesetDef{}, fmt.Errorf("%w: policy %q: another layout in add than in remove (call Sync)", ErrNoTable, n.label())
		case !hasOld:
			o = n.emptied()
		case !hasNew:
			n = o.emptied()
		}
		if err := r.checkLayout(n); err != nil {
			return rulesetDef{}, rulesetDef{}, rulesetDef{}, err
		}
		before, after := changedSets(o, n)
		g, d, p, err := setChanges(before, after, r.existing)
		if err != nil {
			return rulesetDef{}, rulesetDef{}, rulesetDef{}, err
		}
		goneSets, delSets, putSets = append(goneSets, g...), append(delSets, d...), append(putSets, p...)
		// The isolation sets: what n selects that o did not.
		for _, d := range directions {
			if on, _ := d.of(n); !on || slices.Equal(o.Selected, n.Selected) {
				continue
			}
			for _, f := range []ipFamily{ip4, ip6} {
				putSets = append(putSets, isolationSetDefs(d, n.Group, f, elemsNotIn(addrElems(n.Selected, f), addrElems(o.Selected, f)))...)
			}
		}
	}
	inet := func(sets []setDef) rulesetDef {
		return elementsOnly([]tableDef{{family: nftables.TableFamilyINet, sets: sets}})
	}
	return inet(goneSets), inet(delSets), inet(putSets), nil
}

// setChanges returns the element changes that take a policy's sets from before's
// elements to after's (the same sets, in the same order: changedSets): gone are the
// elements of plain sets only before has (to add then delete, so that an absent one is
// no error), del the range elements only before has that the kernel holds (existing
// asks it), put the elements only after has.
func setChanges(before, after []setDef, existing func(s setDef, want []elemDef) ([]elemDef, error)) (gone, del, put []setDef, err error) {
	for i, s := range after {
		lost, added := elemsNotIn(before[i].elems, s.elems), elemsNotIn(s.elems, before[i].elems)
		if s.interval && len(lost) > 0 {
			held, err := existing(s, lost)
			if err != nil {
				return nil, nil, nil, err
			}
			del = append(del, withElems(s, held))
		} else {
			gone = append(gone, withElems(s, lost))
		}
		put = append(put, withElems(s, added))
	}
	return gone, del, put, nil
}

// withElems is s with elems instead of its elements.
func withElems(s setDef, elems []elemDef) setDef {
	s.elems = elems
	return s
}

// isolationSetsOf returns the isolation sets with the addresses of d (valid): the
// elements that a Delta names explicitly, each in the set of the group of the delta's
// policy that selects it.
func isolationSetsOf(d Delta) []setDef {
	var out []setDef
	for _, dir := range directions {
		addrs := d.isolated(dir)
		if len(addrs) == 0 {
			continue
		}
		groupOf := d.groupsOf(dir)
		byGroup := map[string][]netip.Addr{}
		for _, a := range addrs {
			byGroup[groupOf[a]] = append(byGroup[groupOf[a]], a)
		}
		out = append(out, isolationSetsByGroup(dir, byGroup)...)
	}
	return out
}

// groupsOf returns the group of each address that a policy of d with type dir selects.
func (d Delta) groupsOf(dir direction) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, p := range d.Policies {
		if on, _ := dir.of(p); on {
			for _, a := range p.Selected {
				out[a] = p.Group
			}
		}
	}
	return out
}

// isolated returns d's IngressIsolated or EgressIsolated.
func (d Delta) isolated(dir direction) []netip.Addr {
	if dir == ingress {
		return d.IngressIsolated
	}
	return d.EgressIsolated
}

// checkLayout fails with ErrNoTable unless table inet podnet has the sets of p's layout:
// its selected sets, and per type the peers and ports sets of each rule, and no such
// sets for rules it does not have (the rule after its last one, or a type it does not
// have: the tables would have more rules). Only IPv4 sets are asked for: Sync writes
// both families. A layout change that adds or removes no set (a type without rules, a
// last rule with AnyPeer and AnyPort) cannot be seen here: the caller compares layouts
// (Policy.SameLayout, PolicyDelta).
func (r *elemReader) checkLayout(p Policy) error {
	check := func(name string, want bool) error {
		ok, err := r.setExists(name)
		switch {
		case err != nil:
			return err
		case want && !ok:
			return fmt.Errorf("%w: policy %q: set %s missing (a new policy or rule: call Sync)", ErrNoTable, p.label(), name)
		case !want && ok:
			return fmt.Errorf("%w: policy %q: set %s exists (the tables have another layout: call Sync)", ErrNoTable, p.label(), name)
		}
		return nil
	}
	if err := check(selSet(p.ID, ip4.suffix), true); err != nil {
		return err
	}
	for _, d := range directions {
		on, rules := d.of(p)
		if !on {
			rules = nil
		}
		for k := 0; k <= len(rules); k++ {
			var anyPeer, anyPort = true, true
			if k < len(rules) {
				anyPeer, anyPort = rules[k].AnyPeer, rules[k].AnyPort
			}
			if err := check(peersSet(p.ID, d, k, ip4.suffix), !anyPeer); err != nil {
				return err
			}
			if err := check(portsSet(p.ID, d, k, ip4.suffix), !anyPort); err != nil {
				return err
			}
		}
	}
	return nil
}

// existing returns the elements of want, range elements of the interval set s, that the
// kernel holds as they are. The kernel answers a key with the element that contains it
// (its start, in a set with a single-field key, where a range is a start and an end
// element), if any. An element with a concatenated key is held when its start key is
// answered with it, key end included. An element [start, end) with a single-field key is
// held when its last key is answered with its start, and its end key (unless it runs to
// the end of the key space) is not: the range held ends right there.
func (r *elemReader) existing(s setDef, want []elemDef) ([]elemDef, error) {
	if s.concat() {
		keys := make([][]byte, len(want))
		for i, w := range want {
			keys[i] = w.key
		}
		got, err := r.containing(s.name, keys)
		if err != nil {
			return nil, err
		}
		var out []elemDef
		for i, w := range want {
			if bytes.Equal(got[i].Key, w.key) && bytes.Equal(got[i].KeyEnd, w.keyEnd) {
				out = append(out, w)
			}
		}
		return out, nil
	}
	lasts, ends := make([][]byte, len(want)), make([][]byte, 0, len(want))
	for i, w := range want {
		if w.keyEnd == nil {
			lasts[i] = bytes.Repeat([]byte{0xff}, len(w.key))
			continue
		}
		end, _ := netip.AddrFromSlice(w.keyEnd)
		lasts[i] = end.Prev().AsSlice()
		ends = append(ends, w.keyEnd)
	}
	gotLast, err := r.containing(s.name, lasts)
	if err != nil {
		return nil, err
	}
	gotEnd, err := r.containing(s.name, ends)
	if err != nil {
		return nil, err
	}
	var out []elemDef
	j := 0 // index in ends
	for i, w := range want {
		held := bytes.Equal(gotLast[i].Key, w.key)
		if w.keyEnd != nil {
			held = held && !bytes.Equal(gotEnd[j].Key, w.key)
			j++
		}
		if held {
			out = append(out, w)
		}
	}
	return out, nil
}

// containing returns, for each key, the element of the set that contains it as the
// kernel answers it (a zero Elem for none): requests of up to getChunk keys, the kernel
// answering each key in order, up to the first that no element contains.
func (r *elemReader) containing(set string, keys [][]byte) ([]nftwire.Elem, error) {
	out := make([]nftwire.Elem, len(keys))
	for i := 0; i < len(keys); {
		chunk := keys[i:min(i+getChunk, len(keys))]
		replies, found, err := r.request(unix.NFT_MSG_GETSETELEM, keysRequest(set, chunk))
		if err != nil {
			return nil, fmt.Errorf("get elements of set %s: %w", set, err)
		}
		var got []nftwire.Elem
		for _, m := range replies {
			els, err := nftwire.ParseElems(m)
			if err != nil {
				return nil, fmt.Errorf("get elements of set %s: %w", set, err)
			}
			got = append(got, els...)
		}
		if len(got) > len(chunk) || (!found && len(got) == len(chunk)) {
			return nil, fmt.Errorf("get elements of set %s: %d answers for %d keys", set, len(got), len(chunk))
		}
		copy(out[i:], got)
		i += len(got)
		if !found {
			i++ // the key after the answers is in no element
		}
	}
	return out, nil
}

// PolicyDrops returns the sums of the packet counts of the final rules of the groups'
// chains policy-ingress-G and policy-egress-G (see Applier): a dump of the table's
// chains, then one of each group chain's rules, whose number grows with the policies'
// rules, not with the addresses. Without policies (no such chain) it returns zeros.
func (t *Table) PolicyDrops() (ingressDrops, egressDrops uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return 0, 0, ErrClosed
	}
	nl, err := nftwire.Dial(t.fd)
	if err != nil {
		return 0, 0, fmt.Errorf("read policy drops: connect to nftables: %w", err)
	}
	defer nl.Close()
	chains, err := nftwire.DumpChains(nl, nftables.TableFamilyINet, TableName)
	if err != nil {
		return 0, 0, fmt.Errorf("read policy drops: list chains: %w", err)
	}
	var counts [2]uint64
	for _, ch := range chains {
		i := slices.IndexFunc(directions, func(d direction) bool {
			return ch.Name == d.chain || strings.HasPrefix(ch.Name, d.chain+"-")
		})
		if i < 0 {
			continue
		}
		rules, err := nftwire.DumpRules(nl, nftables.TableFamilyINet, TableName, ch.Name)
		if err != nil {
			return 0, 0, fmt.Errorf("read policy drops: list rules of chain %s: %w", ch.Name, err)
		}
		if len(rules) == 0 {
			continue
		}
		exprs, err := rules[len(rules)-1].Expressions()
		if err != nil {
			return 0, 0, fmt.Errorf("read policy drops: chain %s: %w", ch.Name, err)
		}
		if len(exprs) == 0 {
			continue
		}
		c, ok := exprs[0].(*expr.Counter)
		if !ok {
			return 0, 0, fmt.Errorf("read policy drops: chain %s: last rule has no counter (changed behind podnet's back)", ch.Name)
		}
		counts[i] += c.Packets
	}
	return counts[0], counts[1], nil
}
