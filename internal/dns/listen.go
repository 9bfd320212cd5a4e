package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

// ListenAndServe serves DNS on addr over UDP and TCP, with sockets created inside the
// network namespace ns (the caller's own namespace is left alone), until ctx ends. It
// returns nil when ctx ended, or the error that stopped a socket.
func (s *Server) ListenAndServe(ctx context.Context, ns netns.NsHandle, addr netip.AddrPort) error {
	pc, err := kernel.ListenPacketIn(ns, "udp", addr.String())
	if err != nil {
		return fmt.Errorf("dns: listen udp %s: %w", addr, err)
	}
	l, err := kernel.ListenIn(ns, "tcp", addr.String())
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: listen tcp %s: %w", addr, err)
	}
	return s.Serve(ctx, pc, l)
}

// Serve serves DNS on an open UDP socket (a *net.UDPConn, see udp.go) and TCP listener
// until ctx ends, and closes them. It returns nil when ctx ended.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	conn, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		l.Close()
		return fmt.Errorf("dns: serve: %T is no UDP socket", pc)
	}
	rcvbuf, err := setUDPOptions(conn)
	if err != nil {
		pc.Close()
		l.Close()
		return fmt.Errorf("dns: serve: udp socket options: %w", err)
	}
	if rcvbuf < udpRecvBuffer {
		s.set.logf("dns: udp receive buffer %d bytes, asked for %d (net.core.rmem_max): bursts beyond are dropped", rcvbuf, udpRecvBuffer)
	}
	tcp := &mdns.Server{Listener: l, Handler: s, ReadTimeout: 2 * time.Second}
	// udpCtx ends the UDP answers in progress (their upstream questions) at shutdown.
	udpCtx, stopUDP := context.WithCancel(ctx)
	defer stopUDP()
	udpc, tcpc := make(chan error, 1), make(chan error, 1)
	go func() { udpc <- s.serveUDP(udpCtx, conn) }()
	go func() { tcpc <- tcp.ActivateAndServe() }()

	udpDone := false
	select {
	case <-ctx.Done():
	case err = <-udpc:
		udpDone = true
	case err = <-tcpc:
	}
	stopUDP()
	conn.Close() // ends the read loop; serveUDP returns once the answers in progress have
	if !udpDone {
		if uerr := <-udpc; err == nil {
			err = uerr
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	// Shutting down a server that stopped on its own says so; that is fine.
	if serr := tcp.ShutdownContext(sctx); serr != nil && err == nil && ctx.Err() == nil {
		err = serr
	}
	l.Close()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("dns: serve: %w", err)
	}
	return nil
}
