package storetest

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/store"
)

// Conformance runs the behaviour every store.Store must have against stores made by
// open, one fresh empty store per subtest. open registers the cleanup of what it
// creates. Persistence across a reopen is the business of each implementation's own
// tests (a memory store has none).
func Conformance(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Networks", testNetworks},
		{"Endpoints", testEndpoints},
		{"EndpointKeys", testEndpointKeys},
		{"Allocations", testAllocations},
		{"Cursors", testCursors},
		{"Ports", testPorts},
		{"PortsPerNode", testPortsPerNode},
		{"Services", testServices},
		{"NetworkPolicies", testNetworkPolicies},
		{"Namespaces", testNamespaces},
		{"Pods", testPods},
		{"ReadYourWrites", testReadYourWrites},
		{"ReadYourDeletes", testReadYourDeletes},
		{"Rollback", testRollback},
		{"DeleteNetworkCascade", testDeleteNetworkCascade},
		{"DeleteAndRecreateNetwork", testDeleteAndRecreateNetwork},
		{"NotFound", testNotFound},
		{"ReadOnlyView", testReadOnlyView},
		{"InvalidWrites", testInvalidWrites},
		{"ReturnsCopies", testReturnsCopies},
		{"ServicesReadAgain", testServicesReadAgain},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"CloseTwice", testCloseTwice},
		{"Nodes", testNodes},
		{"Blocks", testBlocks},
		{"BlockClaimRace", testBlockClaimRace},
		{"BGPConfig", testBGPConfig},
		{"BGPPeers", testBGPPeers},
		{"Register", testRegister},
		{"RegisterInvalid", testRegisterInvalid},
		{"CloseEndsRegistrations", testCloseEndsRegistrations},
		{"Watch", func(t *testing.T, s store.Store) { WatchAcross(t, s, s) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

var created = time.Date(2026, 11, 3, 10, 20, 30, 0, time.UTC)

// SampleNetwork returns a valid dual-stack network named name (10.88.0.0/16 and
// fd00:88::/64), for tests.
func SampleNetwork(name string) api.Network {
	return api.Network{
		Name:   name,
		Driver: api.DriverBridge,
		Subnets: []api.Subnet{
			{Prefix: netip.MustParsePrefix("10.88.0.0/16"), Gateway: netip.MustParseAddr("10.88.0.1")},
			{Prefix: netip.MustParsePrefix("fd00:88::/64"), Gateway: netip.MustParseAddr("fd00:88::1")},
		},
		MTU:        1500,
		Masquerade: true,
		Bridge:     "pn-" + name,
		Created:    created,
	}
}

func sampleEndpoint(network, id, ifName string) api.Endpoint {
	return api.Endpoint{
		EndpointKey: api.EndpointKey{Network: network, ContainerID: id, IfName: ifName},
		Name:        "name-" + id,
		Netns:       "/var/run/netns/" + id,
		HostIf:      "pn" + id,
		MAC:         "02:00:00:00:00:01",
		IPs:         []netip.Prefix{netip.MustParsePrefix("10.88.0.5/16"), netip.MustParsePrefix("fd00:88::5/64")},
		Created:     created,
	}
}

func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func view(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.View(fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

func putNetworks(t *testing.T, s store.Store, names ...string) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for _, n := range names {
			if err := tx.PutNetwork(SampleNetwork(n)); err != nil {
				return err
			}
		}
		return nil
	})
}

func mustEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %#v\nwant %#v", what, got, want)
	}
}

func networkNames(ns []api.Network) []string {
	var names []string
	for _, n := range ns {
		names = append(names, n.Name)
	}
	return names
}

func endpointKeys(eps []api.Endpoint) []api.EndpointKey {
	var keys []api.EndpointKey
	for _, ep := range eps {
		keys = append(keys, ep.EndpointKey)
	}
	return keys
}

func testNetworks(t *testing.T, s store.Store) {
	putNetworks(t, s, "red", "blue", "green")
	replaced := SampleNetwork("blue")
	replaced.MTU = 9000
	replaced.Subnets = replaced.Subnets[:1]
	update(t, s, func(tx store.Tx) error { return tx.PutNetwork(replaced) })

	view(t, s, func(tx store.Tx) error {
		n, ok, err := tx.Network("red")
		if err != nil || !ok {
			t.Fatalf("Network(red) = ok %v, err %v; want found", ok, err)
		}
		mustEqual(t, "network red", n, SampleNetwork("red"))
		n, ok, err = tx.Network("blue")
		if err != nil || !ok {
			t.Fatalf("Network(blue) = ok %v, err %v; want found", ok, err)
		}
		mustEqual(t, "replaced network blue", n, replaced)
		ns, err := tx.Networks()
		if err != nil {
			t.Fatalf("Networks: %v", err)
		}
		mustEqual(t, "network order", networkNames(ns), []string{"blue", "green", "red"})
		mustEqual(t, "listed network blue", ns[0], replaced)
		return nil
	})
}

func testEndpoints(t *testing.T, s store.Store) {
	putNetworks(t, s, "b", "a")
	// Put out of order; the listing must come back sorted by (network, container id, ifname).
	eps := []api.Endpoint{
		sampleEndpoint("b", "c2", "eth0"),
		sampleEndpoint("a", "c2", "eth1"),
		sampleEndpoint("a", "c2", "eth0"),
		sampleEndpoint("b", "c1", "eth0"),
		sampleEndpoint("a", "c1", "eth0"),
	}
	update(t, s, func(tx store.Tx) error {
		for _, ep := range eps {
			if err := tx.PutEndpoint(ep); err != nil {
				return err
			}
		}
		return nil
	})
	replaced := sampleEndpoint("a", "c1", "eth0")
	replaced.MAC = "02:00:00:00:00:99"
	replaced.IPs = nil
	update(t, s, func(tx store.Tx) error { return tx.PutEndpoint(replaced) })

	key := func(n, c, i string) api.EndpointKey { return api.EndpointKey{Network: n, ContainerID: c, IfName: i} }
	view(t, s, func(tx store.Tx) error {
		ep, ok, err := tx.Endpoint(key("b", "c2", "eth0"))
		if err != nil || !ok {
			t.Fatalf("Endpoint(b/c2/eth0) = ok %v, err %v; want found", ok, err)
		}
		mustEqual(t, "endpoint b/c2/eth0", ep, eps[0])
		ep, ok, err = tx.Endpoint(replaced.EndpointKey)
		if err != nil || !ok {
			t.Fatalf("Endpoint(a/c1/eth0) = ok %v, err %v; want found", ok, err)
		}
		mustEqual(t, "replaced endpoint", ep, replaced)

		all, err := tx.Endpoints("")
		if err != nil {
			t.Fatalf("Endpoints(\"\"): %v", err)
		}
		mustEqual(t, "all endpoints", endpointKeys(all), []api.EndpointKey{
			key("a", "c1", "eth0"), key("a", "c2", "eth0"), key("a", "c2", "eth1"),
			key("b", "c1", "eth0"), key("b", "c2", "eth0"),
		})
		inA, err := tx.Endpoints("a")
		if err != nil {
			t.Fatalf("Endpoints(a): %v", err)
		}
		mustEqual(t, "endpoints of a", endpointKeys(inA), []api.EndpointKey{
			key("a", "c1", "eth0"), key("a", "c2", "eth0"), key("a", "c2", "eth1"),
		})
		mustEqual(t, "first endpoint of a", inA[0], replaced)
		none, err := tx.Endpoints("nosuch")
		if err != nil || len(none) != 0 {
			t.Errorf("Endpoints(nosuch) = %v, %v; want none", none, err)
		}
		return nil
	})

	update(t, s, func(tx store.Tx) error { return tx.DeleteEndpoint(key("a", "c2", "eth0")) })
	view(t, s, func(tx store.Tx) error {
		if _, ok, err := tx.Endpoint(key("a", "c2", "eth0")); ok || err != nil {
			t.Errorf("deleted endpoint: ok %v, err %v; want gone", ok, err)
		}
		if _, ok, err := tx.Endpoint(key("a", "c2", "eth1")); !ok || err != nil {
			t.Errorf("sibling of deleted endpoint: ok %v, err %v; want found", ok, err)
		}
		return nil
	})
}

