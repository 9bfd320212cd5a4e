package driver

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/policy"
)

// Network policies, compiled for one node (nft.Policy): each policy becomes the set of
// this node's pod addresses it selects, and per rule the set of peer addresses and the
// set of destination . protocol . port ranges it allows. Only sets hold addresses: a pod
// that joins or leaves a selector changes elements, never rules.
//
// A node enforces the policies of its own pods (local): their ingress on the way in,
// their egress on the way out. The peers are pods of every node (all) and addresses.
// Named ports resolve on the destination pod: for an ingress rule, each selected pod;
// for an egress rule, each pod among the peers.
//
// What a compiled policy holds is a sum of parts: what each pod gives it (its addresses
// when the policy selects it, when a rule's selector admits it, its ports as a
// destination) and what no pod gives (ipBlock ranges, and the ports toward them). A
// PolicyCompiler keeps the parts of every pod, so that a change of one pod, namespace
// or policy recomputes what that change can touch: a pod's parts of each policy, a
// namespace's pods for the policies whose namespaceSelectors it now matches or no
// longer matches, a policy's parts of the pods its selectors can select (found through
// an index of the pods by namespace and label).

// Policies compiles pols for the node whose pods are local, all being every pod of the
// cluster (local included) and nss the namespaces with their labels. Endpoints marked
// detaching are out.
func Policies(pols []api.NetworkPolicy, nss []api.Namespace, all, local []api.Endpoint) []nft.Policy {
	return NewPolicyCompiler(pols, nss, all, local).Policies()
}

// PolicyID names a policy's sets: a hash of namespace/name, stable while it exists.
func PolicyID(p api.NetworkPolicy) string {
	sum := sha256.Sum256([]byte(p.Namespace + "/" + p.Name))
	return hex.EncodeToString(sum[:5])
}

// policyGroup is the nft.Policy.Group of the policies of namespace ns: a policy selects
// pods of its own namespace only, so a new connection crosses the rules of the
// policies of its pods' namespaces, not those of every namespace.
func policyGroup(ns string) string {
	sum := sha256.Sum256([]byte(ns))
	return hex.EncodeToString(sum[:5])
}

// PolicyCompiler holds the compiled policies of one node and the inputs they derive
// from (policies, namespace labels, the cluster's pods), and keeps them up to date
// change by change. It is not safe for concurrent use.
type PolicyCompiler struct {
	pols map[string]*compiledPolicy // by namespace/name
	nss  map[string]api.Namespace   // the namespaces that have a record
	// labels are the namespaces' labels as selectors see them (nsLabels), by name.
	labels map[string]map[string]string
	pods   map[api.EndpointKey]pod
	byNS   map[string]map[api.EndpointKey]bool // pods by namespace
	// byLabel are the pods by namespace and label ("key=value"): a selector's
	// candidates.
	byLabel map[string]map[string]map[api.EndpointKey]bool
}

// pod is a live endpoint of the cluster; local ones are this node's.
type pod struct {
	ep    api.Endpoint
	local bool
}

// compiledPolicy is a policy with its parts: fixed ones per rule, and each pod's.
type compiledPolicy struct {
	p               api.NetworkPolicy
	id, name        string
	ingress, egress bool
	fixedIn         []ruleParts
	fixedOut        []ruleParts
	parts           map[api.EndpointKey]podParts
	out             *nft.Policy // nil: compile again
}

// podParts is what one pod gives a policy: its addresses when selected, and per rule
// (nil when nothing) peers and ports.
type podParts struct {
	selected []netip.Addr
	in, out  []ruleParts
}

type ruleParts struct {
	peers []nft.AddrRange
	ports []nft.PortRange
}

func (pp podParts) empty() bool { return pp.selected == nil && pp.in == nil && pp.out == nil }

// NewPolicyCompiler compiles pols as Policies does, and keeps what it needs to follow
// changes.
func NewPolicyCompiler(pols []api.NetworkPolicy, nss []api.Namespace, all, local []api.Endpoint) *PolicyCompiler {
	c := &PolicyCompiler{pols: map[string]*compiledPolicy{}, nss: map[string]api.Namespace{}, labels: map[string]map[string]string{},
		pods: map[api.EndpointKey]pod{}, byNS: map[string]map[api.EndpointKey]bool{}, byLabel: map[string]map[string]map[api.EndpointKey]bool{}}
	for _, ns := range nss {
		c.nss[ns.Name] = ns
	}
	mine := make(map[api.EndpointKey]bool, len(local))
	for _, ep := range local {
		mine[ep.EndpointKey] = true
	}
	for _, ep := range all {
		if ep.State != api.StateDetaching {
			c.addPod(pod{ep, mine[ep.EndpointKey]})
		}
	}
	for _, p := range pols {
		c.SetPolicy(p)
	}
	return c
}

