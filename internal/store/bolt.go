package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/podnet/podnet/api"
)

// Layout of the bbolt file. Top-level buckets:
//
//	networks:        <name> -> JSON api.Network
//	endpoints:       <network> (bucket) -> <containerID> NUL <ifName> -> JSON api.Endpoint
//	allocations:     <network> (bucket) -> netip.Addr binary -> owner
//	owners:          <network> (bucket) -> owner NUL netip.Addr binary -> "" (index of allocations by owner)
//	cursors:         <network> (bucket) -> netip.Prefix binary (masked) -> netip.Addr binary
//	hostports:       <node> (bucket) -> <proto>/<port> (bucket) -> host netip.Addr binary, "*" for all -> owner
//	services:        <namespace> NUL <name> -> JSON api.Service
//	networkpolicies: <namespace> NUL <name> -> JSON api.NetworkPolicy
//	namespaces:      <name> -> JSON api.Namespace
//	pods:            <namespace> NUL <name> -> JSON api.Pod
//	nodes:           <name> -> JSON api.Node (Alive never stored)
//	blocks:          <network> (bucket) -> netip.Prefix binary (masked) -> JSON api.Block
//	bgpconfig:       "config" -> JSON api.BGPConfig
//	bgppeers:        <name> -> JSON api.BGPPeer
//
// A container id and an interface name never contain NUL (PutEndpoint refuses them),
// so the endpoint key is unambiguous, and it sorts like (containerID, ifName); the
// same holds for the namespace and the name of a service, a policy or a pod.
//
// OpenBolt creates the buckets that a file written by an older podnet lacks.
//
// A file written before ports were per node has instead, and no hostports:
//
//	ports:           <proto>/<port> (bucket) -> host netip.Addr binary, "*" for all -> owner
//
// A bolt store serves one node: Register gives those ports to the node it registers
// and deletes the ports bucket (see adoptPorts).
var (
	bucketNetworks        = []byte("networks")
	bucketEndpoints       = []byte("endpoints")
	bucketAllocations     = []byte("allocations")
	bucketOwners          = []byte("owners")
	bucketCursors         = []byte("cursors")
	bucketHostPorts       = []byte("hostports")
	bucketServices        = []byte("services")
	bucketNetworkPolicies = []byte("networkpolicies")
	bucketNamespaces      = []byte("namespaces")
	bucketPods            = []byte("pods")
	bucketNodes           = []byte("nodes")
	bucketBlocks          = []byte("blocks")
	bucketBGPConfig       = []byte("bgpconfig")
	bucketBGPPeers        = []byte("bgppeers")

	// bucketOldPorts holds the ports of a file written before ports were per node.
	bucketOldPorts = []byte("ports")
	// keyBGPConfig is the one key of bucketBGPConfig.
	keyBGPConfig = []byte("config")

	topBuckets = [][]byte{bucketNetworks, bucketEndpoints, bucketAllocations, bucketOwners, bucketCursors, bucketHostPorts,
		bucketServices, bucketNetworkPolicies, bucketNamespaces, bucketPods, bucketNodes, bucketBlocks, bucketBGPConfig,
		bucketBGPPeers}
	// perNetwork are the top-level buckets that hold one nested bucket per network.
	perNetwork = [][]byte{bucketEndpoints, bucketAllocations, bucketOwners, bucketCursors, bucketBlocks}
)

// openTimeout bounds how long OpenBolt waits for the file lock held by another process.
const openTimeout = 5 * time.Second

// Bolt is a Store in a bbolt file. One process at a time holds the file, so node
// liveness lives in that process (see LocalLiveness): a registration lasts until its
// ctx ends, the same holder takes the node over, or the store closes, and Watch
// reports the Updates of this store that wrote something and the registrations that
// start or end.
type Bolt struct {
	db    *bolt.DB
	path  string
	local LocalLiveness
	// services are the services decoded by earlier transactions.
	services DecodedServices
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating it and its directory when needed) the bbolt store at path.
// When another process holds the file, it gives up after a few seconds with an error
// that names the path. A damaged file (truncated, not a bbolt file, both meta pages
// invalid) gives a *DamagedError before bbolt maps it.
func OpenBolt(path string) (*Bolt, error) {
	return openBolt(path, openTimeout)
}

func openBolt(path string, timeout time.Duration) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// bbolt maps the file and trusts its header: a truncated file would crash the
	// process (SIGBUS) instead of failing here.
	if err := checkFile(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: file is locked by another process (is another podnet agent running?), gave up after %s: %w", path, timeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		indexed := tx.Bucket(bucketOwners) != nil
		for _, name := range topBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		if !indexed { // a store written before the index existed
			return indexOwners(tx)
		}
		return nil
	})
	if err != nil {
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close: %w", cerr))
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Bolt{db: db, path: path}, nil
}

// Path returns the file the store lives in.
func (b *Bolt) Path() string { return b.path }

// View runs fn in a read-only transaction; fn's error is returned as is.
func (b *Bolt) View(fn func(Tx) error) error {
	btx, err := b.db.Begin(false)
	if err != nil {
		return fmt.Errorf("store %s: begin view: %w", b.path, err)
	}
	ferr := b.run(&boltTx{tx: btx, services: &b.services}, fn)
	if err := btx.Rollback(); err != nil {
		return errors.Join(ferr, fmt.Errorf("store %s: end view: %w", b.path, err))
	}
	return ferr
}

