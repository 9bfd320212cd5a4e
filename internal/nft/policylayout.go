package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nftwire"
)

// Changes of the policies' layout without Sync: a policy added or removed, a rule more or
// less, a type gained or lost, a rule's AnyPeer or AnyPort changed. Only the rules of
// chains policy-ingress and policy-egress and the policies' own sets depend on the
// layouts; chain policies (the dispatch) and chain input depend only on whether there is
// a policy, and one with Egress. UpdatePolicies rewrites the rules of the two chains,
// deletes and creates the sets of the policies that go, come or are laid out anew, and
// changes the elements of the others as Update does, in one batch; it refuses what would
// change the dispatch or chain input (Sync does that).

// UpdatePolicies changes the tables' policies from old to next (see Applier) in one
// netlink batch, which the kernel applies whole or not at all. In this order, the batch:
//
//   - flushes chains policy-ingress and policy-egress (a DELRULE without handle each), so
//     that no rule uses the policies' sets any more;
//   - deletes the sets of the policies only in old and of those whose layout changed
//     (Policy.SameLayout);
//   - for each policy in both with the same layout, deletes the elements only old's
//     policy has: those of plain sets added, then deleted, so that an absent one is no
//     error, and the range elements that the kernel holds, as Update does;
//   - takes out of the isolation sets the addresses that old isolates and next does not
//     (added, then deleted), among those that the policies that come, go or change
//     select (no other address can change);
//   - creates the sets of the policies only in next and of those laid out anew, with
//     their elements (set IDs of the batch, as Sync);
//   - adds the elements only next's policy has, for each policy in both with the same
//     layout, and to the isolation sets the addresses that next isolates and old did not;
//   - adds the rules of the two chains as Sync writes them, bound to the new sets by
//     their batch IDs and to the others by name. The final counted drops start from the
//     counts of the rules they replace, as read before the batch.
//
// Before the batch it reads, on one socket: the names of the table's sets (one dump),
// against which it checks that the tables have the sets of old's policies as their
// layouts say (checkLayout) and none of the policies new in next; the range elements it
// deletes (existing, one request per 64); the last rule of each of the two chains (their
// counters). When next lists the
// policies of old the same way, it reads and sends nothing. Neither the reads nor the
// batch depend on the networks, endpoints, port mappings or services of the tables, nor
// on the elements of the policies that do not change: the batch holds the two chains'
// rules (one per policy rule and family), the sets of the policies that come, go or are
// laid out anew with their elements, and the elements that change. A missing table,
// chain or set (ENOENT), or a set to delete that another rule uses (EBUSY: the tables
// were changed behind podnet's back), is reported as ErrNoTable; a range added where the
// set holds an overlapping one (EEXIST: the tables did not hold old's policy) as
// ErrConflict. Either way the batch changes nothing, and Sync repairs the tables.
//
// Measured on kernel 6.18 with 100 policies (~400 rules in the two chains, ~640 sets):
// ~5-12 ms of reads (before the sets were read in one dump, a GETSET per set took
// ~130 ms), ~25-35 ms for the batch, whatever the number of endpoints; with few policies
// ~10-16 ms for the batch (it deletes rules and sets: like a batch that deletes elements,
// see Update, the kernel seems to wait for grace periods). The kernel seems to validate
// the whole table when a batch adds rules, walking the elements of its verdict maps (the
// services): with 50,000 services the batch takes ~36 ms (a Sync of 5,000 endpoints,
// port mappings and services took ~0.5 s). Inserting the new policies' rules at their
// place and deleting the old ones' by handle, instead of rewriting the two chains, would
// make the batch follow the change rather than the number of policies.
func (t *Table) UpdatePolicies(old, next []Policy) error {
	if err := validatePolicies(old); err != nil {
		return fmt.Errorf("update policies of tables %s: old: %w", TableName, err)
	}
	if err := validatePolicies(next); err != nil {
		return fmt.Errorf("update policies of tables %s: next: %w", TableName, err)
	}
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
	old, next = normPolicies(old), normPolicies(next)
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
		switch {
		case ok && o.SameLayout(n):
			before, after := changedSets(o, n)
			pl.kept = append(pl.kept, keptPolicy{old: o, next: n, before: before, after: after})
		case ok:
			pl.gone = append(pl.gone, o)
			pl.created = append(pl.created, n)
		default:
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
	if err := r.loadSets(); err != nil {
		return nil, err
	}
	for _, p := range pl.old {
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
	drops, err := r.dropCounters()
	if err != nil {
		return nil, err
	}
	return pl.batch(drops, r.existing)
}

// batch builds the batch of UpdatePolicies (see there). drops are the counters to start
// the final rules of the policy chains from, by chain; held returns those of the range
// elements of a set that the kernel holds (elemReader.existing).
func (pl policyLayout) batch(drops map[string]expr.Counter, held func(s setDef, want []elemDef) ([]elemDef, error)) (*nftwire.Batch, error) {
	const inet = nftables.TableFamilyINet
	var b nftwire.Batch
	for _, d := range directions {
		b.FlushChain(inet, TableName, d.chain)
	}
	for _, p := range pl.gone {
		walkPolicySets(p, func(s setDef, _ func(Policy, ipFamily) []elemDef, _ ipFamily) {
			b.DelSet(inet, TableName, s.name)
		})
	}

	// The sets the rules use: created ones by their batch ID, the others by name (0).
	ids := map[string]uint32{}
	var gone, del, put []setDef
	for _, k := range pl.kept {
		walkPolicySets(k.next, func(s setDef, _ func(Policy, ipFamily) []elemDef, _ ipFamily) {
			ids[s.name] = 0
		})
		for i, s := range k.after {
			was := k.before[i].elems
			lost, added := elemsNotIn(was, s.elems), elemsNotIn(s.elems, was)
			if s.interval && len(lost) > 0 {
				h, err := held(s, lost)
				if err != nil {
					return nil, err
				}
				del = append(del, withElems(s, h))
			} else {
				gone = append(gone, withElems(s, lost))
			}
			put = append(put, withElems(s, added))
		}
	}
	// The isolation sets: only the addresses that a policy that comes, goes or changes
	// selects can change (any other is selected by the same policies before and after).
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
		var was, is []netip.Addr
		for _, a := range touched {
			switch w, n := selectedBy(pl.old, d, a), selectedBy(pl.next, d, a); {
			case w && !n:
				was = append(was, a)
			case n && !w:
				is = append(is, a)
			}
		}
		for _, f := range []ipFamily{ip4, ip6} {
			s := setDef{name: d.isolation + f.suffix, keyType: f.addrType}
			gone = append(gone, withElems(s, addrElems(was, f)))
			put = append(put, withElems(s, addrElems(is, f)))
		}
	}
	queue := func(sets []setDef, add, remove bool) {
		for _, s := range sets {
			for _, chunk := range s.chunks(s.elems) {
				if add {
					b.AddElems(inet, TableName, s.name, 0, chunk)
				}
				if remove {
					b.DelElems(inet, TableName, s.name, chunk)
				}
			}
		}
	}
	queue(gone, true, true)
	queue(del, false, true)

	id := uint32(0) // set IDs are per batch
	for _, p := range pl.created {
		for _, s := range policySets(p) {
			id++
			ids[s.name] = id
			b.AddSet(inet, TableName, s.wire(), id)
			for _, chunk := range s.chunks(s.elems) {
				b.AddElems(inet, TableName, s.name, id, chunk)
			}
		}
	}
	queue(put, true, false)

	for _, c := range policyChains(pl.next) {
		if c.name != chainPolicyIngress && c.name != chainPolicyEgress {
			continue // the dispatch, which does not change
		}
		for i, rd := range c.rules {
			exprs, err := bindSets(rd.exprs, ids)
			if err != nil {
				return nil, fmt.Errorf("chain %s: %w", c.name, err)
			}
			if cnt, ok := drops[c.name]; ok && i == len(c.rules)-1 {
				if _, isCounter := exprs[0].(*expr.Counter); isCounter {
					exprs[0] = &cnt
				}
			}
			b.AddRule(inet, TableName, c.name, exprs)
		}
	}
	return &b, b.Err()
}

// dropCounters returns the counters of the final rules of chains policy-ingress and
// policy-egress, by chain: two dumps of these chains' rules (whose number grows with the
// policies' rules), of which only the last is parsed. A chain that is missing, or whose
// last rule has no counter (changed behind podnet's back), has none.
func (r *elemReader) dropCounters() (map[string]expr.Counter, error) {
	out := make(map[string]expr.Counter, len(directions))
	for _, d := range directions {
		last, ok, err := nftwire.LastRule(r.c, nftables.TableFamilyINet, TableName, d.chain)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", d.chain, err)
		}
		if !ok || len(last.Exprs) == 0 {
			continue
		}
		if c, ok := last.Exprs[0].(*expr.Counter); ok {
			out[d.chain] = expr.Counter{Packets: c.Packets, Bytes: c.Bytes}
		}
	}
	return out, nil
}
