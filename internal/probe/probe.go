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
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

var errListen = errors.New("listen")

// TCP listens on server (an ip:port inside serverNS), connects to it from clientNS and
// returns the client address the server saw. It fails within timeout if the connection
// cannot be made.
func TCP(ctx context.Context, clientNS, serverNS netns.NsHandle, server netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	return TCPVia(ctx, clientNS, serverNS, server, server, timeout)
}

// TCPVia listens on listen inside serverNS and connects to dial from clientNS (a
// published port, a service address: something that leads to listen).
func TCPVia(ctx context.Context, clientNS, serverNS netns.NsHandle, listen, dial netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	l, err := kernel.ListenIn(serverNS, "tcp", listen.String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w on %s: %v", errListen, listen, err)
	}
	defer l.Close()
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
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := kernel.DialIn(ctx, clientNS, "tcp", dial.String(), timeout)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("connect to %s: %w", dial, err)
	}
	defer c.Close()
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
		return netip.Addr{}, fmt.Errorf("%w on udp %s: %v", errListen, listen, err)
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
	return netip.Addr{}, fmt.Errorf("no UDP answer from %s within %s", c.RemoteAddr(), timeout)
}

// Blocked reports nil when a TCP connection from clientNS to server cannot be made
// within timeout, and an error when it can.
func Blocked(ctx context.Context, clientNS, serverNS netns.NsHandle, server netip.AddrPort, timeout time.Duration) error {
	src, err := TCP(ctx, clientNS, serverNS, server, timeout)
	if err == nil {
		return fmt.Errorf("connection to %s from %s succeeded, want it blocked", server, src)
	}
	if errors.Is(err, errListen) {
		return err
	}
	return nil
}
