package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
)

// The upstream Kubernetes network policy e2e model: namespaces x, y and z labelled
// ns=x|y|z, pods a, b and c in each labelled pod=a|b|c. Pod <ns><pod> has address
// 10.0.<1|2|3 for x|y|z>.<1|2|3 for a|b|c>, so x/b is 10.0.1.2. Named ports differ
// per pod so that one name means different numbers: a has http=80/tcp and dns=53/udp,
// b has http=81/tcp, c has web=80/tcp and no http.
//
// YAML reads a bare y as a boolean (as kubectl does, YAML 1.1), so the policies quote "y".
//
// Truth tables (grids) are written by hand from the Kubernetes semantics. Rows are
// sources, columns destinations, in the order xa xb xc ya yb yc za zb zc, grouped by
// namespace; 'Y' means the connection is allowed, '-' that it is denied (not upstream's
// notation, where '.' is allowed and 'X' denied). A pod always reaches itself, so the
// diagonal is all 'Y'. Header lines (not starting with a pod name) are decoration.

var (
	e2eNamespaces = []string{"x", "y", "z"}
	e2ePods       = []string{"a", "b", "c"}
)

// e2eWorld returns the model's namespaces and endpoints, and no policies.
func e2eWorld() World {
	var w World
	for i, ns := range e2eNamespaces {
		w.Namespaces = append(w.Namespaces, api.Namespace{Name: ns, Labels: map[string]string{"ns": ns}})
		for j, pod := range e2ePods {
			ep := api.Endpoint{
				EndpointKey: api.EndpointKey{Network: "pods", ContainerID: "ctr-" + ns + pod, IfName: "eth0"},
				Name:        pod,
				Namespace:   ns,
				Labels:      map[string]string{"pod": pod},
				IPs:         []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i + 1), byte(j + 1)}), 16)},
			}
			switch pod {
			case "a":
				ep.NamedPorts = []api.NamedPort{{Name: "http", Port: 80, Protocol: "tcp"}, {Name: "dns", Port: 53, Protocol: "udp"}}
			case "b":
				ep.NamedPorts = []api.NamedPort{{Name: "http", Port: 81, Protocol: "tcp"}}
			case "c":
				ep.NamedPorts = []api.NamedPort{{Name: "web", Port: 80, Protocol: "tcp"}}
			}
			w.Endpoints = append(w.Endpoints, ep)
		}
	}
	return w
}

// endpoint returns the endpoint named like "xa" (namespace x, pod a).
func (w World) endpoint(t testing.TB, short string) *api.Endpoint {
	for i := range w.Endpoints {
		if ep := &w.Endpoints[i]; ep.Namespace+ep.Name == short {
			return ep
		}
	}
	t.Fatalf("no endpoint %s", short)
	return nil
}

func (w World) namespace(t testing.TB, name string) *api.Namespace {
	for i := range w.Namespaces {
		if w.Namespaces[i].Name == name {
			return &w.Namespaces[i]
		}
	}
	t.Fatalf("no namespace %s", name)
	return nil
}

