package kube

// Translation: pure functions from client-go objects to podnet's api types, reading the
// objects as kube-proxy and CoreDNS read them. What podnet cannot honour is not ignored
// silently: each function returns it as problems, sentences naming the field and its
// value (the controller posts them as Events on the object), and translates the rest.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/policy"
)

// AffinitySeconds is how long podnet keeps a client on its backend with sessionAffinity
// ClientIP: Kubernetes' default timeout, 3 hours. Another timeout is a problem.
const AffinitySeconds = corev1.DefaultClientIPServiceAffinitySeconds

// Namespace translates a namespace: its name and labels as they are (the API server
// already gives every namespace the label kubernetes.io/metadata.name).
func Namespace(ns *corev1.Namespace) api.Namespace {
	return api.Namespace{Name: ns.Name, Labels: cloneLabels(ns.Labels), Source: api.SourceKubernetes}
}

// Pod translates a pod: its labels, its host network flag, and the named ports of its
// containers (spec.containers, in order; a port without a name is no named port), which
// network policies name as `port: NAME`.
func Pod(p *corev1.Pod) api.Pod {
	out := api.Pod{
		Namespace:   p.Namespace,
		Name:        p.Name,
		Labels:      cloneLabels(p.Labels),
		HostNetwork: p.Spec.HostNetwork,
		Source:      api.SourceKubernetes,
	}
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "" || port.ContainerPort < 1 || port.ContainerPort > 65535 {
				continue
			}
			out.NamedPorts = append(out.NamedPorts, api.NamedPort{
				Name: port.Name, Port: uint16(port.ContainerPort), Protocol: protocol(port.Protocol),
			})
		}
	}
	return out
}

// Node translates a node (podnet controller --node-pod-cidrs): its name, its pod ranges
// from spec.podCIDRs (spec.podCIDR when that is empty, as a cluster before dual-stack
// wrote it), and its address from status.addresses of type InternalIP: the first one
// that parses, since kubelet lists the addresses of the node's primary family (its
// underlay's) before the other family's. A CIDR or an address that does not parse, or
// a CIDR with host bits, is a problem and left out.
func Node(n *corev1.Node) (api.Node, []string) {
	out := api.Node{Name: n.Name, Source: api.SourceKubernetes}
	var problems []string
	cidrs, field := n.Spec.PodCIDRs, "spec.podCIDRs"
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs, field = []string{n.Spec.PodCIDR}, "spec.podCIDR"
	}
	for i, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil || p.Addr().Zone() != "":
			problems = append(problems, fmt.Sprintf("%s %s: not a CIDR; left out, the node's blocks are not taken from it", indexed(field, i, len(cidrs)), s))
			continue
		case p != p.Masked():
			problems = append(problems, fmt.Sprintf("%s %s: has host bits (the range is %s); left out, the node's blocks are not taken from it",
				indexed(field, i, len(cidrs)), s, p.Masked()))
			continue
		}
		out.PodCIDRs = append(out.PodCIDRs, p)
	}
	for i, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil || ip.Zone() != "" || ip.IsUnspecified() {
			problems = append(problems, fmt.Sprintf("status.addresses[%d] (InternalIP) %s: not a node address; left out", i, a.Address))
			continue
		}
		if !out.InternalIP.IsValid() {
			out.InternalIP = ip.Unmap()
		}
	}
	return out, problems
}

// Service translates a service and its EndpointSlices, as kube-proxy reads them:
//   - type ClusterIP, NodePort and LoadBalancer: the VIPs are spec.clusterIPs (or
//     spec.clusterIP); "None" makes the service headless. NodePort and LoadBalancer
//     publish each port's nodePort; no load balancer is provisioned (a problem).
//   - type ExternalName: a DNS alias of spec.externalName, without VIPs or backends.
//   - The backends are the endpoints of slices (those among slices whose label
//     kubernetes.io/service-name names the service, in its namespace), with their
//     conditions and ports: a named targetPort is resolved per endpoint by the port of
//     the same name in its slice, so TargetPort is left to Port then. The service's
//     selector is not used: whoever wrote the slices applied it (a service without
//     selector has slices written by someone else).
//
// ipFamilies and ipFamilyPolicy are honoured through the clusterIPs the API server
// allocated and the slices of each family the EndpointSlice controller wrote;
// publishNotReadyAddresses through the slices' conditions; topology hints are ignored
// (spec.trafficDistribution is a problem). Problems are in the order of the fields.
func Service(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) (api.ServiceSpec, []string) {
	t := serviceTranslation{svc: svc}
	t.translate(slices)
	return t.out, t.problems
}

