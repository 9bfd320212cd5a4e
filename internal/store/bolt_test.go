package store_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/storetest"
)

func openBolt(t *testing.T, path string) *store.Bolt {
	t.Helper()
	b, err := store.OpenBolt(path)
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return b
}

func TestBoltConformance(t *testing.T) {
	storetest.Conformance(t, func(t *testing.T) store.Store {
		return openBolt(t, filepath.Join(t.TempDir(), "podnet.db"))
	})
}

func TestBoltCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "podnet")
	path := filepath.Join(dir, "podnet.db")
	openBolt(t, path)
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{path, 0o600},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may only remove bits.
		if fi.Mode()&^c.mode != 0 {
			t.Errorf("%s has mode %v; want at most %v", c.path, fi.Mode(), c.mode)
		}
	}
}

func TestBoltPersistsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podnet.db")
	subnet := netip.MustParsePrefix("10.88.0.0/16")
	a := netip.MustParseAddr("10.88.0.5")
	ep := api.Endpoint{
		EndpointKey: api.EndpointKey{Network: "red", ContainerID: "c/1", IfName: "eth0"},
		IPs:         []netip.Prefix{netip.PrefixFrom(a, 16)},
	}
	node := api.Node{Name: "n1", IP: netip.MustParseAddr("192.0.2.1"), Version: "v1", Registered: time.Unix(1e9, 0).UTC()}
	block := api.Block{Network: "red", Prefix: netip.MustParsePrefix("10.88.0.0/26"), Node: "n1", Claimed: time.Unix(1e9, 0).UTC()}

	b, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx store.Tx) error {
		if err := tx.PutNetwork(storetest.SampleNetwork("red")); err != nil {
			return err
		}
		if err := tx.PutEndpoint(ep); err != nil {
			return err
		}
		if err := tx.PutAllocation("red", a, ep.String()); err != nil {
			return err
		}
		if err := tx.PutNode(node); err != nil {
			return err
		}
		if err := tx.PutBlock(block); err != nil {
			return err
		}
		return tx.PutCursor("red", subnet, a)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openBolt(t, path)
	err = b.View(func(tx store.Tx) error {
		n, ok, err := tx.Network("red")
		if err != nil || !ok || n.Subnets[1].Prefix != storetest.SampleNetwork("red").Subnets[1].Prefix || !n.Created.Equal(storetest.SampleNetwork("red").Created) {
			t.Errorf("network after reopen = %+v, %v, %v", n, ok, err)
		}
		got, ok, err := tx.Endpoint(ep.EndpointKey)
		if err != nil || !ok || got.EndpointKey != ep.EndpointKey || len(got.IPs) != 1 || got.IPs[0] != ep.IPs[0] {
			t.Errorf("endpoint after reopen = %+v, %v, %v", got, ok, err)
		}
		owner, ok, err := tx.Allocation("red", a)
		if err != nil || !ok || owner != ep.String() {
			t.Errorf("allocation after reopen = %q, %v, %v", owner, ok, err)
		}
		c, ok, err := tx.Cursor("red", subnet)
		if err != nil || !ok || c != a {
			t.Errorf("cursor after reopen = %s, %v, %v", c, ok, err)
		}
		if n, ok, err := tx.Node("n1"); err != nil || !ok || !reflect.DeepEqual(n, node) {
			t.Errorf("node after reopen = %+v, %v, %v; want %+v", n, ok, err, node)
		}
		if got, ok, err := tx.Block("red", block.Prefix); err != nil || !ok || got != block {
			t.Errorf("block after reopen = %+v, %v, %v; want %+v", got, ok, err, block)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A store written before the owners index existed gets the index built when it is
// opened.
func TestBoltIndexesOwnersOfAnOlderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podnet.db")
	a, b6 := netip.MustParseAddr("10.88.0.5"), netip.MustParseAddr("fd00::5")
	s, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx store.Tx) error {
		if err := tx.PutNetwork(storetest.SampleNetwork("red")); err != nil {
			return err
		}
		if err := tx.PutAllocation("red", a, "red/c1/eth0"); err != nil {
			return err
		}
		return tx.PutAllocation("red", b6, "red/c1/eth0")
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// What an older podnet wrote: no owners bucket.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("owners")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s = openBolt(t, path)
	err = s.View(func(tx store.Tx) error {
		held, err := tx.AllocationsOf("red", "red/c1/eth0")
		if err != nil || len(held) != 2 || held[0] != a || held[1] != b6 {
			t.Errorf("AllocationsOf after reopening an older file = %v, %v; want [%s %s]", held, err, a, b6)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A store written before ports were per node has them in a ports bucket, without a
// node: the node that registers first gets them, so that a port published before the
// upgrade still conflicts and can be released after it.
func TestBoltAdoptsPortsOfAnOlderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podnet.db")
	h1 := netip.MustParseAddr("192.0.2.1")
	s, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What an older podnet wrote: ports/<proto>/<port> -> host ("*": all) -> owner,
	// and no hostports bucket.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte("hostports")); err != nil {
			return err
		}
		ports, err := tx.CreateBucket([]byte("ports"))
		if err != nil {
			return err
		}
		tcp, err := ports.CreateBucket([]byte("tcp/8080"))
		if err != nil {
			return err
		}
		if err := tcp.Put([]byte("*"), []byte("red/c1/eth0")); err != nil {
			return err
		}
		udp, err := ports.CreateBucket([]byte("udp/53"))
		if err != nil {
			return err
		}
		k, _ := h1.MarshalBinary()
		return udp.Put(k, []byte("red/c2/eth0"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = openBolt(t, path)
	// Written by the upgraded agent before it registered: kept over the old entry.
	err = s.Update(func(tx store.Tx) error { return tx.PutPort("n1", "udp", h1, 53, "red/c3/eth0") })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(t.Context(), "n1", "192.0.2.1", time.Minute); err != nil {
		t.Fatal(err)
	}
	web := api.PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}
	err = s.View(func(tx store.Tx) error {
		owners, err := tx.PortOwners("n1", "tcp", 8080)
		if err != nil {
			return err
		}
		if _, other, clash := spec.PortConflict(web, owners); !clash || other != "red/c1/eth0" {
			t.Errorf("publishing %s after the upgrade: owners %v, conflict %v with %q; want a conflict with red/c1/eth0", web, owners, clash, other)
		}
		if owners, err := tx.PortOwners("n1", "udp", 53); err != nil || !maps.Equal(owners, map[netip.Addr]string{h1: "red/c3/eth0"}) {
			t.Errorf("PortOwners(n1, udp, 53) = %v, %v; want the entry written after the upgrade", owners, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A second node (tests, or a renamed node) gets nothing: the old entries moved once.
	if _, err := s.Register(t.Context(), "n2", "192.0.2.2", time.Minute); err != nil {
		t.Fatal(err)
	}
	err = s.View(func(tx store.Tx) error {
		if owners, err := tx.PortOwners("n2", "tcp", 8080); err != nil || len(owners) != 0 {
			t.Errorf("PortOwners(n2, tcp, 8080) = %v, %v; want none", owners, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx store.Tx) error { return tx.DeletePort("n1", "tcp", netip.Addr{}, 8080) }); err != nil {
		t.Errorf("releasing the port published before the upgrade: %v", err)
	}
	err = s.Update(func(tx store.Tx) error { return tx.DeletePort("n1", "tcp", netip.Addr{}, 8080) })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("releasing it twice: %v; want ErrNotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("ports")) != nil {
			t.Error("the old ports bucket is still there after Register")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBoltPanicInUpdate checks that a panicking transaction releases the writer lock.
func TestBoltPanicInUpdate(t *testing.T) {
	b := openBolt(t, filepath.Join(t.TempDir(), "podnet.db"))
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v; want boom", r)
			}
		}()
		_ = b.Update(func(tx store.Tx) error {
			if err := tx.PutNetwork(storetest.SampleNetwork("red")); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	err := b.Update(func(tx store.Tx) error {
		if _, ok, err := tx.Network("red"); ok || err != nil {
			return errors.New("write of the panicking transaction was committed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBoltLockedReportsPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podnet.db")
	openBolt(t, path)
	_, err := store.OpenBoltTimeout(path, 50*time.Millisecond)
	if err == nil {
		t.Fatal("second open of a locked store: no error")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Errorf("error %q does not say that %s is locked", err, path)
	}
}

// A store written before clusters, policies and pods existed (no nodes, blocks, BGP,
// network policies, namespaces and pods buckets) gets them when it is opened.
func TestBoltOpensAFileWithoutClusterBuckets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podnet.db")
	s, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return errors.Join(tx.DeleteBucket([]byte("nodes")), tx.DeleteBucket([]byte("blocks")),
			tx.DeleteBucket([]byte("bgpconfig")), tx.DeleteBucket([]byte("bgppeers")),
			tx.DeleteBucket([]byte("networkpolicies")), tx.DeleteBucket([]byte("namespaces")),
			tx.DeleteBucket([]byte("pods")))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s = openBolt(t, path)
	err = s.Update(func(tx store.Tx) error {
		if err := tx.PutNode(api.Node{Name: "n1"}); err != nil {
			return err
		}
		if err := tx.PutBGPConfig(api.BGPConfig{ASN: api.DefaultASN}); err != nil {
			return err
		}
		if err := tx.PutBGPPeer(api.BGPPeer{Name: "tor1"}); err != nil {
			return err
		}
		if err := tx.PutNetworkPolicy(api.NetworkPolicy{Namespace: "default", Name: "deny"}); err != nil {
			return err
		}
		if err := tx.PutNamespace(api.Namespace{Name: "default"}); err != nil {
			return err
		}
		if err := tx.PutPod(api.Pod{Namespace: "default", Name: "web-0"}); err != nil {
			return err
		}
		return tx.PutBlock(api.Block{Network: "red", Prefix: netip.MustParsePrefix("10.88.0.0/26"), Node: "n1"})
	})
	if err != nil {
		t.Errorf("writing nodes, blocks, BGP settings, policies, namespaces and pods to an older file: %v", err)
	}
}

// TestBoltWatchSkipsEmptyUpdates: an Update that changes nothing (deletes of what is
// gone, errors ignored, as a reconciler does) wakes no watch; a watch that runs such
// an Update would otherwise wake itself forever. One that writes does.
func TestBoltWatchSkipsEmptyUpdates(t *testing.T) {
	b := openBolt(t, filepath.Join(t.TempDir(), "podnet.db"))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	busy := make(chan struct{})
	err := b.Watch(ctx, func() {
		select {
		case busy <- struct{}{}:
		case <-ctx.Done():
		}
		<-ctx.Done() // stays in the call: later changes wait, pending
	})
	if err != nil {
		t.Fatal(err)
	}
	write := func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) }
	if err := b.Update(write); err != nil {
		t.Fatal(err)
	}
	select {
	case <-busy:
	case <-time.After(10 * time.Second):
		t.Fatal("fn not called within 10s of an update")
	}
	p := netip.MustParsePrefix("10.88.0.0/26")
	err = b.Update(func(tx store.Tx) error {
		for _, err := range []error{
			tx.DeleteNetwork("nosuch"),
			tx.DeleteEndpoint(api.EndpointKey{Network: "red", ContainerID: "c1", IfName: "eth0"}),
			tx.DeleteAllocation("red", netip.MustParseAddr("10.88.0.5")),
			tx.DeletePort("n1", "tcp", netip.Addr{}, 80),
			tx.PutPort("", "tcp", netip.Addr{}, 80, "o"),
			tx.DeleteService("default", "web"),
			tx.DeleteNode("n1"),
			tx.DeleteBGPPeer("tor1"),
			tx.PutBGPPeer(api.BGPPeer{}),
			tx.DeleteBlock("red", p),
			tx.PutBlock(api.Block{Network: "red", Prefix: p}), // invalid: no node
		} {
			if err == nil {
				return errors.New("a write that should fail succeeded")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := store.Pending(b); n != 0 {
		t.Errorf("an Update that changed nothing left %d changes pending; want none", n)
	}
	if err := b.Update(write); err != nil {
		t.Fatal(err)
	}
	if n := store.Pending(b); n != 1 {
		t.Errorf("an Update that wrote left %d changes pending; want 1", n)
	}
}

// BenchmarkBoltServices lists 5,000 services (an EndpointSlice of 3 endpoints each, as
// the Kubernetes benchmark mirrors them): "decode" with the records changed since the last
// listing (every one decoded), "decoded" without (copies of the decoded records).
func BenchmarkBoltServices(b *testing.B) {
	s, err := store.OpenBolt(filepath.Join(b.TempDir(), "podnet.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	const n = 5000
	svcs := make([]api.Service, n)
	for i := range svcs {
		svcs[i] = api.Service{Name: fmt.Sprintf("svc-%d", i), Namespace: fmt.Sprintf("kb-%d", i%10), Source: api.SourceKubernetes,
			Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "tcp"}},
			VIPs:  []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})}, Created: time.Now()}
		for j := range 3 {
			svcs[i].Slices = append(svcs[i].Slices, api.SliceEndpoint{Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 88, 0, byte(j + 2)})},
				Ports: []api.NamedPort{{Name: "http", Port: 8080, Protocol: "tcp"}}, Ready: true, Serving: true})
		}
	}
	write := func() {
		if err := s.Update(func(tx store.Tx) error {
			for _, svc := range svcs {
				if err := tx.PutService(svc); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	list := func() {
		if err := s.View(func(tx store.Tx) error {
			got, err := tx.Services("")
			if len(got) != n {
				b.Fatalf("listed %d services, want %d", len(got), n)
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	write()
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			for j := range svcs {
				svcs[j].Created = svcs[j].Created.Add(time.Second) // every record changes
			}
			write()
			b.StartTimer()
			list()
		}
	})
	b.Run("decoded", func(b *testing.B) {
		list()
		for b.Loop() {
			list()
		}
	})
}
