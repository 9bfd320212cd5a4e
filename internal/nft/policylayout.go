package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nftwire"
)

// Changes of the policies' layout without Sync: a policy added or removed, a rule more or
// less, a type gained or lost, a rule's AnyPeer or AnyPort changed, a group's first
// policy of a type or its last. The rules of the groups' chains (policy-ingress-G,
// policy-egress-G) and the policies' own sets depend on the layouts; the dispatch rules
// (chain policies, and chain input for egress) and the groups' isolation sets and chains
// on the groups of each type. UpdatePolicies deletes the rules and sets of the policies
// that go (or are laid out anew) and what their groups had when no policy of the group
// is left, creates the isolation sets, chains and dispatch rules of the groups that
// come and the sets of the policies that come, inserting their rules where Sync writes
// them (each chain is in policy ID order, the dispatch in group order, egress first),
// and changes the elements of the others as Update does, in one batch; it refuses what
// would create or delete chain policies or chain input (Sync does that).

// UpdatePolicies changes the tables' policies from old to next (see Applier) in one
// netlink batch, which the kernel applies whole or not at all. In this order, the batch:
//
//   - deletes, by handle, the dispatch rules of the groups (of a type) that no policy of
//     next has, their chains with their rules, and their isolation sets; the rules of
//     the policies only in old and of those whose layout changed (Policy.SameLayout)
//     from the chains that stay; then the policies' sets;
//   - for each policy in both with the same layout, deletes the elements only old's
//     policy has: those of plain sets added, then deleted, so that an absent one is no
//     error, and the range elements that the kernel holds, as Update does;
//   - takes out of the isolation sets of their groups the addresses that old isolates
//     and next does not, or in another group (added, then deleted), among those that the
//     policies that come, go or change select (no other address can change);
//   - creates the isolation sets and the chains of the groups that come, and the sets
//     of the policies only in next and of those laid out anew, with their elements (set
//     IDs of the batch, as Sync);
//   - adds the elements only next's policy has, for each policy in both with the same
//     layout, and to the isolation sets the addresses that next isolates and old did not;
//   - inserts the rules of the policies it created, each before the first rule that stays
//     of a policy after it in ID order, or before the final counted drop; in the chain
//     of a group that comes, it appends the chain's rules and its drop. The drops'
//     counters of the chains that stay are never touched;
//   - inserts the dispatch rules of the groups that come, before the first one of a
//     group after it (egress before ingress), else last.
//
// Before the batch it reads, on one socket: that the tables have the sets of the
// policies that go or change as their layouts say (checkLayout, a few requests each) and
// none of the policies new in next (one request each); the rules of the chains of the
// groups that stay whose policies come or go (a dump each, one rule per policy rule and
// family), and the dispatch rules when a group comes or goes, which must belong to old's
// policies (groups) in Sync's order; the range elements it deletes (existing, one
// request per 64). When next lists the policies of old
// the same way, it reads and sends nothing. Neither the reads nor the batch depend on the
// networks, endpoints, port mappings or services of the tables, nor on the elements of
// the policies that do not change, and the batch not on the policies that do not change
// either: it holds the rules and sets of the policies that come, go or are laid out
// anew, with their elements, and the elements that change. A missing table, chain, rule
// or set (ENOENT), or a set to delete that another rule uses (EBUSY: the tables were
// changed behind podnet's back), is reported as ErrNoTable, as are chains that do not
// hold old's rules; a range added where the set holds an overlapping one (EEXIST: the
// tables did not hold old's policy) as ErrConflict. Either way the batch changes
// nothing, and Sync repairs the tables.
//
// Measured on kernel 6.18 with 100 policies (~400 rules in the two chains, ~640 sets):
// checking every policy's sets took ~130 ms of reads (a GETSET each), a dump of all sets
// ~5 ms, the two chains' dumps ~5-10 ms; rewriting the two chains' rules took ~25-35 ms
// of batch, inserting one policy's ~2-10 ms. The kernel seems to validate the whole table
// when a batch adds rules, walking the elements of its verdict maps (the services):
// with 50,000 services a batch took ~36 ms against ~16 ms with 10 (a Sync of 5,000
// endpoints, port mappings and services took ~0.5 s).
func (t *Table) UpdatePolicies(old, next []Policy) error {
	plan, err := planPolicyLayout(old, next)
	if err != nil {
		return fmt.Errorf("update policies of tables %s: %w", TableName, err)
	}
	if plan.unchanged() {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b, err := t.policyLayoutBatchLocked(plan)
	if err != nil {
		return fmt.Errorf("update policies of tables %s: %w", TableName, err)
	}
	if err := t.sendLocked(b); err != nil {
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EBUSY):
			return fmt.Errorf("update policies of tables %s: %w: %w", TableName, ErrNoTable, err)
		case errors.Is(err, unix.EEXIST):
			return fmt.Errorf("update policies of tables %s: %w: %w", TableName, ErrConflict, err)
		}
		return fmt.Errorf("update policies of tables %s: %w", TableName, err)
	}
	return nil
}

