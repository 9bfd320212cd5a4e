package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/etcdstore"
	"github.com/podnet/podnet/internal/store/etcdstore/etcdtest"
	"github.com/podnet/podnet/internal/store/storetest"
)

// endpoints are the client URLs of the etcd all tests share: one started in process
// by TestMain, or the one PODNET_TEST_ETCD names (comma-separated URLs), to run the
// same tests against another etcd, such as Debian's etcd-server 3.4.
var endpoints []string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if eps := os.Getenv("PODNET_TEST_ETCD"); eps != "" {
		endpoints = strings.Split(eps, ",")
		return m.Run()
	}
	// TestMain has no t.TempDir: the data dir is removed by hand.
	dir, err := os.MkdirTemp("", "podnet-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	e, err := etcdtest.StartIn(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer e.Close()
	endpoints = []string{e.Config().AdvertiseClientUrls[0].String()}
	return m.Run()
}

var prefixes atomic.Int64

// newPrefix returns a prefix no other test uses, so that each store starts empty.
func newPrefix(t testing.TB) string {
	return fmt.Sprintf("/podnet-test/%d-%s/", prefixes.Add(1), t.Name())
}

// open opens a store on prefix and closes it at the end of the test.
func open(t testing.TB, prefix string) *etcdstore.Store {
	t.Helper()
	s, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: endpoints, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func TestConformance(t *testing.T) {
	storetest.Conformance(t, func(t *testing.T) store.Store { return open(t, newPrefix(t)) })
}

// TestConcurrentAllocation races two clients on the same prefix.
func TestConcurrentAllocation(t *testing.T) {
	prefix := newPrefix(t)
	storetest.ConcurrentAllocation(t, open(t, prefix), open(t, prefix))
}

func TestOpenUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := "http://" + l.Addr().String()
	l.Close() // a port that was free a moment ago: nothing listens there
	s, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: []string{ep}, DialTimeout: 300 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatalf("Open(%s) of a closed port succeeded", ep)
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), ep) || !strings.Contains(err.Error(), "not reachable") {
		t.Errorf("Open(%s) = %v; want an error that names the endpoint and says it is not reachable", ep, err)
	}
}

func TestOpenNoEndpoints(t *testing.T) {
	if _, err := etcdstore.Open(context.Background(), etcdstore.Config{}); err == nil {
		t.Error("Open without endpoints succeeded")
	}
}

func TestClosed(t *testing.T) {
	s := open(t, newPrefix(t))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(store.Tx) error { return nil }); err == nil {
		t.Error("View on a closed store: no error")
	}
	if err := s.Update(func(store.Tx) error { return nil }); err == nil {
		t.Error("Update on a closed store: no error")
	}
}

