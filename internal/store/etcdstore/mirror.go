package etcdstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The mirror is this Store's copy of every key under its prefix, in memory, fed by one
// etcd watch; transactions read it instead of etcd (see the package doc, "Mirror").

const (
	// listPage is how many keys one Get of a (re)list asks for.
	listPage = 1000
	// progressEvery: a mirror that has heard nothing from etcd for this long asks for a
	// progress notification, which shows that its watch still works.
	progressEvery = time.Second
	// staleAfter: a mirror that has heard nothing from etcd for this long, not even an
	// answer to its progress requests, is stale: transactions read etcd instead.
	staleAfter = 3 * progressEvery
	// nudgeAfter is how long a transaction waits for the mirror to reach a revision
	// before it asks etcd for a progress notification; nudgeEvery, between two requests.
	nudgeAfter = 2 * time.Millisecond
	nudgeEvery = 100 * time.Millisecond
)

// mirror holds the keys of the store's prefix as they were at revision rev, in a
// persistent treap: a snapshot is its root, which later changes never modify.
type mirror struct {
	s *Store
	// trustProgress: etcd sends a progress notification only after the events up to
	// its revision (3.4.25, 3.5.8 and later), so that revision may become rev.
	trustProgress atomic.Bool
	seed          maphash.Seed
	nudges        chan struct{} // capacity 1: a progress request is wanted
	done          chan struct{} // closed when the goroutine of the watch has returned
	// off makes the transactions read etcd (tests); hold, held by a test, stops the
	// mirror from applying what its watch delivers.
	off  atomic.Bool
	hold sync.Mutex

	// mu guards root, rev, watching, heard, wctx, advanced and subs. Only the goroutine
	// of the watch (run, or Open before it starts) changes root and rev.
	mu       sync.Mutex
	root     *node
	rev      int64
	watching bool                 // a watch confirmed by etcd feeds the mirror
	heard    time.Time            // when etcd last answered the watch (zero: stale)
	wctx     context.Context      // ctx of the watch, for progress requests
	advanced chan struct{}        // closed and replaced whenever the fields above change
	subs     map[*subscriber]bool // Store.Watch callers
}

// snapshot is the mirror at revision rev.
type snapshot struct {
	root *node
	rev  int64
}

// get returns the key's value as a one-element slice, or nil when it is absent.
func (s snapshot) get(key string) []*mvccpb.KeyValue {
	k := []byte(key)
	for n := s.root; n != nil; {
		switch c := bytes.Compare(k, n.kv.Key); {
		case c < 0:
			n = n.left
		case c > 0:
			n = n.right
		default:
			return []*mvccpb.KeyValue{n.kv}
		}
	}
	return nil
}

// list returns the keys under prefix, sorted.
func (s snapshot) list(prefix string) []*mvccpb.KeyValue {
	var out []*mvccpb.KeyValue
	p := []byte(prefix)
	s.root.ascend(p, func(kv *mvccpb.KeyValue) bool {
		if !bytes.HasPrefix(kv.Key, p) {
			return false
		}
		out = append(out, kv)
		return true
	})
	return out
}

// mwatch is one etcd watch of the prefix.
type mwatch struct {
	ctx    context.Context
	cancel context.CancelFunc
	ch     clientv3.WatchChan
}

// subscriber is one Store.Watch: notify holds a change fn has not been called for yet.
type subscriber struct {
	notify chan struct{} // capacity 1
}

func newMirror(s *Store, trustProgress bool) *mirror {
	m := &mirror{
		s:        s,
		seed:     maphash.MakeSeed(),
		nudges:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		advanced: make(chan struct{}),
		subs:     make(map[*subscriber]bool),
	}
	m.trustProgress.Store(trustProgress)
	return m
}