// policyLayout is how UpdatePolicies takes the tables' policies from old to next.
type policyLayout struct {
	old, next []Policy // normalized: valid, sorted by ID
	// gone are old's policies whose sets go: those only in old, and those whose layout
	// changed. created are next's policies whose sets are created: those only in next,
	// and those whose layout changed.
	gone, created []Policy
	// kept are the policies in both with the same layout.
	kept []keptPolicy
}

// unchanged reports whether next has the policies of old, listed the same way: then
// the tables stay as they are.
func (pl policyLayout) unchanged() bool {
	if len(pl.gone) > 0 || len(pl.created) > 0 {
		return false
	}
	for _, k := range pl.kept {
		if len(k.after) > 0 {
			return false
		}
	}
	return true
}

// keptPolicy is a policy whose sets stay: its old and next version, and the sets whose
// elements may differ between them (changedSets), with old's and with next's elements.
type keptPolicy struct {
	old, next     Policy
	before, after []setDef
}

// planPolicyLayout compares old and next (normalized here). It fails with ErrNoTable when
// UpdatePolicies cannot go from one to the other: when either is empty (the dispatch
// chain and the policy chains exist only with a policy), or only one of them has a
// policy with Egress (chain input exists only then).
func planPolicyLayout(old, next []Policy) (policyLayout, error) {
	old, err := sortedPolicies(old)
	if err != nil {
		return policyLayout{}, fmt.Errorf("old: %w", err)
	}
	if next, err = sortedPolicies(next); err != nil {
		return policyLayout{}, fmt.Errorf("next: %w", err)
	}
	switch {
	case len(old) == 0:
		return policyLayout{}, fmt.Errorf("%w: old has no policy, so the tables have no policy chain (call Sync)", ErrNoTable)
	case len(next) == 0:
		return policyLayout{}, fmt.Errorf("%w: no policy left, the policy chains go (call Sync)", ErrNoTable)
	case hasEgress(old) != hasEgress(next):
		return policyLayout{}, fmt.Errorf("%w: chain input comes or goes with the policies with Egress (call Sync)", ErrNoTable)
	}
	pl := policyLayout{old: old, next: next}
	olds := make(map[string]Policy, len(old))
	for _, p := range old {
		olds[p.ID] = p
	}
	nexts := make(map[string]bool, len(next))
	for _, n := range next {
		nexts[n.ID] = true
		o, ok := olds[n.ID]
		// What the batch writes or deletes element by element is validated: the
		// policies that come, and the changed lists of those that stay.
		switch {
		case ok && o.SameLayout(n):
			if !sameLists(o, n) {
				if err := errors.Join(o.validate(), n.validate()); err != nil {
					return policyLayout{}, err
				}
			}
			before, after := changedSets(o, n)
			pl.kept = append(pl.kept, keptPolicy{old: o, next: n, before: before, after: after})
		default:
			if err := n.validate(); err != nil {
				return policyLayout{}, err
			}
			if ok {
				pl.gone = append(pl.gone, o)
			}
			pl.created = append(pl.created, n)
		}
	}
	for _, o := range old {
		if !nexts[o.ID] {
			pl.gone = append(pl.gone, o)
		}
	}
	return pl, nil
}

// sortedPolicies is ps sorted by ID; it fails when an ID is invalid or listed twice.
// (The policies themselves are validated where planPolicyLayout writes them.)
func sortedPolicies(ps []Policy) ([]Policy, error) {
	ps = slices.Clone(ps)
	slices.SortStableFunc(ps, func(a, b Policy) int { return strings.Compare(a.ID, b.ID) })
	for i, p := range ps {
		if !validPolicyID(p.ID) {
			return nil, fmt.Errorf("policy %q: ID %q: want 1-%d bytes of a-z and 0-9", p.label(), p.ID, maxPolicyID)
		}
		if i > 0 && ps[i-1].ID == p.ID {
			return nil, fmt.Errorf("policy %q: ID %q already used by policy %q", p.label(), p.ID, ps[i-1].label())
		}
	}
	return ps, nil
}

