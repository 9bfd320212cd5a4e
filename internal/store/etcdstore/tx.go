package etcdstore

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// coarsenAt is how many point reads of one collection a transaction compares one by
// one; past it they are replaced by the compares of the whole collection (a range
// compare and its generations), so that a long probe for a free address stays far
// below etcd's limit on compares. The price is a conflict with any change to the
// collection, which allocations in one subnet have anyway through its cursor.
const coarsenAt = 8

// tx is one transaction: reads at one revision, writes buffered until the commit.
type tx struct {
	s        *Store
	writable bool

	// rev is the snapshot revision, pinned by the first read; 0 before it.
	rev int64
	// mirrored: the reads are served by snap, the mirror at rev; else by etcd.
	mirrored bool
	snap     snapshot
	// seen is a revision etcd reported to an earlier attempt (its failed commit's):
	// the first read waits for the mirror to get there. direct makes the reads go
	// to etcd.
	seen   int64
	direct bool
	// points are the keys read one by one, with what was seen.
	points map[string]pointRead
	// ranges are the collections listed, by prefix.
	ranges map[string]collection
	// writes are the buffered puts and deletes of single keys.
	writes map[string]write
	// cleared are prefixes deleted as a whole (DeleteNetwork); writes under them
	// made later are in writes.
	cleared []string
	// stale is set when a read failed because the snapshot revision was compacted
	// away: the transaction starts over instead of failing.
	stale error
}

type pointRead struct {
	modRev int64 // 0: absent
	val    []byte
	coll   collection
}

type write struct {
	val []byte
	del bool
}

func (s *Store) newTx(writable bool) *tx {
	return &tx{
		s:        s,
		writable: writable,
		points:   make(map[string]pointRead),
		ranges:   make(map[string]collection),
		writes:   make(map[string]write),
	}
}

func (t *tx) checkWritable(op string) error {
	if !t.writable {
		return fmt.Errorf("%s: %w", op, errReadOnly)
	}
	return nil
}

// isCleared reports whether key lies under a prefix deleted by this transaction.
func (t *tx) isCleared(key string) bool {
	for _, p := range t.cleared {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// read returns key, or every key under it with prefix, at the snapshot revision,
// pinning it on the first read: the mirror's revision when the mirror can serve the
// transaction (see mirror.snapshot), else etcd's.
func (t *tx) read(key string, prefix bool) ([]*mvccpb.KeyValue, error) {
	if t.rev == 0 && !t.direct {
		if snap, ok := t.s.mirror.snapshot(t.s.floor.Load(), t.seen); ok {
			t.snap, t.rev, t.mirrored = snap, snap.rev, true
		}
	}
	if t.mirrored {
		if prefix {
			return t.snap.list(key), nil
		}
		return t.snap.get(key), nil
	}
	var opts []clientv3.OpOption
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	ctx, cancel := t.s.requestContext()
	defer cancel()
	t.s.roundTrips.Add(1)
	resp, err := t.s.cli.Get(ctx, key, opts...)
	if err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			t.stale = err
		}
		return nil, fmt.Errorf("etcd %s: read %q: %w", t.s.endpoints, key, err)
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	return resp.Kvs, nil
}

// get returns the value of key as this transaction sees it; c is the collection key
// belongs to.
func (t *tx) get(key string, c collection) ([]byte, bool, error) {
	if w, ok := t.writes[key]; ok {
		return w.val, !w.del, nil
	}
	if t.isCleared(key) {
		return nil, false, nil
	}
	if p, ok := t.points[key]; ok {
		return p.val, p.modRev != 0, nil
	}
	kvs, err := t.read(key, false)
	if err != nil {
		return nil, false, err
	}
	p := pointRead{coll: c}
	if len(kvs) > 0 {
		p.modRev, p.val = kvs[0].ModRevision, kvs[0].Value
	}
	t.points[key] = p
	return p.val, p.modRev != 0, nil
}

type kv struct {
	key string
	val []byte
}

// list returns the keys of c as this transaction sees them, sorted by key.
func (t *tx) list(c collection) ([]kv, error) {
	m := make(map[string][]byte)
	if !t.isCleared(c.prefix) {
		kvs, err := t.read(c.prefix, true)
		if err != nil {
			return nil, err
		}
		t.ranges[c.prefix] = c
		for _, x := range kvs {
			if k := string(x.Key); !t.isCleared(k) {
				m[k] = x.Value
			}
		}
	}
	for k, w := range t.writes {
		if !strings.HasPrefix(k, c.prefix) {
			continue
		}
		if w.del {
			delete(m, k)
		} else {
			m[k] = w.val
		}
	}
	out := make([]kv, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, kv{k, m[k]})
	}
	return out, nil
}

