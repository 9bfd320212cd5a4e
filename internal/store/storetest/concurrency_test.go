package storetest_test

import (
	"path/filepath"
	"testing"

	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/storetest"
)

// One handle passed twice: these stores have one handle per process.

func TestMemoryConcurrentAllocation(t *testing.T) {
	m := storetest.NewMemory()
	storetest.ConcurrentAllocation(t, m, m)
}

func TestBoltConcurrentAllocation(t *testing.T) {
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "podnet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	storetest.ConcurrentAllocation(t, b, b)
}
