package storetest

import (
	"context"
	"net/netip"
	"testing"

	"github.com/podnet/podnet/api"

	"github.com/podnet/podnet/internal/store"
)

func TestMemoryConformance(t *testing.T) {
	Conformance(t, func(t *testing.T) store.Store {
		m := NewMemory()
		t.Cleanup(func() {
			if err := m.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return m
	})
}

// TestMemoryViewSnapshot checks that a View keeps seeing the state it started with
// while an Update commits next to it.
func TestMemoryViewSnapshot(t *testing.T) {
	m := NewMemory()
	err := m.View(func(tx store.Tx) error {
		if err := m.Update(func(tx store.Tx) error { return tx.PutNetwork(SampleNetwork("red")) }); err != nil {
			t.Fatalf("update during view: %v", err)
		}
		if _, ok, err := tx.Network("red"); ok || err != nil {
			t.Errorf("view saw a network committed after it started: ok %v, err %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("view: %v", err)
	}
	err = m.View(func(tx store.Tx) error {
		if _, ok, err := tx.Network("red"); !ok || err != nil {
			t.Errorf("later view misses the committed network: ok %v, err %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("view: %v", err)
	}
}

func TestMemoryClosed(t *testing.T) {
	m := NewMemory()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.View(func(store.Tx) error { return nil }); err == nil {
		t.Error("View on a closed store: no error")
	}
	if err := m.Update(func(store.Tx) error { return nil }); err == nil {
		t.Error("Update on a closed store: no error")
	}
}

// TestMemoryWroteOnlyOnChange: the writes that fail or find nothing to delete leave a
// transaction clean, so that its Update wakes no watch; the others mark it.
func TestMemoryWroteOnlyOnChange(t *testing.T) {
	tx := &memTx{s: newMemState(), writable: true}
	p := netip.MustParsePrefix("10.88.0.0/26")
	for i, err := range []error{
		tx.DeleteNetwork("nosuch"),
		tx.DeleteEndpoint(api.EndpointKey{Network: "red", ContainerID: "c1", IfName: "eth0"}),
		tx.DeleteAllocation("red", netip.MustParseAddr("10.88.0.5")),
		tx.DeletePort("n1", "tcp", netip.Addr{}, 80),
		tx.PutPort("", "tcp", netip.Addr{}, 80, "o"),
		tx.DeleteService("default", "web"),
		tx.DeleteNode("n1"),
		tx.DeleteBGPPeer("tor1"),
		tx.PutBGPPeer(api.BGPPeer{}),
		tx.DeleteBlock("red", p),
		tx.PutBlock(api.Block{Network: "red", Prefix: p, Node: "n1"}), // no network red
		tx.PutNode(api.Node{}),
	} {
		if err == nil {
			t.Errorf("write %d succeeded; want an error", i)
		}
	}
	if tx.wrote {
		t.Error("writes that changed nothing marked the transaction written")
	}
	if err := tx.PutNode(api.Node{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	if !tx.wrote {
		t.Error("PutNode did not mark the transaction written")
	}
}

// TestMemoryCloneKeepsClusterState: a clone has the nodes and blocks, not the
// registrations, which lived in the process that is gone.
func TestMemoryCloneKeepsClusterState(t *testing.T) {
	m := NewMemory()
	p := netip.MustParsePrefix("10.88.0.0/26")
	err := m.Update(func(tx store.Tx) error {
		if err := tx.PutNetwork(SampleNetwork("red")); err != nil {
			return err
		}
		if err := tx.PutNode(sampleNode("n1", "192.0.2.1")); err != nil {
			return err
		}
		return tx.PutBlock(sampleBlock("red", p.String(), "n1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := m.Register(ctx, "n1", "192.0.2.1", testTTL); err != nil {
		t.Fatal(err)
	}
	c := m.Clone()
	err = c.View(func(tx store.Tx) error {
		if _, ok, err := tx.Node("n1"); !ok || err != nil {
			t.Errorf("node of the clone: ok %v, err %v; want found", ok, err)
		}
		if _, ok, err := tx.Block("red", p); !ok || err != nil {
			t.Errorf("block of the clone: ok %v, err %v; want found", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mustAlive(t, c, "on a clone")
	// The name is free in the clone: its registrations start empty.
	if _, err := c.Register(ctx, "n1", "192.0.2.9", testTTL); err != nil {
		t.Errorf("Register on the clone: %v", err)
	}
}
