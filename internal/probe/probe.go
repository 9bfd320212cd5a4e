// Package probe checks connectivity between network namespaces from Go: a listener in
// one namespace, a dial from another, and the source address the server saw (which
// tells whether NAT happened). Used by the demo, the tests and the benchmarks.
package probe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

// TCP listens on server (an ip:port inside serverNS), connects to it from clientNS and
// returns the client address the server saw. It fails within timeout if the connection
// cannot be made.
func TCP(ctx context.Context, clientNS, serverNS netns.NsHandle, server netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	return TCPVia(ctx, clientNS, serverNS, server, server, timeout)
}

// TCPVia listens on listen inside serverNS and connects to dial from clientNS (a
// published port, a service address: something that leads to listen).
func TCPVia(ctx context.Context, clientNS, serverNS netns.NsHandle, listen, dial netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	l, err := serve(serverNS, listen)
	if err != nil {
		return netip.Addr{}, err
	}
	defer l.Close()
	c, err := connect(ctx, clientNS, dial, timeout)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return seenSource(c, dial, timeout)
}

// serve listens on listen (TCP) inside serverNS and answers every connection with the
// client address it saw, until the listener is closed.
func serve(serverNS netns.NsHandle, listen netip.AddrPort) (net.Listener, error) {
	l, err := kernel.ListenIn(serverNS, "tcp", listen.String())
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", listen, err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ap := netip.MustParseAddrPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s\n", ap.Addr().Unmap())
			c.Close()
		}
	}()
	return l, nil
}

// connect makes a TCP connection from clientNS to dial, giving up after timeout.
func connect(ctx context.Context, clientNS netns.NsHandle, dial netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := kernel.DialIn(ctx, clientNS, "tcp", dial.String(), timeout)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", dial, err)
	}
	return c, nil
}

// seenSource reads the client address a serve listener wrote on c.
func seenSource(c net.Conn, dial netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read from %s: %w", dial, err)
	}
	return netip.ParseAddr(strings.TrimSpace(line))
}

// UDPVia listens on listen (UDP) inside serverNS, sends a datagram to dial from
// clientNS and returns the source address the server saw, echoed back.
func UDPVia(ctx context.Context, clientNS, serverNS netns.NsHandle, listen, dial netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	srv, err := kernel.ListenPacketIn(serverNS, "udp", listen.String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listen on udp %s: %w", listen, err)
	}
	defer srv.Close()
	go Echo(srv)
	c, err := kernel.DialIn(ctx, clientNS, "udp", dial.String(), timeout)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return AskUDP(c, timeout)
}

// Echo answers every datagram on c with the sender's address, until c is closed.
func Echo(c net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		ap := netip.MustParseAddrPort(from.String())
		c.WriteTo([]byte(ap.Addr().Unmap().String()), from)
	}
}

// ErrNoUDPAnswer is AskUDP's error when no answer came back in time (a drop on the way,
// or nobody listening without an ICMP error coming back).
var ErrNoUDPAnswer = errors.New("no UDP answer")

// AskUDP sends a datagram on a connected UDP socket and returns the address an Echo
// server answered, retrying a few times within timeout (UDP may be lost).
func AskUDP(c net.Conn, timeout time.Duration) (netip.Addr, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 128)
	for time.Now().Before(deadline) {
		if _, err := c.Write([]byte("?")); err != nil {
			return netip.Addr{}, err
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			return netip.ParseAddr(string(buf[:n]))
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return netip.Addr{}, err
		}
	}
	return netip.Addr{}, fmt.Errorf("%w from %s within %s", ErrNoUDPAnswer, c.RemoteAddr(), timeout)
}

// Blocked reports nil when a TCP connection from clientNS to server, with a listener on
// server inside serverNS, gets no answer within timeout: the connect times out, which is
// what a drop rule on the way produces. Any other outcome is an error that names it: the
// connection was made, it was refused (ECONNREFUSED), the network or the host is
// unreachable (ENETUNREACH, EHOSTUNREACH), the listener could not be opened. A connect
// error is wrapped: errors.Is(err, syscall.ECONNREFUSED) works on the result.
//
// Silence has more causes than a drop rule: an address that nobody answers ARP or
// neighbour solicitations for is silent for about 3 s before the kernel reports
// EHOSTUNREACH. A caller first proves that the same path works without the rule.
func Blocked(ctx context.Context, clientNS, serverNS netns.NsHandle, server netip.AddrPort, timeout time.Duration) error {
	return expect(ctx, clientNS, serverNS, server, timeout, noAnswer)
}

