package driver

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
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

// Policies compiles pols for the node whose pods are local, all being every pod of the
// cluster (local included) and nss the namespaces with their labels. Endpoints marked
// detaching are out.
func Policies(pols []api.NetworkPolicy, nss []api.Namespace, all, local []api.Endpoint) []nft.Policy {
	w := policy.World{Policies: pols, Namespaces: nss, Endpoints: live(all)}.Indexed()
	pods := indexPods(w.Endpoints)
	local = live(local)
	out := make([]nft.Policy, 0, len(pols))
	for _, p := range pols {
		c := nft.Policy{ID: PolicyID(p), Name: p.Namespace + "/" + p.Name}
		var selected []api.Endpoint
		for _, ep := range local {
			if policy.Selects(p, ep) {
				selected = append(selected, ep)
				for _, ip := range ep.IPs {
					c.Selected = append(c.Selected, ip.Addr())
				}
			}
		}
		for _, t := range policy.PolicyTypes(p.Spec) {
			switch t {
			case api.PolicyIngress:
				c.Ingress = true
				for _, r := range p.Spec.Ingress {
					c.IngressRules = append(c.IngressRules, compileRule(w, pods, p, r, selected, false))
				}
			case api.PolicyEgress:
				c.Egress = true
				for _, r := range p.Spec.Egress {
					c.EgressRules = append(c.EgressRules, compileRule(w, pods, p, r, nil, true))
				}
			}
		}
		out = append(out, c)
	}
	return out
}

// PolicyID names a policy's sets: a hash of namespace/name, stable while it exists.
func PolicyID(p api.NetworkPolicy) string {
	sum := sha256.Sum256([]byte(p.Namespace + "/" + p.Name))
	return hex.EncodeToString(sum[:5])
}

// compileRule compiles one rule of p. For an ingress rule, the destinations are the
// selected pods; for an egress rule (egress), the peers.
func compileRule(w policy.World, pods podIndex, p api.NetworkPolicy, r api.NetworkPolicyRule, selected []api.Endpoint, egress bool) nft.PolicyRule {
	var c nft.PolicyRule
	// The pod addresses among the peers: named ports of an egress rule resolve on them.
	var peerPods []podAddr
	if len(r.Peers) == 0 {
		c.AnyPeer = true
		peerPods = podAddrs(w.Endpoints)
	} else {
		seen := map[int]bool{}
		for _, peer := range r.Peers {
			if peer.IPBlock != nil {
				c.Peers = append(c.Peers, blockRanges(*peer.IPBlock)...)
				continue
			}
			for _, i := range pods.candidates(w, p, peer) {
				if ep := w.Endpoints[i]; !seen[i] && w.PodInPeer(p, peer, ep) {
					seen[i] = true
					for _, ip := range ep.IPs {
						c.Peers = append(c.Peers, single(ip.Addr()))
						peerPods = append(peerPods, podAddr{ep, ip.Addr()})
					}
				}
			}
		}
		if egress && hasNamedPort(r) && slices.ContainsFunc(r.Peers, func(peer api.NetworkPolicyPeer) bool { return peer.IPBlock != nil }) {
			for i, ep := range w.Endpoints { // pod addresses inside an ipBlock (its ranges hold them)
				if seen[i] {
					continue
				}
				for _, ip := range ep.IPs {
					if slices.ContainsFunc(r.Peers, func(peer api.NetworkPolicyPeer) bool {
						return peer.IPBlock != nil && policy.InBlock(ip.Addr(), *peer.IPBlock)
					}) {
						peerPods = append(peerPods, podAddr{ep, ip.Addr()})
					}
				}
			}
		}
	}
	if len(r.Ports) == 0 {
		c.AnyPort = true
		return c
	}
	dsts := podAddrs(selected)
	if egress {
		dsts = peerPods
	}
	for _, pp := range r.Ports {
		proto := strings.ToLower(cmp.Or(pp.Protocol, policy.ProtocolTCP))
		if pp.Port != nil && pp.Port.Name != "" {
			for _, d := range dsts {
				if port, ok := policy.NamedPort(d.ep, pp.Port.Name, proto); ok {
					c.Ports = append(c.Ports, nft.PortRange{Dst: single(d.addr), Protocol: proto, From: port, To: port})
				}
			}
			continue
		}
		from, to := uint16(1), uint16(65535)
		if pp.Port != nil {
			from, to = pp.Port.Number, cmp.Or(pp.EndPort, pp.Port.Number)
		}
		var ranges []nft.AddrRange
		switch {
		case !egress:
			for _, d := range dsts {
				ranges = append(ranges, single(d.addr))
			}
		case c.AnyPeer:
			ranges = []nft.AddrRange{everything(false), everything(true)}
		default:
			ranges = c.Peers
		}
		for _, d := range ranges {
			c.Ports = append(c.Ports, nft.PortRange{Dst: d, Protocol: proto, From: from, To: to})
		}
	}
	return c
}

// podIndex holds the positions of the cluster's pods (World.Endpoints) by namespace: a
// selector reaches into a few namespaces, so a rule looks at their pods only.
type podIndex map[string][]int

func indexPods(eps []api.Endpoint) podIndex {
	idx := podIndex{}
	for i, ep := range eps {
		ns := cmp.Or(ep.Namespace, api.DefaultNamespace)
		idx[ns] = append(idx[ns], i)
	}
	return idx
}

// candidates are the pods peer (a selector peer of p) may select: those of p's namespace
// for a podSelector alone, those of the namespaces its namespaceSelector matches.
func (idx podIndex) candidates(w policy.World, p api.NetworkPolicy, peer api.NetworkPolicyPeer) []int {
	if peer.NamespaceSelector == nil {
		return idx[cmp.Or(p.Namespace, api.DefaultNamespace)]
	}
	var out []int
	for ns, pods := range idx {
		if policy.Matches(*peer.NamespaceSelector, w.NamespaceLabelsOf(ns)) {
			out = append(out, pods...)
		}
	}
	return out
}

// hasNamedPort reports whether a rule names a port.
func hasNamedPort(r api.NetworkPolicyRule) bool {
	return slices.ContainsFunc(r.Ports, func(pp api.NetworkPolicyPort) bool { return pp.Port != nil && pp.Port.Name != "" })
}

// podAddr is one address of a pod.
type podAddr struct {
	ep   api.Endpoint
	addr netip.Addr
}

func podAddrs(eps []api.Endpoint) []podAddr {
	var out []podAddr
	for _, ep := range eps {
		for _, ip := range ep.IPs {
			out = append(out, podAddr{ep, ip.Addr()})
		}
	}
	return out
}

// live drops the endpoints that DEL marked detaching.
func live(eps []api.Endpoint) []api.Endpoint {
	out := make([]api.Endpoint, 0, len(eps))
	for _, ep := range eps {
		if ep.State != api.StateDetaching {
			out = append(out, ep)
		}
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
