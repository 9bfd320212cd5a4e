package portproxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
	"github.com/podnet/podnet/internal/probe"
)

// Backend side of the test topology: a sandbox namespace behind a veth from the node.
var (
	nodeBackendSide4 = netip.MustParsePrefix("10.99.0.1/24")
	nodeBackendSide6 = netip.MustParsePrefix("fd99::1/64")
	backend4         = netip.MustParsePrefix("10.99.0.2/24")
	backend6         = netip.MustParsePrefix("fd99::2/64")
	// Second node addresses on the uplink, for the multi-homed UDP test.
	nodeSecond4 = netip.MustParsePrefix("203.0.113.3/24")
	nodeSecond6 = netip.MustParsePrefix("2001:db8:ffff::3/64")
)

// topo is a client namespace (the lab's outside) reaching the node over its uplink, and
// a backend namespace reached from the node over a veth.
type topo struct {
	node, client, backend netns.NsHandle
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	l := labtest.New(t)
	be, err := l.Sandbox()
	if err != nil {
		t.Fatal(err)
	}
	v := lab.Veth{HostIf: "ppb0", HostAddrs: []netip.Prefix{nodeBackendSide4, nodeBackendSide6}, Addrs: []netip.Prefix{backend4, backend6}}
	if _, err := l.Plug(be, v); err != nil {
		t.Fatal(err)
	}
	return &topo{node: l.Node, client: l.Outside, backend: be}
}

func newManager(t *testing.T, ns netns.NsHandle, cfg Config) *Manager {
	t.Helper()
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	mg, err := New(ns, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mg.Close)
	return mg
}

// tcpBackend serves on [::]:0 in the backend namespace: on each connection it writes
// the client address it sees and a newline, echoes everything until the client's
// end of stream, then writes "bye\n" and closes. It returns the port.
func tcpBackend(t *testing.T, ns netns.NsHandle) uint16 {
	t.Helper()
	l, err := kernel.ListenIn(ns, "tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fmt.Fprintf(c, "%s\n", unmap(netip.MustParseAddrPort(c.RemoteAddr().String())).Addr())
				if _, err := io.Copy(c, c); err != nil {
					return
				}
				io.WriteString(c, "bye\n")
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return port(l.Addr())
}

// udpBackend answers each datagram with "<client address as seen> <payload>".
func udpBackend(t *testing.T, ns netns.NsHandle) uint16 {
	t.Helper()
	c, err := kernel.ListenPacketIn(ns, "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			ap := unmap(netip.MustParseAddrPort(from.String()))
			c.WriteTo(append([]byte(ap.String()+" "), buf[:n]...), from)
		}
	}()
	return port(c.LocalAddr())
}

func port(a net.Addr) uint16 { return netip.MustParseAddrPort(a.String()).Port() }

