// Package etcdstore is a store.Store in etcd, for clusters: every node's agent opens
// the same etcd with the same prefix and sees one state. It works against etcd 3.4
// (Debian 12's etcd-server) and later, and refuses older servers.
//
// # Key layout
//
// Under the prefix (default /podnet/v1/), readable with `etcdctl get --prefix
// /podnet/v1/`. A name segment has '%', '/', space, control characters and bytes
// outside ASCII escaped as %XX, so a network "a/b" is networks/a%2Fb and a key never
// has more segments than its kind says:
//
//	networks/NET                       JSON api.Network
//	endpoints/NET/CONTAINERID/IFNAME   JSON api.Endpoint
//	allocations/NET/ADDR               owner
//	owners/NET/OWNER/ADDR              "" (index of allocations by owner)
//	cursors/NET/SUBNET                 address (the subnet 10.88.0.0%2F16)
//	ports/NODE/PROTO/PORT/HOSTIP       owner (HOSTIP * for all addresses)
//	services/NS/NAME                   JSON api.Service
//	networkpolicies/NS/NAME            JSON api.NetworkPolicy
//	namespaces/NAME                    JSON api.Namespace
//	pods/NS/NAME                       JSON api.Pod
//	nodes/NAME                         JSON api.Node (Alive is never stored)
//	blocks/NET/PREFIX                  JSON api.Block (the prefix 10.88.0.0%2F26)
//	bgpconfig                          JSON api.BGPConfig
//	bgppeers/NAME                      JSON api.BGPPeer
//	alive/NAME                         holder, attached to the node's lease (below)
//	gen/networks, gen/services, gen/networkpolicies, gen/namespaces, gen/pods,
//	gen/nodes, gen/bgppeers, gen/endpoints/NET, gen/allocations/NET,
//	gen/blocks/NET, gen/ports/NODE     "" (deletion generations, below)
//
// The escaping keeps names apart but does not keep their order: listings are sorted
// after decoding, as the store.Tx contract wants.
//
// # Commit protocol
//
// Transactions are serializable through optimistic concurrency. A transaction reads
// at one revision R, pinned by its first read (every later read is at R), from the
// mirror (below) or from etcd, and buffers its writes, which its own reads see.
// Update commits them with one etcd Txn whose compares prove that nothing the
// transaction read has changed since R:
//
//   - a key read on its own: ModRevision equal to the one seen (0 when it was
//     absent, so its creation fails the commit);
//   - a listed prefix: ModRevision < R+1 over the whole prefix, which fails on any
//     key created or changed under it since R;
//   - a listed prefix's deletion generations, by the same compare.
//
// When a compare fails the Txn does nothing; Update then runs fn again from scratch
// at a fresh revision, up to 64 times with a short jittered backoff, and then gives
// up with ErrConflict. fn may therefore run more than once: it must not have effects
// outside the transaction that a second run would repeat. View reads at one revision
// the same way and never commits. When etcd compacts R away while fn reads etcd, the
// read fails and fn runs again at a fresh revision, in View as in Update.
//
// # Mirror
//
// Open lists every key under the prefix (Gets of 1000 keys at one revision) into the
// mirror, a sorted in-memory copy of keys, values and ModRevisions, then watches the
// prefix from that revision on, requiring a leader, and applies every put and delete.
// The mirror is a persistent treap: a change copies the path to the changed key, so
// a snapshot (root, revision) costs nothing, never changes, and a point read or a
// prefix listing takes O(log n + k). Transactions read a snapshot: on the ADD path
// etcd sees only the commit. The mirror's revision is the revision of the last event
// it applied (the events of one revision come together), or the revision of a
// progress notification, which etcd 3.4.25, 3.5.8 and later send only after the
// events before it; with older servers (Open checks the versions) progress
// notifications only show that the watch works.
//
// Consistency rules. The commit compares above hold whatever the mirror's lag: a
// transaction that read a mirror behind etcd fails its commit and runs again, first
// waiting (within the request timeout) for the mirror to reach the revision of the
// failed Txn's answer, so that it sees what beat it; an etcd whose progress
// notifications cannot be trusted makes that run read etcd instead. An Update whose fn
// fails or writes nothing after reading the mirror does not return that outcome
// blindly: a Txn of its compares alone confirms that nothing it read has changed
// (one request, off the ADD path), else fn runs again the same way. So Update
// behaves as when it read etcd. A View reads the mirror as it is: it misses at most
// what the watch has not delivered yet. Every transaction reads at least the revision
// of every commit made before it by a Store of this process on the same cluster and
// prefix (it waits for the mirror to apply it): a process reads its own writes,
// whichever of its Stores made them.
//
// Losing etcd. The watch breaking (canceled, its revision compacted, no leader) takes
// the mirror out of service until it has listed the prefix again, retried with
// backoff. A watch that stays open while nothing reaches it (the client cut off
// from etcd) is caught by silence: the mirror asks for a progress notification after
// a second without news and is stale after three. While the mirror is out of service
// or stale, or when it does not reach a commit's revision within the request
// timeout, transactions read etcd as they always did, and fail after the request
// timeout when etcd cannot be reached. Besides what the watch has not delivered yet,
// a View on a client just cut off from etcd may thus read the state of up to about
// three seconds before.
//
// # Deletion generations
//
// An etcd range compare looks at the keys that exist: a key deleted after R has no
// revision left to compare, so a listing could miss a deletion. Every deletion in a
// collection therefore also puts the collection's generation key, whose ModRevision
// the listing compares. The generations of endpoints, allocations (with the owner
// index) and blocks are per network, so releases in one network do not conflict with
// listings of another, and those of ports per node; services, network policies,
// namespaces, pods, nodes and BGP peers have one each. DeleteNetwork deletes its network's
// generations with the rest and bumps gen/networks, which every listing of a
// network's collection compares, so deleting a network conflicts with every such
// listing in flight, in any network.
//
// DeleteNetwork removes the network's endpoints, allocations, owner index, cursors
// and blocks with range deletes in the same Txn. Keys put again under a deleted range
// in the same transaction (a network deleted and re-created) split the range:
// etcd refuses a Txn that puts a key inside a range it deletes.
//
// # Liveness and watches
//
// Register grants a lease of ttl (whole seconds, rounded up; etcd may grant more, its
// minimum) and puts alive/NAME = holder attached to it: when the key is absent, or
// when it has the same holder, which takes it over (the put compares the key's
// ModRevision, then the old lease is revoked, which ends the old registration).
// Another holder's key is store.ErrNodeTaken. The client keeps the lease alive until
// ctx ends, which revokes it (the node is dead at once), or the store closes, which
// leaves it to expire after its ttl (an agent restarted in time takes it over). When
// the keepalives stop while ctx lasts (the lease was revoked, or expired while this
// client was cut off from etcd) or the store closes, the lost channel is closed.
// Alive reads alive/ from etcd once; transactions never read it.
//
// Watch calls fn after the mirror has applied changes of any key of the prefix
// (liveness included): one call for the changes applied while the previous call ran
// or was due, so that a transaction in fn sees them. When the mirror lists the prefix
// again (its watch broke), fn is called once, as anything may have changed.
//
// # Limits and compatibility
//
// etcd refuses a Txn with more than --max-txn-ops compares or operations (128 by
// default; Config.MaxTxnOps when the cluster sets another). Update checks before
// sending and fails with ErrTxnTooLarge, writing nothing; a refusal by etcd itself
// gives ErrTxnTooLarge too. The compares stay few: a
// listed prefix covers the point reads under it (its generations cover their
// deletions), and a collection read key by key more than a few times, as a long
// probe for a free address does, is compared as a whole instead.
//
// Only APIs of etcd 3.4 are used: Range with a revision, Txn with ModRevision
// compares over a range (in etcd since 3.3; 3.2 and older ignore the range end and
// would compare a single key), leases, watches with progress requests (3.4),
// plus Maintenance.Status in Open,
// which refuses servers before 3.4, the oldest version tested. A Txn that fails in
// transport (timeout, lost leader) may or may not have committed; Update reports the
// error.
package etcdstore

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/podnet/podnet/internal/store"
)

