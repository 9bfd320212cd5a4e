package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// errLocalClosed is returned by a closed LocalLiveness.
var errLocalClosed = errors.New("store is closed")

// LocalLiveness is the node liveness and change notification of a store that one
// process holds (Bolt, storetest.Memory): their Register, Alive and Watch. The zero
// value is ready to use.
//
// A registration lives in memory: it ends when the caller's ctx ends, when the same
// holder registers the node again (the new registration takes over), or when the
// LocalLiveness closes. Its lost channel is closed when it ends for any reason other
// than the caller's ctx: the caller, who did not end it, learns that it is gone.
// There is no lease to expire within one process, so ttl is only checked.
//
// A watcher's fn runs on a goroutine of its own, one call at a time; Notify marks the
// watcher pending and never blocks, so the changes made while fn runs coalesce into
// one more call.
type LocalLiveness struct {
	// mu guards closed, done, regs and watchers.
	mu       sync.Mutex
	closed   bool
	done     chan struct{} // closed by Close, made on first use
	regs     map[string]*localRegistration
	watchers map[*localWatcher]struct{}
}

type localRegistration struct {
	holder string
	lost   chan struct{}
	// stop detaches the end of the registration from the caller's ctx.
	stop func() bool
}

type localWatcher struct {
	pending chan struct{} // capacity 1: a change not yet reported
}

// doneLocked returns the channel that Close closes.
func (l *LocalLiveness) doneLocked() chan struct{} {
	if l.done == nil {
		l.done = make(chan struct{})
	}
	return l.done
}

// Register implements Store.Register in memory (see LocalLiveness).
func (l *LocalLiveness) Register(ctx context.Context, node, holder string, ttl time.Duration) (<-chan struct{}, error) {
	op := fmt.Sprintf("register node %q", node)
	if err := CheckRegistration(node, holder, ttl); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("%s: %w", op, errLocalClosed)
	}
	if old := l.regs[node]; old != nil {
		if old.holder != holder {
			return nil, fmt.Errorf("%s: held by %q: %w", op, old.holder, ErrNodeTaken)
		}
		// Taken over: the old registration ends, but not by its caller's ctx.
		old.stop()
		close(old.lost)
	}
	if l.regs == nil {
		l.regs = make(map[string]*localRegistration)
	}
	r := &localRegistration{holder: holder, lost: make(chan struct{})}
	l.regs[node] = r
	// When ctx is done already, the function runs at once on its own goroutine and
	// waits for mu.
	r.stop = context.AfterFunc(ctx, func() { l.unregister(node, r) })
	l.notifyLocked()
	return r.lost, nil
}

// unregister ends r because its caller's ctx ended; nothing when r was taken over or
// the LocalLiveness closed meanwhile.
func (l *LocalLiveness) unregister(node string, r *localRegistration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.regs[node] != r {
		return
	}
	delete(l.regs, node)
	l.notifyLocked()
}

// Alive implements Store.Alive: the nodes registered now.
func (l *LocalLiveness) Alive() (map[string]bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("alive nodes: %w", errLocalClosed)
	}
	alive := make(map[string]bool, len(l.regs))
	for node := range l.regs {
		alive[node] = true
	}
	return alive, nil
}

// Watch implements Store.Watch: fn is called after each Notify, and after each
// registration that starts or ends, until ctx ends or the LocalLiveness closes.
func (l *LocalLiveness) Watch(ctx context.Context, fn func()) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	w := &localWatcher{pending: make(chan struct{}, 1)}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("watch: %w", errLocalClosed)
	}
	if l.watchers == nil {
		l.watchers = make(map[*localWatcher]struct{})
	}
	l.watchers[w] = struct{}{}
	done := l.doneLocked()
	l.mu.Unlock()

	go func() {
		defer func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			delete(l.watchers, w)
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-w.pending:
				if ctx.Err() != nil {
					return
				}
				fn()
			}
		}
	}()
	return nil
}

// Notify tells the watchers that a change committed. It never blocks.
func (l *LocalLiveness) Notify() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.notifyLocked()
}

func (l *LocalLiveness) notifyLocked() {
	for w := range l.watchers {
		select {
		case w.pending <- struct{}{}:
		default: // a call is pending already: it reports this change too
		}
	}
}

// Close ends the registrations, closing their lost channels, and the watchers;
// calling it twice is harmless.
func (l *LocalLiveness) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	close(l.doneLocked())
	for _, r := range l.regs {
		r.stop()
		close(r.lost)
	}
	l.regs = nil
}
