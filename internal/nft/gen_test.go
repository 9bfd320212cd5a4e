package nft

import (
	"testing"

	"github.com/google/nftables"
)

// Generation changes with every batch committed in the namespace, podnet's or another
// tool's, and not with reads.
func TestPrivilegedGeneration(t *testing.T) {
	tb, ns := openTable(t)
	gen := func() uint32 {
		t.Helper()
		g, err := tb.Generation()
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g0 := gen()
	if g := gen(); g != g0 {
		t.Fatalf("generation moved from %d to %d without a change", g0, g)
	}
	mustSync(t, tb, full())
	g1 := gen()
	if g1 == g0 {
		t.Fatal("Sync did not change the generation")
	}
	wantInSync(t, tb, full(), true)
	if g := gen(); g != g1 {
		t.Fatalf("InSync changed the generation from %d to %d", g1, g)
	}
	if err := tb.Update(Delta{Endpoints: []Endpoint{{HostIf: "pnv-x", Addrs: addrs("10.88.2.9")}}}, Delta{}); err != nil {
		t.Fatal(err)
	}
	g2 := gen()
	if g2 == g1 {
		t.Fatal("Update did not change the generation")
	}
	// Another tool's table.
	c := otherConn(t, ns)
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "someone-else"})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if g := gen(); g == g2 {
		t.Fatal("another tool's commit did not change the generation")
	}
	tb.Close()
	if _, err := tb.Generation(); err != ErrClosed {
		t.Fatalf("Generation after Close = %v, want ErrClosed", err)
	}
}