// Update runs fn in a read-write transaction and commits when fn returns nil; fn's
// error is returned as is. bbolt serializes writers.
func (b *Bolt) Update(fn func(Tx) error) error {
	btx, err := b.db.Begin(true)
	if err != nil {
		return fmt.Errorf("store %s: begin update: %w", b.path, err)
	}
	t := &boltTx{tx: btx, services: &b.services}
	if ferr := b.run(t, fn); ferr != nil {
		if err := btx.Rollback(); err != nil {
			return errors.Join(ferr, fmt.Errorf("store %s: roll back: %w", b.path, err))
		}
		return ferr
	}
	if err := btx.Commit(); err != nil {
		return fmt.Errorf("store %s: commit: %w", b.path, err)
	}
	if t.wrote {
		b.local.Notify()
	}
	return nil
}

// run calls fn and turns a panic into a rollback before re-raising it, so that the
// writer lock is not kept by a transaction nobody will end.
func (b *Bolt) run(t *boltTx, fn func(Tx) error) (err error) {
	done := false
	defer func() {
		if done {
			return
		}
		r := recover()
		rerr := t.tx.Rollback()
		if r == nil {
			// runtime.Goexit (t.FailNow inside fn): the transaction is ended, let
			// the goroutine exit; there is no caller left to report rerr to.
			return
		}
		if rerr != nil {
			panic(fmt.Sprintf("%v (and roll back of store %s failed: %v)", r, b.path, rerr))
		}
		panic(r)
	}()
	err = fn(t)
	done = true
	return err
}

// Register implements Store: the registration lives in this process (see Bolt). A
// live registration of another holder is ErrNodeTaken; one of the same holder is
// taken over and its lost channel closed. lost is closed when the registration ends
// for any reason other than ctx: taken over, or the store closed.
//
// The ports published in a file written before ports were per node become node's
// first (see adoptPorts), whether the registration then succeeds or not: the file
// serves one node, and the name is the one its agent runs as.
func (b *Bolt) Register(ctx context.Context, node, holder string, ttl time.Duration) (<-chan struct{}, error) {
	if err := CheckRegistration(node, holder, ttl); err != nil {
		return nil, fmt.Errorf("store %s: register node %q: %w", b.path, node, err)
	}
	var old bool
	err := b.db.View(func(tx *bolt.Tx) error {
		old = tx.Bucket(bucketOldPorts) != nil
		return nil
	})
	if err == nil && old { // a write transaction only when there is something to move
		err = b.db.Update(func(tx *bolt.Tx) error { return adoptPorts(tx, node) })
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: register node %q: %w", b.path, node, err)
	}
	lost, err := b.local.Register(ctx, node, holder, ttl)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", b.path, err)
	}
	return lost, nil
}

// adoptPorts moves the ports of a file written before ports were per node (the ports
// bucket) to node and deletes the old bucket; nothing when there is none. A port that
// node publishes already in hostports keeps its owner: it was written later.
func adoptPorts(tx *bolt.Tx, node string) error {
	old := tx.Bucket(bucketOldPorts)
	if old == nil {
		return nil
	}
	top := tx.Bucket(bucketHostPorts)
	if top == nil {
		return fmt.Errorf("store is corrupt: bucket %s is missing", bucketHostPorts)
	}
	nb, err := top.CreateBucketIfNotExists([]byte(node))
	if err != nil {
		return fmt.Errorf("adopt published ports: create bucket %s/%s: %w", bucketHostPorts, node, err)
	}
	err = old.ForEachBucket(func(port []byte) error {
		pb, err := nb.CreateBucketIfNotExists(port)
		if err != nil {
			return fmt.Errorf("create bucket %s/%s/%s: %w", bucketHostPorts, node, port, err)
		}
		return old.Bucket(port).ForEach(func(k, v []byte) error {
			if pb.Get(k) != nil {
				return nil
			}
			// Copies: the old bucket's pages are freed below.
			return pb.Put(bytes.Clone(k), bytes.Clone(v))
		})
	})
	if err != nil {
		return fmt.Errorf("adopt published ports: %w", err)
	}
	if err := tx.DeleteBucket(bucketOldPorts); err != nil {
		return fmt.Errorf("adopt published ports: delete bucket %s: %w", bucketOldPorts, err)
	}
	return nil
}

// Alive implements Store: the nodes registered in this process.
func (b *Bolt) Alive() (map[string]bool, error) {
	alive, err := b.local.Alive()
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", b.path, err)
	}
	return alive, nil
}

// Watch implements Store: fn runs after every Update of this store that wrote
// something and every registration that starts or ends, until ctx ends or the store
// closes.
func (b *Bolt) Watch(ctx context.Context, fn func()) error {
	if err := b.local.Watch(ctx, fn); err != nil {
		return fmt.Errorf("store %s: %w", b.path, err)
	}
	return nil
}

// Close ends the registrations and watches and closes the file; calling it twice is
// harmless.
func (b *Bolt) Close() error {
	b.local.Close()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", b.path, err)
	}
	return nil
}

