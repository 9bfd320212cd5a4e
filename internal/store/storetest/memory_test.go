package storetest

import (
	"testing"

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
