package nft

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
)

// openTable opens table inet podnet of a new throwaway namespace.
func openTable(t testing.TB) (*Table, netns.NsHandle) {
	t.Helper()
	requireRoot(t)
	ns := newNetNS(t)
	tb, err := Open(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb, ns
}

// otherConn is an nftables connection to ns that is not podnet's.
func otherConn(t testing.TB, ns netns.NsHandle) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustSync(t testing.TB, tb *Table, r Ruleset) {
	t.Helper()
	if err := tb.Sync(r); err != nil {
		t.Fatal(err)
	}
	wantInSync(t, tb, r, true)
}

func wantInSync(t testing.TB, tb *Table, r Ruleset, want bool) {
	t.Helper()
	diff, err := tb.diff(r)
	if err != nil {
		t.Fatal(err)
	}
	if got := diff == ""; got != want {
		t.Fatalf("InSync = %v (diff %q), want %v", got, diff, want)
	}
	ok, err := tb.InSync(r)
	if err != nil || ok != want {
		t.Fatalf("InSync = %v, %v; want %v", ok, err, want)
	}
}

// full is the example ruleset with more networks.
func full() Ruleset {
	r := example
	r.Networks = []Network{blue, red, green, violet}
	return r
}

func TestPrivilegedSyncIdempotent(t *testing.T) {
	tb, _ := openTable(t)
	r := full()
	wantInSync(t, tb, r, false) // no table yet
	mustSync(t, tb, r)
	mustSync(t, tb, r)

	// A different ruleset is not in sync; syncing it replaces the tables.
	for _, r2 := range []Ruleset{
		{Networks: []Network{blue}},
		{Networks: r.Networks, Endpoints: r.Endpoints},
		{Networks: r.Networks, Endpoints: r.Endpoints, Ports: r.Ports[:1]},
		{Networks: r.Networks, Endpoints: r.Endpoints[:1], Ports: r.Ports},
		{Networks: r.Networks, Endpoints: r.Endpoints, Ports: r.Ports, Services: r.Services[1:]},
	} {
		wantInSync(t, tb, r2, false)
		mustSync(t, tb, r2)
		wantInSync(t, tb, r, false)
		mustSync(t, tb, r)
	}
	mustSync(t, tb, Ruleset{})
	wantInSync(t, tb, r, false)

	if err := tb.Delete(); err != nil {
		t.Fatal(err)
	}
	wantInSync(t, tb, Ruleset{}, false)
	if err := tb.Delete(); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

// Update adds and removes exactly the elements of its deltas, tolerates elements that
// are already there or already gone, and fails as a whole on a conflict or without tables.
func TestPrivilegedUpdate(t *testing.T) {
	tb, _ := openTable(t)
	base := full()
	ep := Endpoint{HostIf: "pnv-red-1", Bridge: "pn-red", Addrs: addrs("10.88.2.7", "fd00:88:2::7")}
	ports := []PortMapping{
		{Protocol: "tcp", HostPort: 9000, Addr: netip.MustParseAddr("10.88.2.7"), Port: 9000},
		{Protocol: "udp", HostIP: netip.MustParseAddr("192.0.2.1"), HostPort: 9000, Addr: netip.MustParseAddr("10.88.2.7"), Port: 53},
		{Protocol: "tcp", HostIP: netip.MustParseAddr("::"), HostPort: 9000, Addr: netip.MustParseAddr("fd00:88:2::7"), Port: 9000},
	}
	with := base
	with.Endpoints = append(slices.Clone(base.Endpoints), ep)
	with.Ports = append(slices.Clone(base.Ports), ports...)
	add := Delta{Endpoints: []Endpoint{ep}, Ports: ports}

	if err := tb.Update(add, Delta{}); !errors.Is(err, ErrNoTable) {
		t.Fatalf("Update without tables = %v, want ErrNoTable", err)
	}
	mustSync(t, tb, base)
	for i := range 2 { // the second time, every element exists already
		if err := tb.Update(add, Delta{}); err != nil {
			t.Fatalf("add #%d: %v", i+1, err)
		}
		wantInSync(t, tb, with, true)
	}
	for i := range 2 { // the second time, every element is gone already
		if err := tb.Update(Delta{}, add); err != nil {
			t.Fatalf("remove #%d: %v", i+1, err)
		}
		wantInSync(t, tb, base, true)
	}
	// In one call, removals happen first: an element in both deltas is there after it.
	if err := tb.Update(add, add); err != nil {
		t.Fatal(err)
	}
	wantInSync(t, tb, with, true)
	if err := tb.Update(Delta{}, Delta{}); err != nil {
		t.Fatal(err)
	}

	// Mapping a host port that is mapped to another target fails, changing nothing...
	moved := ports[0]
	moved.Addr = netip.MustParseAddr("10.88.2.8")
	other := Delta{Endpoints: []Endpoint{{HostIf: "pnv-x", Addrs: addrs("10.88.2.9")}}, Ports: []PortMapping{moved}}
	if err := tb.Update(other, Delta{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Update of a mapped host port = %v, want ErrConflict", err)
	}
	wantInSync(t, tb, with, true)
	// ... and so does removing a mapping with the wrong target.
	if err := tb.Update(Delta{}, Delta{Ports: []PortMapping{moved}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Update removing a wrong target = %v, want ErrConflict", err)
	}
	wantInSync(t, tb, with, true)
	// Moving it: remove the old mapping and add the new one in one call.
	if err := tb.Update(Delta{Ports: []PortMapping{moved}}, Delta{Ports: ports[:1]}); err != nil {
		t.Fatal(err)
	}
	moveDone := with
	moveDone.Ports = append(slices.Clone(base.Ports), moved, ports[1], ports[2])
	wantInSync(t, tb, moveDone, true)

	// Invalid deltas change nothing.
	for _, d := range []Delta{
		{Endpoints: []Endpoint{{HostIf: "", Addrs: addrs("10.0.0.1")}}},
		{Ports: []PortMapping{{Protocol: "sctp", HostPort: 1, Addr: netip.MustParseAddr("10.0.0.1"), Port: 1}}},
		{Ports: []PortMapping{moved, ports[0]}},
	} {
		if err := tb.Update(d, Delta{}); err == nil {
			t.Errorf("Update(%+v) succeeded", d)
		}
		if err := tb.Update(Delta{}, d); err == nil {
			t.Errorf("Update(remove %+v) succeeded", d)
		}
	}
	wantInSync(t, tb, moveDone, true)

	if err := tb.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Update(add, Delta{}); !errors.Is(err, ErrNoTable) {
		t.Fatalf("Update after Delete = %v, want ErrNoTable", err)
	}
}

// Update adds and removes a network's elements so that the tables equal what Sync writes
// for the same networks, also where two networks' subnets touch; a network overlapping
// one in the tables is refused.
func TestPrivilegedUpdateNetworks(t *testing.T) {
	tb, _ := openTable(t)
	base := full()
	mustSync(t, tb, base)
	// Two networks adjacent to each other and to blue (10.88.1.0/24), one routed with two
	// subnets, to the tables of full().
	added := []Network{
		{Name: "indigo", Bridge: "pn-indigo", Subnets: pfx("10.88.0.0/24", "fd00:88::/64"), Masquerade: true},
		{Name: "teal", Subnets: pfx("10.88.6.0/24", "10.88.7.0/24", "fd00:88:6::/64")},
	}
	want := base
	want.Networks = slices.Concat(base.Networks, added)
	for i := range 2 { // the second time, every element exists already
		if err := tb.Update(Delta{Networks: added}, Delta{}); err != nil {
			t.Fatalf("add #%d: %v", i+1, err)
		}
		wantInSync(t, tb, want, true)
	}

	overlap := Network{Name: "wide", Bridge: "pn-wide", Subnets: pfx("10.88.6.128/25")}
	if err := tb.Update(Delta{Networks: []Network{overlap}}, Delta{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Update adding an overlapping network = %v, want ErrConflict", err)
	}
	wantInSync(t, tb, want, true)
	if err := tb.Update(Delta{Networks: []Network{{Name: "bad", Bridge: "a/b"}}}, Delta{}); err == nil || !strings.Contains(err.Error(), `bridge "a/b"`) {
		t.Fatalf("Update adding a network with an invalid bridge name = %v, want an error naming the bridge", err)
	}
	wantInSync(t, tb, want, true)

	for i := range 2 { // the second time, every element is gone already
		if err := tb.Update(Delta{}, Delta{Networks: added}); err != nil {
			t.Fatalf("remove #%d: %v", i+1, err)
		}
		wantInSync(t, tb, base, true)
	}
}

func TestPrivilegedInvalidRulesetChangesNothing(t *testing.T) {
	tb, _ := openTable(t)
	r := Ruleset{Networks: []Network{blue}}
	mustSync(t, tb, r)
	bad := Ruleset{Networks: []Network{blue, {Name: "x", Bridge: "pn-blue"}}}
	if err := tb.Sync(bad); err == nil {
		t.Fatal("Sync of an invalid ruleset succeeded")
	}
	wantInSync(t, tb, r, true)
}

// Changes made behind podnet's back make InSync false, and Sync repairs them.
func TestPrivilegedRepair(t *testing.T) {
	tb, ns := openTable(t)
	r := full()
	inet := podnetTable(nftables.TableFamilyINet)
	brt := podnetTable(nftables.TableFamilyBridge)
	set := func(tbl *nftables.Table, name string) *nftables.Set {
		s, err := otherConn(t, ns).GetSetByName(tbl, name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	def := build(r)
	elems := func(tbl int, name string) []nftables.SetElement {
		s := *def.tables[tbl].set(name)
		return setElements(s.kernelElems(s.elems[0]))
	}
	accept := []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	for _, tc := range []struct {
		name   string
		change func(c *nftables.Conn)
	}{
		{"flush table", func(c *nftables.Conn) { c.FlushTable(inet) }},
		{"delete table", func(c *nftables.Conn) { c.DelTable(inet) }},
		{"delete bridge table", func(c *nftables.Conn) { c.DelTable(brt) }},
		{"flush chain", func(c *nftables.Conn) { c.FlushChain(&nftables.Chain{Name: chainPostrouting, Table: inet}) }},
		{"flush bridge chain", func(c *nftables.Conn) { c.FlushChain(&nftables.Chain{Name: chainAntispoof, Table: brt}) }},
		{"delete chain", func(c *nftables.Conn) {
			c.FlushChain(&nftables.Chain{Name: chainForward, Table: inet})
			c.DelChain(&nftables.Chain{Name: chainForward, Table: inet})
		}},
		{"extra chain", func(c *nftables.Conn) { c.AddChain(&nftables.Chain{Name: "extra", Table: inet}) }},
		{"extra bridge chain", func(c *nftables.Conn) { c.AddChain(&nftables.Chain{Name: "extra", Table: brt}) }},
		{"extra rule", func(c *nftables.Conn) {
			c.AddRule(&nftables.Rule{Table: inet, Chain: &nftables.Chain{Name: chainForward}, Exprs: accept})
		}},
		{"replaced rule", func(c *nftables.Conn) {
			c.FlushChain(&nftables.Chain{Name: chainForward, Table: inet})
			c.AddRule(&nftables.Rule{Table: inet, Chain: &nftables.Chain{Name: chainForward}, Exprs: accept})
		}},
		{"flush set", func(c *nftables.Conn) { c.FlushSet(set(inet, setPods4)) }},
		{"flush map", func(c *nftables.Conn) { c.FlushSet(set(inet, mapPorts4)) }},
		{"flush bridge set", func(c *nftables.Conn) { c.FlushSet(set(brt, setEndpointAddrs4)) }},
		{"delete interval element", func(c *nftables.Conn) {
			must(t, c.SetDeleteElements(set(inet, setMasq4), elems(0, setMasq4)), "delete")
		}},
		{"delete isolation element", func(c *nftables.Conn) {
			must(t, c.SetDeleteElements(set(inet, setSameNetwork6), elems(0, setSameNetwork6)), "delete")
		}},
		{"delete endpoint", func(c *nftables.Conn) {
			must(t, c.SetDeleteElements(set(brt, setEndpoints), elems(1, setEndpoints)), "delete")
		}},
		{"extra element", func(c *nftables.Conn) {
			blue := netip.MustParseAddr("10.88.1.0").AsSlice()
			red := netip.MustParseAddr("10.88.2.0").AsSlice()
			blueEnd := netip.MustParseAddr("10.88.1.255").AsSlice()
			redEnd := netip.MustParseAddr("10.88.2.255").AsSlice()
			must(t, c.SetAddElements(set(inet, setSameNetwork4), []nftables.SetElement{
				{Key: append(slices.Clone(blue), red...), KeyEnd: append(slices.Clone(blueEnd), redEnd...)},
			}), "add")
		}},
		{"extra endpoint address", func(c *nftables.Conn) {
			must(t, c.SetAddElements(set(inet, setEndpointAddrs4), []nftables.SetElement{
				{Key: append(ifnameKey("pnv-violet-1"), 10, 88, 4, 99)},
			}), "add")
		}},
		{"changed mapping", func(c *nftables.Conn) {
			els := elems(0, mapPorts4)
			s := set(inet, mapPorts4)
			must(t, c.SetDeleteElements(s, els), "delete")
			els[0].Val = slices.Clone(els[0].Val)
			els[0].Val[5]++ // port
			must(t, c.SetAddElements(s, els), "add")
		}},
		{"flush services set", func(c *nftables.Conn) { c.FlushSet(set(inet, setServices+"4")) }},
		{"delete backend", func(c *nftables.Conn) {
			must(t, c.SetDeleteElements(set(inet, mapBackends+"4"), elems(0, mapBackends+"4")), "delete")
		}},
		{"changed slot count", func(c *nftables.Conn) {
			els := elems(0, setServices+"4")
			must(t, c.SetAddElements(set(inet, slotBitSet(3, ip4)), []nftables.SetElement{{Key: els[0].Key}}), "add")
		}},
		{"affinity service without affinity", func(c *nftables.Conn) {
			must(t, c.SetDeleteElements(set(inet, setAffinityServices+"6"), elems(0, setAffinityServices+"6")), "delete")
		}},
		{"flush pick chain", func(c *nftables.Conn) { c.FlushChain(&nftables.Chain{Name: chainPick + "4", Table: inet}) }},
		{"extra regular chain rule", func(c *nftables.Conn) {
			c.AddRule(&nftables.Rule{Table: inet, Chain: &nftables.Chain{Name: chainNoBackends}, Exprs: accept})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustSync(t, tb, r)
			c := otherConn(t, ns)
			tc.change(c)
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			wantInSync(t, tb, r, false)
			mustSync(t, tb, r)
		})
	}
}

// Sync and Delete leave another table of the namespace alone.
func TestPrivilegedForeignTableUntouched(t *testing.T) {
	tb, ns := openTable(t)
	c := otherConn(t, ns)
	other := c.AddTable(&nftables.Table{Name: "other", Family: nftables.TableFamilyINet})
	ch := c.AddChain(&nftables.Chain{
		Name: "input", Table: other, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	})
	c.AddRule(&nftables.Rule{Table: other, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameKey("lo")},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	// A set named like one of podnet's.
	s := &nftables.Set{Table: other, Name: setEndpoints, KeyType: nftables.TypeIFName}
	if err := c.AddSet(s, []nftables.SetElement{{Key: ifnameKey("eth9")}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	check := func(step string) {
		t.Helper()
		c := otherConn(t, ns)
		if _, err := c.ListTableOfFamily("other", nftables.TableFamilyINet); err != nil {
			t.Fatalf("%s: table inet other: %v", step, err)
		}
		rules, err := c.GetRules(other, ch)
		if err != nil || len(rules) != 1 {
			t.Fatalf("%s: rules of inet other input: %d, %v", step, len(rules), err)
		}
		els, err := c.GetSetElements(s)
		if err != nil || len(els) != 1 || string(els[0].Key) != string(ifnameKey("eth9")) {
			t.Fatalf("%s: elements of inet other bridges: %v, %v", step, els, err)
		}
	}
	mustSync(t, tb, Ruleset{Networks: []Network{blue, red}})
	check("after Sync")
	mustSync(t, tb, Ruleset{Networks: []Network{green}})
	check("after second Sync")
	if err := tb.Delete(); err != nil {
		t.Fatal(err)
	}
	check("after Delete")
	if err := tb.Delete(); err != nil {
		t.Fatal(err)
	}
	check("after second Delete")
}

// bigRuleset has networks, endpoints and port mappings by hundreds or thousands.
func bigRuleset(nets, endpoints, ports int) Ruleset {
	var r Ruleset
	for i := range nets {
		a4 := netip.AddrFrom4([4]byte{10, byte(i >> 7), byte(i << 1), 0})
		a6 := netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)})
		r.Networks = append(r.Networks, Network{
			Name:       fmt.Sprintf("network-with-a-long-name-%05d", i),
			Bridge:     fmt.Sprintf("pn-%05d", i),
			Subnets:    []netip.Prefix{netip.PrefixFrom(a4, 24), netip.PrefixFrom(a6, 64)},
			Masquerade: i%2 == 0,
		})
	}
	for i := range endpoints {
		bridge := ""
		if i%2 == 0 {
			bridge = "pn-big"
		}
		r.Endpoints = append(r.Endpoints, Endpoint{
			HostIf: fmt.Sprintf("pnv-%06d", i),
			Bridge: bridge,
			Addrs: []netip.Addr{
				netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}),
				netip.AddrFrom16([16]byte{0xfd, 0xee, 14: byte(i >> 8), 15: byte(i)}),
			},
		})
	}
	for i := range ports {
		p := PortMapping{Protocol: "tcp", HostPort: uint16(1024 + i), Addr: netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), Port: 80}
		switch i % 4 {
		case 1:
			p.Protocol = "udp"
		case 2:
			p.HostIP = netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		case 3:
			p.Addr = netip.AddrFrom16([16]byte{0xfd, 0xee, 14: byte(i >> 8), 15: byte(i)})
			p.HostIP = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
		}
		r.Ports = append(r.Ports, p)
	}
	return r
}

// Big tables need many element messages and a large socket buffer.
func TestPrivilegedManyNetworks(t *testing.T) {
	tb, _ := openTable(t)
	r := bigRuleset(100, 5000, 5000)
	start := time.Now()
	if err := tb.Sync(r); err != nil {
		t.Fatal(err)
	}
	synced := time.Since(start)
	start = time.Now()
	wantInSync(t, tb, r, true)
	t.Logf("100 networks, 5000 endpoints, 5000 port mappings: Sync %v, InSync %v", synced, time.Since(start))
	mustSync(t, tb, r)
}

func TestPrivilegedOpenClose(t *testing.T) {
	requireRoot(t)
	if _, err := Open(-1); err == nil {
		t.Error("Open(-1) succeeded")
	}
	f, err := os.Open("/proc/self/ns/uts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Open(int(f.Fd())); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
		t.Errorf("Open(uts namespace) = %v, want a 'not a network namespace' error", err)
	}

	ns := newNetNS(t)
	tb, err := Open(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	ns.Close() // the caller may close its fd: Table has its own
	mustSync(t, tb, Ruleset{Networks: []Network{blue}})
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := tb.Sync(Ruleset{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close = %v, want ErrClosed", err)
	}
}

// Endpoints and port mappings added and removed one by one, in random order, give the
// tables that Sync writes for the result.
func TestPrivilegedUpdateRandomOrder(t *testing.T) {
	tb, _ := openTable(t)
	big := bigRuleset(3, 120, 120)
	mustSync(t, tb, Ruleset{Networks: big.Networks})
	type op struct {
		d   Delta
		add bool
	}
	var ops []op
	keep := Ruleset{Networks: big.Networks}
	for i, e := range big.Endpoints {
		ops = append(ops, op{Delta{Endpoints: []Endpoint{e}}, true})
		if i%3 == 0 {
			keep.Endpoints = append(keep.Endpoints, e)
		}
	}
	for i, p := range big.Ports {
		ops = append(ops, op{Delta{Ports: []PortMapping{p}}, true})
		if i%3 == 0 {
			keep.Ports = append(keep.Ports, p)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	for _, o := range ops {
		must(t, tb.Update(o.d, Delta{}), "add")
	}
	wantInSync(t, tb, big, true)
	// Remove two thirds, in another order, with some removals repeated.
	var rm []Delta
	for i, e := range big.Endpoints {
		if i%3 != 0 {
			rm = append(rm, Delta{Endpoints: []Endpoint{e}})
		}
	}
	for i, p := range big.Ports {
		if i%3 != 0 {
			rm = append(rm, Delta{Ports: []PortMapping{p}})
		}
	}
	rm = append(rm, rm[:20]...)
	rng.Shuffle(len(rm), func(i, j int) { rm[i], rm[j] = rm[j], rm[i] })
	for _, d := range rm {
		must(t, tb.Update(Delta{}, d), "remove")
	}
	wantInSync(t, tb, keep, true)
}

// BenchmarkPrivilegedUpdate measures Update adding one port mapping, and removing it,
// in tables that hold no other mapping or 1,000 (and as many endpoints). Each iteration
// does both; the other operation is not timed.
func BenchmarkPrivilegedUpdate(b *testing.B) {
	for _, op := range []string{"add", "remove"} {
		for _, n := range []int{0, 1000} {
			b.Run(fmt.Sprintf("%s/mappings=%d", op, n), func(b *testing.B) {
				requireRoot(b)
				tb, err := Open(int(newNetNS(b)))
				if err != nil {
					b.Fatal(err)
				}
				defer tb.Close()
				if err := tb.Sync(bigRuleset(10, n, n)); err != nil {
					b.Fatal(err)
				}
				one := Delta{Ports: []PortMapping{{Protocol: "tcp", HostPort: 60000, Addr: netip.MustParseAddr("10.200.255.1"), Port: 80}}}
				timed := func(on bool, add, remove Delta) {
					if !on {
						b.StopTimer()
						defer b.StartTimer()
					}
					if err := tb.Update(add, remove); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				for range b.N {
					timed(op == "add", one, Delta{})
					timed(op == "remove", Delta{}, one)
				}
			})
		}
	}
}
