package dns

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
	"github.com/podnet/podnet/internal/testutil"
)

// TestPrivilegedServeInNamespace serves from a throwaway network namespace and asks over
// real UDP and TCP sockets opened in that namespace: a zone answer, a truncated UDP
// answer that TCP carries whole, a forwarded name, and REFUSED for a source address
// outside AllowedClients.
func TestPrivilegedServeInNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	// An allowed and a stranger's address, on lo (sockets bind to them as sources).
	ns := loopbackNS(t, "10.9.9.1/32", "192.0.2.1/32")

	f := newFixture(t, nil)
	snap := testSnapshot()
	snap.Services = append(snap.Services, bigSnapshot(200).Services...)
	f.srv.SetSnapshot(snap)
	listen := netip.MustParseAddrPort("10.9.9.1:53")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.ListenAndServe(ctx, ns, listen) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ListenAndServe: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("ListenAndServe did not return after cancel")
		}
	})

	ask := func(network, from, qname string, qtype uint16) *mdns.Msg {
		t.Helper()
		m := new(mdns.Msg)
		m.SetQuestion(qname, qtype)
		var last error
		for range 50 { // the server may not be listening yet
			r, err := exchangeIn(ns, network, from, listen.String(), m)
			if err == nil {
				return r
			}
			last = err
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s %s from %s: %v", network, qname, from, last)
		return nil
	}
	for _, network := range []string{"udp", "tcp"} {
		r := ask(network, "10.9.9.1", "web.ns1.svc.cluster.local.", mdns.TypeA)
		sectionEqual(t, network+" answer", r.Answer, []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}, false)
		if !r.Authoritative {
			t.Errorf("%s: not authoritative", network)
		}
		r = ask(network, "10.9.9.1", "example.com.", mdns.TypeA)
		sectionEqual(t, network+" forwarded", r.Answer, []string{"example.com. 300 IN A 93.184.216.34"}, false)
		r = ask(network, "192.0.2.1", "web.ns1.svc.cluster.local.", mdns.TypeA)
		if r.Rcode != mdns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("%s from a stranger: %s, want REFUSED", network, mdns.RcodeToString[r.Rcode])
		}
	}
	udp := ask("udp", "10.9.9.1", "big.ns1.svc.cluster.local.", mdns.TypeA)
	tcp := ask("tcp", "10.9.9.1", "big.ns1.svc.cluster.local.", mdns.TypeA)
	if !udp.Truncated || tcp.Truncated || len(tcp.Answer) != 200 {
		t.Errorf("big answer: udp tc %v (%d records), tcp tc %v (%d records); want udp truncated, tcp whole",
			udp.Truncated, len(udp.Answer), tcp.Truncated, len(tcp.Answer))
	}
}

