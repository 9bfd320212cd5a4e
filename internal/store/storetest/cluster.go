package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/store"
)

// The conformance of what clusters add: nodes, blocks, liveness and watches.

const (
	// testTTL is the lease of the registrations of the tests: long enough that a
	// loaded machine keeps it alive, short enough that etcd notices a takeover soon
	// (the client renews a lease every ttl/3).
	testTTL = 3 * time.Second
	// waitLimit bounds the waits for what happens eventually (a lease revoked, a
	// watch event): a bound against hanging, not a timing requirement.
	waitLimit = 10 * time.Second
)

func sampleNode(name, ip string) api.Node {
	return api.Node{Name: name, IP: netip.MustParseAddr(ip), Version: "v1.0.0", Registered: created}
}

func sampleBlock(network, prefix, node string) api.Block {
	return api.Block{Network: network, Prefix: netip.MustParsePrefix(prefix), Node: node, Claimed: created}
}

func testNodes(t *testing.T, s store.Store) {
	alive := sampleNode("a", "192.0.2.1")
	alive.Alive = true // not stored
	update(t, s, func(tx store.Tx) error {
		for _, n := range []api.Node{sampleNode("c", "192.0.2.3"), alive, sampleNode("b/x", "2001:db8::2"), sampleNode("b", "192.0.2.2")} {
			if err := tx.PutNode(n); err != nil {
				return err
			}
		}
		return nil
	})
	// Replaced, with what a source says of the node beside what its agent says.
	replaced := sampleNode("c", "192.0.2.33")
	replaced.Version = "v1.1.0"
	replaced.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")}
	replaced.InternalIP, replaced.Source = netip.MustParseAddr("192.0.2.133"), api.SourceKubernetes
	update(t, s, func(tx store.Tx) error { return tx.PutNode(replaced) })

	view(t, s, func(tx store.Tx) error {
		n, ok, err := tx.Node("a")
		if err != nil || !ok {
			t.Fatalf("Node(a) = ok %v, err %v; want found", ok, err)
		}
		mustEqual(t, "node a (Alive is not stored)", n, sampleNode("a", "192.0.2.1"))
		n, ok, err = tx.Node("c")
		if err != nil || !ok {
			t.Fatalf("Node(c) = ok %v, err %v; want found", ok, err)
		}
		mustEqual(t, "replaced node c", n, replaced)
		ns, err := tx.Nodes()
		if err != nil {
			t.Fatalf("Nodes: %v", err)
		}
		mustEqual(t, "nodes", ns, []api.Node{sampleNode("a", "192.0.2.1"), sampleNode("b", "192.0.2.2"), sampleNode("b/x", "2001:db8::2"), replaced})
		return nil
	})

	update(t, s, func(tx store.Tx) error { return tx.DeleteNode("b") })
	err := s.Update(func(tx store.Tx) error { return tx.DeleteNode("b") })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteNode: %v; want ErrNotFound", err)
	}
	view(t, s, func(tx store.Tx) error {
		if _, ok, err := tx.Node("b"); ok || err != nil {
			t.Errorf("deleted node: ok %v, err %v; want gone", ok, err)
		}
		ns, err := tx.Nodes()
		if err != nil {
			return err
		}
		mustEqual(t, "nodes after a delete", nodeNames(ns), []string{"a", "b/x", "c"})
		return nil
	})
}

func nodeNames(ns []api.Node) []string {
	var names []string
	for _, n := range ns {
		names = append(names, n.Name)
	}
	return names
}

func blockNames(bs []api.Block) []string {
	var names []string
	for _, b := range bs {
		names = append(names, b.Network+" "+b.Prefix.String())
	}
	return names
}