// Defaults of Config.
const (
	DefaultPrefix         = "/podnet/v1/"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultMaxTxnOps      = 128
)

// maxAttempts bounds how often Update runs fn when commits keep conflicting.
const maxAttempts = 64

// ErrConflict is returned (wrapped) by Update when its commit lost to concurrent
// updates maxAttempts times in a row.
var ErrConflict = errors.New("concurrent updates kept conflicting")

// ErrTxnTooLarge is returned (wrapped) by Update when the transaction needs more
// compares or operations than one etcd Txn may hold; nothing is written.
var ErrTxnTooLarge = errors.New("transaction too large for one etcd Txn")

var errReadOnly = store.ErrReadOnly

// errClosed is returned by the transactions of a closed Store.
var errClosed = errors.New("store is closed")

// Config says how to reach etcd.
type Config struct {
	// Endpoints are the client URLs of the cluster (http://10.0.0.1:2379).
	Endpoints []string
	// TLS is the client TLS configuration; nil talks plain TCP.
	TLS *tls.Config
	// Prefix is put in front of every key; DefaultPrefix when empty. A '/' is
	// added when it does not end with one.
	Prefix string
	// DialTimeout bounds Open's check that etcd answers; DefaultDialTimeout when 0.
	DialTimeout time.Duration
	// RequestTimeout bounds each request of a transaction; DefaultRequestTimeout
	// when 0.
	RequestTimeout time.Duration
	// MaxTxnOps is the cluster's --max-txn-ops; DefaultMaxTxnOps when 0.
	MaxTxnOps int
}

