package driver_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
)

// Backends from EndpointSlices: ready ones; serving-terminating ones only when none is
// ready; each service port to the endpoint port of its name and protocol; with
// TrafficPolicyLocal, the node's own.
func TestSliceBackends(t *testing.T) {
	a := netip.MustParseAddr
	http := []api.NamedPort{{Name: "http", Port: 8080, Protocol: "tcp"}}
	svc := api.Service{Name: "web", Namespace: "default", VIPs: []netip.Addr{a("10.96.0.10")},
		Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: 80, Protocol: "tcp"}, {Name: "dns", Port: 53, TargetPort: 53, Protocol: "udp"}},
		Slices: []api.SliceEndpoint{
			{Addrs: []netip.Addr{a("10.0.0.1")}, Ports: http, Node: "n0", Ready: true, Serving: true},
			{Addrs: []netip.Addr{a("10.0.0.2")}, Ports: http, Node: "n1", Ready: true, Serving: true},
			{Addrs: []netip.Addr{a("10.0.0.3")}, Ports: http, Node: "n0", Serving: true, Terminating: true},
			{Addrs: []netip.Addr{a("10.0.0.4")}, Ports: http, Node: "n0"},
		}}
	tables := func(s api.Service, node string) []string {
		s.Backends = driver.Backends(s, nil)
		var out []string
		for _, t := range driver.ServiceTables(s, node) {
			out = append(out, fmt.Sprintf("%d/%s %v", t.Port, t.Protocol, t.Backends))
		}
		return out
	}
	check := func(what string, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}
	// The udp port has no endpoint port of its name: it leads nowhere (rejects).
	check("ready", tables(svc, "n0"), "80/tcp [10.0.0.1:8080 10.0.0.2:8080]", "53/udp []")
	local := svc
	local.InternalTrafficPolicy = api.TrafficPolicyLocal
	check("local on n1", tables(local, "n1"), "80/tcp [10.0.0.2:8080]", "53/udp []")
	check("local on a store of one node", tables(local, ""), "80/tcp [10.0.0.1:8080 10.0.0.2:8080]", "53/udp []")
	terminating := svc
	terminating.Slices = svc.Slices[2:]
	check("none ready: serving-terminating", tables(terminating, "n0"), "80/tcp [10.0.0.3:8080]", "53/udp []")
	terminating.Slices = svc.Slices[3:]
	check("neither ready nor serving", tables(terminating, "n0"), "80/tcp []", "53/udp []")
}
