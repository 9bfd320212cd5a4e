package api

import (
	"maps"
	"net/netip"
	"slices"
	"time"
)

// Defaults of service discovery.
const (
	DefaultNamespace     = "default"
	DefaultClusterDomain = "cluster.local"
	DefaultServiceCIDR   = "10.96.0.0/16"
	// DNSAddress is where every sandbox finds the cluster DNS server: a link-local
	// address the agent puts on an interface of its own in the node (as NodeLocal
	// DNSCache does), reachable from every network through the sandbox's gateway.
	DNSAddress = "169.254.20.10"
	// AffinityClientIP sends a client to the same backend while it keeps talking.
	AffinityClientIP = "client-ip"
)

// SourceKubernetes marks the objects that podnet controller mirrors from the Kubernetes
// API (services, network policies, namespaces, pods): only the controller changes them;
// the CLI refuses to, naming the object.
const SourceKubernetes = "kubernetes"

// Internal traffic policies (Kubernetes spec.internalTrafficPolicy): Cluster balances
// over every ready backend; Local only over the backends on the client's node.
const (
	TrafficPolicyCluster = "Cluster"
	TrafficPolicyLocal   = "Local"
)

// ServicePort is one port of a service; TargetPort is the backends' port (default Port).
type ServicePort struct {
	Name       string `json:"name,omitempty"`
	Port       uint16 `json:"port"`
	TargetPort uint16 `json:"targetPort"`
	Protocol   string `json:"protocol"` // "tcp" or "udp"
	// NodePort, when set, publishes the service on this port of every node's addresses
	// (Kubernetes type NodePort).
	NodePort uint16 `json:"nodePort,omitempty"`
}

// ServiceSpec defines a service as a user gives it.
type ServiceSpec struct {
	Name      string        `json:"name"`
	Namespace string        `json:"namespace,omitempty"`
	Ports     []ServicePort `json:"ports"`
	// Selector picks the endpoints of the service's namespace whose labels match all
	// of its pairs; Endpoints lists backends by address instead ("IP" or "IP:PORT").
	Selector  map[string]string `json:"selector,omitempty"`
	Endpoints []string          `json:"endpoints,omitempty"`
	Headless  bool              `json:"headless,omitempty"`
	Affinity  string            `json:"affinity,omitempty"` // "" or AffinityClientIP

	// Source is "" for podnet's own objects, SourceKubernetes for the controller's.
	Source string `json:"source,omitempty"`
	// VIPs, when given, are the service's virtual addresses as another allocator chose
	// them (Kubernetes ClusterIPs); podnet allocates them from its service CIDR when empty.
	VIPs []netip.Addr `json:"vips,omitempty"`
	// ExternalName makes the service a DNS alias (CNAME) of this name: no VIP, no backends.
	ExternalName string `json:"externalName,omitempty"`
	// InternalTrafficPolicy is TrafficPolicyCluster (when empty) or TrafficPolicyLocal.
	InternalTrafficPolicy string `json:"internalTrafficPolicy,omitempty"`
	// Slices are backends with their conditions, as Kubernetes EndpointSlices list them
	// (instead of Selector or Endpoints).
	Slices []SliceEndpoint `json:"slices,omitempty"`
}

// SliceEndpoint is one endpoint of a Kubernetes EndpointSlice: addresses, conditions,
// and the slice's ports (a service port goes to the port of the same name and protocol).
type SliceEndpoint struct {
	Addrs []netip.Addr `json:"addrs"`
	Ports []NamedPort  `json:"ports,omitempty"`
	// Hostname gives the endpoint a DNS name under a headless service.
	Hostname string `json:"hostname,omitempty"`
	// Node is the node the endpoint runs on (for TrafficPolicyLocal).
	Node string `json:"node,omitempty"`
	// Ready: serves new connections. Serving while Terminating: used only when the
	// service has no ready endpoint (as kube-proxy does).
	Ready       bool `json:"ready"`
	Serving     bool `json:"serving"`
	Terminating bool `json:"terminating,omitempty"`
	// Pod is the pod behind the endpoint (NAMESPACE/NAME), when the slice names one.
	Pod string `json:"pod,omitempty"`
}

// Service is a service as the agent stores and reports it.
type Service struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Ports     []ServicePort     `json:"ports"`
	Selector  map[string]string `json:"selector,omitempty"`
	// Manual backends (ServiceSpec.Endpoints); a zero port means the target port.
	Manual   []netip.AddrPort `json:"manual,omitempty"`
	Headless bool             `json:"headless,omitempty"`
	Affinity string           `json:"affinity,omitempty"`
	// VIPs are the virtual addresses (none for a headless service).
	VIPs []netip.Addr `json:"vips,omitempty"`
	// Source, ExternalName, InternalTrafficPolicy and Slices are as in ServiceSpec.
	Source                string          `json:"source,omitempty"`
	ExternalName          string          `json:"externalName,omitempty"`
	InternalTrafficPolicy string          `json:"internalTrafficPolicy,omitempty"`
	Slices                []SliceEndpoint `json:"slices,omitempty"`
	Created               time.Time       `json:"created"`
	// Backends are the ready backends right now (filled in by the agent on reads).
	Backends []Backend `json:"backends,omitempty"`
}

// Backend is one ready backend of a service.
type Backend struct {
	Addr netip.Addr `json:"addr"`
	// Hostname is the endpoint's name (DNS <hostname>.<svc>.<ns>.svc.<zone>); empty for
	// manual backends.
	Hostname string `json:"hostname,omitempty"`
	// Endpoint names the attachment, for selector backends.
	Endpoint string `json:"endpoint,omitempty"`
	// Port overrides the target port (manual backends "IP:PORT"); zero: the target port.
	Port uint16 `json:"port,omitempty"`
	// Ports, for backends of Slices, map each service port (by name and protocol) to the
	// backend's port; a service port missing here does not go to this backend.
	Ports []NamedPort `json:"ports,omitempty"`
	// Node is the node the backend runs on, when known.
	Node string `json:"node,omitempty"`
}

// Clone returns a copy of s that shares no slice or map with it.
func (s Service) Clone() Service {
	s.Ports = slices.Clone(s.Ports)
	s.Selector = maps.Clone(s.Selector)
	s.Manual = slices.Clone(s.Manual)
	s.VIPs = slices.Clone(s.VIPs)
	if s.Slices != nil {
		s.Slices = slices.Clone(s.Slices)
		for i := range s.Slices {
			s.Slices[i].Addrs = slices.Clone(s.Slices[i].Addrs)
			s.Slices[i].Ports = slices.Clone(s.Slices[i].Ports)
		}
	}
	if s.Backends != nil {
		s.Backends = slices.Clone(s.Backends)
		for i := range s.Backends {
			s.Backends[i].Ports = slices.Clone(s.Backends[i].Ports)
		}
	}
	return s
}
