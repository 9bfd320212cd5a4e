package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/podnet/podnet/api"
)

// World is everything a decision depends on.
type World struct {
	Policies []api.NetworkPolicy
	// Namespaces give namespace labels; a namespace not listed has only its name label
	// (NamespaceLabels).
	Namespaces []api.Namespace
	// Endpoints are the pods; PeerOf looks addresses up in them.
	Endpoints []api.Endpoint
}

// PeerKind says what is at one end of a connection.
type PeerKind string

// Peer kinds.
const (
	// PeerEndpoint is a pod: policies select it, and select it as a peer by labels.
	PeerEndpoint PeerKind = "endpoint"
	// PeerAddress is an address outside the pod networks: no policy selects it; as a
	// peer, only ipBlocks match it.
	PeerAddress PeerKind = "address"
	// PeerNode is a node itself (its kubelet, its probes): to the pods of this node it
	// is always allowed; otherwise it is an address like any other.
	PeerNode PeerKind = "node"
)

// Peer is one end of a connection.
type Peer struct {
	Kind PeerKind `json:"kind"`
	// Endpoint is the pod (PeerEndpoint).
	Endpoint *api.Endpoint `json:"endpoint,omitempty"`
	// Addr is the address the connection uses. For an endpoint it may be left zero:
	// Decide takes the endpoint's first address of the other end's family (or its
	// first address).
	Addr netip.Addr `json:"addr,omitzero"`
	// Node names the node (PeerNode): "" is the node of a one-node store, as in
	// api.Endpoint.Node.
	Node string `json:"node,omitempty"`
}

// EndpointPeer returns the peer of a pod, using its address addr (zero: Decide picks).
func EndpointPeer(ep api.Endpoint, addr netip.Addr) Peer {
	return Peer{Kind: PeerEndpoint, Endpoint: &ep, Addr: addr}
}

// AddressPeer returns the peer of an address outside the pod networks.
func AddressPeer(addr netip.Addr) Peer {
	return Peer{Kind: PeerAddress, Addr: addr}
}

// NodePeer returns the peer of node itself, using its address addr.
func NodePeer(node string, addr netip.Addr) Peer {
	return Peer{Kind: PeerNode, Node: node, Addr: addr}
}

// PeerOf returns the peer that uses addr: the endpoint holding it, or else a bare
// address.
func (w World) PeerOf(addr netip.Addr) Peer {
	addr = addr.Unmap()
	for _, ep := range w.Endpoints {
		for _, ip := range ep.IPs {
			if ip.Addr() == addr {
				return EndpointPeer(ep, addr)
			}
		}
	}
	return AddressPeer(addr)
}

// String renders a peer as messages show it: namespace/name of an endpoint (its
// container id when it has no name), the address, or node NAME.
func (p Peer) String() string {
	switch p.Kind {
	case PeerEndpoint:
		name := p.Endpoint.Name
		if name == "" {
			name = p.Endpoint.ContainerID
		}
		return endpointNamespace(*p.Endpoint) + "/" + name
	case PeerNode:
		if p.Node == "" {
			return "node"
		}
		return "node " + p.Node
	default:
		return p.Addr.String()
	}
}

// Reason says why one side of a connection allows or denies it.
type Reason string

// Reasons of a Side.
const (
	// ReasonNotPod: this end is not a pod (an outside address, a node), which no policy
	// restricts.
	ReasonNotPod Reason = "not-a-pod"
	// ReasonSamePod: a pod talking to itself never leaves its network namespace, where
	// no policy applies.
	ReasonSamePod Reason = "same-pod"
	// ReasonFromNode: traffic from a pod's own node to it is always allowed.
	ReasonFromNode Reason = "from-node"
	// ReasonNotSelected: no policy of this direction selects the pod, so it is
	// unrestricted in this direction.
	ReasonNotSelected Reason = "not-selected"
	// ReasonAllowedByRule: policies of this direction select the pod (it is isolated)
	// and at least one of their rules allows the connection (AllowedBy).
	ReasonAllowedByRule Reason = "allowed-by-rule"
	// ReasonNoRuleMatches: policies of this direction select the pod (Policies) and none
	// of their rules allows the connection.
	ReasonNoRuleMatches Reason = "no-rule-matches"
)

