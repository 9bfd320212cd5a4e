// Package nfttest provides Fake, an in-memory nft.Applier for tests of code that keeps
// table inet podnet in sync (the agent's reconcile loop).
package nfttest

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/podnet/podnet/internal/nft"
)

var _ nft.Applier = (*Fake)(nil)

// Fake is an nft.Applier that keeps the tables as an nft.Ruleset in memory. Its zero value
// is an empty namespace (no tables). It is safe for concurrent use.
type Fake struct {
	// Record, when set, is called with one line per change asked for (Sync, Update,
	// UpdatePolicies, Delete), before it is applied (a test can stop the world there: a
	// crash at that step).
	Record func(line string)

	// mu guards all fields below.
	mu    sync.Mutex
	table *nft.Ruleset // nil when the tables do not exist
	last  *nft.Ruleset // last Ruleset passed to a successful Sync, with later Updates applied
	// isolated are the isolation sets (policy_in, policy_out) as Sync, Update and
	// UpdatePolicies left them: they change them as the kernel does, not as table's
	// policies say.
	isolated      [2]map[netip.Addr]bool
	syncs         int
	updates       []UpdateCall       // successful Update calls
	policyUpdates []PolicyUpdateCall // successful UpdatePolicies calls
	broken        bool               // tables changed behind podnet's back
	err           error
	gen           uint32    // counts the changes of the tables (Generation)
	insyncs       int       // InSync calls
	drops         [2]uint64 // PolicyDrops: ingress, egress
}

// UpdateCall is the arguments of one successful Update.
type UpdateCall struct {
	Add, Remove nft.Delta
}

// Sync records r as the table's content. It validates r like nft.Table does.
func (f *Fake) Sync(r nft.Ruleset) error {
	if err := r.Validate(); err != nil {
		return err
	}
	f.record("nft sync: " + rulesetText(r))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	c, l := clone(r), clone(r)
	f.table, f.last = &c, &l
	f.isolated = isolation(r.Policies)
	f.drops = [2]uint64{}
	f.broken = false
	f.syncs++
	f.gen++
	return nil
}

// Update applies add and remove like nft.Table does: it validates them, fails with
// nft.ErrNoTable when there are no tables or a policy of a delta is not in the tables
// with the same layout (nft.Policy.SameLayout), and with nft.ErrConflict when a port
// mapping's host side is in the table with another target or an added network overlaps
// one in the table, and otherwise removes, then adds, the networks (by name), endpoints,
// port mappings and services, in the tables and in Last. An endpoint in remove takes the
// whole endpoint away (the kernel takes its interface out of the checked ones, and the
// listed addresses; addresses not listed would stay there, without effect). A service in
// remove removes the service with its key (VIP, protocol, port); one in add replaces it.
// A policy in add replaces the tables' policy with its ID; one only in remove is emptied
// (its layout stays). The isolation sets change as nft.Delta says, apart from the
// policies: the remove's isolated addresses leave them, add's isolated addresses and what
// add's policies newly select (compared with remove's) join them; a caller that forgets
// an address there makes InSync false, as with the kernel.
func (f *Fake) Update(add, remove nft.Delta) error {
	if err := add.Validate(); err != nil {
		return err
	}
	if err := remove.Validate(); err != nil {
		return err
	}
	f.record("nft update: " + strings.Join(append(deltaItems("-", remove), deltaItems("+", add)...), "; "))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if f.table == nil {
		return fmt.Errorf("fake update: %w", nft.ErrNoTable)
	}
	table, err := apply(*f.table, add, remove)
	if err != nil {
		return err
	}
	f.isolated = isolate(f.isolated, add, remove)
	// While the tables exist, Last equals them: Sync sets both, Delete removes the tables.
	last := clone(table)
	f.table, f.last = &table, &last
	f.updates = append(f.updates, UpdateCall{Add: cloneDelta(add), Remove: cloneDelta(remove)})
	f.gen++
	return nil
}

// Updates returns the arguments of the successful Update calls, oldest first.
func (f *Fake) Updates() []UpdateCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]UpdateCall, len(f.updates))
	for i, u := range f.updates {
		out[i] = UpdateCall{Add: cloneDelta(u.Add), Remove: cloneDelta(u.Remove)}
	}
	return out
}

// PolicyUpdateCall is the arguments of one successful UpdatePolicies.
type PolicyUpdateCall struct {
	Old, Next []nft.Policy
}