// start lists the prefix, watches it from the revision of the list and installs the
// list once etcd has confirmed the watch. cluster is etcd's cluster id.
func (m *mirror) start(ctx context.Context) (w *mwatch, cluster uint64, err error) {
	rctx, rcancel := m.s.callContext(ctx)
	defer rcancel()
	root, rev, cluster, err := m.list(rctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", m.s.layout.prefix, err)
	}
	// Without a leader the watch fails instead of waiting silently, so that the mirror
	// lists again from a member that has one.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(m.s.ctx))
	w = &mwatch{ctx: wctx, cancel: cancel}
	// From rev itself, not rev+1: etcd sends no progress notification to a watch
	// whose start is beyond its current revision, so an idle mirror could not show
	// that it is fresh. apply skips the events of rev, which the list holds.
	w.ch = m.s.cli.Watch(wctx, m.s.layout.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev),
		clientv3.WithCreatedNotify(), clientv3.WithProgressNotify())
	var first clientv3.WatchResponse
	select {
	case wr, ok := <-w.ch:
		switch {
		case !ok:
			err = errors.Join(ctx.Err(), m.s.ctx.Err())
			if err == nil {
				err = errors.New("watch channel closed")
			}
		case wr.Err() != nil:
			err = wr.Err()
		}
		first = wr
	case <-rctx.Done():
		err = fmt.Errorf("watch not confirmed: %w", rctx.Err())
	}
	if err != nil {
		cancel()
		return nil, 0, fmt.Errorf("watch %s: %w", m.s.layout.prefix, err)
	}
	m.mu.Lock()
	m.root, m.rev, m.watching, m.heard, m.wctx = root, rev, true, time.Now(), wctx
	m.advanceLocked(true) // anything may have changed since the last list
	m.mu.Unlock()
	m.apply(first)
	return w, cluster, nil
}

// list reads every key under the prefix at one revision, in pages.
func (m *mirror) list(ctx context.Context) (root *node, rev int64, cluster uint64, err error) {
	from, end := m.s.layout.prefix, clientv3.GetPrefixRangeEnd(m.s.layout.prefix)
	var kvs []*mvccpb.KeyValue
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		m.s.roundTrips.Add(1)
		resp, err := m.s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, 0, 0, err
		}
		if rev == 0 {
			rev, cluster = resp.Header.Revision, resp.Header.ClusterId
		}
		kvs = append(kvs, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return build(kvs, m.prio), rev, cluster, nil
}

// run applies what w delivers until it breaks (etcd canceled it, its revision was
// compacted, no leader), then lists and watches again, until the store closes.
func (m *mirror) run(w *mwatch) {
	defer close(m.done)
	for w != nil {
		for wr := range w.ch {
			if wr.Canceled || wr.Err() != nil {
				break
			}
			m.apply(wr)
		}
		w.cancel()
		m.mu.Lock()
		m.watching, m.wctx = false, nil
		m.advanceLocked(false)
		m.mu.Unlock()
		w = m.restart()
	}
}

// restart lists and watches again, backing off while etcd does not answer; nil once
// the store has closed.
func (m *mirror) restart() *mwatch {
	delay := 50 * time.Millisecond
	for {
		if m.s.ctx.Err() != nil {
			return nil
		}
		w, _, err := m.start(m.s.ctx)
		if err == nil {
			return w
		}
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-m.s.ctx.Done():
		}
		timer.Stop()
		delay = min(2*delay, 5*time.Second)
	}
}

// apply applies one watch response. The events of a revision come in one response,
// in order, so after them the mirror is the state at the last one's revision. A
// progress notification says that no event up to its revision is still to come,
// which only etcd versions that order it after the events keep.
func (m *mirror) apply(wr clientv3.WatchResponse) {
	m.hold.Lock()
	defer m.hold.Unlock()
	m.mu.Lock()
	root, from := m.root, m.rev
	m.mu.Unlock()
	rev, changed := from, false
	for _, ev := range wr.Events {
		kv := ev.Kv
		if kv.ModRevision <= from {
			continue // in the list already
		}
		switch ev.Type {
		case clientv3.EventTypePut:
			root = root.put(kv, m.prio(kv.Key))
		case clientv3.EventTypeDelete:
			root = root.remove(kv.Key)
		}
		rev, changed = kv.ModRevision, true
	}
	if wr.IsProgressNotify() && m.trustProgress.Load() {
		rev = max(rev, wr.Header.Revision)
	}
	m.mu.Lock()
	m.root, m.rev, m.heard = root, rev, time.Now()
	m.advanceLocked(changed)
	m.mu.Unlock()
}

// advanceLocked wakes the transactions waiting for the mirror and, when the keys
// changed, the subscribers.
func (m *mirror) advanceLocked(changed bool) {
	close(m.advanced)
	m.advanced = make(chan struct{})
	if !changed {
		return
	}
	for sub := range m.subs {
		select {
		case sub.notify <- struct{}{}:
		default: // a call is due already
		}
	}
}