// testEndpointKeys stores keys that a naive "container/ifname" or prefix encoding
// would mix up.
func testEndpointKeys(t *testing.T, s store.Store) {
	putNetworks(t, s, "n", "n/x", "n\xff")
	keys := []api.EndpointKey{
		{Network: "n", ContainerID: "a/b", IfName: "c"},
		{Network: "n", ContainerID: "a", IfName: "b/c"},
		{Network: "n", ContainerID: "a", IfName: "b"},
		{Network: "n", ContainerID: "ab", IfName: ""},
		{Network: "n", ContainerID: "", IfName: "ab"},
		{Network: "n", ContainerID: "a\xff", IfName: "\x01"},
		{Network: "n", ContainerID: "a", IfName: "\xff"},
		{Network: "n/x", ContainerID: "y", IfName: "z"},
		{Network: "n", ContainerID: "x/y", IfName: "z"},
		{Network: "n\xff", ContainerID: "\xfe", IfName: "\xfd"},
	}
	update(t, s, func(tx store.Tx) error {
		for i, k := range keys {
			ep := api.Endpoint{EndpointKey: k, Name: fmt.Sprint(i)}
			if err := tx.PutEndpoint(ep); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		for i, k := range keys {
			ep, ok, err := tx.Endpoint(k)
			if err != nil || !ok {
				t.Fatalf("Endpoint(%q) = ok %v, err %v; want found", k, ok, err)
			}
			if ep.Name != fmt.Sprint(i) || ep.EndpointKey != k {
				t.Errorf("Endpoint(%q) = %q named %q; want its own record %d", k, ep.EndpointKey, ep.Name, i)
			}
		}
		inN, err := tx.Endpoints("n")
		if err != nil {
			t.Fatalf("Endpoints(n): %v", err)
		}
		mustEqual(t, "endpoints of n", endpointKeys(inN), []api.EndpointKey{
			{Network: "n", ContainerID: "", IfName: "ab"},
			{Network: "n", ContainerID: "a", IfName: "b"},
			{Network: "n", ContainerID: "a", IfName: "b/c"},
			{Network: "n", ContainerID: "a", IfName: "\xff"},
			{Network: "n", ContainerID: "a/b", IfName: "c"},
			{Network: "n", ContainerID: "ab", IfName: ""},
			{Network: "n", ContainerID: "a\xff", IfName: "\x01"},
			{Network: "n", ContainerID: "x/y", IfName: "z"},
		})
		all, err := tx.Endpoints("")
		if err != nil {
			t.Fatalf("Endpoints(\"\"): %v", err)
		}
		if len(all) != len(keys) || all[len(all)-2].Network != "n/x" || all[len(all)-1].EndpointKey != keys[len(keys)-1] {
			t.Errorf("Endpoints(\"\") = %q; want %d keys, network n/x then n\\xff last", endpointKeys(all), len(keys))
		}
		ns, err := tx.Networks()
		if err != nil {
			t.Fatalf("Networks: %v", err)
		}
		mustEqual(t, "networks", networkNames(ns), []string{"n", "n/x", "n\xff"})
		return nil
	})
}

func testAllocations(t *testing.T, s store.Store) {
	putNetworks(t, s, "red", "blue")
	a4 := netip.MustParseAddr("10.88.0.5")
	a6 := netip.MustParseAddr("fd00:88::5")
	mapped := netip.MustParseAddr("::ffff:10.88.0.5")
	update(t, s, func(tx store.Tx) error {
		for _, put := range []struct {
			nw    string
			a     netip.Addr
			owner string
		}{
			{"red", a4, "red/c1/eth0"},
			{"red", a6, "red/c1/eth0"},
			{"red", mapped, "red/c9/eth0"},
			{"blue", a4, "blue/c2/eth0"},
		} {
			if err := tx.PutAllocation(put.nw, put.a, put.owner); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		owner, ok, err := tx.Allocation("red", a4)
		if err != nil || !ok || owner != "red/c1/eth0" {
			t.Errorf("Allocation(red, %s) = %q, %v, %v; want red/c1/eth0", a4, owner, ok, err)
		}
		owner, ok, err = tx.Allocation("blue", a4)
		if err != nil || !ok || owner != "blue/c2/eth0" {
			t.Errorf("Allocation(blue, %s) = %q, %v, %v; want blue/c2/eth0", a4, owner, ok, err)
		}
		if _, ok, err := tx.Allocation("blue", a6); ok || err != nil {
			t.Errorf("Allocation(blue, %s): ok %v, err %v; want free", a6, ok, err)
		}
		m, err := tx.Allocations("red")
		if err != nil {
			t.Fatalf("Allocations(red): %v", err)
		}
		mustEqual(t, "allocations of red", m, map[netip.Addr]string{
			a4: "red/c1/eth0", a6: "red/c1/eth0", mapped: "red/c9/eth0",
		})
		m, err = tx.Allocations("nosuch")
		if err != nil || len(m) != 0 {
			t.Errorf("Allocations(nosuch) = %v, %v; want empty", m, err)
		}
		held, err := tx.AllocationsOf("red", "red/c1/eth0")
		if err != nil {
			t.Fatalf("AllocationsOf(red, red/c1/eth0): %v", err)
		}
		mustEqual(t, "addresses of red/c1/eth0", held, []netip.Addr{a4, a6})
		for _, q := range [][2]string{{"blue", "red/c1/eth0"}, {"red", "red/c1"}, {"nosuch", "x"}, {"red", ""}} {
			if held, err := tx.AllocationsOf(q[0], q[1]); err != nil || len(held) != 0 {
				t.Errorf("AllocationsOf(%q, %q) = %v, %v; want none", q[0], q[1], held, err)
			}
		}
		return nil
	})
	// An owner holding NUL would break the owners index.
	if err := s.Update(func(tx store.Tx) error { return tx.PutAllocation("red", a6, "red/c\x00/eth0") }); err == nil {
		t.Error("PutAllocation with an owner holding NUL succeeded")
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutAllocation("red", a4, "red/c3/eth0"); err != nil {
			return err
		}
		return tx.DeleteAllocation("red", a6)
	})
	view(t, s, func(tx store.Tx) error {
		m, err := tx.Allocations("red")
		if err != nil {
			t.Fatalf("Allocations(red): %v", err)
		}
		mustEqual(t, "allocations of red after overwrite and delete", m, map[netip.Addr]string{
			a4: "red/c3/eth0", mapped: "red/c9/eth0",
		})
		for owner, want := range map[string][]netip.Addr{"red/c1/eth0": nil, "red/c3/eth0": {a4}, "red/c9/eth0": {mapped}} {
			held, err := tx.AllocationsOf("red", owner)
			if err != nil {
				t.Fatalf("AllocationsOf(red, %s): %v", owner, err)
			}
			mustEqual(t, "addresses of "+owner+" after overwrite and delete", held, want)
		}
		return nil
	})
}

func testCursors(t *testing.T, s store.Store) {
	putNetworks(t, s, "red", "blue")
	p4 := netip.MustParsePrefix("10.88.0.0/16")
	p6 := netip.MustParsePrefix("fd00:88::/64")
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutCursor("red", p4, netip.MustParseAddr("10.88.0.9")); err != nil {
			return err
		}
		if err := tx.PutCursor("red", p6, netip.MustParseAddr("fd00:88::9")); err != nil {
			return err
		}
		if err := tx.PutCursor("blue", p4, netip.MustParseAddr("10.88.0.2")); err != nil {
			return err
		}
		// Replaces the first one.
		return tx.PutCursor("red", p4, netip.MustParseAddr("10.88.0.10"))
	})
	view(t, s, func(tx store.Tx) error {
		for _, c := range []struct {
			nw     string
			subnet netip.Prefix
			want   string
		}{
			{"red", p4, "10.88.0.10"},
			{"red", p6, "fd00:88::9"},
			{"blue", p4, "10.88.0.2"},
			{"blue", p6, ""},
			{"red", netip.MustParsePrefix("10.88.0.0/24"), ""},
			{"nosuch", p4, ""},
		} {
			a, ok, err := tx.Cursor(c.nw, c.subnet)
			if err != nil {
				t.Errorf("Cursor(%s, %s): %v", c.nw, c.subnet, err)
				continue
			}
			if c.want == "" {
				if ok {
					t.Errorf("Cursor(%s, %s) = %s; want none", c.nw, c.subnet, a)
				}
				continue
			}
			if !ok || a != netip.MustParseAddr(c.want) {
				t.Errorf("Cursor(%s, %s) = %s, %v; want %s", c.nw, c.subnet, a, ok, c.want)
			}
		}
		return nil
	})
}

func testReadYourWrites(t *testing.T, s store.Store) {
	a := netip.MustParseAddr("10.88.0.7")
	p := netip.MustParsePrefix("10.88.0.0/16")
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutNetwork(SampleNetwork("red")); err != nil {
			return err
		}
		if _, ok, err := tx.Network("red"); !ok || err != nil {
			t.Errorf("network not visible in its own transaction: ok %v, err %v", ok, err)
		}
		if err := tx.PutEndpoint(sampleEndpoint("red", "c1", "eth0")); err != nil {
			return err
		}
		if eps, err := tx.Endpoints(""); len(eps) != 1 || err != nil {
			t.Errorf("endpoint not listed in its own transaction: %v, %v", eps, err)
		}
		if err := tx.PutAllocation("red", a, "o"); err != nil {
			return err
		}
		if owner, ok, err := tx.Allocation("red", a); owner != "o" || !ok || err != nil {
			t.Errorf("allocation not visible in its own transaction: %q, %v, %v", owner, ok, err)
		}
		if err := tx.PutCursor("red", p, a); err != nil {
			return err
		}
		if c, ok, err := tx.Cursor("red", p); c != a || !ok || err != nil {
			t.Errorf("cursor not visible in its own transaction: %s, %v, %v", c, ok, err)
		}
		if err := tx.PutNode(sampleNode("n1", "192.0.2.1")); err != nil {
			return err
		}
		if n, ok, err := tx.Node("n1"); !reflect.DeepEqual(n, sampleNode("n1", "192.0.2.1")) || !ok || err != nil {
			t.Errorf("node not visible in its own transaction: %+v, %v, %v", n, ok, err)
		}
		if err := tx.PutBlock(sampleBlock("red", "10.88.0.0/26", "n1")); err != nil {
			return err
		}
		if bs, err := tx.Blocks(""); len(bs) != 1 || err != nil {
			t.Errorf("block not listed in its own transaction: %v, %v", bs, err)
		}
		if err := tx.PutPort("n1", "tcp", netip.Addr{}, 80, "red/c1/eth0"); err != nil {
			return err
		}
		if m, err := tx.PortOwners("n1", "tcp", 80); len(m) != 1 || err != nil {
			t.Errorf("port not visible in its own transaction: %v, %v", m, err)
		}
		if err := tx.PutBGPConfig(api.BGPConfig{ASN: 65010}); err != nil {
			return err
		}
		if c, ok, err := tx.BGPConfig(); c.ASN != 65010 || !ok || err != nil {
			t.Errorf("BGP settings not visible in their own transaction: %+v, %v, %v", c, ok, err)
		}
		if err := tx.PutBGPPeer(samplePeer("tor1", "192.0.2.254")); err != nil {
			return err
		}
		if ps, err := tx.BGPPeers(); len(ps) != 1 || err != nil {
			t.Errorf("BGP peer not listed in its own transaction: %v, %v", ps, err)
		}
		if err := tx.PutNetworkPolicy(samplePolicy("default", "deny")); err != nil {
			return err
		}
		if ps, err := tx.NetworkPolicies(""); len(ps) != 1 || err != nil {
			t.Errorf("network policy not listed in its own transaction: %v, %v", ps, err)
		}
		if err := tx.PutNamespace(sampleNamespace("default")); err != nil {
			return err
		}
		if ns, ok, err := tx.Namespace("default"); !ok || err != nil || !reflect.DeepEqual(ns, sampleNamespace("default")) {
			t.Errorf("namespace not visible in its own transaction: %+v, %v, %v", ns, ok, err)
		}
		if err := tx.PutPod(samplePod("default", "web-0")); err != nil {
			return err
		}
		if p, ok, err := tx.Pod("default", "web-0"); !ok || err != nil || !reflect.DeepEqual(p, samplePod("default", "web-0")) {
			t.Errorf("pod not visible in its own transaction: %+v, %v, %v", p, ok, err)
		}
		if ps, err := tx.Pods(""); len(ps) != 1 || err != nil {
			t.Errorf("pod not listed in its own transaction: %v, %v", ps, err)
		}
		return nil
	})
}

// contents is everything a store holds, for before/after comparisons.
type contents struct {
	Networks  []api.Network
	Endpoints []api.Endpoint
	Allocs    map[string]map[netip.Addr]string
	Cursors   map[string]netip.Addr
	Nodes     []api.Node
	Blocks    []api.Block
	BGPConfig *api.BGPConfig
	BGPPeers  []api.BGPPeer
	Policies  []api.NetworkPolicy
	Spaces    []api.Namespace
	Pods      []api.Pod
}

func dump(t *testing.T, s store.Store, prefixes ...netip.Prefix) contents {
	t.Helper()
	var c contents
	view(t, s, func(tx store.Tx) error {
		var err error
		if c.Networks, err = tx.Networks(); err != nil {
			return err
		}
		if c.Endpoints, err = tx.Endpoints(""); err != nil {
			return err
		}
		if c.Nodes, err = tx.Nodes(); err != nil {
			return err
		}
		if c.Blocks, err = tx.Blocks(""); err != nil {
			return err
		}
		if bc, ok, err := tx.BGPConfig(); err != nil {
			return err
		} else if ok {
			c.BGPConfig = &bc
		}
		if c.BGPPeers, err = tx.BGPPeers(); err != nil {
			return err
		}
		if c.Policies, err = tx.NetworkPolicies(""); err != nil {
			return err
		}
		if c.Spaces, err = tx.Namespaces(); err != nil {
			return err
		}
		if c.Pods, err = tx.Pods(""); err != nil {
			return err
		}
		c.Allocs = make(map[string]map[netip.Addr]string)
		c.Cursors = make(map[string]netip.Addr)
		for _, n := range []string{"red", "blue"} {
			if c.Allocs[n], err = tx.Allocations(n); err != nil {
				return err
			}
			for _, p := range prefixes {
				a, ok, err := tx.Cursor(n, p)
				if err != nil {
					return err
				}
				if ok {
					c.Cursors[n+" "+p.String()] = a
				}
			}
		}
		return nil
	})
	return c
}