// Refused reports nil when a TCP connection from clientNS to server, with a listener on
// server inside serverNS, is refused within timeout (ECONNREFUSED): a TCP reset or an
// ICMP port unreachable came back although the server listens, which is what a reject
// rule on the way produces ("reject with tcp reset", or a plain "reject"). An ICMP
// administratively prohibited is not a refusal: Linux reports it as EHOSTUNREACH (IPv4)
// or EACCES (IPv6). Any other outcome is an error that names it, as for Blocked.
func Refused(ctx context.Context, clientNS, serverNS netns.NsHandle, server netip.AddrPort, timeout time.Duration) error {
	return expect(ctx, clientNS, serverNS, server, timeout, refused)
}

// Unreachable reports nil when a TCP connection from clientNS to server fails with
// ENETUNREACH or EHOSTUNREACH: no route, a neighbour that does not answer (address
// resolution gives up after about 3 s: give a longer timeout), or an ICMP unreachable.
// Any other outcome is an error that names it, as for Blocked.
func Unreachable(ctx context.Context, clientNS, serverNS netns.NsHandle, server netip.AddrPort, timeout time.Duration) error {
	return expect(ctx, clientNS, serverNS, server, timeout, unreachable)
}

// expect connects from clientNS to server, with a listener on server inside serverNS,
// and reports an error unless the connect failed with the outcome want.
func expect(ctx context.Context, clientNS, serverNS netns.NsHandle, server netip.AddrPort, timeout time.Duration, want outcome) error {
	l, err := serve(serverNS, server)
	if err != nil {
		return err
	}
	defer l.Close()
	c, err := connect(ctx, clientNS, server, timeout)
	if err == nil {
		defer c.Close()
		src, err := seenSource(c, server, timeout)
		if err != nil {
			return fmt.Errorf("connection to %s was made (%v), want %s", server, err, want.describe(timeout))
		}
		return fmt.Errorf("connection to %s was made (the server saw %s), want %s", server, src, want.describe(timeout))
	}
	if got := classify(err); got != want {
		return fmt.Errorf("%w: %s, want %s", err, got, want.describe(timeout))
	}
	return nil
}

// outcome is what became of a TCP connect, as the client saw it.
type outcome int

const (
	connected   outcome = iota // the handshake completed
	noAnswer                   // nothing came back within the timeout
	refused                    // ECONNREFUSED: a TCP reset or an ICMP port unreachable
	unreachable                // ENETUNREACH, EHOSTUNREACH: no route, no neighbour, an ICMP unreachable
	failed                     // any other error
)

func (o outcome) String() string {
	switch o {
	case connected:
		return "connected"
	case noAnswer:
		return "no answer"
	case refused:
		return "refused"
	case unreachable:
		return "unreachable"
	}
	return "failed"
}

// describe says what o stands for, for an error message.
func (o outcome) describe(timeout time.Duration) string {
	switch o {
	case noAnswer:
		return fmt.Sprintf("no answer within %s (dropped)", timeout)
	case refused:
		return "refused (rejected: a reset or an ICMP port unreachable)"
	}
	return o.String()
}

// classify returns the outcome of a connect that returned err. Only a timeout is no
// answer: the dial's own (context.DeadlineExceeded or os.ErrDeadlineExceeded, whichever
// deadline the net package notices first; both read "i/o timeout") or the kernel's after
// its SYN retransmissions (ETIMEDOUT). A SYN that a rule in the client's own output hook
// drops fails at once with EPERM: failed.
func classify(err error) outcome {
	switch {
	case err == nil:
		return connected
	case errors.Is(err, syscall.ECONNREFUSED):
		return refused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return unreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return noAnswer
	}
	return failed
}
