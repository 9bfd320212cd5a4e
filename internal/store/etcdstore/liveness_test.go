package etcdstore_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/etcdstore"
	"github.com/podnet/podnet/internal/store/storetest"
)

// waitLimit bounds the waits for what etcd does eventually (a lease expiring, a watch
// recovering): a bound against hanging, not a timing requirement.
const waitLimit = 10 * time.Second

func TestRegisterAcross(t *testing.T) {
	prefix := newPrefix(t)
	storetest.RegisterAcross(t, open(t, prefix), open(t, prefix))
}

func TestWatchAcross(t *testing.T) {
	prefix := newPrefix(t)
	storetest.WatchAcross(t, open(t, prefix), open(t, prefix))
}

// proxy forwards TCP connections to etcd, so that a test can cut a client off
// without the client's knowledge: no revoke, no goodbye.
type proxy struct {
	target string // host:port of etcd
	addr   string // host:port the proxy listens on

	// mu guards l and conns.
	mu    sync.Mutex
	l     net.Listener
	conns []net.Conn
}

// startProxy starts a proxy to the first etcd endpoint; it is cut at the end of the
// test.
func startProxy(t *testing.T) *proxy {
	t.Helper()
	u, err := url.Parse(endpoints[0])
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{target: u.Host, addr: "127.0.0.1:0"}
	if err := p.listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cut)
	return p
}

// listen accepts connections again (on the same address after a cut).
func (p *proxy) listen() error {
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.l, p.addr = l, l.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return nil
}

// cut stops accepting and drops every connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) url() string { return "http://" + p.addr }

// openVia opens a store on prefix that reaches etcd through p.
func openVia(t *testing.T, p *proxy, prefix string) *etcdstore.Store {
	t.Helper()
	s, err := etcdstore.Open(context.Background(), etcdstore.Config{
		Endpoints: []string{p.url()}, Prefix: prefix, RequestTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // may fail: its etcd is gone
	return s
}

func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitLimit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLeaseExpires cuts a registered client off from etcd without a revoke, as when
// its node dies: the lease expires, the node is no longer alive, the client learns
// that it lost the lease, and the name is free for another holder.
func TestLeaseExpires(t *testing.T) {
	prefix := newPrefix(t)
	a := open(t, prefix)
	p := startProxy(t)
	b := openVia(t, p, prefix)
	lost, err := b.Register(t.Context(), "n1", "192.0.2.1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if alive, err := a.Alive(); err != nil || !alive["n1"] {
		t.Fatalf("Alive = %v, %v; want n1", alive, err)
	}
	if _, err := a.Register(t.Context(), "n1", "192.0.2.9", time.Second); !errors.Is(err, store.ErrNodeTaken) {
		t.Fatalf("Register by another holder while the lease lives: %v; want ErrNodeTaken", err)
	}

	p.cut()
	start := time.Now()
	waitFor(t, "n1 dead after its client was cut off", func() (bool, error) {
		alive, err := a.Alive()
		return !alive["n1"], err
	})
	t.Logf("lease gone %s after the cut", time.Since(start).Round(10*time.Millisecond))
	select {
	case <-lost:
	case <-time.After(waitLimit):
		t.Fatalf("lost channel not closed within %s of the lease's expiry", waitLimit)
	}
	if _, err := a.Register(t.Context(), "n1", "192.0.2.9", time.Second); err != nil {
		t.Errorf("Register by another holder after the lease expired: %v", err)
	}
}

// TestWatchAfterCompaction cuts a watching client off while changes are made and
// compacted away: the watch cannot resume where it stopped, starts again, and calls
// fn.
func TestWatchAfterCompaction(t *testing.T) {
	prefix := newPrefix(t)
	a := open(t, prefix)
	p := startProxy(t)
	b := openVia(t, p, prefix)
	calls := make(chan struct{}, 1)
	err := b.Watch(t.Context(), func() {
		select {
		case calls <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork("red")) })
	select {
	case <-calls:
	case <-time.After(waitLimit):
		t.Fatalf("fn not called within %s of an update", waitLimit)
	}

	p.cut()
	for _, name := range []string{"blue", "green"} {
		update(t, a, func(tx store.Tx) error { return tx.PutNetwork(storetest.SampleNetwork(name)) })
	}
	cli := rawClient(t)
	resp, err := cli.Get(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	select {
	case <-calls: // a call for red that came late; the one that matters comes below
	default:
	}
	if err := p.listen(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-calls:
	case <-time.After(waitLimit):
		t.Fatalf("fn not called within %s of the reconnection", waitLimit)
	}
}
