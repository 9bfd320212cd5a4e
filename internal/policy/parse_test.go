package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
)

func parseFile(t *testing.T, name string) []api.NetworkPolicy {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ps, err := Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return ps
}

func TestParseYAMLAndJSON(t *testing.T) {
	sel := func(kv ...string) *api.LabelSelector {
		s := &api.LabelSelector{}
		for i := 0; i < len(kv); i += 2 {
			if s.MatchLabels == nil {
				s.MatchLabels = map[string]string{}
			}
			s.MatchLabels[kv[i]] = kv[i+1]
		}
		return s
	}
	want := api.NetworkPolicy{
		Namespace: "x",
		Name:      "allow-web",
		Spec: api.NetworkPolicySpec{
			PodSelector: api.LabelSelector{
				MatchLabels:      map[string]string{"app": "web"},
				MatchExpressions: []api.LabelSelectorRequirement{{Key: "tier", Operator: "In", Values: []string{"front", "edge"}}},
			},
			PolicyTypes: []string{"Ingress", "Egress"},
			Ingress: []api.NetworkPolicyRule{
				{
					Peers: []api.NetworkPolicyPeer{
						{PodSelector: sel("app", "lb")},
						{NamespaceSelector: sel("team", "ops"), PodSelector: sel()},
						{IPBlock: &api.IPBlock{
							CIDR:   netip.MustParsePrefix("192.0.2.0/24"),
							Except: []netip.Prefix{netip.MustParsePrefix("192.0.2.128/25")},
						}},
					},
					Ports: []api.NetworkPolicyPort{
						{Protocol: "TCP", Port: &api.PortValue{Number: 80}},
						{Protocol: "UDP", Port: &api.PortValue{Name: "dns"}},
						{Protocol: "TCP", Port: &api.PortValue{Number: 8000}, EndPort: 8080},
					},
				},
				{},
			},
			Egress: []api.NetworkPolicyRule{{Ports: []api.NetworkPolicyPort{{Protocol: "SCTP"}}}},
		},
	}
	for _, name := range []string{"allow-web.yaml", "allow-web.json"} {
		ps := parseFile(t, name)
		if len(ps) != 1 || !reflect.DeepEqual(ps[0], want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, ps, want)
		}
	}
}

func TestParseDocuments(t *testing.T) {
	type summary struct {
		ref   string
		types string
	}
	for _, tc := range []struct {
		file string
		want []summary
	}{
		{"documents.yaml", []summary{
			{"x/deny-ingress", "Ingress"},
			{"default/json-in-the-middle", "Egress"}, // namespace defaulted, policyTypes kept
			{"z/first", "Ingress"},
			{"z/second", "Ingress,Egress"},
		}},
		{"list.json", []summary{
			{"y/a", "Ingress,Egress"},
			{"y/b", "Ingress"}, // policyTypes: [] is defaulted like a missing one
		}},
	} {
		var got []summary
		for _, p := range parseFile(t, tc.file) {
			got = append(got, summary{p.Namespace + "/" + p.Name, strings.Join(p.Spec.PolicyTypes, ",")})
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.file, got, tc.want)
		}
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "\n\n", "---\n---\n", "# only a comment\n"} {
		ps, err := Parse(strings.NewReader(in))
		if err != nil || len(ps) != 0 {
			t.Errorf("Parse(%q) = %v, %v; want nothing", in, ps, err)
		}
	}
}

// doc returns a policy document x/p with the given spec (YAML at the top level).
func doc(spec string) string { return np("x", "p", spec) }

