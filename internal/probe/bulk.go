package probe

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

// Bulk listens on server inside serverNS, connects from clientNS, sends n bytes and
// checks that the server received all of them (it answers with the count): full-size
// segments cross the path, not only a handshake. An MTU the path cannot carry shows
// as a timeout here while TCP works.
func Bulk(ctx context.Context, clientNS, serverNS netns.NsHandle, server netip.AddrPort, n int, timeout time.Duration) error {
	l, err := kernel.ListenIn(serverNS, "tcp", server.String())
	if err != nil {
		return fmt.Errorf("listen on %s: %w", server, err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		got, _ := io.Copy(io.Discard, c)
		binary.Write(c, binary.BigEndian, uint64(got))
	}()
	c, err := connect(ctx, clientNS, server, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(make([]byte, n)); err != nil {
		return fmt.Errorf("send %d bytes to %s: %w", n, server, err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	var got uint64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return fmt.Errorf("%d bytes to %s: no count back: %w", n, server, err)
	}
	if got != uint64(n) {
		return fmt.Errorf("%d bytes to %s: the server received %d", n, server, got)
	}
	return nil
}

// UDPSize listens on server (UDP) inside serverNS, sends one datagram of size bytes from
// clientNS and checks that the echo comes back whole, retrying within timeout (UDP may
// be lost). A datagram larger than the path's MTU is fragmented by the sender, so this
// proves fragments (or a large enough MTU) cross.
func UDPSize(ctx context.Context, clientNS, serverNS netns.NsHandle, server netip.AddrPort, size int, timeout time.Duration) error {
	srv, err := kernel.ListenPacketIn(serverNS, "udp", server.String())
	if err != nil {
		return fmt.Errorf("listen on udp %s: %w", server, err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			m, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:m], from)
		}
	}()
	c, err := kernel.DialIn(ctx, clientNS, "udp", server.String(), timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i)
	}
	buf := make([]byte, size+1)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		m, err := c.Read(buf)
		if err == nil {
			if m != size {
				return fmt.Errorf("udp %s: %d bytes echoed of %d", server, m, size)
			}
			return nil
		}
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			return err
		}
	}
	return fmt.Errorf("no echo of a %d-byte datagram from udp %s within %s", size, server, timeout)
}

// ServeIdentity answers every connection on l with id (a line), until l is closed: the
// backends of a service, told apart by the client (AskIdentity).
func ServeIdentity(l net.Listener, id netip.Addr) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(c, id)
		c.Close()
	}
}

// ServeEcho sends back what each connection on l sends, until l is closed: an open
// connection whose traffic a test follows across a change (EchoOnce).
func ServeEcho(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// EchoOnce writes msg on c, a connection to a ServeEcho, and reads it back within
// timeout.
func EchoOnce(c net.Conn, msg string, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echoed %q, want %q", buf, msg)
	}
	return nil
}

// AskIdentity connects from ns to dst and returns the identity a ServeIdentity answered.
func AskIdentity(ctx context.Context, ns netns.NsHandle, dst netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	c, err := connect(ctx, ns, dst, timeout)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return seenSource(c, dst, timeout)
}