// TestKeyLayout pins the keys that etcdctl shows, including escaped names and the
// deletion generations.
func TestKeyLayout(t *testing.T) {
	prefix := newPrefix(t)
	s := open(t, prefix)
	p := netip.MustParsePrefix("10.88.0.0/16")
	a := netip.MustParseAddr("10.88.0.5")
	update(t, s, func(tx store.Tx) error {
		for _, err := range []error{
			tx.PutNetwork(storetest.SampleNetwork("red")),
			tx.PutNetwork(storetest.SampleNetwork("a/b")),
			tx.PutEndpoint(api.Endpoint{EndpointKey: api.EndpointKey{Network: "red", ContainerID: "c1", IfName: "eth0"}}),
			tx.PutEndpoint(api.Endpoint{EndpointKey: api.EndpointKey{Network: "a/b", ContainerID: "c/1", IfName: "eth 0"}}),
			tx.PutEndpoint(api.Endpoint{EndpointKey: api.EndpointKey{Network: "red", ContainerID: "gone", IfName: "eth0"}}),
			tx.PutAllocation("red", a, "red/c1/eth0"),
			tx.PutAllocation("red", netip.MustParseAddr("fd00:88::5"), "red/c1/eth0"),
			tx.PutCursor("red", p, a),
			tx.PutPort("n1", "tcp", netip.Addr{}, 8080, "red/c1/eth0"),
			tx.PutPort("n1", "tcp", netip.MustParseAddr("192.0.2.1"), 8080, "x"),
			tx.PutPort("a/b", "udp", netip.Addr{}, 53, "y"),
			tx.PutPort("n1", "udp", netip.Addr{}, 5353, "z"),
			tx.PutBGPConfig(api.BGPConfig{ASN: 64512, NodeMesh: true}),
			tx.PutBGPPeer(api.BGPPeer{Name: "tor/1", Address: netip.MustParseAddr("192.0.2.254"), ASN: 65001}),
			tx.PutBGPPeer(api.BGPPeer{Name: "gone"}),
			tx.PutService(api.Service{Namespace: "default", Name: "web"}),
			tx.PutNetworkPolicy(api.NetworkPolicy{Namespace: "team/a", Name: "allow dns"}),
			tx.PutNetworkPolicy(api.NetworkPolicy{Namespace: "default", Name: "gone"}),
			tx.PutNamespace(api.Namespace{Name: "team/a", Labels: map[string]string{api.NamespaceNameLabel: "team/a"}}),
			tx.PutNamespace(api.Namespace{Name: "gone"}),
			tx.PutPod(api.Pod{Namespace: "team/a", Name: "web 0", Labels: map[string]string{"app": "web"}}),
			tx.PutPod(api.Pod{Namespace: "default", Name: "gone"}),
			tx.PutNode(api.Node{Name: "n1", IP: netip.MustParseAddr("192.0.2.1")}),
			tx.PutNode(api.Node{Name: "gone", IP: netip.MustParseAddr("192.0.2.2")}),
			tx.PutBlock(api.Block{Network: "red", Prefix: netip.MustParsePrefix("10.88.0.0/26"), Node: "n1"}),
			tx.PutBlock(api.Block{Network: "red", Prefix: netip.MustParsePrefix("10.88.0.64/26"), Node: "gone"}),
			tx.PutBlock(api.Block{Network: "a/b", Prefix: netip.MustParsePrefix("fd00:88::/122"), Node: "n1"}),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		for _, err := range []error{
			tx.DeleteEndpoint(api.EndpointKey{Network: "red", ContainerID: "gone", IfName: "eth0"}),
			tx.DeleteBlock("red", netip.MustParsePrefix("10.88.0.64/26")),
			tx.DeleteNode("gone"),
			tx.DeletePort("n1", "udp", netip.Addr{}, 5353),
			tx.DeleteBGPPeer("gone"),
			tx.DeleteNetworkPolicy("default", "gone"),
			tx.DeleteNamespace("gone"),
			tx.DeletePod("default", "gone"),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	})
	if _, err := s.Register(t.Context(), "n1", "192.0.2.1", time.Minute); err != nil {
		t.Fatal(err)
	}

	cli := rawClient(t)
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, strings.TrimPrefix(string(kv.Key), prefix))
	}
	want := []string{
		"alive/n1",
		"allocations/red/10.88.0.5",
		"allocations/red/fd00:88::5",
		"bgpconfig",
		"bgppeers/tor%2F1",
		"blocks/a%2Fb/fd00:88::%2F122",
		"blocks/red/10.88.0.0%2F26",
		"cursors/red/10.88.0.0%2F16",
		"endpoints/a%2Fb/c%2F1/eth%200",
		"endpoints/red/c1/eth0",
		"gen/bgppeers",
		"gen/blocks/red",
		"gen/endpoints/red",
		"gen/namespaces",
		"gen/networkpolicies",
		"gen/nodes",
		"gen/pods",
		"gen/ports/n1",
		"namespaces/team%2Fa",
		"networkpolicies/team%2Fa/allow%20dns",
		"networks/a%2Fb",
		"networks/red",
		"nodes/n1",
		"owners/red/red%2Fc1%2Feth0/10.88.0.5",
		"owners/red/red%2Fc1%2Feth0/fd00:88::5",
		"pods/team%2Fa/web%200",
		"ports/a%2Fb/udp/53/*",
		"ports/n1/tcp/8080/*",
		"ports/n1/tcp/8080/192.0.2.1",
		"services/default/web",
	}
	if !slices.Equal(keys, want) {
		t.Errorf("keys under %s:\n got %q\nwant %q", prefix, keys, want)
	}
	got, err := cli.Get(context.Background(), prefix+"allocations/red/10.88.0.5")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "red/c1/eth0" {
		t.Errorf("allocation value = %v; want the owner", got.Kvs)
	}
	got, err = cli.Get(context.Background(), prefix+"alive/n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "192.0.2.1" || got.Kvs[0].Lease == 0 {
		t.Errorf("alive value = %v; want the holder, under a lease", got.Kvs)
	}
	got, err = cli.Get(context.Background(), prefix+"nodes/n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 1 || strings.Contains(string(got.Kvs[0].Value), `"alive":true`) {
		t.Errorf("node value = %q; want JSON without alive set", got.Kvs)
	}
}

func rawClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestTxnTooLarge: a transaction with more writes than etcd takes in one Txn fails
// cleanly and writes nothing; one just below the limit commits.
func TestTxnTooLarge(t *testing.T) {
	s := open(t, newPrefix(t))
	allocate := func(n int) error {
		return s.Update(func(tx store.Tx) error {
			for i := range n {
				// Two keys each: the allocation and its owner index entry.
				a := netip.AddrFrom4([4]byte{10, 88, byte(i >> 8), byte(i)})
				if err := tx.PutAllocation("red", a, fmt.Sprintf("o%d", i)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err := allocate(65) // 130 operations
	if !errors.Is(err, etcdstore.ErrTxnTooLarge) {
		t.Fatalf("Update with 130 operations = %v; want ErrTxnTooLarge", err)
	}
	t.Logf("error: %v", err)
	err = s.View(func(tx store.Tx) error {
		m, err := tx.Allocations("red")
		if len(m) != 0 {
			t.Errorf("%d allocations after a refused transaction; want none", len(m))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := allocate(64); err != nil { // 128 operations
		t.Errorf("Update with 128 operations: %v", err)
	}

	// A store that believes the cluster takes more: etcd refuses the Txn itself.
	big, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: endpoints, Prefix: s.Prefix(), MaxTxnOps: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	err = big.Update(func(tx store.Tx) error {
		for i := range 65 {
			if err := tx.PutAllocation("blue", netip.AddrFrom4([4]byte{10, 88, 0, byte(i)}), "o"); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, etcdstore.ErrTxnTooLarge) {
		t.Errorf("Update with 130 operations refused by etcd = %v; want ErrTxnTooLarge", err)
	}
}

// TestManyReads: a transaction that reads more keys than etcd takes compares still
// commits (the point reads of one collection are compared as a whole), and still
// conflicts with a concurrent write to what it read.
func TestManyReads(t *testing.T) {
	prefix := newPrefix(t)
	a, b := open(t, prefix), open(t, prefix)
	update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) })
	attempts := 0
	update(t, a, func(tx store.Tx) error {
		attempts++
		for i := range 300 {
			if _, _, err := tx.Allocation("red", netip.AddrFrom4([4]byte{10, 88, byte(i >> 8), byte(i)})); err != nil {
				return err
			}
		}
		if attempts == 1 {
			update(t, b, func(tx store.Tx) error {
				return tx.PutAllocation("red", netip.MustParseAddr("10.88.0.77"), "b")
			})
		}
		return tx.PutCursor("red", netip.MustParsePrefix("10.88.0.0/16"), netip.MustParseAddr("10.88.1.44"))
	})
	if attempts != 2 {
		t.Errorf("update ran %d times; want 2 (one conflict with the write of an address it read)", attempts)
	}
}

// TestConflictRetries writes through a second handle between fn's read and its
// commit: the commit fails, fn runs again and sees the other write.
func TestConflictRetries(t *testing.T) {
	prefix := newPrefix(t)
	a, b := open(t, prefix), open(t, prefix)
	update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) })
	attempts := 0
	update(t, a, func(tx store.Tx) error {
		attempts++
		n, _, err := tx.Network("red")
		if err != nil {
			return err
		}
		if attempts == 1 {
			update(t, b, func(tx store.Tx) error {
				n := storetest.SampleNetwork("red")
				n.MTU = 9000
				return tx.PutNetwork(n)
			})
		}
		n.MTU++
		return tx.PutNetwork(n)
	})
	if attempts != 2 {
		t.Errorf("update ran %d times; want 2", attempts)
	}
	err := b.View(func(tx store.Tx) error {
		n, _, err := tx.Network("red")
		if n.MTU != 9001 {
			t.Errorf("MTU = %d; want 9001 (the other write, then ours)", n.MTU)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCompactedSnapshot: when etcd compacts away the revision a transaction reads
// at, the transaction runs again at a fresh one, in Update and in View. This concerns
// transactions that read etcd (a's mirror is off): the mirror's snapshots are in
// memory (TestMirrorCompaction).
func TestCompactedSnapshot(t *testing.T) {
	prefix := newPrefix(t)
	a, b := open(t, prefix), open(t, prefix)
	etcdstore.ReadEtcd(a)
	cli := rawClient(t)
	update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) })
	// compact writes through b and compacts etcd up to that write.
	compact := func(name string) {
		update(t, b, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork(name)) })
		resp, err := cli.Get(context.Background(), prefix)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(context.Background(), resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	}
	attempts := 0
	update(t, a, func(tx store.Tx) error {
		attempts++
		if _, _, err := tx.Network("red"); err != nil { // pins the revision
			return err
		}
		if attempts == 1 {
			compact("blue")
		}
		ns, err := tx.Networks()
		if err != nil {
			return err
		}
		n := storetest.SampleNetwork("red")
		n.MTU = 1000 + len(ns)
		return tx.PutNetwork(n)
	})
	if attempts != 2 {
		t.Errorf("update ran %d times; want 2", attempts)
	}
	attempts = 0
	err := a.View(func(tx store.Tx) error {
		attempts++
		if _, _, err := tx.Network("red"); err != nil {
			return err
		}
		if attempts == 1 {
			compact("green")
		}
		n, _, err := tx.Network("red")
		if err == nil && n.MTU != 1002 {
			t.Errorf("MTU = %d; want 1002 (set when red and blue existed)", n.MTU)
		}
		_, err = tx.Networks()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if attempts != 2 {
		t.Errorf("view ran %d times; want 2", attempts)
	}
}

// TestConflicts: which concurrent writes make a transaction run again. Each case
// reads through handle a, writes through b before a commits, and counts a's runs.
func TestConflicts(t *testing.T) {
	a5, a6 := netip.MustParseAddr("10.88.0.5"), netip.MustParseAddr("10.88.0.6")
	b0, b64 := netip.MustParsePrefix("10.88.0.0/26"), netip.MustParsePrefix("10.88.0.64/26")
	k := func(nw, c string) api.EndpointKey {
		return api.EndpointKey{Network: nw, ContainerID: c, IfName: "eth0"}
	}
	ep := func(nw, c string) api.Endpoint { return api.Endpoint{EndpointKey: k(nw, c)} }
	type fn = func(tx store.Tx) error
	cases := []struct {
		name     string
		read     fn
		write    fn
		conflict bool
	}{
		{"point read, then the key changes",
			func(tx store.Tx) error { _, _, err := tx.Allocation("red", a5); return err },
			func(tx store.Tx) error { return tx.PutAllocation("red", a5, "other") }, true},
		{"point read of an absent key, then it is created",
			func(tx store.Tx) error { _, _, err := tx.Allocation("red", a6); return err },
			func(tx store.Tx) error { return tx.PutAllocation("red", a6, "o") }, true},
		{"point read, then the key is deleted",
			func(tx store.Tx) error { _, _, err := tx.Allocation("red", a5); return err },
			func(tx store.Tx) error { return tx.DeleteAllocation("red", a5) }, true},
		{"point read, then another key changes",
			func(tx store.Tx) error { _, _, err := tx.Allocation("red", a5); return err },
			func(tx store.Tx) error { return tx.PutAllocation("red", a6, "o") }, false},
		{"listing, then a key is created under it",
			func(tx store.Tx) error { _, err := tx.Allocations("red"); return err },
			func(tx store.Tx) error { return tx.PutAllocation("red", a6, "o") }, true},
		{"listing, then a key is deleted under it",
			func(tx store.Tx) error { _, err := tx.Allocations("red"); return err },
			func(tx store.Tx) error { return tx.DeleteAllocation("red", a5) }, true},
		{"owner index, then the owner's address is released",
			func(tx store.Tx) error { _, err := tx.AllocationsOf("red", "red/c1/eth0"); return err },
			func(tx store.Tx) error { _, err := ipam.Release(tx, "red", "red/c1/eth0"); return err }, true},
		{"owner index, then the owner's address is given to another",
			func(tx store.Tx) error { _, err := tx.AllocationsOf("red", "red/c1/eth0"); return err },
			func(tx store.Tx) error { return tx.PutAllocation("red", a5, "other") }, true},
		{"listing, then a key is deleted in another network",
			func(tx store.Tx) error { _, err := tx.Allocations("red"); return err },
			func(tx store.Tx) error { return tx.DeleteAllocation("blue", a5) }, false},
		{"endpoints of a network, then one is deleted",
			func(tx store.Tx) error { _, err := tx.Endpoints("red"); return err },
			func(tx store.Tx) error { return tx.DeleteEndpoint(k("red", "c1")) }, true},
		{"endpoints of a network, then one is deleted in another",
			func(tx store.Tx) error { _, err := tx.Endpoints("red"); return err },
			func(tx store.Tx) error { return tx.DeleteEndpoint(k("blue", "c1")) }, false},
		{"all endpoints, then one is deleted",
			func(tx store.Tx) error { _, err := tx.Endpoints(""); return err },
			func(tx store.Tx) error { return tx.DeleteEndpoint(k("blue", "c1")) }, true},
		{"all endpoints, then one is created",
			func(tx store.Tx) error { _, err := tx.Endpoints(""); return err },
			func(tx store.Tx) error { return tx.PutEndpoint(ep("blue", "c2")) }, true},
		{"endpoints of a network, then the network is deleted",
			func(tx store.Tx) error { _, err := tx.Endpoints("red"); return err },
			func(tx store.Tx) error { return tx.DeleteNetwork("red") }, true},
		{"allocations of a network, then another network is deleted (coarse on purpose)",
			func(tx store.Tx) error { _, err := tx.Allocations("red"); return err },
			func(tx store.Tx) error { return tx.DeleteNetwork("blue") }, true},
		{"networks, then one is deleted",
			func(tx store.Tx) error { _, err := tx.Networks(); return err },
			func(tx store.Tx) error { return tx.DeleteNetwork("blue") }, true},
		{"cursor, then another cursor of the network changes",
			func(tx store.Tx) error {
				_, _, err := tx.Cursor("red", netip.MustParsePrefix("10.88.0.0/16"))
				return err
			},
			func(tx store.Tx) error {
				return tx.PutCursor("red", netip.MustParsePrefix("fd00:88::/64"), netip.MustParseAddr("fd00:88::9"))
			}, false},
		{"ports, then one is released",
			func(tx store.Tx) error { _, err := tx.PortOwners("n1", "tcp", 80); return err },
			func(tx store.Tx) error { return tx.DeletePort("n1", "tcp", netip.Addr{}, 80) }, true},
		{"ports of a node, then another node publishes the same port",
			func(tx store.Tx) error { _, err := tx.PortOwners("n1", "tcp", 80); return err },
			func(tx store.Tx) error { return tx.PutPort("n2", "tcp", netip.Addr{}, 80, "o2") }, false},
		{"ports of a node, then another node releases the same port",
			func(tx store.Tx) error { _, err := tx.PortOwners("n1", "tcp", 80); return err },
			func(tx store.Tx) error { return tx.DeletePort("n2", "tcp", netip.Addr{}, 80) }, false},
		{"BGP peers, then one is deleted",
			func(tx store.Tx) error { _, err := tx.BGPPeers(); return err },
			func(tx store.Tx) error { return tx.DeleteBGPPeer("tor1") }, true},
		{"BGP peer read while absent, then created",
			func(tx store.Tx) error { _, _, err := tx.BGPPeer("tor2"); return err },
			func(tx store.Tx) error { return tx.PutBGPPeer(api.BGPPeer{Name: "tor2"}) }, true},
		{"BGP settings, then changed",
			func(tx store.Tx) error { _, _, err := tx.BGPConfig(); return err },
			func(tx store.Tx) error { return tx.PutBGPConfig(api.BGPConfig{ASN: 65010}) }, true},
		{"services of a namespace, then one is deleted",
			func(tx store.Tx) error { _, err := tx.Services("default"); return err },
			func(tx store.Tx) error { return tx.DeleteService("default", "web") }, true},
		{"network policies of a namespace, then one is deleted",
			func(tx store.Tx) error { _, err := tx.NetworkPolicies("default"); return err },
			func(tx store.Tx) error { return tx.DeleteNetworkPolicy("default", "deny") }, true},
		{"all network policies, then one is created",
			func(tx store.Tx) error { _, err := tx.NetworkPolicies(""); return err },
			func(tx store.Tx) error {
				return tx.PutNetworkPolicy(api.NetworkPolicy{Namespace: "kube", Name: "deny"})
			}, true},
		{"network policy read while absent, then created",
			func(tx store.Tx) error { _, _, err := tx.NetworkPolicy("default", "allow"); return err },
			func(tx store.Tx) error {
				return tx.PutNetworkPolicy(api.NetworkPolicy{Namespace: "default", Name: "allow"})
			}, true},
		{"network policies, then a namespace is relabeled",
			func(tx store.Tx) error { _, err := tx.NetworkPolicies(""); return err },
			func(tx store.Tx) error {
				return tx.PutNamespace(api.Namespace{Name: "default", Labels: map[string]string{"team": "b"}})
			}, false},
		{"namespaces, then one is deleted",
			func(tx store.Tx) error { _, err := tx.Namespaces(); return err },
			func(tx store.Tx) error { return tx.DeleteNamespace("default") }, true},
		{"namespace read, then relabeled",
			func(tx store.Tx) error { _, _, err := tx.Namespace("default"); return err },
			func(tx store.Tx) error {
				return tx.PutNamespace(api.Namespace{Name: "default", Labels: map[string]string{"team": "b"}})
			}, true},
		{"namespace read, then a policy of it is deleted",
			func(tx store.Tx) error { _, _, err := tx.Namespace("default"); return err },
			func(tx store.Tx) error { return tx.DeleteNetworkPolicy("default", "deny") }, false},
		{"pods of a namespace, then one is deleted",
			func(tx store.Tx) error { _, err := tx.Pods("default"); return err },
			func(tx store.Tx) error { return tx.DeletePod("default", "web-0") }, true},
		{"all pods, then one is created",
			func(tx store.Tx) error { _, err := tx.Pods(""); return err },
			func(tx store.Tx) error { return tx.PutPod(api.Pod{Namespace: "kube", Name: "dns"}) }, true},
		{"pod read while absent, then created",
			func(tx store.Tx) error { _, _, err := tx.Pod("default", "web-1"); return err },
			func(tx store.Tx) error { return tx.PutPod(api.Pod{Namespace: "default", Name: "web-1"}) }, true},
		{"pod read, then relabeled",
			func(tx store.Tx) error { _, _, err := tx.Pod("default", "web-0"); return err },
			func(tx store.Tx) error {
				return tx.PutPod(api.Pod{Namespace: "default", Name: "web-0", Labels: map[string]string{"app": "b"}})
			}, true},
		{"pods, then a namespace is relabeled",
			func(tx store.Tx) error { _, err := tx.Pods(""); return err },
			func(tx store.Tx) error {
				return tx.PutNamespace(api.Namespace{Name: "default", Labels: map[string]string{"team": "b"}})
			}, false},
		{"namespace read, then a pod of it is deleted",
			func(tx store.Tx) error { _, _, err := tx.Namespace("default"); return err },
			func(tx store.Tx) error { return tx.DeletePod("default", "web-0") }, false},
		{"block read while free, then claimed by another",
			func(tx store.Tx) error { _, _, err := tx.Block("red", b64); return err },
			func(tx store.Tx) error { return tx.PutBlock(api.Block{Network: "red", Prefix: b64, Node: "n2"}) }, true},
		{"block read, then released",
			func(tx store.Tx) error { _, _, err := tx.Block("red", b0); return err },
			func(tx store.Tx) error { return tx.DeleteBlock("red", b0) }, true},
		{"blocks of a network, then one is released",
			func(tx store.Tx) error { _, err := tx.Blocks("red"); return err },
			func(tx store.Tx) error { return tx.DeleteBlock("red", b0) }, true},
		{"blocks of a network, then one is released in another",
			func(tx store.Tx) error { _, err := tx.Blocks("red"); return err },
			func(tx store.Tx) error { return tx.DeleteBlock("blue", b0) }, false},
		{"all blocks, then one is released",
			func(tx store.Tx) error { _, err := tx.Blocks(""); return err },
			func(tx store.Tx) error { return tx.DeleteBlock("blue", b0) }, true},
		{"blocks of a network, then the network is deleted",
			func(tx store.Tx) error { _, err := tx.Blocks("red"); return err },
			func(tx store.Tx) error { return tx.DeleteNetwork("red") }, true},
		{"nodes, then one is deleted",
			func(tx store.Tx) error { _, err := tx.Nodes(); return err },
			func(tx store.Tx) error { return tx.DeleteNode("n1") }, true},
		{"node read, then another node is created",
			func(tx store.Tx) error { _, _, err := tx.Node("n1"); return err },
			func(tx store.Tx) error { return tx.PutNode(api.Node{Name: "n2"}) }, false},
		{"nothing read, then the key written blind is written",
			func(tx store.Tx) error { return nil },
			func(tx store.Tx) error {
				return tx.PutCursor("blue", netip.MustParsePrefix("10.88.0.0/16"), netip.MustParseAddr("10.88.0.3"))
			}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prefix := newPrefix(t)
			a, b := open(t, prefix), open(t, prefix)
			update(t, a, func(tx store.Tx) error {
				for _, nw := range []string{"red", "blue"} {
					for _, err := range []error{
						tx.PutNetwork(storetest.SampleNetwork(nw)),
						tx.PutEndpoint(ep(nw, "c1")),
						tx.PutAllocation(nw, a5, nw+"/c1/eth0"),
						tx.PutBlock(api.Block{Network: nw, Prefix: b0, Node: "n1"}),
					} {
						if err != nil {
							return err
						}
					}
				}
				if err := tx.PutPort("n1", "tcp", netip.Addr{}, 80, "o"); err != nil {
					return err
				}
				if err := tx.PutPort("n2", "tcp", netip.Addr{}, 80, "o"); err != nil {
					return err
				}
				if err := tx.PutBGPPeer(api.BGPPeer{Name: "tor1"}); err != nil {
					return err
				}
				if err := tx.PutNode(api.Node{Name: "n1"}); err != nil {
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
				return tx.PutService(api.Service{Namespace: "default", Name: "web"})
			})
			attempts := 0
			update(t, a, func(tx store.Tx) error {
				attempts++
				if err := c.read(tx); err != nil {
					return err
				}
				if attempts == 1 {
					update(t, b, c.write)
				}
				// A blind write of a's own, so that it commits.
				return tx.PutCursor("blue", netip.MustParsePrefix("10.88.0.0/16"), netip.MustParseAddr("10.88.9.9"))
			})
			if want := map[bool]int{false: 1, true: 2}[c.conflict]; attempts != want {
				t.Errorf("update ran %d times; want %d", attempts, want)
			}
		})
	}
}

// TestViewReadsOneRevision: a View keeps reading the revision of its first read while
// an Update commits next to it.
func TestViewReadsOneRevision(t *testing.T) {
	s := open(t, newPrefix(t))
	update(t, s, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) })
	err := s.View(func(tx store.Tx) error {
		if ns, err := tx.Networks(); len(ns) != 1 || err != nil {
			t.Fatalf("Networks = %v, %v; want red", ns, err)
		}
		update(t, s, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("blue")) })
		if ns, err := tx.Networks(); len(ns) != 1 || err != nil {
			t.Errorf("Networks after a concurrent commit = %v, %v; want red only", ns, err)
		}
		if _, ok, err := tx.Network("blue"); ok || err != nil {
			t.Errorf("Network(blue) after a concurrent commit: ok %v, err %v; want absent", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkUpdateAllocate: one Update that reads the network and allocates an
// address per subnet (dual-stack) for a new owner, as the agent's ADD does.
// go test ./internal/store/etcdstore -run '^$' -bench UpdateAllocate
func BenchmarkUpdateAllocate(b *testing.B) {
	s := open(b, newPrefix(b))
	nw := storetest.SampleNetwork("bench")
	if err := s.Update(func(tx store.Tx) error { return tx.PutNetwork(nw) }); err != nil {
		b.Fatal(err)
	}
	start := etcdstore.RoundTrips(s)
	i := 0
	for b.Loop() {
		owner := fmt.Sprintf("bench/c%d/eth0", i)
		i++
		err := s.Update(func(tx store.Tx) error {
			n, ok, err := tx.Network(nw.Name)
			if err != nil {
				return err
			}
			if !ok {
				return errors.New("network vanished")
			}
			_, err = ipam.Allocate(tx, n, owner, nil)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(etcdstore.RoundTrips(s)-start)/float64(i), "roundtrips/op")
}

// rawPut writes a key under prefix with a client of its own, not through a Store of
// this process: only the watches of the Stores bring it to their mirrors.
func rawPut(t *testing.T, prefix, key, val string) {
	t.Helper()
	if _, err := rawClient(t).Put(context.Background(), prefix+key, val); err != nil {
		t.Fatal(err)
	}
}

// mtuOf reads the MTU of network name through s.
func mtuOf(t *testing.T, s store.Store, name string) int {
	t.Helper()
	var mtu int
	err := s.View(func(tx store.Tx) error {
		n, _, err := tx.Network(name)
		mtu = n.MTU
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mtu
}

// TestMirrorReadsNoRoundTrips: a transaction that reads many keys and collections
// costs etcd one request, its commit; a View costs none.
func TestMirrorReadsNoRoundTrips(t *testing.T) {
	s := open(t, newPrefix(t))
	nw := storetest.SampleNetwork("red")
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutNetwork(nw); err != nil {
			return err
		}
		return tx.PutNode(api.Node{Name: "n1"})
	})
	for i := range 40 {
		update(t, s, func(tx store.Tx) error {
			owner := fmt.Sprintf("red/c%d/eth0", i)
			if _, err := ipam.Allocate(tx, nw, owner, nil); err != nil {
				return err
			}
			return tx.PutEndpoint(api.Endpoint{EndpointKey: api.EndpointKey{Network: "red", ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"}})
		})
	}
	readAll := func(tx store.Tx) error {
		if _, err := tx.Networks(); err != nil {
			return err
		}
		if _, err := tx.Endpoints(""); err != nil {
			return err
		}
		if _, err := tx.Endpoints("red"); err != nil {
			return err
		}
		if _, err := tx.Allocations("red"); err != nil {
			return err
		}
		for i := range 60 {
			if _, _, err := tx.Allocation("red", netip.AddrFrom4([4]byte{10, 88, 0, byte(i)})); err != nil {
				return err
			}
		}
		if _, err := tx.AllocationsOf("red", "red/c7/eth0"); err != nil {
			return err
		}
		if _, err := tx.Blocks(""); err != nil {
			return err
		}
		if _, err := tx.Nodes(); err != nil {
			return err
		}
		_, err := tx.Services("")
		return err
	}
	before := etcdstore.RoundTrips(s)
	update(t, s, func(tx store.Tx) error {
		if err := readAll(tx); err != nil {
			return err
		}
		n, _, err := tx.Network("red")
		if err != nil {
			return err
		}
		if _, err := ipam.Allocate(tx, n, "red/new/eth0", nil); err != nil {
			return err
		}
		return tx.PutEndpoint(api.Endpoint{EndpointKey: api.EndpointKey{Network: "red", ContainerID: "new", IfName: "eth0"}})
	})
	if got := etcdstore.RoundTrips(s) - before; got != 1 {
		t.Errorf("an Update that reads %s costs %d requests; want 1 (its commit)", "everything", got)
	}
	before = etcdstore.RoundTrips(s)
	err := s.View(func(tx store.Tx) error {
		if _, ok, err := tx.Endpoint(api.EndpointKey{Network: "red", ContainerID: "new", IfName: "eth0"}); !ok || err != nil {
			t.Errorf("the endpoint just committed: ok %v, err %v; want found", ok, err)
		}
		return readAll(tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := etcdstore.RoundTrips(s) - before; got != 0 {
		t.Errorf("a View costs %d requests; want none", got)
	}
}

// TestMirrorConflictingStore: a second Store writes what the first one's Update read,
// and etcd moves on elsewhere too, between the Update's reads and its commit. The
// commit fails; fn runs again on the newer state and nothing is lost. When progress
// notifications are trusted, the second run reads the mirror (it waits for it to reach
// the failed commit's revision): two requests in all.
func TestMirrorConflictingStore(t *testing.T) {
	for _, trust := range []bool{true, false} {
		t.Run(fmt.Sprintf("trust progress %v", trust), func(t *testing.T) {
			prefix := newPrefix(t)
			a, b := open(t, prefix), open(t, prefix)
			if !trust {
				etcdstore.DistrustProgress(a)
			}
			update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) })
			before := etcdstore.RoundTrips(a)
			attempts := 0
			update(t, a, func(tx store.Tx) error {
				attempts++
				n, _, err := tx.Network("red")
				if err != nil {
					return err
				}
				if attempts == 1 {
					update(t, b, func(tx store.Tx) error {
						n := storetest.SampleNetwork("red")
						n.MTU = 9000
						return tx.PutNetwork(n)
					})
					// A later revision outside the prefix: only a progress
					// notification brings the mirror there.
					rawPut(t, strings.TrimSuffix(prefix, "/")+"-elsewhere/", "x", "y")
				}
				n.MTU++
				return tx.PutNetwork(n)
			})
			if attempts != 2 {
				t.Errorf("update ran %d times; want 2", attempts)
			}
			for i, s := range []*etcdstore.Store{a, b} {
				if got := mtuOf(t, s, "red"); got != 9001 {
					t.Errorf("MTU through store %d = %d; want 9001 (the other write, then ours)", i, got)
				}
			}
			got := etcdstore.RoundTrips(a) - before
			t.Logf("%d requests", got)
			if trust && got != 2 {
				t.Errorf("the update cost %d requests; want 2 (two commits, reads from the mirror)", got)
			}
		})
	}
}

// TestMirrorBehind: the mirror has not applied a write when fn reads, so the commit
// fails; the second run waits for the mirror to apply it and reads it there.
func TestMirrorBehind(t *testing.T) {
	prefix := newPrefix(t)
	a := open(t, prefix)
	update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) })
	mtuOf(t, a, "red") // the mirror has red
	release := etcdstore.HoldMirror(a)
	defer release()
	rawPut(t, prefix, "networks/red", `{"mtu":9000}`)
	before := etcdstore.RoundTrips(a)
	var seen []int
	update(t, a, func(tx store.Tx) error {
		if len(seen) == 1 {
			release()
		}
		n, _, err := tx.Network("red")
		if err != nil {
			return err
		}
		seen = append(seen, n.MTU)
		n.MTU++
		return tx.PutNetwork(n)
	})
	if want := []int{1500, 9000}; !slices.Equal(seen, want) {
		t.Errorf("fn read MTU %v; want %v", seen, want)
	}
	if got := mtuOf(t, a, "red"); got != 9001 {
		t.Errorf("MTU = %d; want 9001", got)
	}
	if got := etcdstore.RoundTrips(a) - before; got != 2 {
		t.Errorf("the update cost %d requests; want 2 (two commits, reads from the mirror)", got)
	}
}

// TestMirrorUpdateOutcomeChecked: an Update whose fn fails, or writes nothing, on a
// mirror that is behind does not return that outcome: etcd shows that what fn read
// has changed, and fn runs again.
func TestMirrorUpdateOutcomeChecked(t *testing.T) {
	prefix := newPrefix(t)
	a := open(t, prefix)
	release := etcdstore.HoldMirror(a)
	defer release()
	rawPut(t, prefix, "networks/late", `{"mtu":1400}`)
	attempts := 0
	err := a.Update(func(tx store.Tx) error {
		attempts++
		if attempts == 2 {
			release()
		}
		if _, ok, err := tx.Network("late"); err != nil {
			return err
		} else if !ok {
			return store.ErrNotFound
		}
		return nil // found: nothing to write
	})
	if err != nil || attempts != 2 {
		t.Errorf("Update = %v after %d runs; want nil after 2 (the first, on the stale mirror, found nothing)", err, attempts)
	}

	release = etcdstore.HoldMirror(a)
	defer release()
	rawPut(t, prefix, "networks/later", `{"mtu":1400}`)
	found := false
	attempts = 0
	update(t, a, func(tx store.Tx) error {
		attempts++
		if attempts == 2 {
			release()
		}
		var err error
		_, found, err = tx.Network("later")
		return err
	})
	if !found || attempts != 2 {
		t.Errorf("a read-only Update found the network: %v after %d runs; want true after 2", found, attempts)
	}
}

// TestReadYourWrites: every transaction after an Update, on the same Store or on
// another of the process, reads what it committed, without asking etcd.
func TestReadYourWrites(t *testing.T) {
	prefix := newPrefix(t)
	a, b := open(t, prefix), open(t, prefix)
	update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) })
	for i := range 20 {
		s, other := a, b
		if i%2 == 1 {
			s, other = b, a
		}
		before := etcdstore.RoundTrips(s)
		update(t, s, func(tx store.Tx) error {
			n, _, err := tx.Network("red")
			if err != nil {
				return err
			}
			n.MTU = 2000 + i
			return tx.PutNetwork(n)
		})
		update(t, s, func(tx store.Tx) error {
			n, _, err := tx.Network("red")
			if err != nil {
				return err
			}
			if n.MTU != 2000+i {
				t.Errorf("round %d: the next Update reads MTU %d; want %d", i, n.MTU, 2000+i)
			}
			return tx.PutCursor("red", netip.MustParsePrefix("10.88.0.0/16"), netip.AddrFrom4([4]byte{10, 88, 0, byte(i)}))
		})
		if got := mtuOf(t, s, "red"); got != 2000+i {
			t.Errorf("round %d: a View reads MTU %d; want %d", i, got, 2000+i)
		}
		if got := etcdstore.RoundTrips(s) - before; got != 2 {
			t.Errorf("round %d: two Updates and a View cost %d requests; want 2 (the commits)", i, got)
		}
		if got := mtuOf(t, other, "red"); got != 2000+i {
			t.Errorf("round %d: a View through the other Store reads MTU %d; want %d", i, got, 2000+i)
		}
	}
}

// TestMirrorViewAcrossStores: a View through b sees what a committed, and what a
// client outside the process wrote once b's mirror has caught up.
func TestMirrorViewAcrossStores(t *testing.T) {
	prefix := newPrefix(t)
	a, b := open(t, prefix), open(t, prefix)
	update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) })
	if got := mtuOf(t, b, "red"); got != 1500 {
		t.Errorf("MTU through b = %d; want 1500", got)
	}
	rawPut(t, prefix, "networks/blue", `{"mtu":1300}`)
	waitFor(t, "blue in b's mirror", func() (bool, error) {
		before := etcdstore.RoundTrips(b)
		mtu := mtuOf(t, b, "blue")
		return mtu == 1300 && etcdstore.RoundTrips(b) == before, nil
	})
}

// TestMirrorWatchAfterApply: Watch calls fn after the mirror has applied the change,
// so that a View in fn sees it.
func TestMirrorWatchAfterApply(t *testing.T) {
	prefix := newPrefix(t)
	a := open(t, prefix)
	mtus := make(chan int, 10)
	err := a.Watch(t.Context(), func() {
		err := a.View(func(tx store.Tx) error {
			n, _, err := tx.Network("red")
			mtus <- n.MTU
			return err
		})
		if err != nil {
			t.Errorf("View in fn: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, mtu := range []int{1400, 1300} {
		rawPut(t, prefix, "networks/red", fmt.Sprintf(`{"mtu":%d}`, mtu))
		select {
		case got := <-mtus:
			if got != mtu {
				t.Errorf("View in the call after the write reads MTU %d; want %d", got, mtu)
			}
		case <-time.After(waitLimit):
			t.Fatalf("fn not called within %s of a write", waitLimit)
		}
	}
}

// TestMirrorCompaction: a View's snapshot outlives a compaction of its revision (it is
// in memory); and a mirror whose watch etcd cancels, because its revision was compacted
// while the client was cut off, lists again and serves reads.
func TestMirrorCompaction(t *testing.T) {
	prefix := newPrefix(t)
	a := open(t, prefix)
	cli := rawClient(t)
	compact := func() {
		resp, err := cli.Get(context.Background(), prefix)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(context.Background(), resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	}
	update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) })
	attempts := 0
	err := a.View(func(tx store.Tx) error {
		attempts++
		if _, _, err := tx.Network("red"); err != nil {
			return err
		}
		if attempts == 1 {
			update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("blue")) })
			compact()
		}
		ns, err := tx.Networks()
		if len(ns) != 1 {
			t.Errorf("View after a commit and a compaction lists %d networks; want 1 (its snapshot)", len(ns))
		}
		return err
	})
	if err != nil || attempts != 1 {
		t.Errorf("View = %v after %d runs; want nil after 1", err, attempts)
	}

	p := startProxy(t)
	b := openVia(t, p, prefix)
	if got := mtuOf(t, b, "blue"); got != 1500 {
		t.Fatalf("MTU of blue through b = %d; want 1500", got)
	}
	p.cut()
	for _, mtu := range []int{1400, 1300} {
		update(t, a, func(tx store.Tx) error {
			n := storetest.SampleNetwork("blue")
			n.MTU = mtu
			return tx.PutNetwork(n)
		})
	}
	compact()
	if err := p.listen(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's mirror listed again, serving the last write", func() (bool, error) {
		before := etcdstore.RoundTrips(b)
		var mtu int
		err := b.View(func(tx store.Tx) error {
			n, _, err := tx.Network("blue")
			mtu = n.MTU
			return err
		})
		return err == nil && mtu == 1300 && etcdstore.RoundTrips(b) == before, nil
	})
}

// TestConcurrentAllocationDistrustProgress races two clients whose mirrors ignore the
// revision of progress notifications (an etcd before 3.4.25 or 3.5.8): conflicts make
// the transactions read etcd.
func TestConcurrentAllocationDistrustProgress(t *testing.T) {
	prefix := newPrefix(t)
	a, b := open(t, prefix), open(t, prefix)
	etcdstore.DistrustProgress(a)
	etcdstore.DistrustProgress(b)
	storetest.ConcurrentAllocation(t, a, b)
}
