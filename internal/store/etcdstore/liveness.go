package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/podnet/podnet/internal/store"
)

// Register implements store.Store with an etcd lease (see the package doc). lost is
// closed when the registration ends for any reason other than ctx: the lease expired
// or was revoked (taken over by another registration of the same holder, or lost
// while this client was cut off from etcd), or the store closed.
func (s *Store) Register(ctx context.Context, node, holder string, ttl time.Duration) (<-chan struct{}, error) {
	op := fmt.Sprintf("etcd store %s: register node %q", s.endpoints, node)
	if err := store.CheckRegistration(node, holder, ttl); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if s.closed.Load() {
		return nil, fmt.Errorf("%s: %w", op, errClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	rctx, cancel := s.callContext(ctx)
	defer cancel()
	secs := int64((ttl + time.Second - 1) / time.Second) // etcd may grant more: its minimum
	s.roundTrips.Add(1)
	lease, err := s.cli.Grant(rctx, secs)
	if err != nil {
		return nil, fmt.Errorf("%s: grant a lease of %ds: %w", op, secs, err)
	}
	if err := s.claim(rctx, node, holder, lease.ID); err != nil {
		s.revoke(lease.ID)
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	kctx, kcancel := context.WithCancel(s.ctx)
	alive, err := s.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		kcancel()
		s.revoke(lease.ID)
		return nil, fmt.Errorf("%s: keep lease %x alive: %w", op, lease.ID, err)
	}
	stop := context.AfterFunc(ctx, kcancel)
	lost := make(chan struct{})
	go func() {
		// The client closes alive when kctx ends (ctx ended or the store closed), when
		// etcd reports the lease gone, or when no answer came within the lease's ttl.
		for range alive {
		}
		stop()
		kcancel()
		if ctx.Err() != nil {
			s.revoke(lease.ID) // the node is dead at once, not after ttl
			return
		}
		close(lost)
	}()
	return lost, nil
}

// claim puts the alive key of node with lease id when it is free, or when holder has
// it already: the registration takes over and revokes the old lease, which ends the
// old registration. A key of another holder is store.ErrNodeTaken.
func (s *Store) claim(ctx context.Context, node, holder string, id clientv3.LeaseID) error {
	key := s.layout.aliveKey(node)
	put := clientv3.OpPut(key, holder, clientv3.WithLease(id))
	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := s.backoff(attempt); err != nil {
				return err
			}
		}
		s.roundTrips.Add(1)
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(put).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return fmt.Errorf("claim %q: %w", key, err)
		}
		if resp.Succeeded {
			raise(s.floor, resp.Header.Revision) // Alive here sees it (the mirror)
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // deleted since the compare: cannot happen in one Txn, try again
		}
		cur := kvs[0]
		if string(cur.Value) != holder {
			return fmt.Errorf("held by %q: %w", cur.Value, store.ErrNodeTaken)
		}
		s.roundTrips.Add(1)
		resp, err = s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", cur.ModRevision)).
			Then(put).
			Commit()
		if err != nil {
			return fmt.Errorf("take over %q: %w", key, err)
		}
		if !resp.Succeeded {
			continue // changed meanwhile: look again
		}
		raise(s.floor, resp.Header.Revision)
		if old := clientv3.LeaseID(cur.Lease); old != clientv3.NoLease && old != id {
			s.roundTrips.Add(1)
			if _, err := s.cli.Revoke(ctx, old); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return fmt.Errorf("take over %q: revoke the old lease %x: %w", key, old, err)
			}
		}
		return nil
	}
	return fmt.Errorf("claim %q: gave up after %d attempts: %w", key, maxAttempts, ErrConflict)
}

// revoke ends a lease at once, deleting the keys attached to it. Errors are dropped:
// a lease that cannot be revoked expires after its ttl.
func (s *Store) revoke(id clientv3.LeaseID) {
	ctx, cancel := s.requestContext()
	defer cancel()
	s.roundTrips.Add(1)
	if resp, err := s.cli.Revoke(ctx, id); err == nil {
		raise(s.floor, resp.Header.Revision)
	}
}

// callContext bounds a request made for a caller: it ends with ctx, with the store,
// or after the request timeout.
func (s *Store) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithTimeout(ctx, s.requestTimeout)
	stop := context.AfterFunc(s.ctx, cancel)
	return cctx, func() {
		stop()
		cancel()
	}
}

// Alive implements store.Store with one read of the alive keys.
func (s *Store) Alive() (map[string]bool, error) {
	op := fmt.Sprintf("etcd store %s: alive nodes", s.endpoints)
	if s.closed.Load() {
		return nil, fmt.Errorf("%s: %w", op, errClosed)
	}
	prefix := s.layout.alive()
	// The alive keys are in the mirror: a lease that expires deletes its key, which the
	// watch delivers like any other change.
	var kvs []*mvccpb.KeyValue
	if snap, ok := s.mirror.snapshot(s.floor.Load(), 0); ok {
		kvs = snap.list(prefix)
	} else {
		ctx, cancel := s.requestContext()
		defer cancel()
		s.roundTrips.Add(1)
		resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		kvs = resp.Kvs
	}
	alive := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		name, err := segments(string(kv.Key), prefix, 1)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		alive[name[0]] = true
	}
	return alive, nil
}
