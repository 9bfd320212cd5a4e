package kernel

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ListenIn opens a listening socket inside ns (the socket stays bound to ns). A
// wildcard address without a host (":port") on "tcp" listens dual-stack, see dualStack.
func ListenIn(ns netns.NsHandle, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := Do(ns, func() (err error) {
		network, lc := dualStack(network, addr)
		l, err = lc.Listen(context.Background(), network, addr)
		if errors.Is(err, unix.EAFNOSUPPORT) { // no IPv6 in this kernel
			l, err = net.Listen(network[:3]+"4", addr)
		}
		return err
	})
	return l, err
}

// ListenPacketIn opens a packet socket inside ns; ":port" on "udp" is dual-stack.
func ListenPacketIn(ns netns.NsHandle, network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := Do(ns, func() (err error) {
		network, lc := dualStack(network, addr)
		c, err = lc.ListenPacket(context.Background(), network, addr)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			c, err = net.ListenPacket(network[:3]+"4", addr)
		}
		return err
	})
	return c, err
}

// dualStack makes ":port" on "tcp"/"udp" an IPv6 socket with IPV6_V6ONLY off, which
// also accepts IPv4. Go would decide that from a probe it makes once per process, in
// whatever namespace the process first asks from (a new namespace without a loopback
// up makes it conclude "IPv4 only" for good).
func dualStack(network, addr string) (string, net.ListenConfig) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "" || (network != "tcp" && network != "udp") {
		return network, net.ListenConfig{}
	}
	return network + "6", net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
		})
		if err != nil {
			return err
		}
		return serr
	}}
}

// DialIn connects from inside ns. The socket is created in ns; the connect completes
// on it wherever the goroutine runs next.
func DialIn(ctx context.Context, ns netns.NsHandle, network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := Do(ns, func() (err error) {
		d := net.Dialer{Timeout: timeout}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// StartIn starts cmd with ns as its network namespace (the child is forked from a
// thread inside ns).
func StartIn(ns netns.NsHandle, cmd *exec.Cmd) error {
	return Do(ns, cmd.Start)
}