// policyLayoutBatchLocked reads what the batch needs (see UpdatePolicies) and builds it.
// It fails with ErrNoTable when the tables do not have the sets of old's policies as
// their layouts say (the sets of a policy that stays, which the new rules name, as well
// as those that the batch deletes), or already have a set of a policy that is new in
// next.
func (t *Table) policyLayoutBatchLocked(pl policyLayout) (*nftwire.Batch, error) {
	r, err := t.elemReaderLocked()
	if err != nil {
		return nil, err
	}
	defer r.close()
	// The sets of the policies whose sets or elements change must be those of their
	// layouts (a few requests each); the others' rules are checked below.
	check := slices.Clone(pl.gone)
	for _, k := range pl.kept {
		if len(k.after) > 0 {
			check = append(check, k.old)
		}
	}
	for _, p := range check {
		if err := r.checkLayout(p); err != nil {
			return nil, err
		}
	}
	inOld := make(map[string]bool, len(pl.old))
	for _, p := range pl.old {
		inOld[p.ID] = true
	}
	for _, p := range pl.created {
		if inOld[p.ID] {
			continue // laid out anew: its old sets, checked above, go first
		}
		name := selSet(p.ID, ip4.suffix)
		switch ok, err := r.setExists(name); {
		case err != nil:
			return nil, err
		case ok:
			return nil, fmt.Errorf("%w: policy %q: set %s exists (the tables hold the policy already: call Sync)", ErrNoTable, p.label(), name)
		}
	}
	held := map[string][]chainRule{}
	read := func(want chainDef) error {
		var err error
		held[want.name], err = r.chainRules(want)
		return err
	}
	// The dispatch rules (when a group comes or goes), and the chains of the groups that
	// stay whose policies come or go (their handles, where the new rules go).
	if !slices.Equal(groups(pl.old, ingress), groups(pl.next, ingress)) || !slices.Equal(groups(pl.old, egress), groups(pl.next, egress)) {
		if err := read(policyChains(pl.old)[0]); err != nil {
			return nil, err
		}
	}
	if !slices.Equal(groups(pl.old, egress), groups(pl.next, egress)) {
		if err := read(inputChain(pl.old)); err != nil {
			return nil, err
		}
	}
	for _, d := range directions {
		stays := groupSet(pl.next, d)
		for _, g := range groups(slices.Concat(pl.gone, pl.created), d) {
			if stays[g] && groupSet(pl.old, d)[g] {
				if err := read(groupChainDef(pl.old, d, g)); err != nil {
					return nil, err
				}
			}
		}
	}
	return pl.batch(held, r.existing)
}

// isolationChanges returns the elements that leave the isolation sets (gone: added,
// then deleted) and that join them (put). Only the addresses that a policy that comes,
// goes or changes selects can change (any other is selected by the same policies before
// and after). An address leaves the set of its old group (unless that set goes: nextG
// are the groups of next) and joins that of its new one; it leaves the union
// (isolatedAll) when no group isolates it any more.
func (pl policyLayout) isolationChanges(nextG map[direction]map[string]bool) (gone, put []setDef) {
	var touched []netip.Addr
	for _, p := range slices.Concat(pl.gone, pl.created) {
		touched = append(touched, p.Selected...)
	}
	for _, k := range pl.kept {
		if len(k.after) > 0 {
			touched = append(touched, slices.Concat(k.old.Selected, k.next.Selected)...)
		}
	}
	slices.SortFunc(touched, netip.Addr.Compare)
	touched = slices.Compact(touched)
	for _, d := range directions {
		was, is := map[string][]netip.Addr{}, map[string][]netip.Addr{}
		var withSet []netip.Addr // that leave the union with their group's set
		for _, a := range touched {
			og, wok := selectedBy(pl.old, d, a)
			ng, nok := selectedBy(pl.next, d, a)
			if wok && (!nok || og != ng) && nextG[d][og] {
				was[og] = append(was[og], a)
			}
			if wok && !nok && !nextG[d][og] {
				withSet = append(withSet, a)
			}
			if nok && (!wok || og != ng) {
				is[ng] = append(is[ng], a)
			}
		}
		gone, put = append(gone, isolationSetsByGroup(d, was)...), append(put, isolationSetsByGroup(d, is)...)
		for _, f := range []ipFamily{ip4, ip6} {
			gone = append(gone, setDef{name: isolatedAll(d, f), keyType: f.addrType, elems: addrElems(withSet, f)})
		}
	}
	return gone, put
}

// groupSet is groups(ps, d) as a set.
func groupSet(ps []Policy, d direction) map[string]bool {
	out := map[string]bool{}
	for _, g := range groups(ps, d) {
		out[g] = true
	}
	return out
}