func testRollback(t *testing.T, s store.Store) {
	p := netip.MustParsePrefix("10.88.0.0/16")
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutNetwork(SampleNetwork("red")); err != nil {
			return err
		}
		if err := tx.PutEndpoint(sampleEndpoint("red", "c1", "eth0")); err != nil {
			return err
		}
		if err := tx.PutAllocation("red", netip.MustParseAddr("10.88.0.5"), "red/c1/eth0"); err != nil {
			return err
		}
		if err := tx.PutNode(sampleNode("n1", "192.0.2.1")); err != nil {
			return err
		}
		if err := tx.PutBlock(sampleBlock("red", "10.88.0.0/26", "n1")); err != nil {
			return err
		}
		if err := tx.PutBGPConfig(api.BGPConfig{ASN: 64512, NodeMesh: true}); err != nil {
			return err
		}
		if err := tx.PutBGPPeer(samplePeer("tor1", "192.0.2.254")); err != nil {
			return err
		}
		if err := tx.PutNetworkPolicy(samplePolicy("default", "deny")); err != nil {
			return err
		}
		if err := tx.PutNamespace(sampleNamespace("default")); err != nil {
			return err
		}
		if err := tx.PutPod(samplePod("default", "web-0")); err != nil {
			return err
		}
		return tx.PutCursor("red", p, netip.MustParseAddr("10.88.0.5"))
	})
	before := dump(t, s, p)

	boom := errors.New("boom")
	err := s.Update(func(tx store.Tx) error {
		changed := SampleNetwork("red")
		changed.MTU = 1234
		for _, err := range []error{
			tx.PutNetwork(changed),
			tx.PutNetwork(SampleNetwork("blue")),
			tx.PutEndpoint(sampleEndpoint("red", "c2", "eth0")),
			tx.DeleteEndpoint(api.EndpointKey{Network: "red", ContainerID: "c1", IfName: "eth0"}),
			tx.PutAllocation("red", netip.MustParseAddr("10.88.0.6"), "red/c2/eth0"),
			tx.DeleteAllocation("red", netip.MustParseAddr("10.88.0.5")),
			tx.PutCursor("red", p, netip.MustParseAddr("10.88.0.6")),
			tx.PutAllocation("blue", netip.MustParseAddr("10.88.0.6"), "blue/c2/eth0"),
			tx.PutNode(sampleNode("n2", "192.0.2.2")),
			tx.DeleteNode("n1"),
			tx.PutBlock(sampleBlock("red", "10.88.0.64/26", "n2")),
			tx.DeleteBlock("red", netip.MustParsePrefix("10.88.0.0/26")),
			tx.PutBlock(sampleBlock("blue", "10.88.0.0/26", "n2")),
			tx.PutBGPConfig(api.BGPConfig{ASN: 65000}),
			tx.PutBGPPeer(samplePeer("tor2", "192.0.2.253")),
			tx.DeleteBGPPeer("tor1"),
			tx.PutNetworkPolicy(samplePolicy("default", "allow")),
			tx.DeleteNetworkPolicy("default", "deny"),
			tx.PutNamespace(sampleNamespace("kube-system")),
			tx.DeleteNamespace("default"),
			tx.PutPod(samplePod("default", "web-1")),
			tx.DeletePod("default", "web-0"),
		} {
			if err != nil {
				t.Errorf("write before failing: %v", err)
			}
		}
		return fmt.Errorf("wrapped: %w", boom)
	})
	if !errors.Is(err, boom) {
		t.Errorf("Update returned %v; want fn's error", err)
	}
	mustEqual(t, "contents after a failed update", dump(t, s, p), before)

	// Same for a network deletion.
	err = s.Update(func(tx store.Tx) error {
		if err := tx.DeleteNetwork("red"); err != nil {
			t.Errorf("DeleteNetwork: %v", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("Update returned %v; want fn's error", err)
	}
	mustEqual(t, "contents after a failed network deletion", dump(t, s, p), before)

	// An *api.Error comes back unchanged, so that callers can read its code.
	err = s.Update(func(store.Tx) error {
		return api.Errorf(api.CodePoolExhausted, "network %q: no free address", "red")
	})
	if api.ErrorCode(err) != api.CodePoolExhausted {
		t.Errorf("Update returned %v (code %d); want code %d", err, api.ErrorCode(err), api.CodePoolExhausted)
	}
}

func testDeleteNetworkCascade(t *testing.T, s store.Store) {
	p := netip.MustParsePrefix("10.88.0.0/16")
	fill := func(tx store.Tx, nw string) error {
		if err := tx.PutNetwork(SampleNetwork(nw)); err != nil {
			return err
		}
		if err := tx.PutEndpoint(sampleEndpoint(nw, "c1", "eth0")); err != nil {
			return err
		}
		if err := tx.PutAllocation(nw, netip.MustParseAddr("10.88.0.5"), nw+"/c1/eth0"); err != nil {
			return err
		}
		for _, b := range []string{"10.88.0.0/26", "fd00:88::/122"} {
			if err := tx.PutBlock(sampleBlock(nw, b, "n1")); err != nil {
				return err
			}
		}
		return tx.PutCursor(nw, p, netip.MustParseAddr("10.88.0.5"))
	}
	update(t, s, func(tx store.Tx) error {
		if err := fill(tx, "red"); err != nil {
			return err
		}
		return fill(tx, "blue")
	})
	update(t, s, func(tx store.Tx) error { return tx.DeleteNetwork("red") })

	c := dump(t, s, p)
	mustEqual(t, "networks left", networkNames(c.Networks), []string{"blue"})
	mustEqual(t, "endpoints left", endpointKeys(c.Endpoints), []api.EndpointKey{{Network: "blue", ContainerID: "c1", IfName: "eth0"}})
	mustEqual(t, "allocations of red", c.Allocs["red"], map[netip.Addr]string{})
	mustEqual(t, "allocations of blue", c.Allocs["blue"], map[netip.Addr]string{netip.MustParseAddr("10.88.0.5"): "blue/c1/eth0"})
	mustEqual(t, "cursors left", c.Cursors, map[string]netip.Addr{"blue " + p.String(): netip.MustParseAddr("10.88.0.5")})
	mustEqual(t, "blocks left", c.Blocks, []api.Block{
		sampleBlock("blue", "10.88.0.0/26", "n1"), sampleBlock("blue", "fd00:88::/122", "n1"),
	})

	// A network created again under the same name starts empty.
	putNetworks(t, s, "red")
	view(t, s, func(tx store.Tx) error {
		eps, err := tx.Endpoints("red")
		if err != nil || len(eps) != 0 {
			t.Errorf("endpoints of re-created network: %v, %v; want none", eps, err)
		}
		if _, ok, err := tx.Endpoint(api.EndpointKey{Network: "red", ContainerID: "c1", IfName: "eth0"}); ok || err != nil {
			t.Errorf("old endpoint of re-created network: ok %v, err %v; want gone", ok, err)
		}
		if _, ok, err := tx.Allocation("red", netip.MustParseAddr("10.88.0.5")); ok || err != nil {
			t.Errorf("old allocation of re-created network: ok %v, err %v; want free", ok, err)
		}
		if _, ok, err := tx.Cursor("red", p); ok || err != nil {
			t.Errorf("old cursor of re-created network: ok %v, err %v; want none", ok, err)
		}
		if _, ok, err := tx.Block("red", netip.MustParsePrefix("10.88.0.0/26")); ok || err != nil {
			t.Errorf("old block of re-created network: ok %v, err %v; want free", ok, err)
		}
		if bs, err := tx.Blocks("red"); len(bs) != 0 || err != nil {
			t.Errorf("blocks of re-created network: %v, %v; want none", bs, err)
		}
		return nil
	})
}

func testNotFound(t *testing.T, s store.Store) {
	putNetworks(t, s, "red")
	view(t, s, func(tx store.Tx) error {
		if _, ok, err := tx.Network("nosuch"); ok || err != nil {
			t.Errorf("Network(nosuch): ok %v, err %v; want ok=false, no error", ok, err)
		}
		if _, ok, err := tx.Network(""); ok || err != nil {
			t.Errorf("Network(\"\"): ok %v, err %v; want ok=false, no error", ok, err)
		}
		for _, k := range []api.EndpointKey{
			{Network: "red", ContainerID: "nosuch", IfName: "eth0"},
			{Network: "nosuch", ContainerID: "c1", IfName: "eth0"},
			{Network: "red", ContainerID: "c\x00", IfName: "eth0"},
		} {
			if _, ok, err := tx.Endpoint(k); ok || err != nil {
				t.Errorf("Endpoint(%q): ok %v, err %v; want ok=false, no error", k, ok, err)
			}
		}
		if _, ok, err := tx.Allocation("red", netip.MustParseAddr("10.88.0.5")); ok || err != nil {
			t.Errorf("Allocation: ok %v, err %v; want ok=false, no error", ok, err)
		}
		if _, ok, err := tx.Allocation("red", netip.Addr{}); ok || err != nil {
			t.Errorf("Allocation(zero address): ok %v, err %v; want ok=false, no error", ok, err)
		}
		if _, ok, err := tx.Cursor("red", netip.MustParsePrefix("10.88.0.0/16")); ok || err != nil {
			t.Errorf("Cursor: ok %v, err %v; want ok=false, no error", ok, err)
		}
		for _, name := range []string{"nosuch", ""} {
			if _, ok, err := tx.Node(name); ok || err != nil {
				t.Errorf("Node(%q): ok %v, err %v; want ok=false, no error", name, ok, err)
			}
			if _, ok, err := tx.BGPPeer(name); ok || err != nil {
				t.Errorf("BGPPeer(%q): ok %v, err %v; want ok=false, no error", name, ok, err)
			}
		}
		for _, name := range []string{"nosuch", "", "a\x00b"} {
			if _, ok, err := tx.Namespace(name); ok || err != nil {
				t.Errorf("Namespace(%q): ok %v, err %v; want ok=false, no error", name, ok, err)
			}
			for _, k := range [][2]string{{"default", name}, {name, "deny"}} {
				if _, ok, err := tx.NetworkPolicy(k[0], k[1]); ok || err != nil {
					t.Errorf("NetworkPolicy(%q, %q): ok %v, err %v; want ok=false, no error", k[0], k[1], ok, err)
				}
				if _, ok, err := tx.Pod(k[0], k[1]); ok || err != nil {
					t.Errorf("Pod(%q, %q): ok %v, err %v; want ok=false, no error", k[0], k[1], ok, err)
				}
			}
		}
		for _, namespace := range []string{"", "default", "a\x00b"} {
			if ps, err := tx.NetworkPolicies(namespace); len(ps) != 0 || err != nil {
				t.Errorf("NetworkPolicies(%q) of an empty store = %v, %v; want none", namespace, ps, err)
			}
			if ps, err := tx.Pods(namespace); len(ps) != 0 || err != nil {
				t.Errorf("Pods(%q) of an empty store = %v, %v; want none", namespace, ps, err)
			}
		}
		if ns, err := tx.Namespaces(); len(ns) != 0 || err != nil {
			t.Errorf("Namespaces of an empty store = %v, %v; want none", ns, err)
		}
		if _, ok, err := tx.BGPConfig(); ok || err != nil {
			t.Errorf("BGPConfig never put: ok %v, err %v; want ok=false, no error", ok, err)
		}
		if ps, err := tx.BGPPeers(); len(ps) != 0 || err != nil {
			t.Errorf("BGPPeers of an empty store = %v, %v; want none", ps, err)
		}
		for _, node := range []string{"n1", ""} {
			if m, err := tx.PortOwners(node, "tcp", 80); len(m) != 0 || m == nil || err != nil {
				t.Errorf("PortOwners(%q, tcp, 80) = %#v, %v; want an empty map, no error", node, m, err)
			}
		}
		for _, b := range []struct {
			nw string
			p  netip.Prefix
		}{
			{"red", netip.MustParsePrefix("10.88.0.0/26")},
			{"nosuch", netip.MustParsePrefix("10.88.0.0/26")},
			{"red", netip.MustParsePrefix("10.88.0.5/26")},
			{"red", netip.Prefix{}},
			{"", netip.MustParsePrefix("10.88.0.0/26")},
		} {
			if _, ok, err := tx.Block(b.nw, b.p); ok || err != nil {
				t.Errorf("Block(%q, %s): ok %v, err %v; want ok=false, no error", b.nw, b.p, ok, err)
			}
		}
		return nil
	})
	deletes := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"DeleteNetwork", func(tx store.Tx) error { return tx.DeleteNetwork("nosuch") }},
		{"DeleteEndpoint", func(tx store.Tx) error {
			return tx.DeleteEndpoint(api.EndpointKey{Network: "red", ContainerID: "nosuch", IfName: "eth0"})
		}},
		{"DeleteEndpoint of missing network", func(tx store.Tx) error {
			return tx.DeleteEndpoint(api.EndpointKey{Network: "nosuch", ContainerID: "c1", IfName: "eth0"})
		}},
		{"DeleteAllocation", func(tx store.Tx) error { return tx.DeleteAllocation("red", netip.MustParseAddr("10.88.0.5")) }},
		{"DeleteAllocation of missing network", func(tx store.Tx) error {
			return tx.DeleteAllocation("nosuch", netip.MustParseAddr("10.88.0.5"))
		}},
		{"DeleteNode", func(tx store.Tx) error { return tx.DeleteNode("nosuch") }},
		{"DeletePort", func(tx store.Tx) error { return tx.DeletePort("n1", "tcp", netip.Addr{}, 80) }},
		{"DeletePort of an empty node name", func(tx store.Tx) error { return tx.DeletePort("", "tcp", netip.Addr{}, 80) }},
		{"DeleteBGPPeer", func(tx store.Tx) error { return tx.DeleteBGPPeer("nosuch") }},
		{"DeleteBGPPeer of an empty name", func(tx store.Tx) error { return tx.DeleteBGPPeer("") }},
		{"DeleteNetworkPolicy", func(tx store.Tx) error { return tx.DeleteNetworkPolicy("default", "nosuch") }},
		{"DeleteNetworkPolicy of empty names", func(tx store.Tx) error { return tx.DeleteNetworkPolicy("", "") }},
		{"DeleteNetworkPolicy of a NUL name", func(tx store.Tx) error { return tx.DeleteNetworkPolicy("a", "b\x00c") }},
		{"DeleteNamespace", func(tx store.Tx) error { return tx.DeleteNamespace("nosuch") }},
		{"DeleteNamespace of an empty name", func(tx store.Tx) error { return tx.DeleteNamespace("") }},
		{"DeletePod", func(tx store.Tx) error { return tx.DeletePod("default", "nosuch") }},
		{"DeletePod of empty names", func(tx store.Tx) error { return tx.DeletePod("", "") }},
		{"DeletePod of a NUL name", func(tx store.Tx) error { return tx.DeletePod("a", "b\x00c") }},
		{"DeleteBlock", func(tx store.Tx) error { return tx.DeleteBlock("red", netip.MustParsePrefix("10.88.0.0/26")) }},
		{"DeleteBlock of missing network", func(tx store.Tx) error {
			return tx.DeleteBlock("nosuch", netip.MustParsePrefix("10.88.0.0/26"))
		}},
		{"DeleteBlock of a prefix that is not masked", func(tx store.Tx) error {
			return tx.DeleteBlock("red", netip.MustParsePrefix("10.88.0.5/26"))
		}},
	}
	for _, d := range deletes {
		if err := s.Update(d.fn); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: %v; want ErrNotFound", d.name, err)
		}
	}
	// PutEndpoint into a network that does not exist.
	err := s.Update(func(tx store.Tx) error { return tx.PutEndpoint(sampleEndpoint("nosuch", "c1", "eth0")) })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PutEndpoint into a missing network: %v; want ErrNotFound", err)
	}
	err = s.Update(func(tx store.Tx) error { return tx.PutBlock(sampleBlock("nosuch", "10.88.0.0/26", "n1")) })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PutBlock into a missing network: %v; want ErrNotFound", err)
	}
}