type boltTx struct {
	tx       *bolt.Tx
	services *DecodedServices
	// wrote is set by the writes that change something, so that an Update that wrote
	// nothing wakes no watcher (a watcher that runs such an Update would loop).
	wrote bool
}

var _ Tx = (*boltTx)(nil)

func (t *boltTx) checkWritable(op string) error {
	if !t.tx.Writable() {
		return fmt.Errorf("%s: %w", op, ErrReadOnly)
	}
	return nil
}

// top returns a top-level bucket; OpenBolt created them all.
func (t *boltTx) top(name []byte) (*bolt.Bucket, error) {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("store is corrupt: bucket %s is missing", name)
	}
	return b, nil
}

// nested returns the bucket of network under a top-level bucket, nil when it does not exist.
func (t *boltTx) nested(top []byte, network string) (*bolt.Bucket, error) {
	b, err := t.top(top)
	if err != nil || network == "" {
		return nil, err
	}
	return b.Bucket([]byte(network)), nil
}

// nestedForWrite returns the bucket of network under a top-level bucket, creating it.
func (t *boltTx) nestedForWrite(top []byte, network string) (*bolt.Bucket, error) {
	b, err := t.top(top)
	if err != nil {
		return nil, err
	}
	if network == "" {
		return nil, errors.New("empty network name")
	}
	nb, err := b.CreateBucketIfNotExists([]byte(network))
	if err != nil {
		return nil, fmt.Errorf("create bucket %s/%s: %w", top, network, err)
	}
	return nb, nil
}

func (t *boltTx) Network(name string) (api.Network, bool, error) {
	b, err := t.top(bucketNetworks)
	if err != nil || name == "" {
		return api.Network{}, false, err
	}
	v := b.Get([]byte(name))
	if v == nil {
		return api.Network{}, false, nil
	}
	n, err := decodeNetwork([]byte(name), v)
	if err != nil {
		return api.Network{}, false, err
	}
	return n, true, nil
}