// UpdatePolicies changes the tables' policies from old to next like nft.Table does: it
// validates both, fails with nft.ErrNoTable when there are no tables, old or next is
// empty, only one of them has a policy with Egress, or the tables' policies are not old
// (compared as the tables would hold them: in any order, ranges merged), and otherwise
// replaces the policies of the tables and of Last with next (unless next's policies are
// old's, as the tables would hold them: then Generation stays). The isolation sets change
// as the kernel's do: the addresses that old isolates and next does not leave them,
// those that next isolates and old did not join them. The drop counters stay; Break
// stays in force.
func (f *Fake) UpdatePolicies(old, next []nft.Policy) error {
	if err := (nft.Delta{Policies: old}).Validate(); err != nil {
		return fmt.Errorf("old: %w", err)
	}
	if err := (nft.Delta{Policies: next}).Validate(); err != nil {
		return fmt.Errorf("next: %w", err)
	}
	f.record("nft update policies: " + strings.Join(policyChanges(old, next), "; "))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	hasEgress := func(ps []nft.Policy) bool {
		return slices.ContainsFunc(ps, func(p nft.Policy) bool { return p.Egress })
	}
	switch {
	case f.table == nil:
		return fmt.Errorf("fake update policies: %w", nft.ErrNoTable)
	case len(old) == 0 || len(next) == 0:
		return fmt.Errorf("fake update policies: %w (no policy before or after: call Sync)", nft.ErrNoTable)
	case hasEgress(old) != hasEgress(next):
		return fmt.Errorf("fake update policies: %w (chain input comes or goes: call Sync)", nft.ErrNoTable)
	case nft.Render(nft.Ruleset{Policies: f.table.Policies}) != nft.Render(nft.Ruleset{Policies: old}):
		return fmt.Errorf("fake update policies: %w (the tables do not hold old's policies)", nft.ErrNoTable)
	}
	f.policyUpdates = append(f.policyUpdates, PolicyUpdateCall{Old: clonePolicies(old), Next: clonePolicies(next)})
	if nft.Render(nft.Ruleset{Policies: next}) == nft.Render(nft.Ruleset{Policies: old}) {
		return nil // nft.Table sends nothing: Generation stays
	}
	table := clone(*f.table)
	table.Policies = clonePolicies(next)
	was, is := isolation(old), isolation(next)
	for i := range f.isolated {
		iso := maps.Clone(f.isolated[i])
		for a := range was[i] {
			if !is[i][a] {
				delete(iso, a)
			}
		}
		maps.Copy(iso, is[i])
		f.isolated[i] = iso
	}
	// While the tables exist, Last equals them: Sync sets both, Delete removes the tables.
	last := clone(table)
	f.table, f.last = &table, &last
	f.gen++
	return nil
}

// PolicyUpdates returns the arguments of the successful UpdatePolicies calls, oldest
// first.
func (f *Fake) PolicyUpdates() []PolicyUpdateCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]PolicyUpdateCall, len(f.policyUpdates))
	for i, u := range f.policyUpdates {
		out[i] = PolicyUpdateCall{Old: clonePolicies(u.Old), Next: clonePolicies(u.Next)}
	}
	return out
}

// policyChanges lists what UpdatePolicies(old, next) changes: the policies of old that
// next does not list the same way, after "-", and those of next that old does not, after
// "+".
func policyChanges(old, next []nft.Policy) []string {
	notIn := func(ps, others []nft.Policy) []nft.Policy {
		var out []nft.Policy
		for _, p := range ps {
			if !slices.ContainsFunc(others, func(o nft.Policy) bool { return reflect.DeepEqual(o, p) }) {
				out = append(out, p)
			}
		}
		return out
	}
	return append(deltaItems("-", nft.Delta{Policies: notIn(old, next)}), deltaItems("+", nft.Delta{Policies: notIn(next, old)})...)
}

