// Package nfttest provides Fake, an in-memory nft.Applier for tests of code that keeps
// table inet podnet in sync (the agent's reconcile loop).
package nfttest

import (
	"slices"
	"sync"

	"github.com/podnet/podnet/internal/nft"
)

var _ nft.Applier = (*Fake)(nil)

// Fake is an nft.Applier that keeps the table as an nft.Ruleset in memory. Its zero value
// is an empty namespace (no table). It is safe for concurrent use.
type Fake struct {
	// mu guards all fields below.
	mu     sync.Mutex
	table  *nft.Ruleset // nil when the table does not exist
	last   *nft.Ruleset // last Ruleset passed to a successful Sync
	syncs  int
	broken bool // table changed behind podnet's back
	err    error
}

// Sync records r as the table's content. It validates r like nft.Table does.
func (f *Fake) Sync(r nft.Ruleset) error {
	if err := r.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	c := clone(r)
	f.table, f.last = &c, &c
	f.broken = false
	f.syncs++
	return nil
}

// InSync reports whether the table exists, was not Break-ed since the last Sync, and
// renders like r.
func (f *Fake) InSync(r nft.Ruleset) (bool, error) {
	if err := r.Validate(); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return false, f.err
	}
	if f.table == nil || f.broken {
		return false, nil
	}
	return nft.Render(*f.table) == nft.Render(r), nil
}

// Delete removes the table; it succeeds when there is none.
func (f *Fake) Delete() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.table = nil
	f.broken = false
	return nil
}

// Last returns the Ruleset of the last successful Sync, and whether there was one.
func (f *Fake) Last() (nft.Ruleset, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil {
		return nft.Ruleset{}, false
	}
	return clone(*f.last), true
}

// Syncs returns the number of successful Sync calls.
func (f *Fake) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// Dump returns nft.Render of the table, or "" when there is no table.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.table == nil {
		return ""
	}
	return nft.Render(*f.table)
}

// Break simulates someone changing the table behind podnet's back (nft flush table):
// InSync is false until the next Sync.
func (f *Fake) Break() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken = true
}

// SetErr makes every later Sync, InSync and Delete fail with err (nil restores success).
func (f *Fake) SetErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func clone(r nft.Ruleset) nft.Ruleset {
	r.Networks = slices.Clone(r.Networks)
	for i := range r.Networks {
		r.Networks[i].Subnets = slices.Clone(r.Networks[i].Subnets)
	}
	return r
}
