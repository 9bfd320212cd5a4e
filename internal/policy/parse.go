package policy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/podnet/podnet/api"
)

// APIVersion is the API group version of the NetworkPolicy documents Parse reads.
const APIVersion = "networking.k8s.io/v1"

// Parse reads Kubernetes NetworkPolicy documents (networking.k8s.io/v1) in YAML or
// JSON: one document, several separated by "---" lines, or a List (kind List or
// NetworkPolicyList) whose items are policies. Decoding is strict, as `kubectl apply`
// with server-side field validation: an unknown or duplicate field is an error naming
// its path. Each policy is defaulted (namespace "default", protocol TCP, policyTypes as
// the API defaults them) and validated as the API server does.
//
// Parse returns all policies or none: the error joins every problem of every document,
// each naming the document and the policy, e.g. `document 2 (policy "x/deny"):
// spec.ingress[0].form: unknown field`. Documents are numbered from 1, not counting
// empty ones. A policy given twice (same namespace and name) is an error.
func Parse(r io.Reader) ([]api.NetworkPolicy, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	var (
		policies []api.NetworkPolicy
		errs     []error
		seen     = map[string]int{} // namespace/name -> document
		n        int
	)
	for _, doc := range splitDocuments(data) {
		js, err := documentJSON(doc.text)
		if err == nil && js == nil {
			continue // empty, or only comments
		}
		n++
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d (from line %d): %w", n, doc.line, err))
			continue
		}
		ps, err := decodeDocument(n, js)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range ps {
			key := p.Namespace + "/" + p.Name
			if first, ok := seen[key]; ok {
				errs = append(errs, fmt.Errorf("document %d (policy %q): the same policy as in document %d", n, key, first))
				continue
			}
			seen[key] = n
			policies = append(policies, p)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return policies, nil
}

// document is one "---"-separated part of the input and the line it starts on.
type document struct {
	text []byte
	line int
}

// splitDocuments cuts the input at separator lines: "---" alone or followed by
// spaces or a comment, as Kubernetes' YAML reader does.
func splitDocuments(data []byte) []document {
	var (
		docs []document
		cur  bytes.Buffer
		line int
	)
	start := 1
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, len(data)+1)
	for sc.Scan() {
		line++
		l := sc.Text()
		if rest, ok := strings.CutPrefix(l, "---"); ok {
			if rest = strings.TrimSpace(rest); rest == "" || rest[0] == '#' {
				docs = append(docs, document{text: bytes.Clone(cur.Bytes()), line: start})
				cur.Reset()
				start = line + 1
				continue
			}
		}
		cur.WriteString(l)
		cur.WriteByte('\n')
	}
	return append(docs, document{text: cur.Bytes(), line: start})
}

// documentJSON returns a document as JSON: as is when it is JSON, converted when it is
// YAML (duplicate keys are an error). It returns nil for an empty document.
func documentJSON(doc []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(doc)
	if len(trimmed) == 0 {
		return nil, nil
	}
	// JSON: an object whose first key is quoted. (YAML in flow style starts with '{'
	// too, usually with a bare key.)
	if rest := bytes.TrimSpace(trimmed[1:]); trimmed[0] == '{' && (len(rest) == 0 || rest[0] == '"' || rest[0] == '}') {
		var v any
		if err := json.Unmarshal(trimmed, &v); err != nil {
			return nil, fmt.Errorf("not valid JSON: %w", err)
		}
		return trimmed, nil
	}
	// Converted without a target type, so that YAML 1.1's implicit types apply as in
	// kubectl: `namespace: y` is a boolean, and an error.
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		return nil, fmt.Errorf("not valid YAML: %s", strings.Join(strings.Fields(msg), " "))
	}
	if string(js) == "null" {
		return nil, nil
	}
	return js, nil
}

// typeMeta is what identifies a document: its apiVersion and kind.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// list is a List document, whose items are checked one by one.
type list struct {
	typeMeta
	Metadata metav1.ListMeta   `json:"metadata"`
	Items    []json.RawMessage `json:"items"`
}

// decodeDocument decodes document n: a NetworkPolicy or a List of them.
func decodeDocument(n int, js []byte) ([]api.NetworkPolicy, error) {
	object := fmt.Sprintf("document %d", n)
	var tm typeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, &api.ValidationError{Object: object, Reason: "not a NetworkPolicy or a List of them"}
	}
	switch tm.Kind {
	case "NetworkPolicy":
		p, err := decodePolicy(object, "", js)
		if err != nil {
			return nil, err
		}
		return []api.NetworkPolicy{p}, nil
	case "List", "NetworkPolicyList":
		want := "v1"
		if tm.Kind == "NetworkPolicyList" {
			want = APIVersion
		}
		if tm.APIVersion != want {
			return nil, api.Invalid(object, "apiVersion", tm.APIVersion, "want %s for kind %s", want, tm.Kind)
		}
		var l list
		if err := strictUnmarshal(object, "", js, &l); err != nil {
			return nil, err
		}
		var (
			policies []api.NetworkPolicy
			errs     []error
		)
		for i, item := range l.Items {
			p, err := decodePolicy(object, fmt.Sprintf("items[%d].", i), item)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			policies = append(policies, p)
		}
		return policies, errors.Join(errs...)
	case "":
		return nil, &api.ValidationError{Object: object, Field: "kind", NoValue: true, Reason: "missing (want NetworkPolicy or List)"}
	default:
		return nil, api.Invalid(object, "kind", tm.Kind, "not a NetworkPolicy or a List of them")
	}
}