// chainRule is a rule of a policy chain as the kernel holds it: its handle, and the
// first set it looks up ("" for none): the selected set of the policy it belongs to, in
// a group's chain; the isolation set of its group, in the dispatch.
type chainRule struct {
	handle uint64
	first  string
}

// firstSet is the set that the first lookup of exprs names, else "".
func firstSet(exprs []expr.Any) string {
	for _, e := range exprs {
		if l, ok := e.(*expr.Lookup); ok {
			return l.SetName
		}
	}
	return ""
}

// setOwner is the ID of the policy whose set name is ("" for another set).
func setOwner(name string) string {
	rest, ok := strings.CutPrefix(name, "pol_")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "_")
	return id
}

// isolationOwner is the direction and group of isolation set name; ok is false for
// another set.
func isolationOwner(name string) (d direction, g string, ok bool) {
	for _, d := range directions {
		rest, found := strings.CutPrefix(name, d.isolation)
		if !found || len(rest) == 0 {
			continue
		}
		rest = rest[:len(rest)-1] // the family
		if rest == "" {
			return d, "", true
		}
		if g, found := strings.CutPrefix(rest, "_"); found {
			return d, g, true
		}
	}
	return direction{}, "", false
}

// chainRules reads the rules of policy chain want (as Sync writes it for old's
// policies), and fails with ErrNoTable unless they look up the same first sets in the
// same order: they belong to the same policies (groups, in the dispatch).
func (r *elemReader) chainRules(want chainDef) ([]chainRule, error) {
	rules, err := nftwire.DumpRuleSets(r.c, nftables.TableFamilyINet, TableName, want.name)
	if err != nil {
		return nil, fmt.Errorf("list rules of chain %s: %w", want.name, err)
	}
	if len(rules) != len(want.rules) {
		return nil, fmt.Errorf("%w: chain %s has %d rules, the policies %d (call Sync)", ErrNoTable, want.name, len(rules), len(want.rules))
	}
	out := make([]chainRule, len(rules))
	for i, rl := range rules {
		out[i] = chainRule{handle: rl.Handle}
		if len(rl.Sets) > 0 {
			out[i].first = rl.Sets[0]
		}
		if w := firstSet(want.rules[i].exprs); out[i].first != w {
			return nil, fmt.Errorf("%w: chain %s: rule %d looks up set %q first, not %q (call Sync)", ErrNoTable, want.name, i, out[i].first, w)
		}
	}
	return out, nil
}