// exchangeIn sends m from address from to addr over network, with a socket made in ns.
func exchangeIn(ns netns.NsHandle, network, from, addr string, m *mdns.Msg) (*mdns.Msg, error) {
	var c net.Conn
	err := kernel.Do(ns, func() (err error) {
		d := net.Dialer{Timeout: time.Second}
		if network == "udp" {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(from)}
		} else {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		c, err = d.Dial(network, addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	co := &mdns.Conn{Conn: c}
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	return co.ReadMsg()
}

// TestPrivilegedJunkFlood floods the UDP socket with junk from one source, as fast as a
// socket sends on loopback: random bytes, truncated headers, malformed messages, and
// queries for names outside the cluster whose upstream (a socket that never reads) never
// answers. A zone query from another source right behind the flood must be answered. A
// stub retries, and so does the test, up to three times, each retry behind another
// flood: a server whose receive buffer overflows loses each of them.
func TestPrivilegedJunkFlood(t *testing.T) {
	testutil.RequireRoot(t)
	ns := loopbackNS(t, "10.9.9.1/32", "10.9.9.2/32", "10.9.9.3/32", "10.9.9.4/32")
	hole, err := kernel.ListenPacketIn(ns, "udp", "10.9.9.2:53") // never read
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hole.Close() })
	f := newFixture(t, func(c *Config) {
		c.Upstream = nil
		c.Upstreams = []netip.AddrPort{netip.MustParseAddrPort("10.9.9.2:53")}
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return kernel.DialIn(ctx, ns, network, addr, DefaultUpstreamTimeout)
		}
		c.Logf = func(string, ...any) {} // a thousand upstream timeouts
	})
	listen := netip.MustParseAddrPort("10.9.9.1:53")
	serveIn(t, f.srv, ns, listen)

	flooder := dialIn(t, ns, "10.9.9.3", listen)
	client := dialIn(t, ns, "10.9.9.4", listen)
	query := new(mdns.Msg)
	query.SetQuestion("web.ns1.svc.cluster.local.", mdns.TypeA)
	waitServing(t, client, query)

	rng := rand.New(rand.NewPCG(1, 2))
	junk := make([][]byte, 2000)
	for i := range junk {
		switch i % 4 {
		case 0: // random bytes
			b := make([]byte, 1+rng.IntN(300))
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			junk[i] = b
		case 1: // a truncated header
			junk[i] = make([]byte, rng.IntN(12))
		case 2: // a query header, then garbage where the question should be
			m := new(mdns.Msg)
			m.SetQuestion("x.example.", mdns.TypeA)
			b, _ := m.Pack()
			junk[i] = append(b[:12], 0xc0, 0xff, 0x3f, 0x01)
		case 3: // a name outside the cluster, a new one each time: always upstream
			m := new(mdns.Msg)
			m.SetQuestion(fmt.Sprintf("junk-%d-%d.example.", i, rng.Uint32()), mdns.TypeA)
			junk[i], _ = m.Pack()
		}
	}
	var answer *mdns.Msg
	for try := range 3 {
		for _, b := range junk {
			if _, err := flooder.Write(b); err != nil {
				t.Fatalf("flood: %v", err)
			}
		}
		r, err := exchangeOn(client, query, 3*time.Second)
		if err == nil {
			answer = r
			break
		}
		t.Logf("try %d: %v", try+1, err)
	}
	if answer == nil {
		t.Fatalf("no answer behind the flood in 3 tries")
	}
	if answer.Rcode != mdns.RcodeSuccess || !answer.Authoritative {
		t.Errorf("answer behind the flood: %s aa %v, want NOERROR authoritative", mdns.RcodeToString[answer.Rcode], answer.Authoritative)
	}
	sectionEqual(t, "answer behind the flood", answer.Answer, []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}, false)
}

// loopbackNS returns a throwaway network namespace (a sandbox of a lab) with lo up and
// holding addrs.
func loopbackNS(t *testing.T, addrs ...string) netns.NsHandle {
	t.Helper()
	l := labtest.New(t)
	ns, err := l.Sandbox()
	if err != nil {
		t.Fatal(err)
	}
	var ps []netip.Prefix
	for _, a := range addrs {
		ps = append(ps, netip.MustParsePrefix(a))
	}
	if err := lab.Loopback(ns, ps...); err != nil {
		t.Fatal(err)
	}
	return ns
}

// serveIn runs srv.ListenAndServe on listen in ns until the test ends.
func serveIn(t *testing.T, srv *Server, ns netns.NsHandle, listen netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(ctx, ns, listen) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ListenAndServe: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("ListenAndServe did not return after cancel")
		}
	})
}

// dialIn returns a UDP socket of ns, from address from, connected to addr.
func dialIn(t *testing.T, ns netns.NsHandle, from string, addr netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	err := kernel.Do(ns, func() (err error) {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}
		c, err = d.Dial("udp", addr.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitServing asks m on c until an answer comes (the server may not be listening yet).
func waitServing(t *testing.T, c net.Conn, m *mdns.Msg) {
	t.Helper()
	var err error
	for range 50 {
		if _, err = exchangeOn(c, m, 100*time.Millisecond); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("server not answering: %v", err)
}

// exchangeOn sends m on c and reads its answer, skipping answers to earlier tries.
func exchangeOn(c net.Conn, m *mdns.Msg, timeout time.Duration) (*mdns.Msg, error) {
	m.Id = mdns.Id()
	co := &mdns.Conn{Conn: c}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	for {
		r, err := co.ReadMsg()
		if err != nil {
			return nil, err
		}
		if r.Id == m.Id {
			return r, nil
		}
	}
}