// apply returns a copy of r with remove, then add, applied.
func apply(r nft.Ruleset, add, remove nft.Delta) (nft.Ruleset, error) {
	r = clone(r)
	type key struct {
		v6       bool
		hostIP   netip.Addr
		proto    string
		hostPort uint16
	}
	keyOf := func(p nft.PortMapping) key {
		h := p.HostIP
		if h.IsValid() && h.IsUnspecified() {
			h = netip.Addr{}
		}
		return key{!p.Addr.Is4(), h, p.Protocol, p.HostPort}
	}
	conflict := func(p nft.PortMapping) error {
		for _, q := range r.Ports {
			if keyOf(q) == keyOf(p) && (q.Addr != p.Addr || q.Port != p.Port) {
				return fmt.Errorf("fake update: port mapping %s: %w (%s)", p, nft.ErrConflict, q)
			}
		}
		return nil
	}
	for _, p := range remove.Ports {
		if err := conflict(p); err != nil {
			return r, err
		}
		r.Ports = slices.DeleteFunc(r.Ports, func(q nft.PortMapping) bool { return keyOf(q) == keyOf(p) })
	}
	for _, p := range add.Ports {
		if err := conflict(p); err != nil {
			return r, err
		}
		if !slices.ContainsFunc(r.Ports, func(q nft.PortMapping) bool { return keyOf(q) == keyOf(p) }) {
			r.Ports = append(r.Ports, p)
		}
	}
	type svcKey struct {
		vip   netip.Addr
		proto string
		port  uint16
	}
	svcKeyOf := func(s nft.Service) svcKey { return svcKey{s.VIP, s.Protocol, s.Port} }
	for _, s := range slices.Concat(remove.Services, add.Services) {
		r.Services = slices.DeleteFunc(r.Services, func(o nft.Service) bool { return svcKeyOf(o) == svcKeyOf(s) })
	}
	for _, s := range add.Services {
		if !slices.ContainsFunc(r.Services, func(o nft.Service) bool { return svcKeyOf(o) == svcKeyOf(s) }) {
			r.Services = append(r.Services, s)
		}
	}
	for _, n := range remove.Networks {
		r.Networks = slices.DeleteFunc(r.Networks, func(o nft.Network) bool { return o.Name == n.Name })
	}
	for _, n := range add.Networks {
		if slices.ContainsFunc(r.Networks, func(o nft.Network) bool { return o.Name == n.Name }) {
			continue
		}
		for _, o := range r.Networks {
			for _, p := range n.Subnets {
				for _, q := range o.Subnets {
					if p.Overlaps(q) {
						return r, fmt.Errorf("fake update: network %q: subnet %v: %w (network %q)", n.Name, p, nft.ErrConflict, o.Name)
					}
				}
			}
		}
		r.Networks = append(r.Networks, n)
	}
	if err := applyPolicies(&r, add.Policies, remove.Policies); err != nil {
		return r, err
	}
	for _, e := range remove.Endpoints {
		r.Endpoints = slices.DeleteFunc(r.Endpoints, func(o nft.Endpoint) bool { return o.HostIf == e.HostIf && o.Bridge == e.Bridge })
	}
	for _, e := range add.Endpoints {
		i := slices.IndexFunc(r.Endpoints, func(o nft.Endpoint) bool { return o.HostIf == e.HostIf && o.Bridge == e.Bridge })
		if i < 0 {
			r.Endpoints = append(r.Endpoints, nft.Endpoint{HostIf: e.HostIf, Bridge: e.Bridge})
			i = len(r.Endpoints) - 1
		}
		if e.MAC != nil {
			r.Endpoints[i].MAC = e.MAC
		}
		for _, a := range e.Addrs {
			if !slices.Contains(r.Endpoints[i].Addrs, a) {
				r.Endpoints[i].Addrs = append(r.Endpoints[i].Addrs, a)
			}
		}
	}
	return r, nil
}

// InSync reports whether the table exists, was not Break-ed since the last Sync, and
// renders like r.
func (f *Fake) InSync(r nft.Ruleset) (bool, error) {
	if err := r.Validate(); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.insyncs++
	if f.err != nil {
		return false, f.err
	}
	if f.table == nil || f.broken {
		return false, nil
	}
	want := isolation(r.Policies)
	for i := range want {
		if !maps.Equal(f.isolated[i], want[i]) {
			return false, nil
		}
	}
	return nft.Render(*f.table) == nft.Render(r), nil
}

// PolicyDrops returns what SetPolicyDrops set (zeros after a Sync).
func (f *Fake) PolicyDrops() (ingress, egress uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, 0, f.err
	}
	return f.drops[0], f.drops[1], nil
}

// SetPolicyDrops sets the counters PolicyDrops returns, as traffic would.
func (f *Fake) SetPolicyDrops(ingress, egress uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drops = [2]uint64{ingress, egress}
}

// policyDirs are the isolation sets' directions, in the order of Fake.isolated.
var policyDirs = [2]func(nft.Policy) bool{
	func(p nft.Policy) bool { return p.Ingress },
	func(p nft.Policy) bool { return p.Egress },
}

// isolation returns the isolation sets of the policies: the addresses that policies of
// each type select.
func isolation(ps []nft.Policy) [2]map[netip.Addr]bool {
	var out [2]map[netip.Addr]bool
	for i, has := range policyDirs {
		out[i] = map[netip.Addr]bool{}
		for _, p := range ps {
			if has(p) {
				for _, a := range p.Selected {
					out[i][a] = true
				}
			}
		}
	}
	return out
}