// np returns a NetworkPolicy document of namespace ns named name, with spec given as
// YAML (indented as at the top level).
func np(ns, name, spec string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: %q, name: %q}\nspec:\n", ns, name)
	for _, l := range strings.Split(strings.Trim(spec, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// Grids used by several cases.
const (
	allAllowed = `
    x   y   z
xa  YYY YYY YYY
xb  YYY YYY YYY
xc  YYY YYY YYY
ya  YYY YYY YYY
yb  YYY YYY YYY
yc  YYY YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`

	// Only x/a's ingress is closed.
	xaClosed = `
    x   y   z
xa  YYY YYY YYY
xb  -YY YYY YYY
xc  -YY YYY YYY
ya  -YY YYY YYY
yb  -YY YYY YYY
yc  -YY YYY YYY
za  -YY YYY YYY
zb  -YY YYY YYY
zc  -YY YYY YYY`

	// Only z/c's ingress is closed.
	zcClosed = `
    x   y   z
xa  YYY YYY YY-
xb  YYY YYY YY-
xc  YYY YYY YY-
ya  YYY YYY YY-
yb  YYY YYY YY-
yc  YYY YYY YY-
za  YYY YYY YY-
zb  YYY YYY YY-
zc  YYY YYY YYY`

	// The ingress of all pods of x is closed.
	xIngressClosed = `
    x   y   z
xa  Y-- YYY YYY
xb  -Y- YYY YYY
xc  --Y YYY YYY
ya  --- YYY YYY
yb  --- YYY YYY
yc  --- YYY YYY
za  --- YYY YYY
zb  --- YYY YYY
zc  --- YYY YYY`
)

// probe is one truth table of a case: every pod to every pod on port/proto.
type probe struct {
	port  uint16
	proto string
	want  string
}

func tcp80(want string) []probe { return []probe{{80, "TCP", want}} }

var e2eCases = []struct {
	name     string
	policies []string
	// change edits the world after the policies are in (relabelling).
	change func(t *testing.T, w *World)
	probes []probe
}{
	{
		name:   "no policies",
		probes: tcp80(allAllowed),
	},
	{
		name:     "default deny ingress",
		policies: []string{np("x", "deny-ingress", `podSelector: {}`)},
		probes:   tcp80(xIngressClosed),
	},
	{
		name: "default deny egress",
		policies: []string{np("x", "deny-egress", `
podSelector: {}
policyTypes: [Egress]`)},
		probes: tcp80(`
    x   y   z
xa  Y-- --- ---
xb  -Y- --- ---
xc  --Y --- ---
ya  YYY YYY YYY
yb  YYY YYY YYY
yc  YYY YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`),
	},
	{
		name: "default deny both directions",
		policies: []string{np("x", "deny-all", `
podSelector: {}
policyTypes: [Ingress, Egress]`)},
		probes: tcp80(`
    x   y   z
xa  Y-- --- ---
xb  -Y- --- ---
xc  --Y --- ---
ya  --- YYY YYY
yb  --- YYY YYY
yc  --- YYY YYY
za  --- YYY YYY
zb  --- YYY YYY
zc  --- YYY YYY`),
	},
	{
		name: "allow all over deny all",
		policies: []string{
			np("x", "deny-all", `
podSelector: {}
policyTypes: [Ingress, Egress]`),
			np("x", "allow-all", `
podSelector: {}
ingress: [{}]
egress: [{}]`),
		},
		probes: []probe{{80, "TCP", allAllowed}, {81, "UDP", allAllowed}, {9, "SCTP", allAllowed}},
	},
	{
		name: "podSelector",
		policies: []string{np("x", "b-to-a", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from: [{podSelector: {matchLabels: {pod: b}}}]`)},
		// y/b and z/b are not allowed: a podSelector alone means the policy's namespace.
		probes: tcp80(`
    x   y   z
xa  YYY YYY YYY
xb  YYY YYY YYY
xc  -YY YYY YYY
ya  -YY YYY YYY
yb  -YY YYY YYY
yc  -YY YYY YYY
za  -YY YYY YYY
zb  -YY YYY YYY
zc  -YY YYY YYY`),
	},
	{
		name: "namespaceSelector",
		policies: []string{np("x", "y-to-a", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]`)},
		probes: tcp80(`
    x   y   z
xa  YYY YYY YYY
xb  -YY YYY YYY
xc  -YY YYY YYY
ya  YYY YYY YYY
yb  YYY YYY YYY
yc  YYY YYY YYY
za  -YY YYY YYY
zb  -YY YYY YYY
zc  -YY YYY YYY`),
	},
	{
		name: "namespaceSelector and podSelector in one peer",
		policies: []string{np("x", "yz-b-to-a", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: ["y", z]}]}
    podSelector: {matchLabels: {pod: b}}`)},
		// Only pods b of y and z.
		probes: tcp80(`
    x   y   z
xa  YYY YYY YYY
xb  -YY YYY YYY
xc  -YY YYY YYY
ya  -YY YYY YYY
yb  YYY YYY YYY
yc  -YY YYY YYY
za  -YY YYY YYY
zb  YYY YYY YYY
zc  -YY YYY YYY`),
	},
	{
		name: "namespaceSelector and podSelector as two peers",
		policies: []string{np("x", "yz-or-b-to-a", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: ["y", z]}]}
  - podSelector: {matchLabels: {pod: b}}`)},
		// All of y and z, and x/b.
		probes: tcp80(`
    x   y   z
xa  YYY YYY YYY
xb  YYY YYY YYY
xc  -YY YYY YYY
ya  YYY YYY YYY
yb  YYY YYY YYY
yc  YYY YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`),
	},
	{
		name:     "matchExpressions",
		policies: []string{matchExpressionsPolicy},
		// Selects x/b and x/c (pod NotIn [a]); allows pods with a pod label outside
		// x, and x/a (pod In [a], no role label). So x/b and x/c cannot reach each other.
		probes: tcp80(`
    x   y   z
xa  YYY YYY YYY
xb  YY- YYY YYY
xc  Y-Y YYY YYY
ya  YYY YYY YYY
yb  YYY YYY YYY
yc  YYY YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`),
	},
	{
		name:     "matchExpressions, pods relabelled out of the peers",
		policies: []string{matchExpressionsPolicy},
		change: func(t *testing.T, w *World) {
			w.endpoint(t, "xa").Labels["role"] = "admin" // fails DoesNotExist
			w.endpoint(t, "yc").Labels = nil             // fails Exists
			// Without a pod label x/c still matches pod NotIn [a] (still selected).
			w.endpoint(t, "xc").Labels = nil
		},
		probes: tcp80(`
    x   y   z
xa  Y-- YYY YYY
xb  YY- YYY YYY
xc  Y-Y YYY YYY
ya  YYY YYY YYY
yb  YYY YYY YYY
yc  Y-- YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`),
	},
	{
		name: "pod selected",
		policies: []string{np("x", "deny-a", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress]`)},
		probes: tcp80(xaClosed),
	},
	{
		name: "pods relabelled into and out of the selector",
		policies: []string{np("x", "deny-a", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress]`)},
		change: func(t *testing.T, w *World) {
			w.endpoint(t, "xa").Labels["pod"] = "d"
			w.endpoint(t, "xb").Labels["pod"] = "a"
		},
		probes: tcp80(`
    x   y   z
xa  Y-Y YYY YYY
xb  YYY YYY YYY
xc  Y-Y YYY YYY
ya  Y-Y YYY YYY
yb  Y-Y YYY YYY
yc  Y-Y YYY YYY
za  Y-Y YYY YYY
zb  Y-Y YYY YYY
zc  Y-Y YYY YYY`),
	},
	{
		name: "ipBlock with except, ingress",
		policies: []string{np("x", "block-to-a", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}}]`)},
		// Pod addresses match ipBlocks: x and z are in, y is excepted.
		probes: tcp80(`
    x   y   z