// freePort returns a port that nothing in ns listens on for either protocol.
// freePorts returns n distinct free ports (freePort may hand out the one it just gave).
func freePorts(t *testing.T, ns netns.NsHandle, n int) []uint16 {
	t.Helper()
	var out []uint16
	for len(out) < n {
		if p := freePort(t, ns); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func freePort(t *testing.T, ns netns.NsHandle) uint16 {
	t.Helper()
	for range 20 {
		l, err := kernel.ListenIn(ns, "tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		p := port(l.Addr())
		l.Close()
		if _, ok, err := kernel.PortHolder(ns, "udp", netip.Addr{}, p); err == nil && !ok {
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

func dial(t *testing.T, ns netns.NsHandle, network string, to netip.AddrPort) net.Conn {
	t.Helper()
	c, err := kernel.DialIn(t.Context(), ns, network, to.String(), 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, to, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// roundTrip connects to to from the client namespace, sends msg, half-closes, and
// returns the line the backend saw as client address and the rest of the answer.
func roundTrip(t *testing.T, ns netns.NsHandle, to netip.AddrPort, msg string) (seen, rest string) {
	t.Helper()
	c := dial(t, ns, "tcp", to)
	r := bufio.NewReader(c)
	seen, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", to, err)
	}
	io.WriteString(c, msg)
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read from %s: %v", to, err)
	}
	return strings.TrimSpace(seen), string(b)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func nodeAddr4() netip.Addr { return lab.NodeAddr4.Addr() }
func nodeAddr6() netip.Addr { return lab.NodeAddr6.Addr() }

func TestPrivilegedTCPDualStack(t *testing.T) {
	tp := newTopo(t)
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	bp := tcpBackend(t, tp.backend)
	mg := newManager(t, tp.node, Config{})
	hp := freePort(t, tp.node)
	hp6 := freePort(t, tp.node)
	m4 := Mapping{Protocol: "tcp", HostPort: hp, Backend: netip.AddrPortFrom(backend4.Addr(), bp)}
	m6 := Mapping{Protocol: "tcp", HostPort: hp6, Backend: netip.AddrPortFrom(backend6.Addr(), bp)}
	for _, m := range []Mapping{m4, m6} {
		if err := mg.Add(m); err != nil {
			t.Fatal(err)
		}
		if err := mg.Add(m); err != nil {
			t.Fatalf("second Add: %v", err)
		}
	}
	// One dual-stack socket per mapping: [::]:port.
	if h, ok, err := kernel.PortHolder(tp.node, "tcp", nodeAddr4(), hp); err != nil || !ok || h.Local.String() != fmt.Sprintf("[::]:%d", hp) || h.PID != os.Getpid() {
		t.Errorf("listener of %s: %v %v %v", m4, h, ok, err)
	}
	for _, tc := range []struct {
		to       netip.AddrPort
		wantSeen netip.Addr
	}{
		{netip.AddrPortFrom(nodeAddr4(), hp), nodeBackendSide4.Addr()},
		{netip.AddrPortFrom(nodeAddr6(), hp), nodeBackendSide4.Addr()},
		{netip.AddrPortFrom(nodeAddr4(), hp6), nodeBackendSide6.Addr()},
		{netip.AddrPortFrom(nodeAddr6(), hp6), nodeBackendSide6.Addr()},
	} {
		seen, rest := roundTrip(t, tp.client, tc.to, "hello")
		// The backend sees the node, never the client: the source address is lost.
		if seen != tc.wantSeen.String() || rest != "hellobye\n" {
			t.Errorf("via %s: backend saw %q and answered %q; want %s and %q", tc.to, seen, rest, tc.wantSeen, "hellobye\n")
		}
	}
	want := []Mapping{m4, m6}
	slices.SortFunc(want, compareMappings)
	if got := mg.Mappings(); !slices.Equal(got, want) {
		t.Errorf("Mappings = %v, want %v", got, want)
	}
	now, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer now.Close()
	if !now.Equal(orig) {
		t.Error("the test's thread changed namespace")
	}
}

func TestPrivilegedTCPHostIP(t *testing.T) {
	tp := newTopo(t)
	mg := newManager(t, tp.node, Config{})
	hp := freePort(t, tp.node)
	pp := freePort(t, tp.backend) // where probe.TCPVia listens
	// "::" is IPv6 only, so 0.0.0.0 on the same port is another mapping.
	v6 := Mapping{Protocol: "tcp", HostIP: netip.IPv6Unspecified(), HostPort: hp, Backend: netip.AddrPortFrom(backend6.Addr(), pp)}
	v4 := Mapping{Protocol: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: hp, Backend: netip.AddrPortFrom(backend4.Addr(), pp)}
	if err := mg.Sync([]Mapping{v6, v4}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		name         string
		dial, listen netip.AddrPort
		seen         netip.Addr
	}{
		{"v4", netip.AddrPortFrom(nodeAddr4(), hp), v4.Backend, nodeBackendSide4.Addr()},
		{"v6", netip.AddrPortFrom(nodeAddr6(), hp), v6.Backend, nodeBackendSide6.Addr()},
	} {
		if seen, err := probe.TCPVia(t.Context(), tp.client, tp.backend, m.listen, m.dial, 2*time.Second); err != nil || seen != m.seen {
			t.Errorf("%s client through %s: backend %s saw %v (%v), want %s", m.name, m.dial, m.listen, seen, err, m.seen)
		}
	}
	// One specific address: the other family is refused (nothing listens there).
	bp := tcpBackend(t, tp.backend)
	hp2 := freePort(t, tp.node)
	one := Mapping{Protocol: "tcp", HostIP: nodeAddr4(), HostPort: hp2, Backend: netip.AddrPortFrom(backend4.Addr(), bp)}
	if err := mg.Add(one); err != nil {
		t.Fatal(err)
	}
	if _, rest := roundTrip(t, tp.client, netip.AddrPortFrom(nodeAddr4(), hp2), "x"); rest != "xbye\n" {
		t.Errorf("via %s: %q", one, rest)
	}
	wantRefused(t, tp.client, netip.AddrPortFrom(nodeAddr6(), hp2), one.String()+" over IPv6")
}

// wantRefused fails unless a TCP connection from ns to to is refused (ECONNREFUSED: the
// node answered with a reset, nothing listens there).
func wantRefused(t *testing.T, ns netns.NsHandle, to netip.AddrPort, what string) {
	t.Helper()
	c, err := kernel.DialIn(t.Context(), ns, "tcp", to.String(), time.Second)
	if err == nil {
		c.Close()
		t.Errorf("%s: connection to %s accepted, want refused", what, to)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%s: connection to %s: %v, want refused", what, to, err)
	}
}

func TestPrivilegedTCPHalfClose(t *testing.T) {
	tp := newTopo(t)
	mg := newManager(t, tp.node, Config{})

	// The backend ends its stream first, then still receives what the client sends.
	l, err := kernel.ListenIn(tp.backend, "tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		io.WriteString(c, "first")
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	}()
	hp := freePort(t, tp.node)
	if err := mg.Add(Mapping{Protocol: "tcp", HostPort: hp, Backend: netip.AddrPortFrom(backend4.Addr(), port(l.Addr()))}); err != nil {
		t.Fatal(err)
	}
	c := dial(t, tp.client, "tcp", netip.AddrPortFrom(nodeAddr4(), hp))
	b, err := io.ReadAll(c) // until the backend's FIN, passed on by the proxy
	if err != nil || string(b) != "first" {
		t.Fatalf("client read %q, %v", b, err)
	}
	io.WriteString(c, "after your FIN")
	c.(*net.TCPConn).CloseWrite()
	select {
	case s := <-got:
		if s != "after your FIN" {
			t.Errorf("backend read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("backend did not get the client's data and FIN")
	}

	// The other way: the client ends first, the backend answers after that (the echo
	// backend writes "bye" once it has seen the end of the stream).
	bp := tcpBackend(t, tp.backend)
	hp2 := freePort(t, tp.node)
	if err := mg.Add(Mapping{Protocol: "tcp", HostPort: hp2, Backend: netip.AddrPortFrom(backend6.Addr(), bp)}); err != nil {
		t.Fatal(err)
	}
	if _, rest := roundTrip(t, tp.client, netip.AddrPortFrom(nodeAddr6(), hp2), "ping"); rest != "pingbye\n" {
		t.Errorf("answer after the client's FIN: %q", rest)
	}
}

func TestPrivilegedTCPBulkAndSplice(t *testing.T) {
	tp := newTopo(t)
	bp := tcpBackend(t, tp.backend)
	mg := newManager(t, tp.node, Config{})
	hp := freePort(t, tp.node)
	if err := mg.Add(Mapping{Protocol: "tcp", HostPort: hp, Backend: netip.AddrPortFrom(backend4.Addr(), bp)}); err != nil {
		t.Fatal(err)
	}
	c := dial(t, tp.client, "tcp", netip.AddrPortFrom(nodeAddr4(), hp))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}

	// While the connection is open, both relay goroutines sit in splice(2): their
	// stacks go through internal/poll.Splice (net.spliceFrom), not a buffered copy.
	waitFor(t, "both relay directions in internal/poll.Splice", 5*time.Second, func() bool {
		return relaysInSplice() == 2
	})

	data := make([]byte, 16<<20)
	rand.Read(data)
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	back, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want := append(data, "bye\n"...)
	if sha256.Sum256(back) != sha256.Sum256(want) {
		t.Fatalf("echoed %d bytes, want the %d sent and bye", len(back), len(data))
	}
}

// relaysInSplice counts the goroutines of this package's relay whose stack is inside
// internal/poll.Splice.
func relaysInSplice() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("portproxy.pipe(")) && bytes.Contains(g, []byte("internal/poll.Splice(")) {
			n++
		}
	}
	return n
}

func TestPrivilegedRemove(t *testing.T) {
	tp := newTopo(t)
	bp := tcpBackend(t, tp.backend)
	up := udpBackend(t, tp.backend)
	mg := newManager(t, tp.node, Config{})
	hp := freePort(t, tp.node)
	tm := Mapping{Protocol: "tcp", HostPort: hp, Backend: netip.AddrPortFrom(backend4.Addr(), bp)}
	um := Mapping{Protocol: "udp", HostPort: hp, Backend: netip.AddrPortFrom(backend4.Addr(), up)}
	if err := mg.Sync([]Mapping{tm, um}); err != nil {
		t.Fatal(err)
	}
	c := dial(t, tp.client, "tcp", netip.AddrPortFrom(nodeAddr4(), hp))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	u := dial(t, tp.client, "udp", netip.AddrPortFrom(nodeAddr4(), hp))
	udpExchange(t, u, "a")

	if err := mg.Remove(tm); err != nil {
		t.Fatal(err)
	}
	// The active connection is closed by Remove, not left to run.
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if b, err := io.ReadAll(r); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after Remove (read %q)", b)
	}
	wantRefused(t, tp.client, netip.AddrPortFrom(nodeAddr4(), hp), "after Remove")
	up2 := mg.proxies[um].(*udpProxy)
	if n := up2.sessionCount(); n != 1 {
		t.Errorf("%d udp sessions, want 1", n)
	}
	if err := mg.Remove(um); err != nil {
		t.Fatal(err)
	}
	if n := up2.sessionCount(); n != 0 {
		t.Errorf("%d udp sessions after Remove", n)
	}
	for _, proto := range []string{"tcp", "udp"} {
		if h, ok, err := kernel.PortHolder(tp.node, proto, netip.Addr{}, hp); err != nil || ok {
			t.Errorf("%s port %d still held after Remove: %v %v", proto, hp, h, err)
		}
	}
	if err := mg.Remove(tm); err != nil {
		t.Errorf("Remove of a removed mapping: %v", err)
	}
	if got := mg.Mappings(); len(got) != 0 {
		t.Errorf("Mappings after Remove: %v", got)
	}
}

func TestPrivilegedAddConflict(t *testing.T) {
	tp := newTopo(t)
	mg := newManager(t, tp.node, Config{})
	be := netip.MustParseAddrPort("10.99.0.2:1")
	hp := freePort(t, tp.node)
	first := Mapping{Protocol: "tcp", HostPort: hp, Backend: be}
	if err := mg.Add(first); err != nil {
		t.Fatal(err)
	}
	second := Mapping{Protocol: "tcp", HostIP: nodeAddr4(), HostPort: hp, Backend: netip.MustParseAddrPort("10.99.0.2:2")}
	err := mg.Add(second)
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), second.String()) || !strings.Contains(err.Error(), first.String()) {
		t.Errorf("Add over a mapping: %v", err)
	}

	// A socket that is not ours: the error names the mapping and the holder.
	hp2 := freePort(t, tp.node)
	l, err := kernel.ListenIn(tp.node, "tcp4", fmt.Sprintf("0.0.0.0:%d", hp2))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	m := Mapping{Protocol: "tcp", HostPort: hp2, Backend: be}
	err = mg.Add(m)
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), m.String()) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("Add over a foreign socket: %v", err)
	}
	if got := mg.Mappings(); len(got) != 1 || got[0] != first {
		t.Errorf("Mappings = %v, want only %s", got, first)
	}
}

