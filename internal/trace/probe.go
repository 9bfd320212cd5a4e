package trace

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
)

// Probe is the outcome of one probe sent from the source's namespace.
type Probe struct {
	Proto  string         `json:"proto"`
	Local  netip.AddrPort `json:"local"` // the source address and port (ICMP: the echo id) the kernel chose
	Remote netip.AddrPort `json:"remote"`
	// OK is true when the destination answered: a TCP connection made, a UDP reply or an
	// ICMP echo reply received.
	OK bool `json:"ok"`
	// Result says what happened: "connected", "reply", "refused", "no answer",
	// "unreachable", or the error.
	Result string   `json:"result"`
	Time   Duration `json:"time"` // until the answer, or until the probe gave up
}

// Duration is a time.Duration that JSON shows as text ("1.2ms").
type Duration time.Duration

// MarshalText prints d as time.Duration does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses what MarshalText prints.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// probePayload is what a UDP or ICMP probe carries.
var probePayload = []byte("podnet trace probe\n")

// SendProbes sends count probes of flow f (TCP connect, one UDP datagram, ICMP echo
// request; no protocol: ICMP) from inside namespace ns, one after the other, each
// waiting up to timeout for its answer. It fails only when a probe cannot be sent at all.
func SendProbes(ctx context.Context, ns netns.NsHandle, f Flow, count int, timeout time.Duration) ([]Probe, error) {
	if (f.Proto == TCP || f.Proto == UDP) && f.Port == 0 {
		return nil, fmt.Errorf("probe %s: %s needs a port", f, f.Proto)
	}
	var out []Probe
	id := uint16(rand.N(1 << 16))
	for i := range max(count, 1) {
		if ctx.Err() != nil {
			break
		}
		var p Probe
		var err error
		switch f.Proto {
		case TCP:
			p, err = probeTCP(ctx, ns, f, timeout)
		case UDP:
			p, err = probeUDP(ctx, ns, f, timeout)
		default:
			p, err = probeICMP(ctx, ns, f, id, uint16(i+1), timeout)
		}
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

// dialer returns a dialer that binds its socket to f.Src (or the unspecified address) and
// an ephemeral port before it connects, and stores the address bound in *local: a TCP
// probe that gets no answer still has its port known, which names its flow.
func dialer(f Flow, timeout time.Duration, local *netip.AddrPort) *net.Dialer {
	return &net.Dialer{Timeout: timeout, Control: func(network, _ string, rc syscall.RawConn) error {
		var err error
		cerr := rc.Control(func(fd uintptr) {
			src := f.Src
			if !src.IsValid() {
				src = netip.IPv4Unspecified()
				if strings.HasSuffix(network, "6") {
					src = netip.IPv6Unspecified()
				}
			}
			if err = unix.Bind(int(fd), sockaddr(src)); err != nil {
				return
			}
			var sa unix.Sockaddr
			if sa, err = unix.Getsockname(int(fd)); err != nil {
				return
			}
			switch sa := sa.(type) {
			case *unix.SockaddrInet4:
				*local = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
			case *unix.SockaddrInet6:
				*local = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
			}
		})
		return errors.Join(cerr, err)
	}}
}

func probeTCP(ctx context.Context, ns netns.NsHandle, f Flow, timeout time.Duration) (Probe, error) {
	remote := netip.AddrPortFrom(f.Dst, f.Port)
	p := Probe{Proto: TCP, Remote: remote}
	var c net.Conn
	start := time.Now()
	err := kernel.Do(ns, func() (err error) {
		// The socket is created in ns; connecting completes wherever it runs.
		c, err = dialer(f, timeout, &p.Local).DialContext(ctx, "tcp", remote.String())
		return err
	})
	p.Time = Duration(time.Since(start))
	if err != nil {
		p.Result = dialResult(err)
		if isLocalError(err) {
			return p, fmt.Errorf("probe %s: %w", remote, err)
		}
		return p, nil
	}
	defer c.Close()
	p.Local = c.LocalAddr().(*net.TCPAddr).AddrPort()
	p.Local = netip.AddrPortFrom(p.Local.Addr().Unmap(), p.Local.Port())
	p.OK, p.Result = true, "connected"
	return p, nil
}

func probeUDP(ctx context.Context, ns netns.NsHandle, f Flow, timeout time.Duration) (Probe, error) {
	remote := netip.AddrPortFrom(f.Dst, f.Port)
	p := Probe{Proto: UDP, Remote: remote}
	var c net.Conn
	err := kernel.Do(ns, func() (err error) {
		c, err = dialer(f, timeout, &p.Local).DialContext(ctx, "udp", remote.String())
		return err
	})
	if err != nil {
		return p, fmt.Errorf("probe %s: %w", remote, err)
	}
	defer c.Close()
	p.Local = c.LocalAddr().(*net.UDPAddr).AddrPort()
	p.Local = netip.AddrPortFrom(p.Local.Addr().Unmap(), p.Local.Port())
	start := time.Now()
	if _, err := c.Write(probePayload); err != nil {
		p.Result = dialResult(err)
		return p, nil
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	_, err = c.Read(buf)
	p.Time = Duration(time.Since(start))
	if err != nil {
		p.Result = dialResult(err)
		return p, nil
	}
	p.OK, p.Result = true, "reply"
	return p, nil
}

// probeICMP sends one echo request with id and seq from a raw socket in ns and waits for
// the echo reply, or an error about the request.
func probeICMP(ctx context.Context, ns netns.NsHandle, f Flow, id, seq uint16, timeout time.Duration) (Probe, error) {
	p := Probe{Proto: ICMP, Remote: netip.AddrPortFrom(f.Dst, 0)}
	v6 := f.Dst.Is6()
	var fd int
	err := kernel.Do(ns, func() (err error) {
		if v6 {
			fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		} else {
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		}
		return err
	})
	if err != nil {
		return p, fmt.Errorf("probe %s: raw socket: %w", f.Dst, err)
	}
	defer unix.Close(fd)
	if f.Src.IsValid() {
		if err := unix.Bind(fd, sockaddr(f.Src)); err != nil {
			return p, fmt.Errorf("probe %s: bind %s: %w", f.Dst, f.Src, err)
		}
	}
	p.Local = netip.AddrPortFrom(f.Src, id)
	typ, replyType := byte(8), byte(0)
	if v6 {
		typ, replyType = 128, 129
	}
	msg := append([]byte{typ, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}, probePayload...)
	if !v6 { // the kernel computes ICMPv6 checksums itself
		sum := checksum(msg)
		msg[2], msg[3] = byte(sum>>8), byte(sum)
	}
	start := time.Now()
	if err := unix.Sendto(fd, msg, 0, sockaddr(f.Dst)); err != nil {
		p.Result = dialResult(err)
		if isLocalError(err) {
			return p, fmt.Errorf("probe %s: %w", f.Dst, err)
		}
		return p, nil
	}
	if !f.Src.IsValid() {
		if sa, err := unix.Getsockname(fd); err == nil {
			p.Local = netip.AddrPortFrom(addrOfSockaddr(sa), id)
		}
	}
	deadline := start.Add(timeout)
	buf := make([]byte, 1500)
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			p.Time, p.Result = Duration(time.Since(start)), "no answer"
			return p, nil
		}
		tv := unix.NsecToTimeval(min(left, 100*time.Millisecond).Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			p.Time, p.Result = Duration(time.Since(start)), err.Error()
			return p, nil
		}
		b := buf[:n]
		if !v6 { // an IPv4 raw socket gets the IP header too
			if len(b) < 20 {
				continue
			}
			b = b[int(b[0]&0x0f)*4:]
		}
		if len(b) < 8 {
			continue
		}
		switch {
		case b[0] == replyType && binary.BigEndian.Uint16(b[4:6]) == id && binary.BigEndian.Uint16(b[6:8]) == seq && addrOfSockaddr(from) == f.Dst:
			p.Time, p.OK, p.Result = Duration(time.Since(start)), true, "reply"
			return p, nil
		case isICMPError(v6, b[0]) && aboutEcho(v6, b[8:], id, seq):
			p.Time = Duration(time.Since(start))
			p.Result = fmt.Sprintf("unreachable (%s code %d from %s)", icmpTypeName(map[bool]uint8{false: unix.IPPROTO_ICMP, true: unix.IPPROTO_ICMPV6}[v6], b[0]), b[1], addrOfSockaddr(from))
			return p, nil
		}
	}
}

// isICMPError reports whether ICMP type t reports an error about a packet.
func isICMPError(v6 bool, t byte) bool {
	if v6 {
		return t >= 1 && t <= 4
	}
	return t == 3 || t == 11 || t == 12
}

// aboutEcho reports whether the packet quoted by an ICMP error (its IP header on) is our
// echo request.
func aboutEcho(v6 bool, quoted []byte, id, seq uint16) bool {
	off := 40
	if !v6 {
		if len(quoted) < 20 {
			return false
		}
		off = int(quoted[0]&0x0f) * 4
	}
	if len(quoted) < off+8 {
		return false
	}
	q := quoted[off:]
	return binary.BigEndian.Uint16(q[4:6]) == id && binary.BigEndian.Uint16(q[6:8]) == seq
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func sockaddr(a netip.Addr) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Addr: a.As16()}
}

func addrOfSockaddr(sa unix.Sockaddr) netip.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr)
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(sa.Addr)
	}
	return netip.Addr{}
}

// dialResult says in a few words why a probe got no answer.
func dialResult(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, unix.ECONNREFUSED):
		return "refused"
	case errors.Is(err, unix.EHOSTUNREACH):
		return "unreachable (no route to host)"
	case errors.Is(err, unix.ENETUNREACH):
		return "unreachable (network unreachable)"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "no answer"
	case errors.Is(err, unix.EPERM):
		return "refused by a local firewall rule (EPERM)"
	}
	return err.Error()
}

// isLocalError reports whether err means the probe could not be sent at all (rather
// than got no answer): a bad address, a namespace without the source address.
func isLocalError(err error) bool {
	return errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EAFNOSUPPORT)
}
