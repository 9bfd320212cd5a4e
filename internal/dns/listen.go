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

// Serve serves DNS on an open UDP socket and TCP listener until ctx ends, and closes
// them. It returns nil when ctx ended.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	udp := &mdns.Server{PacketConn: pc, Handler: s, UDPSize: mdns.MaxMsgSize, ReadTimeout: 2 * time.Second}
	tcp := &mdns.Server{Listener: l, Handler: s, ReadTimeout: 2 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- udp.ActivateAndServe() }()
	go func() { errc <- tcp.ActivateAndServe() }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	for _, srv := range []*mdns.Server{udp, tcp} {
		// Shutting down a server that stopped on its own says so; that is fine.
		if serr := srv.ShutdownContext(sctx); serr != nil && err == nil && ctx.Err() == nil {
			err = serr
		}
	}
	pc.Close()
	l.Close()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("dns: serve: %w", err)
	}
	return nil
}
