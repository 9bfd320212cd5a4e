package storetest

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/store"
)

// ConcurrentAllocation races updates on two handles a and b of the same empty data:
// two connections to one etcd prefix, or one store passed twice. Goroutines on both
// allocate and release addresses through ipam in a network small enough that the
// cursors wrap around, then increment a shared counter. It checks that no address is
// held twice, that the store holds exactly what the successful updates left (no lost
// update), and that both handles read the same state.
func ConcurrentAllocation(t *testing.T, a, b store.Store) {
	const (
		workers = 4 // per handle
		rounds  = 6 // allocations per worker
		keep    = 2 // a worker releases what it allocated keep rounds ago
	)
	nw := SampleNetwork("race")
	// 29 and 62 free addresses: fewer than the 48 allocations, more than the at most
	// 2*workers*(keep+1) held at once.
	nw.Subnets = []api.Subnet{
		{Prefix: netip.MustParsePrefix("10.89.0.0/27"), Gateway: netip.MustParseAddr("10.89.0.1")},
		{Prefix: netip.MustParsePrefix("fd00:89::/122"), Gateway: netip.MustParseAddr("fd00:89::1")},
	}
	update(t, a, func(tx store.Tx) error { return tx.PutNetwork(nw) })

	var (
		// mu guards held and errs.
		mu   sync.Mutex
		held = make(map[string][]netip.Addr) // owner -> addresses, for the owners not released
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	allocate := func(s store.Store, owner string) ([]netip.Addr, error) {
		var got []netip.Prefix
		err := s.Update(func(tx store.Tx) error {
			n, ok, err := tx.Network(nw.Name)
			if err != nil {
				return err
			}
			if !ok {
				return errors.New("network vanished")
			}
			got, err = ipam.Allocate(tx, n, owner, nil)
			return err
		})
		var addrs []netip.Addr
		for _, p := range got {
			addrs = append(addrs, p.Addr())
		}
		return addrs, err
	}
	release := func(s store.Store, owner string) ([]netip.Addr, error) {
		var freed []netip.Addr
		err := s.Update(func(tx store.Tx) error {
			var err error
			freed, err = ipam.Release(tx, nw.Name, owner)
			return err
		})
		return freed, err
	}

	var wg sync.WaitGroup
	for h, s := range []store.Store{a, b} {
		for w := range workers {
			wg.Go(func() {
				owner := func(i int) string { return fmt.Sprintf("h%d/w%d/%d", h, w, i) }
				mine := make(map[string][]netip.Addr)
				for i := range rounds {
					addrs, err := allocate(s, owner(i))
					if err != nil {
						fail(fmt.Errorf("allocate for %s: %w", owner(i), err))
						return
					}
					if len(addrs) != 2 {
						fail(fmt.Errorf("allocate for %s: got %v; want one address per subnet", owner(i), addrs))
						return
					}
					mine[owner(i)] = addrs
					if i < keep {
						continue
					}
					old := owner(i - keep)
					freed, err := release(s, old)
					if err != nil {
						fail(fmt.Errorf("release %s: %w", old, err))
						return
					}
					if !slices.Equal(freed, sorted(mine[old])) {
						fail(fmt.Errorf("release %s freed %v; it was given %v", old, freed, mine[old]))
					}
					delete(mine, old)
				}
				mu.Lock()
				defer mu.Unlock()
				for o, addrs := range mine {
					held[o] = addrs
				}
			})
		}
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		return
	}

	want := make(map[netip.Addr]string)
	for o, addrs := range held {
		for _, addr := range addrs {
			if other, dup := want[addr]; dup {
				t.Errorf("address %s handed out to %s and %s", addr, other, o)
			}
			want[addr] = o
		}
	}
	for i, s := range []store.Store{a, b} {
		view(t, s, func(tx store.Tx) error {
			got, err := tx.Allocations(nw.Name)
			if err != nil {
				return err
			}
			mustEqual(t, fmt.Sprintf("allocations read through handle %d", i), got, want)
			for h := range 2 {
				for w := range workers {
					for r := range rounds {
						o := fmt.Sprintf("h%d/w%d/%d", h, w, r)
						of, err := tx.AllocationsOf(nw.Name, o)
						if err != nil {
							return err
						}
						if !slices.Equal(of, sorted(held[o])) {
							t.Errorf("addresses of %s read through handle %d = %v; want %v", o, i, of, sorted(held[o]))
						}
					}
				}
			}
			return nil
		})
	}

	counter(t, a, b)
}

// counter has goroutines on both handles increment the network's MTU with
// read-modify-write updates: an update lost to a race shows in the final count.
func counter(t *testing.T, a, b store.Store) {
	const perHandle = 8
	var start int
	view(t, a, func(tx store.Tx) error {
		n, _, err := tx.Network("race")
		start = n.MTU
		return err
	})
	var wg sync.WaitGroup
	errs := make(chan error, 2*perHandle)
	for _, s := range []store.Store{a, b} {
		for range perHandle {
			wg.Go(func() {
				errs <- s.Update(func(tx store.Tx) error {
					n, ok, err := tx.Network("race")
					if err != nil {
						return err
					}
					if !ok {
						return errors.New("network vanished")
					}
					n.MTU++
					return tx.PutNetwork(n)
				})
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("increment: %v", err)
		}
	}
	for i, s := range []store.Store{a, b} {
		view(t, s, func(tx store.Tx) error {
			n, _, err := tx.Network("race")
			if got, want := n.MTU, start+2*perHandle; got != want {
				t.Errorf("MTU read through handle %d after %d increments = %d; want %d", i, 2*perHandle, got, want)
			}
			return err
		})
	}
}

func sorted(addrs []netip.Addr) []netip.Addr {
	s := slices.Clone(addrs)
	slices.SortFunc(s, netip.Addr.Compare)
	return s
}