func testReadOnlyView(t *testing.T, s store.Store) {
	p := netip.MustParsePrefix("10.88.0.0/16")
	a := netip.MustParseAddr("10.88.0.5")
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutNetwork(SampleNetwork("red")); err != nil {
			return err
		}
		if err := tx.PutEndpoint(sampleEndpoint("red", "c1", "eth0")); err != nil {
			return err
		}
		if err := tx.PutNode(sampleNode("n1", "192.0.2.1")); err != nil {
			return err
		}
		if err := tx.PutBlock(sampleBlock("red", "10.88.0.0/26", "n1")); err != nil {
			return err
		}
		if err := tx.PutBGPPeer(samplePeer("tor1", "192.0.2.254")); err != nil {
			return err
		}
		if err := tx.PutNetworkPolicy(samplePolicy("default", "deny")); err != nil {
			return err
		}
		if err := tx.PutNamespace(sampleNamespace("default")); err != nil {
			return err
		}
		if err := tx.PutPod(samplePod("default", "web-0")); err != nil {
			return err
		}
		return tx.PutAllocation("red", a, "red/c1/eth0")
	})
	before := dump(t, s, p)
	writes := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"PutNetwork", func(tx store.Tx) error { return tx.PutNetwork(SampleNetwork("blue")) }},
		{"DeleteNetwork", func(tx store.Tx) error { return tx.DeleteNetwork("red") }},
		{"PutEndpoint", func(tx store.Tx) error { return tx.PutEndpoint(sampleEndpoint("red", "c2", "eth0")) }},
		{"DeleteEndpoint", func(tx store.Tx) error {
			return tx.DeleteEndpoint(api.EndpointKey{Network: "red", ContainerID: "c1", IfName: "eth0"})
		}},
		{"PutAllocation", func(tx store.Tx) error { return tx.PutAllocation("red", netip.MustParseAddr("10.88.0.6"), "x") }},
		{"DeleteAllocation", func(tx store.Tx) error { return tx.DeleteAllocation("red", a) }},
		{"PutCursor", func(tx store.Tx) error { return tx.PutCursor("red", p, a) }},
		{"PutPort", func(tx store.Tx) error { return tx.PutPort("n1", "tcp", netip.Addr{}, 80, "x") }},
		{"DeletePort", func(tx store.Tx) error { return tx.DeletePort("n1", "tcp", netip.Addr{}, 80) }},
		{"PutService", func(tx store.Tx) error { return tx.PutService(api.Service{Namespace: "a", Name: "b"}) }},
		{"DeleteService", func(tx store.Tx) error { return tx.DeleteService("a", "b") }},
		{"PutNode", func(tx store.Tx) error { return tx.PutNode(sampleNode("n2", "192.0.2.2")) }},
		{"DeleteNode", func(tx store.Tx) error { return tx.DeleteNode("n1") }},
		{"PutBlock", func(tx store.Tx) error { return tx.PutBlock(sampleBlock("red", "10.88.0.64/26", "n1")) }},
		{"DeleteBlock", func(tx store.Tx) error { return tx.DeleteBlock("red", netip.MustParsePrefix("10.88.0.0/26")) }},
		{"PutBGPConfig", func(tx store.Tx) error { return tx.PutBGPConfig(api.BGPConfig{ASN: 65000}) }},
		{"PutBGPPeer", func(tx store.Tx) error { return tx.PutBGPPeer(samplePeer("tor2", "192.0.2.253")) }},
		{"DeleteBGPPeer", func(tx store.Tx) error { return tx.DeleteBGPPeer("tor1") }},
		{"PutNetworkPolicy", func(tx store.Tx) error { return tx.PutNetworkPolicy(samplePolicy("default", "allow")) }},
		{"DeleteNetworkPolicy", func(tx store.Tx) error { return tx.DeleteNetworkPolicy("default", "deny") }},
		{"PutNamespace", func(tx store.Tx) error { return tx.PutNamespace(sampleNamespace("kube-system")) }},
		{"DeleteNamespace", func(tx store.Tx) error { return tx.DeleteNamespace("default") }},
		{"PutPod", func(tx store.Tx) error { return tx.PutPod(samplePod("default", "web-1")) }},
		{"DeletePod", func(tx store.Tx) error { return tx.DeletePod("default", "web-0") }},
	}
	for _, w := range writes {
		var werr error
		err := s.View(func(tx store.Tx) error {
			werr = w.fn(tx)
			return nil
		})
		if err != nil {
			t.Errorf("%s: View: %v", w.name, err)
		}
		if !errors.Is(werr, store.ErrReadOnly) {
			t.Errorf("%s in View: %v; want ErrReadOnly", w.name, werr)
		}
	}
	mustEqual(t, "contents after writes in View", dump(t, s, p), before)
}

func testInvalidWrites(t *testing.T, s store.Store) {
	putNetworks(t, s, "red")
	before := dump(t, s)
	block := func(nw, p, node string) api.Block {
		b := api.Block{Network: nw, Node: node, Claimed: created}
		if p != "" {
			b.Prefix = netip.MustParsePrefix(p)
		}
		return b
	}
	writes := []struct {
		name string
		fn   func(tx store.Tx) error
		// says is what the error must contain, when it matters.
		says []string
	}{
		{"PutNetwork with empty name", func(tx store.Tx) error { return tx.PutNetwork(api.Network{}) }, nil},
		{"PutEndpoint with NUL in container id", func(tx store.Tx) error {
			return tx.PutEndpoint(sampleEndpoint("red", "c\x001", "eth0"))
		}, nil},
		{"PutEndpoint with NUL in ifname", func(tx store.Tx) error {
			return tx.PutEndpoint(sampleEndpoint("red", "c1", "eth\x000"))
		}, nil},
		{"PutAllocation of zero address", func(tx store.Tx) error { return tx.PutAllocation("red", netip.Addr{}, "o") }, nil},
		{"PutAllocation with empty owner", func(tx store.Tx) error {
			return tx.PutAllocation("red", netip.MustParseAddr("10.88.0.5"), "")
		}, nil},
		{"PutCursor of zero subnet", func(tx store.Tx) error {
			return tx.PutCursor("red", netip.Prefix{}, netip.MustParseAddr("10.88.0.5"))
		}, nil},
		{"PutCursor of zero address", func(tx store.Tx) error {
			return tx.PutCursor("red", netip.MustParsePrefix("10.88.0.0/16"), netip.Addr{})
		}, nil},
		{"PutNode with empty name", func(tx store.Tx) error { return tx.PutNode(sampleNode("", "192.0.2.1")) }, []string{"name"}},
		{"PutBlock of zero prefix", func(tx store.Tx) error { return tx.PutBlock(block("red", "", "n1")) }, []string{"prefix"}},
		{"PutBlock of a prefix not masked", func(tx store.Tx) error {
			return tx.PutBlock(block("red", "10.88.0.5/26", "n1"))
		}, []string{"10.88.0.5/26", "masked"}},
		{"PutBlock with empty node", func(tx store.Tx) error {
			return tx.PutBlock(block("red", "10.88.0.0/26", ""))
		}, []string{"10.88.0.0/26", "node"}},
		{"PutBlock with empty network", func(tx store.Tx) error {
			return tx.PutBlock(block("", "10.88.0.0/26", "n1"))
		}, []string{"network"}},
		{"PutPort with empty node", func(tx store.Tx) error {
			return tx.PutPort("", "tcp", netip.Addr{}, 80, "o")
		}, []string{"node"}},
		{"PutPort with empty protocol", func(tx store.Tx) error {
			return tx.PutPort("n1", "", netip.Addr{}, 80, "o")
		}, []string{"protocol"}},
		{"PutPort with empty owner", func(tx store.Tx) error {
			return tx.PutPort("n1", "tcp", netip.Addr{}, 80, "")
		}, []string{"owner"}},
		{"PutBGPPeer with empty name", func(tx store.Tx) error {
			return tx.PutBGPPeer(samplePeer("", "192.0.2.254"))
		}, []string{"name"}},
		{"PutNetworkPolicy with empty namespace", func(tx store.Tx) error {
			return tx.PutNetworkPolicy(samplePolicy("", "deny"))
		}, []string{"empty namespace"}},
		{"PutNetworkPolicy with empty name", func(tx store.Tx) error {
			return tx.PutNetworkPolicy(samplePolicy("default", ""))
		}, []string{"empty name"}},
		{"PutNetworkPolicy with NUL in namespace", func(tx store.Tx) error {
			return tx.PutNetworkPolicy(samplePolicy("def\x00ault", "deny"))
		}, []string{`namespace "def\x00ault"`}},
		{"PutNetworkPolicy with NUL in name", func(tx store.Tx) error {
			return tx.PutNetworkPolicy(samplePolicy("default", "de\x00ny"))
		}, []string{`name "de\x00ny"`}},
		{"PutNamespace with empty name", func(tx store.Tx) error {
			return tx.PutNamespace(api.Namespace{Labels: map[string]string{"team": "a"}})
		}, []string{"empty name"}},
		{"PutNamespace with NUL in name", func(tx store.Tx) error {
			return tx.PutNamespace(sampleNamespace("def\x00ault"))
		}, []string{`name "def\x00ault"`}},
		{"PutPod with empty namespace", func(tx store.Tx) error {
			return tx.PutPod(samplePod("", "web-0"))
		}, []string{"empty namespace"}},
		{"PutPod with empty name", func(tx store.Tx) error {
			return tx.PutPod(samplePod("default", ""))
		}, []string{"empty name"}},
		{"PutPod with NUL in namespace", func(tx store.Tx) error {
			return tx.PutPod(samplePod("def\x00ault", "web-0"))
		}, []string{`namespace "def\x00ault"`}},
		{"PutPod with NUL in name", func(tx store.Tx) error {
			return tx.PutPod(samplePod("default", "web\x000"))
		}, []string{`name "web\x000"`}},
	}
	for _, w := range writes {
		err := s.Update(w.fn)
		if err == nil {
			t.Errorf("%s: no error", w.name)
			continue
		}
		for _, say := range w.says {
			if !strings.Contains(err.Error(), say) {
				t.Errorf("%s: error %q does not mention %q", w.name, err, say)
			}
		}
	}
	mustEqual(t, "contents after refused writes", dump(t, s), before)
}

