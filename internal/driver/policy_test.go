package driver_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/policy"
)

// The compiled policies (sets of addresses and of destination . protocol . port) must
// decide every connection as the reference evaluator does. Pods: namespaces x, y, z
// (ns=x|y|z), pods a, b, c in each (pod=a|b|c), dual-stack, with named ports that mean
// different numbers on different pods; x's pods are this node's, y's and z's another's.
// Each case's policies are compiled for both nodes; a connection passes when the
// source's node lets it out and the destination's node lets it in, which must equal
// policy.Decide, for every pair, family, and a set of ports and protocols.
func TestPoliciesAgreeWithEvaluator(t *testing.T) {
	var nss []api.Namespace
	var pods []api.Endpoint
	for i, ns := range []string{"x", "y", "z"} {
		nss = append(nss, api.Namespace{Name: ns, Labels: map[string]string{"ns": ns}})
		for j, pod := range []string{"a", "b", "c"} {
			node := "n1"
			if ns != "x" {
				node = "n2"
			}
			ep := api.Endpoint{EndpointKey: api.EndpointKey{Network: "pods", ContainerID: ns + pod, IfName: "eth0"}, Namespace: ns,
				Labels: map[string]string{"pod": pod}, Node: node, IPs: []netip.Prefix{
					netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i + 1), byte(j + 1)}), 16),
					netip.MustParsePrefix(fmt.Sprintf("fd00::%d:%d/64", i+1, j+1)),
				}}
			switch pod {
			case "a":
				ep.NamedPorts = []api.NamedPort{{Name: "http", Port: 80, Protocol: "tcp"}, {Name: "dns", Port: 53, Protocol: "udp"}}
			case "b":
				ep.NamedPorts = []api.NamedPort{{Name: "http", Port: 81, Protocol: "tcp"}}
			case "c":
				ep.NamedPorts = []api.NamedPort{{Name: "web", Port: 80, Protocol: "tcp"}}
			}
			pods = append(pods, ep)
		}
	}
	onNode := func(node string) []api.Endpoint {
		return slices.DeleteFunc(slices.Clone(pods), func(ep api.Endpoint) bool { return ep.Node != node })
	}
	outside := []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")}
	for name, doc := range policyCases {
		t.Run(name, func(t *testing.T) {
			pols, err := policy.Parse(strings.NewReader(doc))
			if err != nil {
				t.Fatal(err)
			}
			compiled := map[string][]nft.Policy{
				"n1": driver.Policies(pols, nss, pods, onNode("n1")),
				"n2": driver.Policies(pols, nss, pods, onNode("n2")),
			}
			w := policy.World{Policies: pols, Namespaces: nss, Endpoints: pods}
			type end struct {
				peer policy.Peer
				node string // "" outside the cluster
			}
			var ends []end
			for _, ep := range pods {
				ends = append(ends, end{policy.EndpointPeer(ep, netip.Addr{}), ep.Node})
			}
			for _, a := range outside {
				ends = append(ends, end{policy.AddressPeer(a), ""})
			}
			checked := 0
			for _, from := range ends {
				for _, to := range ends {
					if from.node == "" && to.node == "" || from.peer.Endpoint != nil && from.peer.Endpoint == to.peer.Endpoint {
						continue
					}
					for _, v6 := range []bool{false, true} {
						src, dst := addrOf(from.peer, v6), addrOf(to.peer, v6)
						if !src.IsValid() || !dst.IsValid() {
							continue
						}
						for _, pp := range []struct {
							proto string
							port  uint16
						}{{"tcp", 80}, {"tcp", 81}, {"tcp", 85}, {"udp", 53}, {"udp", 80}, {"sctp", 80}} {
							f, to2 := from.peer, to.peer
							f.Addr, to2.Addr = src, dst
							want := policy.Decide(w, f, to2, pp.port, strings.ToUpper(pp.proto)).Allowed
							got := (from.node == "" || passes(compiled[from.node], src, dst, pp.proto, pp.port, true)) &&
								(to.node == "" || passes(compiled[to.node], src, dst, pp.proto, pp.port, false))
							if got != want {
								t.Errorf("%s -> %s %s/%d: compiled allows %v, the evaluator %v", src, dst, pp.proto, pp.port, got, want)
							}
							checked++
						}
					}
				}
			}
			if checked < 1000 {
				t.Fatalf("only %d connections checked", checked)
			}
		})
	}
}

