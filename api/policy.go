package api

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Network policy: the Kubernetes NetworkPolicy (networking.k8s.io/v1) as podnet stores
// it, with the same fields and meaning. internal/policy parses the Kubernetes documents
// into these types and decides what they allow.

// Policy types.
const (
	PolicyIngress = "Ingress"
	PolicyEgress  = "Egress"
)

// Label selector operators (matchExpressions).
const (
	SelectorIn           = "In"
	SelectorNotIn        = "NotIn"
	SelectorExists       = "Exists"
	SelectorDoesNotExist = "DoesNotExist"
)

// NamespaceNameLabel is the label every namespace carries with its own name, as in
// Kubernetes.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// NetworkPolicy is a namespaced policy: which pods it selects, and what traffic to and
// from them it allows.
type NetworkPolicy struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Spec      NetworkPolicySpec `json:"spec"`
	Created   time.Time         `json:"created"`
	// Source is "" for podnet's own policies, SourceKubernetes for the controller's.
	Source string `json:"source,omitempty"`
}

// NetworkPolicySpec is the policy's content, as the API's.
type NetworkPolicySpec struct {
	// PodSelector selects the pods of the policy's namespace it applies to; the empty
	// selector selects them all.
	PodSelector LabelSelector `json:"podSelector"`
	// PolicyTypes is Ingress, Egress or both, defaulted as the API does: Ingress, plus
	// Egress when there are egress rules.
	PolicyTypes []string            `json:"policyTypes"`
	Ingress     []NetworkPolicyRule `json:"ingress,omitempty"`
	Egress      []NetworkPolicyRule `json:"egress,omitempty"`
}

// NetworkPolicyRule is one ingress rule (Peers are its "from") or egress rule (its
// "to"): traffic matching any peer and any port passes. No peers: all peers; no ports:
// all ports.
type NetworkPolicyRule struct {
	Peers []NetworkPolicyPeer `json:"peers,omitempty"`
	Ports []NetworkPolicyPort `json:"ports,omitempty"`
}

// NetworkPolicyPeer is one peer: pods by selector (of the policy's namespace, or of the
// namespaces NamespaceSelector selects; both set means both must match), or addresses.
type NetworkPolicyPeer struct {
	PodSelector       *LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`
	IPBlock           *IPBlock       `json:"ipBlock,omitempty"`
}

// IPBlock is a CIDR minus some CIDRs inside it.
type IPBlock struct {
	CIDR   netip.Prefix   `json:"cidr"`
	Except []netip.Prefix `json:"except,omitempty"`
}

// NetworkPolicyPort is a protocol (TCP, UDP or SCTP; TCP by default) and a port: a
// number, a named container port (resolved per destination pod), or a range Port to
// EndPort; no port means every port of the protocol.
type NetworkPolicyPort struct {
	Protocol string     `json:"protocol"`
	Port     *PortValue `json:"port,omitempty"`
	EndPort  uint16     `json:"endPort,omitempty"`
}

// PortValue is a port number or a port name (a Kubernetes IntOrString): in JSON, a
// number or a string.
type PortValue struct {
	Number uint16
	Name   string
}

func (p PortValue) String() string {
	if p.Name != "" {
		return p.Name
	}
	return strconv.Itoa(int(p.Number))
}

func (p PortValue) MarshalJSON() ([]byte, error) {
	if p.Name != "" {
		return json.Marshal(p.Name)
	}
	return json.Marshal(p.Number)
}

func (p *PortValue) UnmarshalJSON(b []byte) error {
	var n uint16
	if err := json.Unmarshal(b, &n); err == nil {
		*p = PortValue{Number: n}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("port %s: want a number from 1 to 65535 or a port name", b)
	}
	*p = PortValue{Name: s}
	return nil
}

// LabelSelector selects objects by labels: all of MatchLabels and all of
// MatchExpressions must hold. The empty selector selects everything.
type LabelSelector struct {
	MatchLabels      map[string]string          `json:"matchLabels,omitempty"`
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelSelectorRequirement is one expression: Key Operator Values.
type LabelSelectorRequirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Namespace is a namespace of endpoints, services and policies, with its labels (which
// always include NamespaceNameLabel).
type Namespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// Source is "" for podnet's own records, SourceKubernetes for the controller's.
	Source string `json:"source,omitempty"`
}

// NamespaceLabelRequest sets Labels on namespace Name and removes the keys in Remove.
// A label that has another value already is refused unless Overwrite.
type NamespaceLabelRequest struct {
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	Remove    []string          `json:"remove,omitempty"`
	Overwrite bool              `json:"overwrite,omitempty"`
}

// PolicyExplainRequest asks how the policies decide a connection: From and To name an
// endpoint (NAMESPACE/NAME, NAME in the default namespace, or a container ID) or an
// address.
type PolicyExplainRequest struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol,omitempty"`
}

// NamedPort is a named container port of an endpoint (CNI runtimeConfig namedPorts),
// which policies name as `port: NAME`.
type NamedPort struct {
	Name     string `json:"name"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
}