// isolate returns the isolation sets iso after Update(add, remove).
func isolate(iso [2]map[netip.Addr]bool, add, remove nft.Delta) [2]map[netip.Addr]bool {
	var out [2]map[netip.Addr]bool
	for i, has := range policyDirs {
		out[i] = maps.Clone(iso[i])
		explicit := func(d nft.Delta) []netip.Addr {
			if i == 0 {
				return d.IngressIsolated
			}
			return d.EgressIsolated
		}
		for _, a := range explicit(remove) {
			delete(out[i], a)
		}
		for _, a := range explicit(add) {
			out[i][a] = true
		}
		for _, p := range add.Policies {
			if !has(p) {
				continue
			}
			var old []netip.Addr
			if j := slices.IndexFunc(remove.Policies, func(o nft.Policy) bool { return o.ID == p.ID }); j >= 0 {
				old = remove.Policies[j].Selected
			}
			for _, a := range p.Selected {
				if !slices.Contains(old, a) {
					out[i][a] = true
				}
			}
		}
	}
	return out
}

// applyPolicies changes the policies of r as Update does: add's replace the policy with
// their ID, those only in remove are emptied; every one must be in r with its layout.
func applyPolicies(r *nft.Ruleset, add, remove []nft.Policy) error {
	r.Policies = clonePolicies(r.Policies)
	find := func(p nft.Policy) (int, error) {
		i := slices.IndexFunc(r.Policies, func(o nft.Policy) bool { return o.ID == p.ID })
		if i < 0 || !r.Policies[i].SameLayout(p) {
			return 0, fmt.Errorf("fake update: policy %q: %w (not in the tables with this layout)", p.Name, nft.ErrNoTable)
		}
		return i, nil
	}
	for _, p := range remove {
		i, err := find(p)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(add, func(o nft.Policy) bool { return o.ID == p.ID }) {
			r.Policies[i] = emptied(r.Policies[i])
		}
	}
	for _, p := range add {
		i, err := find(p)
		if err != nil {
			return err
		}
		r.Policies[i] = clonePolicies([]nft.Policy{p})[0]
	}
	return nil
}

// emptied is p without elements: its layout only.
func emptied(p nft.Policy) nft.Policy {
	empty := func(rs []nft.PolicyRule) []nft.PolicyRule {
		out := make([]nft.PolicyRule, len(rs))
		for i, r := range rs {
			out[i] = nft.PolicyRule{AnyPeer: r.AnyPeer, AnyPort: r.AnyPort}
		}
		return out
	}
	return nft.Policy{ID: p.ID, Name: p.Name, Ingress: p.Ingress, Egress: p.Egress,
		IngressRules: empty(p.IngressRules), EgressRules: empty(p.EgressRules)}
}

func clonePolicies(ps []nft.Policy) []nft.Policy {
	ps = slices.Clone(ps)
	rules := func(rs []nft.PolicyRule) []nft.PolicyRule {
		rs = slices.Clone(rs)
		for i := range rs {
			rs[i].Peers = slices.Clone(rs[i].Peers)
			rs[i].Ports = slices.Clone(rs[i].Ports)
		}
		return rs
	}
	for i := range ps {
		ps[i].Selected = slices.Clone(ps[i].Selected)
		ps[i].IngressRules = rules(ps[i].IngressRules)
		ps[i].EgressRules = rules(ps[i].EgressRules)
	}
	return ps
}

// Delete removes the table; it succeeds when there is none.
func (f *Fake) Delete() error {
	f.record("nft delete tables")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.table = nil
	f.broken = false
	f.gen++
	return nil
}

// Last returns the Ruleset of the last successful Sync with the later successful Updates
// applied, and whether there was a Sync.
func (f *Fake) Last() (nft.Ruleset, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil {
		return nft.Ruleset{}, false
	}
	return clone(*f.last), true
}

// InSyncs returns the number of InSync calls (comparisons of the whole tables).
func (f *Fake) InSyncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.insyncs
}

// Syncs returns the number of successful Sync calls.
func (f *Fake) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// Dump returns nft.Render of the table, or "" when there is no table. Its isolation sets
// are those of the table's policies; InSync also compares those Update really left.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.table == nil {
		return ""
	}
	return nft.Render(*f.table)
}

