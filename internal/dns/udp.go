package dns

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// The UDP socket is served by serveUDP rather than miekg/dns's server, which leaves the
// socket's receive buffer at the kernel's default (net.core.rmem_default, 208 KiB: a
// few hundred small datagrams), reads each datagram into a 64 KiB buffer with a deadline
// set per read, answers junk with FORMERR and starts a goroutine for every datagram. A
// burst of junk outruns such a read loop, the receive buffer fills up, and the kernel
// drops whatever arrives next: the valid query right behind the burst included. So:
//   - the socket asks for a receive buffer of udpRecvBuffer bytes (SO_RCVBUF, and
//     SO_RCVBUFFORCE beyond net.core.rmem_max when the process may), which holds a burst
//     of thousands of datagrams until the read loop gets to them;
//   - one goroutine reads, and looks at nothing but the header: a datagram that cannot
//     be a query (too short or too long, a response, not exactly one question, records
//     in the answer or authority section) is dropped at once, without a reply, a copy or
//     a goroutine; a datagram that does not unpack is dropped unanswered too (any answer
//     to junk is a reflection);
//   - every query is answered on a goroutine of its own, at most maxUDPInFlight at once
//     and maxUDPInFlightPerClient per source address: beyond, the datagram is dropped
//     (the client retries) rather than queued. The read loop never waits for an answer,
//     and a question waiting for an upstream (bounded by maxForwards) never delays the
//     answers of other questions.

// udpRecvBuffer is the receive buffer asked for the UDP socket. Memory is taken only by
// datagrams waiting to be read; the kernel charges some 1 KiB for a small one.
const udpRecvBuffer = 4 << 20

// maxQuerySize is the longest datagram read as a query. A query is one question (at most
// 255 bytes of name) and an OPT record with a few options: well under 1 KiB.
const maxQuerySize = 4096

// serveUDP answers the queries arriving on conn until conn is closed (it then returns nil,
// after the answers in progress), or a read fails otherwise. Answers in progress end
// early when ctx ends (questions waiting for an upstream give up).
func (s *Server) serveUDP(ctx context.Context, conn *net.UDPConn) error {
	limit := newInflight(maxUDPInFlight, maxUDPInFlightPerClient)
	var wg sync.WaitGroup
	defer wg.Wait()
	buf := make([]byte, maxQuerySize+1) // one byte more: a longer datagram shows
	for {
		n, sess, err := mdns.ReadFromSessionUDP(conn, buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if transientReadError(err) {
				continue
			}
			return fmt.Errorf("read udp: %w", err)
		}
		if n > maxQuerySize || !plausibleQuery(buf[:n]) {
			continue
		}
		ua, ok := sess.RemoteAddr().(*net.UDPAddr)
		if !ok {
			continue
		}
		client := ua.AddrPort().Addr().Unmap()
		if !limit.acquire(client) {
			continue
		}
		q := bytes.Clone(buf[:n])
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer limit.release(client)
			s.answerUDP(ctx, conn, sess, client, q)
		}()
	}
}

// answerUDP answers the query b from client, from the address the query went to.
func (s *Server) answerUDP(ctx context.Context, conn *net.UDPConn, sess *mdns.SessionUDP, client netip.Addr, b []byte) {
	r := new(mdns.Msg)
	if err := r.Unpack(b); err != nil {
		return
	}
	m := s.respond(ctx, client, true, r)
	if m == nil {
		return
	}
	out, err := m.Pack()
	if err != nil {
		s.set.logf("dns: pack answer to %s %s: %v", r.Question[0].Name, mdns.TypeToString[r.Question[0].Qtype], err)
		return
	}
	_, _ = mdns.WriteToSessionUDP(conn, out, sess) // a client gone is no error of ours
}

// plausibleQuery reports whether the datagram b may be a query, from its header: the QR
// bit clear, one question, no answer or authority records, at most two additional ones
// (OPT, and a TSIG or SIG(0)), and room for the question (a name of one byte at least,
// the type and the class).
func plausibleQuery(b []byte) bool {
	const headerSize = 12
	if len(b) < headerSize+5 {
		return false
	}
	flags := binary.BigEndian.Uint16(b[2:])
	qd := binary.BigEndian.Uint16(b[4:])
	an := binary.BigEndian.Uint16(b[6:])
	ns := binary.BigEndian.Uint16(b[8:])
	ar := binary.BigEndian.Uint16(b[10:])
	return flags&0x8000 == 0 && qd == 1 && an == 0 && ns == 0 && ar <= 2
}

// transientReadError reports whether a read error on the UDP socket leaves it usable:
// the ICMP error of an earlier answer, or a lack of kernel memory.
func transientReadError(err error) bool {
	for _, e := range []syscall.Errno{unix.ECONNREFUSED, unix.ECONNRESET, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.ENOBUFS, unix.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// setUDPOptions asks for a receive buffer of udpRecvBuffer bytes, and for the
// destination address of every datagram (IP_PKTINFO, IPV6_RECVPKTINFO), with which an
// answer leaves from the address its query went to when conn is bound to a wildcard
// address. It returns the receive buffer the kernel granted.
func setUDPOptions(conn *net.UDPConn) (int, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var rcvbuf int // as Linux reports it: twice the size granted, its bookkeeping included
	var serr error
	err = rc.Control(func(fd uintptr) {
		sock := int(fd)
		_ = unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_RCVBUF, udpRecvBuffer)
		rcvbuf, _ = unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_RCVBUF)
		if rcvbuf/2 < udpRecvBuffer {
			// Capped by net.core.rmem_max; CAP_NET_ADMIN may go beyond (EPERM otherwise).
			if unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpRecvBuffer) == nil {
				rcvbuf, _ = unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_RCVBUF)
			}
		}
		// One of the two fails on an IPv4 socket; both work on a dual-stack IPv6 one.
		err4 := unix.SetsockoptInt(sock, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		err6 := unix.SetsockoptInt(sock, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		if err4 != nil && err6 != nil {
			serr = fmt.Errorf("ask for destination addresses: %w", err4)
		}
	})
	if err != nil {
		return 0, err
	}
	return rcvbuf / 2, serr
}
