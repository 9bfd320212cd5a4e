package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
)

// openTable opens table inet podnet of a new throwaway namespace.
func openTable(t *testing.T) (*Table, netns.NsHandle) {
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
func otherConn(t *testing.T, ns netns.NsHandle) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustSync(t *testing.T, tb *Table, r Ruleset) {
	t.Helper()
	if err := tb.Sync(r); err != nil {
		t.Fatal(err)
	}
	wantInSync(t, tb, r, true)
}

func wantInSync(t *testing.T, tb *Table, r Ruleset, want bool) {
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

func TestPrivilegedSyncIdempotent(t *testing.T) {
	tb, _ := openTable(t)
	r := Ruleset{Networks: []Network{blue, red, green}}
	wantInSync(t, tb, r, false) // no table yet
	mustSync(t, tb, r)
	mustSync(t, tb, r)

	// A different ruleset is not in sync; syncing it replaces the table.
	r2 := Ruleset{Networks: []Network{blue}}
	wantInSync(t, tb, r2, false)
	mustSync(t, tb, r2)
	wantInSync(t, tb, r, false)
	mustSync(t, tb, Ruleset{})
	wantInSync(t, tb, r2, false)

	if err := tb.Delete(); err != nil {
		t.Fatal(err)
	}
	wantInSync(t, tb, Ruleset{}, false)
	if err := tb.Delete(); err != nil {
		t.Fatalf("second Delete: %v", err)
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
	r := Ruleset{Networks: []Network{blue, red, green}}
	tbl := podnetTable()
	set := func(name string) *nftables.Set {
		s, err := otherConn(t, ns).GetSetByName(tbl, name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		change func(c *nftables.Conn)
	}{
		{"flush table", func(c *nftables.Conn) { c.FlushTable(tbl) }},
		{"delete table", func(c *nftables.Conn) { c.DelTable(tbl) }},
		{"flush chain", func(c *nftables.Conn) { c.FlushChain(&nftables.Chain{Name: chainPostrouting, Table: tbl}) }},
		{"delete chain", func(c *nftables.Conn) {
			c.FlushChain(&nftables.Chain{Name: chainForward, Table: tbl})
			c.DelChain(&nftables.Chain{Name: chainForward, Table: tbl})
		}},
		{"extra chain", func(c *nftables.Conn) { c.AddChain(&nftables.Chain{Name: "extra", Table: tbl}) }},
		{"extra rule", func(c *nftables.Conn) {
			c.AddRule(&nftables.Rule{Table: tbl, Chain: &nftables.Chain{Name: chainForward}, Exprs: []expr.Any{
				&expr.Verdict{Kind: expr.VerdictAccept},
			}})
		}},
		{"replaced rule", func(c *nftables.Conn) {
			c.FlushChain(&nftables.Chain{Name: chainForward, Table: tbl})
			c.AddRule(&nftables.Rule{Table: tbl, Chain: &nftables.Chain{Name: chainForward}, Exprs: []expr.Any{
				&expr.Verdict{Kind: expr.VerdictAccept},
			}})
		}},
		{"flush set", func(c *nftables.Conn) { c.FlushSet(set(setBridges)) }},
		{"delete interval element", func(c *nftables.Conn) {
			s := set(setMasq4)
			if err := c.SetDeleteElements(s, build(r).sets[2].elems[0].kernelElems()); err != nil {
				t.Fatal(err)
			}
		}},
		{"extra element", func(c *nftables.Conn) {
			if err := c.SetAddElements(set(setBridgePairs), []nftables.SetElement{
				{Key: append(ifnameKey("pn-red"), ifnameKey("pn-blue")...)},
			}); err != nil {
				t.Fatal(err)
			}
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
	s := &nftables.Set{Table: other, Name: setBridges, KeyType: nftables.TypeIFName}
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

// Thousands of networks need many element messages and a large socket buffer.
func TestPrivilegedManyNetworks(t *testing.T) {
	tb, _ := openTable(t)
	var nets []Network
	for i := range 5000 {
		a4 := netip.AddrFrom4([4]byte{10, byte(i >> 7), byte(i << 1), 0})
		a6 := netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)})
		nets = append(nets, Network{
			Name:       fmt.Sprintf("network-with-a-long-name-%05d", i),
			Bridge:     fmt.Sprintf("pn-%05d", i),
			Subnets:    []netip.Prefix{netip.PrefixFrom(a4, 24), netip.PrefixFrom(a6, 64)},
			Masquerade: i%2 == 0,
		})
	}
	r := Ruleset{Networks: nets}
	start := time.Now()
	if err := tb.Sync(r); err != nil {
		t.Fatal(err)
	}
	synced := time.Since(start)
	start = time.Now()
	wantInSync(t, tb, r, true)
	t.Logf("5000 networks: Sync %v, InSync %v", synced, time.Since(start))
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