// Policies returns the compiled policies, sorted by namespace and name. They share
// their lists with the compiler's: callers must not change them.
func (c *PolicyCompiler) Policies() []nft.Policy {
	out := make([]nft.Policy, 0, len(c.pols))
	for _, k := range slices.Sorted(maps.Keys(c.pols)) {
		cp := c.pols[k]
		if cp.out == nil {
			p := cp.compile()
			cp.out = &p
		}
		out = append(out, *cp.out)
	}
	return out
}

// SetPolicy adds or replaces a policy.
func (c *PolicyCompiler) SetPolicy(p api.NetworkPolicy) {
	cp := &compiledPolicy{p: p, id: PolicyID(p), name: p.Namespace + "/" + p.Name, parts: map[api.EndpointKey]podParts{}}
	for _, t := range policy.PolicyTypes(p.Spec) {
		switch t {
		case api.PolicyIngress:
			cp.ingress = true
			for _, r := range p.Spec.Ingress {
				cp.fixedIn = append(cp.fixedIn, ruleParts{peers: blockPeers(r)})
			}
		case api.PolicyEgress:
			cp.egress = true
			for _, r := range p.Spec.Egress {
				cp.fixedOut = append(cp.fixedOut, fixedEgress(r))
			}
		}
	}
	c.pols[policyKey(p.Namespace, p.Name)] = cp
	for k := range c.candidates(cp) {
		if pp := c.partsOf(cp, c.pods[k]); !pp.empty() {
			cp.parts[k] = pp
		}
	}
}

// DeletePolicy removes a policy.
func (c *PolicyCompiler) DeletePolicy(namespace, name string) {
	delete(c.pols, policyKey(namespace, name))
}

func policyKey(namespace, name string) string { return namespace + "/" + name }

// SetNamespace adds or replaces a namespace's record (its labels): the policies whose
// namespaceSelectors match it differently now follow, for its pods.
func (c *PolicyCompiler) SetNamespace(ns api.Namespace) {
	before := c.nsLabels(ns.Name)
	c.nss[ns.Name] = ns
	delete(c.labels, ns.Name)
	c.namespaceChanged(ns.Name, before)
}

// DeleteNamespace removes a namespace's record: it keeps its name label only.
func (c *PolicyCompiler) DeleteNamespace(name string) {
	before := c.nsLabels(name)
	delete(c.nss, name)
	delete(c.labels, name)
	c.namespaceChanged(name, before)
}

func (c *PolicyCompiler) namespaceChanged(ns string, before map[string]string) {
	after := c.nsLabels(ns)
	for _, cp := range c.pols {
		if !nsSelectorsDiffer(cp.p, before, after) {
			continue
		}
		for k := range c.byNS[ns] {
			c.setParts(cp, k, c.partsOf(cp, c.pods[k]))
		}
	}
}

// nsSelectorsDiffer reports whether a namespaceSelector of p matches labels a and b
// differently.
func nsSelectorsDiffer(p api.NetworkPolicy, a, b map[string]string) bool {
	for _, r := range slices.Concat(p.Spec.Ingress, p.Spec.Egress) {
		for _, peer := range r.Peers {
			if s := peer.NamespaceSelector; s != nil && policy.Matches(*s, a) != policy.Matches(*s, b) {
				return true
			}
		}
	}
	return false
}

// SetEndpoint adds or replaces an endpoint (one of this node's when local); an endpoint
// marked detaching is removed.
func (c *PolicyCompiler) SetEndpoint(ep api.Endpoint, local bool) {
	if ep.State == api.StateDetaching {
		c.DeleteEndpoint(ep.EndpointKey)
		return
	}
	c.removePod(ep.EndpointKey)
	c.addPod(pod{ep, local})
	for _, cp := range c.pols {
		c.setParts(cp, ep.EndpointKey, c.partsOf(cp, c.pods[ep.EndpointKey]))
	}
}

// DeleteEndpoint removes an endpoint.
func (c *PolicyCompiler) DeleteEndpoint(k api.EndpointKey) {
	if _, ok := c.pods[k]; !ok {
		return
	}
	c.removePod(k)
	for _, cp := range c.pols {
		c.setParts(cp, k, podParts{})
	}
}

