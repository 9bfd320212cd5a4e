package policy

import (
	"cmp"
	"maps"
	"slices"

	"github.com/podnet/podnet/api"
)

// Matches reports whether labels satisfy sel: every matchLabels pair is present with
// its value, and every expression holds. The empty selector matches everything.
//
// Expressions: In holds when the key is present with one of the values; NotIn when the
// key is absent or its value is none of the values; Exists when the key is present;
// DoesNotExist when it is absent. An expression with another operator never holds (the
// selector matches nothing), as Kubernetes refuses to build such a selector.
func Matches(sel api.LabelSelector, labels map[string]string) bool {
	for k, want := range sel.MatchLabels {
		if v, ok := labels[k]; !ok || v != want {
			return false
		}
	}
	for _, req := range sel.MatchExpressions {
		if !requirementHolds(req, labels) {
			return false
		}
	}
	return true
}

func requirementHolds(req api.LabelSelectorRequirement, labels map[string]string) bool {
	v, present := labels[req.Key]
	switch req.Operator {
	case api.SelectorIn:
		return present && slices.Contains(req.Values, v)
	case api.SelectorNotIn:
		return !present || !slices.Contains(req.Values, v)
	case api.SelectorExists:
		return present
	case api.SelectorDoesNotExist:
		return !present
	default:
		return false
	}
}

// NamespaceLabels returns the labels namespace selectors see on ns: its own labels plus
// kubernetes.io/metadata.name=<name>, which always holds the namespace's name (as in
// Kubernetes, where the API server sets it and nobody can change it).
func NamespaceLabels(ns api.Namespace) map[string]string {
	labels := make(map[string]string, len(ns.Labels)+1)
	maps.Copy(labels, ns.Labels)
	labels[api.NamespaceNameLabel] = ns.Name
	return labels
}

// Selects reports whether policy p applies to endpoint ep: ep is in p's namespace and
// its labels match p's podSelector.
func Selects(p api.NetworkPolicy, ep api.Endpoint) bool {
	return endpointNamespace(ep) == policyNamespace(p) && Matches(p.Spec.PodSelector, ep.Labels)
}

// endpointNamespace is the namespace ep belongs to: DefaultNamespace when unset.
func endpointNamespace(ep api.Endpoint) string {
	return cmp.Or(ep.Namespace, api.DefaultNamespace)
}

// policyNamespace is the namespace of p: DefaultNamespace when unset.
func policyNamespace(p api.NetworkPolicy) string {
	return cmp.Or(p.Namespace, api.DefaultNamespace)
}

// NamedPort returns the port of ep's named port name of protocol proto (TCP, UDP or
// SCTP, any case; empty is TCP).
func NamedPort(ep api.Endpoint, name, proto string) (uint16, bool) {
	for _, np := range ep.NamedPorts {
		if np.Name == name && protocolOf(np.Protocol) == protocolOf(proto) {
			return np.Port, true
		}
	}
	return 0, false
}