type serviceTranslation struct {
	svc      *corev1.Service
	out      api.ServiceSpec
	problems []string
}

func (t *serviceTranslation) problem(format string, args ...any) {
	t.problems = append(t.problems, fmt.Sprintf(format, args...))
}

func (t *serviceTranslation) translate(eps []*discoveryv1.EndpointSlice) {
	svc, spec := t.svc, &t.svc.Spec
	t.out = api.ServiceSpec{Name: svc.Name, Namespace: svc.Namespace, Source: api.SourceKubernetes}

	typ := spec.Type
	switch typ {
	case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort:
	case corev1.ServiceTypeLoadBalancer:
		t.problem("type LoadBalancer: no load balancer is provisioned; served as NodePort")
	case corev1.ServiceTypeExternalName:
		t.out.ExternalName = spec.ExternalName
		if spec.ExternalName == "" {
			t.problem("type ExternalName: externalName is empty; the service has no DNS alias")
		}
	default:
		t.problem("type %s: unknown service type; served as ClusterIP", typ)
		typ = corev1.ServiceTypeClusterIP
	}
	nodePorts := typ == corev1.ServiceTypeNodePort || typ == corev1.ServiceTypeLoadBalancer
	if typ != corev1.ServiceTypeExternalName {
		t.vips()
	}
	t.ports(nodePorts)
	t.affinity()
	t.trafficPolicies(nodePorts)
	t.unsupported(typ)
	if typ == corev1.ServiceTypeExternalName {
		for _, s := range eps {
			if belongs(s, svc) && len(s.Endpoints) > 0 {
				t.problem("EndpointSlice %s: ignored, an ExternalName service has no backends", s.Name)
			}
		}
		return
	}
	t.backends(eps)
}

// vips reads spec.clusterIPs (spec.clusterIP when empty).
func (t *serviceTranslation) vips() {
	ips := t.svc.Spec.ClusterIPs
	field := "clusterIPs"
	if len(ips) == 0 && t.svc.Spec.ClusterIP != "" {
		ips, field = []string{t.svc.Spec.ClusterIP}, "clusterIP"
	}
	if len(ips) > 0 && ips[0] == corev1.ClusterIPNone {
		t.out.Headless = true
		return
	}
	for i, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.IsUnspecified() {
			t.problem("%s %s: not a service address; left out", indexed(field, i, len(ips)), s)
			continue
		}
		t.out.VIPs = append(t.out.VIPs, a.Unmap())
	}
}

// indexed is field[i] when the field is a list of more than one value.
func indexed(field string, i, n int) string {
	if n > 1 {
		return fmt.Sprintf("%s[%d]", field, i)
	}
	return field
}

func (t *serviceTranslation) ports(nodePorts bool) {
	for i, p := range t.svc.Spec.Ports {
		what := fmt.Sprintf("ports[%d]", i)
		if p.Name != "" {
			what = fmt.Sprintf("ports[%d] (%s)", i, p.Name)
		}
		proto := protocol(p.Protocol)
		if proto != "tcp" && proto != "udp" {
			t.problem("%s protocol %s: not supported (TCP and UDP only); port %d left out", what, p.Protocol, p.Port)
			continue
		}
		if p.Port < 1 || p.Port > 65535 {
			t.problem("%s port %d: not a port number; left out", what, p.Port)
			continue
		}
		sp := api.ServicePort{Name: p.Name, Port: uint16(p.Port), TargetPort: uint16(p.Port), Protocol: proto}
		if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal != 0 {
			// A named targetPort leaves TargetPort to Port: the slices give the
			// backends' port by the service port's name.
			if n := p.TargetPort.IntVal; n >= 1 && n <= 65535 {
				sp.TargetPort = uint16(n)
			} else {
				t.problem("%s targetPort %d: not a port number; the port is used", what, n)
			}
		}
		if nodePorts && p.NodePort != 0 {
			if n := p.NodePort; n >= 1 && n <= 65535 {
				sp.NodePort = uint16(n)
			} else {
				t.problem("%s nodePort %d: not a port number; not published on the nodes", what, n)
			}
		}
		t.out.Ports = append(t.out.Ports, sp)
	}
}