func (c *PolicyCompiler) addPod(p pod) {
	k, ns := p.ep.EndpointKey, NamespaceOf(p.ep)
	c.pods[k] = p
	index(c.byNS, ns, k)
	if c.byLabel[ns] == nil {
		c.byLabel[ns] = map[string]map[api.EndpointKey]bool{}
	}
	for l, v := range p.ep.Labels {
		index(c.byLabel[ns], l+"="+v, k)
	}
}

func (c *PolicyCompiler) removePod(k api.EndpointKey) {
	old, ok := c.pods[k]
	if !ok {
		return
	}
	ns := NamespaceOf(old.ep)
	unindex(c.byNS, ns, k)
	for l, v := range old.ep.Labels {
		unindex(c.byLabel[ns], l+"="+v, k)
	}
	if len(c.byLabel[ns]) == 0 {
		delete(c.byLabel, ns)
	}
	delete(c.pods, k)
}

func index(idx map[string]map[api.EndpointKey]bool, at string, k api.EndpointKey) {
	if idx[at] == nil {
		idx[at] = map[api.EndpointKey]bool{}
	}
	idx[at][k] = true
}

func unindex(idx map[string]map[api.EndpointKey]bool, at string, k api.EndpointKey) {
	delete(idx[at], k)
	if len(idx[at]) == 0 {
		delete(idx, at)
	}
}

// setParts records pod k's parts of cp; cp compiles again when they changed.
func (c *PolicyCompiler) setParts(cp *compiledPolicy, k api.EndpointKey, pp podParts) {
	old, had := cp.parts[k]
	switch {
	case !had && pp.empty():
		return
	case had && reflect.DeepEqual(old, pp):
		return
	case pp.empty():
		delete(cp.parts, k)
	default:
		cp.parts[k] = pp
	}
	cp.out = nil
}

// nsLabels are the labels of namespace ns as selectors see them (callers must not
// change them).
func (c *PolicyCompiler) nsLabels(ns string) map[string]string {
	if l, ok := c.labels[ns]; ok {
		return l
	}
	rec, ok := c.nss[ns]
	if !ok {
		rec = api.Namespace{Name: ns}
	}
	l := policy.NamespaceLabels(rec)
	c.labels[ns] = l
	return l
}

// candidates are the pods that may give cp parts: those of its own namespace its
// podSelector may select, those its peers' selectors may admit (in its own namespace,
// or in those a namespaceSelector matches), and every pod when an egress rule resolves
// named ports on any pod (no peers) or on pods inside ipBlocks. A selector's candidates
// come from the label index (selected).
func (c *PolicyCompiler) candidates(cp *compiledPolicy) map[api.EndpointKey]bool {
	out := map[api.EndpointKey]bool{}
	if cp.egress && slices.ContainsFunc(cp.p.Spec.Egress, func(r api.NetworkPolicyRule) bool {
		return hasNamedPort(r) && (len(r.Peers) == 0 || slices.ContainsFunc(r.Peers, isBlock))
	}) {
		for k := range c.pods {
			out[k] = true
		}
		return out
	}
	own := cmp.Or(cp.p.Namespace, api.DefaultNamespace)
	c.selected(own, &cp.p.Spec.PodSelector, out)
	for _, r := range slices.Concat(cp.p.Spec.Ingress, cp.p.Spec.Egress) {
		for _, peer := range r.Peers {
			switch {
			case peer.IPBlock != nil:
			case peer.NamespaceSelector == nil:
				c.selected(own, peer.PodSelector, out)
			default:
				for ns := range c.byNS {
					if policy.Matches(*peer.NamespaceSelector, c.nsLabels(ns)) {
						c.selected(ns, peer.PodSelector, out)
					}
				}
			}
		}
	}
	return out
}

// selected adds to out the pods of namespace ns that sel (nil: every pod) may select:
// those with the rarest of its matchLabels, or with a value of its first In
// expression; else every pod of ns.
func (c *PolicyCompiler) selected(ns string, sel *api.LabelSelector, out map[api.EndpointKey]bool) {
	var from []map[api.EndpointKey]bool
	switch {
	case sel == nil:
	case len(sel.MatchLabels) > 0:
		var rarest map[api.EndpointKey]bool
		for l, v := range sel.MatchLabels {
			if m := c.byLabel[ns][l+"="+v]; rarest == nil || len(m) < len(rarest) {
				rarest = m
			}
		}
		from = []map[api.EndpointKey]bool{rarest}
	default:
		if i := slices.IndexFunc(sel.MatchExpressions, func(r api.LabelSelectorRequirement) bool { return r.Operator == api.SelectorIn }); i >= 0 {
			r := sel.MatchExpressions[i]
			for _, v := range r.Values {
				from = append(from, c.byLabel[ns][r.Key+"="+v])
			}
		}
	}
	if from == nil {
		from = []map[api.EndpointKey]bool{c.byNS[ns]}
	}
	for _, m := range from {
		for k := range m {
			out[k] = true
		}
	}
}