func TestPrivilegedSync(t *testing.T) {
	tp := newTopo(t)
	bp := tcpBackend(t, tp.backend)
	bp2 := tcpBackend(t, tp.backend)
	mg := newManager(t, tp.node, Config{})
	ports := freePorts(t, tp.node, 2)
	ha, hb := ports[0], ports[1]
	a := Mapping{Protocol: "tcp", HostPort: ha, Backend: netip.AddrPortFrom(backend4.Addr(), bp)}
	b := Mapping{Protocol: "tcp", HostPort: hb, Backend: netip.AddrPortFrom(backend4.Addr(), bp)}
	b2 := Mapping{Protocol: "tcp", HostPort: hb, Backend: netip.AddrPortFrom(backend6.Addr(), bp2)}
	if err := mg.Sync([]Mapping{b, a, a}); err != nil {
		t.Fatal(err)
	}
	if got := mg.Mappings(); len(got) != 2 {
		t.Fatalf("Mappings = %v", got)
	}
	// A connection through a lives across a Sync that keeps a.
	c := dial(t, tp.client, "tcp", netip.AddrPortFrom(nodeAddr4(), ha))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// b's port moves to another backend: b goes first, then b2 can bind.
	if err := mg.Sync([]Mapping{a, b2}); err != nil {
		t.Fatal(err)
	}
	want := []Mapping{a, b2}
	slices.SortFunc(want, compareMappings)
	if got := mg.Mappings(); !slices.Equal(got, want) {
		t.Errorf("Mappings = %v, want %v", got, want)
	}
	if seen, _ := roundTrip(t, tp.client, netip.AddrPortFrom(nodeAddr4(), hb), ""); seen != nodeBackendSide6.Addr().String() {
		t.Errorf("port %d reaches a backend that saw %s, want the new backend", hb, seen)
	}
	io.WriteString(c, "still")
	c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(r); err != nil || string(rest) != "stillbye\n" {
		t.Errorf("connection through %s after Sync: %q, %v", a, rest, err)
	}
	// Invalid entries are reported; the valid ones are applied anyway.
	bad := Mapping{Protocol: "icmp", HostPort: 1, Backend: b.Backend}
	if err := mg.Sync([]Mapping{bad, b2}); err == nil || !strings.Contains(err.Error(), "icmp") {
		t.Errorf("Sync with an invalid mapping: %v", err)
	}
	if got := mg.Mappings(); len(got) != 1 || got[0] != b2 {
		t.Errorf("Mappings = %v, want %s", got, b2)
	}
	if err := mg.Sync(nil); err != nil {
		t.Fatal(err)
	}
	if got := mg.Mappings(); len(got) != 0 {
		t.Errorf("Mappings = %v, want none", got)
	}
}