// decodePolicy decodes, converts and validates one NetworkPolicy; prefix is its field
// path inside the document ("items[2]." in a List).
func decodePolicy(object, prefix string, js []byte) (api.NetworkPolicy, error) {
	// Name the policy in messages as soon as its name is known, and check what the
	// document is before decoding it strictly.
	var head struct {
		typeMeta
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if json.Unmarshal(js, &head) == nil && head.Metadata.Name != "" {
		ns := head.Metadata.Namespace
		if ns == "" {
			ns = api.DefaultNamespace
		}
		object = fmt.Sprintf("%s (%s)", object, policyObject(ns, head.Metadata.Name))
	}
	switch {
	case head.Kind == "":
		return api.NetworkPolicy{}, &api.ValidationError{Object: object, Field: prefix + "kind", NoValue: true, Reason: "missing (want NetworkPolicy)"}
	case head.Kind != "NetworkPolicy":
		return api.NetworkPolicy{}, api.Invalid(object, prefix+"kind", head.Kind, "not a NetworkPolicy")
	case head.APIVersion != APIVersion:
		return api.NetworkPolicy{}, api.Invalid(object, prefix+"apiVersion", head.APIVersion, "want %s", APIVersion)
	}
	var np netv1.NetworkPolicy
	if err := strictUnmarshal(object, prefix, js, &np); err != nil {
		return api.NetworkPolicy{}, err
	}
	r := &report{object: object, prefix: prefix}
	p := convert(np, r)
	for _, k := range slices.Sorted(maps.Keys(np.Labels)) {
		if reason := checkLabelKey(k); reason != "" {
			r.invalid("metadata.labels", k, "%s", reason)
		}
		if reason := checkLabelValue(np.Labels[k]); reason != "" {
			r.invalid("metadata.labels."+k, np.Labels[k], "%s", reason)
		}
	}
	r.policy(p)
	if err := r.err(); err != nil {
		return api.NetworkPolicy{}, err
	}
	return p, nil
}

// strictUnmarshal decodes js into v as the API server does with strict field
// validation: field names are case-sensitive, unknown and duplicate fields are errors.
func strictUnmarshal(object, prefix string, js []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(js, v)
	if err != nil {
		return typeError(object, prefix, err)
	}
	var errs []error
	for _, e := range strict {
		var fe kjson.FieldError
		if !errors.As(e, &fe) {
			errs = append(errs, &api.ValidationError{Object: object, Reason: e.Error()})
			continue
		}
		reason := "unknown field"
		if strings.HasPrefix(fe.Error(), "duplicate field") {
			reason = "duplicate field"
		}
		errs = append(errs, &api.ValidationError{Object: object, Field: prefix + fe.FieldPath(), NoValue: true, Reason: reason})
	}
	return errors.Join(errs...)
}

// typeErrorRE takes apart the decoder's message for a value of the wrong JSON type:
// "json: cannot unmarshal bool into Go struct field ObjectMeta.metadata.namespace of
// type string".
var typeErrorRE = regexp.MustCompile(`cannot unmarshal (\S+) into Go struct field [^.\s]+\.(\S+) of type (\S+)`)

// typeError turns a decoding error into a validation error naming the field when the
// message allows it (array indexes are not in it).
func typeError(object, prefix string, err error) error {
	m := typeErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		return &api.ValidationError{Object: object, Reason: strings.TrimPrefix(err.Error(), "json: ")}
	}
	got, field, want := m[1], m[2], jsonKind(m[3])
	if strings.HasSuffix(field, "ports.port") {
		want = "number or string" // an IntOrString decodes non-strings as numbers
	}
	reason := fmt.Sprintf("%s %s where %s %s is expected", article(got), got, article(want), want)
	switch {
	case want == "string" && got == "bool":
		reason += " (YAML reads y, n, yes, no, on, off, true and false as booleans: quote the value)"
	case want == "string" && got == "number":
		reason += " (quote the value)"
	}
	return &api.ValidationError{Object: object, Field: prefix + field, NoValue: true, Reason: reason}
}

// jsonKind names the JSON kind of value a Go type takes.
func jsonKind(goType string) string {
	t := strings.TrimLeft(goType, "*")
	switch {
	case strings.HasPrefix(t, "map["):
		return "object"
	case strings.HasPrefix(t, "[]"):
		return "array"
	case t == "string" || t == "bool":
		return t
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint") || strings.HasPrefix(t, "float"):
		return "number"
	case strings.HasSuffix(t, "IntOrString"):
		return "number or string"
	case strings.HasSuffix(t, "Protocol") || strings.HasSuffix(t, "PolicyType") || strings.HasSuffix(t, "LabelSelectorOperator"):
		return "string"
	default:
		return "object"
	}
}

