package ipam_test

import (
	"fmt"
	"net/netip"
	"strings"
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

// Pod ranges (api.Node.PodCIDRs): a node claims its new blocks of a subnet they cover
// only inside them, lowest free first, and runs out when they are full; blocks it holds
// already are used first; a requested address claims its block wherever it is; a node
// without ranges there keeps out of the others' ranges; a subnet the ranges do not
// touch is claimed as without them; a range smaller than a block is refused.
func TestAllocateOnNodePodCIDRs(t *testing.T) {
	nw, err := spec.Canonicalize(api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.0.0/16", "fd88::/64"}, CrossNode: api.CrossNodeVXLAN, BlockSize: 26})
	if err != nil {
		t.Fatal(err)
	}
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	st := storetest.NewMemory()
	defer st.Close()
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	err = st.Update(func(tx store.Tx) error {
		if err := tx.PutNetwork(nw); err != nil {
			return err
		}
		// n1 holds a block from before it had a range; n3's range is the lowest blocks.
		if err := tx.PutBlock(api.Block{Network: "blue", Prefix: p("10.88.9.0/26"), Node: "n1", Claimed: now}); err != nil {
			return err
		}
		for _, n := range []api.Node{
			{Name: "n1", IP: a("192.0.2.1"), PodCIDRs: []netip.Prefix{p("10.88.5.128/25")}, Source: api.SourceKubernetes},
			{Name: "n3", PodCIDRs: []netip.Prefix{p("10.88.0.0/25")}, Source: api.SourceKubernetes},
			{Name: "small", PodCIDRs: []netip.Prefix{p("10.88.7.0/28")}, Source: api.SourceKubernetes},
		} {
			if err := tx.PutNode(n); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	alloc := func(node, owner string, static ...netip.Addr) ([]netip.Prefix, error) {
		var got []netip.Prefix
		err := st.Update(func(tx store.Tx) (err error) {
			got, err = ipam.AllocateOnNode(tx, nw, node, owner, static, now)
			return err
		})
		return got, err
	}
	blocksOf := func(node string) []string {
		var out []string
		st.View(func(tx store.Tx) error {
			bs, err := tx.Blocks("blue")
			for _, b := range bs {
				if b.Node == node {
					out = append(out, b.Prefix.String())
				}
			}
			return err
		})
		return out
	}

	// n1: its old block first (its 64 addresses), then the blocks of its range, lowest
	// first; in the IPv6 subnet, which its range does not touch, the lowest free block
	// as without a range.
	for i := range 64 {
		got, err := alloc("n1", fmt.Sprintf("old%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if !p("10.88.9.0/26").Contains(got[0].Addr()) {
			t.Fatalf("n1's allocation %d: %s, outside the block it holds", i, got[0])
		}
		if i == 0 && got[1].Addr() != a("fd88::2") {
			t.Fatalf("n1's first IPv6 address: %s, want fd88::2 (after the gateway)", got[1])
		}
	}
	got, err := alloc("n1", "r0")
	if err != nil || got[0].Addr() != a("10.88.5.129") {
		t.Fatalf("n1 once its old block is full: %v, %v; want 10.88.5.129 (its range's lowest block)", got, err)
	}
	// A requested address outside its range claims its block as before (a block n1
	// holds from now on, which it fills too before it runs out).
	if got, err := alloc("n1", "s0", a("10.88.200.5")); err != nil || got[0].Addr() != a("10.88.200.5") {
		t.Fatalf("n1's requested address: %v, %v", got, err)
	}
	for i := 1; ; i++ {
		if _, err := alloc("n1", fmt.Sprintf("r%d", i)); err != nil {
			if api.ErrorCode(err) != api.CodePoolExhausted || !strings.Contains(err.Error(), `node "n1"`) || !strings.Contains(err.Error(), "podCIDRs 10.88.5.128/25") {
				t.Fatalf("n1 with its range full: %v (code %d), want CodePoolExhausted naming n1 and its podCIDRs", err, api.ErrorCode(err))
			}
			break
		}
		if i > 128+63 {
			t.Fatal("n1 never ran out of addresses", blocksOf("n1"))
		}
	}
	want := []string{"10.88.5.128/26", "10.88.5.192/26", "10.88.9.0/26", "10.88.200.0/26"}
	if got := blocksOf("n1"); len(got) < 4 || fmt.Sprint(got[:4]) != fmt.Sprint(want) {
		t.Errorf("n1's IPv4 blocks %v, want %v", got, want)
	}

	// n2, without a range: the lowest free block outside n1's and n3's ranges.
	if got, err := alloc("n2", "b0"); err != nil || got[0].Addr() != a("10.88.0.129") {
		t.Fatalf("n2's first address: %v, %v; want 10.88.0.129, past n3's range 10.88.0.0/25", got, err)
	}
	// n3: inside its range, from its start.
	if got, err := alloc("n3", "c0"); err != nil || got[0].Addr() != a("10.88.0.2") {
		t.Fatalf("n3's first address: %v, %v; want 10.88.0.2 (the network address and the gateway are reserved)", got, err)
	}
	// A range smaller than a block.
	_, err = alloc("small", "d0")
	if api.ErrorCode(err) != api.CodeInvalidConfig || !strings.Contains(err.Error(), `node "small": podCIDR 10.88.7.0/28 is smaller than the network's blocks of /26`) {
		t.Errorf("a range smaller than a block: %v (code %d)", err, api.ErrorCode(err))
	}
}
