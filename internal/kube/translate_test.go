package kube

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
)

func ptr[T any](v T) *T { return &v }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestNamespace(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *corev1.Namespace
		want api.Namespace
	}{
		{
			name: "labels as they are",
			in: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", UID: "u1", ResourceVersion: "42",
				Labels: map[string]string{"kubernetes.io/metadata.name": "shop", "team": "web"}}},
			want: api.Namespace{Name: "shop", Labels: map[string]string{"kubernetes.io/metadata.name": "shop", "team": "web"},
				Source: api.SourceKubernetes},
		},
		{
			name: "no labels",
			in:   &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bare"}},
			want: api.Namespace{Name: "bare", Source: api.SourceKubernetes},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Namespace(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if tc.in.Labels != nil {
				got.Labels["x"] = "y"
				if _, ok := tc.in.Labels["x"]; ok {
					t.Error("the labels are shared with the Kubernetes object")
				}
			}
		})
	}
}

func TestPod(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *corev1.Pod
		want api.Pod
	}{
		{
			name: "named ports of every container",
			in: &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-7d9f-abcde", Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{
					InitContainers: []corev1.Container{{Name: "init", Ports: []corev1.ContainerPort{{Name: "init-port", ContainerPort: 9999}}}},
					Containers: []corev1.Container{
						{Name: "web", Ports: []corev1.ContainerPort{
							{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
							{ContainerPort: 8081, Protocol: corev1.ProtocolTCP}, // no name
							{Name: "metrics", ContainerPort: 9090},              // protocol defaults to TCP
						}},
						{Name: "sidecar", Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP},
							{Name: "sig", ContainerPort: 3868, Protocol: corev1.ProtocolSCTP},
						}},
					},
				},
			},
			want: api.Pod{Namespace: "shop", Name: "web-7d9f-abcde", Labels: map[string]string{"app": "web"},
				NamedPorts: []api.NamedPort{
					{Name: "http", Port: 8080, Protocol: "tcp"},
					{Name: "metrics", Port: 9090, Protocol: "tcp"},
					{Name: "dns", Port: 5353, Protocol: "udp"},
					{Name: "sig", Port: 3868, Protocol: "sctp"},
				},
				Source: api.SourceKubernetes},
		},
		{
			name: "host network, no ports",
			in: &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy-x"},
				Spec:       corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{Name: "proxy"}}},
			},
			want: api.Pod{Namespace: "kube-system", Name: "kube-proxy-x", HostNetwork: true, Source: api.SourceKubernetes},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Pod(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestNode(t *testing.T) {
	internal := func(a string) corev1.NodeAddress { return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a} }
	for _, tc := range []struct {
		name     string
		in       *corev1.Node
		want     api.Node
		problems []string
	}{
		{
			name: "dual-stack: podCIDRs, the first InternalIP",
			in: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n0", Labels: map[string]string{"zone": "a"}},
				Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24", "fd00:10:244:1::/64"}},
				Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
					{Type: corev1.NodeHostName, Address: "n0"}, {Type: corev1.NodeExternalIP, Address: "203.0.113.5"},
					internal("192.0.2.10"), internal("2001:db8::10"), internal("192.0.2.11")}}},
			want: api.Node{Name: "n0", PodCIDRs: prefixes("10.244.1.0/24", "fd00:10:244:1::/64"),
				InternalIP: netip.MustParseAddr("192.0.2.10"), Source: api.SourceKubernetes},
		},
		{
			name: "IPv6 primary",
			in: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n6"},
				Spec:   corev1.NodeSpec{PodCIDRs: []string{"fd00:10:244:6::/64", "10.244.6.0/24"}},
				Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{internal("2001:db8::6"), internal("192.0.2.6")}}},
			want: api.Node{Name: "n6", PodCIDRs: prefixes("fd00:10:244:6::/64", "10.244.6.0/24"),
				InternalIP: netip.MustParseAddr("2001:db8::6"), Source: api.SourceKubernetes},
		},
		{
			name: "spec.podCIDR alone (before dual-stack)",
			in:   &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "old"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.2.0/24"}},
			want: api.Node{Name: "old", PodCIDRs: prefixes("10.244.2.0/24"), Source: api.SourceKubernetes},
		},
		{
			name: "no podCIDRs allocated, no address yet",
			in:   &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "new"}},
			want: api.Node{Name: "new", Source: api.SourceKubernetes},
		},
		{
			name: "what does not parse is left out",
			in: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bad"},
				Spec:   corev1.NodeSpec{PodCIDRs: []string{"10.244.3.0/33", "10.244.4.7/24", "fd00:10:244:3::/64"}},
				Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{internal("192.0.2.300"), internal("0.0.0.0"), internal("192.0.2.3")}}},
			want: api.Node{Name: "bad", PodCIDRs: prefixes("fd00:10:244:3::/64"), InternalIP: netip.MustParseAddr("192.0.2.3"), Source: api.SourceKubernetes},
			problems: []string{
				"spec.podCIDRs[0] 10.244.3.0/33: not a CIDR; left out, the node's blocks are not taken from it",
				"spec.podCIDRs[1] 10.244.4.7/24: has host bits (the range is 10.244.4.0/24); left out, the node's blocks are not taken from it",
				"status.addresses[0] (InternalIP) 192.0.2.300: not a node address; left out",
				"status.addresses[1] (InternalIP) 0.0.0.0: not a node address; left out",
			},
		},
		{
			name:     "a bad spec.podCIDR is named as such",
			in:       &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "old"}, Spec: corev1.NodeSpec{PodCIDR: "ten"}},
			want:     api.Node{Name: "old", Source: api.SourceKubernetes},
			problems: []string{"spec.podCIDR ten: not a CIDR; left out, the node's blocks are not taken from it"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := Node(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if !reflect.DeepEqual(problems, tc.problems) {
				t.Errorf("problems\n got %q\nwant %q", problems, tc.problems)
			}
		})
	}
}

