package ipam_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// BenchmarkAllocate: one allocation and its release, in the bbolt store, in a network
// that holds 100 or 10,000 addresses already (inside one transaction: the commit's
// fsync is not the subject). go test ./internal/ipam -run '^$' -bench Allocate
func BenchmarkAllocate(b *testing.B) {
	for _, held := range []int{100, 10000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			s, err := store.OpenBolt(filepath.Join(b.TempDir(), "podnet.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			n, err := spec.Canonicalize(api.NetworkSpec{Name: "big", Subnets: []string{"10.64.0.0/14"}})
			if err != nil {
				b.Fatal(err)
			}
			err = s.Update(func(tx store.Tx) error {
				if err := tx.PutNetwork(n); err != nil {
					return err
				}
				for i := range held {
					if _, err := ipam.Allocate(tx, n, fmt.Sprintf("held-%d", i), nil); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			err = s.Update(func(tx store.Tx) error {
				for b.Loop() {
					if _, err := ipam.Allocate(tx, n, "new", nil); err != nil {
						return err
					}
					if _, err := ipam.Release(tx, n.Name, "new"); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