func (t *serviceTranslation) affinity() {
	spec := t.svc.Spec
	switch spec.SessionAffinity {
	case "", corev1.ServiceAffinityNone:
		return
	case corev1.ServiceAffinityClientIP:
	default:
		t.problem("sessionAffinity %s: unknown; no affinity", spec.SessionAffinity)
		return
	}
	t.out.Affinity = api.AffinityClientIP
	if c := spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil &&
		*c.ClientIP.TimeoutSeconds != AffinitySeconds {
		t.problem("sessionAffinityConfig.clientIP.timeoutSeconds %d: podnet keeps a client on its backend for %d seconds (3 hours)",
			*c.ClientIP.TimeoutSeconds, AffinitySeconds)
	}
}

func (t *serviceTranslation) trafficPolicies(nodePorts bool) {
	spec := t.svc.Spec
	if p := spec.InternalTrafficPolicy; p != nil {
		switch *p {
		case corev1.ServiceInternalTrafficPolicyCluster:
			t.out.InternalTrafficPolicy = api.TrafficPolicyCluster
		case corev1.ServiceInternalTrafficPolicyLocal:
			t.out.InternalTrafficPolicy = api.TrafficPolicyLocal
		default:
			t.problem("internalTrafficPolicy %s: unknown; served as Cluster", *p)
		}
	}
	switch p := spec.ExternalTrafficPolicy; {
	case p == corev1.ServiceExternalTrafficPolicyLocal && nodePorts:
		t.problem("externalTrafficPolicy Local: not supported; node ports balance over the backends of every node, " +
			"and the client's address is not kept")
	case p != "" && p != corev1.ServiceExternalTrafficPolicyCluster && p != corev1.ServiceExternalTrafficPolicyLocal:
		t.problem("externalTrafficPolicy %s: unknown; served as Cluster", p)
	}
	if d := spec.TrafficDistribution; d != nil && *d != "" {
		t.problem("trafficDistribution %s: not supported; connections are spread over all backends, whatever their zone or node", *d)
	}
}

// unsupported reports the fields podnet has no counterpart for.
func (t *serviceTranslation) unsupported(typ corev1.ServiceType) {
	spec := t.svc.Spec
	if len(spec.ExternalIPs) > 0 {
		t.problem("externalIPs %s: not supported; nothing is routed to these addresses", strings.Join(spec.ExternalIPs, ", "))
	}
	if len(spec.LoadBalancerSourceRanges) > 0 {
		t.problem("loadBalancerSourceRanges %s: not enforced; no load balancer is provisioned and node ports accept every source",
			strings.Join(spec.LoadBalancerSourceRanges, ", "))
	}
	if spec.LoadBalancerIP != "" {
		t.problem("loadBalancerIP %s: not supported; no load balancer is provisioned", spec.LoadBalancerIP)
	}
	if c := spec.LoadBalancerClass; c != nil && *c != "" && typ == corev1.ServiceTypeLoadBalancer {
		t.problem("loadBalancerClass %s: no load balancer is provisioned; served as NodePort", *c)
	}
	if a := spec.AllocateLoadBalancerNodePorts; a != nil && !*a && typ == corev1.ServiceTypeLoadBalancer {
		t.problem("allocateLoadBalancerNodePorts false: ports without a nodePort are reachable on the cluster IPs only")
	}
}

// belongs reports whether slice s is one of svc's: the same namespace, and the label
// kubernetes.io/service-name naming it.
func belongs(s *discoveryv1.EndpointSlice, svc *corev1.Service) bool {
	return s != nil && s.Namespace == svc.Namespace && s.Labels[discoveryv1.LabelServiceName] == svc.Name
}

