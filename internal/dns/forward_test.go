package dns

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/internal/dns/dnstest"
)

// serveLoopback runs h on 127.0.0.1 over UDP and TCP (same port) until the test ends.
func serveLoopback(t *testing.T, udpHandler, tcpHandler mdns.Handler) netip.AddrPort {
	t.Helper()
	var pc net.PacketConn
	var l net.Listener
	var err error
	for range 10 { // find a port free for both
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: udpHandler}, {Listener: l, Handler: tcpHandler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// truncating answers over UDP with TC and no records.
type truncating struct{ next mdns.Handler }

func (h truncating) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	m := new(mdns.Msg)
	m.SetReply(r)
	m.Truncated = true
	_ = w.WriteMsg(m)
}

// TestForwarderUDP checks a plain exchange over UDP through a real loopback socket.
func TestForwarderUDP(t *testing.T) {
	up := testUpstream()
	addr := serveLoopback(t, up, up)
	f := &Forwarder{Upstreams: []netip.AddrPort{addr}, Timeout: time.Second}
	q := new(mdns.Msg)
	q.SetQuestion("example.com.", mdns.TypeA)
	r, err := f.Exchange(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	sectionEqual(t, "answer", r.Answer, []string{"example.com. 300 IN A 93.184.216.34"}, false)
}

// TestForwarderTCPRetry checks that a truncated UDP answer is asked again over TCP.
func TestForwarderTCPRetry(t *testing.T) {
	up := testUpstream()
	addr := serveLoopback(t, truncating{up}, up)
	f := &Forwarder{Upstreams: []netip.AddrPort{addr}, Timeout: time.Second}
	q := new(mdns.Msg)
	q.SetQuestion("example.com.", mdns.TypeA)
	r, err := f.Exchange(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated || len(r.Answer) != 1 {
		t.Errorf("TCP retry: tc %v, %d answers", r.Truncated, len(r.Answer))
	}
}

// TestForwarderFailover checks that a dead upstream is skipped and the live one kept
// first afterwards.
func TestForwarderFailover(t *testing.T) {
	dead, err := net.ListenPacket("udp", "127.0.0.1:0") // bound, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	up := testUpstream()
	live := serveLoopback(t, up, up)
	f := &Forwarder{Upstreams: []netip.AddrPort{netip.MustParseAddrPort(dead.LocalAddr().String()), live}, Timeout: 200 * time.Millisecond}
	q := new(mdns.Msg)
	q.SetQuestion("example.com.", mdns.TypeA)
	for i := range 2 {
		start := time.Now()
		r, err := f.Exchange(context.Background(), q)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("exchange %d: %v %v", i, r, err)
		}
		if i == 1 && time.Since(start) > 150*time.Millisecond {
			t.Errorf("second exchange waited for the dead upstream again")
		}
	}
	f = &Forwarder{Upstreams: []netip.AddrPort{netip.MustParseAddrPort(dead.LocalAddr().String())}, Timeout: 100 * time.Millisecond}
	if _, err := f.Exchange(context.Background(), q); err == nil {
		t.Errorf("no answer, no error")
	}
}

// TestServerForwardsOverSockets checks the server with the real forwarder: a loopback
// upstream, the answer through ServeDNS.
func TestServerForwardsOverSockets(t *testing.T) {
	up := dnstest.NewUpstream("example.com. 300 IN A 93.184.216.34")
	addr := serveLoopback(t, truncating{up}, up)
	s, err := New(Config{Upstreams: []netip.AddrPort{addr}, SearchDomains: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	w := dnstest.UDP("127.0.0.1")
	m := new(mdns.Msg)
	m.SetQuestion("example.com.", mdns.TypeA)
	s.ServeDNS(w, m)
	sectionEqual(t, "answer", w.Msg.Answer, []string{"example.com. 300 IN A 93.184.216.34"}, false)
}