// PolicyRef names a policy.
type PolicyRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (r PolicyRef) String() string { return r.Namespace + "/" + r.Name }

// RuleRef names one rule of a policy: the index in its ingress or egress list (the
// direction is the Side's).
type RuleRef struct {
	Policy PolicyRef `json:"policy"`
	Rule   int       `json:"rule"`
}

func (r RuleRef) String() string { return fmt.Sprintf("%s rule %d", r.Policy, r.Rule) }

// Side is the decision of one direction: the source's egress or the destination's
// ingress.
type Side struct {
	Allowed bool   `json:"allowed"`
	Reason  Reason `json:"reason"`
	// Policies are the policies of this direction that select the pod, in
	// namespace/name order.
	Policies []PolicyRef `json:"policies,omitempty"`
	// AllowedBy are the rules of those policies that allow the connection.
	AllowedBy []RuleRef `json:"allowedBy,omitempty"`
}

// String renders the side's decision in words.
func (s Side) String() string {
	switch s.Reason {
	case ReasonAllowedByRule:
		return "allowed by " + joinRefs(s.AllowedBy)
	case ReasonNoRuleMatches:
		return "denied: selected by " + joinRefs(s.Policies) + ", no rule allows it"
	case ReasonNotSelected:
		return "allowed: no policy selects the pod"
	case ReasonNotPod:
		return "allowed: not a pod"
	case ReasonSamePod:
		return "allowed: the pod itself"
	case ReasonFromNode:
		return "allowed: from the pod's node"
	}
	return string(s.Reason)
}

