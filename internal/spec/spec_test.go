package spec_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
)

func sub(prefix, gw string) api.Subnet {
	return api.Subnet{Prefix: netip.MustParsePrefix(prefix), Gateway: netip.MustParseAddr(gw)}
}

func TestCanonicalize(t *testing.T) {
	tests := []struct {
		name string
		in   api.NetworkSpec
		want api.Network
	}{
		{
			name: "defaults",
			in:   api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24"}},
			want: api.Network{Name: "blue", Driver: api.DriverBridge, Subnets: []api.Subnet{sub("10.88.1.0/24", "10.88.1.1")},
				MTU: api.DefaultMTU, Masquerade: true, PortMode: api.PortModeNAT, Bridge: "pn-blue"},
		},
		{
			name: "explicit bridge driver",
			in:   api.NetworkSpec{Name: "blue", Driver: "bridge", Subnets: []string{"10.88.1.0/24"}},
			want: api.Network{Name: "blue", Driver: api.DriverBridge, Subnets: []api.Subnet{sub("10.88.1.0/24", "10.88.1.1")},
				MTU: 1500, Masquerade: true, PortMode: api.PortModeNAT, Bridge: "pn-blue"},
		},
		{
			name: "spaces around subnet and gateway",
			in:   api.NetworkSpec{Name: "blue", Subnets: []string{" 10.88.1.0/24 "}, Gateways: []string{" 10.88.1.254\t"}},
			want: api.Network{Name: "blue", Driver: api.DriverBridge, Subnets: []api.Subnet{sub("10.88.1.0/24", "10.88.1.254")},
				MTU: 1500, Masquerade: true, PortMode: api.PortModeNAT, Bridge: "pn-blue"},
		},
		{
			name: "dual stack subnets sorted IPv4 first",
			in:   api.NetworkSpec{Name: "blue", Subnets: []string{"fd00:88:1::/64", "10.88.1.0/24"}},
			want: api.Network{Name: "blue", Driver: api.DriverBridge,
				Subnets: []api.Subnet{sub("10.88.1.0/24", "10.88.1.1"), sub("fd00:88:1::/64", "fd00:88:1::1")},
				MTU:     1500, Masquerade: true, PortMode: api.PortModeNAT, Bridge: "pn-blue"},
		},
		{
			name: "dual stack with gateways mtu and no masquerade",
			in: api.NetworkSpec{Name: "red", Subnets: []string{"10.88.2.0/24", "fd00:88:2::/64"},
				Gateways: []string{"fd00:88:2::fe", "10.88.2.254"}, MTU: 9000, NoMasquerade: true},
			want: api.Network{Name: "red", Driver: api.DriverBridge,
				Subnets: []api.Subnet{sub("10.88.2.0/24", "10.88.2.254"), sub("fd00:88:2::/64", "fd00:88:2::fe")},
				MTU:     9000, Masquerade: false, PortMode: api.PortModeNAT, Bridge: "pn-red"},
		},
		{
			name: "gateway for one family only",
			in:   api.NetworkSpec{Name: "red", Subnets: []string{"10.88.2.0/24", "fd00:88:2::/64"}, Gateways: []string{"fd00:88:2::fe"}},
			want: api.Network{Name: "red", Driver: api.DriverBridge,
				Subnets: []api.Subnet{sub("10.88.2.0/24", "10.88.2.1"), sub("fd00:88:2::/64", "fd00:88:2::fe")},
				MTU:     1500, Masquerade: true, PortMode: api.PortModeNAT, Bridge: "pn-red"},
		},
		{
			name: "IPv6 last address may be the gateway",
			in:   api.NetworkSpec{Name: "v6", Subnets: []string{"fd00::/64"}, Gateways: []string{"fd00::ffff:ffff:ffff:ffff"}},
			want: api.Network{Name: "v6", Driver: api.DriverBridge, Subnets: []api.Subnet{sub("fd00::/64", "fd00::ffff:ffff:ffff:ffff")},
				MTU: 1500, Masquerade: true, PortMode: api.PortModeNAT, Bridge: "pn-v6"},
		},
		{
			name: "smallest subnets /30 and /126",
			in:   api.NetworkSpec{Name: "tiny", Subnets: []string{"10.0.0.4/30", "fd00::4/126"}},
			want: api.Network{Name: "tiny", Driver: api.DriverBridge,
				Subnets: []api.Subnet{sub("10.0.0.4/30", "10.0.0.5"), sub("fd00::4/126", "fd00::5")},
				MTU:     1500, Masquerade: true, PortMode: api.PortModeNAT, Bridge: "pn-tiny"},
		},
		{
			name: "lowest IPv4 mtu",
			in:   api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24"}, MTU: api.MinMTU},
			want: api.Network{Name: "blue", Driver: api.DriverBridge, Subnets: []api.Subnet{sub("10.88.1.0/24", "10.88.1.1")},
				MTU: 576, Masquerade: true, PortMode: api.PortModeNAT, Bridge: "pn-blue"},
		},
		{
			name: "lowest IPv6 mtu",
			in:   api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24", "fd00::/64"}, MTU: api.MinMTU6},
			want: api.Network{Name: "blue", Driver: api.DriverBridge,
				Subnets: []api.Subnet{sub("10.88.1.0/24", "10.88.1.1"), sub("fd00::/64", "fd00::1")},
				MTU:     1280, Masquerade: true, PortMode: api.PortModeNAT, Bridge: "pn-blue"},
		},
		{
			name: "highest mtu",
			in:   api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24"}, MTU: api.MaxMTU},
			want: api.Network{Name: "blue", Driver: api.DriverBridge, Subnets: []api.Subnet{sub("10.88.1.0/24", "10.88.1.1")},
				MTU: 65535, Masquerade: true, PortMode: api.PortModeNAT, Bridge: "pn-blue"},
		},
		{
			name: "name of 63 characters with every allowed character",
			in:   api.NetworkSpec{Name: "a_b.c-D9" + strings.Repeat("x", 55), Subnets: []string{"10.88.1.0/24"}},
			want: api.Network{Name: "a_b.c-D9" + strings.Repeat("x", 55), Driver: api.DriverBridge,
				Subnets: []api.Subnet{sub("10.88.1.0/24", "10.88.1.1")}, MTU: 1500, Masquerade: true, PortMode: api.PortModeNAT,
				Bridge: spec.BridgeName("a_b.c-D9" + strings.Repeat("x", 55))},
		},
		{
			name: "routed dual stack: no bridge, fixed gateways outside the subnets",
			in:   api.NetworkSpec{Name: "green", Driver: "routed", Subnets: []string{"fd00:77::/64", "10.77.0.0/16"}},
			want: api.Network{Name: "green", Driver: api.DriverRouted,
				Subnets: []api.Subnet{sub("10.77.0.0/16", api.RoutedGateway4), sub("fd00:77::/64", spec.RoutedGateway6)},
				MTU:     1500, Masquerade: true, PortMode: api.PortModeNAT},
		},
		{
			name: "routed IPv4 only, mtu, no masquerade",
			in:   api.NetworkSpec{Name: "green", Driver: "routed", Subnets: []string{"10.77.0.0/30"}, MTU: 9000, NoMasquerade: true},
			want: api.Network{Name: "green", Driver: api.DriverRouted, Subnets: []api.Subnet{sub("10.77.0.0/30", api.RoutedGateway4)},
				MTU: 9000, Masquerade: false, PortMode: api.PortModeNAT},
		},
		{
			name: "routed IPv6 only",
			in:   api.NetworkSpec{Name: "green", Driver: "routed", Subnets: []string{"fd00:77::/64"}},
			want: api.Network{Name: "green", Driver: api.DriverRouted, Subnets: []api.Subnet{sub("fd00:77::/64", spec.RoutedGateway6)},
				MTU: 1500, Masquerade: true, PortMode: api.PortModeNAT},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := spec.Canonicalize(tt.in)
			if err != nil {
				t.Fatalf("Canonicalize(%+v): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Canonicalize(%+v)\ngot  %+v\nwant %+v", tt.in, got, tt.want)
			}
			// Canonical output fed back as a spec gives the same network.
			again, err := spec.Canonicalize(specOf(got))
			if err != nil {
				t.Fatalf("Canonicalize(specOf(%+v)): %v", got, err)
			}
			if !reflect.DeepEqual(again, got) {
				t.Errorf("not a fixed point:\ngot  %+v\nwant %+v", again, got)
			}
		})
	}
}