// Store is a store.Store in etcd. It is safe for concurrent use, also together with
// other Stores (in this process or others) on the same etcd and prefix.
type Store struct {
	cli            *clientv3.Client
	layout         layout
	endpoints      string // for errors
	requestTimeout time.Duration
	maxTxnOps      int

	// ctx is canceled by Close, ending the requests in flight.
	ctx    context.Context
	cancel context.CancelFunc

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// mirror is the copy of the prefix that transactions read.
	mirror *mirror
	// services are the services decoded by earlier transactions.
	services store.DecodedServices
	// floor is the highest revision a commit of this process reached on this cluster
	// and prefix (see clocks): a transaction reads at least that far.
	floor *atomic.Int64

	// roundTrips counts the requests sent to etcd: reads, commits, lease operations.
	// The watch and its progress requests are messages on a stream, not counted.
	roundTrips atomic.Int64
}

var _ store.Store = (*Store)(nil)

// Open connects to etcd and checks, within cfg.DialTimeout, that at least one
// endpoint answers and that none runs a version before 3.4; then it lists the prefix
// into the mirror and watches it (within cfg.RequestTimeout). The error names the
// endpoints.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	eps := strings.Join(cfg.Endpoints, ",")
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("open etcd store: no endpoints")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxTxnOps <= 0 {
		cfg.MaxTxnOps = DefaultMaxTxnOps
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         cfg.TLS,
		DialTimeout: cfg.DialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("open etcd store at %s: %w", eps, err)
	}
	ordered, err := checkServers(ctx, cli, cfg.Endpoints, cfg.DialTimeout)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("open etcd store at %s: %w", eps, err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cli:            cli,
		layout:         layout{prefix: cfg.Prefix},
		endpoints:      eps,
		requestTimeout: cfg.RequestTimeout,
		maxTxnOps:      cfg.MaxTxnOps,
		ctx:            sctx,
		cancel:         cancel,
	}
	s.mirror = newMirror(s, ordered)
	w, cluster, err := s.mirror.start(ctx)
	if err != nil {
		cancel()
		cli.Close()
		return nil, fmt.Errorf("open etcd store at %s: %w", eps, err)
	}
	s.floor = clockOf(cluster, cfg.Prefix)
	go s.mirror.run(w)
	go s.mirror.progress()
	return s, nil
}