func testReturnsCopies(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutNetwork(SampleNetwork("red")); err != nil {
			return err
		}
		if err := tx.PutEndpoint(sampleEndpoint("red", "c1", "eth0")); err != nil {
			return err
		}
		if err := tx.PutNetworkPolicy(samplePolicy("default", "deny")); err != nil {
			return err
		}
		if err := tx.PutNamespace(sampleNamespace("default")); err != nil {
			return err
		}
		if err := tx.PutPod(samplePod("default", "web-0")); err != nil {
			return err
		}
		return tx.PutAllocation("red", netip.MustParseAddr("10.88.0.5"), "o")
	})
	view(t, s, func(tx store.Tx) error {
		n, _, err := tx.Network("red")
		if err != nil {
			return err
		}
		n.Subnets[0].Gateway = netip.MustParseAddr("10.88.0.254")
		ns, err := tx.Networks()
		if err != nil {
			return err
		}
		ns[0].Subnets[0].Gateway = netip.MustParseAddr("10.88.0.254")
		ep, _, err := tx.Endpoint(api.EndpointKey{Network: "red", ContainerID: "c1", IfName: "eth0"})
		if err != nil {
			return err
		}
		ep.IPs[0] = netip.MustParsePrefix("10.88.9.9/16")
		m, err := tx.Allocations("red")
		if err != nil {
			return err
		}
		m[netip.MustParseAddr("10.88.0.6")] = "intruder"
		p, _, err := tx.NetworkPolicy("default", "deny")
		if err != nil {
			return err
		}
		p.Spec.PodSelector.MatchLabels["app"] = "intruder"
		p.Spec.Ingress[0].Peers[0].IPBlock.Except[0] = netip.MustParsePrefix("0.0.0.0/0")
		ps, err := tx.NetworkPolicies("")
		if err != nil {
			return err
		}
		ps[0].Spec.PolicyTypes[0] = "intruder"
		space, _, err := tx.Namespace("default")
		if err != nil {
			return err
		}
		space.Labels["team"] = "intruder"
		nss, err := tx.Namespaces()
		if err != nil {
			return err
		}
		nss[0].Labels["team"] = "intruder"
		pod, _, err := tx.Pod("default", "web-0")
		if err != nil {
			return err
		}
		pod.Labels["app"] = "intruder"
		pod.NamedPorts[0].Port = 1
		pods, err := tx.Pods("")
		if err != nil {
			return err
		}
		pods[0].Labels["app"] = "intruder"
		pods[0].NamedPorts[0].Name = "intruder"
		return nil
	})
	c := dump(t, s)
	mustEqual(t, "network after mutating a returned value", c.Networks[0], SampleNetwork("red"))
	mustEqual(t, "endpoint after mutating a returned value", c.Endpoints[0], sampleEndpoint("red", "c1", "eth0"))
	mustEqual(t, "allocations after mutating a returned map", c.Allocs["red"], map[netip.Addr]string{netip.MustParseAddr("10.88.0.5"): "o"})
	mustEqual(t, "policies after mutating returned ones", c.Policies, []api.NetworkPolicy{samplePolicy("default", "deny")})
	mustEqual(t, "namespaces after mutating returned ones", c.Spaces, []api.Namespace{sampleNamespace("default")})
	mustEqual(t, "pods after mutating returned ones", c.Pods, []api.Pod{samplePod("default", "web-0")})
}

func testConcurrentUpdates(t *testing.T, s store.Store) {
	putNetworks(t, s, "red")
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- s.Update(func(tx store.Tx) error {
				// Read-modify-write of one shared record: a lost update shows as a
				// wrong count at the end.
				nw, ok, err := tx.Network("red")
				if err != nil {
					return err
				}
				if !ok {
					return errors.New("network red vanished")
				}
				nw.MTU++
				if err := tx.PutNetwork(nw); err != nil {
					return err
				}
				if err := tx.PutEndpoint(sampleEndpoint("red", fmt.Sprintf("c%02d", i), "eth0")); err != nil {
					return err
				}
				return tx.PutAllocation("red", netip.AddrFrom4([4]byte{10, 88, 1, byte(i)}), fmt.Sprintf("red/c%02d/eth0", i))
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent update: %v", err)
		}
	}
	c := dump(t, s)
	if got, want := c.Networks[0].MTU, SampleNetwork("red").MTU+n; got != want {
		t.Errorf("MTU after %d read-modify-write updates = %d; want %d", n, got, want)
	}
	if len(c.Endpoints) != n {
		t.Errorf("%d endpoints; want %d", len(c.Endpoints), n)
	}
	if len(c.Allocs["red"]) != n {
		t.Errorf("%d allocations; want %d", len(c.Allocs["red"]), n)
	}
}

func testCloseTwice(t *testing.T, s store.Store) {
	if err := s.Close(); err != nil {
		t.Errorf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func testPorts(t *testing.T, s store.Store) {
	any4 := netip.Addr{}
	h1 := netip.MustParseAddr("192.0.2.1")
	h6 := netip.MustParseAddr("2001:db8::1")
	update(t, s, func(tx store.Tx) error {
		for _, p := range []struct {
			ip    netip.Addr
			port  uint16
			owner string
		}{{any4, 8080, "a"}, {h1, 8080, "b"}, {h6, 8080, "c"}, {any4, 53, "d"}} {
			if err := tx.PutPort("n1", "tcp", p.ip, p.port, p.owner); err != nil {
				return err
			}
		}
		return tx.PutPort("n1", "udp", any4, 8080, "e")
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.PortOwners("n1", "tcp", 8080)
		want := map[netip.Addr]string{any4: "a", h1: "b", h6: "c"}
		if err == nil && !maps.Equal(got, want) {
			t.Errorf("PortOwners(n1, tcp, 8080) = %v, want %v", got, want)
		}
		if got, _ := tx.PortOwners("n1", "udp", 8080); !maps.Equal(got, map[netip.Addr]string{any4: "e"}) {
			t.Errorf("PortOwners(n1, udp, 8080) = %v", got)
		}
		if got, _ := tx.PortOwners("n1", "tcp", 9999); len(got) != 0 || got == nil {
			t.Errorf("PortOwners of a free port = %#v, want an empty map", got)
		}
		return err
	})
	// A second put replaces the owner.
	update(t, s, func(tx store.Tx) error { return tx.PutPort("n1", "tcp", h1, 8080, "b2") })
	update(t, s, func(tx store.Tx) error { return tx.DeletePort("n1", "tcp", any4, 8080) })
	view(t, s, func(tx store.Tx) error {
		got, err := tx.PortOwners("n1", "tcp", 8080)
		if want := map[netip.Addr]string{h1: "b2", h6: "c"}; err == nil && !maps.Equal(got, want) {
			t.Errorf("after delete: %v, want %v", got, want)
		}
		return err
	})
	err := s.Update(func(tx store.Tx) error { return tx.DeletePort("n1", "tcp", any4, 8080) })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeletePort of a free port: %v, want ErrNotFound", err)
	}
}

// testPortsPerNode: two nodes publish the same port on the same host address
// independently (a store shared by a cluster).
func testPortsPerNode(t *testing.T, s store.Store) {
	any4 := netip.Addr{}
	h1 := netip.MustParseAddr("192.0.2.1")
	update(t, s, func(tx store.Tx) error {
		for _, p := range []struct {
			node, owner string
			ip          netip.Addr
		}{{"n1", "red/a/eth0", any4}, {"n2", "red/b/eth0", any4}, {"n2", "red/c/eth0", h1}, {"b/x", "red/d/eth0", any4}} {
			if err := tx.PutPort(p.node, "tcp", p.ip, 8080, p.owner); err != nil {
				return err
			}
		}
		return nil
	})
	owners := func(what string, want map[string]map[netip.Addr]string) {
		t.Helper()
		view(t, s, func(tx store.Tx) error {
			for _, node := range []string{"n1", "n2", "b/x", "n3"} {
				got, err := tx.PortOwners(node, "tcp", 8080)
				if err != nil {
					return err
				}
				w := want[node]
				if w == nil {
					w = map[netip.Addr]string{}
				}
				if !maps.Equal(got, w) {
					t.Errorf("%s: PortOwners(%q, tcp, 8080) = %v, want %v", what, node, got, w)
				}
			}
			return nil
		})
	}
	owners("after the puts", map[string]map[netip.Addr]string{
		"n1":  {any4: "red/a/eth0"},
		"n2":  {any4: "red/b/eth0", h1: "red/c/eth0"},
		"b/x": {any4: "red/d/eth0"},
	})
	update(t, s, func(tx store.Tx) error { return tx.DeletePort("n1", "tcp", any4, 8080) })
	owners("after n1 released its port", map[string]map[netip.Addr]string{
		"n2":  {any4: "red/b/eth0", h1: "red/c/eth0"},
		"b/x": {any4: "red/d/eth0"},
	})
	err := s.Update(func(tx store.Tx) error { return tx.DeletePort("n1", "tcp", any4, 8080) })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeletePort of n1 after it released the port: %v, want ErrNotFound", err)
	}
	err = s.Update(func(tx store.Tx) error { return tx.DeletePort("n3", "tcp", h1, 8080) })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeletePort of a node that publishes nothing: %v, want ErrNotFound", err)
	}
}

func samplePeer(name, addr string) api.BGPPeer {
	return api.BGPPeer{Name: name, Address: netip.MustParseAddr(addr), ASN: 65001}
}

