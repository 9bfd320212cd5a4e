package policy

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/podnet/podnet/api"
)

// The rules below are those of the Kubernetes API server for NetworkPolicy
// (pkg/apis/networking/validation, and the label and name rules of apimachinery),
// with podnet's wording. Field paths are spelled as in the Kubernetes document
// (spec.ingress[0].from[1].ipBlock.cidr), since that is what users write.

// Protocols a policy port may name.
const (
	ProtocolTCP  = "TCP"
	ProtocolUDP  = "UDP"
	ProtocolSCTP = "SCTP"
)

// Default fills in what a policy may leave out, as the API server's defaulting does:
// the namespace (api.DefaultNamespace), policyTypes (PolicyTypes) and each port's
// protocol (TCP). Parse returns policies already defaulted.
func Default(p *api.NetworkPolicy) {
	if p.Namespace == "" {
		p.Namespace = api.DefaultNamespace
	}
	p.Spec.PolicyTypes = PolicyTypes(p.Spec)
	for _, rules := range [][]api.NetworkPolicyRule{p.Spec.Ingress, p.Spec.Egress} {
		for i := range rules {
			for j := range rules[i].Ports {
				if rules[i].Ports[j].Protocol == "" {
					rules[i].Ports[j].Protocol = ProtocolTCP
				}
			}
		}
	}
}

// PolicyTypes returns the policy types of spec: those given, or when none are given the
// API's default, Ingress plus Egress when the spec has egress rules.
func PolicyTypes(spec api.NetworkPolicySpec) []string {
	if len(spec.PolicyTypes) > 0 {
		return slices.Clone(spec.PolicyTypes)
	}
	if len(spec.Egress) > 0 {
		return []string{api.PolicyIngress, api.PolicyEgress}
	}
	return []string{api.PolicyIngress}
}

// Validate checks a policy as the Kubernetes API server checks a NetworkPolicy: the
// name (a DNS-1123 subdomain) and namespace (a DNS-1123 label; it must be set, Default
// sets it), the label selectors, peers, ipBlocks, ports and policy types. An empty
// protocol (TCP) and empty policyTypes (the default) are valid.
//
// The error joins one *api.ValidationError per problem, each naming the policy, the
// field and the value: `policy "x/allow-web": spec.ingress[0].ports[1].endPort "70":
// smaller than port 80`.
func Validate(p api.NetworkPolicy) error {
	r := &report{object: policyObject(p.Namespace, p.Name)}
	r.policy(p)
	return r.err()
}

// policyObject names a policy in messages: `policy "ns/name"`.
func policyObject(namespace, name string) string {
	switch {
	case name == "":
		return fmt.Sprintf("policy in namespace %q", namespace)
	case namespace == "":
		return fmt.Sprintf("policy %q", name)
	}
	return fmt.Sprintf("policy %q", namespace+"/"+name)
}

// report collects the validation errors of one object.
type report struct {
	object string
	// prefix goes before every field path ("items[2]." inside a List).
	prefix string
	// reported holds the fields that already have an error (from decoding): later
	// checks of the same field stay silent, so each problem is told once.
	reported map[string]bool
	errs     []error
}

func (r *report) add(e *api.ValidationError) {
	if r.reported[e.Field] {
		return
	}
	e.Object = r.object
	e.Field = r.prefix + e.Field
	r.errs = append(r.errs, e)
}

// invalid records that field holds value, which is wrong for the reason.
func (r *report) invalid(field, value, format string, args ...any) {
	r.add(api.Invalid("", field, value, format, args...))
}

// noValue records a problem with field whose value is not worth showing (missing, or
// a list).
func (r *report) noValue(field, format string, args ...any) {
	r.add(&api.ValidationError{Field: field, NoValue: true, Reason: fmt.Sprintf(format, args...)})
}

// markReported records an error found while decoding field, silencing later checks of
// the same field.
func (r *report) markReported(field, value, format string, args ...any) {
	r.invalid(field, value, format, args...)
	if r.reported == nil {
		r.reported = map[string]bool{}
	}
	r.reported[field] = true
}

func (r *report) err() error {
	return errors.Join(r.errs...)
}

func (r *report) policy(p api.NetworkPolicy) {
	switch {
	case p.Name == "":
		r.noValue("metadata.name", "missing")
	default:
		if reason := checkDNSSubdomain(p.Name); reason != "" {
			r.invalid("metadata.name", p.Name, "%s", reason)
		}
	}
	switch {
	case p.Namespace == "":
		r.noValue("metadata.namespace", "missing")
	default:
		if reason := checkDNSLabel(p.Namespace); reason != "" {
			r.invalid("metadata.namespace", p.Namespace, "%s", reason)
		}
	}
	r.spec(p.Spec)
}