xa  YYY YYY YYY
xb  YYY YYY YYY
xc  YYY YYY YYY
ya  -YY YYY YYY
yb  -YY YYY YYY
yc  -YY YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`),
	},
	{
		name: "ipBlock with except, egress",
		policies: []string{np("x", "b-to-block", `
podSelector: {matchLabels: {pod: b}}
policyTypes: [Egress]
egress:
- to: [{ipBlock: {cidr: 10.0.3.0/24, except: [10.0.3.2/32]}}]`)},
		probes: tcp80(`
    x   y   z
xa  YYY YYY YYY
xb  -Y- --- Y-Y
xc  YYY YYY YYY
ya  YYY YYY YYY
yb  YYY YYY YYY
yc  YYY YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`),
	},
	{
		name: "ports by number",
		policies: []string{np("x", "a-on-81", `
podSelector: {matchLabels: {pod: a}}
ingress:
- ports: [{port: 81}]`)},
		probes: []probe{
			{80, "TCP", xaClosed},
			{81, "TCP", allAllowed},
			{81, "UDP", xaClosed}, // the protocol defaults to TCP
		},
	},
	{
		name: "ports by name",
		policies: []string{np("x", "http", `
podSelector: {}
ingress:
- ports: [{port: http}]`)},
		// http is 80 on a, 81 on b, absent on c.
		probes: []probe{
			{80, "TCP", `
    x   y   z
xa  Y-- YYY YYY
xb  YY- YYY YYY
xc  Y-Y YYY YYY
ya  Y-- YYY YYY
yb  Y-- YYY YYY
yc  Y-- YYY YYY
za  Y-- YYY YYY
zb  Y-- YYY YYY
zc  Y-- YYY YYY`},
			{81, "TCP", `
    x   y   z
