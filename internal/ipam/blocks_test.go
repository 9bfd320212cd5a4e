package ipam_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/storetest"
)

// Blocks: each node allocates inside its own blocks, claims the lowest free block when
// its blocks are full, and a requested address is handed out wherever its block is (and
// claims its block when nobody holds it).
func TestAllocateOnNode(t *testing.T) {
	nw, err := spec.Canonicalize(api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.0.0/24"}, CrossNode: api.CrossNodeVXLAN, BlockSize: 26})
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.NewMemory()
	defer st.Close()
	if err := st.Update(func(tx store.Tx) error { return tx.PutNetwork(nw) }); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	alloc := func(node, owner string, static ...netip.Addr) (netip.Addr, error) {
		var got []netip.Prefix
		err := st.Update(func(tx store.Tx) (err error) {
			got, err = ipam.AllocateOnNode(tx, nw, node, owner, static, now)
			return err
		})
		if err != nil {
			return netip.Addr{}, err
		}
		return got[0].Addr(), nil
	}
	owners := func() map[string]string {
		out := map[string]string{}
		st.View(func(tx store.Tx) error {
			bs, err := tx.Blocks("blue")
			for _, b := range bs {
				out[b.Prefix.String()] = b.Node
			}
			return err
		})
		return out
	}
	// n1's first block is 10.88.0.0/26 without the network address and the gateway: 62.
	for i := range 62 {
		a, err := alloc("n1", fmt.Sprintf("a%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if !netip.MustParsePrefix("10.88.0.0/26").Contains(a) {
			t.Fatalf("n1's allocation %d: %s, outside its first block", i, a)
		}
	}
	b, err := alloc("n2", "b0")
	if err != nil || b != netip.MustParseAddr("10.88.0.65") {
		t.Fatalf("n2's first address: %s, %v; want 10.88.0.65, after the start of the next free block", b, err)
	}
	a, err := alloc("n1", "a62")
	if err != nil || a != netip.MustParseAddr("10.88.0.129") {
		t.Fatalf("n1's address once its block is full: %s, %v; want 10.88.0.129 (a new block)", a, err)
	}
	// A requested address in n2's block is handed out to n1's endpoint; one in the free
	// block claims it for n1.
	if a, err := alloc("n1", "s1", netip.MustParseAddr("10.88.0.70")); err != nil || a != netip.MustParseAddr("10.88.0.70") {
		t.Fatalf("static address in n2's block: %s, %v", a, err)
	}
	if _, err := alloc("n1", "s2", netip.MustParseAddr("10.88.0.200")); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"10.88.0.0/26": "n1", "10.88.0.64/26": "n2", "10.88.0.128/26": "n1", "10.88.0.192/26": "n1"}
	if got := owners(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("blocks %v, want %v", got, want)
	}
	// Every block claimed, n2's full: the pool is exhausted for n2 with a clear error.
	for i := 1; ; i++ {
		if _, err := alloc("n2", fmt.Sprintf("b%d", i)); err != nil {
			if api.ErrorCode(err) != api.CodePoolExhausted {
				t.Fatalf("n2 with every block taken: %v (code %d), want CodePoolExhausted", err, api.ErrorCode(err))
			}
			break
		}
		if i > 64 {
			t.Fatal("n2 never ran out of addresses")
		}
	}
}