func (r *report) spec(s api.NetworkPolicySpec) {
	r.selector("spec.podSelector", s.PodSelector)
	for i, rule := range s.Ingress {
		r.rule(fmt.Sprintf("spec.ingress[%d]", i), "from", rule)
	}
	for i, rule := range s.Egress {
		r.rule(fmt.Sprintf("spec.egress[%d]", i), "to", rule)
	}
	if len(s.PolicyTypes) > 2 {
		r.invalid("spec.policyTypes", strings.Join(s.PolicyTypes, ","), "more than two policy types")
		return
	}
	for i, t := range s.PolicyTypes {
		if t != api.PolicyIngress && t != api.PolicyEgress {
			r.invalid(fmt.Sprintf("spec.policyTypes[%d]", i), t, "not a policy type (want Ingress or Egress)")
		}
	}
}

// rule checks one ingress or egress rule; peers is "from" or "to".
func (r *report) rule(path, peers string, rule api.NetworkPolicyRule) {
	for i, port := range rule.Ports {
		r.port(fmt.Sprintf("%s.ports[%d]", path, i), port)
	}
	for i, peer := range rule.Peers {
		r.peer(fmt.Sprintf("%s.%s[%d]", path, peers, i), peer)
	}
}

func (r *report) port(path string, p api.NetworkPolicyPort) {
	switch p.Protocol {
	case "", ProtocolTCP, ProtocolUDP, ProtocolSCTP:
	default:
		r.invalid(path+".protocol", p.Protocol, "not a protocol (want TCP, UDP or SCTP)")
	}
	end := strconv.Itoa(int(p.EndPort))
	switch {
	case p.Port == nil:
		if p.EndPort != 0 {
			r.invalid(path+".endPort", end, "only allowed with a port")
		}
	case p.Port.Name != "":
		if reason := checkPortName(p.Port.Name); reason != "" {
			r.invalid(path+".port", p.Port.Name, "%s", reason)
		}
		if p.EndPort != 0 {
			r.invalid(path+".endPort", end, "only allowed with a port number, not a port name")
		}
	default:
		if p.Port.Number == 0 {
			r.invalid(path+".port", "0", "must be from 1 to 65535")
		}
		if p.EndPort != 0 && p.EndPort < p.Port.Number {
			r.invalid(path+".endPort", end, "smaller than port %d", p.Port.Number)
		}
	}
}

func (r *report) peer(path string, p api.NetworkPolicyPeer) {
	if p.PodSelector != nil {
		r.selector(path+".podSelector", *p.PodSelector)
	}
	if p.NamespaceSelector != nil {
		r.selector(path+".namespaceSelector", *p.NamespaceSelector)
	}
	if p.IPBlock != nil {
		r.ipBlock(path+".ipBlock", *p.IPBlock)
	}
	switch {
	case p.PodSelector == nil && p.NamespaceSelector == nil && p.IPBlock == nil:
		r.noValue(path, "empty peer (give podSelector, namespaceSelector or ipBlock)")
	case p.IPBlock != nil && (p.PodSelector != nil || p.NamespaceSelector != nil):
		r.noValue(path, "ipBlock cannot be combined with podSelector or namespaceSelector")
	}
}

func (r *report) ipBlock(path string, b api.IPBlock) {
	if !b.CIDR.IsValid() {
		r.noValue(path+".cidr", "missing")
		return
	}
	if reason := checkPrefix(b.CIDR); reason != "" {
		r.invalid(path+".cidr", b.CIDR.String(), "%s", reason)
		return
	}
	for i, e := range b.Except {
		field := fmt.Sprintf("%s.except[%d]", path, i)
		switch {
		case !e.IsValid():
			r.noValue(field, "missing")
		case checkPrefix(e) != "":
			r.invalid(field, e.String(), "%s", checkPrefix(e))
		case e.Addr().Is4() != b.CIDR.Addr().Is4():
			r.invalid(field, e.String(), "not of the address family of cidr %s", b.CIDR)
		case e.Bits() <= b.CIDR.Bits() || !b.CIDR.Contains(e.Addr()):
			r.invalid(field, e.String(), "not strictly inside cidr %s", b.CIDR)
		}
	}
}