xa  YY- YYY YYY
xb  -Y- YYY YYY
xc  -YY YYY YYY
ya  -Y- YYY YYY
yb  -Y- YYY YYY
yc  -Y- YYY YYY
za  -Y- YYY YYY
zb  -Y- YYY YYY
zc  -Y- YYY YYY`},
			{80, "UDP", xIngressClosed}, // no pod has http/udp
		},
	},
	{
		name: "egress ports by name, resolved on the destination",
		policies: []string{np("y", "a-out-http", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- ports: [{port: http}]`)},
		probes: []probe{
			{80, "TCP", `
    x   y   z
xa  YYY YYY YYY
xb  YYY YYY YYY
xc  YYY YYY YYY
ya  Y-- Y-- Y--
yb  YYY YYY YYY
yc  YYY YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`},
			{81, "TCP", `
    x   y   z
xa  YYY YYY YYY
xb  YYY YYY YYY
xc  YYY YYY YYY
ya  -Y- YY- -Y-
yb  YYY YYY YYY
yc  YYY YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`},
		},
	},
	{
		name: "endPort",
		policies: []string{np("z", "c-range", `
podSelector: {matchLabels: {pod: c}}
ingress:
- ports: [{protocol: TCP, port: 81, endPort: 90}]`)},
		probes: []probe{
			{80, "TCP", zcClosed},
			{81, "TCP", allAllowed},
			{85, "TCP", allAllowed},
			{90, "TCP", allAllowed},
			{91, "TCP", zcClosed},
			{85, "UDP", zcClosed},
		},
	},
	{
		name: "policyTypes Egress only",
		policies: []string{np("x", "a-egress", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
ingress:
- from: [{podSelector: {matchLabels: {pod: b}}}]
egress:
- to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]`)},
		// The ingress rules are ignored: x/a's ingress stays open.
		probes: tcp80(`
    x   y   z
xa  Y-- YYY ---
xb  YYY YYY YYY
xc  YYY YYY YYY
ya  YYY YYY YYY
yb  YYY YYY YYY
yc  YYY YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`),
	},
	{
		name: "policyTypes defaulted to Ingress and Egress",
		policies: []string{np("x", "a-egress", `
podSelector: {matchLabels: {pod: a}}
egress:
- to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]`)},
		// Egress rules make the default [Ingress, Egress]: no ingress rule, so x/a's
		// ingress is closed.
		probes: tcp80(`
    x   y   z
xa  Y-- YYY ---
xb  -YY YYY YYY
xc  -YY YYY YYY
ya  -YY YYY YYY
yb  -YY YYY YYY
yc  -YY YYY YYY
za  -YY YYY YYY
zb  -YY YYY YYY
zc  -YY YYY YYY`),
	},
	{
		name: "stacked policies",
		policies: []string{
			np("x", "b-to-a", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from: [{podSelector: {matchLabels: {pod: b}}}]`),
			np("x", "y-to-a", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]`),
			// An egress-only policy selecting x/a does not touch its ingress.
			np("x", "a-egress-open", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress: [{}]`),
		},
		probes: tcp80(`
    x   y   z
xa  YYY YYY YYY
xb  YYY YYY YYY
xc  -YY YYY YYY
ya  YYY YYY YYY
yb  YYY YYY YYY
yc  YYY YYY YYY
za  -YY YYY YYY
zb  -YY YYY YYY
zc  -YY YYY YYY`),
	},
	{
		name:     "namespace name label",
		policies: namespacePolicies,
		// x/a takes ns=y, x/b takes kubernetes.io/metadata.name=z.
		probes: tcp80(`
    x   y   z
xa  Y-Y YYY YYY
xb  -YY YYY YYY
xc  --Y YYY YYY
ya  Y-Y YYY YYY
yb  Y-Y YYY YYY
yc  Y-Y YYY YYY
za  -YY YYY YYY
zb  -YY YYY YYY
zc  -YY YYY YYY`),
	},
	{
		name:     "namespaces relabelled",
		policies: namespacePolicies,
		change: func(t *testing.T, w *World) {
			w.namespace(t, "y").Labels = map[string]string{"ns": "other"}
			// The name label cannot be overridden: z stays z for x/b's policy.
			w.namespace(t, "z").Labels = map[string]string{"ns": "y", api.NamespaceNameLabel: "fake"}
		},
		probes: tcp80(`
    x   y   z
xa  Y-Y YYY YYY
xb  -YY YYY YYY
xc  --Y YYY YYY
ya  --Y YYY YYY
yb  --Y YYY YYY
yc  --Y YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`),
	},
	{
		name: "egress of the source and ingress of the destination",
		policies: []string{
			np("x", "out-to-y", `
podSelector: {}
policyTypes: [Egress]
egress:
- to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]`),
			np("y", "in-from-z", `
podSelector: {}
ingress:
- from: [{namespaceSelector: {matchLabels: {ns: z}}}]`),
		},
		// x may only send to y, and y only takes from z: x reaches nobody.
		probes: tcp80(`
    x   y   z
xa  Y-- --- ---
xb  -Y- --- ---
xc  --Y --- ---
ya  YYY Y-- YYY
yb  YYY -Y- YYY
yc  YYY --Y YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`),
	},
	{
		name: "allow the same namespace",
		policies: []string{np("x", "same-namespace", `
podSelector: {}
ingress:
- from: [{podSelector: {}}]`)},
		probes: tcp80(`
    x   y   z
xa  YYY YYY YYY
xb  YYY YYY YYY
xc  YYY YYY YYY
ya  --- YYY YYY
yb  --- YYY YYY
yc  --- YYY YYY
za  --- YYY YYY
zb  --- YYY YYY
zc  --- YYY YYY`),
	},
	{
		name: "empty namespaceSelector selects all namespaces",
		policies: []string{np("x", "all-namespaces", `
podSelector: {}
ingress:
- from: [{namespaceSelector: {}}]`)},
		probes: tcp80(allAllowed),
	},
}