func testBlocks(t *testing.T, s store.Store) {
	putNetworks(t, s, "red", "blue", "r/x")
	// Put out of order; listings come back sorted by network, then prefix (IPv4
	// before IPv6, also where the raw bytes of the addresses sort the other way).
	blocks := []api.Block{
		sampleBlock("red", "fd00:88::/122", "n1"),
		sampleBlock("red", "10.88.1.0/26", "n2"),
		sampleBlock("red", "254.1.0.0/26", "n2"),
		sampleBlock("red", "::ffff:10.88.0.0/122", "n3"),
		sampleBlock("red", "10.88.0.64/26", "n1"),
		sampleBlock("r/x", "10.88.0.0/26", "n3"),
		sampleBlock("blue", "10.88.0.0/26", "n3"),
	}
	update(t, s, func(tx store.Tx) error {
		for _, b := range blocks {
			if err := tx.PutBlock(b); err != nil {
				return err
			}
		}
		return nil
	})
	// Claimed by another node.
	moved := sampleBlock("red", "10.88.0.64/26", "n9")
	moved.Claimed = created.Add(time.Hour)
	update(t, s, func(tx store.Tx) error { return tx.PutBlock(moved) })

	view(t, s, func(tx store.Tx) error {
		b, ok, err := tx.Block("red", netip.MustParsePrefix("10.88.1.0/26"))
		if err != nil || !ok {
			t.Fatalf("Block(red, 10.88.1.0/26) = ok %v, err %v; want found", ok, err)
		}
		mustEqual(t, "block red 10.88.1.0/26", b, blocks[1])
		b, ok, err = tx.Block("red", moved.Prefix)
		if err != nil || !ok {
			t.Fatalf("Block(red, %s) = ok %v, err %v; want found", moved.Prefix, ok, err)
		}
		mustEqual(t, "block claimed again", b, moved)
		if _, ok, err := tx.Block("blue", netip.MustParsePrefix("10.88.1.0/26")); ok || err != nil {
			t.Errorf("Block(blue, 10.88.1.0/26): ok %v, err %v; want free", ok, err)
		}

		inRed, err := tx.Blocks("red")
		if err != nil {
			t.Fatalf("Blocks(red): %v", err)
		}
		mustEqual(t, "blocks of red", blockNames(inRed), []string{
			"red 10.88.0.64/26", "red 10.88.1.0/26", "red 254.1.0.0/26", "red ::ffff:10.88.0.0/122", "red fd00:88::/122",
		})
		mustEqual(t, "first block of red", inRed[0], moved)
		all, err := tx.Blocks("")
		if err != nil {
			t.Fatalf("Blocks(\"\"): %v", err)
		}
		mustEqual(t, "all blocks", blockNames(all), []string{
			"blue 10.88.0.0/26", "r/x 10.88.0.0/26",
			"red 10.88.0.64/26", "red 10.88.1.0/26", "red 254.1.0.0/26", "red ::ffff:10.88.0.0/122", "red fd00:88::/122",
		})
		mustEqual(t, "block of r/x", all[1], blocks[5])
		if none, err := tx.Blocks("nosuch"); len(none) != 0 || err != nil {
			t.Errorf("Blocks(nosuch) = %v, %v; want none", none, err)
		}
		return nil
	})

	// Releasing a block; deleting a node leaves its blocks (they are released one by one).
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutNode(sampleNode("n2", "192.0.2.2")); err != nil {
			return err
		}
		return tx.DeleteBlock("red", netip.MustParsePrefix("10.88.1.0/26"))
	})
	update(t, s, func(tx store.Tx) error { return tx.DeleteNode("n2") })
	err := s.Update(func(tx store.Tx) error { return tx.DeleteBlock("red", netip.MustParsePrefix("10.88.1.0/26")) })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteBlock: %v; want ErrNotFound", err)
	}
	view(t, s, func(tx store.Tx) error {
		inRed, err := tx.Blocks("red")
		if err != nil {
			return err
		}
		mustEqual(t, "blocks of red after a release and a node deletion", blockNames(inRed), []string{
			"red 10.88.0.64/26", "red 254.1.0.0/26", "red ::ffff:10.88.0.0/122", "red fd00:88::/122",
		})
		return nil
	})
}