// checkPrefix returns why p is not acceptable as an ipBlock CIDR, or "". The API
// server's strict CIDR validation: no host bits, not IPv4-mapped (leading zeros and
// zones never parse into a netip.Prefix).
func checkPrefix(p netip.Prefix) string {
	switch {
	case p.Addr().Is4In6():
		return "IPv4-mapped IPv6 prefixes are not allowed"
	case p.Masked() != p:
		return fmt.Sprintf("host bits are set (did you mean %s?)", p.Masked())
	}
	return ""
}

func (r *report) selector(path string, sel api.LabelSelector) {
	for _, k := range slices.Sorted(maps.Keys(sel.MatchLabels)) {
		if reason := checkLabelKey(k); reason != "" {
			r.invalid(path+".matchLabels", k, "%s", reason)
		}
		if reason := checkLabelValue(sel.MatchLabels[k]); reason != "" {
			r.invalid(path+".matchLabels."+k, sel.MatchLabels[k], "%s", reason)
		}
	}
	for i, req := range sel.MatchExpressions {
		field := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		if reason := checkLabelKey(req.Key); reason != "" {
			r.invalid(field+".key", req.Key, "%s", reason)
		}
		switch req.Operator {
		case api.SelectorIn, api.SelectorNotIn:
			if len(req.Values) == 0 {
				r.noValue(field+".values", "missing (operator %s needs values)", req.Operator)
			}
		case api.SelectorExists, api.SelectorDoesNotExist:
			if len(req.Values) > 0 {
				r.noValue(field+".values", "must be empty with operator %s", req.Operator)
			}
		default:
			r.invalid(field+".operator", req.Operator, "not a selector operator (want In, NotIn, Exists or DoesNotExist)")
		}
		for j, v := range req.Values {
			if reason := checkLabelValue(v); reason != "" {
				r.invalid(fmt.Sprintf("%s.values[%d]", field, j), v, "%s", reason)
			}
		}
	}
}

// Name rules of Kubernetes (apimachinery's validation): DNS-1123 labels and
// subdomains, label keys and values, IANA service (port) names.
var (
	dnsLabelRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelNameRE    = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	portNameRE     = regexp.MustCompile(`^[-a-z0-9]+$`)
)

// checkDNSLabel returns why s is not a DNS-1123 label (a namespace name), or "".
func checkDNSLabel(s string) string {
	if len(s) > 63 || !dnsLabelRE.MatchString(s) {
		return "not a DNS-1123 label (1-63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
	}
	return ""
}

// checkDNSSubdomain returns why s is not a DNS-1123 subdomain (a policy name), or "".
func checkDNSSubdomain(s string) string {
	if len(s) > 253 || !dnsSubdomainRE.MatchString(s) {
		return "not a DNS-1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
	}
	return ""
}

// checkLabelKey returns why k is not a label key, or "": an optional DNS subdomain
// prefix and '/', then a name of 1-63 letters, digits, '-', '_' and '.', starting and
// ending with a letter or digit.
func checkLabelKey(k string) string {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		switch {
		case strings.Contains(rest, "/"):
			return "not a label key (more than one '/')"
		case prefix == "":
			return "not a label key (empty prefix before '/')"
		case len(prefix) > 253 || !dnsSubdomainRE.MatchString(prefix):
			return "not a label key (the prefix before '/' must be a DNS-1123 subdomain)"
		}
		name = rest
	}
	switch {
	case name == "":
		return "not a label key (empty name)"
	case len(name) > 63:
		return "not a label key (name longer than 63 characters)"
	case !labelNameRE.MatchString(name):
		return "not a label key (the name must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"
	}
	return ""
}

// checkLabelValue returns why v is not a label value, or "": empty, or at most 63
// letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
func checkLabelValue(v string) string {
	if v == "" {
		return ""
	}
	if len(v) > 63 || !labelNameRE.MatchString(v) {
		return "not a label value (at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"
	}
	return ""
}

// checkPortName returns why s is not a port name (an IANA_SVC_NAME), or "": 1-15
// lowercase letters, digits and '-', at least one letter, no '-' at either end and no
// "--".
func checkPortName(s string) string {
	switch {
	case len(s) > 15:
		return "not a port name (longer than 15 characters)"
	case !portNameRE.MatchString(s):
		return "not a port name (only lowercase letters, digits and '-')"
	case !strings.ContainsFunc(s, func(c rune) bool { return 'a' <= c && c <= 'z' }):
		return "not a port name (no letter)"
	case strings.Contains(s, "--"):
		return "not a port name (contains \"--\")"
	case s[0] == '-' || s[len(s)-1] == '-':
		return "not a port name (starts or ends with '-')"
	}
	return ""
}