const matchExpressionsPolicy = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x, name: expressions}
spec:
  podSelector:
    matchExpressions: [{key: pod, operator: NotIn, values: [a]}]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
      podSelector:
        matchExpressions: [{key: pod, operator: Exists}]
    - podSelector:
        matchExpressions:
        - {key: role, operator: DoesNotExist}
        - {key: pod, operator: In, values: [a]}
`

var namespacePolicies = []string{
	np("x", "y-to-a", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]`),
	np("x", "z-to-b", `
podSelector: {matchLabels: {pod: b}}
ingress:
- from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]`),
}

func TestDecideE2EModel(t *testing.T) {
	for _, tc := range e2eCases {
		t.Run(tc.name, func(t *testing.T) {
			w := e2eWorld()
			if len(tc.policies) > 0 {
				ps, err := Parse(strings.NewReader(strings.Join(tc.policies, "---\n")))
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				w.Policies = ps
			}
			if tc.change != nil {
				tc.change(t, &w)
			}
			for _, p := range tc.probes {
				want := parseGrid(t, p.want)
				got := truthTable(w, p.port, p.proto)
				if got == want {
					continue
				}
				t.Errorf("%s %d: got\n%s\nwant\n%s", p.proto, p.port, formatGrid(got), formatGrid(want))
				for i, from := range w.Endpoints {
					for j, to := range w.Endpoints {
						if got[i][j] != want[i][j] {
							v := Decide(w, EndpointPeer(from, netip.Addr{}), EndpointPeer(to, netip.Addr{}), p.port, p.proto)
							t.Logf("%s%s -> %s%s: %v", from.Namespace, from.Name, to.Namespace, to.Name, v)
						}
					}
				}
			}
		})
	}
}

// grid is a truth table: grid[from][to], in the order of e2eWorld's endpoints.
type grid [9][9]bool

func truthTable(w World, port uint16, proto string) grid {
	var g grid
	for i, from := range w.Endpoints {
		for j, to := range w.Endpoints {
			g[i][j] = Decide(w, EndpointPeer(from, netip.Addr{}), EndpointPeer(to, netip.Addr{}), port, proto).Allowed
		}
	}
	return g
}

// rowNames are the grid's row names in order.
func rowNames() []string {
	var names []string
	for _, ns := range e2eNamespaces {
		for _, pod := range e2ePods {
			names = append(names, ns+pod)
		}
	}
	return names
}

func parseGrid(t *testing.T, s string) grid {
	t.Helper()
	var g grid
	names := rowNames()
	row := 0
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !slices.Contains(names, f[0]) {
			continue // header
		}
		if row == len(names) || f[0] != names[row] {
			t.Fatalf("grid row %q out of order", line)
		}
		marks := strings.Join(f[1:], "")
		if len(marks) != len(names) || strings.Trim(marks, "Y-") != "" {
			t.Fatalf("grid row %q: want 9 marks of 'Y' and '-'", line)
		}
		for col := range marks {
			g[row][col] = marks[col] == 'Y'
		}
		row++
	}
	if row != len(names) {
		t.Fatalf("grid has %d rows, want %d", row, len(names))
	}
	return g
}

func formatGrid(g grid) string {
	var b strings.Builder
	b.WriteString("    x   y   z\n")
	for i, name := range rowNames() {
		b.WriteString(name + " ")
		for j := range g[i] {
			if j%3 == 0 {
				b.WriteByte(' ')
			}
			if g[i][j] {
				b.WriteByte('Y')
			} else {
				b.WriteByte('-')
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// TestGridNotation checks the test's own grid reading on a table that is not
// symmetric, so that rows and columns cannot be swapped unnoticed.
func TestGridNotation(t *testing.T) {
	g := parseGrid(t, `
    x   y   z
xa  YYY YYY YYY
xb  -Y- --- Y-Y
xc  YYY YYY YYY
ya  YYY YYY YYY
yb  YYY YYY YYY
yc  YYY YYY YYY
za  YYY YYY YYY
zb  YYY YYY YYY
zc  YYY YYY YYY`)
	if g[1][0] || !g[1][1] || !g[1][6] || g[1][7] || !g[0][1] {
		t.Errorf("grid read wrong:\n%s", formatGrid(g))
	}
}
