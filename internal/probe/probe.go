// Package probe checks connectivity between network namespaces from Go: a TCP
// listener in one namespace, a dial from another, and the source address the server
// saw (which tells whether masquerade happened). Used by the demo and the tests.
package probe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
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
	l, err := kernel.ListenIn(serverNS, "tcp", server.String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w on %s: %v", errListen, server, err)
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
	c, err := kernel.DialIn(ctx, clientNS, "tcp", server.String(), timeout)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("connect to %s: %w", server, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read from %s: %w", server, err)
	}
	return netip.ParseAddr(strings.TrimSpace(line))
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