// partsOf is what pod p gives policy cp.
func (c *PolicyCompiler) partsOf(cp *compiledPolicy, p pod) podParts {
	var out podParts
	ep := p.ep
	ns := NamespaceOf(ep)
	var nsLabels map[string]string // looked up once, when a namespaceSelector asks
	admitted := func(peers []api.NetworkPolicyPeer) bool {
		for _, peer := range peers {
			switch {
			case peer.IPBlock != nil, peer.PodSelector == nil && peer.NamespaceSelector == nil:
				continue
			case peer.NamespaceSelector == nil:
				if ns != cmp.Or(cp.p.Namespace, api.DefaultNamespace) {
					continue
				}
			default:
				if nsLabels == nil {
					nsLabels = c.nsLabels(ns)
				}
				if !policy.Matches(*peer.NamespaceSelector, nsLabels) {
					continue
				}
			}
			if peer.PodSelector == nil || policy.Matches(*peer.PodSelector, ep.Labels) {
				return true
			}
		}
		return false
	}
	var addrs []netip.Addr // made at the first part
	selected := p.local && policy.Selects(cp.p, ep)
	if selected || cp.egress {
		addrs = addrsOf(ep)
	}
	if selected {
		out.selected = addrs
	}
	rules := func(spec []api.NetworkPolicyRule, egress bool) []ruleParts {
		var parts []ruleParts
		for k, r := range spec {
			var rp ruleParts
			peer := len(r.Peers) > 0 && admitted(r.Peers)
			if peer && addrs == nil {
				addrs = addrsOf(ep)
			}
			if peer {
				rp.peers = singles(addrs)
			}
			// The destinations this pod is among: for ingress, when selected; for
			// egress, when a peer (any pod without peers; inside an ipBlock by address).
			var dsts []netip.Addr
			switch {
			case !egress:
				if selected {
					dsts = addrs
				}
			case len(r.Peers) == 0 || peer:
				dsts = addrs
			case hasNamedPort(r):
				dsts = slices.DeleteFunc(slices.Clone(addrs), func(a netip.Addr) bool {
					return !slices.ContainsFunc(r.Peers, func(peer api.NetworkPolicyPeer) bool {
						return peer.IPBlock != nil && policy.InBlock(a, *peer.IPBlock)
					})
				})
			}
			for _, pp := range r.Ports {
				proto := strings.ToLower(cmp.Or(pp.Protocol, policy.ProtocolTCP))
				named := pp.Port != nil && pp.Port.Name != ""
				switch {
				case named:
					if port, ok := policy.NamedPort(ep, pp.Port.Name, proto); ok {
						for _, d := range dsts {
							rp.ports = append(rp.ports, nft.PortRange{Dst: single(d), Protocol: proto, From: port, To: port})
						}
					}
				case egress && !peer:
					// Numbered ports toward every address or toward ipBlocks: fixed parts.
				default:
					from, to := portSpan(pp)
					for _, d := range dsts {
						rp.ports = append(rp.ports, nft.PortRange{Dst: single(d), Protocol: proto, From: from, To: to})
					}
				}
			}
			if rp.peers != nil || rp.ports != nil {
				if parts == nil {
					parts = make([]ruleParts, len(spec))
				}
				parts[k] = rp
			}
		}
		return parts
	}
	if cp.ingress {
		out.in = rules(cp.p.Spec.Ingress, false)
	}
	if cp.egress {
		out.out = rules(cp.p.Spec.Egress, true)
	}
	return out
}