// udpExchange sends msg on c and returns the reply. Like any UDP client it resends
// after a silence (a first datagram can be lost while a fresh link settles) and skips
// replies to other datagrams.
func udpExchange(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	var err error
	for range 3 {
		var reply string
		reply, err = udpTry(c, msg, time.Second)
		for err == nil && !strings.HasSuffix(reply, " "+msg) {
			reply, err = udpRead(c, time.Second)
		}
		if err == nil {
			return reply
		}
	}
	t.Fatalf("%s -> %s: %v", c.LocalAddr(), c.RemoteAddr(), err)
	return ""
}

func udpTry(c net.Conn, msg string, timeout time.Duration) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	return udpRead(c, timeout)
}

func udpRead(c net.Conn, timeout time.Duration) (string, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func TestPrivilegedUDPSessions(t *testing.T) {
	tp := newTopo(t)
	up := udpBackend(t, tp.backend)
	// Long enough that a loaded machine does not idle a session out between two
	// exchanges (a new session would answer from another port).
	idle := 2 * time.Second
	mg := newManager(t, tp.node, Config{UDPIdleTimeout: idle, MaxUDPSessions: 2})
	hp := freePort(t, tp.node)
	m := Mapping{Protocol: "udp", HostPort: hp, Backend: netip.AddrPortFrom(backend4.Addr(), up)}
	if err := mg.Add(m); err != nil {
		t.Fatal(err)
	}
	p := mg.proxies[m].(*udpProxy)
	to4, to6 := netip.AddrPortFrom(nodeAddr4(), hp), netip.AddrPortFrom(nodeAddr6(), hp)
	c1 := dial(t, tp.client, "udp", to4)
	c2 := dial(t, tp.client, "udp", to6) // IPv6 client on the dual-stack socket
	c3 := dial(t, tp.client, "udp", to4)

	r1 := udpExchange(t, c1, "one")
	r2 := udpExchange(t, c2, "two")
	src1, msg1, _ := strings.Cut(r1, " ")
	src2, msg2, _ := strings.Cut(r2, " ")
	if msg1 != "one" || msg2 != "two" {
		t.Fatalf("replies %q, %q", r1, r2)
	}
	// Each client has its own backend socket, from the node's address (client lost).
	a1, a2 := netip.MustParseAddrPort(src1), netip.MustParseAddrPort(src2)
	if a1 == a2 || a1.Addr() != nodeBackendSide4.Addr() || a2.Addr() != nodeBackendSide4.Addr() {
		t.Errorf("backend saw %s and %s; want two ports of %s", a1, a2, nodeBackendSide4.Addr())
	}
	// Same client, same session.
	if r := udpExchange(t, c1, "again"); r != src1+" again" {
		t.Errorf("second datagram of client 1: %q, want from %s", r, src1)
	}
	if n := p.sessionCount(); n != 2 {
		t.Errorf("%d sessions, want 2", n)
	}
	// Bounded: a third client is dropped while two sessions live.
	if r, err := udpTry(c3, "three", 200*time.Millisecond); err == nil {
		t.Errorf("third client answered (%q) beyond MaxUDPSessions", r)
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("third client beyond MaxUDPSessions: %v, want no answer (dropped)", err)
	}
	// Idle sessions expire; then there is room again.
	waitFor(t, "idle sessions to expire", 5*idle, func() bool { return p.sessionCount() == 0 })
	if r := udpExchange(t, c3, "three"); !strings.HasSuffix(r, " three") {
		t.Errorf("third client after expiry: %q", r)
	}
	// A session kept busy does not expire (kept one and a half idle timeouts).
	for range 3 {
		time.Sleep(idle / 2)
		udpExchange(t, c3, "keep")
	}
	if n := p.sessionCount(); n != 1 {
		t.Errorf("%d sessions while client 3 is active, want 1", n)
	}
}

func TestPrivilegedUDPReplySource(t *testing.T) {
	tp := newTopo(t)
	up := udpBackend(t, tp.backend)
	if err := lab.AddAddrs(tp.node, lab.Uplink, nodeSecond4, nodeSecond6); err != nil {
		t.Fatal(err)
	}

	mg := newManager(t, tp.node, Config{})
	ports := freePorts(t, tp.node, 2)
	hp, hp6 := ports[0], ports[1]
	for _, m := range []Mapping{
		{Protocol: "udp", HostPort: hp, Backend: netip.AddrPortFrom(backend4.Addr(), up)},                                   // dual-stack
		{Protocol: "udp", HostIP: netip.IPv4Unspecified(), HostPort: hp6, Backend: netip.AddrPortFrom(backend6.Addr(), up)}, // v4 wildcard
		{Protocol: "udp", HostIP: netip.IPv6Unspecified(), HostPort: hp6, Backend: netip.AddrPortFrom(backend6.Addr(), up)}, // v6 wildcard
	} {
		if err := mg.Add(m); err != nil {
			t.Fatal(err)
		}
	}
	// Connected client sockets accept replies only from the address they sent to:
	// every node address must answer from itself.
	for _, to := range []netip.AddrPort{
		netip.AddrPortFrom(nodeAddr4(), hp),
		netip.AddrPortFrom(nodeSecond4.Addr(), hp),
		netip.AddrPortFrom(nodeAddr6(), hp),
		netip.AddrPortFrom(nodeSecond6.Addr(), hp),
		netip.AddrPortFrom(nodeAddr4(), hp6),
		netip.AddrPortFrom(nodeSecond4.Addr(), hp6),
		netip.AddrPortFrom(nodeAddr6(), hp6),
		netip.AddrPortFrom(nodeSecond6.Addr(), hp6),
	} {
		udpExchange(t, dial(t, tp.client, "udp", to), "hi")
	}
}

func TestPrivilegedNoGoroutineLeak(t *testing.T) {
	tp := newTopo(t)
	bp := tcpBackend(t, tp.backend)
	up := udpBackend(t, tp.backend)
	before := runtime.NumGoroutine()

	mg, err := New(tp.node, Config{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	hp := freePort(t, tp.node)
	tm := Mapping{Protocol: "tcp", HostPort: hp, Backend: netip.AddrPortFrom(backend4.Addr(), bp)}
	um := Mapping{Protocol: "udp", HostPort: hp, Backend: netip.AddrPortFrom(backend6.Addr(), up)}
	dead := Mapping{Protocol: "tcp", HostPort: freePort(t, tp.node), Backend: netip.MustParseAddrPort("10.99.0.2:1")} // refused
	if err := mg.Sync([]Mapping{tm, um, dead}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		roundTrip(t, tp.client, netip.AddrPortFrom(nodeAddr4(), hp), "x") // finished connections
	}
	open := dial(t, tp.client, "tcp", netip.AddrPortFrom(nodeAddr6(), hp)) // left open
	if _, err := bufio.NewReader(open).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	half := dial(t, tp.client, "tcp", netip.AddrPortFrom(nodeAddr4(), hp)) // half-closed by the client
	half.(*net.TCPConn).CloseWrite()
	for i := range 3 {
		u := dial(t, tp.client, "udp", netip.AddrPortFrom(nodeAddr4(), hp))
		udpExchange(t, u, fmt.Sprint(i))
	}
	c := dial(t, tp.client, "tcp", netip.AddrPortFrom(nodeAddr4(), dead.HostPort))
	io.ReadAll(c) // closed by the proxy once the backend refuses

	if runtime.NumGoroutine() <= before {
		t.Fatalf("%d goroutines with live connections, %d before: the count proves nothing", runtime.NumGoroutine(), before)
	}
	mg.Close()
	mg.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := mg.Add(tm); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
}
