package spec_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
)

func TestParseServicePort(t *testing.T) {
	tests := []struct {
		in   string
		want api.ServicePort
		err  string
	}{
		{"80", api.ServicePort{Port: 80, TargetPort: 80, Protocol: "tcp"}, ""},
		{"80:8080", api.ServicePort{Port: 80, TargetPort: 8080, Protocol: "tcp"}, ""},
		{"http:80:8080/tcp", api.ServicePort{Name: "http", Port: 80, TargetPort: 8080, Protocol: "tcp"}, ""},
		{"dns:53/UDP", api.ServicePort{Name: "dns", Port: 53, TargetPort: 53, Protocol: "udp"}, ""},
		{"http", api.ServicePort{}, "wrong number of fields"},
		{"0", api.ServicePort{}, "not a port number"},
		{"80:8080:9090", api.ServicePort{}, "wrong number of fields"},
	}
	for _, tt := range tests {
		got, err := spec.ParseServicePort(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseServicePort(%q) = %+v, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseServicePort(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestCanonicalizeService(t *testing.T) {
	port := []api.ServicePort{{Name: "http", Port: 80}}
	got, err := spec.CanonicalizeService(api.ServiceSpec{Name: "web", Ports: port, Selector: map[string]string{"app": "web"}})
	if err != nil || got.Namespace != "default" || got.Ports[0].TargetPort != 80 || got.Ports[0].Protocol != "tcp" {
		t.Fatalf("defaults: %+v %v", got, err)
	}
	got, err = spec.CanonicalizeService(api.ServiceSpec{Name: "ext", Ports: port, Endpoints: []string{"192.0.2.1", "[2001:db8::1]:8080"}})
	if err != nil || got.Manual[0] != netip.MustParseAddrPort("192.0.2.1:0") || got.Manual[1].Port() != 8080 {
		t.Fatalf("manual endpoints: %+v %v", got, err)
	}
	for _, tc := range []struct {
		s    api.ServiceSpec
		want string
	}{
		{api.ServiceSpec{Name: "Web", Ports: port}, `service default/Web: name "Web"`},
		{api.ServiceSpec{Name: "1web", Ports: port}, `name "1web"`},
		{api.ServiceSpec{Name: "web", Namespace: "Bad_NS", Ports: port}, `namespace "Bad_NS"`},
		{api.ServiceSpec{Name: "web"}, `ports "": at least one port`},
		{api.ServiceSpec{Name: "web", Ports: []api.ServicePort{{Port: 80}, {Port: 80}}}, `port "80/tcp": declared twice`},
		{api.ServiceSpec{Name: "web", Ports: []api.ServicePort{{Port: 80, Protocol: "sctp"}}}, `protocol must be tcp or udp`},
		{api.ServiceSpec{Name: "web", Ports: port, Affinity: "cookie"}, `affinity "cookie"`},
		{api.ServiceSpec{Name: "web", Ports: port, Selector: map[string]string{"a": "b"}, Endpoints: []string{"192.0.2.1"}}, `not both`},
		{api.ServiceSpec{Name: "web", Ports: port, Endpoints: []string{"nohost"}}, `endpoint "nohost"`},
		{api.ServiceSpec{Name: "web", Ports: port, Selector: map[string]string{"a b": "c"}}, `selector`},
		{api.ServiceSpec{Name: "web", Ports: port, Source: "consul"}, `source "consul"`},
		{api.ServiceSpec{Name: "web", ExternalName: "Bad_Name.example"}, `externalName "Bad_Name.example"`},
		{api.ServiceSpec{Name: "web", ExternalName: "db.example.org", VIPs: vips("10.96.0.1")}, `an alias has no VIPs`},
		{api.ServiceSpec{Name: "web", Ports: port, Headless: true, VIPs: vips("10.96.0.1")}, `a headless service has no VIPs`},
		{api.ServiceSpec{Name: "web", Ports: port, VIPs: vips("10.96.0.1", "10.96.0.2")}, `one valid address per family`},
		{api.ServiceSpec{Name: "web", Ports: port, InternalTrafficPolicy: "Node"}, `internalTrafficPolicy "Node"`},
		{api.ServiceSpec{Name: "web", Ports: []api.ServicePort{{Port: 80, NodePort: 30080}, {Port: 81, NodePort: 30080}}}, `nodePort "30080/tcp": declared twice`},
		{api.ServiceSpec{Name: "web", Ports: port, Slices: []api.SliceEndpoint{{}}}, `an endpoint without addresses`},
		{api.ServiceSpec{Name: "web", Ports: port, Selector: map[string]string{"a": "b"}, Slices: []api.SliceEndpoint{{Addrs: vips("10.0.0.1")}}}, `not both`},
	} {
		_, err := spec.CanonicalizeService(tc.s)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CanonicalizeService(%+v) = %v, want error containing %q", tc.s, err, tc.want)
		}
	}
}

func vips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, v := range s {
		out = append(out, netip.MustParseAddr(v))
	}
	return out
}

func TestCanonicalizeKubernetesService(t *testing.T) {
	got, err := spec.CanonicalizeService(api.ServiceSpec{Name: "web", Source: api.SourceKubernetes, VIPs: vips("::ffff:10.96.0.10", "fd00::10"),
		Ports: []api.ServicePort{{Name: "http", Port: 80, NodePort: 30080}}, InternalTrafficPolicy: api.TrafficPolicyLocal,
		Slices: []api.SliceEndpoint{{Addrs: vips("10.0.0.1"), Ports: []api.NamedPort{{Name: "http", Port: 8080, Protocol: "tcp"}}, Ready: true}}})
	if err != nil || len(got.VIPs) != 2 || got.VIPs[0] != netip.MustParseAddr("10.96.0.10") || got.Ports[0].NodePort != 30080 || len(got.Slices) != 1 {
		t.Errorf("kubernetes service: %+v, %v", got, err)
	}
	got, err = spec.CanonicalizeService(api.ServiceSpec{Name: "ext", ExternalName: "db.example.org."})
	if err != nil || got.ExternalName != "db.example.org." || len(got.VIPs) != 0 {
		t.Errorf("ExternalName: %+v, %v", got, err)
	}
}

func TestLabelsAndSelects(t *testing.T) {
	l, err := spec.ParseLabels([]string{"app=web,tier=front", "example.com/owner=me"})
	if err != nil || len(l) != 3 || l["example.com/owner"] != "me" {
		t.Fatalf("ParseLabels: %v %v", l, err)
	}
	for _, bad := range []string{"novalue", "-x=y", "a=-b", "Bad_Prefix/x=y"} {
		if _, err := spec.ParseLabels([]string{bad}); err == nil {
			t.Errorf("ParseLabels(%q) accepted", bad)
		}
	}
	if !spec.Selects(map[string]string{"app": "web"}, l) || spec.Selects(map[string]string{"app": "db"}, l) || spec.Selects(nil, l) {
		t.Error("Selects")
	}
}

// Every validation of ports, labels, namespaces and services fails with the one
// validation error type, whose code is 7 (invalid config).
func TestErrorsAreValidationErrors(t *testing.T) {
	v4 := []netip.Prefix{netip.MustParsePrefix("10.88.0.5/16")}
	m := api.PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}
	_, errPort := spec.ParsePort("8080")
	_, errServicePort := spec.ParseServicePort("http")
	_, errLabels := spec.ParseLabels([]string{"novalue"})
	_, errService := spec.CanonicalizeService(api.ServiceSpec{Name: "Web", Ports: []api.ServicePort{{Port: 80}}})
	for _, tt := range []struct {
		err  error
		want string
	}{
		{errPort, `port "8080": wrong number of fields (want [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp])`},
		{spec.ValidatePort(api.PortMapping{HostPort: 80, ContainerPort: 80, Protocol: "sctp"}), `port 80:80/sctp: protocol "sctp": want tcp or udp`},
		{spec.ValidatePort(api.PortMapping{ContainerPort: 80, Protocol: "tcp"}), `port 0:80/tcp: ports are numbers from 1 to 65535`},
		{spec.ValidatePorts([]api.PortMapping{m, m}, v4), `port 8080:80/tcp: host port 8080/tcp published twice`},
		{spec.ValidatePorts([]api.PortMapping{{HostIP: netip.MustParseAddr("2001:db8::1"), HostPort: 1, ContainerPort: 1, Protocol: "udp"}}, v4),
			`port [2001:db8::1]:1:1/udp: hostIP "2001:db8::1": the endpoint has no address of that family`},
		{errServicePort, `port "http": wrong number of fields (want [NAME:]PORT[:TARGETPORT][/tcp|/udp])`},
		{errLabels, `label "novalue": want key=value`},
		{spec.ValidateLabels(map[string]string{"a": "-b"}), `label "a": value "-b" must be at most 63 letters`},
		{spec.ValidateNamespace("Bad_NS"), `namespace "Bad_NS": must be a DNS label`},
		{errService, `service default/Web: name "Web": must be a DNS label`},
	} {
		var ve *api.ValidationError
		if !errors.As(tt.err, &ve) || api.ErrorCode(tt.err) != api.CodeInvalidConfig {
			t.Errorf("error %v (%T) is not an *api.ValidationError with code 7", tt.err, tt.err)
		}
		if tt.err == nil || !strings.HasPrefix(tt.err.Error(), tt.want) {
			t.Errorf("error %v, want it to start with %q", tt.err, tt.want)
		}
	}
}

func TestNamedPorts(t *testing.T) {
	tests := []struct {
		in   []string
		want []api.NamedPort
		err  string
	}{
		{[]string{"http=8080", "dns=53/UDP", "assoc=9/sctp"}, []api.NamedPort{{Name: "http", Port: 8080, Protocol: "tcp"}, {Name: "dns", Port: 53, Protocol: "udp"}, {Name: "assoc", Port: 9, Protocol: "sctp"}}, ""},
		{[]string{"http"}, nil, `named port "http": want NAME=PORT[/tcp|udp|sctp]`},
		{[]string{"http=0"}, nil, `named port "http=0": port "0": want 1 to 65535`},
		{[]string{"http=70000"}, nil, `port "70000": want 1 to 65535`},
		{[]string{"Http=80"}, nil, `namedPorts "Http": must be lowercase letters, digits and '-'`},
		{[]string{"80=80"}, nil, `namedPorts "80": must contain a letter`},
		{[]string{"a-very-long-name=80"}, nil, `namedPorts "a-very-long-name": must be 1 to 15 characters`},
		{[]string{"web--x=80"}, nil, `namedPorts "web--x": must not start or end with '-'`},
		{[]string{"web=80", "web=81"}, nil, `namedPorts "web": named twice`},
		{[]string{"web=80/icmp"}, nil, `namedPorts["web"].protocol "icmp": must be tcp, udp or sctp`},
	}
	for _, tt := range tests {
		var ports []api.NamedPort
		var err error
		for _, s := range tt.in {
			var p api.NamedPort
			if p, err = spec.ParseNamedPort(s); err != nil {
				break
			}
			ports = append(ports, p)
		}
		if err == nil {
			ports, err = spec.ValidateNamedPorts(ports)
		}
		if tt.err != "" {
			var ve *api.ValidationError
			if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.As(err, &ve) {
				t.Errorf("%v: %+v, %v; want a validation error with %q", tt.in, ports, err, tt.err)
			}
			continue
		}
		if err != nil || !slices.Equal(ports, tt.want) {
			t.Errorf("%v: %+v, %v; want %+v", tt.in, ports, err, tt.want)
		}
	}
}