// slice builds an EndpointSlice of service svc in namespace ns.
func slice(ns, name, svc string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
		AddressType: family,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func slicePort(name string, port int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Port: ptr(port), Protocol: ptr(proto)}
}

func podRef(ns, name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name, UID: types.UID("uid-" + name)}
}

func TestService(t *testing.T) {
	webPorts := []discoveryv1.EndpointPort{slicePort("http", 8080, corev1.ProtocolTCP), slicePort("dns", 5353, corev1.ProtocolUDP)}
	webNamed := []api.NamedPort{{Name: "http", Port: 8080, Protocol: "tcp"}, {Name: "dns", Port: 5353, Protocol: "udp"}}
	for _, tc := range []struct {
		name     string
		svc      *corev1.Service
		slices   []*discoveryv1.EndpointSlice
		want     api.ServiceSpec
		problems []string
		// invalid: podnet's service validation refuses the translation (the problems
		// say why).
		invalid bool
	}{
		{
			name: "dual-stack ClusterIP with named target port and slices of both families",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
				Spec: corev1.ServiceSpec{
					Type:       corev1.ServiceTypeClusterIP,
					ClusterIP:  "10.96.0.10",
					ClusterIPs: []string{"10.96.0.10", "fd00:96::10"},
					Selector:   map[string]string{"app": "web"},
					Ports: []corev1.ServicePort{
						{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
						{Name: "dns", Port: 53, TargetPort: intstr.FromInt32(5353), Protocol: corev1.ProtocolUDP},
					},
					SessionAffinity:       corev1.ServiceAffinityClientIP,
					SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(10800))}},
					InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyLocal),
					IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
					IPFamilyPolicy:        ptr(corev1.IPFamilyPolicyRequireDualStack),
				},
			},
			slices: []*discoveryv1.EndpointSlice{
				slice("shop", "web-v6", "web", discoveryv1.AddressTypeIPv6, webPorts,
					discoveryv1.Endpoint{Addresses: []string{"fd00:1::5"}, NodeName: ptr("node-a"), TargetRef: podRef("shop", "web-1")}),
				slice("shop", "web-abcde", "web", discoveryv1.AddressTypeIPv4, webPorts,
					// Conditions as the controller writes them.
					discoveryv1.Endpoint{Addresses: []string{"10.1.0.6"}, NodeName: ptr("node-b"), TargetRef: podRef("shop", "web-2"),
						Conditions: discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}},
					// Nil conditions: ready and serving, not terminating.
					discoveryv1.Endpoint{Addresses: []string{"10.1.0.5"}, NodeName: ptr("node-a"), TargetRef: podRef("shop", "web-1")},
					// Not ready, not serving.
					discoveryv1.Endpoint{Addresses: []string{"10.1.0.7"}, TargetRef: &corev1.ObjectReference{Kind: "Node", Name: "n"},
						Conditions: discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(false)}},
				),
				// Not this service's: another service, another namespace, nil.
				slice("shop", "api-xyz", "api", discoveryv1.AddressTypeIPv4, webPorts, discoveryv1.Endpoint{Addresses: []string{"10.1.9.9"}}),
				slice("other", "web-zzz", "web", discoveryv1.AddressTypeIPv4, webPorts, discoveryv1.Endpoint{Addresses: []string{"10.2.9.9"}}),
				nil,
			},
			want: api.ServiceSpec{
				Name: "web", Namespace: "shop", Source: api.SourceKubernetes,
				VIPs: addrs("10.96.0.10", "fd00:96::10"),
				Ports: []api.ServicePort{
					{Name: "http", Port: 80, TargetPort: 80, Protocol: "tcp"},
					{Name: "dns", Port: 53, TargetPort: 5353, Protocol: "udp"},
				},
				Affinity:              api.AffinityClientIP,
				InternalTrafficPolicy: api.TrafficPolicyLocal,
				Slices: []api.SliceEndpoint{
					{Addrs: addrs("10.1.0.5"), Ports: webNamed, Node: "node-a", Pod: "shop/web-1", Ready: true, Serving: true},
					{Addrs: addrs("10.1.0.6"), Ports: webNamed, Node: "node-b", Pod: "shop/web-2", Serving: true, Terminating: true},
					{Addrs: addrs("10.1.0.7"), Ports: webNamed},
					{Addrs: addrs("fd00:1::5"), Ports: webNamed, Node: "node-a", Pod: "shop/web-1", Ready: true, Serving: true},
				},
			},
		},
		{
			name: "clusterIP alone, ready without serving condition",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "legacy"},
				Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20",
					Ports: []corev1.ServicePort{{Port: 8080}}}, // no name, protocol or targetPort
			},
			slices: []*discoveryv1.EndpointSlice{
				slice("shop", "legacy-1", "legacy", discoveryv1.AddressTypeIPv4,
					[]discoveryv1.EndpointPort{{Name: ptr(""), Port: ptr(int32(8080))}},
					discoveryv1.Endpoint{Addresses: []string{"10.1.0.30"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
					discoveryv1.Endpoint{Addresses: []string{"10.1.0.31"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Terminating: ptr(false)}},
				),
			},
			want: api.ServiceSpec{
				Name: "legacy", Namespace: "shop", Source: api.SourceKubernetes, VIPs: addrs("10.96.0.20"),
				Ports: []api.ServicePort{{Port: 8080, TargetPort: 8080, Protocol: "tcp"}},
				Slices: []api.SliceEndpoint{
					// The API: a nil serving condition means true, whatever ready says.
					{Addrs: addrs("10.1.0.30"), Ports: []api.NamedPort{{Port: 8080, Protocol: "tcp"}}, Serving: true},
					{Addrs: addrs("10.1.0.31"), Ports: []api.NamedPort{{Port: 8080, Protocol: "tcp"}}, Ready: true, Serving: true},
				},
			},
		},
		{
			name: "headless with hostnames, FQDN slice and a port without number",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "pg"},
				Spec: corev1.ServiceSpec{
					ClusterIP: corev1.ClusterIPNone, ClusterIPs: []string{corev1.ClusterIPNone},
					Selector: map[string]string{"app": "pg"},
					Ports:    []corev1.ServicePort{{Name: "pg", Port: 5432, TargetPort: intstr.FromInt32(5432), Protocol: corev1.ProtocolTCP}},
				},
			},
			slices: []*discoveryv1.EndpointSlice{
				slice("db", "pg-fqdn", "pg", discoveryv1.AddressTypeFQDN, nil, discoveryv1.Endpoint{Addresses: []string{"pg.example.com"}}),
				slice("db", "pg-4x", "pg", discoveryv1.AddressTypeIPv4,
					[]discoveryv1.EndpointPort{slicePort("pg", 5432, corev1.ProtocolTCP), {Name: ptr("all")}},
					discoveryv1.Endpoint{Addresses: []string{"10.3.0.11"}, Hostname: ptr("pg-1"), TargetRef: podRef("db", "pg-1")},
					discoveryv1.Endpoint{Addresses: []string{"10.3.0.10"}, Hostname: ptr("pg-0"), TargetRef: podRef("", "pg-0")},
				),
			},
			want: api.ServiceSpec{
				Name: "pg", Namespace: "db", Source: api.SourceKubernetes, Headless: true,
				Ports: []api.ServicePort{{Name: "pg", Port: 5432, TargetPort: 5432, Protocol: "tcp"}},
				Slices: []api.SliceEndpoint{
					{Addrs: addrs("10.3.0.10"), Ports: []api.NamedPort{{Name: "pg", Port: 5432, Protocol: "tcp"}}, Hostname: "pg-0", Pod: "db/pg-0", Ready: true, Serving: true},
					{Addrs: addrs("10.3.0.11"), Ports: []api.NamedPort{{Name: "pg", Port: 5432, Protocol: "tcp"}}, Hostname: "pg-1", Pod: "db/pg-1", Ready: true, Serving: true},
				},
			},
			problems: []string{"EndpointSlice pg-fqdn addressType FQDN: not supported (IPv4 and IPv6 only); its endpoints are left out"},
		},
		{
			name: "selector-less service with slices written by someone else",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ext", Name: "legacy-db"},
				Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.3.3"},
					Ports: []corev1.ServicePort{{Name: "sql", Port: 3306, TargetPort: intstr.FromInt32(3306), Protocol: corev1.ProtocolTCP}}},
			},
			slices: []*discoveryv1.EndpointSlice{
				slice("ext", "legacy-db-manual", "legacy-db", discoveryv1.AddressTypeIPv4,
					[]discoveryv1.EndpointPort{slicePort("sql", 3306, corev1.ProtocolTCP)},
					discoveryv1.Endpoint{Addresses: []string{"192.0.2.50", "192.0.2.51"}},
					discoveryv1.Endpoint{Addresses: []string{"fd00::1", "bogus"}}, // wrong family, not an address: nothing left
				),
			},
			want: api.ServiceSpec{
				Name: "legacy-db", Namespace: "ext", Source: api.SourceKubernetes, VIPs: addrs("10.96.3.3"),
				Ports: []api.ServicePort{{Name: "sql", Port: 3306, TargetPort: 3306, Protocol: "tcp"}},
				Slices: []api.SliceEndpoint{
					{Addrs: addrs("192.0.2.50", "192.0.2.51"), Ports: []api.NamedPort{{Name: "sql", Port: 3306, Protocol: "tcp"}}, Ready: true, Serving: true},
				},
			},
			problems: []string{
				"EndpointSlice legacy-db-manual endpoints[1] address fd00::1: not an IPv4 endpoint address; left out",
				"EndpointSlice legacy-db-manual endpoints[1] address bogus: not an IPv4 endpoint address; left out",
			},
		},
		{
			name: "ExternalName",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "payments"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "api.payments.example.com",
					Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}}},
			},
			slices: []*discoveryv1.EndpointSlice{
				slice("shop", "payments-x", "payments", discoveryv1.AddressTypeIPv4, nil, discoveryv1.Endpoint{Addresses: []string{"10.1.0.99"}}),
			},
			want: api.ServiceSpec{
				Name: "payments", Namespace: "shop", Source: api.SourceKubernetes, ExternalName: "api.payments.example.com",
				Ports: []api.ServicePort{{Name: "https", Port: 443, TargetPort: 443, Protocol: "tcp"}},
			},
			problems: []string{"EndpointSlice payments-x: ignored, an ExternalName service has no backends"},
		},
		{
			name: "NodePort with externalTrafficPolicy Local and externalIPs",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "front"},
				Spec: corev1.ServiceSpec{
					Type: corev1.ServiceTypeNodePort, ClusterIPs: []string{"10.96.0.30"},
					Ports: []corev1.ServicePort{
						{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30080, Protocol: corev1.ProtocolTCP},
						{Name: "quic", Port: 443, TargetPort: intstr.FromString("quic"), NodePort: 30443, Protocol: corev1.ProtocolUDP},
					},
					ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
					HealthCheckNodePort:   31000,
					ExternalIPs:           []string{"198.51.100.7", "198.51.100.8"},
				},
			},
			want: api.ServiceSpec{
				Name: "front", Namespace: "shop", Source: api.SourceKubernetes, VIPs: addrs("10.96.0.30"),
				Ports: []api.ServicePort{
					{Name: "http", Port: 80, TargetPort: 8080, NodePort: 30080, Protocol: "tcp"},
					{Name: "quic", Port: 443, TargetPort: 443, NodePort: 30443, Protocol: "udp"},
				},
			},
			problems: []string{
				"externalTrafficPolicy Local: not supported; node ports balance over the backends of every node, and the client's address is not kept",
				"externalIPs 198.51.100.7, 198.51.100.8: not supported; nothing is routed to these addresses",
			},
		},
		{
			name: "LoadBalancer served as NodePort",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "edge"},
				Spec: corev1.ServiceSpec{
					Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.96.0.40"},
					Ports:                    []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443), NodePort: 31443, Protocol: corev1.ProtocolTCP}},
					LoadBalancerSourceRanges: []string{"203.0.113.0/24"},
					LoadBalancerIP:           "198.51.100.20",
					LoadBalancerClass:        ptr("example.com/lb"),
					ExternalTrafficPolicy:    corev1.ServiceExternalTrafficPolicyCluster,
				},
			},
			want: api.ServiceSpec{
				Name: "edge", Namespace: "shop", Source: api.SourceKubernetes, VIPs: addrs("10.96.0.40"),
				Ports: []api.ServicePort{{Name: "https", Port: 443, TargetPort: 8443, NodePort: 31443, Protocol: "tcp"}},
			},
			problems: []string{
				"type LoadBalancer: no load balancer is provisioned; served as NodePort",
				"loadBalancerSourceRanges 203.0.113.0/24: not enforced; no load balancer is provisioned and node ports accept every source",
				"loadBalancerIP 198.51.100.20: not supported; no load balancer is provisioned",
				"loadBalancerClass example.com/lb: no load balancer is provisioned; served as NodePort",
			},
		},
		{
			name: "LoadBalancer without node ports",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "lb-only"},
				Spec: corev1.ServiceSpec{
					Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.96.0.41"},
					Ports:                         []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}},
					AllocateLoadBalancerNodePorts: ptr(false),
				},
			},
			want: api.ServiceSpec{
				Name: "lb-only", Namespace: "shop", Source: api.SourceKubernetes, VIPs: addrs("10.96.0.41"),
				Ports: []api.ServicePort{{Port: 80, TargetPort: 80, Protocol: "tcp"}},
			},
			problems: []string{
				"type LoadBalancer: no load balancer is provisioned; served as NodePort",
				"allocateLoadBalancerNodePorts false: ports without a nodePort are reachable on the cluster IPs only",
			},
		},
		{
			name: "nodePort of a ClusterIP service ignored",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "inner"},
				Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.50"},
					Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), NodePort: 30999}}},
			},
			want: api.ServiceSpec{
				Name: "inner", Namespace: "shop", Source: api.SourceKubernetes, VIPs: addrs("10.96.0.50"),
				Ports: []api.ServicePort{{Port: 80, TargetPort: 80, Protocol: "tcp"}},
			},
		},
		{
			name: "SCTP port, affinity timeout, trafficDistribution",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "tel", Name: "diameter"},
				Spec: corev1.ServiceSpec{
					ClusterIPs: []string{"10.96.0.60"},
					Ports: []corev1.ServicePort{
						{Name: "sig", Port: 3868, TargetPort: intstr.FromInt32(3868), Protocol: corev1.ProtocolSCTP},
						{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
					},
					SessionAffinity:       corev1.ServiceAffinityClientIP,
					SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(600))}},
					InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyCluster),
					TrafficDistribution:   ptr(corev1.ServiceTrafficDistributionPreferClose),
				},
			},
			want: api.ServiceSpec{
				Name: "diameter", Namespace: "tel", Source: api.SourceKubernetes, VIPs: addrs("10.96.0.60"),
				Ports:                 []api.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "tcp"}},
				Affinity:              api.AffinityClientIP,
				InternalTrafficPolicy: api.TrafficPolicyCluster,
			},
			problems: []string{
				"ports[0] (sig) protocol SCTP: not supported (TCP and UDP only); port 3868 left out",
				"sessionAffinityConfig.clientIP.timeoutSeconds 600: podnet keeps a client on its backend for 10800 seconds (3 hours)",
				"trafficDistribution PreferClose: not supported; connections are spread over all backends, whatever their zone or node",
			},
		},
		{
			name: "only SCTP: no port left",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "tel", Name: "sctp-only"},
				Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.61"},
					Ports: []corev1.ServicePort{{Port: 3868, TargetPort: intstr.FromInt32(3868), Protocol: corev1.ProtocolSCTP}}},
			},
			want: api.ServiceSpec{Name: "sctp-only", Namespace: "tel", Source: api.SourceKubernetes, VIPs: addrs("10.96.0.61")},
			problems: []string{
				"ports[0] protocol SCTP: not supported (TCP and UDP only); port 3868 left out",
			},
			invalid: true,
		},
		{
			name: "a cluster IP that does not parse",
			svc: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "odd"},
				Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.70", "fd00:96::zz"},
					Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}},
			},
			want: api.ServiceSpec{Name: "odd", Namespace: "shop", Source: api.SourceKubernetes, VIPs: addrs("10.96.0.70"),
				Ports: []api.ServicePort{{Port: 80, TargetPort: 80, Protocol: "tcp"}}},
			problems: []string{"clusterIPs[1] fd00:96::zz: not a service address; left out"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := Service(tc.svc, tc.slices)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("service:\n got  %+v\n want %+v", got, tc.want)
			}
			if !reflect.DeepEqual(problems, tc.problems) {
				t.Errorf("problems:\n got  %q\n want %q", problems, tc.problems)
			}
			// What the controller mirrors must pass podnet's own validation.
			_, err := spec.CanonicalizeService(got)
			if tc.invalid != (err != nil) {
				t.Errorf("CanonicalizeService: %v (want an error: %v)", err, tc.invalid)
			}
		})
	}
}