// freshLocked reports whether the mirror may serve reads: a watch feeds it and etcd
// answered it lately.
func (m *mirror) freshLocked() bool {
	return m.watching && time.Since(m.heard) < staleAfter
}

// snapshot returns the mirror for a transaction whose reads must see the commits up to
// floor, and the revision seen (0, or the header of the transaction's failed commit).
// It waits, within the request timeout, for the mirror to get there. ok is false when
// the transaction must read etcd instead: the mirror is stale, does not get there in
// time, or could only get to seen through progress notifications it cannot trust.
// Commit revisions always come as events (a commit writes under the prefix).
func (m *mirror) snapshot(floor, seen int64) (snap snapshot, ok bool) {
	if m.off.Load() {
		return snapshot{}, false
	}
	var deadline, nudge *time.Timer
	for {
		m.mu.Lock()
		if !m.freshLocked() {
			m.mu.Unlock()
			return snapshot{}, false
		}
		want := floor
		if m.trustProgress.Load() {
			want = max(floor, seen)
		}
		if m.rev >= want {
			snap = snapshot{root: m.root, rev: m.rev}
			m.mu.Unlock()
			return snap, snap.rev >= seen
		}
		advanced := m.advanced
		m.mu.Unlock()
		if deadline == nil {
			deadline, nudge = time.NewTimer(m.s.requestTimeout), time.NewTimer(nudgeAfter)
			defer deadline.Stop()
			defer nudge.Stop()
		}
		select {
		case <-advanced:
		case <-nudge.C:
			m.nudge()
			nudge.Reset(nudgeEvery)
		case <-deadline.C:
			// Broken without a sign: stale until etcd answers it again.
			m.mu.Lock()
			m.heard = time.Time{}
			m.mu.Unlock()
			return snapshot{}, false
		case <-m.s.ctx.Done():
			return snapshot{}, false
		}
	}
}

// nudge asks for a progress request, unless one is pending.
func (m *mirror) nudge() {
	select {
	case m.nudges <- struct{}{}:
	default:
	}
}

// progress sends the progress requests: those asked for by nudge, and one whenever
// the mirror has not heard from etcd for progressEvery. It returns when the store closes.
func (m *mirror) progress() {
	tick := time.NewTicker(progressEvery / 2)
	defer tick.Stop()
	for {
		select {
		case <-m.s.ctx.Done():
			return
		case <-m.nudges:
		case <-tick.C:
			m.mu.Lock()
			quiet := time.Since(m.heard) >= progressEvery
			m.mu.Unlock()
			if !quiet {
				continue
			}
		}
		m.mu.Lock()
		wctx := m.wctx
		m.mu.Unlock()
		if wctx == nil {
			continue // no watch: the mirror lists again
		}
		// On the watch's stream (same metadata), which may be reconnecting: bounded.
		ctx, cancel := context.WithTimeout(wctx, progressEvery)
		_ = m.s.cli.RequestProgress(ctx)
		cancel()
	}
}

// Watch implements store.Store: fn is called after the mirror has applied changes of
// any key of the store (see the package doc), so that a transaction in fn sees them.
func (s *Store) Watch(ctx context.Context, fn func()) error {
	op := fmt.Sprintf("etcd store %s: watch", s.endpoints)
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, errClosed)
	}
	m := s.mirror
	sub := &subscriber{notify: make(chan struct{}, 1)}
	// Subscribe, then wait for the mirror's watch if it is being started again.
	m.mu.Lock()
	m.subs[sub] = true
	m.mu.Unlock()
	unsubscribe := func() {
		m.mu.Lock()
		delete(m.subs, sub)
		m.mu.Unlock()
	}
	wctx, cancel := s.callContext(ctx)
	defer cancel()
	for {
		m.mu.Lock()
		watching, advanced := m.watching, m.advanced
		m.mu.Unlock()
		if watching {
			break
		}
		select {
		case <-advanced:
		case <-wctx.Done():
			unsubscribe()
			return fmt.Errorf("%s: not established: %w", op, wctx.Err())
		}
	}
	go func() {
		defer unsubscribe()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.ctx.Done():
				return
			case <-sub.notify:
				if ctx.Err() != nil {
					return
				}
				fn()
			}
		}
	}()
	return nil
}