func addrOf(p policy.Peer, v6 bool) netip.Addr {
	if p.Endpoint == nil {
		if p.Addr.Is6() == v6 {
			return p.Addr
		}
		return netip.Addr{}
	}
	for _, ip := range p.Endpoint.IPs {
		if ip.Addr().Is6() == v6 {
			return ip.Addr()
		}
	}
	return netip.Addr{}
}

// passes applies the compiled policies of one node as its chains do: the egress side
// (out) for a source among its pods, the ingress side for a destination among them.
func passes(pols []nft.Policy, src, dst netip.Addr, proto string, port uint16, out bool) bool {
	self := dst
	if out {
		self = src
	}
	isolated := false
	for _, p := range pols {
		if !slices.Contains(p.Selected, self) || (out && !p.Egress) || (!out && !p.Ingress) {
			continue
		}
		isolated = true
		rules, peer := p.IngressRules, src
		if out {
			rules, peer = p.EgressRules, dst
		}
		for _, r := range rules {
			peerOK := r.AnyPeer || slices.ContainsFunc(r.Peers, func(a nft.AddrRange) bool { return inRange(a, peer) })
			portOK := r.AnyPort || slices.ContainsFunc(r.Ports, func(pr nft.PortRange) bool {
				return inRange(pr.Dst, dst) && pr.Protocol == proto && pr.From <= port && port <= pr.To
			})
			if peerOK && portOK {
				return true
			}
		}
	}
	return !isolated
}

func inRange(r nft.AddrRange, a netip.Addr) bool {
	return r.From.Is4() == a.Is4() && r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
}

var policyCases = map[string]string{
	"deny ingress in x": `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
`,
	"deny egress in x, allow dns": `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-out, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - ports: [{protocol: UDP, port: 53}]
`,
	"pod and namespace selectors, in one peer and in two": `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}, podSelector: {matchLabels: {pod: b}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: or, namespace: "y"}
spec:
  podSelector: {matchLabels: {pod: c}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}}, {podSelector: {matchLabels: {pod: b}}}]
`,
	"match expressions and ipBlock with except": `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: expr, namespace: z}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [x, "y"]}]}
      podSelector: {matchExpressions: [{key: pod, operator: Exists}]}
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}
    - ipBlock: {cidr: "fd00::/64", except: ["fd00::1:0/112"]}
`,
	"ipBlock alone, with except, both directions": `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: block, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24, 10.0.3.3/32]}}]
  egress:
  - to: [{ipBlock: {cidr: "fd00::/64", except: ["fd00::3:0/112"]}}, {ipBlock: {cidr: 192.0.2.0/25}}]
    ports: [{port: http}, {protocol: UDP}]
`,
	"ports by number, by name, with endPort, egress by name": `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ports, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - ports: [{port: http}]
  - from: [{namespaceSelector: {}}]
    ports: [{port: 80, endPort: 81}, {protocol: UDP, port: dns}]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: z}}}]
    ports: [{port: http}, {protocol: SCTP}]
  - to: [{ipBlock: {cidr: 192.0.2.0/24}}]
    ports: [{port: 80}]
`,
	"egress only, stacked with ingress": `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: out, namespace: "y"}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {pod: b}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: in, namespace: "y"}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{podSelector: {}}]
    ports: [{port: 81}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: in-too, namespace: "y"}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}}]
`,
}