func testBGPConfig(t *testing.T, s store.Store) {
	view(t, s, func(tx store.Tx) error {
		if c, ok, err := tx.BGPConfig(); ok || err != nil || c != (api.BGPConfig{}) {
			t.Errorf("BGPConfig never put = %+v, %v, %v; want zero, not ok", c, ok, err)
		}
		return nil
	})
	for _, want := range []api.BGPConfig{{ASN: api.DefaultASN, NodeMesh: true}, {ASN: 65010}} {
		update(t, s, func(tx store.Tx) error { return tx.PutBGPConfig(want) })
		view(t, s, func(tx store.Tx) error {
			if c, ok, err := tx.BGPConfig(); !ok || err != nil || c != want {
				t.Errorf("BGPConfig after putting %+v = %+v, %v, %v", want, c, ok, err)
			}
			return nil
		})
	}
}

func testBGPPeers(t *testing.T, s store.Store) {
	tor := samplePeer("tor", "192.0.2.254")
	tor.Node = "n1"
	rr6 := samplePeer("rr/6", "2001:db8::fe")
	rr6.ASN = 64512
	update(t, s, func(tx store.Tx) error {
		for _, p := range []api.BGPPeer{tor, samplePeer("rr", "192.0.2.253"), rr6} {
			if err := tx.PutBGPPeer(p); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		if p, ok, err := tx.BGPPeer("tor"); !ok || err != nil || p != tor {
			t.Errorf("BGPPeer(tor) = %+v, %v, %v; want %+v", p, ok, err, tor)
		}
		if p, ok, err := tx.BGPPeer("rr/6"); !ok || err != nil || p != rr6 {
			t.Errorf("BGPPeer(rr/6) = %+v, %v, %v; want %+v", p, ok, err, rr6)
		}
		ps, err := tx.BGPPeers()
		mustEqual(t, "BGPPeers", ps, []api.BGPPeer{samplePeer("rr", "192.0.2.253"), rr6, tor})
		return err
	})
	// Replace one, delete another.
	tor.Address, tor.Node = netip.MustParseAddr("192.0.2.250"), ""
	update(t, s, func(tx store.Tx) error { return tx.PutBGPPeer(tor) })
	update(t, s, func(tx store.Tx) error { return tx.DeleteBGPPeer("rr") })
	view(t, s, func(tx store.Tx) error {
		if _, ok, err := tx.BGPPeer("rr"); ok || err != nil {
			t.Errorf("deleted BGPPeer(rr): ok %v, err %v; want gone", ok, err)
		}
		ps, err := tx.BGPPeers()
		mustEqual(t, "BGPPeers after a replace and a delete", ps, []api.BGPPeer{rr6, tor})
		return err
	})
	err := s.Update(func(tx store.Tx) error { return tx.DeleteBGPPeer("rr") })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteBGPPeer: %v, want ErrNotFound", err)
	}
	err = s.Update(func(tx store.Tx) error { return tx.PutBGPPeer(api.BGPPeer{Address: netip.MustParseAddr("192.0.2.1")}) })
	if err == nil || !strings.Contains(err.Error(), "name") {
		t.Errorf("PutBGPPeer with an empty name: %v; want an error about the name", err)
	}
}

func testServices(t *testing.T, s store.Store) {
	svc := func(ns, name string) api.Service {
		return api.Service{Namespace: ns, Name: name, Ports: []api.ServicePort{{Port: 80, TargetPort: 8080, Protocol: "tcp"}},
			Selector: map[string]string{"app": name}, VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.5")},
			Backends: []api.Backend{{Addr: netip.MustParseAddr("10.88.0.2")}}}
	}
	update(t, s, func(tx store.Tx) error {
		for _, x := range []api.Service{svc("default", "web"), svc("default", "api"), svc("kube", "dns"), svc("def", "x")} {
			if err := tx.PutService(x); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		got, ok, err := tx.Service("default", "web")
		if err != nil || !ok || got.Selector["app"] != "web" || got.VIPs[0] != netip.MustParseAddr("10.96.0.5") {
			t.Errorf("Service(default, web) = %+v %v %v", got, ok, err)
		}
		if got.Backends != nil {
			t.Errorf("backends are derived and never stored, got %+v", got.Backends)
		}
		list, err := tx.Services("default")
		if err != nil || len(list) != 2 || list[0].Name != "api" || list[1].Name != "web" {
			t.Errorf("Services(default) = %+v %v", list, err)
		}
		all, _ := tx.Services("")
		var names []string
		for _, x := range all {
			names = append(names, x.Namespace+"/"+x.Name)
		}
		if want := "def/x default/api default/web kube/dns"; strings.Join(names, " ") != want {
			t.Errorf("Services() = %v, want %s", names, want)
		}
		if _, ok, _ := tx.Service("default", "nope"); ok {
			t.Error("Service of a missing name reported ok")
		}
		return err
	})
	update(t, s, func(tx store.Tx) error { return tx.DeleteService("default", "web") })
	err := s.Update(func(tx store.Tx) error { return tx.DeleteService("default", "web") })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteService: %v, want ErrNotFound", err)
	}
}

// samplePolicy returns a policy of namespace that uses every field of the spec.
func samplePolicy(namespace, name string) api.NetworkPolicy {
	return api.NetworkPolicy{
		Namespace: namespace,
		Name:      name,
		Spec: api.NetworkPolicySpec{
			PodSelector: api.LabelSelector{
				MatchLabels: map[string]string{"app": name},
				MatchExpressions: []api.LabelSelectorRequirement{
					{Key: "tier", Operator: api.SelectorIn, Values: []string{"web", "api"}},
					{Key: "canary", Operator: api.SelectorDoesNotExist},
				},
			},
			PolicyTypes: []string{api.PolicyIngress, api.PolicyEgress},
			Ingress: []api.NetworkPolicyRule{{
				Peers: []api.NetworkPolicyPeer{
					{IPBlock: &api.IPBlock{CIDR: netip.MustParsePrefix("10.0.0.0/8"),
						Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}},
					{PodSelector: &api.LabelSelector{MatchLabels: map[string]string{"role": "client"}},
						NamespaceSelector: &api.LabelSelector{MatchLabels: map[string]string{"team": "a"}}},
				},
				Ports: []api.NetworkPolicyPort{
					{Protocol: "TCP", Port: &api.PortValue{Number: 80}},
					{Protocol: "TCP", Port: &api.PortValue{Name: "metrics"}},
					{Protocol: "UDP", Port: &api.PortValue{Number: 5000}, EndPort: 5010},
				},
			}},
			Egress: []api.NetworkPolicyRule{
				{Peers: []api.NetworkPolicyPeer{{NamespaceSelector: &api.LabelSelector{}}}},
				{Ports: []api.NetworkPolicyPort{{Protocol: "SCTP"}}},
			},
		},
		Created: created,
	}
}

func policyNames(ps []api.NetworkPolicy) []string {
	var names []string
	for _, p := range ps {
		names = append(names, p.Namespace+"/"+p.Name)
	}
	return names
}

func testNetworkPolicies(t *testing.T, s store.Store) {
	// "a.b" sorts before "a/b", but not once escaped for a key.
	keys := [][2]string{{"default", "web"}, {"default", "api"}, {"kube", "dns"}, {"def", "x"},
		{"a/b", "allow all"}, {"a.b", "z"}, {"default", "a/b"}, {"default", "a.b"}}
	update(t, s, func(tx store.Tx) error {
		for _, k := range keys {
			if err := tx.PutNetworkPolicy(samplePolicy(k[0], k[1])); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		for _, k := range keys {
			p, ok, err := tx.NetworkPolicy(k[0], k[1])
			if !ok || err != nil {
				t.Errorf("NetworkPolicy(%q, %q): ok %v, err %v; want found", k[0], k[1], ok, err)
				continue
			}
			mustEqual(t, "NetworkPolicy("+k[0]+", "+k[1]+")", p, samplePolicy(k[0], k[1]))
		}
		if _, ok, err := tx.NetworkPolicy("default", "nope"); ok || err != nil {
			t.Errorf("NetworkPolicy of a missing name: ok %v, err %v; want ok=false, no error", ok, err)
		}
		if _, ok, err := tx.NetworkPolicy("kube", "web"); ok || err != nil {
			t.Errorf("NetworkPolicy of a name of another namespace: ok %v, err %v; want ok=false, no error", ok, err)
		}
		for namespace, want := range map[string][]string{
			"":        {"a.b/z", "a/b/allow all", "def/x", "default/a.b", "default/a/b", "default/api", "default/web", "kube/dns"},
			"default": {"default/a.b", "default/a/b", "default/api", "default/web"},
			"def":     {"def/x"},
			"a/b":     {"a/b/allow all"},
			"a":       nil,
			"nosuch":  nil,
		} {
			ps, err := tx.NetworkPolicies(namespace)
			if err != nil {
				return err
			}
			mustEqual(t, fmt.Sprintf("NetworkPolicies(%q)", namespace), policyNames(ps), want)
		}
		all, err := tx.NetworkPolicies("")
		if err == nil && len(all) > 0 {
			mustEqual(t, "first of NetworkPolicies()", all[0], samplePolicy("a.b", "z"))
		}
		return err
	})

	// Replace one, delete another.
	changed := samplePolicy("default", "web")
	changed.Spec = api.NetworkPolicySpec{PolicyTypes: []string{api.PolicyIngress}}
	update(t, s, func(tx store.Tx) error { return tx.PutNetworkPolicy(changed) })
	update(t, s, func(tx store.Tx) error { return tx.DeleteNetworkPolicy("default", "api") })
	view(t, s, func(tx store.Tx) error {
		if p, ok, err := tx.NetworkPolicy("default", "web"); !ok || err != nil || !reflect.DeepEqual(p, changed) {
			t.Errorf("replaced NetworkPolicy(default, web) = %+v, %v, %v; want %+v", p, ok, err, changed)
		}
		if _, ok, err := tx.NetworkPolicy("default", "api"); ok || err != nil {
			t.Errorf("deleted NetworkPolicy(default, api): ok %v, err %v; want gone", ok, err)
		}
		ps, err := tx.NetworkPolicies("default")
		mustEqual(t, "NetworkPolicies(default) after a replace and a delete", policyNames(ps),
			[]string{"default/a.b", "default/a/b", "default/web"})
		return err
	})
	err := s.Update(func(tx store.Tx) error { return tx.DeleteNetworkPolicy("default", "api") })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteNetworkPolicy: %v; want ErrNotFound", err)
	}
	err = s.Update(func(tx store.Tx) error { return tx.DeleteNetworkPolicy("kube", "web") })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteNetworkPolicy of a name of another namespace: %v; want ErrNotFound", err)
	}
}

func sampleNamespace(name string) api.Namespace {
	return api.Namespace{Name: name, Labels: map[string]string{api.NamespaceNameLabel: name, "team": "a"}}
}

