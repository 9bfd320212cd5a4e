package nft

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Network policy, in table inet podnet (only when the Ruleset has a policy: without one
// the tables are what they were before policies existed).
//
// A policy owns sets, never a rule per address: its selected addresses pol_<ID>_sel4/6,
// and for rule k of each of its types pol_<ID>_in<k>_peers4/6 (interval: the peers'
// addresses) and pol_<ID>_in<k>_ports4/6 (interval, ip daddr . l4proto . port: where the
// rule allows connections to), "out" for egress; a rule with AnyPeer (AnyPort) has no
// peers (ports) set. The rule count grows with the number of policies and rules, never
// with the number of addresses; a pod joining a selector or a peer is an element update.
//
// The policies of one group (Policy.Group: a namespace) have their own isolation sets
// and chains: policy_in_G4/6 and policy_out_G4/6 hold the addresses that a policy of
// group G with Ingress (Egress) selects, and the rules of those policies are in chains
// policy-ingress-G and policy-egress-G. Group "" has the names without "_G" and "-G". A
// new connection crosses one lookup per group and direction, then the rules of its
// pods' groups only, not those of every policy of the node.
//
//	chain forward   ... ct state established,related accept
//	                jump policies
//	                ct status dnat accept ...     (services and published ports are subject
//	                                               to the ingress policy of their backend)
//	chain input     filter input (only with an egress policy): established and untracked
//	                accepted, then a pod's connections to the node (its addresses, a node
//	                local DNS) go through policy-egress-G
//	chain policies  ct state untracked return     (IPv6 neighbour discovery, MLD)
//	                tcp flags ! syn iifname . oifname @bridge_self return
//	                tcp flags ! syn iifname . ip saddr @endpoint_addrs4
//	                    oifname . ip daddr @endpoint_addrs4 return, ip6 likewise
//	                                               (connections picked up mid-way)
//	                per group G with Egress: ip saddr @policy_out_G4 jump policy-egress-G,
//	                    ip6 likewise
//	                per group G with Ingress: ip daddr @policy_in_G4 goto policy-ingress-G,
//	                    ip6 likewise
//	chain policy-egress-G   per policy of G with Egress, per egress rule, per family:
//	                ip saddr @pol_X_sel4 [ip daddr @pol_X_outK_peers4]
//	                    [ip daddr . meta l4proto . th dport @pol_X_outK_ports4] return
//	                then counter drop
//	chain policy-ingress-G  likewise with ip daddr @pol_X_sel4 [ip saddr @pol_X_inK_peers4],
//	                then counter drop
//
// What reaches policy-ingress-G (-egress-G) is a new connection to (from) an isolated
// pod: a rule that allows it returns, and the connection goes on to the rest of chain
// forward (network isolation) or input; the final rule drops the rest and counts it
// (PolicyDrops). Packets of established connections never get there: a policy change
// does not touch conntrack, so a connection that was allowed when it started lives on
// even if the policy now denies new ones like it, until it ends. That holds too for a TCP
// connection between two pods of one bridge that no policy isolated when it opened,
// which conntrack did not track (notrackRules, with sets isolated_in4/6 and
// isolated_out4/6: the union of the groups' isolation sets): when a policy comes to
// isolate either pod, conntrack picks the connection up at its next segment, which
// passes as it has no SYN. Such a UDP flow is judged at its next datagram like the
// first of a new one: it goes on if the policy allows it. Traffic from the node to
// its pods goes through the output hook, never through these chains: it is always allowed.
// ICMPv6 neighbour discovery and MLD, which conntrack does not track, are not subject to
// policy. Bridged pods cross the inet forward hook only with bridge-nf-call-iptables
// (bridge-nf-call-ip6tables) set to 1 in the node's namespace (br_netfilter, the
// default).

// Names of the policy sets and chains of group "" (isolationSet, groupChain); the
// isolation sets end in 4 or 6.
const (
	setPolicyIn        = "policy_in"
	setPolicyOut       = "policy_out"
	chainInput         = "input"
	chainPolicy        = "policies"
	chainPolicyIngress = "policy-ingress"
	chainPolicyEgress  = "policy-egress"
)

// tcpSYN is the SYN bit of the TCP header's flags byte.
const tcpSYN = 0x02

// maxPolicyID is the longest policy ID.
const maxPolicyID = 12

// direction is ingress or egress: what a policy type means for its sets and rules.
type direction struct {
	name      string // "ingress" | "egress"
	short     string // in the names of the rules' sets: "in" | "out"
	chain     string
	isolation string // prefix of the isolation sets
	rank      int    // Sync's order of the dispatch rules: egress first
}

var (
	ingress    = direction{"ingress", "in", chainPolicyIngress, setPolicyIn, 1}
	egress     = direction{"egress", "out", chainPolicyEgress, setPolicyOut, 0}
	directions = []direction{ingress, egress}
)

// of returns whether p has type d, and its rules of d.
func (d direction) of(p Policy) (bool, []PolicyRule) {
	if d == ingress {
		return p.Ingress, p.IngressRules
	}
	return p.Egress, p.EgressRules
}

// podAddr is the offset of the selected pod's address in the network header of f: the
// destination for ingress, the source for egress; peerAddr is the other one.
func (d direction) podAddr(f ipFamily) uint32 {
	if d == ingress {
		return f.daddr
	}
	return f.saddr
}

func (d direction) peerAddr(f ipFamily) uint32 {
	if d == ingress {
		return f.saddr
	}
	return f.daddr
}

// isolationSet is the name of the isolation set of direction d, group g, family f.
func isolationSet(d direction, g string, f ipFamily) string {
	if g == "" {
		return d.isolation + f.suffix
	}
	return d.isolation + "_" + g + f.suffix
}

// groupChain is the name of the chain of the rules of direction d of group g.
func groupChain(d direction, g string) string {
	if g == "" {
		return d.chain
	}
	return d.chain + "-" + g
}

// groups returns the groups of the policies with type d, sorted, without duplicates.
func groups(ps []Policy, d direction) []string {
	var out []string
	for _, p := range ps {
		if on, _ := d.of(p); on {
			out = append(out, p.Group)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Names of a policy's sets.
func selSet(id, sfx string) string { return "pol_" + id + "_sel" + sfx }

func peersSet(id string, d direction, k int, sfx string) string {
	return "pol_" + id + "_" + d.short + strconv.Itoa(k) + "_peers" + sfx
}

func portsSet(id string, d direction, k int, sfx string) string {
	return "pol_" + id + "_" + d.short + strconv.Itoa(k) + "_ports" + sfx
}

// policyProto is the IP protocol number of a policy port's protocol, else 0.
func policyProto(name string) byte {
	switch name {
	case "tcp":
		return 6
	case "udp":
		return 17
	case "sctp":
		return 132
	}
	return 0
}

// label names p in errors: its name, else its ID.
func (p Policy) label() string {
	if p.Name != "" {
		return p.Name
	}
	return p.ID
}

func validPolicyID(id string) bool {
	if len(id) == 0 || len(id) > maxPolicyID {
		return false
	}
	for _, c := range []byte(id) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// validatePolicies checks every policy, that no two have the same ID, and that no
// address is selected by policies of two groups.
func validatePolicies(ps []Policy) error {
	ids := make(map[string]string, len(ps))
	for _, p := range ps {
		if err := p.validate(); err != nil {
			return err
		}
		if other, ok := ids[p.ID]; ok {
			return fmt.Errorf("policy %q: ID %q already used by policy %q", p.label(), p.ID, other)
		}
		ids[p.ID] = p.label()
	}
	return groupsApart(ps)
}

// groupsApart fails when policies of two groups select the same address.
func groupsApart(ps []Policy) error {
	by := map[netip.Addr]Policy{}
	for _, p := range ps {
		for _, a := range p.Selected {
			if o, ok := by[a]; ok && o.Group != p.Group {
				return fmt.Errorf("policy %q (group %q): selected address %v: also selected by policy %q of group %q", p.label(), p.Group, a, o.label(), o.Group)
			}
			by[a] = p
		}
	}
	return nil
}

func (p Policy) validate() error {
	if !validPolicyID(p.ID) {
		return fmt.Errorf("policy %q: ID %q: want 1-%d bytes of a-z and 0-9", p.label(), p.ID, maxPolicyID)
	}
	if p.Group != "" && !validPolicyID(p.Group) {
		return fmt.Errorf("policy %q: group %q: want \"\" or 1-%d bytes of a-z and 0-9", p.label(), p.Group, maxPolicyID)
	}
	for _, a := range p.Selected {
		if !validUnicast(a) {
			return fmt.Errorf("policy %q: selected address %v: invalid pod address", p.label(), a)
		}
	}
	for _, d := range directions {
		on, rules := d.of(p)
		if !on && len(rules) > 0 {
			return fmt.Errorf("policy %q: %d %s rules without type %s", p.label(), len(rules), d.name, d.name)
		}
		for k, r := range rules {
			if err := r.validate(); err != nil {
				return fmt.Errorf("policy %q: %s rule %d: %w", p.label(), d.name, k, err)
			}
		}
	}
	return nil
}

func (r PolicyRule) validate() error {
	if r.AnyPeer && len(r.Peers) > 0 {
		return fmt.Errorf("peers listed with AnyPeer")
	}
	if r.AnyPort && len(r.Ports) > 0 {
		return fmt.Errorf("ports listed with AnyPort")
	}
	for _, a := range r.Peers {
		if err := a.validate(); err != nil {
			return fmt.Errorf("peer %s: %w", a, err)
		}
	}
	for _, pr := range r.Ports {
		switch {
		case policyProto(pr.Protocol) == 0:
			return fmt.Errorf("port %s: protocol %q: want tcp, udp or sctp", pr, pr.Protocol)
		case pr.From == 0 || pr.From > pr.To:
			return fmt.Errorf("port %s: want 1 <= From <= To", pr)
		}
		if err := pr.Dst.validate(); err != nil {
			return fmt.Errorf("port %s: destination: %w", pr, err)
		}
	}
	return nil
}

func (a AddrRange) validate() error {
	for _, x := range [2]netip.Addr{a.From, a.To} {
		if !x.IsValid() || x.Is4In6() || x.Zone() != "" {
			return fmt.Errorf("address %v: invalid", x)
		}
	}
	switch {
	case a.From.Is4() != a.To.Is4():
		return fmt.Errorf("addresses of two families")
	case a.From.Compare(a.To) > 0:
		return fmt.Errorf("From above To")
	}
	return nil
}

// String prints the range as nft does: a prefix, an address, or FROM-TO.
func (a AddrRange) String() string {
	if a.validate() != nil {
		return a.From.String() + "-" + a.To.String()
	}
	return rangeText(a.From, a.To)
}

// String prints the port range as "tcp 80-81 to 10.0.0.0/24".
func (pr PortRange) String() string {
	ports := strconv.Itoa(int(pr.From))
	if pr.To != pr.From {
		ports += "-" + strconv.Itoa(int(pr.To))
	}
	return pr.Protocol + " " + ports + " to " + pr.Dst.String()
}

// normPolicies sorts the policies by ID and leaves out invalid policies and the later
// ones of an ID listed twice. (Validate also rejects an address selected by policies of
// two groups: groupsApart.)
func normPolicies(in []Policy) []Policy {
	ps := slices.Clone(in)
	slices.SortStableFunc(ps, func(a, b Policy) int { return strings.Compare(a.ID, b.ID) })
	out := ps[:0]
	for _, p := range ps {
		if p.validate() != nil || (len(out) > 0 && out[len(out)-1].ID == p.ID) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// SameLayout reports whether p and o have the same sets and rules in the tables: the
// same ID, name and group, the same types, the same number of rules of each type and the same
// AnyPeer and AnyPort in each. Update can change one into the other; else Sync must.
func (p Policy) SameLayout(o Policy) bool {
	same := func(a, b []PolicyRule) bool {
		return slices.EqualFunc(a, b, func(x, y PolicyRule) bool { return x.AnyPeer == y.AnyPeer && x.AnyPort == y.AnyPort })
	}
	return p.ID == o.ID && p.Name == o.Name && p.Group == o.Group && p.Ingress == o.Ingress && p.Egress == o.Egress &&
		same(p.IngressRules, o.IngressRules) && same(p.EgressRules, o.EgressRules)
}

// emptied is p without elements: its layout only.
func (p Policy) emptied() Policy {
	empty := func(rs []PolicyRule) []PolicyRule {
		out := make([]PolicyRule, len(rs))
		for i, r := range rs {
			out[i] = PolicyRule{AnyPeer: r.AnyPeer, AnyPort: r.AnyPort}
		}
		return out
	}
	return Policy{ID: p.ID, Name: p.Name, Group: p.Group, Ingress: p.Ingress, Egress: p.Egress,
		IngressRules: empty(p.IngressRules), EgressRules: empty(p.EgressRules)}
}

// PolicyDelta returns the deltas with which Update changes the tables' policies from old
// to next (see Delta): the changed policies, old in remove and next in add, and in remove
// the addresses that no policy of next isolates any more. ok is false when Update cannot:
// a policy was added or removed, or changed layout (Policy.SameLayout), or a changed one
// is invalid, or an ID is listed twice, or an address that a changed policy no longer
// selects is now selected by a policy of another group; then Sync (which validates). Policies whose
// elements are the same are left out.
//
// Its cost grows with the lists that changed (and with the number of policies), not with
// the lists that did not: a policy that is listed the same way in old and new is neither
// compared element by element nor validated again.
func PolicyDelta(old, next []Policy) (add, remove Delta, ok bool) {
	if len(old) != len(next) {
		return Delta{}, Delta{}, false
	}
	byID := make(map[string]Policy, len(old))
	for _, p := range old {
		if _, dup := byID[p.ID]; dup {
			return Delta{}, Delta{}, false
		}
		byID[p.ID] = p
	}
	seen := make(map[string]bool, len(next))
	for _, p := range next {
		o, found := byID[p.ID]
		if !found || seen[p.ID] || !o.SameLayout(p) {
			return Delta{}, Delta{}, false
		}
		seen[p.ID] = true
		before, after := changedSets(o, p)
		if len(after) == 0 {
			continue
		}
		if o.validate() != nil || p.validate() != nil {
			return Delta{}, Delta{}, false
		}
		if !sameSets(before, after) {
			remove.Policies = append(remove.Policies, o)
			add.Policies = append(add.Policies, p)
		}
	}
	for _, d := range directions {
		// An address leaves its group's isolation set when a changed policy no longer
		// selects it and no policy of next does.
		var gone []netip.Addr
		for i, p := range add.Policies {
			if on, _ := d.of(p); !on {
				continue
			}
			still := make(map[netip.Addr]bool, len(p.Selected))
			for _, a := range p.Selected {
				still[a] = true
			}
			for _, a := range remove.Policies[i].Selected {
				if still[a] || slices.Contains(gone, a) {
					continue
				}
				switch g, ok := selectedBy(next, d, a); {
				case !ok:
					gone = append(gone, a)
				case g != p.Group:
					return Delta{}, Delta{}, false
				}
			}
		}
		slices.SortFunc(gone, netip.Addr.Compare)
		if d == ingress {
			remove.IngressIsolated = gone
		} else {
			remove.EgressIsolated = gone
		}
	}
	return add, remove, true
}

// selectedBy returns the group of the first policy of type d that selects a; ok is
// false when none does.
func selectedBy(ps []Policy, d direction, a netip.Addr) (group string, ok bool) {
	for _, p := range ps {
		if on, _ := d.of(p); on && slices.Contains(p.Selected, a) {
			return p.Group, true
		}
	}
	return "", false
}

// isolated returns the addresses the policies of group g with type d select, sorted,
// without duplicates.
func isolated(ps []Policy, d direction, g string) []netip.Addr {
	var out []netip.Addr
	for _, p := range ps {
		if on, _ := d.of(p); on && p.Group == g {
			out = append(out, p.Selected...)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// sameSets reports whether a and b have the same sets with the same elements.
func sameSets(a, b []setDef) bool {
	return slices.EqualFunc(a, b, func(x, y setDef) bool {
		return x.name == y.name && slices.EqualFunc(x.elems, y.elems, sameElem)
	})
}

// sameElem reports whether a and b are the same element (keys and comment; the sets of
// policies have no data).
func sameElem(a, b elemDef) bool {
	return string(a.key) == string(b.key) && string(a.keyEnd) == string(b.keyEnd) && a.comment == b.comment
}

// elemsNotIn returns the elements of a that are not in b.
func elemsNotIn(a, b []elemDef) []elemDef {
	in := make(map[string]bool, len(b))
	for _, e := range b {
		in[elemID(e)] = true
	}
	var out []elemDef
	for _, e := range a {
		if !in[elemID(e)] {
			out = append(out, e)
		}
	}
	return out
}

func elemID(e elemDef) string {
	return strconv.Itoa(len(e.key)) + ":" + strconv.Itoa(len(e.keyEnd)) + ":" + string(e.key) + string(e.keyEnd) + e.comment
}

// policySetsAll returns the isolation sets of the policies (normalized: valid, sorted by
// ID), then the sets of each policy, with the texts of their elements.
func policySetsAll(ps []Policy) []setDef {
	out := isolationSets(ps)
	for _, p := range ps {
		out = append(out, policySets(p)...)
	}
	return withTexts(out)
}

// isolationSets returns the isolation sets of each group and type (policy_in_G4,
// policy_in_G6, then out) with the addresses of the group's policies of that type, and
// their unions (isolated_in4/6, isolated_out4/6), which exist without a policy of the
// type too.
func isolationSets(ps []Policy) []setDef {
	var out []setDef
	for _, d := range directions {
		byGroup := map[string][]netip.Addr{}
		for _, g := range groups(ps, d) {
			byGroup[g] = isolated(ps, d, g)
		}
		for _, f := range []ipFamily{ip4, ip6} {
			out = append(out, setDef{name: isolatedAll(d, f), keyType: f.addrType})
		}
		out = append(out, isolationSetsByGroup(d, byGroup)...)
	}
	return mergeSets(out)
}

// isolationSetsByGroup returns the isolation sets of direction d, both families, of the
// groups of byGroup with its addresses, in group order, each followed by its union's
// part.
func isolationSetsByGroup(d direction, byGroup map[string][]netip.Addr) []setDef {
	var out []setDef
	for _, g := range slices.Sorted(maps.Keys(byGroup)) {
		for _, f := range []ipFamily{ip4, ip6} {
			out = append(out, isolationSetDefs(d, g, f, addrElems(byGroup[g], f))...)
		}
	}
	return out
}

// isolationSetDefs is the isolation set of direction d, group g and family f with elems,
// and the union of the groups' sets (isolatedAll) with the same elems. An address is
// isolated by the policies of one group only (Sync refuses two), so that what goes into
// or out of a group's set goes into or out of the union alike.
func isolationSetDefs(d direction, g string, f ipFamily, elems []elemDef) []setDef {
	return []setDef{
		{name: isolationSet(d, g, f), keyType: f.addrType, elems: elems},
		{name: isolatedAll(d, f), keyType: f.addrType, elems: slices.Clone(elems)},
	}
}

// isolatedAll is the name of the set of the addresses isolated in direction d by any
// group: isolated_in4/6, isolated_out4/6 (the notrack rules read them).
func isolatedAll(d direction, f ipFamily) string {
	return "isolated_" + d.short + f.suffix
}

// The elements of the policies' sets are built without their text, which only Render
// and InSync's differences need (withTexts): a change of a long list costs less.

// addrElems returns the elements of the addresses of family f, sorted, without
// duplicates.
func addrElems(as []netip.Addr, f ipFamily) []elemDef {
	mine := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if a.Is4() == (f == ip4) {
			mine = append(mine, a)
		}
	}
	slices.SortFunc(mine, netip.Addr.Compare)
	mine = slices.Compact(mine)
	out := make([]elemDef, len(mine))
	for i, a := range mine {
		out[i] = elemDef{key: a.AsSlice()}
	}
	return out
}

// withTexts returns the policy sets with the text of each element.
func withTexts(sets []setDef) []setDef {
	for i, s := range sets {
		elems := slices.Clone(s.elems)
		for j, e := range elems {
			elems[j].text = policyElemText(s, e)
		}
		sets[i].elems = elems
	}
	return sets
}

// policyElemText is the text of element e of a policy set s: an address; a range of
// addresses [key, keyEnd); a range per field of addresses . protocol . ports.
func policyElemText(s setDef, e elemDef) string {
	addr := func(b []byte) netip.Addr {
		a, _ := netip.AddrFromSlice(b)
		return a
	}
	switch {
	case s.concat():
		n := len(e.key) - 8
		if n < 0 || len(e.keyEnd) != len(e.key) {
			return "?"
		}
		proto := map[byte]string{6: "tcp", 17: "udp", 132: "sctp"}[e.key[n]]
		from, to := binaryutil.BigEndian.Uint16(e.key[n+4:]), binaryutil.BigEndian.Uint16(e.keyEnd[n+4:])
		ports := strconv.Itoa(int(from))
		if to != from {
			ports += "-" + strconv.Itoa(int(to))
		}
		return rangeText(addr(e.key[:n]), addr(e.keyEnd[:n])) + " . " + proto + " . " + ports
	case s.interval:
		start := addr(e.key)
		last := lastOfFamily(ip4)
		if !start.Is4() {
			last = lastOfFamily(ip6)
		}
		if e.keyEnd != nil {
			last = addr(e.keyEnd).Prev()
		}
		return rangeText(start, last)
	}
	return addr(e.key).String()
}

// policySets returns the sets of policy p (valid): sel4 and sel6, then for each type,
// each rule and each family, its peers and ports sets (none for AnyPeer, AnyPort).
func policySets(p Policy) []setDef {
	var out []setDef
	walkPolicySets(p, func(s setDef, elems func(Policy, ipFamily) []elemDef, f ipFamily) {
		s.elems = elems(p, f)
		out = append(out, s)
	})
	return out
}

// changedSets returns the sets of o and n (valid, of the same layout) whose elements
// may differ, with o's elements and with n's: those whose addresses, peers or ports are
// not listed the same way in both. The elements of the others are not computed, so that
// a change costs what the changed lists hold, not the whole policy.
func changedSets(o, n Policy) (before, after []setDef) {
	if sameLists(o, n) {
		return nil, nil // most policies of a change: found without naming their sets
	}
	walkPolicySets(n, func(s setDef, elems func(Policy, ipFamily) []elemDef, f ipFamily) {
		if samePart(o, n, s.name) {
			return
		}
		b, a := s, s
		b.elems, a.elems = elems(o, f), elems(n, f)
		before, after = append(before, b), append(after, a)
	})
	return before, after
}

// sameLists reports whether o and n (of the same layout) list their addresses, peers
// and ports the same way. Lists that are the very same slice (a compiler that hands out
// a policy it did not compile again) are not compared element by element.
func sameLists(o, n Policy) bool {
	same := func(a, b []PolicyRule) bool {
		return slices.EqualFunc(a, b, func(x, y PolicyRule) bool {
			return sameList(x.Peers, y.Peers) && sameList(x.Ports, y.Ports)
		})
	}
	return sameList(o.Selected, n.Selected) && same(o.IngressRules, n.IngressRules) && same(o.EgressRules, n.EgressRules)
}

func sameList[T comparable](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0] || slices.Equal(a, b))
}

// samePart reports whether o and n list the same way the part of a policy that set
// name holds: the selected addresses, or a rule's peers or ports.
func samePart(o, n Policy, name string) bool {
	for _, d := range directions {
		_, ro := d.of(o)
		_, rn := d.of(n)
		for k := range min(len(ro), len(rn)) {
			for _, sfx := range []string{ip4.suffix, ip6.suffix} {
				switch name {
				case peersSet(n.ID, d, k, sfx):
					return slices.Equal(ro[k].Peers, rn[k].Peers)
				case portsSet(n.ID, d, k, sfx):
					return slices.Equal(ro[k].Ports, rn[k].Ports)
				}
			}
		}
	}
	return slices.Equal(o.Selected, n.Selected)
}

// walkPolicySets calls fn with each set of p's layout (without elements), the function
// that computes its elements from a policy of that layout, and its family.
func walkPolicySets(p Policy, fn func(s setDef, elems func(Policy, ipFamily) []elemDef, f ipFamily)) {
	for _, f := range []ipFamily{ip4, ip6} {
		fn(setDef{name: selSet(p.ID, f.suffix), keyType: f.addrType, comment: comment(p.Name)},
			func(q Policy, f ipFamily) []elemDef { return addrElems(q.Selected, f) }, f)
	}
	for _, d := range directions {
		on, rules := d.of(p)
		if !on {
			continue
		}
		for k, r := range rules {
			what := comment(fmt.Sprintf("%s %s %d", p.Name, d.name, k))
			rule := func(q Policy) PolicyRule {
				_, rs := d.of(q)
				return rs[k]
			}
			if !r.AnyPeer {
				for _, f := range []ipFamily{ip4, ip6} {
					fn(setDef{name: peersSet(p.ID, d, k, f.suffix), keyType: f.addrType, interval: true, comment: what},
						func(q Policy, f ipFamily) []elemDef { return peerElems(rule(q).Peers, f) }, f)
				}
			}
			if !r.AnyPort {
				for _, f := range []ipFamily{ip4, ip6} {
					fn(setDef{name: portsSet(p.ID, d, k, f.suffix), interval: true, comment: what,
						keyType: nftables.MustConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService)},
						func(q Policy, f ipFamily) []elemDef { return portElems(rule(q).Ports, f) }, f)
				}
			}
		}
	}
}

// peerElems returns the peers of family f, merged (the kernel refuses overlapping
// intervals; ranges that touch are one element, so that the elements depend on the
// addresses only).
func peerElems(rs []AddrRange, f ipFamily) []elemDef {
	mine := make([]AddrRange, 0, len(rs))
	for _, r := range rs {
		if r.validate() == nil && r.From.Is4() == (f == ip4) {
			mine = append(mine, r)
		}
	}
	slices.SortFunc(mine, func(a, b AddrRange) int { return cmp.Or(a.From.Compare(b.From), b.To.Compare(a.To)) })
	merged := mine[:0]
	for _, r := range mine {
		if n := len(merged); n > 0 {
			cur := &merged[n-1]
			if next := cur.To.Next(); !next.IsValid() || r.From.Compare(next) <= 0 {
				if r.To.Compare(cur.To) > 0 {
					cur.To = r.To
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	out := make([]elemDef, len(merged))
	for i, r := range merged {
		out[i].key = r.From.AsSlice()
		if end := r.To.Next(); end.IsValid() {
			out[i].keyEnd = end.AsSlice()
		}
	}
	return out
}

// portSpan is an inclusive range of ports.
type portSpan struct{ from, to uint16 }

// portElems returns the elements of a ports set of family f: the union of the port
// ranges (each a box: destination addresses x ports, of one protocol) cut into disjoint
// elements (the kernel refuses overlapping ones). Per protocol, the address axis is cut
// where the ports allowed change; each piece has the merged port ranges that cover it,
// and neighbouring pieces with the same ports are one. The elements depend on the union
// only, not on how the ranges were listed: the same allowed traffic is the same elements.
func portElems(prs []PortRange, f ipFamily) []elemDef {
	byProto := map[byte][]PortRange{}
	for _, pr := range prs {
		proto := policyProto(pr.Protocol)
		if proto != 0 && pr.From != 0 && pr.From <= pr.To && pr.Dst.validate() == nil && pr.Dst.From.Is4() == (f == ip4) {
			byProto[proto] = append(byProto[proto], pr)
		}
	}
	var elems []elemDef
	for proto, prs := range byProto {
		for _, pc := range portPieces(prs, f) {
			for _, s := range pc.ports {
				elems = append(elems, portElem(pc.start, pc.last, proto, s))
			}
		}
	}
	sortElems(elems)
	return elems
}

// portPiece is a range of destination addresses with the ports allowed to each.
type portPiece struct {
	start, last netip.Addr
	ports       []portSpan
}

// portPieces sweeps the address axis of ranges of one protocol and family f.
func portPieces(prs []PortRange, f ipFamily) []portPiece {
	type event struct {
		at    netip.Addr
		i     int
		start bool
	}
	events := make([]event, 0, 2*len(prs))
	for i, pr := range prs {
		events = append(events, event{pr.Dst.From, i, true})
		if end := pr.Dst.To.Next(); end.IsValid() {
			events = append(events, event{end, i, false})
		}
	}
	slices.SortFunc(events, func(a, b event) int { return a.at.Compare(b.at) })
	active := map[int]int{} // range index: how many times it is open (a range listed twice)
	var pieces []portPiece
	for j := 0; j < len(events); {
		at := events[j].at
		for ; j < len(events) && events[j].at == at; j++ {
			if events[j].start {
				active[events[j].i]++
			} else if active[events[j].i]--; active[events[j].i] == 0 {
				delete(active, events[j].i)
			}
		}
		if len(active) == 0 {
			continue
		}
		last := lastOfFamily(f)
		if j < len(events) {
			last = events[j].at.Prev()
		}
		spans := make([]portSpan, 0, len(active))
		for i := range active {
			spans = append(spans, portSpan{prs[i].From, prs[i].To})
		}
		spans = mergePorts(spans)
		if n := len(pieces); n > 0 && pieces[n-1].last.Next() == at && slices.Equal(pieces[n-1].ports, spans) {
			pieces[n-1].last = last
			continue
		}
		pieces = append(pieces, portPiece{start: at, last: last, ports: spans})
	}
	return pieces
}

// mergePorts sorts spans and merges those that overlap or touch.
func mergePorts(spans []portSpan) []portSpan {
	slices.SortFunc(spans, func(a, b portSpan) int { return cmp.Or(cmp.Compare(a.from, b.from), cmp.Compare(a.to, b.to)) })
	out := spans[:0]
	for _, s := range spans {
		if n := len(out); n > 0 && int(s.from) <= int(out[n-1].to)+1 {
			out[n-1].to = max(out[n-1].to, s.to)
			continue
		}
		out = append(out, s)
	}
	return out
}

// lastOfFamily is the highest address of f.
func lastOfFamily(f ipFamily) netip.Addr {
	if f == ip4 {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	return netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
}

// portElem is the element start-last . proto . ports: each field padded to 4 bytes, the
// port big-endian; a range per field from key to keyEnd.
func portElem(start, last netip.Addr, proto byte, s portSpan) elemDef {
	field := func(a netip.Addr, port uint16) []byte {
		return slices.Concat(a.AsSlice(), []byte{proto, 0, 0, 0}, binaryutil.BigEndian.PutUint16(port), []byte{0, 0})
	}
	return elemDef{key: field(start, s.from), keyEnd: field(last, s.to)}
}

// routedPair matches a packet from a routed pod of the node (its host veth and one of
// its addresses) to another (the host veth it leaves by and one of that pod's
// addresses): set endpoint_addrs4/6 twice.
func routedPair(f ipFamily) []expr.Any {
	set := setEndpointAddrs4
	if f.nfproto == ip6.nfproto {
		set = setEndpointAddrs6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		loadAddr(f, f.saddr, reg(16)),
		lookup(reg1, set, false),
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
		loadAddr(f, f.daddr, reg(16)),
		lookup(reg1, set, false),
	}
}

// policyChains returns the chains of the policies (normalized, at least one): policies
// (the dispatch), then per direction the chain of each group (policy-ingress-G,
// policy-egress-G).
func policyChains(ps []Policy) []chainDef {
	notSYN := slices.Concat(isL4(unix.IPPROTO_TCP), []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{tcpSYN}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0}},
	})
	dispatch := chainDef{name: chainPolicy, rules: []ruleDef{
		{exprs: append(ctState(expr.CtStateBitUNTRACKED), ret())},
		// A TCP segment without SYN that is not of an established connection, within a
		// bridge or between two routed pods of the node: one that conntrack picks up in
		// the middle, which was open before it was tracked (notrackRules, and the eBPF
		// fast path, internal/fastpath). It cannot open a connection.
		{exprs: slices.Concat(notSYN, withinBridge(), []expr.Any{ret()})},
		{exprs: slices.Concat(isFamily(nftables.TableFamilyINet, ip4), notSYN, routedPair(ip4), []expr.Any{ret()})},
		{exprs: slices.Concat(isFamily(nftables.TableFamilyINet, ip6), notSYN, routedPair(ip6), []expr.Any{ret()})},
	}}
	// Egress first, the way a packet goes: out of its source, into its destination.
	for _, d := range []direction{egress, ingress} {
		dispatch.rules = append(dispatch.rules, isolationJumps(ps, d)...)
	}
	chains := []chainDef{dispatch}
	for _, d := range directions {
		for _, g := range groups(ps, d) {
			chains = append(chains, groupChainDef(ps, d, g))
		}
	}
	return chains
}

// groupChainDef is the chain of the rules of direction d of the policies of group g, in
// the policies' order, then the final counted drop.
func groupChainDef(ps []Policy, d direction, g string) chainDef {
	c := chainDef{name: groupChain(d, g)}
	for _, p := range ps {
		if p.Group != g {
			continue
		}
		_, rules := d.of(p)
		for k, r := range rules {
			for _, f := range []ipFamily{ip4, ip6} {
				c.rules = append(c.rules, allowRule(p, d, k, r, f))
			}
		}
	}
	c.rules = append(c.rules, ruleDef{exprs: []expr.Any{&expr.Counter{}, drop()}})
	return c
}

// inputChain is the base chain that subjects the connections of pods to the node itself
// to their egress policy.
func inputChain(ps []Policy) chainDef {
	return chainDef{
		name: chainInput, typ: nftables.ChainTypeFilter,
		hook: *nftables.ChainHookInput, hookName: "input",
		priority: *nftables.ChainPriorityFilter, prioName: "filter",
		rules: append([]ruleDef{
			{exprs: append(ctStateEstablished(), accept())},
			{exprs: append(ctState(expr.CtStateBitUNTRACKED), accept())},
		}, isolationJumps(ps, egress)...),
	}
}

// isolationJumps returns the dispatch rules of direction d: per group, per family.
func isolationJumps(ps []Policy, d direction) []ruleDef {
	var out []ruleDef
	for _, g := range groups(ps, d) {
		for _, f := range []ipFamily{ip4, ip6} {
			out = append(out, isolationJump(d, g, f))
		}
	}
	return out
}

// isolationJump sends what an isolated pod of group g sends (egress) or receives
// (ingress) to the group's chain of direction d. Ingress, the dispatch's last part, goes
// there (goto): what the chain allows returns to chain forward, past the other groups'
// lookups.
func isolationJump(d direction, g string, f ipFamily) ruleDef {
	kind := expr.VerdictJump
	if d == ingress {
		kind = expr.VerdictGoto
	}
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f), []expr.Any{
			loadAddr(f, d.podAddr(f), reg1),
			lookup(reg1, isolationSet(d, g, f), false),
			&expr.Verdict{Kind: kind, Chain: groupChain(d, g)},
		}),
	}
}

// allowRule returns (lets the connection on) what rule k of direction d of policy p
// allows in family f.
func allowRule(p Policy, d direction, k int, r PolicyRule, f ipFamily) ruleDef {
	exprs := slices.Concat(isFamily(nftables.TableFamilyINet, f), []expr.Any{
		loadAddr(f, d.podAddr(f), reg1),
		lookup(reg1, selSet(p.ID, f.suffix), false),
	})
	if !r.AnyPeer {
		exprs = append(exprs, loadAddr(f, d.peerAddr(f), reg1), lookup(reg1, peersSet(p.ID, d, k, f.suffix), false))
	}
	if !r.AnyPort {
		exprs = append(exprs, loadAddr(f, f.daddr, reg1))
		exprs = append(exprs, loadL4(f.addrLen)...)
		exprs = append(exprs, lookup(reg1, portsSet(p.ID, d, k, f.suffix), false))
	}
	return ruleDef{exprs: append(exprs, ret())}
}

func ret() expr.Any { return &expr.Verdict{Kind: expr.VerdictReturn} }

// ctState matches packets whose conntrack state has one of the bits.
func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// hasEgress reports whether a policy has type Egress.
func hasEgress(ps []Policy) bool {
	return slices.ContainsFunc(ps, func(p Policy) bool { return p.Egress })
}
