package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/internal/dns"
)

// serveDNSCommand is the hidden first argument that makes podnet-bench podnet's DNS
// server for the dns section: a process of its own, so that it can be pinned to one core
// like CoreDNS, started inside the section's namespace.
const serveDNSCommand = "serve-dns"

// serveDNS runs podnet's DNS server (package internal/dns, as the agent runs it) on the
// benchmark's cluster until SIGTERM; it prints "ready" once its sockets are open.
func serveDNS(args []string) int {
	fs := flag.NewFlagSet(serveDNSCommand, flag.ContinueOnError)
	listen := fs.String("listen", "", "UDP and TCP address to serve on")
	upstream := fs.String("upstream", "", "resolver for names outside the zone (IP:PORT)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "podnet-bench serve-dns:", err)
		return 1
	}
	up, err := netip.ParseAddrPort(*upstream)
	if err != nil {
		return fail(fmt.Errorf("-upstream: %w", err))
	}
	srv, err := dns.New(dns.Config{
		Upstreams:     []netip.AddrPort{up},
		SearchDomains: []string{}, // the node has none: a pod's list is the cluster's three
		Logf: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "podnet-bench serve-dns: "+format+"\n", args...)
		},
	})
	if err != nil {
		return fail(err)
	}
	srv.SetSnapshot(dnsSnapshot())
	pc, err := net.ListenPacket("udp4", *listen)
	if err != nil {
		return fail(err)
	}
	l, err := net.Listen("tcp4", *listen)
	if err != nil {
		pc.Close()
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Println("ready")
	if err := srv.Serve(ctx, pc, l); err != nil {
		return fail(err)
	}
	return 0
}

// upstreamServer is the authoritative server of the names outside the cluster
// (host-<k>.example.com, A and AAAA, TTL 300; NXDOMAIN for anything else), on a socket
// of the section's namespace. It counts the queries it gets: the servers' cache misses.
type upstreamServer struct {
	srv     *mdns.Server
	queries atomic.Int64
	done    chan error
}

// startUpstream serves on pc until stop.
func startUpstream(pc net.PacketConn) *upstreamServer {
	u := &upstreamServer{done: make(chan error, 1)}
	started := make(chan struct{})
	names := make(map[string]int, dnsExternalNames)
	for k := range dnsExternalNames {
		names[externalName(k)] = k
	}
	u.srv = &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		u.queries.Add(1)
		m := new(mdns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) != 1 {
			m.Rcode = mdns.RcodeFormatError
			w.WriteMsg(m)
			return
		}
		q := r.Question[0]
		k, ok := names[strings.ToLower(q.Name)]
		hdr := mdns.RR_Header{Name: q.Name, Class: mdns.ClassINET, Ttl: 300}
		switch {
		case !ok:
			m.Rcode = mdns.RcodeNameError
			m.Ns = []mdns.RR{&mdns.SOA{Hdr: mdns.RR_Header{Name: "example.com.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 300},
				Ns: "ns.example.com.", Mbox: "hostmaster.example.com.", Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: 300}}
		case q.Qtype == mdns.TypeA:
			hdr.Rrtype = mdns.TypeA
			m.Answer = []mdns.RR{&mdns.A{Hdr: hdr, A: externalA(k).AsSlice()}}
		case q.Qtype == mdns.TypeAAAA:
			hdr.Rrtype = mdns.TypeAAAA
			m.Answer = []mdns.RR{&mdns.AAAA{Hdr: hdr, AAAA: externalAAAA(k).AsSlice()}}
		}
		if opt := r.IsEdns0(); opt != nil {
			m.SetEdns0(opt.UDPSize(), false)
		}
		w.WriteMsg(m)
	}), NotifyStartedFunc: func() { close(started) }}
	go func() { u.done <- u.srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-u.done: // failed at once: stop reports it
		u.done <- err
	}
	return u
}

// stop shuts the server down; calling it on nil is harmless.
func (u *upstreamServer) stop() error {
	if u == nil {
		return nil
	}
	var err error
	select {
	case serr := <-u.done: // it never started
		u.done <- serr
	default:
		err = u.srv.Shutdown()
	}
	if serr := <-u.done; serr != nil && !errors.Is(serr, net.ErrClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("upstream server: %w", err)
	}
	return nil
}
