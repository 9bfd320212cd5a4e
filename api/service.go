package api

import (
	"net/netip"
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

// ServicePort is one port of a service; TargetPort is the backends' port (default Port).
type ServicePort struct {
	Name       string `json:"name,omitempty"`
	Port       uint16 `json:"port"`
	TargetPort uint16 `json:"targetPort"`
	Protocol   string `json:"protocol"` // "tcp" or "udp"
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
	VIPs    []netip.Addr `json:"vips,omitempty"`
	Created time.Time    `json:"created"`
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
}