// TestServiceSliceOrder checks that the backends come out in the same order whatever
// the order of the slices given.
func TestServiceSliceOrder(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec:       corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.10"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	ep := func(a string) discoveryv1.Endpoint { return discoveryv1.Endpoint{Addresses: []string{a}} }
	a := slice("shop", "web-a", "web", discoveryv1.AddressTypeIPv4, nil, ep("10.1.0.9"), ep("10.1.0.2"))
	b := slice("shop", "web-b", "web", discoveryv1.AddressTypeIPv4, nil, ep("10.1.0.1"), ep("10.1.0.10"))
	first, _ := Service(svc, []*discoveryv1.EndpointSlice{a, b})
	second, _ := Service(svc, []*discoveryv1.EndpointSlice{b, a})
	var order []string
	for _, e := range first.Slices {
		order = append(order, e.Addrs[0].String())
	}
	if want := []string{"10.1.0.2", "10.1.0.9", "10.1.0.1", "10.1.0.10"}; !reflect.DeepEqual(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if !reflect.DeepEqual(first, second) {
		t.Errorf("the order of the slices changed the translation:\n%+v\n%+v", first, second)
	}
}

func TestNetworkPolicy(t *testing.T) {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	// As an informer hands it over: server-set metadata included.
	np := &networkingv1.NetworkPolicy{
		TypeMeta: metav1.TypeMeta{}, // informers leave it empty
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: "web-ingress", UID: "0b5c1d2e", ResourceVersion: "12345", Generation: 2,
			CreationTimestamp: metav1.NewTime(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)),
			Labels:            map[string]string{"app.kubernetes.io/part-of": "shop"},
			Annotations:       map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"kind":"NetworkPolicy"}`},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate,
				APIVersion: "networking.k8s.io/v1", FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{}}`)}}},
		},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "edge"}},
						PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "role", Operator: metav1.LabelSelectorOpIn, Values: []string{"lb", "proxy"}}}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.96.0.0/12", "10.200.0.0/16"}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{
					{Protocol: &tcp, Port: ptr(intstr.FromString("http"))},
					{Port: ptr(intstr.FromInt32(8000)), EndPort: ptr(int32(8100))},
				},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: ptr(intstr.FromInt32(53))}},
			}},
		},
	}
	want := api.NetworkPolicy{
		Namespace: "shop", Name: "web-ingress", Source: api.SourceKubernetes,
		Spec: api.NetworkPolicySpec{
			PodSelector: api.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []string{api.PolicyIngress, api.PolicyEgress},
			Ingress: []api.NetworkPolicyRule{{
				Peers: []api.NetworkPolicyPeer{
					{NamespaceSelector: &api.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "edge"}},
						PodSelector: &api.LabelSelector{MatchExpressions: []api.LabelSelectorRequirement{{Key: "role", Operator: "In", Values: []string{"lb", "proxy"}}}}},
					{IPBlock: &api.IPBlock{CIDR: netip.MustParsePrefix("10.0.0.0/8"),
						Except: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.200.0.0/16")}}},
				},
				Ports: []api.NetworkPolicyPort{
					{Protocol: "TCP", Port: &api.PortValue{Name: "http"}},
					{Protocol: "TCP", Port: &api.PortValue{Number: 8000}, EndPort: 8100},
				},
			}},
			Egress: []api.NetworkPolicyRule{{Ports: []api.NetworkPolicyPort{{Protocol: "UDP", Port: &api.PortValue{Number: 53}}}}},
		},
	}
	got, err := NetworkPolicy(np)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if np.APIVersion != "" || np.Kind != "" {
		t.Error("the Kubernetes object was changed")
	}
}