// testBlockClaimRace has claimers race for the same free block, each in an Update
// that reads the block and claims it when free: exactly one wins, the others see it
// taken, and the block is the winner's.
func testBlockClaimRace(t *testing.T, s store.Store) {
	putNetworks(t, s, "red")
	const claimers = 8
	errTaken := errors.New("block taken")
	for _, prefix := range []string{"10.88.0.0/26", "10.88.0.64/26", "fd00:88::/122"} {
		p := netip.MustParsePrefix(prefix)
		start := make(chan struct{})
		errs := make([]error, claimers)
		var wg sync.WaitGroup
		for i := range claimers {
			wg.Go(func() {
				<-start
				errs[i] = s.Update(func(tx store.Tx) error {
					if _, ok, err := tx.Block("red", p); err != nil {
						return err
					} else if ok {
						return errTaken
					}
					return tx.PutBlock(sampleBlock("red", prefix, fmt.Sprintf("node%d", i)))
				})
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("block %s: claimed by node%d and node%d", p, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, errTaken):
				t.Errorf("block %s: claim of node%d: %v", p, i, err)
			}
		}
		if winner < 0 {
			t.Errorf("block %s: nobody claimed it", p)
			continue
		}
		view(t, s, func(tx store.Tx) error {
			b, ok, err := tx.Block("red", p)
			if want := fmt.Sprintf("node%d", winner); err != nil || !ok || b.Node != want {
				t.Errorf("block %s after the race = %+v, %v, %v; want claimed by %s", p, b, ok, err, want)
			}
			return nil
		})
	}
}

func testRegister(t *testing.T, s store.Store) { RegisterAcross(t, s, s) }

func testRegisterInvalid(t *testing.T, s store.Store) {
	for _, c := range []struct {
		name, node, holder string
		ttl                time.Duration
	}{
		{"empty node name", "", "192.0.2.1", testTTL},
		{"empty holder", "n1", "", testTTL},
		{"zero ttl", "n1", "192.0.2.1", 0},
		{"negative ttl", "n1", "192.0.2.1", -time.Second},
	} {
		if _, err := s.Register(t.Context(), c.node, c.holder, c.ttl); err == nil {
			t.Errorf("Register with %s: no error", c.name)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Register(ctx, "n1", "192.0.2.1", testTTL); !errors.Is(err, context.Canceled) {
		t.Errorf("Register with a canceled ctx: %v; want context.Canceled", err)
	}
	mustAlive(t, s, "after refused registrations")
}

// testCloseEndsRegistrations: closing the store ends its registrations, which their
// callers learn from the lost channel.
func testCloseEndsRegistrations(t *testing.T, s store.Store) {
	lost := mustRegister(t, s, t.Context(), "n1", "192.0.2.1")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitClosed(t, lost, "lost channel of a registration of a closed store")
	if _, err := s.Register(t.Context(), "n2", "192.0.2.2", testTTL); err == nil {
		t.Error("Register on a closed store: no error")
	}
}

func mustRegister(t *testing.T, s store.Store, ctx context.Context, node, holder string) <-chan struct{} {
	t.Helper()
	lost, err := s.Register(ctx, node, holder, testTTL)
	if err != nil {
		t.Fatalf("Register(%s, %s): %v", node, holder, err)
	}
	return lost
}

// mustAlive checks that exactly nodes are alive.
func mustAlive(t *testing.T, s store.Store, what string, nodes ...string) {
	t.Helper()
	got, err := s.Alive()
	if err != nil {
		t.Fatalf("Alive %s: %v", what, err)
	}
	want := make(map[string]bool)
	for _, n := range nodes {
		want[n] = true
	}
	if !maps.Equal(got, want) {
		t.Errorf("Alive %s = %v; want %v", what, got, want)
	}
}

// waitClosed waits, at most waitLimit, for ch to be closed.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("%s not closed within %s", what, waitLimit)
	}
}

// waitFor polls cond until it holds, at most waitLimit.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RegisterAcross checks node liveness through two handles a and b of the same data
// (two connections to one etcd prefix, or one store passed twice): what one
// registers, both see alive; another holder of the name is refused through either;
// the same holder takes the name over through the other handle (an agent restarted),
// which ends the first registration and closes its lost channel; and when the ctx of
// a registration ends, the node is soon no longer alive.
func RegisterAcross(t *testing.T, a, b store.Store) {
	ctx := t.Context()
	ctx1, cancel1 := context.WithCancel(ctx)
	defer cancel1()
	lost1 := mustRegister(t, a, ctx1, "n1", "192.0.2.1")
	ctx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	lost2 := mustRegister(t, a, ctx2, "n2", "192.0.2.2")
	mustAlive(t, a, "through the handle that registered", "n1", "n2")
	mustAlive(t, b, "through the other handle", "n1", "n2")

	for i, s := range []store.Store{a, b} {
		_, err := s.Register(ctx, "n1", "192.0.2.9", testTTL)
		if !errors.Is(err, store.ErrNodeTaken) {
			t.Errorf("Register of a live node by another holder through handle %d: %v; want ErrNodeTaken", i, err)
		} else if !strings.Contains(err.Error(), `"n1"`) || !strings.Contains(err.Error(), "192.0.2.1") {
			t.Errorf("error %q does not name the node and its holder", err)
		}
	}
	mustAlive(t, b, "after refused registrations", "n1", "n2")

	ctx3, cancel3 := context.WithCancel(ctx)
	defer cancel3()
	lost3 := mustRegister(t, b, ctx3, "n1", "192.0.2.1")
	waitClosed(t, lost1, "lost channel of a registration taken over")
	mustAlive(t, a, "after a takeover", "n1", "n2")

	cancel3()
	waitFor(t, "n1 dead once the ctx of its registration ended", func() (bool, error) {
		alive, err := a.Alive()
		return !alive["n1"] && alive["n2"], err
	})
	select {
	case <-lost3:
		t.Error("lost channel closed when the registration's own ctx ended")
	default:
	}

	ctx4, cancel4 := context.WithCancel(ctx)
	defer cancel4()
	mustRegister(t, a, ctx4, "n1", "192.0.2.9")
	mustAlive(t, b, "after another holder took the free name", "n1", "n2")
	select {
	case <-lost2:
		t.Error("lost channel of n2 closed; nothing ended that registration")
	default:
	}
}

// WatchAcross checks that a watch through handle a reports the changes made through
// handle b (another connection to the same etcd prefix, or the same store): updates,
// a registration and its end, a network deletion; and that the calls of fn never
// overlap.
func WatchAcross(t *testing.T, a, b store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	calls := make(chan struct{}, 1)
	var running, overlapped atomic.Bool
	err := a.Watch(ctx, func() {
		if !running.CompareAndSwap(false, true) {
			overlapped.Store(true)
			return
		}
		defer running.Store(false)
		select {
		case calls <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}

	rctx, rcancel := context.WithCancel(t.Context())
	defer rcancel()
	steps := []struct {
		what string
		do   func()
	}{
		{"an Update", func() { putNetworks(t, b, "red") }},
		{"a claimed block", func() {
			update(t, b, func(tx store.Tx) error { return tx.PutBlock(sampleBlock("red", "10.88.0.0/26", "n1")) })
		}},
		{"a BGP peer", func() {
			update(t, b, func(tx store.Tx) error { return tx.PutBGPPeer(samplePeer("tor1", "192.0.2.254")) })
		}},
		{"the BGP settings", func() {
			update(t, b, func(tx store.Tx) error { return tx.PutBGPConfig(api.BGPConfig{ASN: api.DefaultASN}) })
		}},
		{"a published port", func() {
			update(t, b, func(tx store.Tx) error { return tx.PutPort("n1", "tcp", netip.Addr{}, 80, "red/c1/eth0") })
		}},
		{"a BGP peer deletion", func() { update(t, b, func(tx store.Tx) error { return tx.DeleteBGPPeer("tor1") }) }},
		{"a network policy", func() {
			update(t, b, func(tx store.Tx) error { return tx.PutNetworkPolicy(samplePolicy("default", "deny")) })
		}},
		{"a network policy deletion", func() {
			update(t, b, func(tx store.Tx) error { return tx.DeleteNetworkPolicy("default", "deny") })
		}},
		{"a namespace", func() {
			update(t, b, func(tx store.Tx) error { return tx.PutNamespace(sampleNamespace("default")) })
		}},
		{"a namespace deletion", func() { update(t, b, func(tx store.Tx) error { return tx.DeleteNamespace("default") }) }},
		{"a pod", func() {
			update(t, b, func(tx store.Tx) error { return tx.PutPod(samplePod("default", "web-0")) })
		}},
		{"a pod deletion", func() { update(t, b, func(tx store.Tx) error { return tx.DeletePod("default", "web-0") }) }},
		{"a registration", func() { mustRegister(t, b, rctx, "n1", "192.0.2.1") }},
		{"the end of the registration", rcancel},
		{"a network deletion", func() { update(t, b, func(tx store.Tx) error { return tx.DeleteNetwork("red") }) }},
	}
	for _, st := range steps {
		select {
		case <-calls: // a call for an earlier step
		default:
		}
		st.do()
		select {
		case <-calls:
		case <-time.After(waitLimit):
			t.Fatalf("fn not called within %s after %s", waitLimit, st.what)
		}
	}
	if overlapped.Load() {
		t.Error("fn called while a call of it was running")
	}
}
