package policy

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
)

// TestDecidePeers decides connections with ends that are not pods (outside addresses,
// nodes), and checks the explanation of each side.
func TestDecidePeers(t *testing.T) {
	w := e2eWorld()
	ps, err := Parse(strings.NewReader(strings.Join([]string{
		np("x", "deny-ingress", `podSelector: {}`),
		np("x", "from-outside", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}}]`),
		np("x", "from-all-namespaces", `
podSelector: {matchLabels: {pod: b}}
ingress:
- from: [{namespaceSelector: {}}]`),
		np("y", "egress", `
podSelector: {}
policyTypes: [Egress]
egress:
- to: [{ipBlock: {cidr: 198.51.100.0/24}}]
- ports: [{port: http}]`),
	}, "---\n")))
	if err != nil {
		t.Fatal(err)
	}
	w.Policies = ps

	pod := func(short string) Peer { return EndpointPeer(*w.endpoint(t, short), netip.Addr{}) }
	addr := func(s string) Peer { return AddressPeer(netip.MustParseAddr(s)) }
	ref := func(ns, name string) PolicyRef { return PolicyRef{Namespace: ns, Name: name} }
	rule := func(ns, name string, i int) RuleRef { return RuleRef{Policy: ref(ns, name), Rule: i} }
	allowedBy := func(rules ...RuleRef) Side {
		s := Side{Allowed: true, Reason: ReasonAllowedByRule, AllowedBy: rules}
		for _, r := range rules {
			s.Policies = append(s.Policies, r.Policy)
		}
		return s
	}
	var (
		notPod      = Side{Allowed: true, Reason: ReasonNotPod}
		notSelected = Side{Allowed: true, Reason: ReasonNotSelected}
		xaDenied    = Side{Reason: ReasonNoRuleMatches, Policies: []PolicyRef{ref("x", "deny-ingress"), ref("x", "from-outside")}}
		xbDenied    = Side{Reason: ReasonNoRuleMatches, Policies: []PolicyRef{ref("x", "deny-ingress"), ref("x", "from-all-namespaces")}}
		xcDenied    = Side{Reason: ReasonNoRuleMatches, Policies: []PolicyRef{ref("x", "deny-ingress")}}
		yDenied     = Side{Reason: ReasonNoRuleMatches, Policies: []PolicyRef{ref("y", "egress")}}
	)
	for _, tc := range []struct {
		name          string
		from, to      Peer
		port          uint16
		egress, ingrs Side
	}{
		{"outside address in the ipBlock", addr("192.0.2.1"), pod("xa"), 80,
			notPod, Side{Allowed: true, Reason: ReasonAllowedByRule,
				Policies: []PolicyRef{ref("x", "deny-ingress"), ref("x", "from-outside")}, AllowedBy: []RuleRef{rule("x", "from-outside", 0)}}},
		{"outside address in the except", addr("192.0.2.200"), pod("xa"), 80, notPod, xaDenied},
		{"an IPv4-mapped address is the IPv4 address", addr("::ffff:192.0.2.1"), pod("xa"), 80,
			notPod, Side{Allowed: true, Reason: ReasonAllowedByRule,
				Policies: []PolicyRef{ref("x", "deny-ingress"), ref("x", "from-outside")}, AllowedBy: []RuleRef{rule("x", "from-outside", 0)}}},
		{"namespaceSelector {} does not match addresses", addr("192.0.2.1"), pod("xb"), 80, notPod, xbDenied},
		{"named port resolved on the destination pod", pod("ya"), pod("xb"), 81,
			allowedBy(rule("y", "egress", 1)),
			Side{Allowed: true, Reason: ReasonAllowedByRule,
				Policies: []PolicyRef{ref("x", "deny-ingress"), ref("x", "from-all-namespaces")}, AllowedBy: []RuleRef{rule("x", "from-all-namespaces", 0)}}},
		{"named port with another number on the destination", pod("ya"), pod("xb"), 80, yDenied,
			Side{Allowed: true, Reason: ReasonAllowedByRule,
				Policies: []PolicyRef{ref("x", "deny-ingress"), ref("x", "from-all-namespaces")}, AllowedBy: []RuleRef{rule("x", "from-all-namespaces", 0)}}},
		{"egress to an address in the ipBlock", pod("ya"), addr("198.51.100.7"), 443, allowedBy(rule("y", "egress", 0)), notPod},
		{"named port never matches an address", pod("ya"), addr("203.0.113.1"), 80, yDenied, notPod},
		{"unselected pod to an address", pod("za"), addr("203.0.113.1"), 80, notSelected, notPod},
		{"node to its own pod", NodePeer("", netip.MustParseAddr("10.0.0.254")), pod("xc"), 80,
			notPod, Side{Allowed: true, Reason: ReasonFromNode}},
		{"another node is an address", NodePeer("n2", netip.MustParseAddr("10.0.0.253")), pod("xc"), 80, notPod, xcDenied},
		{"pod to its node is subject to egress", pod("ya"), NodePeer("", netip.MustParseAddr("10.0.0.254")), 80, yDenied, notPod},
		{"pod to itself", pod("xc"), pod("xc"), 80,
			Side{Allowed: true, Reason: ReasonSamePod}, Side{Allowed: true, Reason: ReasonSamePod}},
	} {
		v := Decide(w, tc.from, tc.to, tc.port, "tcp")
		if !reflect.DeepEqual(v.Egress, tc.egress) {
			t.Errorf("%s: egress\n got %+v\nwant %+v", tc.name, v.Egress, tc.egress)
		}
		if !reflect.DeepEqual(v.Ingress, tc.ingrs) {
			t.Errorf("%s: ingress\n got %+v\nwant %+v", tc.name, v.Ingress, tc.ingrs)
		}
		if want := tc.egress.Allowed && tc.ingrs.Allowed; v.Allowed != want {
			t.Errorf("%s: allowed = %v, want %v", tc.name, v.Allowed, want)
		}
	}

	v := Decide(w, addr("192.0.2.200"), pod("xa"), 80, "TCP")
	const want = "denied: egress of 192.0.2.200 allowed: not a pod; ingress of x/a denied: selected by x/deny-ingress, x/from-outside, no rule allows it"
	if v.String() != want {
		t.Errorf("String:\n got %s\nwant %s", v, want)
	}
}

func TestPeerOf(t *testing.T) {
	w := e2eWorld()
	if p := w.PeerOf(netip.MustParseAddr("10.0.2.3")); p.Kind != PeerEndpoint || p.String() != "y/c" || p.Addr.String() != "10.0.2.3" {
		t.Errorf("PeerOf(10.0.2.3) = %+v", p)
	}
	if p := w.PeerOf(netip.MustParseAddr("10.0.9.9")); p.Kind != PeerAddress || p.String() != "10.0.9.9" {
		t.Errorf("PeerOf(10.0.9.9) = %+v", p)
	}
}

// TestDecideDualStack checks that ipBlocks see the address of the connection's family,
// chosen from the other end when a pod's address is not given.
func TestDecideDualStack(t *testing.T) {
	pod := func(name string, ips ...string) api.Endpoint {
		ep := api.Endpoint{EndpointKey: api.EndpointKey{ContainerID: "ctr-" + name}, Name: name, Namespace: "v6", Labels: map[string]string{"pod": name}}
		for _, ip := range ips {
			ep.IPs = append(ep.IPs, netip.MustParsePrefix(ip))
		}
		return ep
	}
	p1 := pod("p1", "10.1.0.1/24", "fd00:1::1/64")
	p2 := pod("p2", "10.1.0.2/24", "fd00:1::2/64")
	w := World{
		Endpoints: []api.Endpoint{p1, p2},
		Policies: []api.NetworkPolicy{{Namespace: "v6", Name: "only-v6", Spec: api.NetworkPolicySpec{
			PodSelector: api.LabelSelector{MatchLabels: map[string]string{"pod": "p2"}},
			Ingress: []api.NetworkPolicyRule{{Peers: []api.NetworkPolicyPeer{{
				IPBlock: &api.IPBlock{CIDR: netip.MustParsePrefix("fd00:1::/64")},
			}}}},
		}}},
	}
	v4 := Decide(w, EndpointPeer(p1, netip.Addr{}), EndpointPeer(p2, netip.Addr{}), 80, "TCP")
	if v4.Allowed || v4.From.Addr.String() != "10.1.0.1" || v4.To.Addr.String() != "10.1.0.2" {
		t.Errorf("first addresses: %v (from %s to %s), want denied from 10.1.0.1 to 10.1.0.2", v4, v4.From.Addr, v4.To.Addr)
	}
	v6 := Decide(w, EndpointPeer(p1, netip.MustParseAddr("fd00:1::1")), EndpointPeer(p2, netip.Addr{}), 80, "TCP")
	if !v6.Allowed || v6.To.Addr.String() != "fd00:1::2" {
		t.Errorf("IPv6: %v (to %s), want allowed to fd00:1::2", v6, v6.To.Addr)
	}
}