func TestParseErrors(t *testing.T) {
	const head = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
	for _, tc := range []struct {
		name, in, want string
	}{
		// Strict decoding.
		{"unknown field names its path and document",
			doc("podSelector: {}") + "---\n" + np("x", "deny", "podSelector: {}\ningress:\n- form: []"),
			`document 2 (policy "x/deny"): spec.ingress[0].form: unknown field`},
		{"unknown metadata field",
			head + "metadata: {name: p, namespace: x, lables: {a: b}}\nspec: {podSelector: {}}\n",
			`document 1 (policy "x/p"): metadata.lables: unknown field`},
		{"field names are case-sensitive",
			doc("podSelector: {}\nIngress: []"),
			`document 1 (policy "x/p"): spec.Ingress: unknown field`},
		{"duplicate field in JSON",
			`{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p"}, "spec": {"podSelector": {}, "podSelector": {}}}`,
			`document 1 (policy "default/p"): spec.podSelector: duplicate field`},
		{"duplicate key in YAML",
			doc("podSelector: {}\npodSelector: {}"),
			`document 1 (from line 1): not valid YAML: unmarshal errors: line 6: key "podSelector" already set in map`},
		{"YAML syntax",
			doc("podSelector: {}") + "---\n" + head + "metadata: {name: [}\n",
			`document 2 (from line 7): not valid YAML: line 2: did not find expected node content`},
		{"JSON syntax",
			`{"apiVersion": "networking.k8s.io/v1", "kind": }`,
			`document 1 (from line 1): not valid JSON: invalid character '}' looking for beginning of value`},
		{"wrong type",
			doc("podSelector: {matchLabels: [a]}"),
			`document 1 (policy "x/p"): spec.podSelector.matchLabels: an array where an object is expected`},
		{"wrong type in a list",
			doc("podSelector: {}\npolicyTypes: [{a: b}]"),
			`document 1 (policy "x/p"): spec.policyTypes: an object where a string is expected`},
		{"wrong type for a port",
			doc("podSelector: {}\ningress: [{ports: [{port: [80]}]}]"),
			`document 1 (policy "x/p"): spec.ingress.ports.port: an array where a number or string is expected`},
		{"YAML 1.1 boolean where a string is expected",
			head + "metadata: {name: p, namespace: y}\nspec: {podSelector: {}}\n",
			`document 1: metadata.namespace: a bool where a string is expected (YAML reads y, n, yes, no, on, off, true and false as booleans: quote the value)`},
		{"YAML in flow style",
			`{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p}, spec: {podSelector: {}, foo: 1}}`,
			`document 1 (policy "default/p"): spec.foo: unknown field`},
		{"not an object",
			"- a\n- b\n",
			`document 1: not a NetworkPolicy or a List of them`},

		// Document kinds.
		{"kind missing",
			"apiVersion: networking.k8s.io/v1\nmetadata: {name: p}\n",
			`document 1: kind: missing (want NetworkPolicy or List)`},
		{"another kind",
			"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
			`document 1: kind "Pod": not a NetworkPolicy or a List of them`},
		{"another apiVersion",
			"apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}}\n",
			`document 1 (policy "x/p"): apiVersion "networking.k8s.io/v1beta1": want networking.k8s.io/v1`},
		{"List apiVersion",
			"apiVersion: networking.k8s.io/v1\nkind: List\nitems: []\n",
			`document 1: apiVersion "networking.k8s.io/v1": want v1 for kind List`},
		{"List unknown field",
			"apiVersion: v1\nkind: List\nitem: []\n",
			`document 1: item: unknown field`},
		{"List item of another kind",
			"apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: web}, spec: {containers: []}}\n",
			`document 1 (policy "default/web"): items[0].kind "Pod": not a NetworkPolicy`},
		{"List item unknown field",
			"apiVersion: v1\nkind: List\nitems:\n" +
				"- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: a, namespace: x}, spec: {podSelector: {}}}\n" +
				"- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: b, namespace: x}, spec: {podSelector: {}, egres: []}}\n",
			`document 1 (policy "x/b"): items[1].spec.egres: unknown field`},
		{"List item invalid",
			"apiVersion: v1\nkind: List\nitems:\n" +
				"- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: a, namespace: x}, spec: {podSelector: {}, policyTypes: [Both]}}\n",
			`document 1 (policy "x/a"): items[0].spec.policyTypes[0] "Both": not a policy type (want Ingress or Egress)`},
		{"the same policy twice",
			doc("podSelector: {}") + "---\n" + doc("podSelector: {}"),
			`document 2 (policy "x/p"): the same policy as in document 1`},
		{"every error of every document",
			doc("podSelector: {}\nfoo: 1") + "---\n" + doc("podSelector: {}\npolicyTypes: [In, Out]"),
			`document 1 (policy "x/p"): spec.foo: unknown field` + "\n" +
				`document 2 (policy "x/p"): spec.policyTypes[0] "In": not a policy type (want Ingress or Egress)` + "\n" +
				`document 2 (policy "x/p"): spec.policyTypes[1] "Out": not a policy type (want Ingress or Egress)`},
	} {
		ps, err := Parse(strings.NewReader(tc.in))
		if err == nil {
			t.Errorf("%s: no error, want %s", tc.name, tc.want)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, err, tc.want)
		}
		if ps != nil {
			t.Errorf("%s: returned policies with the error", tc.name)
		}
	}
}