// compile sums cp's parts, the pods' in the order of their keys.
func (cp *compiledPolicy) compile() nft.Policy {
	keys := slices.SortedFunc(maps.Keys(cp.parts), api.EndpointKey.Compare)
	out := nft.Policy{ID: cp.id, Name: cp.name, Group: policyGroup(cp.p.Namespace), Ingress: cp.ingress, Egress: cp.egress}
	for _, k := range keys {
		out.Selected = append(out.Selected, cp.parts[k].selected...)
	}
	rules := func(spec []api.NetworkPolicyRule, fixed []ruleParts, of func(podParts) []ruleParts) []nft.PolicyRule {
		var rs []nft.PolicyRule
		for i, r := range spec {
			pr := nft.PolicyRule{AnyPeer: len(r.Peers) == 0, AnyPort: len(r.Ports) == 0,
				Peers: slices.Clone(fixed[i].peers), Ports: slices.Clone(fixed[i].ports)}
			for _, k := range keys {
				if parts := of(cp.parts[k]); parts != nil {
					pr.Peers = append(pr.Peers, parts[i].peers...)
					pr.Ports = append(pr.Ports, parts[i].ports...)
				}
			}
			rs = append(rs, pr)
		}
		return rs
	}
	if cp.ingress {
		out.IngressRules = rules(cp.p.Spec.Ingress, cp.fixedIn, func(pp podParts) []ruleParts { return pp.in })
	}
	if cp.egress {
		out.EgressRules = rules(cp.p.Spec.Egress, cp.fixedOut, func(pp podParts) []ruleParts { return pp.out })
	}
	return out
}

// blockPeers are a rule's ipBlock ranges.
func blockPeers(r api.NetworkPolicyRule) []nft.AddrRange {
	var out []nft.AddrRange
	for _, peer := range r.Peers {
		if peer.IPBlock != nil {
			out = append(out, blockRanges(*peer.IPBlock)...)
		}
	}
	return out
}

// fixedEgress is what no pod gives an egress rule: its ipBlock ranges, and its
// numbered ports toward them (toward every address when it has no peers).
func fixedEgress(r api.NetworkPolicyRule) ruleParts {
	rp := ruleParts{peers: blockPeers(r)}
	dsts := rp.peers
	if len(r.Peers) == 0 {
		dsts = []nft.AddrRange{everything(false), everything(true)}
	}
	for _, pp := range r.Ports {
		if pp.Port != nil && pp.Port.Name != "" {
			continue
		}
		from, to := portSpan(pp)
		for _, d := range dsts {
			rp.ports = append(rp.ports, nft.PortRange{Dst: d, Protocol: strings.ToLower(cmp.Or(pp.Protocol, policy.ProtocolTCP)), From: from, To: to})
		}
	}
	return rp
}

// portSpan is the ports a numbered (or absent: all) port of a rule allows.
func portSpan(pp api.NetworkPolicyPort) (from, to uint16) {
	if pp.Port == nil {
		return 1, 65535
	}
	return pp.Port.Number, cmp.Or(pp.EndPort, pp.Port.Number)
}

func isBlock(peer api.NetworkPolicyPeer) bool { return peer.IPBlock != nil }

// hasNamedPort reports whether a rule names a port.
func hasNamedPort(r api.NetworkPolicyRule) bool {
	return slices.ContainsFunc(r.Ports, func(pp api.NetworkPolicyPort) bool { return pp.Port != nil && pp.Port.Name != "" })
}

func addrsOf(ep api.Endpoint) []netip.Addr {
	out := make([]netip.Addr, len(ep.IPs))
	for i, ip := range ep.IPs {
		out[i] = ip.Addr()
	}
	return out
}

func singles(as []netip.Addr) []nft.AddrRange {
	out := make([]nft.AddrRange, len(as))
	for i, a := range as {
		out[i] = single(a)
	}
	return out
}

func single(a netip.Addr) nft.AddrRange { return nft.AddrRange{From: a, To: a} }

// everything is the whole address space of a family.
func everything(v6 bool) nft.AddrRange {
	if v6 {
		return nft.AddrRange{From: netip.IPv6Unspecified(), To: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}
	}
	return nft.AddrRange{From: netip.IPv4Unspecified(), To: netip.MustParseAddr("255.255.255.255")}
}

// blockRanges is an ipBlock as ranges: its CIDR minus its excepts.
func blockRanges(b api.IPBlock) []nft.AddrRange {
	ranges := []nft.AddrRange{{From: b.CIDR.Masked().Addr(), To: lastAddr(b.CIDR)}}
	for _, e := range b.Except {
		from, to := e.Masked().Addr(), lastAddr(e)
		var next []nft.AddrRange
		for _, r := range ranges {
			if to.Less(r.From) || r.To.Less(from) {
				next = append(next, r)
				continue
			}
			if r.From.Less(from) {
				next = append(next, nft.AddrRange{From: r.From, To: from.Prev()})
			}
			if to.Less(r.To) {
				next = append(next, nft.AddrRange{From: to.Next(), To: r.To})
			}
		}
		ranges = next
	}
	return ranges
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
