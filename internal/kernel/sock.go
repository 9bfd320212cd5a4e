package kernel

import (
	"context"
	"net"
	"os/exec"
	"time"

	"github.com/vishvananda/netns"
)

// ListenIn opens a listening socket inside ns (the socket stays bound to ns).
func ListenIn(ns netns.NsHandle, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := Do(ns, func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacketIn opens a packet socket inside ns.
func ListenPacketIn(ns netns.NsHandle, network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := Do(ns, func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
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
