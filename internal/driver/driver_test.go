package driver_test

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func mustNetwork(t *testing.T, s api.NetworkSpec) api.Network {
	t.Helper()
	n, err := spec.Canonicalize(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// dump renders a network's and an endpoint's plans and the endpoint's result as stable
// text, one object per line.
func dump(np driver.Network, e driver.Endpoint, r api.Result) string {
	b, ep := np.Bridge, e.Kernel
	var w bytes.Buffer
	if np.RoutedGateway {
		fmt.Fprintf(&w, "routed gateway\n")
	}
	fmt.Fprintf(&w, "tables network %s bridge %q subnets %v masquerade %v\n", np.Tables.Name, np.Tables.Bridge, np.Tables.Subnets, np.Tables.Masquerade)
	if b.Name == "" {
		fmt.Fprintf(&w, "bridge none\n")
	} else {
		fmt.Fprintf(&w, "bridge %s mtu %d mac %s\n", b.Name, b.MTU, b.MAC)
	}
	for _, a := range b.Addrs {
		fmt.Fprintf(&w, "  addr %s\n", a)
	}
	for _, sc := range b.Sysctls {
		fmt.Fprintf(&w, "  sysctl %s = %s\n", sc.Key, sc.Value)
	}
	fmt.Fprintf(&w, "endpoint host %s", ep.HostIf)
	if ep.Master != "" {
		fmt.Fprintf(&w, " master %s", ep.Master)
	}
	if ep.Hairpin {
		fmt.Fprintf(&w, " hairpin")
	}
	if ep.HostMAC != nil {
		fmt.Fprintf(&w, " mac %s", ep.HostMAC)
	}
	fmt.Fprintf(&w, " mtu %d\n", ep.MTU)
	fmt.Fprintf(&w, "  sandbox %s mac %s\n", ep.SandboxIf, ep.MAC)
	for _, a := range ep.Addrs {
		fmt.Fprintf(&w, "  addr %s\n", a)
	}
	for _, rt := range ep.Routes {
		fmt.Fprintf(&w, "  route %s%s\n", rt.Dst, via(rt.GW))
	}
	for _, rt := range ep.NodeRoutes {
		if rt.GW.IsValid() {
			fmt.Fprintf(&w, "  node route %s via %s dev %s\n", rt.Dst, rt.GW, ep.HostIf)
		} else {
			fmt.Fprintf(&w, "  node route %s dev %s scope link\n", rt.Dst, ep.HostIf)
		}
	}
	for _, sc := range ep.HostSysctls {
		fmt.Fprintf(&w, "  host sysctl %s = %s\n", sc.Key, sc.Value)
	}
	for _, ne := range ep.SandboxNeighbors {
		fmt.Fprintf(&w, "  sandbox neighbour %s lladdr %s\n", ne.IP, ne.MAC)
	}
	for _, ne := range ep.NodeNeighbors {
		fmt.Fprintf(&w, "  node neighbour %s lladdr %s\n", ne.IP, ne.MAC)
	}
	for _, te := range e.Tables.Endpoints {
		fmt.Fprintf(&w, "  tables endpoint %s bridged %v addrs %v", te.HostIf, te.Bridge != "", te.Addrs)
		if te.MAC != nil {
			fmt.Fprintf(&w, " mac %s", te.MAC)
		}
		fmt.Fprintln(&w)
	}
	for _, p := range e.Tables.Ports {
		fmt.Fprintf(&w, "  tables port %s\n", p)
	}
	for _, m := range e.Proxies {
		fmt.Fprintf(&w, "  proxy %s\n", m)
	}
	fmt.Fprintf(&w, "result\n")
	for i, itf := range r.Interfaces {
		fmt.Fprintf(&w, "  interface %d %s mac %q mtu %d sandbox %q\n", i, itf.Name, itf.MAC, itf.MTU, itf.Sandbox)
	}
	for _, ip := range r.IPs {
		fmt.Fprintf(&w, "  ip %s%s interface %d\n", ip.Address, via(ip.Gateway), ip.Interface)
	}
	for _, rt := range r.Routes {
		fmt.Fprintf(&w, "  route %s%s\n", rt.Dst, via(rt.GW))
	}
	fmt.Fprintf(&w, "  dns nameservers %q domain %q search %q options %q\n", r.DNS.Nameservers, r.DNS.Domain, r.DNS.Search, r.DNS.Options)
	return w.String()
}

func via(gw netip.Addr) string {
	if !gw.IsValid() {
		return " on-link"
	}
	return " via " + gw.String()
}

func TestPlanGolden(t *testing.T) {
	dual := api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24", "fd00:88:1::/64"}}
	key := api.EndpointKey{Network: "blue", ContainerID: "c0ffee", IfName: "eth0"}
	const netns = "/var/run/netns/c0ffee"
	routed := api.NetworkSpec{Name: "green", Driver: api.DriverRouted, Subnets: []string{"10.77.0.0/16", "fd00:77::/64"}}
	routedKey := api.EndpointKey{Network: "green", ContainerID: "c0ffee", IfName: "eth0"}
	crossNode := api.NetworkSpec{Name: "wide", Subnets: []string{"10.89.0.0/16", "fd00:89::/64"}, CrossNode: api.CrossNodeVXLAN, MTU: 1450}
	crossKey := api.EndpointKey{Network: "wide", ContainerID: "c0ffee", IfName: "eth0"}
	tests := []struct {
		name   string
		spec   api.NetworkSpec
		key    api.EndpointKey
		addrs  []netip.Prefix
		mac    net.HardwareAddr
		ports  []api.PortMapping
		golden string
	}{
		{name: "dual stack", spec: dual, key: key, addrs: pfx("10.88.1.5/24", "fd00:88:1::5/64"), golden: "dualstack",
			ports: []api.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
				{HostIP: netip.MustParseAddr("192.0.2.1"), HostPort: 5353, ContainerPort: 53, Protocol: "udp"}}},
		{name: "ports by proxy", golden: "proxy",
			spec:  api.NetworkSpec{Name: "px", Subnets: []string{"fd00:9::/64", "10.9.0.0/24"}, PortMode: api.PortModeProxy},
			key:   api.EndpointKey{Network: "px", ContainerID: "c9", IfName: "eth0"},
			addrs: pfx("fd00:9::5/64", "10.9.0.5/24"),
			ports: []api.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
				{HostIP: netip.MustParseAddr("2001:db8::1"), HostPort: 8443, ContainerPort: 443, Protocol: "tcp"}}},
		{name: "dual stack IPv6 first", spec: dual, key: key, addrs: pfx("fd00:88:1::5/64", "10.88.1.5/24"), golden: "dualstack-v6first"},
		{name: "dual stack requested mac", spec: dual, key: key, addrs: pfx("10.88.1.5/24", "fd00:88:1::5/64"),
			mac: mac("02:42:ac:11:00:02"), golden: "dualstack-mac"},
		{name: "gateways mtu long name", golden: "custom",
			spec: api.NetworkSpec{Name: "production-frontend", Subnets: []string{"10.90.0.0/16", "fd00:90::/64"},
				Gateways: []string{"10.90.255.254", "fd00:90::fe"}, MTU: 9000, NoMasquerade: true},
			key:   api.EndpointKey{Network: "production-frontend", ContainerID: strings.Repeat("ab", 32), IfName: "net1"},
			addrs: pfx("10.90.3.4/16", "fd00:90::3:4/64")},
		{name: "IPv6 only", golden: "ipv6only",
			spec:  api.NetworkSpec{Name: "six", Subnets: []string{"fd00:6::/64"}},
			key:   api.EndpointKey{Network: "six", ContainerID: "c6", IfName: "eth0"},
			addrs: pfx("fd00:6::a0b:c0d/64")},
		{name: "address outside the network", spec: dual, key: key, addrs: pfx("10.88.1.5/24", "192.168.7.7/24"), golden: "foreign"},
		{name: "cross-node dual stack", spec: crossNode, key: crossKey, addrs: pfx("10.89.0.69/16", "fd00:89::45/64"), golden: "crossnode-dualstack"},
		{name: "cross-node dual stack, block of the gateway", spec: crossNode, key: crossKey, addrs: pfx("10.89.0.5/16", "fd00:89::5/64"),
			golden: "crossnode-gatewayblock"},
		{name: "routed dual stack", spec: routed, key: routedKey, addrs: pfx("10.77.3.4/16", "fd00:77::3:4/64"), golden: "routed-dualstack",
			ports: []api.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}},
		{name: "routed dual stack IPv6 first", spec: routed, key: routedKey, addrs: pfx("fd00:77::3:4/64", "10.77.3.4/16"),
			mac: mac("02:42:ac:11:00:02"), golden: "routed-v6first"},
		{name: "routed IPv4 only", golden: "routed-ipv4only",
			spec:  api.NetworkSpec{Name: "green4", Driver: api.DriverRouted, Subnets: []string{"10.77.0.0/16"}, MTU: 1450},
			key:   api.EndpointKey{Network: "green4", ContainerID: "c4", IfName: "eth0"},
			addrs: pfx("10.77.0.9/16")},
		{name: "routed IPv6 only", golden: "routed-ipv6only",
			spec:  api.NetworkSpec{Name: "green6", Driver: api.DriverRouted, Subnets: []string{"fd00:77::/64"}},
			key:   api.EndpointKey{Network: "green6", ContainerID: "c6", IfName: "eth0"},
			addrs: pfx("fd00:77::a0b:c0d/64")},
		{name: "routed address outside the network", spec: routed, key: routedKey, addrs: pfx("10.77.3.4/16", "192.168.7.7/24"),
			golden: "routed-foreign"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := mustNetwork(t, tt.spec)
			e := driver.For(n).Endpoint(n, tt.key, tt.addrs, tt.mac, tt.ports)
			got := dump(driver.NetworkFor(n), e, driver.Result(n, e.Kernel, netns))
			path := filepath.Join("testdata", tt.golden+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("plan mismatch (run with -update to accept)\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

func TestBridgePlan(t *testing.T) {
	blue := mustNetwork(t, api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24", "fd00:88:1::/64"}})
	red := mustNetwork(t, api.NetworkSpec{Name: "red", Subnets: []string{"10.88.2.0/24"}})
	b1, b2, r := driver.NetworkFor(blue).Bridge, driver.NetworkFor(blue).Bridge, driver.NetworkFor(red).Bridge
	if b1.MAC.String() != b2.MAC.String() {
		t.Errorf("bridge MAC not stable: %s then %s", b1.MAC, b2.MAC)
	}
	if b1.MAC.String() == r.MAC.String() {
		t.Errorf("networks blue and red share bridge MAC %s", r.MAC)
	}
	for _, b := range []plan.Bridge{b1, r} {
		if len(b.MAC) != 6 || b.MAC[0]&0x02 == 0 || b.MAC[0]&0x01 != 0 {
			t.Errorf("bridge %s MAC %s: want a locally administered unicast 6-byte address", b.Name, b.MAC)
		}
	}
	// The name and addresses depend only on the network, not on its creation time.
	blue.Created = blue.Created.AddDate(1, 0, 0)
	if got := driver.NetworkFor(blue).Bridge; got.MAC.String() != b1.MAC.String() || got.Name != b1.Name {
		t.Errorf("BridgeFor depends on Created: %+v vs %+v", got, b1)
	}
}

func TestEndpointDefaultsToMACFor(t *testing.T) {
	n := mustNetwork(t, api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24", "fd00:88:1::/64"}})
	addrs := pfx("fd00:88:1::9/64", "10.88.1.9/24")
	ep := driver.For(n).Endpoint(n, api.EndpointKey{Network: "blue", ContainerID: "c", IfName: "eth0"}, addrs, nil, nil).Kernel
	if got, want := ep.MAC.String(), driver.MACFor(addrs).String(); got != want {
		t.Errorf("EndpointFor MAC = %s, want MACFor = %s", got, want)
	}
	if got, want := ep.HostIf, spec.HostVethName(api.EndpointKey{Network: "blue", ContainerID: "c", IfName: "eth0"}); got != want {
		t.Errorf("HostIf = %s, want %s", got, want)
	}
	r := driver.Result(n, ep, "/proc/1/ns/net")
	if r.Interfaces[1].MAC != ep.MAC.String() || r.Interfaces[1].Name != "eth0" || r.Interfaces[0].Sandbox != "" {
		t.Errorf("ResultFor interfaces = %+v", r.Interfaces)
	}
}

func TestMACFor(t *testing.T) {
	tests := []struct {
		name  string
		addrs []netip.Prefix
		want  string
	}{
		{"IPv4", pfx("10.88.1.5/24"), "0a:58:0a:58:01:05"},
		{"IPv4 high octets", pfx("192.168.255.254/24"), "0a:58:c0:a8:ff:fe"},
		{"first IPv4 wins over an earlier IPv6", pfx("fd00::1/64", "10.1.2.3/24", "10.9.9.9/24"), "0a:58:0a:01:02:03"},
		{"IPv6 only: low 32 bits", pfx("fd00:88:1::a0b:c0d/64"), "0a:58:0a:0b:0c:0d"},
		{"first of two IPv6", pfx("fd00::1:2/64", "fd01::3:4/64"), "0a:58:00:01:00:02"},
		{"IPv4-mapped IPv6 is not IPv4", pfx("fd00::102:304/64", "::ffff:10.0.0.1/128"), "0a:58:01:02:03:04"},
		{"none", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := driver.MACFor(tt.addrs)
			if got.String() != tt.want {
				t.Errorf("MACFor(%v) = %q, want %q", tt.addrs, got, tt.want)
			}
			if got == nil {
				return
			}
			if len(got) != 6 || got[0]&0x02 == 0 || got[0]&0x01 != 0 {
				t.Errorf("MACFor(%v) = %s: want a locally administered unicast 6-byte address", tt.addrs, got)
			}
			if _, err := api.ParseMAC(got.String()); err != nil {
				t.Errorf("ParseMAC(MACFor(%v)): %v", tt.addrs, err)
			}
		})
	}
}
