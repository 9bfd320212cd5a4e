package portproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
)

// maxDatagram holds any UDP payload (65,507 bytes over IPv4, 65,527 over IPv6).
const maxDatagram = 65535

// datagramPool lends buffers to the session goroutines only while they hold a
// datagram: an idle session waits for readability without a buffer, so a thousand
// sessions do not pin 64 MB.
var datagramPool = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// udpProxy relays the datagrams of a mapping. Each client address (ip:port) gets a
// session: a socket connected to the backend, so that the backend's replies can be
// told apart and sent back to that client from the listening socket. Goroutines: one
// read loop for the listening socket, one per session for the backend's replies.
type udpProxy struct {
	m   Mapping
	ns  netns.NsHandle
	cfg *Config
	ln  *net.UDPConn
	wg  sync.WaitGroup // the read loop and every session

	// pktinfo: the listening socket is a wildcard one and reports each datagram's
	// destination address (IP_PKTINFO / IPV6_PKTINFO), which replies use as their
	// source: on a node with several addresses a reply must come from the address the
	// client sent to, or a connected client socket drops it.
	pktinfo bool

	// mu guards sessions, closed and full.
	mu       sync.Mutex
	sessions map[netip.AddrPort]*udpSession // by client address as the listener reports it
	closed   bool
	full     bool // sessions reached MaxUDPSessions (logged once until it drops below)
}

// udpSession is one client of a UDP mapping.
type udpSession struct {
	client netip.AddrPort // as the listener reports it (v4-mapped on a dual-stack socket)
	conn   *net.UDPConn   // connected to the backend, created in the node namespace
	last   atomic.Int64   // time of the last datagram either way, unix nanoseconds

	ctl    atomic.Pointer[[]byte] // control message for replies (source address), or nil
	rawCtl []byte                 // received control bytes ctl was derived from; read loop only
}

func (s *udpSession) touch() { s.last.Store(time.Now().UnixNano()) }

func startUDP(ns netns.NsHandle, m Mapping, cfg *Config) (*udpProxy, error) {
	network, addr := m.listenAddr()
	pc, err := kernel.ListenPacketIn(ns, network, addr)
	if err != nil {
		return nil, err
	}
	p := &udpProxy{m: m, ns: ns, cfg: cfg, ln: pc.(*net.UDPConn), sessions: map[netip.AddrPort]*udpSession{}}
	if !m.HostIP.IsValid() || m.HostIP.IsUnspecified() {
		if err := enablePktinfo(p.ln); err != nil {
			p.ln.Close()
			return nil, err
		}
		p.pktinfo = true
	}
	p.wg.Add(1)
	go p.readLoop()
	return p, nil
}

// enablePktinfo asks for the destination address of each datagram: IPV6_RECVPKTINFO
// on an IPv6 socket (it covers IPv4 datagrams of a dual-stack socket too, as
// v4-mapped addresses), IP_PKTINFO on an IPv4 one.
func enablePktinfo(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		domain, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			serr = err
			return
		}
		if domain == unix.AF_INET6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return &net.OpError{Op: "setsockopt", Net: "udp", Addr: c.LocalAddr(), Err: err}
	}
	return nil
}

func (p *udpProxy) readLoop() {
	defer p.wg.Done()
	buf := make([]byte, maxDatagram)
	oob := make([]byte, 64) // one in6_pktinfo or in_pktinfo message
	for {
		n, oobn, flags, from, err := p.ln.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.cfg.Logf("portproxy: mapping %s: read: %v", p.m, err)
			time.Sleep(10 * time.Millisecond) // never spin on a persistent error
			continue
		}
		if flags&unix.MSG_TRUNC != 0 {
			continue
		}
		s := p.session(from)
		if s == nil {
			continue // dropped: no session available
		}
		if p.pktinfo && !bytes.Equal(s.rawCtl, oob[:oobn]) {
			s.rawCtl = append(s.rawCtl[:0], oob[:oobn]...)
			ctl := replyControl(oob[:oobn])
			s.ctl.Store(&ctl)
		}
		s.touch()
		// A refused earlier datagram (ICMP port unreachable from the backend) shows
		// up as an error on a later write: the datagram at hand is still sent.
		if _, err := s.conn.Write(buf[:n]); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			p.cfg.Logf("portproxy: mapping %s: client %s: send to backend: %v", p.m, unmap(from), err)
		}
	}
}