func (t *boltTx) Networks() ([]api.Network, error) {
	b, err := t.top(bucketNetworks)
	if err != nil {
		return nil, err
	}
	var ns []api.Network
	err = b.ForEach(func(k, v []byte) error {
		n, err := decodeNetwork(k, v)
		if err != nil {
			return err
		}
		ns = append(ns, n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ns, nil
}

// decodeNetwork decodes a network record. The name comes from the key: JSON turns
// bytes that are not UTF-8 into U+FFFD, the key keeps them.
func decodeNetwork(k, v []byte) (api.Network, error) {
	var n api.Network
	if err := json.Unmarshal(v, &n); err != nil {
		return api.Network{}, fmt.Errorf("decode network %q: %w", k, err)
	}
	n.Name = string(k)
	return n, nil
}

func (t *boltTx) PutNetwork(n api.Network) error {
	op := fmt.Sprintf("put network %q", n.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if n.Name == "" {
		return fmt.Errorf("%s: empty name", op)
	}
	b, err := t.top(bucketNetworks)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.wrote = true
	if err := b.Put([]byte(n.Name), v); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *boltTx) DeleteNetwork(name string) error {
	op := fmt.Sprintf("delete network %q", name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	b, err := t.top(bucketNetworks)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if name == "" || b.Get([]byte(name)) == nil {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	t.wrote = true
	if err := b.Delete([]byte(name)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	for _, top := range perNetwork {
		tb, err := t.top(top)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if tb.Bucket([]byte(name)) == nil {
			continue
		}
		if err := tb.DeleteBucket([]byte(name)); err != nil {
			return fmt.Errorf("%s: delete %s: %w", op, top, err)
		}
	}
	return nil
}

// endpointKey encodes the part of k below the network bucket; ok is false when k
// cannot be stored (a NUL in the container id or the interface name).
func endpointKey(k api.EndpointKey) ([]byte, bool) {
	if strings.IndexByte(k.ContainerID, 0) >= 0 || strings.IndexByte(k.IfName, 0) >= 0 {
		return nil, false
	}
	key := make([]byte, 0, len(k.ContainerID)+1+len(k.IfName))
	key = append(key, k.ContainerID...)
	key = append(key, 0)
	key = append(key, k.IfName...)
	return key, true
}

// decodeEndpoint decodes an endpoint record. The key fields come from the bucket and
// the key: JSON turns bytes that are not UTF-8 into U+FFFD, keys keep them.
func decodeEndpoint(network string, k, v []byte) (api.Endpoint, error) {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return api.Endpoint{}, fmt.Errorf("decode endpoint key %q in network %q: no separator", k, network)
	}
	var ep api.Endpoint
	if err := json.Unmarshal(v, &ep); err != nil {
		return api.Endpoint{}, fmt.Errorf("decode endpoint %q in network %q: %w", k, network, err)
	}
	ep.EndpointKey = api.EndpointKey{Network: network, ContainerID: string(k[:i]), IfName: string(k[i+1:])}
	return ep, nil
}

func (t *boltTx) Endpoint(k api.EndpointKey) (api.Endpoint, bool, error) {
	b, err := t.nested(bucketEndpoints, k.Network)
	if err != nil || b == nil {
		return api.Endpoint{}, false, err
	}
	key, ok := endpointKey(k)
	if !ok {
		return api.Endpoint{}, false, nil
	}
	v := b.Get(key)
	if v == nil {
		return api.Endpoint{}, false, nil
	}
	ep, err := decodeEndpoint(k.Network, key, v)
	if err != nil {
		return api.Endpoint{}, false, err
	}
	return ep, true, nil
}

func (t *boltTx) Endpoints(network string) ([]api.Endpoint, error) {
	var eps []api.Endpoint
	list := func(network string, b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			ep, err := decodeEndpoint(network, k, v)
			if err != nil {
				return err
			}
			eps = append(eps, ep)
			return nil
		})
	}
	if network != "" {
		b, err := t.nested(bucketEndpoints, network)
		if err != nil || b == nil {
			return nil, err
		}
		if err := list(network, b); err != nil {
			return nil, err
		}
		return eps, nil
	}
	top, err := t.top(bucketEndpoints)
	if err != nil {
		return nil, err
	}
	// Nested buckets come in the order of their names, so the result is sorted by key.
	err = top.ForEachBucket(func(name []byte) error {
		return list(string(name), top.Bucket(name))
	})
	if err != nil {
		return nil, err
	}
	return eps, nil
}

func (t *boltTx) PutEndpoint(ep api.Endpoint) error {
	op := fmt.Sprintf("put endpoint %s", ep.EndpointKey)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	key, ok := endpointKey(ep.EndpointKey)
	if !ok {
		return fmt.Errorf("%s: container id or interface name contains NUL", op)
	}
	if _, ok, err := t.Network(ep.Network); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: network %q: %w", op, ep.Network, ErrNotFound)
	}
	t.wrote = true
	b, err := t.nestedForWrite(bucketEndpoints, ep.Network)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := json.Marshal(ep)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	if err := b.Put(key, v); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *boltTx) DeleteEndpoint(k api.EndpointKey) error {
	op := fmt.Sprintf("delete endpoint %s", k)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	b, err := t.nested(bucketEndpoints, k.Network)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	key, ok := endpointKey(k)
	if b == nil || !ok || b.Get(key) == nil {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	t.wrote = true
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func addrKey(a netip.Addr) ([]byte, error) {
	if !a.IsValid() {
		return nil, errors.New("invalid address")
	}
	return a.MarshalBinary()
}

func (t *boltTx) Allocation(network string, a netip.Addr) (string, bool, error) {
	b, err := t.nested(bucketAllocations, network)
	if err != nil || b == nil || !a.IsValid() {
		return "", false, err
	}
	key, err := addrKey(a)
	if err != nil {
		return "", false, fmt.Errorf("allocation %s in network %q: %w", a, network, err)
	}
	v := b.Get(key)
	if v == nil {
		return "", false, nil
	}
	return string(v), true, nil
}

func (t *boltTx) Allocations(network string) (map[netip.Addr]string, error) {
	m := make(map[netip.Addr]string)
	b, err := t.nested(bucketAllocations, network)
	if err != nil || b == nil {
		return m, err
	}
	err = b.ForEach(func(k, v []byte) error {
		var a netip.Addr
		if err := a.UnmarshalBinary(k); err != nil {
			return fmt.Errorf("decode allocation key %x in network %q: %w", k, network, err)
		}
		m[a] = string(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// AllocationsOf implements Tx with a prefix scan of the owners index.
func (t *boltTx) AllocationsOf(network, owner string) ([]netip.Addr, error) {
	b, err := t.nested(bucketOwners, network)
	if err != nil || b == nil || owner == "" || strings.IndexByte(owner, 0) >= 0 {
		return nil, err
	}
	prefix := append([]byte(owner), 0)
	var out []netip.Addr
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		var a netip.Addr
		if err := a.UnmarshalBinary(k[len(prefix):]); err != nil {
			return nil, fmt.Errorf("decode owners key %x in network %q: %w", k, network, err)
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// ownerKey is the owners index key of owner holding the address whose key is addr.
func ownerKey(owner string, addr []byte) []byte {
	return append(append([]byte(owner), 0), addr...)
}

// indexOwners builds the owners index from the allocations.
func indexOwners(tx *bolt.Tx) error {
	allocs, owners := tx.Bucket(bucketAllocations), tx.Bucket(bucketOwners)
	return allocs.ForEachBucket(func(network []byte) error {
		ob, err := owners.CreateBucketIfNotExists(network)
		if err != nil {
			return fmt.Errorf("index allocations of network %q: %w", network, err)
		}
		return allocs.Bucket(network).ForEach(func(k, v []byte) error {
			return ob.Put(ownerKey(string(v), k), nil)
		})
	})
}

func (t *boltTx) PutAllocation(network string, a netip.Addr, owner string) error {
	op := fmt.Sprintf("put allocation %s in network %q", a, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if owner == "" || strings.IndexByte(owner, 0) >= 0 {
		return fmt.Errorf("%s: owner %q: empty or holding NUL", op, owner)
	}
	key, err := addrKey(a)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	t.wrote = true
	b, err := t.nestedForWrite(bucketAllocations, network)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ob, err := t.nestedForWrite(bucketOwners, network)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if old := b.Get(key); old != nil {
		if err := ob.Delete(ownerKey(string(old), key)); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	if err := b.Put(key, []byte(owner)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := ob.Put(ownerKey(owner, key), nil); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *boltTx) DeleteAllocation(network string, a netip.Addr) error {
	op := fmt.Sprintf("delete allocation %s in network %q", a, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	b, err := t.nested(bucketAllocations, network)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if b == nil || !a.IsValid() {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	key, err := addrKey(a)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	owner := b.Get(key)
	if owner == nil {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	t.wrote = true
	ob, err := t.nestedForWrite(bucketOwners, network)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := ob.Delete(ownerKey(string(owner), key)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func cursorKey(subnet netip.Prefix) ([]byte, error) {
	if !subnet.IsValid() {
		return nil, errors.New("invalid subnet")
	}
	return subnet.Masked().MarshalBinary()
}

func (t *boltTx) Cursor(network string, subnet netip.Prefix) (netip.Addr, bool, error) {
	b, err := t.nested(bucketCursors, network)
	if err != nil || b == nil || !subnet.IsValid() {
		return netip.Addr{}, false, err
	}
	key, err := cursorKey(subnet)
	if err != nil {
		return netip.Addr{}, false, fmt.Errorf("cursor of subnet %s in network %q: %w", subnet, network, err)
	}
	v := b.Get(key)
	if v == nil {
		return netip.Addr{}, false, nil
	}
	var a netip.Addr
	if err := a.UnmarshalBinary(v); err != nil {
		return netip.Addr{}, false, fmt.Errorf("decode cursor of subnet %s in network %q: %w", subnet, network, err)
	}
	return a, true, nil
}

func (t *boltTx) PutCursor(network string, subnet netip.Prefix, a netip.Addr) error {
	op := fmt.Sprintf("put cursor of subnet %s in network %q", subnet, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	key, err := cursorKey(subnet)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := addrKey(a)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	t.wrote = true
	b, err := t.nestedForWrite(bucketCursors, network)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := b.Put(key, v); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func portBucket(proto string, port uint16) string { return fmt.Sprintf("%s/%d", proto, port) }

func portHostKey(hostIP netip.Addr) ([]byte, error) {
	if !hostIP.IsValid() {
		return []byte("*"), nil
	}
	return hostIP.MarshalBinary()
}

// ports returns the bucket of proto port of node, nil when it does not exist.
func (t *boltTx) ports(node, proto string, port uint16) (*bolt.Bucket, error) {
	nb, err := t.nested(bucketHostPorts, node)
	if err != nil || nb == nil {
		return nil, err
	}
	return nb.Bucket([]byte(portBucket(proto, port))), nil
}

func (t *boltTx) PortOwners(node, proto string, port uint16) (map[netip.Addr]string, error) {
	m := make(map[netip.Addr]string)
	b, err := t.ports(node, proto, port)
	if err != nil || b == nil {
		return m, err
	}
	err = b.ForEach(func(k, v []byte) error {
		var a netip.Addr
		if string(k) != "*" {
			if err := a.UnmarshalBinary(k); err != nil {
				return fmt.Errorf("decode port key %x of %s of node %q: %w", k, portBucket(proto, port), node, err)
			}
		}
		m[a] = string(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (t *boltTx) PutPort(node, proto string, hostIP netip.Addr, port uint16, owner string) error {
	op := fmt.Sprintf("put port %s %s of node %q", portBucket(proto, port), hostIP, node)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := CheckPort(node, proto, owner); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	key, err := portHostKey(hostIP)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	t.wrote = true
	nb, err := t.nestedForWrite(bucketHostPorts, node)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	b, err := nb.CreateBucketIfNotExists([]byte(portBucket(proto, port)))
	if err != nil {
		return fmt.Errorf("%s: create bucket: %w", op, err)
	}
	if err := b.Put(key, []byte(owner)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *boltTx) DeletePort(node, proto string, hostIP netip.Addr, port uint16) error {
	op := fmt.Sprintf("delete port %s %s of node %q", portBucket(proto, port), hostIP, node)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	b, err := t.ports(node, proto, port)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	key, err := portHostKey(hostIP)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if b == nil || b.Get(key) == nil {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	t.wrote = true
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func serviceKey(namespace, name string) ([]byte, error) {
	if namespace == "" || name == "" || strings.ContainsRune(namespace, 0) || strings.ContainsRune(name, 0) {
		return nil, fmt.Errorf("service %q/%q: empty or NUL in namespace or name", namespace, name)
	}
	return []byte(namespace + "\x00" + name), nil
}

func (t *boltTx) Service(namespace, name string) (api.Service, bool, error) {
	b, err := t.top(bucketServices)
	if err != nil {
		return api.Service{}, false, err
	}
	key, err := serviceKey(namespace, name)
	if err != nil {
		return api.Service{}, false, nil
	}
	v := b.Get(key)
	if v == nil {
		return api.Service{}, false, nil
	}
	svc, err := t.services.Decode(string(key), v, decodeJSONService)
	if err != nil {
		return api.Service{}, false, fmt.Errorf("decode service %s/%s: %w", namespace, name, err)
	}
	return svc, true, nil
}

func (t *boltTx) Services(namespace string) ([]api.Service, error) {
	b, err := t.top(bucketServices)
	if err != nil {
		return nil, err
	}
	var out []api.Service
	prefix := []byte(nil)
	if namespace != "" {
		prefix = []byte(namespace + "\x00")
	}
	var seen map[string]bool // the keys of a full listing
	if namespace == "" {
		seen = map[string]bool{}
	}
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		svc, err := t.services.Decode(string(k), v, decodeJSONService)
		if err != nil {
			return nil, fmt.Errorf("decode service %q: %w", k, err)
		}
		out = append(out, svc)
		if seen != nil {
			seen[string(k)] = true
		}
	}
	if seen != nil {
		t.services.Keep(seen)
	}
	return out, nil
}

func (t *boltTx) PutService(svc api.Service) error {
	op := fmt.Sprintf("put service %s/%s", svc.Namespace, svc.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	key, err := serviceKey(svc.Namespace, svc.Name)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	svc.Backends = nil // derived, never stored
	v, err := json.Marshal(svc)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	b, err := t.top(bucketServices)
	if err != nil {
		return err
	}
	t.wrote = true
	if err := b.Put(key, v); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *boltTx) DeleteService(namespace, name string) error {
	op := fmt.Sprintf("delete service %s/%s", namespace, name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	b, err := t.top(bucketServices)
	if err != nil {
		return err
	}
	key, err := serviceKey(namespace, name)
	if err != nil || b.Get(key) == nil {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	t.wrote = true
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// networkPolicyKey is the key of a policy: namespace NUL name, which sorts like (namespace,
// name).
func networkPolicyKey(namespace, name string) []byte { return []byte(namespace + "\x00" + name) }

// decodeNetworkPolicy decodes a policy record. The namespace and the name come from the key.
func decodeNetworkPolicy(k, v []byte) (api.NetworkPolicy, error) {
	namespace, name, ok := bytes.Cut(k, []byte{0})
	if !ok {
		return api.NetworkPolicy{}, fmt.Errorf("decode network policy %q: key without NUL", k)
	}
	var p api.NetworkPolicy
	if err := json.Unmarshal(v, &p); err != nil {
		return api.NetworkPolicy{}, fmt.Errorf("decode network policy %s/%s: %w", namespace, name, err)
	}
	p.Namespace, p.Name = string(namespace), string(name)
	return p, nil
}

func (t *boltTx) NetworkPolicy(namespace, name string) (api.NetworkPolicy, bool, error) {
	b, err := t.top(bucketNetworkPolicies)
	if err != nil || CheckNetworkPolicy(api.NetworkPolicy{Namespace: namespace, Name: name}) != nil {
		return api.NetworkPolicy{}, false, err
	}
	k := networkPolicyKey(namespace, name)
	v := b.Get(k)
	if v == nil {
		return api.NetworkPolicy{}, false, nil
	}
	p, err := decodeNetworkPolicy(k, v)
	if err != nil {
		return api.NetworkPolicy{}, false, err
	}
	return p, true, nil
}

func (t *boltTx) NetworkPolicies(namespace string) ([]api.NetworkPolicy, error) {
	b, err := t.top(bucketNetworkPolicies)
	if err != nil {
		return nil, err
	}
	var prefix []byte
	if namespace != "" {
		if CheckNamespace(api.Namespace{Name: namespace}) != nil {
			return nil, nil // no policy has it
		}
		prefix = []byte(namespace + "\x00")
	}
	var out []api.NetworkPolicy
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		p, err := decodeNetworkPolicy(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func (t *boltTx) PutNetworkPolicy(p api.NetworkPolicy) error {
	op := fmt.Sprintf("put network policy %s/%s", p.Namespace, p.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := CheckNetworkPolicy(p); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	b, err := t.top(bucketNetworkPolicies)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.wrote = true
	if err := b.Put(networkPolicyKey(p.Namespace, p.Name), v); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *boltTx) DeleteNetworkPolicy(namespace, name string) error {
	op := fmt.Sprintf("delete network policy %s/%s", namespace, name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	b, err := t.top(bucketNetworkPolicies)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	k := networkPolicyKey(namespace, name)
	if CheckNetworkPolicy(api.NetworkPolicy{Namespace: namespace, Name: name}) != nil || b.Get(k) == nil {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	t.wrote = true
	if err := b.Delete(k); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// decodeNamespace decodes a namespace record. The name comes from the key.
func decodeNamespace(k, v []byte) (api.Namespace, error) {
	var ns api.Namespace
	if err := json.Unmarshal(v, &ns); err != nil {
		return api.Namespace{}, fmt.Errorf("decode namespace %q: %w", k, err)
	}
	ns.Name = string(k)
	return ns, nil
}

func (t *boltTx) Namespace(name string) (api.Namespace, bool, error) {
	if CheckNamespace(api.Namespace{Name: name}) != nil {
		return api.Namespace{}, false, nil
	}
	return getRecord(t, bucketNamespaces, []byte(name), decodeNamespace)
}

func (t *boltTx) Namespaces() ([]api.Namespace, error) {
	return listRecords(t, bucketNamespaces, decodeNamespace)
}

func (t *boltTx) PutNamespace(ns api.Namespace) error {
	return t.putRecord(fmt.Sprintf("put namespace %q", ns.Name), bucketNamespaces, []byte(ns.Name), ns, CheckNamespace(ns))
}

func (t *boltTx) DeleteNamespace(name string) error {
	return t.deleteRecord(fmt.Sprintf("delete namespace %q", name), bucketNamespaces, []byte(name), CheckNamespace(api.Namespace{Name: name}) == nil)
}

// podKey is the key of a pod record: namespace NUL name, which sorts like (namespace,
// name).
func podKey(namespace, name string) []byte { return []byte(namespace + "\x00" + name) }

// decodePod decodes a pod record. The namespace and the name come from the key.
func decodePod(k, v []byte) (api.Pod, error) {
	namespace, name, ok := bytes.Cut(k, []byte{0})
	if !ok {
		return api.Pod{}, fmt.Errorf("decode pod %q: key without NUL", k)
	}
	var p api.Pod
	if err := json.Unmarshal(v, &p); err != nil {
		return api.Pod{}, fmt.Errorf("decode pod %s/%s: %w", namespace, name, err)
	}
	p.Namespace, p.Name = string(namespace), string(name)
	return p, nil
}

func (t *boltTx) Pod(namespace, name string) (api.Pod, bool, error) {
	if CheckPod(api.Pod{Namespace: namespace, Name: name}) != nil {
		return api.Pod{}, false, nil
	}
	return getRecord(t, bucketPods, podKey(namespace, name), decodePod)
}

func (t *boltTx) Pods(namespace string) ([]api.Pod, error) {
	var prefix []byte
	if namespace != "" {
		if CheckNamespace(api.Namespace{Name: namespace}) != nil {
			return nil, nil // no pod has it
		}
		prefix = []byte(namespace + "\x00")
	}
	return listRecordsUnder(t, bucketPods, prefix, decodePod)
}

func (t *boltTx) PutPod(p api.Pod) error {
	return t.putRecord(fmt.Sprintf("put pod %s/%s", p.Namespace, p.Name), bucketPods, podKey(p.Namespace, p.Name), p, CheckPod(p))
}

func (t *boltTx) DeletePod(namespace, name string) error {
	return t.deleteRecord(fmt.Sprintf("delete pod %s/%s", namespace, name), bucketPods, podKey(namespace, name),
		CheckPod(api.Pod{Namespace: namespace, Name: name}) == nil)
}

// decodeNode decodes a node record. The name comes from the key; Alive is not stored.
func decodeNode(k, v []byte) (api.Node, error) {
	var n api.Node
	if err := json.Unmarshal(v, &n); err != nil {
		return api.Node{}, fmt.Errorf("decode node %q: %w", k, err)
	}
	n.Name, n.Alive = string(k), false
	return n, nil
}

func (t *boltTx) Node(name string) (api.Node, bool, error) {
	if name == "" {
		return api.Node{}, false, nil
	}
	return getRecord(t, bucketNodes, []byte(name), decodeNode)
}

func (t *boltTx) Nodes() ([]api.Node, error) {
	return listRecords(t, bucketNodes, decodeNode)
}

func (t *boltTx) PutNode(n api.Node) error {
	n.Alive = false // read from the leases, never stored
	return t.putRecord(fmt.Sprintf("put node %q", n.Name), bucketNodes, []byte(n.Name), n, CheckNode(n))
}

func (t *boltTx) DeleteNode(name string) error {
	return t.deleteRecord(fmt.Sprintf("delete node %q", name), bucketNodes, []byte(name), name != "")
}

// decodeBlock decodes a block record. Network and prefix come from the bucket and the
// key.
func decodeBlock(network string, k, v []byte) (api.Block, error) {
	var p netip.Prefix
	if err := p.UnmarshalBinary(k); err != nil {
		return api.Block{}, fmt.Errorf("decode block key %x in network %q: %w", k, network, err)
	}
	var b api.Block
	if err := json.Unmarshal(v, &b); err != nil {
		return api.Block{}, fmt.Errorf("decode block %s in network %q: %w", p, network, err)
	}
	b.Network, b.Prefix = network, p
	return b, nil
}

// compareBlocks orders blocks by network and prefix. Prefix keys do not sort like
// prefixes (an IPv6 key may sort before an IPv4 one), so listings sort after reading.
func compareBlocks(a, b api.Block) int {
	if c := strings.Compare(a.Network, b.Network); c != 0 {
		return c
	}
	return a.Prefix.Compare(b.Prefix)
}

func (t *boltTx) Block(network string, prefix netip.Prefix) (api.Block, bool, error) {
	b, err := t.nested(bucketBlocks, network)
	if err != nil || b == nil || !IsBlockPrefix(prefix) {
		return api.Block{}, false, err
	}
	key, err := prefix.MarshalBinary()
	if err != nil {
		return api.Block{}, false, fmt.Errorf("block %s in network %q: %w", prefix, network, err)
	}
	v := b.Get(key)
	if v == nil {
		return api.Block{}, false, nil
	}
	blk, err := decodeBlock(network, key, v)
	if err != nil {
		return api.Block{}, false, err
	}
	return blk, true, nil
}

func (t *boltTx) Blocks(network string) ([]api.Block, error) {
	var out []api.Block
	list := func(network string, b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			blk, err := decodeBlock(network, k, v)
			if err != nil {
				return err
			}
			out = append(out, blk)
			return nil
		})
	}
	if network != "" {
		b, err := t.nested(bucketBlocks, network)
		if err != nil || b == nil {
			return nil, err
		}
		if err := list(network, b); err != nil {
			return nil, err
		}
	} else {
		top, err := t.top(bucketBlocks)
		if err != nil {
			return nil, err
		}
		err = top.ForEachBucket(func(name []byte) error {
			return list(string(name), top.Bucket(name))
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, compareBlocks)
	return out, nil
}

func (t *boltTx) PutBlock(blk api.Block) error {
	op := fmt.Sprintf("put block %s in network %q", blk.Prefix, blk.Network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := CheckBlock(blk); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if _, ok, err := t.Network(blk.Network); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: network %q: %w", op, blk.Network, ErrNotFound)
	}
	key, err := blk.Prefix.MarshalBinary()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := json.Marshal(blk)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.wrote = true
	b, err := t.nestedForWrite(bucketBlocks, blk.Network)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := b.Put(key, v); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *boltTx) DeleteBlock(network string, prefix netip.Prefix) error {
	op := fmt.Sprintf("delete block %s in network %q", prefix, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	b, err := t.nested(bucketBlocks, network)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if b == nil || !IsBlockPrefix(prefix) {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	key, err := prefix.MarshalBinary()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if b.Get(key) == nil {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	t.wrote = true
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *boltTx) BGPConfig() (api.BGPConfig, bool, error) {
	b, err := t.top(bucketBGPConfig)
	if err != nil {
		return api.BGPConfig{}, false, err
	}
	v := b.Get(keyBGPConfig)
	if v == nil {
		return api.BGPConfig{}, false, nil
	}
	var c api.BGPConfig
	if err := json.Unmarshal(v, &c); err != nil {
		return api.BGPConfig{}, false, fmt.Errorf("decode bgp config: %w", err)
	}
	return c, true, nil
}

func (t *boltTx) PutBGPConfig(c api.BGPConfig) error {
	const op = "put bgp config"
	if err := t.checkWritable(op); err != nil {
		return err
	}
	b, err := t.top(bucketBGPConfig)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.wrote = true
	if err := b.Put(keyBGPConfig, v); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// decodeBGPPeer decodes a peer record. The name comes from the key.
func decodeBGPPeer(k, v []byte) (api.BGPPeer, error) {
	var p api.BGPPeer
	if err := json.Unmarshal(v, &p); err != nil {
		return api.BGPPeer{}, fmt.Errorf("decode bgp peer %q: %w", k, err)
	}
	p.Name = string(k)
	return p, nil
}

func (t *boltTx) BGPPeer(name string) (api.BGPPeer, bool, error) {
	if name == "" {
		return api.BGPPeer{}, false, nil
	}
	return getRecord(t, bucketBGPPeers, []byte(name), decodeBGPPeer)
}

func (t *boltTx) BGPPeers() ([]api.BGPPeer, error) {
	return listRecords(t, bucketBGPPeers, decodeBGPPeer)
}

func (t *boltTx) PutBGPPeer(p api.BGPPeer) error {
	return t.putRecord(fmt.Sprintf("put bgp peer %q", p.Name), bucketBGPPeers, []byte(p.Name), p, CheckBGPPeer(p))
}

func (t *boltTx) DeleteBGPPeer(name string) error {
	return t.deleteRecord(fmt.Sprintf("delete bgp peer %q", name), bucketBGPPeers, []byte(name), name != "")
}

// Records of a top-level bucket: key -> JSON, the key naming the record (nodes, BGP
// peers, namespaces, pods). decode fills in what the key holds.

func getRecord[T any](t *boltTx, bucket, key []byte, decode func(k, v []byte) (T, error)) (T, bool, error) {
	var zero T
	b, err := t.top(bucket)
	if err != nil {
		return zero, false, err
	}
	v := b.Get(key)
	if v == nil {
		return zero, false, nil
	}
	rec, err := decode(key, v)
	if err != nil {
		return zero, false, err
	}
	return rec, true, nil
}

func listRecords[T any](t *boltTx, bucket []byte, decode func(k, v []byte) (T, error)) ([]T, error) {
	b, err := t.top(bucket)
	if err != nil {
		return nil, err
	}
	var out []T
	err = b.ForEach(func(k, v []byte) error {
		rec, err := decode(k, v)
		if err != nil {
			return err
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// listRecordsUnder lists the records whose keys start with prefix (all when it is
// empty), in key order.
func listRecordsUnder[T any](t *boltTx, bucket, prefix []byte, decode func(k, v []byte) (T, error)) ([]T, error) {
	b, err := t.top(bucket)
	if err != nil {
		return nil, err
	}
	var out []T
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		rec, err := decode(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// putRecord stores rec under key, unless the transaction is read-only or invalid (the
// record's check) is set.
func (t *boltTx) putRecord(op string, bucket, key []byte, rec any, invalid error) error {
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if invalid != nil {
		return fmt.Errorf("%s: %w", op, invalid)
	}
	b, err := t.top(bucket)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.wrote = true
	if err := b.Put(key, v); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// deleteRecord removes the record under key: ErrNotFound when there is none or the key
// is not valid (no record can have it).
func (t *boltTx) deleteRecord(op string, bucket, key []byte, valid bool) error {
	if err := t.checkWritable(op); err != nil {
		return err
	}
	b, err := t.top(bucket)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if !valid || b.Get(key) == nil {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	t.wrote = true
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}
