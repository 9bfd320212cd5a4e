package etcdstore

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Hooks for the tests of package etcdstore_test.

// ReadEtcd makes the transactions of s read etcd, as when its mirror is stale.
func ReadEtcd(s *Store) { s.mirror.off.Store(true) }

// DistrustProgress makes the mirror of s ignore the revision of progress
// notifications, as it does with an etcd that may send them before the events.
func DistrustProgress(s *Store) { s.mirror.trustProgress.Store(false) }

// HoldMirror stops the mirror of s from applying what its watch delivers until
// release is called (once or more).
func HoldMirror(s *Store) (release func()) {
	s.mirror.hold.Lock()
	return sync.OnceFunc(s.mirror.hold.Unlock)
}

// MirrorRevision is the revision the mirror of s has reached.
func MirrorRevision(s *Store) int64 {
	s.mirror.mu.Lock()
	defer s.mirror.mu.Unlock()
	return s.mirror.rev
}

// check verifies the order of the keys and the heap order of the priorities of n
// against want (key -> value) and returns the depth of the tree.
func check(t *testing.T, n *node, want map[string]string) int {
	t.Helper()
	var got []string
	var depth func(n *node) int
	depth = func(n *node) int {
		if n == nil {
			return 0
		}
		for _, c := range []*node{n.left, n.right} {
			if c != nil && c.prio > n.prio {
				t.Fatalf("node %q: child %q has a higher priority", n.kv.Key, c.kv.Key)
			}
		}
		dl := depth(n.left)
		got = append(got, string(n.kv.Key))
		if string(n.kv.Value) != want[string(n.kv.Key)] {
			t.Fatalf("key %q = %q; want %q", n.kv.Key, n.kv.Value, want[string(n.kv.Key)])
		}
		return 1 + max(dl, depth(n.right))
	}
	d := depth(n)
	if w := slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
		t.Fatalf("keys in order:\n got %q\nwant %q", got, w)
	}
	return d
}

func kvOf(k, v string, rev int64) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(k), Value: []byte(v), ModRevision: rev}
}

// TestTreap applies random puts and deletes to the tree and to a map, checking the
// tree after each against the map, and checks that the snapshots taken on the way
// never change.
func TestTreap(t *testing.T) {
	m := newMirror(nil, true)
	rnd := rand.New(rand.NewPCG(1, 2))
	want := make(map[string]string)
	var root *node
	type saved struct {
		root *node
		want map[string]string
	}
	var snaps []saved
	for i := range 5000 {
		k := fmt.Sprintf("k/%03d", rnd.IntN(400))
		if rnd.IntN(3) == 0 {
			delete(want, k)
			root = root.remove([]byte(k))
		} else {
			v := fmt.Sprint(i)
			want[k] = v
			root = root.put(kvOf(k, v, int64(i)), m.prio([]byte(k)))
		}
		if i%500 == 0 {
			check(t, root, want)
			snaps = append(snaps, saved{root, maps.Clone(want)})
		}
	}
	if d := check(t, root, want); d > 40 {
		t.Errorf("depth %d for %d keys", d, len(want))
	}
	for _, s := range snaps {
		check(t, s.root, s.want)
	}
	if root.remove([]byte("absent")) != root {
		t.Error("removing an absent key copied the tree")
	}
}

func TestTreapBuildAndList(t *testing.T) {
	m := newMirror(nil, true)
	var kvs []*mvccpb.KeyValue
	want := make(map[string]string)
	for _, p := range []string{"a/", "ab/", "b/", "b/c/"} {
		for i := range 50 {
			k := fmt.Sprintf("%s%02d", p, i)
			kvs = append(kvs, kvOf(k, k, 1))
			want[k] = k
		}
	}
	slices.SortFunc(kvs, func(a, b *mvccpb.KeyValue) int { return bytes.Compare(a.Key, b.Key) })
	root := build(kvs, m.prio)
	if d := check(t, root, want); d > 30 {
		t.Errorf("depth %d for %d keys", d, len(kvs))
	}
	snap := snapshot{root: root}
	for _, p := range []string{"a/", "ab/", "b/", "b/c/", "b/c/4", "c/", ""} {
		var got, exp []string
		for _, kv := range snap.list(p) {
			got = append(got, string(kv.Key))
		}
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if strings.HasPrefix(k, p) {
				exp = append(exp, k)
			}
		}
		if !slices.Equal(got, exp) {
			t.Errorf("list(%q):\n got %q\nwant %q", p, got, exp)
		}
	}
	if kvs := snap.get("b/c/07"); len(kvs) != 1 || string(kvs[0].Value) != "b/c/07" {
		t.Errorf("get(b/c/07) = %v", kvs)
	}
	if kvs := snap.get("b/c/"); kvs != nil {
		t.Errorf("get(b/c/) = %v; want nothing", kvs)
	}
	if build(nil, m.prio) != nil {
		t.Error("build of nothing is not empty")
	}
}

func TestProgressOrdered(t *testing.T) {
	for v, want := range map[string]bool{
		"3.4.23": false, "3.4.25": true, "3.5.7": false, "3.5.8": true, "3.5.21": true,
		"3.6.0": true, "3.6.0-rc.1": true, "3.7.3": true, "4.0.0": true, "3.4": false, "x": false,
	} {
		if got := progressOrdered(v); got != want {
			t.Errorf("progressOrdered(%q) = %v; want %v", v, got, want)
		}
	}
}