// backends translates the endpoints of the service's slices, in the order of the
// slices' names, then of the endpoints' first addresses.
func (t *serviceTranslation) backends(eps []*discoveryv1.EndpointSlice) {
	type entry struct {
		slice string
		ep    api.SliceEndpoint
	}
	var out []entry
	for _, s := range eps {
		if !belongs(s, t.svc) {
			continue
		}
		var want func(netip.Addr) bool
		switch s.AddressType {
		case discoveryv1.AddressTypeIPv4:
			want = netip.Addr.Is4
		case discoveryv1.AddressTypeIPv6:
			want = netip.Addr.Is6
		default:
			if len(s.Endpoints) > 0 {
				t.problem("EndpointSlice %s addressType %s: not supported (IPv4 and IPv6 only); its endpoints are left out", s.Name, s.AddressType)
			}
			continue
		}
		ports := t.slicePorts(s)
		for i, e := range s.Endpoints {
			se := api.SliceEndpoint{
				Ports:       ports,
				Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
				Serving:     e.Conditions.Serving == nil || *e.Conditions.Serving,
				Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
			}
			for _, addr := range e.Addresses {
				a, err := netip.ParseAddr(addr)
				if err != nil || a.Zone() != "" || a.IsUnspecified() || !want(a.Unmap()) {
					t.problem("EndpointSlice %s endpoints[%d] address %s: not an %s endpoint address; left out", s.Name, i, addr, s.AddressType)
					continue
				}
				se.Addrs = append(se.Addrs, a.Unmap())
			}
			if len(se.Addrs) == 0 {
				continue
			}
			if e.Hostname != nil {
				se.Hostname = *e.Hostname
			}
			if e.NodeName != nil {
				se.Node = *e.NodeName
			}
			if r := e.TargetRef; r != nil && r.Kind == "Pod" && r.Name != "" {
				se.Pod = cmp.Or(r.Namespace, s.Namespace) + "/" + r.Name
			}
			out = append(out, entry{s.Name, se})
		}
	}
	slices.SortStableFunc(out, func(a, b entry) int {
		return cmp.Or(strings.Compare(a.slice, b.slice), a.ep.Addrs[0].Compare(b.ep.Addrs[0]))
	})
	for _, e := range out {
		t.out.Slices = append(t.out.Slices, e.ep)
	}
}

// slicePorts translates the ports of a slice; a port without number (it means all
// ports) is left out, and none left gives nil: the service's target ports.
func (t *serviceTranslation) slicePorts(s *discoveryv1.EndpointSlice) []api.NamedPort {
	var out []api.NamedPort
	for i, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		var name string
		if p.Name != nil {
			name = *p.Name
		}
		var proto corev1.Protocol
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		np := api.NamedPort{Name: name, Protocol: protocol(proto)}
		switch {
		case *p.Port < 1 || *p.Port > 65535:
			t.problem("EndpointSlice %s ports[%d] port %d: not a port number; left out", s.Name, i, *p.Port)
			continue
		case np.Protocol != "tcp" && np.Protocol != "udp" && np.Protocol != "sctp":
			t.problem("EndpointSlice %s ports[%d] protocol %s: unknown; left out", s.Name, i, proto)
			continue
		}
		np.Port = uint16(*p.Port)
		out = append(out, np)
	}
	return out
}

// protocol is a Kubernetes protocol in podnet's spelling: "tcp", "udp", "sctp"; TCP
// when empty, as the API defaults it.
func protocol(p corev1.Protocol) string {
	if p == "" {
		return "tcp"
	}
	return strings.ToLower(string(p))
}

func cloneLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// NetworkPolicy translates a network policy through policy.Parse, the parser of `podnet
// policy apply`: defaults and validation are the same. Only the policy's name,
// namespace and spec are handed over (its other metadata says nothing about traffic).
// The error names the policy and every field at fault.
func NetworkPolicy(np *networkingv1.NetworkPolicy) (api.NetworkPolicy, error) {
	object := fmt.Sprintf("networkpolicy %s/%s", cmp.Or(np.Namespace, api.DefaultNamespace), np.Name)
	doc := networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: policy.APIVersion, Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: np.Name, Namespace: np.Namespace},
		Spec:       np.Spec,
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return api.NetworkPolicy{}, fmt.Errorf("%s: encode: %w", object, err)
	}
	ps, err := policy.Parse(bytes.NewReader(js))
	if err != nil {
		return api.NetworkPolicy{}, renameObject(err, object)
	}
	if len(ps) != 1 {
		return api.NetworkPolicy{}, fmt.Errorf("%s: parsed into %d policies", object, len(ps))
	}
	p := ps[0]
	p.Source = api.SourceKubernetes
	return p, nil
}

// renameObject returns err with the object of every validation error in it replaced
// (the parser names "document 1 (policy ...)", which means nothing here); other errors
// are wrapped with object.
func renameObject(err error, object string) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var errs []error
		for _, e := range j.Unwrap() {
			errs = append(errs, renameObject(e, object))
		}
		return errors.Join(errs...)
	}
	if v, ok := err.(*api.ValidationError); ok {
		c := *v
		c.Object = object
		return &c
	}
	return fmt.Errorf("%s: %w", object, err)
}
