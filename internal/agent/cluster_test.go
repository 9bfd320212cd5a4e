package agent

import (
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/kernel/kerneltest"
	"github.com/podnet/podnet/internal/nft/nfttest"
	"github.com/podnet/podnet/internal/portproxy/portproxytest"
	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/storetest"
)

// sharedStore is a store several agents of a test share: closing it through one of them
// does nothing (the test closes the memory store at its end).
type sharedStore struct{ store.Store }

func (sharedStore) Close() error { return nil }

func sharedMemoryStore(t *testing.T) store.Store {
	m := storetest.NewMemory()
	t.Cleanup(func() { m.Close() })
	return sharedStore{m}
}

// clusterAgent starts an agent of node name on a store shared with others, on fake
// appliers, with the clock *now; its kernel's overlay changes go to rec.
func clusterAgent(t *testing.T, st store.Store, name, ip string, now *time.Time, rec func(string)) *Agent {
	t.Helper()
	k := kerneltest.New()
	k.SetUnderlay(netip.MustParseAddr(ip), "eth0")
	for _, s := range []string{"c1", "c2"} {
		k.AddSandbox("/run/netns/" + s)
	}
	k.Record = func(line string) {
		if strings.HasPrefix(line, "overlay") && rec != nil {
			rec(name + ": " + line)
		}
	}
	a, err := New(Config{Store: st, Kernel: k, Tables: &nfttest.Fake{}, Proxy: &portproxytest.Fake{},
		Now: func() time.Time { return *now }, ReconcileInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		DNS: DNSConfig{Disable: true}, NodeName: name, NodeIP: netip.MustParseAddr(ip), Shared: true, BlockGrace: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Two nodes on one store: a network created on n1 is vxlan by default, with the MTU the
// underlay leaves; n2's ADD claims a block, which n1 routes to over n2's VTEP; n2's
// agent stops (its lease ends): n1 withdraws the route at once, keeps n2's blocks for the
// grace period, then releases the one without addresses and keeps the other.
func TestClusterDeadNodeBlocks(t *testing.T) {
	st := sharedMemoryStore(t)
	now := fakeNow
	var mu sync.Mutex
	var overlays []string
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		return overlays[len(overlays)-1]
	}
	n1 := clusterAgent(t, st, "n1", "192.0.2.1", &now, func(l string) { mu.Lock(); overlays = append(overlays, l); mu.Unlock() })
	defer n1.Close()
	n2 := clusterAgent(t, st, "n2", "192.0.2.2", &now, nil)

	blue, err := n1.CreateNetwork(api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	if blue.CrossNode != api.CrossNodeVXLAN || blue.MTU != 1450 {
		t.Fatalf("network on a shared store: crossNode %q, mtu %d; want vxlan, 1500-50", blue.CrossNode, blue.MTU)
	}
	res, err := n2.Attach(attachReq("blue", "c1"), -1)
	if err != nil {
		t.Fatal(err)
	}
	// The block of c1's address (which node's tunnel address took the first block
	// depends on which agent synced first).
	held := ipam.BlockOf(blue, res.IPs[0].Address.Addr()).String()
	// A second, empty block of n2's.
	empty := netip.MustParsePrefix("10.88.1.0/26")
	if err := st.Update(func(tx store.Tx) error {
		return tx.PutBlock(api.Block{Network: "blue", Prefix: empty, Node: "n2", Claimed: now})
	}); err != nil {
		t.Fatal(err)
	}
	if err := n1.syncCluster(); err != nil {
		t.Fatal(err)
	}
	if l := last(); !strings.Contains(l, "route "+held+" via 192.0.2.2") || !strings.Contains(l, "route 10.88.1.0/26 via 192.0.2.2") {
		t.Fatalf("n1's overlay with n2 alive: %s", l)
	}

	n2.Close() // its registration ends with it
	if err := n1.syncCluster(); err != nil {
		t.Fatal(err)
	}
	if l := last(); strings.Contains(l, "via 192.0.2.2") || strings.Contains(l, "fdb") {
		t.Errorf("n1's overlay once n2 is dead still leads to it: %s", l)
	}
	// n2's blocks (n1 holds one too: its tunnel address's), and the owners of addresses.
	blocks := func() []string {
		var out []string
		st.View(func(tx store.Tx) error {
			bs, err := tx.Blocks("blue")
			for _, b := range bs {
				if b.Node == "n2" {
					out = append(out, b.Node+" "+b.Prefix.String())
				}
			}
			return err
		})
		return out
	}
	owners := func() []string {
		var out []string
		st.View(func(tx store.Tx) error {
			allocs, err := tx.Allocations("blue")
			for _, o := range allocs {
				out = append(out, o)
			}
			return err
		})
		slices.Sort(out)
		return out
	}
	// The orphan sweep keeps the tunnel addresses of the nodes, dead ones too.
	if err := n1.releaseOrphanAllocations(); err != nil {
		t.Fatal(err)
	}
	if got, want := owners(), []string{"_tunnel/n1", "_tunnel/n2", "blue/c1/eth0"}; !slices.Equal(got, want) {
		t.Fatalf("owners of blue's addresses: %v, want %v", got, want)
	}
	now = now.Add(59 * time.Second)
	if err := n1.syncCluster(); err != nil {
		t.Fatal(err)
	}
	if got := blocks(); len(got) != 2 {
		t.Fatalf("blocks within the grace period: %v, want both of n2's", got)
	}
	now = now.Add(2 * time.Second)
	if err := n1.syncCluster(); err != nil {
		t.Fatal(err)
	}
	if got := blocks(); !slices.Equal(got, []string{"n2 " + held}) {
		t.Errorf("blocks after the grace period: %v, want only n2's block that holds an address", got)
	}
	if got, want := owners(), []string{"_tunnel/n1", "blue/c1/eth0"}; !slices.Equal(got, want) {
		t.Errorf("owners of blue's addresses after the grace period: %v, want %v (n2's tunnel address released)", got, want)
	}

	// node rm: refused for a live node; a dead one loses its block, its endpoint and the
	// address, and its record.
	if err := n1.RemoveNode("n1"); api.ErrorCode(err) != api.CodeBusy {
		t.Errorf("RemoveNode of the live n1: %v (code %d), want CodeBusy", err, api.ErrorCode(err))
	}
	if err := n1.RemoveNode("n2"); err != nil {
		t.Fatal(err)
	}
	if got := blocks(); len(got) != 0 {
		t.Errorf("blocks after node rm n2: %v", got)
	}
	eps, err := n1.AllEndpoints("blue")
	if err != nil || len(eps) != 0 {
		t.Errorf("endpoints after node rm n2: %v, %v", eps, err)
	}
	st.View(func(tx store.Tx) error {
		allocs, err := tx.Allocations("blue")
		if err != nil || len(allocs) != 1 || !slices.Contains(slices.Collect(maps.Values(allocs)), "_tunnel/n1") {
			t.Errorf("allocations after node rm n2: %v, %v; want n1's tunnel address only", allocs, err)
		}
		if _, ok, _ := tx.Node("n2"); ok {
			t.Error("n2's record after node rm")
		}
		return nil
	})
	if err := n1.RemoveNode("n2"); api.ErrorCode(err) != api.CodeNotFound {
		t.Errorf("RemoveNode of a removed node: %v (code %d), want CodeNotFound", err, api.ErrorCode(err))
	}
}