// checkServers asks every endpoint for its status at once (the client dials lazily,
// so only a request shows whether etcd is there). ordered reports that every endpoint
// answered with a version that orders progress notifications after events.
func checkServers(ctx context.Context, cli *clientv3.Client, endpoints []string, timeout time.Duration) (ordered bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		ep      string
		version string
		err     error
	}
	results := make(chan result, len(endpoints))
	for _, ep := range endpoints {
		go func() {
			resp, err := cli.Status(ctx, ep)
			if err != nil {
				results <- result{ep: ep, err: err}
				return
			}
			results <- result{ep: ep, version: resp.Version}
		}()
	}
	var errs []error
	answered := 0
	ordered = true
	for range endpoints {
		r := <-results
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.ep, r.err))
			ordered = false
			continue
		}
		answered++
		if !atLeast34(r.version) {
			return false, fmt.Errorf("%s runs etcd %s; podnet needs 3.4 or later", r.ep, r.version)
		}
		ordered = ordered && progressOrdered(r.version)
	}
	if answered == 0 {
		return false, fmt.Errorf("etcd not reachable within %s: %w", timeout, errors.Join(errs...))
	}
	return ordered, nil
}

// atLeast34 reports whether the server version v (3.4.23) is 3.4 or later.
func atLeast34(v string) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return major > 3 || major == 3 && minor >= 4
}

// Prefix returns the prefix of every key of the store.
func (s *Store) Prefix() string { return s.layout.prefix }

func (s *Store) requestContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.requestTimeout)
}

// View runs fn on the state at one revision, read from the mirror (which may lag
// behind etcd: see the package doc) or from etcd; fn's error is returned as is. The
// writes of the Tx fail with store.ErrReadOnly. When the revision is compacted away
// while fn reads etcd, fn runs again at a fresh one.
func (s *Store) View(fn func(store.Tx) error) error {
	for attempt := 0; ; attempt++ {
		if s.closed.Load() {
			return fmt.Errorf("etcd store %s: %w", s.endpoints, errClosed)
		}
		t := s.newTx(false)
		err := fn(t)
		if t.stale == nil || attempt+1 == maxAttempts {
			return err
		}
	}
}

// Update runs fn and commits its writes when fn returns nil; fn's error is returned
// as is. When the commit finds that something fn read has changed meanwhile, fn runs
// again at a fresh revision (see the package doc): fn may run more than once. When fn
// read the mirror and fails or writes nothing, etcd confirms that what it read still
// holds before Update returns, or fn runs again.
func (s *Store) Update(fn func(store.Tx) error) error {
	var seen int64 // etcd's revision at the last failed attempt
	direct := false
	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := s.backoff(attempt); err != nil {
				return err
			}
		}
		if s.closed.Load() {
			return fmt.Errorf("etcd store %s: %w", s.endpoints, errClosed)
		}
		t := s.newTx(true)
		t.seen, t.direct = seen, direct
		err := fn(t)
		if t.stale != nil {
			continue // fn read from a compacted revision: its outcome means nothing
		}
		var ok bool
		switch {
		case t.mirrored && (err != nil || !t.dirty()):
			// The outcome rests on the mirror, which may lag behind etcd.
			var verr error
			ok, seen, verr = s.validate(t)
			if errors.Is(verr, ErrTxnTooLarge) {
				direct = true // too many compares to check: read etcd itself
				continue
			}
			if verr != nil {
				return cmp.Or(err, verr)
			}
			if ok {
				return err
			}
		case err != nil:
			return err
		default:
			var cerr error
			if ok, seen, cerr = s.commit(t); cerr != nil {
				return cerr
			}
			if ok {
				return nil
			}
		}
	}
	return fmt.Errorf("etcd store %s: update gave up after %d attempts: %w", s.endpoints, maxAttempts, ErrConflict)
}