func joinRefs[T fmt.Stringer](refs []T) string {
	s := make([]string, len(refs))
	for i, r := range refs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

// Verdict is the decision on one connection: it passes when both the source's egress
// and the destination's ingress allow it.
type Verdict struct {
	Allowed bool `json:"allowed"`
	// Egress is the source's side, Ingress the destination's.
	Egress  Side `json:"egress"`
	Ingress Side `json:"ingress"`
	// From and To are the ends with the addresses Decide used.
	From Peer `json:"from"`
	To   Peer `json:"to"`
}

func (v Verdict) String() string {
	verdict := "denied"
	if v.Allowed {
		verdict = "allowed"
	}
	return fmt.Sprintf("%s: egress of %s %s; ingress of %s %s", verdict, v.From, v.Egress, v.To, v.Ingress)
}

// Decide decides a new connection from one peer to another on port and protocol (TCP,
// UDP or SCTP, in any case), with Kubernetes NetworkPolicy semantics:
//
//   - A pod that no policy of a direction (Ingress, Egress, as the policy's
//     policyTypes say, defaulted by PolicyTypes when empty) selects is unrestricted
//     in that direction. A pod that some do
//     select is isolated: only what a rule of one of those policies allows passes (the
//     union of the rules).
//   - A rule allows a connection when one of its peers matches the other end (no peers:
//     any end, pods and addresses alike) and one of its ports matches (no ports: any
//     port and protocol).
//   - Peers: a podSelector alone selects pods of the policy's namespace; a
//     namespaceSelector selects all pods of the namespaces it matches; both in one peer
//     select the pods matching both; an ipBlock matches the other end's address, pod or
//     not, when it is in cidr and in no except.
//   - Ports: the protocol must match; then a number, a range number-endPort, or a named
//     port resolved on the destination pod (for egress rules too): the destination must
//     be a pod having a named port of that name and protocol with this number.
//   - A pod talking to itself and a node reaching its own pods are always allowed.
func Decide(w World, from, to Peer, port uint16, proto string) Verdict {
	proto = strings.ToUpper(proto)
	if proto == "" {
		proto = ProtocolTCP
	}
	from.Addr, to.Addr = connectionAddrs(from, to)
	c := connection{from: from, to: to, port: port, proto: proto}
	v := Verdict{From: from, To: to}
	if samePod(from, to) {
		v.Egress = Side{Allowed: true, Reason: ReasonSamePod}
		v.Ingress = v.Egress
	} else {
		v.Egress = w.decideSide(api.PolicyEgress, c)
		v.Ingress = w.decideSide(api.PolicyIngress, c)
	}
	v.Allowed = v.Egress.Allowed && v.Ingress.Allowed
	return v
}

// connection is what Decide decides.
type connection struct {
	from, to Peer
	port     uint16
	proto    string
}

// decideSide decides one direction: the egress of the source or the ingress of the
// destination.
func (w World) decideSide(direction string, c connection) Side {
	pod, remote := c.from, c.to
	if direction == api.PolicyIngress {
		pod, remote = c.to, c.from
	}
	if pod.Kind != PeerEndpoint {
		return Side{Allowed: true, Reason: ReasonNotPod}
	}
	if direction == api.PolicyIngress && remote.Kind == PeerNode && remote.Node == pod.Endpoint.Node {
		return Side{Allowed: true, Reason: ReasonFromNode}
	}
	var s Side
	for _, p := range sortedPolicies(w.Policies) {
		if !slices.Contains(PolicyTypes(p.Spec), direction) || !Selects(p, *pod.Endpoint) {
			continue
		}
		ref := PolicyRef{Namespace: policyNamespace(p), Name: p.Name}
		s.Policies = append(s.Policies, ref)
		rules := p.Spec.Ingress
		if direction == api.PolicyEgress {
			rules = p.Spec.Egress
		}
		for i, rule := range rules {
			if w.peersMatch(p, rule.Peers, remote) && portsMatch(rule.Ports, c.to, c.port, c.proto) {
				s.AllowedBy = append(s.AllowedBy, RuleRef{Policy: ref, Rule: i})
			}
		}
	}
	switch {
	case len(s.Policies) == 0:
		s.Allowed, s.Reason = true, ReasonNotSelected
	case len(s.AllowedBy) > 0:
		s.Allowed, s.Reason = true, ReasonAllowedByRule
	default:
		s.Allowed, s.Reason = false, ReasonNoRuleMatches
	}
	return s
}

// peersMatch reports whether the peers of a rule of policy p match the remote end. No
// peers match everything.
func (w World) peersMatch(p api.NetworkPolicy, peers []api.NetworkPolicyPeer, remote Peer) bool {
	if len(peers) == 0 {
		return true
	}
	for _, peer := range peers {
		if w.peerMatches(p, peer, remote) {
			return true
		}
	}
	return false
}

func (w World) peerMatches(p api.NetworkPolicy, peer api.NetworkPolicyPeer, remote Peer) bool {
	if peer.IPBlock != nil {
		return InBlock(remote.Addr, *peer.IPBlock)
	}
	if remote.Kind != PeerEndpoint {
		return false // selectors select pods only
	}
	ep := *remote.Endpoint
	switch {
	case peer.PodSelector == nil && peer.NamespaceSelector == nil:
		return false // an empty peer, which validation refuses
	case peer.NamespaceSelector == nil:
		// A podSelector alone: pods of the policy's own namespace.
		return endpointNamespace(ep) == policyNamespace(p) && Matches(*peer.PodSelector, ep.Labels)
	case peer.PodSelector == nil:
		// A namespaceSelector alone: every pod of the namespaces it matches.
		return Matches(*peer.NamespaceSelector, w.namespaceLabels(endpointNamespace(ep)))
	default:
		// Both: pods matching the podSelector in namespaces matching the namespaceSelector.
		return Matches(*peer.NamespaceSelector, w.namespaceLabels(endpointNamespace(ep))) &&
			Matches(*peer.PodSelector, ep.Labels)
	}
}

// namespaceLabels returns the labels of namespace name as selectors see them.
func (w World) namespaceLabels(name string) map[string]string {
	for _, ns := range w.Namespaces {
		if ns.Name == name {
			return NamespaceLabels(ns)
		}
	}
	return NamespaceLabels(api.Namespace{Name: name})
}

// InBlock reports whether addr is in the block's cidr and in none of its excepts.
func InBlock(addr netip.Addr, b api.IPBlock) bool {
	addr = addr.Unmap()
	if !addr.IsValid() || !b.CIDR.Contains(addr) {
		return false
	}
	for _, e := range b.Except {
		if e.Contains(addr) {
			return false
		}
	}
	return true
}

// portsMatch reports whether a rule's ports match a connection to dst on port and
// proto. No ports match everything.
func portsMatch(ports []api.NetworkPolicyPort, dst Peer, port uint16, proto string) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		if portMatches(pp, dst, port, proto) {
			return true
		}
	}
	return false
}

