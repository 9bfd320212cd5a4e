package spec_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
)

func TestParsePort(t *testing.T) {
	ip4, ip6 := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")
	tests := []struct {
		in   string
		want api.PortMapping
		err  string
	}{
		{"8080:80", api.PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, ""},
		{"53:5353/udp", api.PortMapping{HostPort: 53, ContainerPort: 5353, Protocol: "udp"}, ""},
		{"192.0.2.7:8080:80/TCP", api.PortMapping{HostIP: ip4, HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, ""},
		{"[2001:db8::7]:8080:80", api.PortMapping{HostIP: ip6, HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, ""},
		{"8080", api.PortMapping{}, "wrong number of fields"},
		{"0:80", api.PortMapping{}, "ports are numbers from 1 to 65535"},
		{"70000:80", api.PortMapping{}, "ports are numbers from 1 to 65535"},
		{"8080:80/sctp", api.PortMapping{}, `protocol "sctp"`},
		{"300.1.1.1:8080:80", api.PortMapping{}, `bad host address "300.1.1.1"`},
		{"[192.0.2.1]:8080:80", api.PortMapping{}, "bad IPv6 host address"},
		{"[2001:db8::1:8080:80", api.PortMapping{}, "unterminated"},
		{"0.0.0.0:8080:80", api.PortMapping{}, "want a unicast address"},
	}
	for _, tt := range tests {
		got, err := spec.ParsePort(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParsePort(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParsePort(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestValidatePortsAndConflicts(t *testing.T) {
	v4only := []netip.Prefix{netip.MustParsePrefix("10.88.0.5/16")}
	m := func(s string) api.PortMapping {
		p, err := spec.ParsePort(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := spec.ValidatePorts([]api.PortMapping{m("8080:80"), m("8080:80/udp")}, v4only); err != nil {
		t.Errorf("tcp and udp on one port: %v", err)
	}
	if err := spec.ValidatePorts([]api.PortMapping{m("8080:80"), m("8080:81")}, v4only); err == nil || !strings.Contains(err.Error(), "published twice") {
		t.Errorf("same host port twice: %v", err)
	}
	if err := spec.ValidatePorts([]api.PortMapping{m("[2001:db8::1]:8080:80")}, v4only); err == nil || !strings.Contains(err.Error(), "no address of that family") {
		t.Errorf("IPv6 host address for an IPv4-only endpoint: %v", err)
	}
	any, h1, h2 := netip.Addr{}, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	tests := []struct {
		m      string
		owners map[netip.Addr]string
		want   string
	}{
		{"8080:80", nil, ""},
		{"8080:80", map[netip.Addr]string{h1: "a"}, "a"},            // all vs one
		{"192.0.2.1:8080:80", map[netip.Addr]string{any: "b"}, "b"}, // one vs all
		{"192.0.2.1:8080:80", map[netip.Addr]string{h1: "c"}, "c"},  // same address
		{"192.0.2.1:8080:80", map[netip.Addr]string{h2: "d"}, ""},   // other address
	}
	for _, tt := range tests {
		_, owner, ok := spec.PortConflict(m(tt.m), tt.owners)
		if ok != (tt.want != "") || owner != tt.want {
			t.Errorf("PortConflict(%s, %v) = %q %v, want %q", tt.m, tt.owners, owner, ok, tt.want)
		}
	}
}
