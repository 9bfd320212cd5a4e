package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
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
// first afterwards: the second exchange sends the dead upstream nothing.
func TestForwarderFailover(t *testing.T) {
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // bound, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	up := testUpstream()
	live := serveLoopback(t, up, up)
	f := &Forwarder{Upstreams: []netip.AddrPort{netip.MustParseAddrPort(dead.LocalAddr().String()), live}, Timeout: 200 * time.Millisecond}
	q := new(mdns.Msg)
	q.SetQuestion("example.com.", mdns.TypeA)
	for i, want := range []int{1, 0} { // queries the dead upstream gets
		r, err := f.Exchange(context.Background(), q)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("exchange %d: %v %v", i, r, err)
		}
		if got := queued(t, dead); got != want {
			t.Errorf("exchange %d: the dead upstream got %d queries, want %d", i, got, want)
		}
	}
	f = &Forwarder{Upstreams: []netip.AddrPort{netip.MustParseAddrPort(dead.LocalAddr().String())}, Timeout: 100 * time.Millisecond}
	var nerr net.Error
	if _, err := f.Exchange(context.Background(), q); !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Errorf("only a dead upstream: %v, want a timeout", err)
	}
}

// queued reads, without waiting, the datagrams waiting on c and returns their number. A
// datagram sent over loopback is queued on its receiver before the send returns.
func queued(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	buf := make([]byte, 512)
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			_, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			if rerr != nil {
				return true
			}
			n++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(rerr, syscall.EAGAIN) {
		t.Fatalf("read %s: %v", c.LocalAddr(), rerr)
	}
	return n
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