// backoff sleeps before attempt (1, 2, ...): a random time up to 1 ms, doubling
// with each attempt up to 64 ms, so that contenders spread out.
func (s *Store) backoff(attempt int) error {
	limit := time.Millisecond << min(attempt-1, 6)
	timer := time.NewTimer(rand.N(limit) + 1)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-s.ctx.Done():
		return fmt.Errorf("etcd store %s: %w", s.endpoints, errClosed)
	}
}

// commit sends the writes of t under the compares of its reads; ok is false when a
// compare failed and nothing was written. rev is etcd's revision in its answer: the
// commit's own when it changed something, which the next transactions of the process
// then read at least.
func (s *Store) commit(t *tx) (ok bool, rev int64, err error) {
	if !t.dirty() {
		return true, 0, nil
	}
	cmps, ops := t.compares(), t.ops()
	if len(cmps) > s.maxTxnOps || len(ops) > s.maxTxnOps {
		return false, 0, fmt.Errorf("etcd store %s: commit: %d compares and %d operations, etcd takes %d of each: %w",
			s.endpoints, len(cmps), len(ops), s.maxTxnOps, ErrTxnTooLarge)
	}
	ctx, cancel := s.requestContext()
	defer cancel()
	s.roundTrips.Add(1)
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if errors.Is(err, rpctypes.ErrTooManyOps) {
		return false, 0, fmt.Errorf("etcd store %s: commit: %d compares and %d operations: %w (%w)",
			s.endpoints, len(cmps), len(ops), ErrTxnTooLarge, err)
	}
	if err != nil {
		return false, 0, fmt.Errorf("etcd store %s: commit: %w", s.endpoints, err)
	}
	if resp.Succeeded && changed(resp) {
		raise(s.floor, resp.Header.Revision)
	}
	return resp.Succeeded, resp.Header.Revision, nil
}

// changed reports whether a Txn wrote anything: only then it made a revision of its
// own, which the watch delivers.
func changed(resp *clientv3.TxnResponse) bool {
	for _, r := range resp.Responses {
		if r.GetResponsePut() != nil {
			return true
		}
		if d := r.GetResponseDeleteRange(); d != nil && d.Deleted > 0 {
			return true
		}
	}
	return false
}

// validate asks etcd whether what t read from the mirror still holds: a Txn of its
// compares without operations. rev is etcd's revision in the answer.
func (s *Store) validate(t *tx) (ok bool, rev int64, err error) {
	cmps := t.compares()
	if len(cmps) > s.maxTxnOps {
		return false, 0, ErrTxnTooLarge
	}
	ctx, cancel := s.requestContext()
	defer cancel()
	s.roundTrips.Add(1)
	resp, err := s.cli.Txn(ctx).If(cmps...).Commit()
	if errors.Is(err, rpctypes.ErrTooManyOps) {
		return false, 0, ErrTxnTooLarge
	}
	if err != nil {
		return false, 0, fmt.Errorf("etcd store %s: check the reads: %w", s.endpoints, err)
	}
	return resp.Succeeded, resp.Header.Revision, nil
}

// Close ends the requests in flight, the mirror and the Watch calls, and closes the
// connection to etcd; calling it twice is harmless.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cancel()
		<-s.mirror.done
		if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			s.closeErr = fmt.Errorf("close etcd store %s: %w", s.endpoints, err)
		}
	})
	return s.closeErr
}

// RoundTrips is how many requests the store has sent to etcd: reads (the mirror's
// lists included), commits and lease operations. The messages on the mirror's watch
// stream (its progress requests) are not counted.
func (s *Store) RoundTrips() int64 { return s.roundTrips.Load() }