func article(word string) string {
	if strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

// convert turns a decoded Kubernetes policy into podnet's, defaulted. Values podnet's
// types cannot hold (CIDRs that do not parse, port numbers out of range) are reported
// to r; the rest is left to validation.
func convert(np netv1.NetworkPolicy, r *report) api.NetworkPolicy {
	p := api.NetworkPolicy{
		Namespace: np.Namespace,
		Name:      np.Name,
		Spec: api.NetworkPolicySpec{
			PodSelector: convertSelector(np.Spec.PodSelector),
		},
	}
	for _, t := range np.Spec.PolicyTypes {
		p.Spec.PolicyTypes = append(p.Spec.PolicyTypes, string(t))
	}
	for i, rule := range np.Spec.Ingress {
		path := fmt.Sprintf("spec.ingress[%d]", i)
		p.Spec.Ingress = append(p.Spec.Ingress, api.NetworkPolicyRule{
			Peers: convertPeers(path+".from", rule.From, r),
			Ports: convertPorts(path+".ports", rule.Ports, r),
		})
	}
	for i, rule := range np.Spec.Egress {
		path := fmt.Sprintf("spec.egress[%d]", i)
		p.Spec.Egress = append(p.Spec.Egress, api.NetworkPolicyRule{
			Peers: convertPeers(path+".to", rule.To, r),
			Ports: convertPorts(path+".ports", rule.Ports, r),
		})
	}
	Default(&p)
	return p
}

func convertSelector(s metav1.LabelSelector) api.LabelSelector {
	var sel api.LabelSelector
	if len(s.MatchLabels) > 0 {
		sel.MatchLabels = maps.Clone(s.MatchLabels)
	}
	for _, e := range s.MatchExpressions {
		sel.MatchExpressions = append(sel.MatchExpressions, api.LabelSelectorRequirement{
			Key:      e.Key,
			Operator: string(e.Operator),
			Values:   slices.Clone(e.Values),
		})
	}
	return sel
}

func convertPeers(path string, peers []netv1.NetworkPolicyPeer, r *report) []api.NetworkPolicyPeer {
	var out []api.NetworkPolicyPeer
	for i, peer := range peers {
		var p api.NetworkPolicyPeer
		if peer.PodSelector != nil {
			sel := convertSelector(*peer.PodSelector)
			p.PodSelector = &sel
		}
		if peer.NamespaceSelector != nil {
			sel := convertSelector(*peer.NamespaceSelector)
			p.NamespaceSelector = &sel
		}
		if b := peer.IPBlock; b != nil {
			field := fmt.Sprintf("%s[%d].ipBlock", path, i)
			p.IPBlock = &api.IPBlock{CIDR: parsePrefix(field+".cidr", b.CIDR, r)}
			for j, e := range b.Except {
				p.IPBlock.Except = append(p.IPBlock.Except, parsePrefix(fmt.Sprintf("%s.except[%d]", field, j), e, r))
			}
		}
		out = append(out, p)
	}
	return out
}

// parsePrefix parses a CIDR of an ipBlock; one that does not parse is reported and
// left zero. An empty one is left to validation (missing).
func parsePrefix(field, s string, r *report) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		r.markReported(field, s, "not a CIDR prefix")
	}
	return p
}

func convertPorts(path string, ports []netv1.NetworkPolicyPort, r *report) []api.NetworkPolicyPort {
	var out []api.NetworkPolicyPort
	for i, port := range ports {
		field := fmt.Sprintf("%s[%d]", path, i)
		p := api.NetworkPolicyPort{Protocol: ProtocolTCP}
		if port.Protocol != nil {
			p.Protocol = string(*port.Protocol)
			if p.Protocol == "" {
				r.markReported(field+".protocol", "", "not a protocol (want TCP, UDP or SCTP)")
			}
		}
		if port.Port != nil {
			if port.Port.Type == intstr.String {
				p.Port = &api.PortValue{Name: port.Port.StrVal}
				if port.Port.StrVal == "" {
					r.markReported(field+".port", "", "not a port name (empty)")
				}
			} else {
				p.Port = &api.PortValue{Number: portNumber(field+".port", port.Port.IntVal, r)}
			}
		}
		if port.EndPort != nil {
			p.EndPort = portNumber(field+".endPort", *port.EndPort, r)
		}
		out = append(out, p)
	}
	return out
}

// portNumber returns n as a port number, reporting one outside 1-65535 (and returning 0).
func portNumber(field string, n int32, r *report) uint16 {
	if n < 1 || n > 65535 {
		r.markReported(field, strconv.Itoa(int(n)), "must be from 1 to 65535")
		return 0
	}
	return uint16(n)
}