func testNamespaces(t *testing.T, s store.Store) {
	bare := api.Namespace{Name: "bare"}
	update(t, s, func(tx store.Tx) error {
		for _, ns := range []api.Namespace{sampleNamespace("default"), sampleNamespace("a/b"), sampleNamespace("a.b"), bare} {
			if err := tx.PutNamespace(ns); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		if ns, ok, err := tx.Namespace("a/b"); !ok || err != nil || !reflect.DeepEqual(ns, sampleNamespace("a/b")) {
			t.Errorf("Namespace(a/b) = %+v, %v, %v; want %+v", ns, ok, err, sampleNamespace("a/b"))
		}
		if ns, ok, err := tx.Namespace("bare"); !ok || err != nil || ns.Name != "bare" || len(ns.Labels) != 0 {
			t.Errorf("Namespace(bare) = %+v, %v, %v; want it without labels", ns, ok, err)
		}
		if _, ok, err := tx.Namespace("nosuch"); ok || err != nil {
			t.Errorf("Namespace(nosuch): ok %v, err %v; want ok=false, no error", ok, err)
		}
		nss, err := tx.Namespaces()
		var names []string
		for _, ns := range nss {
			names = append(names, ns.Name)
		}
		mustEqual(t, "Namespaces", names, []string{"a.b", "a/b", "bare", "default"})
		return err
	})

	// Replace one (new labels), delete another.
	relabeled := api.Namespace{Name: "default", Labels: map[string]string{api.NamespaceNameLabel: "default", "team": "b"}}
	update(t, s, func(tx store.Tx) error { return tx.PutNamespace(relabeled) })
	update(t, s, func(tx store.Tx) error { return tx.DeleteNamespace("a.b") })
	view(t, s, func(tx store.Tx) error {
		if ns, ok, err := tx.Namespace("default"); !ok || err != nil || !reflect.DeepEqual(ns, relabeled) {
			t.Errorf("relabeled Namespace(default) = %+v, %v, %v; want %+v", ns, ok, err, relabeled)
		}
		if _, ok, err := tx.Namespace("a.b"); ok || err != nil {
			t.Errorf("deleted Namespace(a.b): ok %v, err %v; want gone", ok, err)
		}
		nss, err := tx.Namespaces()
		mustEqual(t, "Namespaces after a replace and a delete", nss, []api.Namespace{sampleNamespace("a/b"), bare, relabeled})
		return err
	})
	err := s.Update(func(tx store.Tx) error { return tx.DeleteNamespace("a.b") })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteNamespace: %v; want ErrNotFound", err)
	}
}

// samplePod returns a pod record of namespace that uses every field.
func samplePod(namespace, name string) api.Pod {
	return api.Pod{
		Namespace: namespace,
		Name:      name,
		Labels:    map[string]string{"app": name, "tier": "web"},
		NamedPorts: []api.NamedPort{
			{Name: "http", Port: 8080, Protocol: "TCP"},
			{Name: "dns", Port: 53, Protocol: "UDP"},
		},
		HostNetwork: true,
		Source:      "kubernetes",
	}
}

func podNames(ps []api.Pod) []string {
	var names []string
	for _, p := range ps {
		names = append(names, p.Namespace+"/"+p.Name)
	}
	return names
}

func testPods(t *testing.T, s store.Store) {
	// "a.b" sorts before "a/b", but not once escaped for a key.
	keys := [][2]string{{"default", "web-0"}, {"default", "api"}, {"kube", "dns"}, {"def", "x"},
		{"a/b", "pod 1"}, {"a.b", "z"}, {"default", "a/b"}, {"default", "a.b"}}
	bare := api.Pod{Namespace: "kube", Name: "bare"}
	update(t, s, func(tx store.Tx) error {
		for _, k := range keys {
			if err := tx.PutPod(samplePod(k[0], k[1])); err != nil {
				return err
			}
		}
		return tx.PutPod(bare)
	})
	view(t, s, func(tx store.Tx) error {
		for _, k := range keys {
			p, ok, err := tx.Pod(k[0], k[1])
			if !ok || err != nil {
				t.Errorf("Pod(%q, %q): ok %v, err %v; want found", k[0], k[1], ok, err)
				continue
			}
			mustEqual(t, "Pod("+k[0]+", "+k[1]+")", p, samplePod(k[0], k[1]))
		}
		if p, ok, err := tx.Pod("kube", "bare"); !ok || err != nil || !reflect.DeepEqual(p, bare) {
			t.Errorf("Pod(kube, bare) = %+v, %v, %v; want %+v", p, ok, err, bare)
		}
		if _, ok, err := tx.Pod("default", "nope"); ok || err != nil {
			t.Errorf("Pod of a missing name: ok %v, err %v; want ok=false, no error", ok, err)
		}
		if _, ok, err := tx.Pod("kube", "web-0"); ok || err != nil {
			t.Errorf("Pod of a name of another namespace: ok %v, err %v; want ok=false, no error", ok, err)
		}
		for namespace, want := range map[string][]string{
			"": {"a.b/z", "a/b/pod 1", "def/x", "default/a.b", "default/a/b", "default/api", "default/web-0",
				"kube/bare", "kube/dns"},
			"default": {"default/a.b", "default/a/b", "default/api", "default/web-0"},
			"def":     {"def/x"},
			"a/b":     {"a/b/pod 1"},
			"a":       nil,
			"nosuch":  nil,
		} {
			ps, err := tx.Pods(namespace)
			if err != nil {
				return err
			}
			mustEqual(t, fmt.Sprintf("Pods(%q)", namespace), podNames(ps), want)
		}
		all, err := tx.Pods("")
		if err == nil && len(all) > 0 {
			mustEqual(t, "first of Pods()", all[0], samplePod("a.b", "z"))
		}
		return err
	})

	// Replace one, delete another.
	changed := samplePod("default", "web-0")
	changed.Labels = map[string]string{"app": "web", "version": "2"}
	changed.NamedPorts = nil
	changed.HostNetwork = false
	update(t, s, func(tx store.Tx) error { return tx.PutPod(changed) })
	update(t, s, func(tx store.Tx) error { return tx.DeletePod("default", "api") })
	view(t, s, func(tx store.Tx) error {
		if p, ok, err := tx.Pod("default", "web-0"); !ok || err != nil || !reflect.DeepEqual(p, changed) {
			t.Errorf("replaced Pod(default, web-0) = %+v, %v, %v; want %+v", p, ok, err, changed)
		}
		if _, ok, err := tx.Pod("default", "api"); ok || err != nil {
			t.Errorf("deleted Pod(default, api): ok %v, err %v; want gone", ok, err)
		}
		ps, err := tx.Pods("default")
		mustEqual(t, "Pods(default) after a replace and a delete", podNames(ps),
			[]string{"default/a.b", "default/a/b", "default/web-0"})
		return err
	})
	err := s.Update(func(tx store.Tx) error { return tx.DeletePod("default", "api") })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeletePod: %v; want ErrNotFound", err)
	}
	err = s.Update(func(tx store.Tx) error { return tx.DeletePod("kube", "web-0") })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeletePod of a name of another namespace: %v; want ErrNotFound", err)
	}
}

// testReadYourDeletes checks that a transaction's reads, point reads and listings,
// miss what it deleted itself.
func testReadYourDeletes(t *testing.T, s store.Store) {
	a := netip.MustParseAddr("10.88.0.7")
	block := netip.MustParsePrefix("10.88.0.0/26")
	k := api.EndpointKey{Network: "red", ContainerID: "c1", IfName: "eth0"}
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutNetwork(SampleNetwork("red")); err != nil {
			return err
		}
		if err := tx.PutEndpoint(sampleEndpoint("red", "c1", "eth0")); err != nil {
			return err
		}
		if err := tx.PutEndpoint(sampleEndpoint("red", "c2", "eth0")); err != nil {
			return err
		}
		if err := tx.PutAllocation("red", a, "o"); err != nil {
			return err
		}
		if err := tx.PutPort("n1", "tcp", netip.Addr{}, 80, "o"); err != nil {
			return err
		}
		for _, p := range []string{"tor1", "tor2"} {
			if err := tx.PutBGPPeer(samplePeer(p, "192.0.2.254")); err != nil {
				return err
			}
		}
		for _, n := range []string{"n1", "n2"} {
			if err := tx.PutNode(sampleNode(n, "192.0.2.1")); err != nil {
				return err
			}
		}
		for _, b := range []string{"10.88.0.0/26", "10.88.0.64/26"} {
			if err := tx.PutBlock(sampleBlock("red", b, "n1")); err != nil {
				return err
			}
		}
		for _, n := range []string{"deny", "allow"} {
			if err := tx.PutNetworkPolicy(samplePolicy("ns", n)); err != nil {
				return err
			}
		}
		for _, n := range []string{"ns", "other"} {
			if err := tx.PutNamespace(sampleNamespace(n)); err != nil {
				return err
			}
		}
		for _, n := range []string{"web-0", "web-1"} {
			if err := tx.PutPod(samplePod("ns", n)); err != nil {
				return err
			}
		}
		return tx.PutService(api.Service{Namespace: "ns", Name: "web"})
	})
	update(t, s, func(tx store.Tx) error {
		// Read first, so that a store that caches reads has them cached.
		if eps, err := tx.Endpoints("red"); len(eps) != 2 || err != nil {
			t.Errorf("Endpoints(red) = %v, %v; want 2", endpointKeys(eps), err)
		}
		if owner, ok, err := tx.Allocation("red", a); owner != "o" || !ok || err != nil {
			t.Errorf("Allocation(red, %s) = %q, %v, %v; want o", a, owner, ok, err)
		}
		if ns, err := tx.Nodes(); len(ns) != 2 || err != nil {
			t.Errorf("Nodes = %v, %v; want 2", ns, err)
		}
		if bs, err := tx.Blocks(""); len(bs) != 2 || err != nil {
			t.Errorf("Blocks = %v, %v; want 2", bs, err)
		}
		if _, ok, err := tx.Block("red", block); !ok || err != nil {
			t.Errorf("Block(red, %s): ok %v, err %v; want found", block, ok, err)
		}
		if ps, err := tx.BGPPeers(); len(ps) != 2 || err != nil {
			t.Errorf("BGPPeers = %v, %v; want 2", ps, err)
		}
		if m, err := tx.PortOwners("n1", "tcp", 80); len(m) != 1 || err != nil {
			t.Errorf("PortOwners(n1, tcp, 80) = %v, %v; want 1", m, err)
		}
		if ps, err := tx.NetworkPolicies("ns"); len(ps) != 2 || err != nil {
			t.Errorf("NetworkPolicies(ns) = %v, %v; want 2", ps, err)
		}
		if ns, err := tx.Namespaces(); len(ns) != 2 || err != nil {
			t.Errorf("Namespaces = %v, %v; want 2", ns, err)
		}
		if _, ok, err := tx.Namespace("ns"); !ok || err != nil {
			t.Errorf("Namespace(ns): ok %v, err %v; want found", ok, err)
		}
		if ps, err := tx.Pods("ns"); len(ps) != 2 || err != nil {
			t.Errorf("Pods(ns) = %v, %v; want 2", ps, err)
		}
		if _, ok, err := tx.Pod("ns", "web-0"); !ok || err != nil {
			t.Errorf("Pod(ns, web-0): ok %v, err %v; want found", ok, err)
		}
		for _, err := range []error{
			tx.DeleteEndpoint(k),
			tx.DeleteAllocation("red", a),
			tx.DeletePort("n1", "tcp", netip.Addr{}, 80),
			tx.DeleteBGPPeer("tor1"),
			tx.DeleteService("ns", "web"),
			tx.DeleteNetworkPolicy("ns", "deny"),
			tx.DeleteNamespace("ns"),
			tx.DeletePod("ns", "web-0"),
			tx.DeleteNode("n1"),
			tx.DeleteBlock("red", block),
		} {
			if err != nil {
				return err
			}
		}
		if _, ok, err := tx.Endpoint(k); ok || err != nil {
			t.Errorf("deleted endpoint still read in its own transaction: ok %v, err %v", ok, err)
		}
		if eps, err := tx.Endpoints("red"); len(eps) != 1 || err != nil {
			t.Errorf("Endpoints(red) after deleting one = %v, %v; want c2 only", endpointKeys(eps), err)
		}
		if eps, err := tx.Endpoints(""); len(eps) != 1 || err != nil {
			t.Errorf("Endpoints(\"\") after deleting one = %v, %v; want c2 only", endpointKeys(eps), err)
		}
		if _, ok, err := tx.Allocation("red", a); ok || err != nil {
			t.Errorf("released address still read in its own transaction: ok %v, err %v", ok, err)
		}
		if m, err := tx.Allocations("red"); len(m) != 0 || err != nil {
			t.Errorf("Allocations(red) after release = %v, %v; want none", m, err)
		}
		if held, err := tx.AllocationsOf("red", "o"); len(held) != 0 || err != nil {
			t.Errorf("AllocationsOf(red, o) after release = %v, %v; want none", held, err)
		}
		if m, err := tx.PortOwners("n1", "tcp", 80); len(m) != 0 || err != nil {
			t.Errorf("PortOwners(n1, tcp, 80) after delete = %v, %v; want none", m, err)
		}
		if _, ok, err := tx.BGPPeer("tor1"); ok || err != nil {
			t.Errorf("deleted BGP peer still read in its own transaction: ok %v, err %v", ok, err)
		}
		if ps, err := tx.BGPPeers(); len(ps) != 1 || err != nil {
			t.Errorf("BGPPeers after deleting one = %v, %v; want tor2 only", ps, err)
		}
		if err := tx.DeleteBGPPeer("tor1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second DeleteBGPPeer in one transaction: %v; want ErrNotFound", err)
		}
		if list, err := tx.Services(""); len(list) != 0 || err != nil {
			t.Errorf("Services after delete = %v, %v; want none", list, err)
		}
		if _, ok, err := tx.NetworkPolicy("ns", "deny"); ok || err != nil {
			t.Errorf("deleted network policy still read in its own transaction: ok %v, err %v", ok, err)
		}
		for _, namespace := range []string{"ns", ""} {
			if ps, err := tx.NetworkPolicies(namespace); len(ps) != 1 || err != nil {
				t.Errorf("NetworkPolicies(%q) after deleting one = %v, %v; want allow only", namespace, ps, err)
			}
		}
		if err := tx.DeleteNetworkPolicy("ns", "deny"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second DeleteNetworkPolicy in one transaction: %v; want ErrNotFound", err)
		}
		if _, ok, err := tx.Namespace("ns"); ok || err != nil {
			t.Errorf("deleted namespace still read in its own transaction: ok %v, err %v", ok, err)
		}
		if ns, err := tx.Namespaces(); len(ns) != 1 || err != nil {
			t.Errorf("Namespaces after deleting one = %v, %v; want other only", ns, err)
		}
		if err := tx.DeleteNamespace("ns"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second DeleteNamespace in one transaction: %v; want ErrNotFound", err)
		}
		if _, ok, err := tx.Pod("ns", "web-0"); ok || err != nil {
			t.Errorf("deleted pod still read in its own transaction: ok %v, err %v", ok, err)
		}
		for _, namespace := range []string{"ns", ""} {
			if ps, err := tx.Pods(namespace); len(ps) != 1 || err != nil {
				t.Errorf("Pods(%q) after deleting one = %v, %v; want web-1 only", namespace, ps, err)
			}
		}
		if err := tx.DeletePod("ns", "web-0"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second DeletePod in one transaction: %v; want ErrNotFound", err)
		}
		if _, ok, err := tx.Node("n1"); ok || err != nil {
			t.Errorf("deleted node still read in its own transaction: ok %v, err %v", ok, err)
		}
		if ns, err := tx.Nodes(); len(ns) != 1 || err != nil {
			t.Errorf("Nodes after deleting one = %v, %v; want n2 only", ns, err)
		}
		if _, ok, err := tx.Block("red", block); ok || err != nil {
			t.Errorf("released block still read in its own transaction: ok %v, err %v", ok, err)
		}
		for _, nw := range []string{"red", ""} {
			if bs, err := tx.Blocks(nw); len(bs) != 1 || err != nil {
				t.Errorf("Blocks(%q) after releasing one = %v, %v; want 10.88.0.64/26 only", nw, bs, err)
			}
		}
		if err := tx.DeleteEndpoint(k); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second DeleteEndpoint in one transaction: %v; want ErrNotFound", err)
		}
		if err := tx.DeleteBlock("red", block); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second DeleteBlock in one transaction: %v; want ErrNotFound", err)
		}
		return nil
	})
	c := dump(t, s)
	mustEqual(t, "endpoints after the deletes", endpointKeys(c.Endpoints), []api.EndpointKey{{Network: "red", ContainerID: "c2", IfName: "eth0"}})
	mustEqual(t, "allocations after the deletes", c.Allocs["red"], map[netip.Addr]string{})
	mustEqual(t, "nodes after the deletes", c.Nodes, []api.Node{sampleNode("n2", "192.0.2.1")})
	mustEqual(t, "blocks after the deletes", c.Blocks, []api.Block{sampleBlock("red", "10.88.0.64/26", "n1")})
	mustEqual(t, "BGP peers after the deletes", c.BGPPeers, []api.BGPPeer{samplePeer("tor2", "192.0.2.254")})
	mustEqual(t, "network policies after the deletes", c.Policies, []api.NetworkPolicy{samplePolicy("ns", "allow")})
	mustEqual(t, "namespaces after the deletes", c.Spaces, []api.Namespace{sampleNamespace("other")})
	mustEqual(t, "pods after the deletes", c.Pods, []api.Pod{samplePod("ns", "web-1")})
}