// progressOrdered reports whether etcd version v (3.5.8) sends a requested progress
// notification only after the events up to its revision: 3.4.25, 3.5.8 and later.
// Older servers may send it first (etcd issue 15220).
func progressOrdered(v string) bool {
	var n [3]int
	for i, p := range strings.SplitN(v, ".", 3) {
		if i == 2 {
			p, _, _ = strings.Cut(p, "-") // 3.6.0-rc.1
		}
		x, err := strconv.Atoi(p)
		if err != nil {
			return false
		}
		n[i] = x
	}
	switch {
	case n[0] != 3:
		return n[0] > 3
	case n[1] == 4:
		return n[2] >= 25
	case n[1] == 5:
		return n[2] >= 8
	}
	return n[1] > 5
}

// clocks hold, per etcd cluster and prefix, the highest revision that a commit of this
// process reached: every Store of the process on the same data reads at least that far
// (see the package doc). An entry is a few bytes and lives as long as the process.
var clocks sync.Map // clockKey -> *atomic.Int64

type clockKey struct {
	cluster uint64
	prefix  string
}

func clockOf(cluster uint64, prefix string) *atomic.Int64 {
	c, _ := clocks.LoadOrStore(clockKey{cluster, prefix}, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// raise sets c to rev when that is higher.
func raise(c *atomic.Int64, rev int64) {
	for {
		cur := c.Load()
		if rev <= cur || c.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// node is a node of a persistent treap ordered by key, a max-heap by prio. A node is
// never modified once it is reachable from a root that was published: put and remove
// copy the path they change.
type node struct {
	kv          *mvccpb.KeyValue
	prio        uint64
	left, right *node
}

func (m *mirror) prio(key []byte) uint64 { return maphash.Bytes(m.seed, key) }

// put returns the tree n with kv set.
func (n *node) put(kv *mvccpb.KeyValue, prio uint64) *node {
	if n == nil {
		return &node{kv: kv, prio: prio}
	}
	// Every node put returns is new, so the rotations may change them.
	c := *n
	switch cmp := bytes.Compare(kv.Key, n.kv.Key); {
	case cmp < 0:
		c.left = n.left.put(kv, prio)
		if l := c.left; l.prio > c.prio {
			c.left, l.right = l.right, &c
			return l
		}
	case cmp > 0:
		c.right = n.right.put(kv, prio)
		if r := c.right; r.prio > c.prio {
			c.right, r.left = r.left, &c
			return r
		}
	default:
		c.kv = kv
	}
	return &c
}

// remove returns the tree n without key; n itself when key is absent.
func (n *node) remove(key []byte) *node {
	if n == nil {
		return nil
	}
	switch cmp := bytes.Compare(key, n.kv.Key); {
	case cmp < 0:
		l := n.left.remove(key)
		if l == n.left {
			return n
		}
		c := *n
		c.left = l
		return &c
	case cmp > 0:
		r := n.right.remove(key)
		if r == n.right {
			return n
		}
		c := *n
		c.right = r
		return &c
	}
	return merge(n.left, n.right)
}

// merge joins two trees, every key of a before every key of b.
func merge(a, b *node) *node {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.prio > b.prio:
		c := *a
		c.right = merge(a.right, b)
		return &c
	}
	c := *b
	c.left = merge(a, b.left)
	return &c
}

// ascend calls fn for the keys from from on, in order, until fn returns false.
func (n *node) ascend(from []byte, fn func(*mvccpb.KeyValue) bool) bool {
	if n == nil {
		return true
	}
	if bytes.Compare(n.kv.Key, from) >= 0 {
		if !n.left.ascend(from, fn) || !fn(n.kv) {
			return false
		}
	}
	return n.right.ascend(from, fn)
}

// build returns the treap of kvs, which are sorted by key without duplicates, in
// linear time: the right spine of the tree built so far is on a stack.
func build(kvs []*mvccpb.KeyValue, prio func([]byte) uint64) *node {
	var spine []*node
	for _, kv := range kvs {
		n := &node{kv: kv, prio: prio(kv.Key)}
		var last *node
		for len(spine) > 0 && spine[len(spine)-1].prio < n.prio {
			last, spine = spine[len(spine)-1], spine[:len(spine)-1]
		}
		n.left = last
		if len(spine) > 0 {
			spine[len(spine)-1].right = n
		}
		spine = append(spine, n)
	}
	if len(spine) == 0 {
		return nil
	}
	return spine[0]
}