func TestNetworkPolicyInvalid(t *testing.T) {
	base := func(edit func(*networkingv1.NetworkPolicy)) *networkingv1.NetworkPolicy {
		np := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "bad"},
			Spec: networkingv1.NetworkPolicySpec{
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}},
				}},
			},
		}
		edit(np)
		return np
	}
	for _, tc := range []struct {
		name string
		np   *networkingv1.NetworkPolicy
		want []string // in the error, besides the policy's name
	}{
		{
			name: "ipBlock CIDR that does not parse",
			np:   base(func(np *networkingv1.NetworkPolicy) { np.Spec.Ingress[0].From[0].IPBlock.CIDR = "10.0.0.0/33" }),
			want: []string{"spec.ingress[0].from[0].ipBlock.cidr", "10.0.0.0/33"},
		},
		{
			name: "except outside the CIDR",
			np: base(func(np *networkingv1.NetworkPolicy) {
				np.Spec.Ingress[0].From[0].IPBlock.Except = []string{"192.168.0.0/16"}
			}),
			want: []string{"spec.ingress[0].from[0].ipBlock.except[0]", "192.168.0.0/16"},
		},
		{
			name: "endPort below port, and an empty port name",
			np: base(func(np *networkingv1.NetworkPolicy) {
				np.Spec.Ingress[0].Ports = []networkingv1.NetworkPolicyPort{
					{Port: ptr(intstr.FromInt32(9000)), EndPort: ptr(int32(8000))},
					{Port: ptr(intstr.FromString(""))},
				}
			}),
			want: []string{"spec.ingress[0].ports[0].endPort", "spec.ingress[0].ports[1].port"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NetworkPolicy(tc.np)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, w := range append([]string{"networkpolicy shop/bad: "}, tc.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if strings.Contains(msg, "document") {
				t.Errorf("error %q speaks of documents", msg)
			}
			var v *api.ValidationError
			if !errors.As(err, &v) {
				t.Errorf("error %q holds no *api.ValidationError", msg)
			}
		})
	}
}
