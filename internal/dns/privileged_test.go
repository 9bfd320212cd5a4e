package dns

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/testutil"
)

// TestPrivilegedServeInNamespace serves from a throwaway network namespace and asks over
// real UDP and TCP sockets opened in that namespace: a zone answer, a truncated UDP
// answer that TCP carries whole, a forwarded name, and REFUSED for a source address
// outside AllowedClients.
func TestPrivilegedServeInNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	ns, err := kernel.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	// An allowed and a stranger's address, on lo (sockets bind to them as sources).
	for _, a := range []string{"10.9.9.1/32", "192.0.2.1/32"} {
		addr, _ := netlink.ParseAddr(a)
		if err := h.AddrAdd(lo, addr); err != nil {
			t.Fatal(err)
		}
	}

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