// session returns the session of client, creating it if there is room; nil when the
// datagram has to be dropped.
func (p *udpProxy) session(client netip.AddrPort) *udpSession {
	p.mu.Lock()
	s := p.sessions[client]
	full := len(p.sessions) >= p.cfg.MaxUDPSessions
	closed := p.closed
	if s == nil && full && !p.full {
		p.cfg.Logf("portproxy: mapping %s: %d sessions: dropping datagrams of new clients", p.m, len(p.sessions))
	}
	if s == nil || !full {
		p.full = full
	}
	p.mu.Unlock()
	if s != nil {
		return s
	}
	if full || closed {
		return nil
	}

	// Only the read loop creates sessions: no other one for client can appear
	// while dialing.
	c, err := kernel.DialIn(context.Background(), p.ns, "udp", p.m.Backend.String(), p.cfg.DialTimeout)
	if err != nil {
		p.cfg.Logf("portproxy: mapping %s: client %s: %v", p.m, unmap(client), err)
		return nil
	}
	s = &udpSession{client: client, conn: c.(*net.UDPConn)}
	s.touch()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		s.conn.Close()
		return nil
	}
	p.sessions[client] = s
	p.wg.Add(1)
	go p.replies(s)
	return s
}

// replies sends the backend's datagrams of s back to its client until the session has
// been idle for UDPIdleTimeout or the proxy closes it.
func (p *udpProxy) replies(s *udpSession) {
	defer p.wg.Done()
	defer p.drop(s)
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return
	}
	for {
		until := time.Unix(0, s.last.Load()).Add(p.cfg.UDPIdleTimeout)
		if !time.Now().Before(until) {
			return // idle: the session expires
		}
		s.conn.SetReadDeadline(until)
		buf, n, err := readPooled(rc)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			continue // the backend port is closed for now; the client may retry
		case errors.Is(err, net.ErrClosed):
			return
		case errors.Is(err, syscall.EAGAIN) || errors.Is(err, os.ErrDeadlineExceeded):
			continue // recheck idleness: the client may have sent meanwhile
		case err != nil:
			p.cfg.Logf("portproxy: mapping %s: client %s: receive from backend: %v", p.m, unmap(s.client), err)
			return
		}
		s.touch()
		var ctl []byte
		if c := s.ctl.Load(); c != nil {
			ctl = *c
		}
		_, _, err = p.ln.WriteMsgUDPAddrPort((*buf)[:n], ctl, s.client)
		datagramPool.Put(buf)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			p.cfg.Logf("portproxy: mapping %s: client %s: send reply: %v", p.m, unmap(s.client), err)
		}
	}
}

// readPooled waits for a datagram on rc (honouring its read deadline) and reads it
// into a buffer from datagramPool, which the caller returns. On error no buffer is
// held.
func readPooled(rc syscall.RawConn) (*[]byte, int, error) {
	var (
		buf  *[]byte
		n    int
		rerr error
	)
	err := rc.Read(func(fd uintptr) bool {
		b := datagramPool.Get().(*[]byte)
		for {
			n, rerr = unix.Read(int(fd), *b)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			datagramPool.Put(b)
			return false // wait for readability
		}
		if rerr != nil {
			datagramPool.Put(b)
			return true
		}
		buf = b
		return true
	})
	if err != nil {
		return nil, 0, err
	}
	if rerr != nil {
		return nil, 0, rerr
	}
	return buf, n, nil
}

// drop forgets s and closes its backend socket.
func (p *udpProxy) drop(s *udpSession) {
	p.mu.Lock()
	if p.sessions[s.client] == s {
		delete(p.sessions, s.client)
	}
	p.mu.Unlock()
	s.conn.Close()
}

func (p *udpProxy) sessionCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

func (p *udpProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, s := range p.sessions {
		s.conn.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

var _ proxy = (*udpProxy)(nil)

// replyControl turns the packet-info message received with a client's datagram into
// the one that makes the reply leave from the address the client sent to, or nil.
// The interface is pinned only for IPv6 link-local addresses, which need it; other
// replies follow the routing table.
func replyControl(oob []byte) []byte {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return nil
		}
		oob = rest
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			var info unix.Inet4Pktinfo // ifindex, spec_dst (the local address), addr
			copy(info.Spec_dst[:], data[4:8])
			return unix.PktInfo4(&info)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			var info unix.Inet6Pktinfo // addr, ifindex
			copy(info.Addr[:], data[:16])
			if netip.AddrFrom16(info.Addr).IsLinkLocalUnicast() {
				info.Ifindex = binary.NativeEndian.Uint32(data[16:20])
			}
			return unix.PktInfo6(&info)
		}
	}
	return nil
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