// Break simulates someone changing the table behind podnet's back (nft flush table):
// InSync is false until the next Sync.
func (f *Fake) Break() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken = true
	f.gen++
}

// Generation implements nft.Applier: it changes with every Sync, Update,
// UpdatePolicies, Delete and Break.
func (f *Fake) Generation() (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	return f.gen, nil
}

// SetErr makes every later Sync, Update, UpdatePolicies, InSync and Delete fail with err
// (nil restores success).
func (f *Fake) SetErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func clone(r nft.Ruleset) nft.Ruleset {
	d := cloneDelta(nft.Delta{Networks: r.Networks, Endpoints: r.Endpoints, Ports: r.Ports, Services: r.Services, Policies: r.Policies})
	return nft.Ruleset{Networks: d.Networks, Endpoints: d.Endpoints, Ports: d.Ports, Services: d.Services, Policies: d.Policies}
}

func cloneDelta(d nft.Delta) nft.Delta {
	d.Networks = slices.Clone(d.Networks)
	for i := range d.Networks {
		d.Networks[i].Subnets = slices.Clone(d.Networks[i].Subnets)
	}
	d.Endpoints = slices.Clone(d.Endpoints)
	for i := range d.Endpoints {
		d.Endpoints[i].Addrs = slices.Clone(d.Endpoints[i].Addrs)
	}
	d.Ports = slices.Clone(d.Ports)
	d.Services = slices.Clone(d.Services)
	for i := range d.Services {
		d.Services[i].Backends = slices.Clone(d.Services[i].Backends)
	}
	d.Policies = clonePolicies(d.Policies)
	d.IngressIsolated = slices.Clone(d.IngressIsolated)
	d.EgressIsolated = slices.Clone(d.EgressIsolated)
	return d
}

// Clone returns a Fake with a copy of f's tables, as a restarted agent finds them after
// a crash: no Record, no error, no history.
func (f *Fake) Clone() *Fake {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := &Fake{broken: f.broken, gen: f.gen, drops: f.drops}
	for i := range f.isolated {
		c.isolated[i] = maps.Clone(f.isolated[i])
	}
	if f.table != nil {
		t := clone(*f.table)
		c.table = &t
	}
	if f.last != nil {
		l := clone(*f.last)
		c.last = &l
	}
	return c
}

func (f *Fake) record(line string) {
	if f.Record != nil {
		f.Record(line)
	}
}

// rulesetText summarizes a Ruleset on one line: the networks, endpoints (by interface),
// and how many port mappings and services.
func rulesetText(r nft.Ruleset) string {
	var nets, eps []string
	for _, n := range r.Networks {
		nets = append(nets, n.Name)
	}
	for _, e := range r.Endpoints {
		eps = append(eps, e.HostIf)
	}
	slices.Sort(nets)
	slices.Sort(eps)
	s := fmt.Sprintf("networks [%s] endpoints [%s] ports %d services %d",
		strings.Join(nets, " "), strings.Join(eps, " "), len(r.Ports), len(r.Services))
	if len(r.Policies) > 0 {
		s += fmt.Sprintf(" policies %d", len(r.Policies))
	}
	return s
}

// deltaItems lists the items of d, each after sign.
func deltaItems(sign string, d nft.Delta) []string {
	var out []string
	for _, n := range d.Networks {
		out = append(out, fmt.Sprintf("network %s %v", n.Name, n.Subnets))
	}
	for _, e := range d.Endpoints {
		kind := "routed"
		if e.Bridge != "" {
			kind = "bridged"
		}
		s := fmt.Sprintf("endpoint %s %s %v", e.HostIf, kind, e.Addrs)
		if e.MAC != nil {
			s += " mac " + e.MAC.String()
		}
		out = append(out, s)
	}
	for _, p := range d.Ports {
		out = append(out, "port "+p.String())
	}
	for _, s := range d.Services {
		out = append(out, fmt.Sprintf("service %s %s backends %v", s.Name, s, s.Backends))
	}
	for _, p := range d.Policies {
		out = append(out, fmt.Sprintf("policy %s %s selected %v", p.ID, p.Name, p.Selected))
	}
	if len(d.IngressIsolated) > 0 {
		out = append(out, fmt.Sprintf("ingress isolated %v", d.IngressIsolated))
	}
	if len(d.EgressIsolated) > 0 {
		out = append(out, fmt.Sprintf("egress isolated %v", d.EgressIsolated))
	}
	for i := range out {
		out[i] = sign + out[i]
	}
	return out
}

// Close implements nft.Applier; the fake holds no handle.
func (f *Fake) Close() error { return nil }