func (t *tx) put(key string, val []byte) { t.writes[key] = write{val: val} }
func (t *tx) del(key string)             { t.writes[key] = write{del: true} }

// bump records a deletion in the collection of gen (see collection).
func (t *tx) bump(gen span) { t.put(gen.key, nil) }

// clear deletes every key under prefix, including the writes buffered so far.
func (t *tx) clear(prefix string) {
	for k := range t.writes {
		if strings.HasPrefix(k, prefix) {
			delete(t.writes, k)
		}
	}
	t.cleared = append(t.cleared, prefix)
}

// dirty reports whether the transaction has anything to commit.
func (t *tx) dirty() bool { return len(t.writes) > 0 || len(t.cleared) > 0 }

// compares returns the conditions under which the transaction commits: nothing it
// read has changed since its snapshot revision. A key read on its own must still
// have the modification revision it had (0: still absent). A listed collection must
// have no key modified after the snapshot (a range compare, which sees creations and
// changes) and none of its generation keys either (which sees deletions). A listed
// collection covers the point reads under its prefix, and a collection read key by key
// more than coarsenAt times is compared as a whole.
func (t *tx) compares() []clientv3.Cmp {
	if t.rev == 0 {
		return nil // nothing read
	}
	spans := make(map[span]bool) // compared with ModRevision <= rev
	addColl := func(c collection) {
		spans[span{key: c.prefix, prefix: true}] = true
		for _, g := range c.gens {
			spans[g] = true
		}
	}
	for _, c := range t.ranges {
		addColl(c)
	}
	byColl := make(map[string][]string)
	for k, p := range t.points {
		byColl[p.coll.prefix] = append(byColl[p.coll.prefix], k)
	}
	for _, keys := range byColl {
		if len(keys) > coarsenAt {
			addColl(t.points[keys[0]].coll)
		}
	}
	// Drop what a prefix compare covers already. Collections nest consistently, so
	// a point read under a listed prefix is covered together with its generations.
	covered := func(s span) bool {
		for o := range spans {
			if o.prefix && o != s && o.covers(s) {
				return true
			}
		}
		return false
	}
	var cmps []clientv3.Cmp
	for _, s := range slices.SortedFunc(maps.Keys(spans), compareSpans) {
		if covered(s) {
			continue
		}
		c := clientv3.Compare(clientv3.ModRevision(s.key), "<", t.rev+1)
		if s.prefix {
			c = c.WithPrefix()
		}
		cmps = append(cmps, c)
	}
	for _, k := range slices.Sorted(maps.Keys(t.points)) {
		if covered(span{key: k}) {
			continue
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", t.points[k].modRev))
	}
	return cmps
}

func compareSpans(a, b span) int {
	if c := strings.Compare(a.key, b.key); c != 0 {
		return c
	}
	switch {
	case a.prefix == b.prefix:
		return 0
	case a.prefix:
		return 1
	}
	return -1
}

// ops returns the writes of the transaction as etcd operations. A prefix deleted as a
// whole is deleted as ranges around the keys put under it afterwards: etcd refuses a
// transaction that puts a key inside a range it deletes.
func (t *tx) ops() []clientv3.Op {
	var ops []clientv3.Op
	keys := slices.Sorted(maps.Keys(t.writes))
	// Sorted, the prefixes under another one follow it: keep the outer ones.
	var cleared []string
	for _, p := range slices.Sorted(slices.Values(t.cleared)) {
		if n := len(cleared); n == 0 || !strings.HasPrefix(p, cleared[n-1]) {
			cleared = append(cleared, p)
		}
	}
	for _, p := range cleared {
		start, end := p, clientv3.GetPrefixRangeEnd(p)
		for _, k := range keys {
			if t.writes[k].del || !strings.HasPrefix(k, p) {
				continue
			}
			if start < k {
				ops = append(ops, clientv3.OpDelete(start, clientv3.WithRange(k)))
			}
			start = k + "\x00"
		}
		ops = append(ops, clientv3.OpDelete(start, clientv3.WithRange(end)))
	}
	for _, k := range keys {
		if w := t.writes[k]; w.del {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(w.val)))
		}
	}
	return ops
}