func portMatches(pp api.NetworkPolicyPort, dst Peer, port uint16, proto string) bool {
	if protocolOf(pp.Protocol) != proto {
		return false
	}
	switch {
	case pp.Port == nil:
		return true // every port of the protocol
	case pp.Port.Name != "":
		return namedPortIs(dst, pp.Port.Name, proto, port)
	case pp.EndPort != 0:
		return pp.Port.Number <= port && port <= pp.EndPort
	default:
		return pp.Port.Number == port
	}
}

// namedPortIs reports whether dst is a pod whose named port name (of protocol proto)
// is port.
func namedPortIs(dst Peer, name, proto string, port uint16) bool {
	if dst.Kind != PeerEndpoint {
		return false
	}
	p, ok := NamedPort(*dst.Endpoint, name, proto)
	return ok && p == port
}

// protocolOf returns a protocol in upper case, TCP when empty.
func protocolOf(p string) string {
	if p == "" {
		return ProtocolTCP
	}
	return strings.ToUpper(p)
}

// samePod reports whether both ends are the same pod: the same sandbox (container id)
// on the same node.
func samePod(a, b Peer) bool {
	if a.Kind != PeerEndpoint || b.Kind != PeerEndpoint {
		return false
	}
	x, y := a.Endpoint, b.Endpoint
	return x.ContainerID != "" && x.ContainerID == y.ContainerID && x.Node == y.Node
}

// connectionAddrs returns the addresses of both ends, choosing for an endpoint without
// one its first address of the other end's family, or its first address.
func connectionAddrs(from, to Peer) (netip.Addr, netip.Addr) {
	a, b := from.Addr.Unmap(), to.Addr.Unmap()
	if !a.IsValid() {
		a = endpointAddr(from, b)
	}
	if !b.IsValid() {
		b = endpointAddr(to, a)
	}
	if !a.IsValid() { // both were endpoints without addresses; a is now b's family
		a = endpointAddr(from, b)
	}
	return a, b
}

func endpointAddr(p Peer, other netip.Addr) netip.Addr {
	if p.Kind != PeerEndpoint || len(p.Endpoint.IPs) == 0 {
		return netip.Addr{}
	}
	for _, ip := range p.Endpoint.IPs {
		if other.IsValid() && ip.Addr().Is4() == other.Is4() {
			return ip.Addr()
		}
	}
	return p.Endpoint.IPs[0].Addr()
}

// sortedPolicies returns policies in namespace/name order.
func sortedPolicies(ps []api.NetworkPolicy) []api.NetworkPolicy {
	return slices.SortedFunc(slices.Values(ps), func(a, b api.NetworkPolicy) int {
		return cmp.Or(cmp.Compare(policyNamespace(a), policyNamespace(b)), cmp.Compare(a.Name, b.Name))
	})
}