// TestParseValidation checks every validation rule through Parse, with its message.
func TestParseValidation(t *testing.T) {
	const (
		dnsLabel     = "not a DNS-1123 label (1-63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
		dnsSubdomain = "not a DNS-1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
		labelValue   = "not a label value (at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"
		protocol     = "not a protocol (want TCP, UDP or SCTP)"
		portRange    = "must be from 1 to 65535"
	)
	meta := func(m string) string {
		return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: " + m + "\nspec: {podSelector: {}}\n"
	}
	ingressPort := func(port string) string { return doc("podSelector: {}\ningress:\n- ports: [" + port + "]") }
	from := func(peer string) string { return doc("podSelector: {}\ningress:\n- from: [" + peer + "]") }
	expr := func(e string) string { return doc("podSelector: {matchExpressions: [" + e + "]}") }
	long := strings.Repeat("a", 64)
	for _, tc := range []struct {
		name, in, want string
	}{
		// Names.
		{"name missing", meta("{namespace: x}"), `document 1: metadata.name: missing`},
		{"name not a subdomain", meta("{name: Allow_Web, namespace: x}"), `document 1 (policy "x/Allow_Web"): metadata.name "Allow_Web": ` + dnsSubdomain},
		{"name too long", meta("{name: " + strings.Repeat("a.", 127) + "a, namespace: x}"),
			`document 1 (policy "x/` + strings.Repeat("a.", 127) + `a"): metadata.name "` + strings.Repeat("a.", 127) + `a": ` + dnsSubdomain},
		{"namespace not a label", meta("{name: p, namespace: x.y}"), `document 1 (policy "x.y/p"): metadata.namespace "x.y": ` + dnsLabel},
		{"namespace too long", meta("{name: p, namespace: " + long + "}"), `document 1 (policy "` + long + `/p"): metadata.namespace "` + long + `": ` + dnsLabel},
		{"metadata label key", meta("{name: p, namespace: x, labels: {a/b/c: v}}"),
			`document 1 (policy "x/p"): metadata.labels "a/b/c": not a label key (more than one '/')`},
		{"metadata label value", meta("{name: p, namespace: x, labels: {k: -v}}"),
			`document 1 (policy "x/p"): metadata.labels.k "-v": ` + labelValue},

		// Label selectors.
		{"matchLabels key with an empty prefix", doc("podSelector: {matchLabels: {/app: web}}"),
			`document 1 (policy "x/p"): spec.podSelector.matchLabels "/app": not a label key (empty prefix before '/')`},
		{"matchLabels key with a bad prefix", doc("podSelector: {matchLabels: {Example.com/app: web}}"),
			`document 1 (policy "x/p"): spec.podSelector.matchLabels "Example.com/app": not a label key (the prefix before '/' must be a DNS-1123 subdomain)`},
		{"matchLabels key with an empty name", doc("podSelector: {matchLabels: {example.com/: web}}"),
			`document 1 (policy "x/p"): spec.podSelector.matchLabels "example.com/": not a label key (empty name)`},
		{"matchLabels key name too long", doc("podSelector: {matchLabels: {" + long + ": web}}"),
			`document 1 (policy "x/p"): spec.podSelector.matchLabels "` + long + `": not a label key (name longer than 63 characters)`},
		{"matchLabels key characters", doc("podSelector: {matchLabels: {\"app name\": web}}"),
			`document 1 (policy "x/p"): spec.podSelector.matchLabels "app name": not a label key (the name must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit)`},
		{"matchLabels value", doc("podSelector: {matchLabels: {app: web_}}"),
			`document 1 (policy "x/p"): spec.podSelector.matchLabels.app "web_": ` + labelValue},
		{"matchLabels value too long", doc("podSelector: {matchLabels: {app: " + long + "}}"),
			`document 1 (policy "x/p"): spec.podSelector.matchLabels.app "` + long + `": ` + labelValue},
		{"operator", expr("{key: app, operator: Equals, values: [web]}"),
			`document 1 (policy "x/p"): spec.podSelector.matchExpressions[0].operator "Equals": not a selector operator (want In, NotIn, Exists or DoesNotExist)`},
		{"In without values", expr("{key: app, operator: In}"),
			`document 1 (policy "x/p"): spec.podSelector.matchExpressions[0].values: missing (operator In needs values)`},
		{"NotIn with empty values", expr("{key: app, operator: NotIn, values: []}"),
			`document 1 (policy "x/p"): spec.podSelector.matchExpressions[0].values: missing (operator NotIn needs values)`},
		{"Exists with values", expr("{key: app, operator: Exists, values: [web]}"),
			`document 1 (policy "x/p"): spec.podSelector.matchExpressions[0].values: must be empty with operator Exists`},
		{"DoesNotExist with values", expr("{key: app, operator: DoesNotExist, values: [web]}"),
			`document 1 (policy "x/p"): spec.podSelector.matchExpressions[0].values: must be empty with operator DoesNotExist`},
		{"expression key", expr("{key: -app, operator: Exists}"),
			`document 1 (policy "x/p"): spec.podSelector.matchExpressions[0].key "-app": not a label key (the name must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit)`},
		{"expression value", expr("{key: app, operator: In, values: [web, \"a b\"]}"),
			`document 1 (policy "x/p"): spec.podSelector.matchExpressions[0].values[1] "a b": ` + labelValue},
		{"peer selectors", from("{namespaceSelector: {matchLabels: {team: -}}, podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].podSelector.matchExpressions[0].values: must be empty with operator Exists` + "\n" +
				`document 1 (policy "x/p"): spec.ingress[0].from[0].namespaceSelector.matchLabels.team "-": ` + labelValue},

		// Peers and ipBlocks.
		{"empty peer", from("{}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0]: empty peer (give podSelector, namespaceSelector or ipBlock)`},
		{"ipBlock with a selector", from("{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0]: ipBlock cannot be combined with podSelector or namespaceSelector`},
		{"cidr missing", from("{ipBlock: {}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.cidr: missing`},
		{"cidr not a prefix", from("{ipBlock: {cidr: 10.0.0.0/33}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.cidr "10.0.0.0/33": not a CIDR prefix`},
		{"cidr without length", from("{ipBlock: {cidr: 10.0.0.1}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.cidr "10.0.0.1": not a CIDR prefix`},
		{"cidr with leading zeros", from("{ipBlock: {cidr: 010.0.0.0/8}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.cidr "010.0.0.0/8": not a CIDR prefix`},
		{"cidr with host bits", from("{ipBlock: {cidr: 10.0.0.1/8}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.cidr "10.0.0.1/8": host bits are set (did you mean 10.0.0.0/8?)`},
		{"cidr IPv4-mapped", from("{ipBlock: {cidr: \"::ffff:10.0.0.0/104\"}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.cidr "::ffff:10.0.0.0/104": IPv4-mapped IPv6 prefixes are not allowed`},
		{"except outside cidr", from("{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24, 10.1.0.0/24]}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.except[1] "10.1.0.0/24": not strictly inside cidr 10.0.0.0/16`},
		{"except equal to cidr", from("{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16]}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.except[0] "10.0.0.0/16": not strictly inside cidr 10.0.0.0/16`},
		{"except larger than cidr", from("{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/8]}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.except[0] "10.0.0.0/8": not strictly inside cidr 10.0.0.0/16`},
		{"except of another family", from("{ipBlock: {cidr: 10.0.0.0/16, except: [\"fd00::/64\"]}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.except[0] "fd00::/64": not of the address family of cidr 10.0.0.0/16`},
		{"except not a prefix", from("{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/99]}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.except[0] "10.0.0.0/99": not a CIDR prefix`},
		{"except with host bits", from("{ipBlock: {cidr: \"fd00::/48\", except: [\"fd00::1/64\"]}}"),
			`document 1 (policy "x/p"): spec.ingress[0].from[0].ipBlock.except[0] "fd00::1/64": host bits are set (did you mean fd00::/64?)`},
		{"egress peers are under to", doc("podSelector: {}\negress:\n- to: [{}]"),
			`document 1 (policy "x/p"): spec.egress[0].to[0]: empty peer (give podSelector, namespaceSelector or ipBlock)`},

		// Ports.
		{"endPort smaller than port", np("x", "allow-web", "podSelector: {}\ningress:\n- ports: [{port: 443}, {port: 80, endPort: 70}]"),
			`document 1 (policy "x/allow-web"): spec.ingress[0].ports[1].endPort "70": smaller than port 80`},
		{"protocol in lower case", ingressPort("{protocol: tcp, port: 80}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].protocol "tcp": ` + protocol},
		{"protocol empty", ingressPort("{protocol: \"\", port: 80}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].protocol "": ` + protocol},
		{"protocol unknown", ingressPort("{protocol: ICMP}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].protocol "ICMP": ` + protocol},
		{"port 0", ingressPort("{port: 0}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].port "0": ` + portRange},
		{"port too large", ingressPort("{port: 65536}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].port "65536": ` + portRange},
		{"port negative", ingressPort("{port: -1}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].port "-1": ` + portRange},
		{"endPort too large", ingressPort("{port: 80, endPort: 70000}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].endPort "70000": ` + portRange},
		{"endPort 0", ingressPort("{port: 80, endPort: 0}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].endPort "0": ` + portRange},
		{"endPort with a port name", ingressPort("{port: http, endPort: 90}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].endPort "90": only allowed with a port number, not a port name`},
		{"endPort without port", ingressPort("{protocol: UDP, endPort: 90}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].endPort "90": only allowed with a port`},
		{"port name empty", ingressPort("{port: \"\"}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].port "": not a port name (empty)`},
		{"port name upper case", ingressPort("{port: HTTP}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].port "HTTP": not a port name (only lowercase letters, digits and '-')`},
		{"port name too long", ingressPort("{port: abcdefghijklmnop}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].port "abcdefghijklmnop": not a port name (longer than 15 characters)`},
		{"port name without a letter", ingressPort("{port: \"80\"}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].port "80": not a port name (no letter)`},
		{"port name with --", ingressPort("{port: web--alt}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].port "web--alt": not a port name (contains "--")`},
		{"port name ending with -", ingressPort("{port: web-}"),
			`document 1 (policy "x/p"): spec.ingress[0].ports[0].port "web-": not a port name (starts or ends with '-')`},
		{"egress ports", doc("podSelector: {}\negress:\n- ports: [{port: 99999}]"),
			`document 1 (policy "x/p"): spec.egress[0].ports[0].port "99999": ` + portRange},

		// Policy types.
		{"policy type", doc("podSelector: {}\npolicyTypes: [ingress]"),
			`document 1 (policy "x/p"): spec.policyTypes[0] "ingress": not a policy type (want Ingress or Egress)`},
		{"more than two policy types", doc("podSelector: {}\npolicyTypes: [Ingress, Egress, Ingress]"),
			`document 1 (policy "x/p"): spec.policyTypes "Ingress,Egress,Ingress": more than two policy types`},
	} {
		_, err := Parse(strings.NewReader(tc.in))
		if err == nil {
			t.Errorf("%s: no error, want %s", tc.name, tc.want)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, err, tc.want)
		}
		var ve *api.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: not an *api.ValidationError: %T", tc.name, err)
		}
	}
}
