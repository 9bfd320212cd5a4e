// Package portproxytest provides Fake, an in-memory portproxy.Applier for tests of the
// agent: it keeps the set of running mappings and reports every change it is asked for
// as a line of text, without listening anywhere.
package portproxytest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/podnet/podnet/internal/portproxy"
)

// Fake implements portproxy.Applier in memory. Its zero value is ready. Mappings are
// compared as given (the agent hands canonical ones).
type Fake struct {
	// Record, when set, is called with one line per change asked for (Add, Remove, Sync,
	// Close), before it is applied.
	Record func(line string)

	mu      sync.Mutex
	running []portproxy.Mapping
	taken   map[string]bool // "proto/port" that Add refuses, as a port held elsewhere would
	closed  bool
}

var _ portproxy.Applier = (*Fake)(nil)

// ErrInUse is what Add returns for a port that Take marked as held.
var ErrInUse = errors.New("address already in use")

// Take makes Add fail for proto/port, as a port bound by another process would.
func (f *Fake) Take(proto string, port uint16) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.taken == nil {
		f.taken = map[string]bool{}
	}
	f.taken[fmt.Sprintf("%s/%d", proto, port)] = true
}

func (f *Fake) record(format string, args ...any) {
	if f.Record != nil {
		f.Record(fmt.Sprintf(format, args...))
	}
}

// Add implements portproxy.Applier.
func (f *Fake) Add(m portproxy.Mapping) error {
	f.record("proxy add %s", m)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.taken[fmt.Sprintf("%s/%d", m.Protocol, m.HostPort)] {
		return fmt.Errorf("proxy %s: %w", m, ErrInUse)
	}
	if !slices.Contains(f.running, m) {
		f.running = append(f.running, m)
	}
	return nil
}

// Remove implements portproxy.Applier.
func (f *Fake) Remove(m portproxy.Mapping) error {
	f.record("proxy remove %s", m)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running = slices.DeleteFunc(f.running, func(o portproxy.Mapping) bool { return o == m })
	return nil
}

// Sync implements portproxy.Applier.
func (f *Fake) Sync(ms []portproxy.Mapping) error {
	f.record("proxy sync [%s]", mappingsText(ms))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running = slices.Clone(ms)
	return nil
}

// Close implements portproxy.Applier: the proxies stop.
func (f *Fake) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running, f.closed = nil, true
}

// Running returns the running mappings, sorted by their text.
func (f *Fake) Running() []portproxy.Mapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.running)
	slices.SortFunc(out, func(a, b portproxy.Mapping) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func mappingsText(ms []portproxy.Mapping) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.String())
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}
