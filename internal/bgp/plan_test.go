package bgp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	addr   = netip.MustParseAddr
	prefix = netip.MustParsePrefix
)

func TestConfigCanonical(t *testing.T) {
	base := Config{ASN: 64512, RouterID: addr("192.168.77.10")}
	got, err := base.canonical()
	if err != nil {
		t.Fatal(err)
	}
	if got.ListenPort != 179 || got.HoldTime != 90*time.Second || got.ConnectRetry != 5*time.Second || got.Logger == nil {
		t.Errorf("defaults: got port %d, hold %s, retry %s, logger %v", got.ListenPort, got.HoldTime, got.ConnectRetry, got.Logger)
	}
	noListen := base
	noListen.ListenPort = -1
	if got, err := noListen.canonical(); err != nil || got.ListenPort != -1 {
		t.Errorf("listen port -1: got %d, %v", got.ListenPort, err)
	}
	mapped := base
	mapped.RouterID = addr("::ffff:10.0.0.1")
	if got, err := mapped.canonical(); err != nil || got.RouterID != addr("10.0.0.1") {
		t.Errorf("mapped router id: got %s, %v", got.RouterID, err)
	}

	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no asn", func(c *Config) { c.ASN = 0 }, "asn: must not be 0"},
		{"no router id", func(c *Config) { c.RouterID = netip.Addr{} }, "router id: missing"},
		{"ipv6 router id", func(c *Config) { c.RouterID = addr("2001:db8::1") }, "router id 2001:db8::1: want a non-zero IPv4 address"},
		{"zero router id", func(c *Config) { c.RouterID = addr("0.0.0.0") }, "router id 0.0.0.0"},
		{"port", func(c *Config) { c.ListenPort = 70000 }, "listen port 70000"},
		{"port -2", func(c *Config) { c.ListenPort = -2 }, "listen port -2"},
		{"short hold", func(c *Config) { c.HoldTime = 2 * time.Second }, "hold time 2s"},
		{"fractional hold", func(c *Config) { c.HoldTime = 3500 * time.Millisecond }, "hold time 3.5s"},
		{"short retry", func(c *Config) { c.ConnectRetry = 500 * time.Millisecond }, "connect retry 500ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			_, err := c.canonical()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestCanonicalPeers(t *testing.T) {
	got, err := canonicalPeers([]Peer{
		{Name: "b", Address: addr("192.168.77.11"), ASN: 64512},
		{Address: addr("::ffff:192.168.77.12"), ASN: 65001, Passive: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Addr]Peer{
		addr("192.168.77.11"): {Name: "b", Address: addr("192.168.77.11"), ASN: 64512},
		addr("192.168.77.12"): {Name: "192.168.77.12", Address: addr("192.168.77.12"), ASN: 65001, Passive: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got, err := canonicalPeers(nil); err != nil || len(got) != 0 {
		t.Errorf("no peers: got %v, %v", got, err)
	}

	for _, tc := range []struct {
		name  string
		peers []Peer
		want  string
	}{
		{"no address", []Peer{{Name: "a", ASN: 1}}, `peer "a": address: missing`},
		{"unspecified", []Peer{{Name: "a", Address: addr("0.0.0.0"), ASN: 1}}, `peer "a": address 0.0.0.0: want a unicast address`},
		{"multicast", []Peer{{Address: addr("ff02::5"), ASN: 1}}, `peer "ff02::5": address ff02::5`},
		{"no asn", []Peer{{Name: "a", Address: addr("10.0.0.1")}}, `peer "a": asn: must not be 0`},
		{"same address", []Peer{{Name: "a", Address: addr("10.0.0.1"), ASN: 1}, {Name: "b", Address: addr("10.0.0.1"), ASN: 2}}, `peers "a" and "b": same address 10.0.0.1`},
		{"same name", []Peer{{Name: "a", Address: addr("10.0.0.1"), ASN: 1}, {Name: "a", Address: addr("10.0.0.2"), ASN: 1}}, `peers 10.0.0.1 and 10.0.0.2: same name "a"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := canonicalPeers(tc.peers)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestPlanPeers(t *testing.T) {
	a := Peer{Name: "a", Address: addr("10.0.0.1"), ASN: 64512}
	b := Peer{Name: "b", Address: addr("10.0.0.2"), ASN: 64512}
	c := Peer{Name: "c", Address: addr("10.0.0.3"), ASN: 65001}
	d := Peer{Name: "d", Address: addr("10.0.0.4"), ASN: 65001}
	peers := func(ps ...Peer) map[netip.Addr]Peer {
		m := map[netip.Addr]Peer{}
		for _, p := range ps {
			m[p.Address] = p
		}
		return m
	}
	bNewASN := b
	bNewASN.ASN = 65002
	cPassive := c
	cPassive.Passive = true
	dRenamed := d
	dRenamed.Name = "tor"

	for _, tc := range []struct {
		name             string
		current, desired map[netip.Addr]Peer
		want             peerPlan
	}{
		{"from nothing", peers(), peers(b, a), peerPlan{Add: []Peer{a, b}}},
		{"same", peers(a, b), peers(b, a), peerPlan{}},
		{"to nothing", peers(a, b), peers(), peerPlan{Remove: []Peer{a, b}}},
		{"everything", peers(a, b, c, d), peers(bNewASN, cPassive, dRenamed), peerPlan{
			Replace: []Peer{bNewASN, cPassive},
			Rename:  []Peer{dRenamed},
			Remove:  []Peer{a},
		}},
		{"add and remove", peers(a), peers(c), peerPlan{Add: []Peer{c}, Remove: []Peer{a}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := planPeers(tc.current, tc.desired)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestCanonicalRoutes(t *testing.T) {
	got, err := canonicalRoutes([]Route{
		{Prefix: prefix("10.244.1.7/26"), NextHop: addr("192.168.77.11"), Peer: "ignored"},
		{Prefix: prefix("10.244.1.0/26"), NextHop: addr("::ffff:192.168.77.11")}, // same after canonicalization
		{Prefix: prefix("fd00:244:1::/64"), NextHop: addr("fd00:77::11")},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]netip.Addr{
		prefix("10.244.1.0/26"):   addr("192.168.77.11"),
		prefix("fd00:244:1::/64"): addr("fd00:77::11"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}

	for _, tc := range []struct {
		name   string
		routes []Route
		want   string
	}{
		{"no prefix", []Route{{NextHop: addr("10.0.0.1")}}, "invalid prefix"},
		{"mapped prefix", []Route{{Prefix: prefix("::ffff:10.0.0.0/104"), NextHop: addr("10.0.0.1")}}, "want a plain IPv4 or IPv6 prefix"},
		{"no next hop", []Route{{Prefix: prefix("10.0.0.0/24")}}, "route 10.0.0.0/24: next hop: missing"},
		{"v6 next hop for v4", []Route{{Prefix: prefix("10.0.0.0/24"), NextHop: addr("fd00::1")}}, "route 10.0.0.0/24: next hop fd00::1: want an IPv4 address"},
		{"v4 next hop for v6", []Route{{Prefix: prefix("fd00::/64"), NextHop: addr("10.0.0.1")}}, "route fd00::/64: next hop 10.0.0.1: want an IPv6 address"},
		{"unspecified next hop", []Route{{Prefix: prefix("10.0.0.0/24"), NextHop: addr("0.0.0.0")}}, "next hop 0.0.0.0: want a unicast address"},
		{"two next hops", []Route{
			{Prefix: prefix("10.0.0.0/24"), NextHop: addr("10.1.0.1")},
			{Prefix: prefix("10.0.0.9/24"), NextHop: addr("10.1.0.2")},
		}, "route 10.0.0.0/24: two next hops, 10.1.0.1 and 10.1.0.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := canonicalRoutes(tc.routes)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// dumpRoutePlan prints a plan one line per change, for golden comparisons.
func dumpRoutePlan(p routePlan) string {
	var b strings.Builder
	for _, r := range p.Announce {
		fmt.Fprintf(&b, "announce %s via %s\n", r.Prefix, r.NextHop)
	}
	for _, r := range p.Withdraw {
		fmt.Fprintf(&b, "withdraw %s via %s\n", r.Prefix, r.NextHop)
	}
	return b.String()
}

func TestPlanRoutes(t *testing.T) {
	current := map[netip.Prefix]netip.Addr{
		prefix("10.244.0.0/26"):   addr("192.168.77.10"),
		prefix("10.244.0.64/26"):  addr("192.168.77.10"),
		prefix("10.244.0.128/26"): addr("192.168.77.10"),
		prefix("fd00:244::/64"):   addr("fd00:77::10"),
	}
	desired := map[netip.Prefix]netip.Addr{
		prefix("10.244.0.0/26"):   addr("192.168.77.10"), // unchanged
		prefix("10.244.0.64/26"):  addr("192.168.77.20"), // new next hop
		prefix("10.244.0.192/26"): addr("192.168.77.10"), // new
		prefix("10.244.0.0/24"):   addr("192.168.77.10"), // new, sorts before its /26s
	}
	want := `announce 10.244.0.0/24 via 192.168.77.10
announce 10.244.0.64/26 via 192.168.77.20
announce 10.244.0.192/26 via 192.168.77.10
withdraw 10.244.0.128/26 via 192.168.77.10
withdraw fd00:244::/64 via fd00:77::10
`
	if got := dumpRoutePlan(planRoutes(current, desired)); got != want {
		t.Errorf("got:\n%swant:\n%s", got, want)
	}
	if got := dumpRoutePlan(planRoutes(desired, desired)); got != "" {
		t.Errorf("same routes: got:\n%s", got)
	}

	// The plan depends on the sets only: canonicalizing the same routes given in
	// any order gives the same plan.
	routes := []Route{
		{Prefix: prefix("10.244.0.0/24"), NextHop: addr("192.168.77.10")},
		{Prefix: prefix("10.244.0.0/26"), NextHop: addr("192.168.77.10")},
		{Prefix: prefix("10.244.0.64/26"), NextHop: addr("192.168.77.20")},
		{Prefix: prefix("10.244.0.192/26"), NextHop: addr("192.168.77.10")},
	}
	for range 20 {
		rand.Shuffle(len(routes), func(i, j int) { routes[i], routes[j] = routes[j], routes[i] })
		d, err := canonicalRoutes(routes)
		if err != nil {
			t.Fatal(err)
		}
		if got := dumpRoutePlan(planRoutes(current, d)); got != want {
			t.Fatalf("order %v: got:\n%swant:\n%s", routes, got, want)
		}
	}
}

func TestSortRoutes(t *testing.T) {
	routes := []Route{
		{Prefix: prefix("fd00::/64")},
		{Prefix: prefix("10.244.1.0/26")},
		{Prefix: prefix("10.244.0.0/26")},
		{Prefix: prefix("10.244.0.0/24")},
		{Prefix: prefix("198.51.100.0/24")},
	}
	sortRoutes(routes)
	var got []string
	for _, r := range routes {
		got = append(got, r.Prefix.String())
	}
	want := "10.244.0.0/24 10.244.0.0/26 10.244.1.0/26 198.51.100.0/24 fd00::/64"
	if strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}
