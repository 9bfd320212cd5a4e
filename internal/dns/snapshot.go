package dns

import "net/netip"

// Snapshot is everything the server knows about the cluster. The agent builds a new one
// when anything changes that it does not follow service by service or pod by pod, and
// hands it to Server.SetSnapshot; a change of some services goes to
// Server.UpdateServices, of some pods to Server.UpdatePods. The server never modifies
// what it is given.
type Snapshot struct {
	Services []Service
	// Pods are every endpoint (sandbox) with its namespace and addresses: they give the
	// pod records and tell the server which namespace a client belongs to (autopath).
	// Two pods of the same namespace and name are one pod with the addresses of both. An
	// address held by pods of several namespaces has the PTR record of its name in the
	// first of them by name, whatever the order of Pods, and no autopath.
	Pods []Pod
}

// Service is a service reduced to what DNS needs.
type Service struct {
	Name, Namespace string
	// VIPs are the virtual addresses; empty for a headless service.
	VIPs     []netip.Addr
	Headless bool
	// Ports are the service's ports. For a headless service, clients connect to the
	// backends directly, so Port should be the port the backends listen on (the target
	// port): it is what the SRV records carry.
	Ports []Port
	// Backends are the ready backends.
	Backends []Backend
	// ExternalName, when set, makes the service an alias of this DNS name (a Kubernetes
	// ExternalName service): its name has a CNAME record to it and nothing else, whatever
	// VIPs, Headless, Ports and Backends say. A name that is no DNS name gives no records.
	ExternalName string
}

// Port is one port of a service. Only named ports get SRV records.
type Port struct {
	Name     string // may be ""
	Port     uint16
	Protocol string // "tcp" or "udp"
}

// Backend is one ready backend of a service.
type Backend struct {
	// Hostname is the endpoint's name, <hostname>.<svc>.<ns>.svc.<zone> for a headless
	// service; "" for manual backends, which get the dashed address as identifier
	// (10-0-0-5, as CoreDNS).
	Hostname string
	Addr     netip.Addr
}

// Pod is an endpoint (sandbox) with its namespace and addresses. Its namespace and name
// name it (Server.UpdatePods); the name gives no record.
type Pod struct {
	Namespace, Name string
	Addrs           []netip.Addr
}

// PodID is a pod as the server knows it: its namespace as the zone names it (in lower
// case, api.DefaultNamespace for "") and its name as given. Pods of one ID are one pod.
type PodID struct{ Namespace, Name string }

// ID is p's PodID.
func (p Pod) ID() PodID { return PodID{namespaceName(p.Namespace), p.Name} }