// testDeleteAndRecreateNetwork deletes a network and fills it again in one
// transaction: only the new contents remain, also of keys sorting around them.
func testDeleteAndRecreateNetwork(t *testing.T, s store.Store) {
	p := netip.MustParsePrefix("10.88.0.0/16")
	a5, a6, a7 := netip.MustParseAddr("10.88.0.5"), netip.MustParseAddr("10.88.0.6"), netip.MustParseAddr("10.88.0.7")
	update(t, s, func(tx store.Tx) error {
		for _, nw := range []string{"red", "blue"} {
			if err := tx.PutNetwork(SampleNetwork(nw)); err != nil {
				return err
			}
			for _, c := range []string{"c1", "c3"} {
				if err := tx.PutEndpoint(sampleEndpoint(nw, c, "eth0")); err != nil {
					return err
				}
			}
			if err := tx.PutAllocation(nw, a5, nw+"/c1/eth0"); err != nil {
				return err
			}
			if err := tx.PutAllocation(nw, a7, nw+"/c3/eth0"); err != nil {
				return err
			}
			if err := tx.PutCursor(nw, p, a7); err != nil {
				return err
			}
			for _, b := range []string{"10.88.0.0/26", "10.88.0.128/26"} {
				if err := tx.PutBlock(sampleBlock(nw, b, "n1")); err != nil {
					return err
				}
			}
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteNetwork("red"); err != nil {
			return err
		}
		if err := tx.PutNetwork(SampleNetwork("red")); err != nil {
			return err
		}
		if err := tx.PutEndpoint(sampleEndpoint("red", "c2", "eth0")); err != nil {
			return err
		}
		if err := tx.PutAllocation("red", a6, "red/c2/eth0"); err != nil {
			return err
		}
		if err := tx.PutCursor("red", p, a6); err != nil {
			return err
		}
		if err := tx.PutBlock(sampleBlock("red", "10.88.0.64/26", "n2")); err != nil {
			return err
		}
		if bs, err := tx.Blocks("red"); err != nil || !reflect.DeepEqual(bs, []api.Block{sampleBlock("red", "10.88.0.64/26", "n2")}) {
			t.Errorf("Blocks(red) in the transaction that re-created it = %v, %v; want 10.88.0.64/26 only", bs, err)
		}
		if eps, err := tx.Endpoints("red"); err != nil || len(eps) != 1 || eps[0].ContainerID != "c2" {
			t.Errorf("Endpoints(red) in the transaction that re-created it = %v, %v; want c2 only", endpointKeys(eps), err)
		}
		if m, err := tx.Allocations("red"); err != nil || !maps.Equal(m, map[netip.Addr]string{a6: "red/c2/eth0"}) {
			t.Errorf("Allocations(red) in the transaction that re-created it = %v, %v", m, err)
		}
		if held, err := tx.AllocationsOf("red", "red/c1/eth0"); err != nil || len(held) != 0 {
			t.Errorf("AllocationsOf(red, red/c1/eth0) in the transaction that re-created it = %v, %v; want none", held, err)
		}
		return nil
	})
	c := dump(t, s, p)
	mustEqual(t, "networks", networkNames(c.Networks), []string{"blue", "red"})
	mustEqual(t, "endpoints", endpointKeys(c.Endpoints), []api.EndpointKey{
		{Network: "blue", ContainerID: "c1", IfName: "eth0"},
		{Network: "blue", ContainerID: "c3", IfName: "eth0"},
		{Network: "red", ContainerID: "c2", IfName: "eth0"},
	})
	mustEqual(t, "allocations of red", c.Allocs["red"], map[netip.Addr]string{a6: "red/c2/eth0"})
	mustEqual(t, "allocations of blue", c.Allocs["blue"], map[netip.Addr]string{a5: "blue/c1/eth0", a7: "blue/c3/eth0"})
	mustEqual(t, "cursors", c.Cursors, map[string]netip.Addr{"red " + p.String(): a6, "blue " + p.String(): a7})
	mustEqual(t, "blocks", c.Blocks, []api.Block{
		sampleBlock("blue", "10.88.0.0/26", "n1"),
		sampleBlock("blue", "10.88.0.128/26", "n1"),
		sampleBlock("red", "10.88.0.64/26", "n2"),
	})
	view(t, s, func(tx store.Tx) error {
		for owner, want := range map[string][]netip.Addr{"red/c1/eth0": nil, "red/c3/eth0": nil, "red/c2/eth0": {a6}, "blue/c3/eth0": {a7}} {
			held, err := tx.AllocationsOf(owner[:strings.IndexByte(owner, '/')], owner)
			if err != nil {
				return err
			}
			mustEqual(t, "addresses of "+owner, held, want)
		}
		return nil
	})
}

// testServicesReadAgain reads a service again and again, as the agent's reconcile does
// (a store may hand out copies of records it decoded before: store.DecodedServices): what
// a reader changes in what it got does not reach the next reader, a rewritten record is
// read as written, and a deleted one is gone.
func testServicesReadAgain(t *testing.T, s store.Store) {
	svc := api.Service{Name: "web", Namespace: "shop", Selector: map[string]string{"app": "web"},
		Ports:   []api.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "tcp"}},
		VIPs:    []netip.Addr{netip.MustParseAddr("10.96.0.10")},
		Created: created,
		Slices: []api.SliceEndpoint{{Addrs: []netip.Addr{netip.MustParseAddr("10.88.0.2")},
			Ports: []api.NamedPort{{Name: "http", Port: 8080, Protocol: "tcp"}}, Ready: true}}}
	read := func() (one api.Service, all []api.Service) {
		t.Helper()
		view(t, s, func(tx store.Tx) (err error) {
			if one, _, err = tx.Service("shop", "web"); err != nil {
				return err
			}
			all, err = tx.Services("")
			return err
		})
		return one, all
	}
	update(t, s, func(tx store.Tx) error { return tx.PutService(svc) })
	for round := range 3 {
		one, all := read()
		mustEqual(t, fmt.Sprintf("round %d: Service", round), one, svc)
		mustEqual(t, fmt.Sprintf("round %d: Services", round), all, []api.Service{svc})
		// What the readers change is theirs.
		one.Selector["app"], one.VIPs[0], one.Slices[0].Addrs[0] = "x", netip.Addr{}, netip.Addr{}
		all[0].Ports[0].Port, all[0].Slices[0].Ports[0].Port = 1, 1
	}
	svc.Slices[0].Addrs = append(svc.Slices[0].Addrs, netip.MustParseAddr("10.88.0.3"))
	update(t, s, func(tx store.Tx) error { return tx.PutService(svc) })
	one, all := read()
	mustEqual(t, "after a rewrite: Service", one, svc)
	mustEqual(t, "after a rewrite: Services", all, []api.Service{svc})
	update(t, s, func(tx store.Tx) error { return tx.DeleteService("shop", "web") })
	view(t, s, func(tx store.Tx) error {
		if _, ok, err := tx.Service("shop", "web"); ok || err != nil {
			t.Errorf("deleted service: found %v, err %v", ok, err)
		}
		return nil
	})
}