// batch builds the batch of UpdatePolicies (see there). held are the rules of the policy
// chains that policyLayoutBatchLocked read, by chain; existing returns those of the range
// elements of a set that the kernel holds (elemReader.existing).
func (pl policyLayout) batch(held map[string][]chainRule, existing func(s setDef, want []elemDef) ([]elemDef, error)) (*nftwire.Batch, error) {
	const inet = nftables.TableFamilyINet
	var b nftwire.Batch
	goneIDs := make(map[string]bool, len(pl.gone))
	for _, p := range pl.gone {
		goneIDs[p.ID] = true
	}
	oldG, nextG := map[direction]map[string]bool{}, map[direction]map[string]bool{} // groups of each type
	for _, d := range directions {
		oldG[d], nextG[d] = groupSet(pl.old, d), groupSet(pl.next, d)
	}
	goneGroup := func(s string) bool {
		d, g, ok := isolationOwner(s)
		return ok && !nextG[d][g]
	}

	// What goes: the dispatch rules of the groups that go, then their chains with
	// their rules, the rules of the policies that go from the chains that stay, and
	// the sets of both.
	for _, c := range []string{chainPolicy, chainInput} {
		for _, r := range held[c] {
			if goneGroup(r.first) {
				b.DelRule(inet, TableName, c, r.handle)
			}
		}
	}
	for _, d := range directions {
		for _, g := range groups(pl.old, d) {
			c := groupChain(d, g)
			if !nextG[d][g] {
				b.DelChain(inet, TableName, c)
				for _, f := range []ipFamily{ip4, ip6} {
					b.DelSet(inet, TableName, isolationSet(d, g, f))
				}
				continue
			}
			for _, r := range held[c] {
				if goneIDs[setOwner(r.first)] {
					b.DelRule(inet, TableName, c, r.handle)
				}
			}
		}
	}
	for _, p := range pl.gone {
		walkPolicySets(p, func(s setDef, _ func(Policy, ipFamily) []elemDef, _ ipFamily) {
			b.DelSet(inet, TableName, s.name)
		})
	}

	var gone, del, put []setDef
	for _, k := range pl.kept {
		g, d, p, err := setChanges(k.before, k.after, existing)
		if err != nil {
			return nil, err
		}
		gone, del, put = append(gone, g...), append(del, d...), append(put, p...)
	}
	g, p := pl.isolationChanges(nextG)
	gone, put = append(gone, g...), append(put, p...)
	ids := map[string]uint32{} // the created sets' batch IDs, for the rules that use them
	queue := func(sets []setDef, add, remove bool) {
		for _, s := range sets {
			for _, chunk := range s.chunks(s.elems) {
				if add {
					b.AddElems(inet, TableName, s.name, ids[s.name], chunk)
				}
				if remove {
					b.DelElems(inet, TableName, s.name, chunk)
				}
			}
		}
	}
	queue(gone, true, true)
	queue(del, false, true)

	// What comes: the isolation sets and chains of the groups that come, the sets of
	// the policies that come, the elements, then the rules.
	id := uint32(0)
	create := func(s setDef) {
		id++
		ids[s.name] = id
		b.AddSet(inet, TableName, s.wire(), id)
		for _, chunk := range s.chunks(s.elems) {
			b.AddElems(inet, TableName, s.name, id, chunk)
		}
	}
	for _, d := range directions {
		for _, g := range groups(pl.next, d) {
			if !oldG[d][g] {
				for _, f := range []ipFamily{ip4, ip6} {
					create(setDef{name: isolationSet(d, g, f), keyType: f.addrType})
				}
				b.AddChain(inet, TableName, chainDef{name: groupChain(d, g)}.wire())
			}
		}
	}
	for _, p := range pl.created {
		for _, s := range policySets(p) {
			create(s)
		}
	}
	queue(put, true, false)

	// The rules of the policies that come, in the chains of their groups: each before the
	// first rule that stays of a policy after it in ID order (or the final drop), where
	// Sync writes them; in the chain of a group that comes, all of the chain.
	insert := func(chain string, rules []ruleDef, anchor func(ruleDef) (chainRule, bool)) error {
		for _, rd := range rules {
			exprs, err := bindSets(rd.exprs, ids)
			if err != nil {
				return fmt.Errorf("chain %s: %w", chain, err)
			}
			if a, ok := anchor(rd); ok {
				b.InsertRule(inet, TableName, chain, a.handle, exprs)
			} else {
				b.AddRule(inet, TableName, chain, exprs)
			}
		}
		return nil
	}
	for _, d := range directions {
		for _, g := range groups(pl.created, d) {
			if !oldG[d][g] {
				c := groupChainDef(pl.next, d, g)
				if err := insert(c.name, c.rules, func(ruleDef) (chainRule, bool) { return chainRule{}, false }); err != nil {
					return nil, err
				}
				continue
			}
			c := groupChainDef(pl.created, d, g)
			rules := c.rules[:len(c.rules)-1] // the final drop stays
			err := insert(c.name, rules, func(rd ruleDef) (chainRule, bool) {
				id := setOwner(firstSet(rd.exprs))
				j := slices.IndexFunc(held[c.name], func(r chainRule) bool {
					o := setOwner(r.first)
					return o == "" || o > id && !goneIDs[o]
				})
				if j < 0 {
					return chainRule{}, false
				}
				return held[c.name][j], true
			})
			if err != nil {
				return nil, err
			}
		}
	}
	// The dispatch rules of the groups that come, each before the first rule that stays
	// of a group after it in Sync's order (egress first, then by group), else last.
	for _, d := range directions {
		var jumps []ruleDef
		for _, g := range groups(pl.next, d) {
			if !oldG[d][g] {
				for _, f := range []ipFamily{ip4, ip6} {
					jumps = append(jumps, isolationJump(d, g, f))
				}
			}
		}
		chains := []string{chainPolicy}
		if d == egress {
			chains = append(chains, chainInput)
		}
		for _, c := range chains {
			err := insert(c, jumps, func(rd ruleDef) (chainRule, bool) {
				_, g, _ := isolationOwner(firstSet(rd.exprs))
				j := slices.IndexFunc(held[c], func(r chainRule) bool {
					hd, hg, ok := isolationOwner(r.first)
					return ok && !goneGroup(r.first) && (hd.rank > d.rank || hd.rank == d.rank && hg > g)
				})
				if j < 0 {
					return chainRule{}, false
				}
				return held[c][j], true
			})
			if err != nil {
				return nil, err
			}
		}
	}
	return &b, b.Err()
}