// specOf is the spec that spells out every field of n.
func specOf(n api.Network) api.NetworkSpec {
	s := api.NetworkSpec{Name: n.Name, Driver: n.Driver, MTU: n.MTU, NoMasquerade: !n.Masquerade}
	for _, sn := range n.Subnets {
		s.Subnets = append(s.Subnets, sn.Prefix.String())
		if n.Driver != api.DriverRouted { // a routed network's gateways are fixed, not given
			s.Gateways = append(s.Gateways, sn.Gateway.String())
		}
	}
	return s
}

func TestCanonicalizeErrors(t *testing.T) {
	v4 := []string{"10.88.1.0/24"}
	tests := []struct {
		name  string
		in    api.NetworkSpec
		field string
		want  string
		bug   string // non-empty: a known bug, see the message; the case is skipped
	}{
		// name
		{name: "empty name", in: api.NetworkSpec{Subnets: v4}, field: "name",
			want: `network "": name "": must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit`},
		{name: "name starts with dash", in: api.NetworkSpec{Name: "-blue", Subnets: v4}, field: "name",
			want: `network "-blue": name "-blue": must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit`},
		{name: "name with space", in: api.NetworkSpec{Name: "my net", Subnets: v4}, field: "name",
			want: `network "my net": name "my net": must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit`},
		{name: "name with slash", in: api.NetworkSpec{Name: "a/b", Subnets: v4}, field: "name",
			want: `network "a/b": name "a/b": must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit`},
		{name: "name of 64 characters", in: api.NetworkSpec{Name: strings.Repeat("n", 64), Subnets: v4}, field: "name",
			want: `network "` + strings.Repeat("n", 64) + `": name "` + strings.Repeat("n", 64) + `": must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit`},
		{name: "name with trailing newline", in: api.NetworkSpec{Name: "blue\n", Subnets: v4}, field: "name",
			want: `network "blue\n": name "blue\n": must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit`},

		// driver
		{name: "unknown driver", in: api.NetworkSpec{Name: "blue", Driver: "macvlan", Subnets: v4}, field: "driver",
			want: `network "blue": driver "macvlan": unknown driver (known: bridge, routed)`},
		{name: "driver is case sensitive", in: api.NetworkSpec{Name: "blue", Driver: "Bridge", Subnets: v4}, field: "driver",
			want: `network "blue": driver "Bridge": unknown driver (known: bridge, routed)`},

		{name: "routed is case sensitive", in: api.NetworkSpec{Name: "blue", Driver: "Routed", Subnets: v4}, field: "driver",
			want: `network "blue": driver "Routed": unknown driver (known: bridge, routed)`},

		// subnets
		{name: "no subnet", in: api.NetworkSpec{Name: "blue"}, field: "subnets",
			want: `network "blue": subnets "": at least one subnet is required`},
		{name: "empty subnet list", in: api.NetworkSpec{Name: "blue", Subnets: []string{}}, field: "subnets",
			want: `network "blue": subnets "": at least one subnet is required`},
		{name: "address without length", in: api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0"}}, field: "subnet",
			want: `network "blue": subnet "10.88.1.0": not a CIDR prefix`},
		{name: "not an address", in: api.NetworkSpec{Name: "blue", Subnets: []string{"blue"}}, field: "subnet",
			want: `network "blue": subnet "blue": not a CIDR prefix`},
		{name: "empty subnet string", in: api.NetworkSpec{Name: "blue", Subnets: []string{""}}, field: "subnet",
			want: `network "blue": subnet "": not a CIDR prefix`},
		{name: "IPv4 length too long", in: api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/33"}}, field: "subnet",
			want: `network "blue": subnet "10.88.1.0/33": not a CIDR prefix`},
		{name: "zone in prefix", in: api.NetworkSpec{Name: "blue", Subnets: []string{"fd00::%eth0/64"}}, field: "subnet",
			want: `network "blue": subnet "fd00::%eth0/64": not a CIDR prefix`},
		{name: "IPv4 host bits set", in: api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.1/24"}}, field: "subnet",
			want: `network "blue": subnet "10.88.1.1/24": host bits are set (did you mean 10.88.1.0/24?)`},
		{name: "IPv6 host bits set", in: api.NetworkSpec{Name: "blue", Subnets: []string{"fd00::1/64"}}, field: "subnet",
			want: `network "blue": subnet "fd00::1/64": host bits are set (did you mean fd00::/64?)`},
		{name: "IPv4-mapped IPv6", in: api.NetworkSpec{Name: "blue", Subnets: []string{"::ffff:10.88.1.0/120"}}, field: "subnet",
			want: `network "blue": subnet "::ffff:10.88.1.0/120": IPv4-mapped IPv6 prefixes are not allowed`},
		{name: "two IPv4 subnets", in: api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24", "fd00::/64", "10.88.2.0/24"}}, field: "subnet",
			want: `network "blue": subnet "10.88.2.0/24": only one IPv4 subnet per network`},
		{name: "two IPv6 subnets", in: api.NetworkSpec{Name: "blue", Subnets: []string{"fd00:1::/64", "fd00:2::/64"}}, field: "subnet",
			want: `network "blue": subnet "fd00:2::/64": only one IPv6 subnet per network`},
		{name: "same IPv4 subnet twice", in: api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24", "10.88.1.0/24"}}, field: "subnet",
			want: `network "blue": subnet "10.88.1.0/24": only one IPv4 subnet per network`},
		{name: "IPv4 /31", in: api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/31"}}, field: "subnet",
			want: `network "blue": subnet "10.88.1.0/31": too small: at most /30`},
		{name: "IPv4 /32", in: api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.1/32"}}, field: "subnet",
			want: `network "blue": subnet "10.88.1.1/32": too small: at most /30`},
		{name: "IPv6 /127", in: api.NetworkSpec{Name: "blue", Subnets: []string{"fd00::/127"}}, field: "subnet",
			want: `network "blue": subnet "fd00::/127": too small: at most /126`},
		{name: "IPv6 /128", in: api.NetworkSpec{Name: "blue", Subnets: []string{"fd00::1/128"}}, field: "subnet",
			want: `network "blue": subnet "fd00::1/128": too small: at most /126`},
		{name: "IPv4 loopback", in: api.NetworkSpec{Name: "blue", Subnets: []string{"127.0.0.0/8"}}, field: "subnet",
			want: `network "blue": subnet "127.0.0.0/8": overlaps reserved range 127.0.0.0/8 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`},
		{name: "IPv4 loopback small", in: api.NetworkSpec{Name: "blue", Subnets: []string{"127.1.2.0/24"}}, field: "subnet",
			want: `network "blue": subnet "127.1.2.0/24": overlaps reserved range 127.0.0.0/8 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`},
		{name: "IPv4 multicast", in: api.NetworkSpec{Name: "blue", Subnets: []string{"224.0.0.0/4"}}, field: "subnet",
			want: `network "blue": subnet "224.0.0.0/4": overlaps reserved range 224.0.0.0/4 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`},
		{name: "IPv6 multicast", in: api.NetworkSpec{Name: "blue", Subnets: []string{"ff02::/64"}}, field: "subnet",
			want: `network "blue": subnet "ff02::/64": overlaps reserved range ff00::/8 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`},
		{name: "IPv4 link-local", in: api.NetworkSpec{Name: "blue", Subnets: []string{"169.254.0.0/16"}}, field: "subnet",
			want: `network "blue": subnet "169.254.0.0/16": overlaps reserved range 169.254.0.0/16 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`},
		{name: "IPv6 link-local", in: api.NetworkSpec{Name: "blue", Subnets: []string{"fe80::/64"}}, field: "subnet",
			want: `network "blue": subnet "fe80::/64": overlaps reserved range fe80::/10 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`},
		{name: "IPv4 default", in: api.NetworkSpec{Name: "blue", Subnets: []string{"0.0.0.0/0"}}, field: "subnet",
			want: `network "blue": subnet "0.0.0.0/0": overlaps reserved range 0.0.0.0/8 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`},
		{name: "IPv6 default", in: api.NetworkSpec{Name: "blue", Subnets: []string{"::/0"}}, field: "subnet",
			want: `network "blue": subnet "::/0": overlaps reserved range ::/127 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`},
		{name: "IPv6 prefix holding ::1", in: api.NetworkSpec{Name: "blue", Subnets: []string{"::/64"}}, field: "subnet",
			want: `network "blue": subnet "::/64": overlaps reserved range ::/127 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`,
			bug:  "only the first address of a prefix is checked: ::/64 (gateway ::1, the loopback address) is accepted"},
		{name: "IPv4 prefix holding loopback", in: api.NetworkSpec{Name: "blue", Subnets: []string{"0.0.0.0/1"}}, field: "subnet",
			want: `network "blue": subnet "0.0.0.0/1": overlaps reserved range 0.0.0.0/8 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`,
			bug:  "only the first address of a prefix is checked: 0.0.0.0/1 (holds 127.0.0.0/8) is accepted"},
		{name: "IPv4 prefix holding link-local and multicast", in: api.NetworkSpec{Name: "blue", Subnets: []string{"128.0.0.0/1"}}, field: "subnet",
			want: `network "blue": subnet "128.0.0.0/1": overlaps reserved range 169.254.0.0/16 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`,
			bug:  "only the first address of a prefix is checked: 128.0.0.0/1 (holds 169.254.0.0/16 and 224.0.0.0/4) is accepted"},

		// gateways
		{name: "gateway not an address", in: api.NetworkSpec{Name: "blue", Subnets: v4, Gateways: []string{"router"}}, field: "gateway",
			want: `network "blue": gateway "router": not an IP address`},
		{name: "gateway with prefix length", in: api.NetworkSpec{Name: "blue", Subnets: v4, Gateways: []string{"10.88.1.1/24"}}, field: "gateway",
			want: `network "blue": gateway "10.88.1.1/24": not an IP address`},
		{name: "gateway outside subnet", in: api.NetworkSpec{Name: "blue", Subnets: v4, Gateways: []string{"10.88.2.1"}}, field: "gateway",
			want: `network "blue": gateway "10.88.2.1": not inside any subnet of the network`},
		{name: "IPv6 gateway on IPv4-only network", in: api.NetworkSpec{Name: "blue", Subnets: v4, Gateways: []string{"fd00::1"}}, field: "gateway",
			want: `network "blue": gateway "fd00::1": not inside any subnet of the network`},
		{name: "IPv4-mapped gateway", in: api.NetworkSpec{Name: "blue", Subnets: v4, Gateways: []string{"::ffff:10.88.1.1"}}, field: "gateway",
			want: `network "blue": gateway "::ffff:10.88.1.1": not inside any subnet of the network`},
		{name: "gateway with zone", in: api.NetworkSpec{Name: "blue", Subnets: []string{"fd00::/64"}, Gateways: []string{"fd00::1%eth0"}}, field: "gateway",
			want: `network "blue": gateway "fd00::1%eth0": zones are not allowed`},
		{name: "gateway is network address", in: api.NetworkSpec{Name: "blue", Subnets: v4, Gateways: []string{"10.88.1.0"}}, field: "gateway",
			want: `network "blue": gateway "10.88.1.0": is the network or broadcast address of 10.88.1.0/24`},
		{name: "gateway is broadcast address", in: api.NetworkSpec{Name: "blue", Subnets: v4, Gateways: []string{"10.88.1.255"}}, field: "gateway",
			want: `network "blue": gateway "10.88.1.255": is the network or broadcast address of 10.88.1.0/24`},
		{name: "gateway is IPv6 subnet-router anycast", in: api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24", "fd00::/64"}, Gateways: []string{"fd00::"}}, field: "gateway",
			want: `network "blue": gateway "fd00::": is the network or broadcast address of fd00::/64`},
		{name: "two gateways for one subnet", in: api.NetworkSpec{Name: "blue", Subnets: v4, Gateways: []string{"10.88.1.5", "10.88.1.6"}}, field: "gateway",
			want: `network "blue": gateway "10.88.1.6": only one gateway per subnet`,
			bug:  "a second gateway for the same subnet silently replaces the first (gateway 10.88.1.6 wins, no error)"},

		// routed: the gateway is not the user's to choose
		{name: "routed with a gateway inside the subnet", in: api.NetworkSpec{Name: "green", Driver: "routed", Subnets: v4, Gateways: []string{"10.88.1.1"}}, field: "gateway",
			want: `network "green": gateway "10.88.1.1": not allowed for a routed network: its sandboxes use 169.254.1.1 (IPv4) and fe80::ecee:eeff:feee:eeee (IPv6), answered by the node`},
		{name: "routed with its own gateway spelled out", in: api.NetworkSpec{Name: "green", Driver: "routed", Subnets: v4, Gateways: []string{"169.254.1.1"}}, field: "gateway",
			want: `network "green": gateway "169.254.1.1": not allowed for a routed network: its sandboxes use 169.254.1.1 (IPv4) and fe80::ecee:eeff:feee:eeee (IPv6), answered by the node`},
		{name: "routed with an IPv6 gateway", in: api.NetworkSpec{Name: "green", Driver: "routed", Subnets: []string{"fd00::/64"}, Gateways: []string{"fd00::1"}}, field: "gateway",
			want: `network "green": gateway "fd00::1": not allowed for a routed network: its sandboxes use 169.254.1.1 (IPv4) and fe80::ecee:eeff:feee:eeee (IPv6), answered by the node`},
		{name: "routed subnet checks still apply", in: api.NetworkSpec{Name: "green", Driver: "routed", Subnets: []string{"169.254.0.0/16"}}, field: "subnet",
			want: `network "green": subnet "169.254.0.0/16": overlaps reserved range 169.254.0.0/16 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)`},
		{name: "routed mtu checks still apply", in: api.NetworkSpec{Name: "green", Driver: "routed", Subnets: []string{"fd00::/64"}, MTU: 1000}, field: "mtu",
			want: `network "green": mtu "1000": IPv6 needs at least 1280`},

		// mtu
		{name: "mtu too low", in: api.NetworkSpec{Name: "blue", Subnets: v4, MTU: 575}, field: "mtu",
			want: `network "blue": mtu "575": must be between 576 and 65535`},
		{name: "mtu too high", in: api.NetworkSpec{Name: "blue", Subnets: v4, MTU: 65536}, field: "mtu",
			want: `network "blue": mtu "65536": must be between 576 and 65535`},
		{name: "negative mtu", in: api.NetworkSpec{Name: "blue", Subnets: v4, MTU: -1}, field: "mtu",
			want: `network "blue": mtu "-1": must be between 576 and 65535`},
		{name: "IPv6 mtu below 1280", in: api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24", "fd00::/64"}, MTU: 1279}, field: "mtu",
			want: `network "blue": mtu "1279": IPv6 needs at least 1280`},
		{name: "IPv6-only mtu below 1280", in: api.NetworkSpec{Name: "blue", Subnets: []string{"fd00::/64"}, MTU: 576}, field: "mtu",
			want: `network "blue": mtu "576": IPv6 needs at least 1280`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := spec.Canonicalize(tt.in)
			if err == nil {
				t.Fatalf("Canonicalize(%+v) = %+v, want error %q", tt.in, got, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Canonicalize(%+v) error\ngot  %s\nwant %s", tt.in, err, tt.want)
			}
			var ve *api.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is %T, want *api.ValidationError", err, err)
			}
			if want := fmt.Sprintf("network %q", tt.in.Name); ve.Object != want || ve.Field != tt.field {
				t.Errorf("error names %s field %q, want %s field %q", ve.Object, ve.Field, want, tt.field)
			}
			if api.ErrorCode(err) != api.CodeInvalidConfig {
				t.Errorf("error code %d, want %d", api.ErrorCode(err), api.CodeInvalidConfig)
			}
			if !reflect.DeepEqual(got, api.Network{}) {
				t.Errorf("Canonicalize returned %+v with an error, want the zero network", got)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, name := range []string{"a", "blue", "Blue-2", "podman", "k8s.pod-net_1", "0", strings.Repeat("x", 63)} {
		if err := spec.ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", "_a", ".a", "-a", "a b", "a/b", "ä", "a\x00", strings.Repeat("x", 64)} {
		if err := spec.ValidateName(name); err == nil {
			t.Errorf("ValidateName(%q) = nil, want an error", name)
		}
	}
}

func TestAgrees(t *testing.T) {
	base := api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24", "fd00:88:1::/64"}}
	existing, err := spec.Canonicalize(api.NetworkSpec{Name: "blue", Subnets: base.Subnets, MTU: 1400, Gateways: []string{"10.88.1.254"}})
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func(s *api.NetworkSpec)) api.NetworkSpec {
		s := base
		s.Subnets = append([]string(nil), base.Subnets...)
		f(&s)
		return s
	}
	tests := []struct {
		name string
		in   api.NetworkSpec
		want string // "" means agrees
		bug  string
	}{
		{name: "mtu and gateways left out agree", in: base},
		{name: "same everything", in: with(func(s *api.NetworkSpec) {
			s.Driver, s.MTU, s.Gateways = "bridge", 1400, []string{"10.88.1.254"}
		})},
		{name: "same gateway spelled with spaces", in: with(func(s *api.NetworkSpec) { s.Gateways = []string{" 10.88.1.254"} })},
		{name: "invalid spec", in: with(func(s *api.NetworkSpec) { s.Subnets = []string{"10.88.1.0"} }),
			want: `network "blue": subnet "10.88.1.0": not a CIDR prefix`},
		{name: "driver differs", in: with(func(s *api.NetworkSpec) { s.Driver = "macvlan" }),
			want: `network "blue": driver "macvlan": unknown driver (known: bridge, routed)`},
		{name: "mtu differs", in: with(func(s *api.NetworkSpec) { s.MTU = 1500 }),
			want: `network "blue": mtu "1500": network exists with mtu 1400`},
		{name: "masquerade differs", in: with(func(s *api.NetworkSpec) { s.NoMasquerade = true }),
			want: `network "blue": noMasquerade "true": network exists with masquerade=true`},
		{name: "subnet missing", in: with(func(s *api.NetworkSpec) { s.Subnets = s.Subnets[:1] }),
			want: `network "blue": subnets "10.88.1.0/24": network exists with subnets 10.88.1.0/24,fd00:88:1::/64`},
		{name: "subnet differs", in: with(func(s *api.NetworkSpec) { s.Subnets[0] = "10.88.9.0/24" }),
			want: `network "blue": subnets "10.88.9.0/24,fd00:88:1::/64": network exists with subnets 10.88.1.0/24,fd00:88:1::/64`},
		{name: "subnet length differs", in: with(func(s *api.NetworkSpec) { s.Subnets[1] = "fd00:88:1::/80" }),
			want: `network "blue": subnets "10.88.1.0/24,fd00:88:1::/80": network exists with subnets 10.88.1.0/24,fd00:88:1::/64`},
		{name: "gateway differs", in: with(func(s *api.NetworkSpec) { s.Gateways = []string{"10.88.1.1"} }),
			want: `network "blue": gateway "10.88.1.1": network exists with gateway 10.88.1.254`},
		{name: "defaulted gateway differs when gateways are given", in: with(func(s *api.NetworkSpec) { s.Gateways = []string{"fd00:88:1::1"} }),
			want: `network "blue": gateway "10.88.1.1": network exists with gateway 10.88.1.254`},
		{name: "same subnets in the other order", in: with(func(s *api.NetworkSpec) { s.Subnets[0], s.Subnets[1] = s.Subnets[1], s.Subnets[0] }),
			bug: `Canonicalize keeps the given subnet order, so Agrees compares position by position: ` +
				`["fd00:88:1::/64","10.88.1.0/24"] is refused for a network created with ["10.88.1.0/24","fd00:88:1::/64"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := spec.Agrees(existing, tt.in)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Agrees(%+v) = %v, want nil", tt.in, err)
			case tt.want != "" && err == nil:
				t.Errorf("Agrees(%+v) = nil, want %q", tt.in, tt.want)
			case tt.want != "" && err.Error() != tt.want:
				t.Errorf("Agrees(%+v)\ngot  %s\nwant %s", tt.in, err, tt.want)
			}
			var ve *api.ValidationError
			if err != nil && !errors.As(err, &ve) {
				t.Errorf("error %v is %T, want *api.ValidationError", err, err)
			}
		})
	}
}

func TestAgreesRouted(t *testing.T) {
	existing, err := spec.Canonicalize(api.NetworkSpec{Name: "green", Driver: "routed", Subnets: []string{"10.77.0.0/16", "fd00:77::/64"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   api.NetworkSpec
		want string // "" means agrees
	}{
		{name: "same definition", in: api.NetworkSpec{Name: "green", Driver: "routed", Subnets: []string{"10.77.0.0/16", "fd00:77::/64"}}},
		{name: "bridge definition of a routed network", in: api.NetworkSpec{Name: "green", Subnets: []string{"10.77.0.0/16", "fd00:77::/64"}},
			want: `network "green": driver "bridge": network exists with driver "routed"`},
		{name: "gateway given", in: api.NetworkSpec{Name: "green", Driver: "routed", Subnets: []string{"10.77.0.0/16"}, Gateways: []string{"169.254.1.1"}},
			want: `network "green": gateway "169.254.1.1": not allowed for a routed network: its sandboxes use 169.254.1.1 (IPv4) and fe80::ecee:eeff:feee:eeee (IPv6), answered by the node`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := spec.Agrees(existing, tt.in)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Agrees(%+v) = %v, want nil", tt.in, err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Errorf("Agrees(%+v) = %v, want %q", tt.in, err, tt.want)
			}
		})
	}
}

// The IPv6 gateway of routed sandboxes is the address the kernel derives for the host
// veth's link-local from its MAC (modified EUI-64): the two constants must agree.
func TestRoutedGateway6IsEUI64OfHostMAC(t *testing.T) {
	mac, err := net.ParseMAC(api.RoutedHostMAC)
	if err != nil {
		t.Fatal(err)
	}
	a := [16]byte{0: 0xfe, 1: 0x80}
	copy(a[8:], []byte{mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	if got, want := netip.AddrFrom16(a), netip.MustParseAddr(spec.RoutedGateway6); got != want {
		t.Errorf("EUI-64 link-local of %s = %s, RoutedGateway6 = %s", mac, got, want)
	}
}

func TestCheckOverlap(t *testing.T) {
	mustNet := func(name string, subnets ...string) api.Network {
		t.Helper()
		n, err := spec.Canonicalize(api.NetworkSpec{Name: name, Subnets: subnets})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	route := func(dst, dev string) spec.NodeRoute {
		return spec.NodeRoute{Dst: netip.MustParsePrefix(dst), Dev: dev}
	}
	blue := mustNet("blue", "10.88.1.0/24", "fd00:88:1::/64")
	red := mustNet("red", "10.88.2.0/24", "fd00:88:2::/64")
	own := map[string]bool{"pn-blue": true, "pn-red": true, "": true} // "": a routed network's Bridge

	tests := []struct {
		name   string
		n      api.Network
		others []api.Network
		routes []spec.NodeRoute
		want   string
	}{
		{name: "nothing else", n: blue},
		{name: "disjoint networks and routes", n: blue, others: []api.Network{red},
			routes: []spec.NodeRoute{route("192.168.1.0/24", "eth0"), route("2001:db8::/64", "eth0")}},
		{name: "itself among the others", n: blue, others: []api.Network{red, blue}},
		{name: "IPv4 inside another network", n: mustNet("green", "10.88.2.128/25"), others: []api.Network{blue, red},
			want: `network "green": subnet "10.88.2.128/25": overlaps subnet 10.88.2.0/24 of podnet network "red"`},
		{name: "IPv4 around another network", n: mustNet("green", "10.88.0.0/16"), others: []api.Network{blue, red},
			want: `network "green": subnet "10.88.0.0/16": overlaps subnet 10.88.1.0/24 of podnet network "blue"`},
		{name: "IPv6 overlaps another network", n: mustNet("green", "10.99.0.0/24", "fd00:88:2::/80"), others: []api.Network{blue, red},
			want: `network "green": subnet "fd00:88:2::/80": overlaps subnet fd00:88:2::/64 of podnet network "red"`},
		{name: "node route around the subnet", n: blue, routes: []spec.NodeRoute{route("10.0.0.0/8", "eth0")},
			want: `network "blue": subnet "10.88.1.0/24": overlaps node route 10.0.0.0/8 dev eth0`},
		{name: "host route inside the subnet", n: blue, routes: []spec.NodeRoute{route("10.88.1.7/32", "wg0")},
			want: `network "blue": subnet "10.88.1.0/24": overlaps node route 10.88.1.7/32 dev wg0`},
		{name: "IPv6 node route", n: blue, routes: []spec.NodeRoute{route("fd00::/16", "eth1")},
			want: `network "blue": subnet "fd00:88:1::/64": overlaps node route fd00::/16 dev eth1`},
		{name: "default routes ignored", n: blue,
			routes: []spec.NodeRoute{route("0.0.0.0/0", "eth0"), route("::/0", "eth0")}},
		{name: "routes of own bridges ignored", n: blue, others: []api.Network{red},
			routes: []spec.NodeRoute{route("10.88.1.0/24", "pn-blue"), route("fd00:88:1::/64", "pn-blue"), route("10.88.2.0/24", "pn-red")}},
		{name: "routed network's empty bridge name does not hide device-less routes", n: blue,
			routes: []spec.NodeRoute{route("10.88.0.0/16", "")},
			want:   `network "blue": subnet "10.88.1.0/24": overlaps node route 10.88.0.0/16 dev `},
		{name: "route of a foreign bridge with the podnet prefix", n: blue, routes: []spec.NodeRoute{route("10.88.1.0/24", "pn-other")},
			want: `network "blue": subnet "10.88.1.0/24": overlaps node route 10.88.1.0/24 dev pn-other`},
		{name: "link-local and multicast routes ignored", n: blue,
			routes: []spec.NodeRoute{route("169.254.0.0/16", "eth0"), route("fe80::/64", "eth0"), route("224.0.0.0/4", "eth0"), route("ff00::/8", "eth0")}},
		{name: "other networks checked before routes", n: mustNet("green", "10.88.1.0/24"), others: []api.Network{blue},
			routes: []spec.NodeRoute{route("10.88.1.0/24", "eth0")},
			want:   `network "green": subnet "10.88.1.0/24": overlaps subnet 10.88.1.0/24 of podnet network "blue"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := spec.CheckOverlap(tt.n, tt.others, tt.routes, own)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("CheckOverlap = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Errorf("CheckOverlap = nil, want %q", tt.want)
			case tt.want != "" && err.Error() != tt.want:
				t.Errorf("CheckOverlap\ngot  %s\nwant %s", err, tt.want)
			}
			var ve *api.ValidationError
			if err != nil && (!errors.As(err, &ve) || ve.Field != "subnet" || ve.Object != fmt.Sprintf("network %q", tt.n.Name)) {
				t.Errorf("error %v (%T) does not name network %q field subnet", err, err, tt.n.Name)
			}
		})
	}
}

func TestBridgeName(t *testing.T) {
	tests := []struct {
		network string
		want    string
	}{
		{"blue", "pn-blue"},
		{"a", "pn-a"},
		{"twelve-chars", "pn-twelve-chars"},  // exactly 15 bytes: kept as is
		{"thirteen-char", "pnh3adc6cba4867"}, // too long: hashed
	}
	for _, tt := range tests {
		if got := spec.BridgeName(tt.network); got != tt.want {
			t.Errorf("BridgeName(%q) = %q, want %q", tt.network, got, tt.want)
		}
	}

	long := []string{
		"thirteen-char",
		"thirteen-chas",
		"production-frontend",
		"production-backend",
		strings.Repeat("x", 63),
		strings.Repeat("x", 62),
	}
	seen := map[string]string{}
	for _, n := range long {
		got := spec.BridgeName(n)
		if len(got) > 15 {
			t.Errorf("BridgeName(%q) = %q: %d bytes, want at most 15", n, got, len(got))
		}
		if !strings.HasPrefix(got, "pnh") {
			t.Errorf("BridgeName(%q) = %q, want the hashed form pnh...", n, got)
		}
		if again := spec.BridgeName(n); again != got {
			t.Errorf("BridgeName(%q) not deterministic: %q then %q", n, got, again)
		}
		if prev, ok := seen[got]; ok {
			t.Errorf("BridgeName(%q) = BridgeName(%q) = %q", n, prev, got)
		}
		seen[got] = n
	}
}

func TestBridgeNameShortNameCannotTakeHashedName(t *testing.T) {
	long := "abcdefghijklm"
	hashed := spec.BridgeName(long)
	short := strings.TrimPrefix(hashed, "pn-")
	if err := spec.ValidateName(short); err != nil {
		t.Fatalf("ValidateName(%q): %v", short, err)
	}
	if got := spec.BridgeName(short); got == hashed {
		t.Errorf("BridgeName(%q) = BridgeName(%q) = %q", short, long, got)
	}
}

func TestHostVethName(t *testing.T) {
	keys := []api.EndpointKey{
		{Network: "blue", ContainerID: "c1", IfName: "eth0"},
		{Network: "blue", ContainerID: "c1", IfName: "eth1"},
		{Network: "blue", ContainerID: "c2", IfName: "eth0"},
		{Network: "red", ContainerID: "c1", IfName: "eth0"},
		{Network: strings.Repeat("n", 63), ContainerID: strings.Repeat("0123456789abcdef", 4), IfName: "eth0"},
		{Network: strings.Repeat("n", 62), ContainerID: strings.Repeat("0123456789abcdef", 4), IfName: "eth0"},
	}
	seen := map[string]api.EndpointKey{}
	for _, k := range keys {
		got := spec.HostVethName(k)
		if len(got) > 15 || len(got) < 4 {
			t.Errorf("HostVethName(%v) = %q: %d bytes, want 4..15", k, got, len(got))
		}
		if !strings.HasPrefix(got, spec.VethPrefix) {
			t.Errorf("HostVethName(%v) = %q, want prefix %q", k, got, spec.VethPrefix)
		}
		if strings.ContainsAny(got, "/: \t\n") {
			t.Errorf("HostVethName(%v) = %q: not a valid interface name", k, got)
		}
		if again := spec.HostVethName(k); again != got {
			t.Errorf("HostVethName(%v) not deterministic: %q then %q", k, got, again)
		}
		if prev, ok := seen[got]; ok {
			t.Errorf("HostVethName(%v) = HostVethName(%v) = %q", k, prev, got)
		}
		seen[got] = k
	}
	// Pinned: a restarted agent must find the veths an older one created.
	k := api.EndpointKey{Network: "blue", ContainerID: "c1", IfName: "eth0"}
	if got, want := spec.HostVethName(k), "pnv7a9ae503637"; got != want {
		t.Errorf("HostVethName(%v) = %q, want %q (the name of existing veths)", k, got, want)
	}
}

func TestLastAddr(t *testing.T) {
	tests := []struct {
		prefix, want string
	}{
		{"10.88.1.0/24", "10.88.1.255"},
		{"10.88.1.7/24", "10.88.1.255"}, // host bits ignored
		{"10.0.0.4/30", "10.0.0.7"},
		{"10.0.0.0/8", "10.255.255.255"},
		{"10.1.2.3/32", "10.1.2.3"},
		{"0.0.0.0/0", "255.255.255.255"},
		{"172.16.0.0/12", "172.31.255.255"},
		{"10.88.0.0/23", "10.88.1.255"},
		{"fd00::/64", "fd00::ffff:ffff:ffff:ffff"},
		{"fd00:88:1::/48", "fd00:88:1:ffff:ffff:ffff:ffff:ffff"},
		{"fd00::4/126", "fd00::7"},
		{"fd00::1/128", "fd00::1"},
		{"::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	}
	for _, tt := range tests {
		got := spec.LastAddr(netip.MustParsePrefix(tt.prefix))
		if got != netip.MustParseAddr(tt.want) {
			t.Errorf("LastAddr(%s) = %s, want %s", tt.prefix, got, tt.want)
		}
	}
	if got := spec.LastAddr(netip.Prefix{}); got.IsValid() {
		t.Errorf("LastAddr(zero prefix) = %s, want the invalid address", got)
	}
}
