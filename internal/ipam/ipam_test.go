package ipam_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/storetest"
)

// sub builds a subnet; gateway "" leaves it without one.
func sub(prefix, gateway string) api.Subnet {
	s := api.Subnet{Prefix: netip.MustParsePrefix(prefix)}
	if gateway != "" {
		s.Gateway = netip.MustParseAddr(gateway)
	}
	return s
}

func network(name string, subnets ...api.Subnet) api.Network {
	return api.Network{Name: name, Driver: api.DriverBridge, Subnets: subnets, MTU: 1500}
}

var stores = []struct {
	name string
	open func(t *testing.T) store.Store
}{
	{"memory", func(t *testing.T) store.Store { return storetest.NewMemory() }},
	{"bolt", func(t *testing.T) store.Store {
		b, err := store.OpenBolt(filepath.Join(t.TempDir(), "podnet.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return b
	}},
}

// forEachStore runs fn against a fresh store of each implementation holding networks.
func forEachStore(t *testing.T, fn func(t *testing.T, s store.Store), networks ...api.Network) {
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			s := st.open(t)
			err := s.Update(func(tx store.Tx) error {
				for _, nw := range networks {
					if err := tx.PutNetwork(nw); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			fn(t, s)
		})
	}
}

func allocate(s store.Store, nw api.Network, owner string, static ...string) ([]netip.Prefix, error) {
	var addrs []netip.Addr
	for _, a := range static {
		addrs = append(addrs, netip.MustParseAddr(a))
	}
	var got []netip.Prefix
	err := s.Update(func(tx store.Tx) error {
		var err error
		got, err = ipam.Allocate(tx, nw, owner, addrs)
		return err
	})
	return got, err
}

func mustAllocate(t *testing.T, s store.Store, nw api.Network, owner string, static ...string) []netip.Prefix {
	t.Helper()
	got, err := allocate(s, nw, owner, static...)
	if err != nil {
		t.Fatalf("Allocate(%q, %v): %v", owner, static, err)
	}
	return got
}

func release(t *testing.T, s store.Store, network, owner string) []netip.Addr {
	t.Helper()
	var freed []netip.Addr
	err := s.Update(func(tx store.Tx) error {
		var err error
		freed, err = ipam.Release(tx, network, owner)
		return err
	})
	if err != nil {
		t.Fatalf("Release(%q): %v", owner, err)
	}
	return freed
}

func allocations(t *testing.T, s store.Store, network string) map[netip.Addr]string {
	t.Helper()
	var m map[netip.Addr]string
	err := s.View(func(tx store.Tx) error {
		var err error
		m, err = tx.Allocations(network)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

func TestAllocateDualStack(t *testing.T) {
	red := network("red", sub("10.88.0.0/16", "10.88.0.1"), sub("fd00:88::/64", "fd00:88::1"))
	blue := network("blue", sub("10.88.0.0/16", "10.88.0.1"), sub("fd00:88::/64", "fd00:88::1"))
	v6only := network("v6", sub("fd00:99::/64", "fd00:99::1"))
	forEachStore(t, func(t *testing.T, s store.Store) {
		steps := []struct {
			nw    api.Network
			owner string
			want  []netip.Prefix
		}{
			{red, "a", prefixes("10.88.0.2/16", "fd00:88::2/64")},
			{red, "b", prefixes("10.88.0.3/16", "fd00:88::3/64")},
			{red, "a", prefixes("10.88.0.2/16", "fd00:88::2/64")},  // idempotent
			{blue, "a", prefixes("10.88.0.2/16", "fd00:88::2/64")}, // networks do not share pools
			{v6only, "a", prefixes("fd00:99::2/64")},
		}
		for _, st := range steps {
			got := mustAllocate(t, s, st.nw, st.owner)
			if !slices.Equal(got, st.want) {
				t.Errorf("Allocate(%s, %s) = %v; want %v", st.nw.Name, st.owner, got, st.want)
			}
		}
		want := map[netip.Addr]string{
			netip.MustParseAddr("10.88.0.2"): "a", netip.MustParseAddr("fd00:88::2"): "a",
			netip.MustParseAddr("10.88.0.3"): "b", netip.MustParseAddr("fd00:88::3"): "b",
		}
		if got := allocations(t, s, "red"); !maps.Equal(got, want) {
			t.Errorf("allocations of red = %v; want %v", got, want)
		}
	}, red, blue, v6only)
}

// TestReservedAndExhaustion fills small subnets: every address but the reserved ones
// is handed out exactly once, then the pool is exhausted.
func TestReservedAndExhaustion(t *testing.T) {
	tests := []struct {
		subnet   api.Subnet
		reserved []string
		free     int
	}{
		{sub("10.0.0.0/30", "10.0.0.1"), []string{"10.0.0.0", "10.0.0.1", "10.0.0.3"}, 1},
		{sub("10.0.0.0/29", "10.0.0.6"), []string{"10.0.0.0", "10.0.0.6", "10.0.0.7"}, 5},
		{sub("10.0.0.8/29", "10.0.0.9"), []string{"10.0.0.8", "10.0.0.9", "10.0.0.15"}, 5},
		{sub("10.0.0.0/29", ""), []string{"10.0.0.0", "10.0.0.7"}, 6},
		{sub("10.0.0.0/28", "10.0.0.15"), []string{"10.0.0.0", "10.0.0.15"}, 14}, // gateway on the broadcast address
		{sub("fd00::/125", "fd00::1"), []string{"fd00::", "fd00::1"}, 6},
		{sub("fd00::/126", "fd00::3"), []string{"fd00::", "fd00::3"}, 2},
		{sub("fd00::/127", "fd00::1"), []string{"fd00::", "fd00::1"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.subnet.Prefix.String(), func(t *testing.T) {
			nw := network("blue", tt.subnet)
			forEachStore(t, func(t *testing.T, s store.Store) {
				seen := make(map[netip.Addr]bool)
				for i := range tt.free {
					got := mustAllocate(t, s, nw, fmt.Sprint("owner", i))
					if len(got) != 1 || got[0].Bits() != tt.subnet.Prefix.Bits() || !tt.subnet.Prefix.Contains(got[0].Addr()) {
						t.Fatalf("allocation %d = %v; want one address of %s", i, got, tt.subnet.Prefix)
					}
					a := got[0].Addr()
					if seen[a] {
						t.Errorf("%s handed out twice", a)
					}
					seen[a] = true
					if slices.Contains(tt.reserved, a.String()) {
						t.Errorf("reserved address %s handed out", a)
					}
				}
				_, err := allocate(s, nw, "one too many")
				want := fmt.Sprintf("network \"blue\": subnet %s has no free address", tt.subnet.Prefix)
				if api.ErrorCode(err) != api.CodePoolExhausted || err.Error() != want {
					t.Errorf("allocation beyond the pool: %v (code %d); want %q (code %d)", err, api.ErrorCode(err), want, api.CodePoolExhausted)
				}
				if n := len(allocations(t, s, "blue")); n != tt.free {
					t.Errorf("%d allocations after exhaustion; want %d", n, tt.free)
				}
			}, nw)
		})
	}
}

// TestExhaustionRollsBack checks that a dual-stack allocation whose second subnet is
// full leaves nothing behind in the first.
func TestExhaustionRollsBack(t *testing.T) {
	nw := network("blue", sub("10.0.0.0/24", "10.0.0.1"), sub("fd00::/126", "fd00::1"))
	forEachStore(t, func(t *testing.T, s store.Store) {
		mustAllocate(t, s, nw, "a")
		mustAllocate(t, s, nw, "b")
		_, err := allocate(s, nw, "c")
		if api.ErrorCode(err) != api.CodePoolExhausted || !strings.Contains(err.Error(), "fd00::/126") {
			t.Fatalf("third allocation: %v; want fd00::/126 exhausted", err)
		}
		if n := len(allocations(t, s, "blue")); n != 4 {
			t.Errorf("%d allocations; want 4 (the failed one rolled back)", n)
		}
		// The IPv4 cursor did not move either: the next owner gets .4.
		release(t, s, "blue", "b")
		if got := mustAllocate(t, s, nw, "d"); got[0] != netip.MustParsePrefix("10.0.0.4/24") {
			t.Errorf("after a rolled-back allocation got %v; want 10.0.0.4/24", got)
		}
	}, nw)
}

func TestRoundRobin(t *testing.T) {
	// Free addresses: .2 to .6.
	nw := network("blue", sub("10.0.0.0/29", "10.0.0.1"))
	steps := []struct {
		op    string // "+" allocate, "-" release
		owner string
		want  string // address allocated; "full" for exhaustion
	}{
		{"+", "a", "10.0.0.2"},
		{"+", "b", "10.0.0.3"},
		{"-", "a", ""},
		{"+", "c", "10.0.0.4"}, // not .2, just released
		{"-", "b", ""},
		{"+", "d", "10.0.0.5"},
		{"+", "e", "10.0.0.6"},
		{"+", "f", "10.0.0.2"}, // wrapped past broadcast, network and gateway
		{"+", "g", "10.0.0.3"},
		{"+", "h", "full"},
		{"-", "e", ""},
		{"-", "c", ""},
		{"+", "i", "10.0.0.4"}, // cursor at .3: .4 comes before .6
		{"+", "j", "10.0.0.6"},
		{"+", "k", "full"},
	}
	forEachStore(t, func(t *testing.T, s store.Store) {
		for i, st := range steps {
			if st.op == "-" {
				release(t, s, "blue", st.owner)
				continue
			}
			got, err := allocate(s, nw, st.owner)
			if st.want == "full" {
				if api.ErrorCode(err) != api.CodePoolExhausted {
					t.Errorf("step %d: allocate %s = %v, %v; want exhaustion", i, st.owner, got, err)
				}
				continue
			}
			if err != nil || len(got) != 1 || got[0].Addr().String() != st.want {
				t.Errorf("step %d: allocate %s = %v, %v; want %s", i, st.owner, got, err, st.want)
			}
		}
	}, nw)
}

// TestRoundRobinLargeIPv6 checks the wrap at the very end of a /64 and that the
// search over the huge range stops at the first free address.
func TestRoundRobinLargeIPv6(t *testing.T) {
	nw := network("blue", sub("fd00::/64", "fd00::1"))
	forEachStore(t, func(t *testing.T, s store.Store) {
		err := s.Update(func(tx store.Tx) error {
			return tx.PutCursor("blue", nw.Subnets[0].Prefix, netip.MustParseAddr("fd00::ffff:ffff:ffff:fffe"))
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"fd00::ffff:ffff:ffff:ffff/64", "fd00::2/64", "fd00::3/64"} {
			got := mustAllocate(t, s, nw, want)
			if len(got) != 1 || got[0] != netip.MustParsePrefix(want) {
				t.Errorf("allocate = %v; want %s", got, want)
			}
		}
	}, nw)
}

func TestStatic(t *testing.T) {
	nw := network("blue", sub("10.88.0.0/16", "10.88.0.1"), sub("fd00:88::/64", "fd00:88::1"))
	tests := []struct {
		name    string
		before  map[string]string // address -> owner, allocated first
		owner   string
		static  []string
		want    []netip.Prefix
		code    int      // expected error code, 0 for success
		errHas  []string // substrings of the error
		changes bool     // whether allocations change on success
	}{
		{name: "v4", owner: "a", static: []string{"10.88.7.7"},
			want: prefixes("10.88.7.7/16", "fd00:88::2/64"), changes: true},
		{name: "v6", owner: "a", static: []string{"fd00:88::abc"},
			want: prefixes("10.88.0.2/16", "fd00:88::abc/64"), changes: true},
		{name: "both families in any order", owner: "a", static: []string{"fd00:88::abc", "10.88.7.7"},
			want: prefixes("10.88.7.7/16", "fd00:88::abc/64"), changes: true},
		{name: "v4-mapped v6 counts as v4", owner: "a", static: []string{"::ffff:10.88.7.7"},
			want: prefixes("10.88.7.7/16", "fd00:88::2/64"), changes: true},
		{name: "taken", before: map[string]string{"10.88.7.7": "other"}, owner: "a", static: []string{"10.88.7.7"},
			code: api.CodeAddressInUse, errHas: []string{`network "blue"`, "10.88.7.7", `"other"`}},
		{name: "gateway", owner: "a", static: []string{"10.88.0.1"},
			code: api.CodeInvalidConfig, errHas: []string{`network "blue"`, "ips", "10.88.0.1", "gateway"}},
		{name: "network address", owner: "a", static: []string{"10.88.0.0"},
			code: api.CodeInvalidConfig, errHas: []string{"ips", "10.88.0.0", "reserved"}},
		{name: "broadcast", owner: "a", static: []string{"10.88.255.255"},
			code: api.CodeInvalidConfig, errHas: []string{"ips", "10.88.255.255", "broadcast"}},
		{name: "subnet-router anycast", owner: "a", static: []string{"fd00:88::"},
			code: api.CodeInvalidConfig, errHas: []string{"ips", "fd00:88::", "anycast"}},
		{name: "v6 last address is not reserved", owner: "a", static: []string{"fd00:88::ffff:ffff:ffff:ffff"},
			want: prefixes("10.88.0.2/16", "fd00:88::ffff:ffff:ffff:ffff/64"), changes: true},
		{name: "outside", owner: "a", static: []string{"10.99.0.1"},
			code: api.CodeInvalidConfig, errHas: []string{`network "blue"`, "ips", "10.99.0.1", "outside"}},
		{name: "two of one family", owner: "a", static: []string{"10.88.7.7", "10.88.7.8"},
			code: api.CodeInvalidConfig, errHas: []string{"ips", "10.88.7.7", "10.88.7.8"}},
		{name: "same address twice", owner: "a", static: []string{"10.88.7.7", "10.88.7.7"},
			code: api.CodeInvalidConfig, errHas: []string{"ips", "10.88.7.7"}},
		{name: "zero address", owner: "a", static: []string{""},
			code: api.CodeInvalidConfig, errHas: []string{"ips"}},
		{name: "same owner, same address", before: map[string]string{"10.88.7.7": "a", "fd00:88::7": "a"},
			owner: "a", static: []string{"10.88.7.7"}, want: prefixes("10.88.7.7/16", "fd00:88::7/64")},
		{name: "same owner, no static", before: map[string]string{"10.88.7.7": "a", "fd00:88::7": "a"},
			owner: "a", want: prefixes("10.88.7.7/16", "fd00:88::7/64")},
		{name: "same owner, other address", before: map[string]string{"10.88.7.7": "a", "fd00:88::7": "a"},
			owner: "a", static: []string{"10.88.7.8"},
			code: api.CodeInvalidConfig, errHas: []string{"ips", "10.88.7.8", "10.88.7.7"}},
		{name: "partial failure rolls back", before: map[string]string{"fd00:88::7": "other"}, owner: "a",
			static: []string{"10.88.7.7", "fd00:88::7"},
			code:   api.CodeAddressInUse, errHas: []string{"fd00:88::7", `"other"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, s store.Store) {
				err := s.Update(func(tx store.Tx) error {
					for a, o := range tt.before {
						if err := tx.PutAllocation("blue", netip.MustParseAddr(a), o); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				before := allocations(t, s, "blue")
				var static []netip.Addr
				for _, a := range tt.static {
					var addr netip.Addr
					if a != "" {
						addr = netip.MustParseAddr(a)
					}
					static = append(static, addr)
				}
				var got []netip.Prefix
				err = s.Update(func(tx store.Tx) error {
					got, err = ipam.Allocate(tx, nw, tt.owner, static)
					return err
				})
				after := allocations(t, s, "blue")
				if tt.code != 0 {
					if api.ErrorCode(err) != tt.code {
						t.Fatalf("Allocate = %v, %v (code %d); want code %d", got, err, api.ErrorCode(err), tt.code)
					}
					for _, sub := range tt.errHas {
						if !strings.Contains(err.Error(), sub) {
							t.Errorf("error %q does not mention %q", err, sub)
						}
					}
					var ve *api.ValidationError
					if tt.code == api.CodeInvalidConfig && (!errors.As(err, &ve) || ve.Field != "ips" || ve.Object != `network "blue"`) {
						t.Errorf("error %v does not wrap a validation error of network \"blue\" field ips", err)
					}
					if !maps.Equal(after, before) {
						t.Errorf("allocations changed by a failed Allocate: %v -> %v", before, after)
					}
					return
				}
				if err != nil {
					t.Fatalf("Allocate: %v", err)
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("Allocate = %v; want %v", got, tt.want)
				}
				if !tt.changes && !maps.Equal(after, before) {
					t.Errorf("idempotent Allocate changed allocations: %v -> %v", before, after)
				}
				for _, p := range got {
					if after[p.Addr()] != tt.owner {
						t.Errorf("%s is recorded for %q; want %q", p.Addr(), after[p.Addr()], tt.owner)
					}
				}
			}, nw)
		})
	}
}

func TestRelease(t *testing.T) {
	nw := network("blue", sub("10.88.0.0/16", "10.88.0.1"), sub("fd00:88::/64", "fd00:88::1"))
	forEachStore(t, func(t *testing.T, s store.Store) {
		for _, o := range []string{"a", "b", "c"} {
			mustAllocate(t, s, nw, o)
		}
		freed := release(t, s, "blue", "b")
		want := []netip.Addr{netip.MustParseAddr("10.88.0.3"), netip.MustParseAddr("fd00:88::3")}
		if !slices.Equal(freed, want) {
			t.Errorf("Release(b) = %v; want %v", freed, want)
		}
		if got := release(t, s, "blue", "b"); len(got) != 0 {
			t.Errorf("second Release(b) = %v; want nothing", got)
		}
		if got := release(t, s, "blue", "nobody"); len(got) != 0 {
			t.Errorf("Release(nobody) = %v; want nothing", got)
		}
		if got := release(t, s, "nosuch", "a"); len(got) != 0 {
			t.Errorf("Release in a missing network = %v; want nothing", got)
		}
		left := allocations(t, s, "blue")
		if len(left) != 4 || left[netip.MustParseAddr("10.88.0.2")] != "a" || left[netip.MustParseAddr("fd00:88::4")] != "c" {
			t.Errorf("allocations after Release(b) = %v; want those of a and c", left)
		}
		// b comes back with new addresses: round-robin does not reuse .3 yet.
		if got := mustAllocate(t, s, nw, "b"); !slices.Equal(got, prefixes("10.88.0.5/16", "fd00:88::5/64")) {
			t.Errorf("Allocate(b) after release = %v; want the next addresses", got)
		}
	}, nw)
}

// TestConcurrentAllocateBolt runs 100 transactions at once on one bbolt file.
func TestConcurrentAllocateBolt(t *testing.T) {
	nw := network("blue", sub("10.88.0.0/16", "10.88.0.1"), sub("fd00:88::/64", "fd00:88::1"))
	s := stores[1].open(t)
	if err := s.Update(func(tx store.Tx) error { return tx.PutNetwork(nw) }); err != nil {
		t.Fatal(err)
	}
	const n = 100
	results := make([][]netip.Prefix, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = allocate(s, nw, fmt.Sprintf("blue/c%03d/eth0", i))
		})
	}
	wg.Wait()
	seen := make(map[netip.Addr]int)
	for i := range n {
		if errs[i] != nil {
			t.Errorf("goroutine %d: %v", i, errs[i])
			continue
		}
		if len(results[i]) != 2 {
			t.Errorf("goroutine %d got %v; want two addresses", i, results[i])
		}
		for _, p := range results[i] {
			if j, dup := seen[p.Addr()]; dup {
				t.Errorf("%s handed to goroutines %d and %d", p.Addr(), j, i)
			}
			seen[p.Addr()] = i
		}
	}
	if got := len(allocations(t, s, "blue")); got != 2*n {
		t.Errorf("%d allocations recorded; want %d", got, 2*n)
	}
}

// model is what the store should hold after a sequence of operations, with the
// round-robin choice computed the slow, obvious way.
type model struct {
	nw      api.Network
	held    map[string][]netip.Addr // owner -> addresses, in subnet order
	owners  map[netip.Addr]string
	cursors []netip.Addr // per subnet
}

func newModel(nw api.Network) *model {
	m := &model{nw: nw, held: make(map[string][]netip.Addr), owners: make(map[netip.Addr]string)}
	for _, s := range nw.Subnets {
		m.cursors = append(m.cursors, s.Prefix.Addr())
	}
	return m
}

func isReserved(s api.Subnet, a netip.Addr) bool {
	last := s.Prefix.Addr()
	for n := s.Prefix.Addr(); s.Prefix.Contains(n); n = n.Next() {
		last = n
	}
	return a == s.Prefix.Addr() || a == s.Gateway || (a.Is4() && a == last)
}

// all lists the addresses of a small subnet in order.
func all(p netip.Prefix) []netip.Addr {
	var as []netip.Addr
	for a := p.Addr(); a.IsValid() && p.Contains(a); a = a.Next() {
		as = append(as, a)
	}
	return as
}

// next returns the expected dynamic address of subnet i, or false when it is full.
func (m *model) next(i int) (netip.Addr, bool) {
	s := m.nw.Subnets[i]
	as := all(s.Prefix)
	start := slices.Index(as, m.cursors[i])
	for k := 1; k <= len(as); k++ {
		a := as[(start+k)%len(as)]
		if _, taken := m.owners[a]; !taken && !isReserved(s, a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// allocate applies an allocation to the model and returns the expected result, or
// the expected error code.
func (m *model) allocate(owner string, static netip.Addr) ([]netip.Addr, int) {
	// A bad request is refused before anything else.
	if static.IsValid() {
		if s, ok := m.nw.SubnetFor(static); !ok || isReserved(s, static) {
			return nil, api.CodeInvalidConfig
		}
	}
	if h, ok := m.held[owner]; ok {
		if static.IsValid() && !slices.Contains(h, static) {
			return nil, api.CodeInvalidConfig
		}
		return h, 0
	}
	var got []netip.Addr
	cursors := slices.Clone(m.cursors) // restored on failure: the transaction rolls back
	for i, s := range m.nw.Subnets {
		if static.IsValid() && s.Prefix.Contains(static) {
			if _, taken := m.owners[static]; taken {
				m.cursors = cursors
				return nil, api.CodeAddressInUse
			}
			got = append(got, static)
			continue
		}
		a, ok := m.next(i)
		if !ok {
			m.cursors = cursors
			return nil, api.CodePoolExhausted
		}
		m.cursors[i] = a
		got = append(got, a)
	}
	m.held[owner] = got
	for _, a := range got {
		m.owners[a] = owner
	}
	return got, 0
}

func (m *model) release(owner string) []netip.Addr {
	h := m.held[owner]
	delete(m.held, owner)
	for _, a := range h {
		delete(m.owners, a)
	}
	h = slices.Clone(h)
	slices.SortFunc(h, netip.Addr.Compare)
	return h
}

// TestRandomAgainstModel replays random allocations and releases, with and without
// static addresses, on small subnets that fill up and wrap, and checks every result
// and the whole allocation table against the model after each step.
func TestRandomAgainstModel(t *testing.T) {
	nw := network("blue", sub("10.0.0.0/28", "10.0.0.1"), sub("fd00::/124", "fd00::7"))
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0))
			s := storetest.NewMemory()
			if err := s.Update(func(tx store.Tx) error { return tx.PutNetwork(nw) }); err != nil {
				t.Fatal(err)
			}
			m := newModel(nw)
			for step := range 2000 {
				owner := fmt.Sprint("o", rng.IntN(24))
				if rng.IntN(3) == 0 {
					want := m.release(owner)
					got := release(t, s, "blue", owner)
					if !slices.Equal(got, want) {
						t.Fatalf("step %d: Release(%s) = %v; want %v", step, owner, got, want)
					}
				} else {
					var static netip.Addr
					var statics []string
					if rng.IntN(4) == 0 {
						as := all(nw.Subnets[rng.IntN(2)].Prefix)
						static = as[rng.IntN(len(as))]
						statics = []string{static.String()}
					}
					want, code := m.allocate(owner, static)
					got, err := allocate(s, nw, owner, statics...)
					if api.ErrorCode(err) != code && !(code == 0 && err == nil) {
						t.Fatalf("step %d: Allocate(%s, %v) = %v, %v; want code %d", step, owner, statics, got, err, code)
					}
					if code == 0 {
						var addrs []netip.Addr
						for i, p := range got {
							addrs = append(addrs, p.Addr())
							if p.Bits() != nw.Subnets[i].Prefix.Bits() {
								t.Fatalf("step %d: %v has the wrong prefix length", step, p)
							}
						}
						if !slices.Equal(addrs, want) {
							t.Fatalf("step %d: Allocate(%s, %v) = %v; want %v", step, owner, statics, addrs, want)
						}
					}
				}
				table := allocations(t, s, "blue")
				if !maps.Equal(table, m.owners) {
					t.Fatalf("step %d: store holds %v; model %v", step, table, m.owners)
				}
				for a := range table {
					s, _ := nw.SubnetFor(a)
					if isReserved(s, a) {
						t.Fatalf("step %d: reserved %s allocated", step, a)
					}
				}
			}
		})
	}
}

func TestAllocateStoreErrorsAreWrapped(t *testing.T) {
	nw := network("blue", sub("10.0.0.0/24", "10.0.0.1"))
	s := storetest.NewMemory()
	err := s.View(func(tx store.Tx) error {
		_, err := ipam.Allocate(tx, nw, "a", nil)
		return err
	})
	if !errors.Is(err, store.ErrReadOnly) || !strings.Contains(err.Error(), `network "blue"`) {
		t.Errorf("Allocate in a read-only transaction: %v; want a wrapped ErrReadOnly naming the network", err)
	}
}
