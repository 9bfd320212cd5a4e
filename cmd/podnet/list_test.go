package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/api"
)

type pet struct {
	Name string `json:"name"`
	Legs int    `json:"legs"`
}

var petColumns = []column[pet]{
	{"NAME", func(p pet) string { return p.Name }},
	{"LEGS", func(p pet) string { return strings.Repeat("|", p.Legs) }},
}

func TestPrintList(t *testing.T) {
	pets := []pet{{"dog", 4}, {"hen", 2}, {"snake", 0}}
	for _, c := range []struct {
		name   string
		asJSON bool
		rows   []pet
		want   string
	}{
		{"table", false, pets, "" +
			"NAME   LEGS\n" +
			"dog    ||||\n" +
			"hen    ||\n" +
			"snake  \n"},
		{"table/empty", false, nil, "NAME  LEGS\n"},
		{"json", true, pets, `[
  {
    "name": "dog",
    "legs": 4
  },
  {
    "name": "hen",
    "legs": 2
  },
  {
    "name": "snake",
    "legs": 0
  }
]
`},
		{"json/empty", true, nil, "[]\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := printList(&b, c.asJSON, c.rows, petColumns); err != nil {
				t.Fatal(err)
			}
			if b.String() != c.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), c.want)
			}
		})
	}
}

// TestPrintListings pins the table of each listing, as a user and e2e/cli_test.go read it.
func TestPrintListings(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	eps := []api.Endpoint{{
		EndpointKey: api.EndpointKey{Network: "blue", ContainerID: "0123456789abcdef", IfName: "eth0"},
		Name:        "web", Netns: "/run/netns/web", HostIf: "pnv0123", MAC: "02:00:00:00:00:01",
		IPs:   []netip.Prefix{p("10.89.0.2/24"), p("fd89::2/64")},
		Ports: []api.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, {HostIP: a("192.0.2.1"), HostPort: 53, ContainerPort: 53, Protocol: "udp"}},
		State: "attached",
	}}
	for _, c := range []struct {
		name  string
		print func(*bytes.Buffer) error
		want  string
	}{
		{"network", func(b *bytes.Buffer) error {
			return printList(b, false, []api.Network{
				{Name: "blue", Driver: "bridge", Bridge: "pn-blue", MTU: 1500, Masquerade: true, Subnets: []api.Subnet{
					{Prefix: p("10.89.0.0/24"), Gateway: a("10.89.0.1")}, {Prefix: p("fd89::/64"), Gateway: a("fd89::1")}}},
				{Name: "red", Driver: "routed", MTU: 1400, Subnets: []api.Subnet{{Prefix: p("10.90.0.0/24"), Gateway: a("10.90.0.254")}}},
			}, networkColumns)
		}, "" +
			"NAME  DRIVER  SUBNETS                 GATEWAYS           BRIDGE   CROSS-NODE  MTU   MASQUERADE\n" +
			"blue  bridge  10.89.0.0/24,fd89::/64  10.89.0.1,fd89::1  pn-blue              1500  true\n" +
			"red   routed  10.90.0.0/24            10.90.0.254                             1400  false\n"},
		{"endpoint", func(b *bytes.Buffer) error { return printList(b, false, eps, endpointColumns) }, "" +
			"NETWORK  CONTAINER     NAME  INTERFACE  IPS                      MAC                HOST IF  NETNS           STATE\n" +
			"blue     0123456789ab  web   eth0       10.89.0.2/24,fd89::2/64  02:00:00:00:00:01  pnv0123  /run/netns/web  attached\n"},
		{"port", func(b *bytes.Buffer) error { return printList(b, false, portRows(eps), portColumns) }, "" +
			"HOST          PROTO  CONTAINER PORT  NETWORK  CONTAINER     NAME  ADDRESS\n" +
			"*:8080        tcp    80              blue     0123456789ab  web   10.89.0.2,fd89::2\n" +
			"192.0.2.1:53  udp    53              blue     0123456789ab  web   10.89.0.2,fd89::2\n"},
		{"service", func(b *bytes.Buffer) error {
			return printList(b, false, []api.Service{
				{Namespace: "default", Name: "web", VIPs: []netip.Addr{a("10.96.0.10")},
					Ports:    []api.ServicePort{{Port: 80, TargetPort: 8080, Protocol: "tcp"}},
					Selector: map[string]string{"tier": "front", "app": "web", "env": "prod"},
					Backends: make([]api.Backend, 2)},
				{Namespace: "default", Name: "db", Headless: true, Selector: map[string]string{"app": "db"}, Source: api.SourceKubernetes},
			}, serviceColumns)
		}, "" +
			"NAMESPACE  NAME  VIPS             PORTS        BACKENDS  SELECTOR                     SOURCE\n" +
			"default    web   10.96.0.10       80:8080/tcp  2         app=web,env=prod,tier=front  podnet\n" +
			"default    db    None (headless)               0         app=db                       kubernetes\n"},
		{"node", func(b *bytes.Buffer) error {
			return printList(b, false, []api.NodeInfo{
				{Node: api.Node{Name: "n0", IP: a("192.0.2.10"), Version: "v1", Alive: true, Registered: time.Unix(1, 0),
					PodCIDRs: []netip.Prefix{p("10.244.0.0/24"), p("fd00:244::/64")}, InternalIP: a("192.0.2.10"), Source: api.SourceKubernetes},
					Blocks: map[string][]netip.Prefix{"pods": {p("10.244.0.0/26")}, "blue": {p("10.88.0.0/26"), p("10.88.0.128/26")}}},
				{Node: api.Node{Name: "n1", IP: a("192.0.2.11"), Version: "v1", Registered: time.Unix(1, 0)}},
				{Node: api.Node{Name: "n2", PodCIDRs: []netip.Prefix{p("10.244.2.0/24")}, Source: api.SourceKubernetes}},
			}, nodeColumns)
		}, "" +
			"NAME  NODE IP     LEASE    PODCIDRS                     BLOCKS                                                  VERSION\n" +
			"n0    192.0.2.10  alive    10.244.0.0/24,fd00:244::/64  blue: 10.88.0.0/26,10.88.0.128/26; pods: 10.244.0.0/26  v1\n" +
			"n1    192.0.2.11  expired                                                                                       v1\n" +
			"n2                none     10.244.2.0/24                                                                        \n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := c.print(&b); err != nil {
				t.Fatal(err)
			}
			if b.String() != c.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), c.want)
			}
		})
	}
}

func TestSelectorString(t *testing.T) {
	for _, c := range []struct {
		sel  map[string]string
		want string
	}{
		{nil, ""},
		{map[string]string{"app": "web"}, "app=web"},
		{map[string]string{"z": "1", "a": "2", "m": "3", "b": "4", "y": "5"}, "a=2,b=4,m=3,y=5,z=1"},
	} {
		// Map order is random: render each several times.
		for range 10 {
			if got := selectorString(c.sel); got != c.want {
				t.Fatalf("selectorString(%v) = %q, want %q", c.sel, got, c.want)
			}
		}
	}
}
