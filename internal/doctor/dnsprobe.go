package doctor

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/dns"
	"github.com/podnet/podnet/internal/kernel"
)

// probeResolvConf reads the resolv.conf at path and asks, for each search domain, for
// A and AAAA of a random label under it through the file's nameservers in order (the
// first that answers counts), from a socket inside ns, each query bounded by timeout.
// It returns notes for the domains no nameserver answered for.
func probeResolvConf(ctx context.Context, ns netns.NsHandle, path string, timeout time.Duration) (ResolvConf, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ResolvConf{}, nil, err
	}
	f := dns.ParseResolvConf(string(b))
	rc := ResolvConf{Path: path, Nameservers: f.Nameservers, Search: f.Search, Ndots: 1}
	for _, o := range f.Options {
		if v, ok := strings.CutPrefix(o, "ndots:"); ok {
			if n, err := strconv.Atoi(v); err == nil {
				rc.Ndots = min(n, 15)
			}
		}
	}
	var servers []netip.AddrPort
	for _, s := range f.Nameservers {
		if a, err := netip.ParseAddr(s); err == nil {
			servers = append(servers, netip.AddrPortFrom(a, 53))
		}
	}
	if len(servers) == 0 && len(f.Search) > 0 {
		return rc, []string{path + ": no nameserver to ask, search domains not checked"}, nil
	}
	type result struct {
		probes []DNSProbe
		note   string
	}
	results := make([]result, len(f.Search))
	var wg sync.WaitGroup
	for i, domain := range f.Search {
		wg.Go(func() {
			label := randomLabel()
			answered := false
			var lastErr string
			for _, qtype := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
				p := DNSProbe{Domain: domain, Name: label + "." + mdns.Fqdn(domain), Type: mdns.TypeToString[qtype]}
				for _, server := range servers {
					p.Server = server.Addr().String()
					r, err := exchange(ctx, ns, server, p.Name, qtype, timeout)
					if err != nil {
						p.Err, lastErr = err.Error(), err.Error()
						continue
					}
					p.Err, answered = "", true
					p.Rcode = mdns.RcodeToString[r.Rcode]
					for _, rr := range r.Answer {
						switch rr := rr.(type) {
						case *mdns.A:
							p.Answers = append(p.Answers, rr.A.String())
						case *mdns.AAAA:
							p.Answers = append(p.Answers, rr.AAAA.String())
						case *mdns.CNAME:
							p.Answers = append(p.Answers, "CNAME "+rr.Target)
						}
					}
					break
				}
				results[i].probes = append(results[i].probes, p)
			}
			if !answered {
				results[i].note = fmt.Sprintf("search domain %s of %s: no nameserver answered (%s)", domain, path, lastErr)
			}
		})
	}
	wg.Wait()
	var notes []string
	for _, r := range results {
		rc.Probes = append(rc.Probes, r.probes...)
		if r.note != "" {
			notes = append(notes, r.note)
		}
	}
	return rc, notes, nil
}

// exchange asks server for name over UDP from a socket opened inside ns.
func exchange(ctx context.Context, ns netns.NsHandle, server netip.AddrPort, name string, qtype uint16, timeout time.Duration) (*mdns.Msg, error) {
	var conn net.Conn
	err := kernel.Do(ns, func() (err error) {
		conn, err = net.DialTimeout("udp", server.String(), timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	c := &mdns.Client{Net: "udp", Timeout: timeout}
	r, _, err := c.ExchangeWithConnContext(ctx, m, &mdns.Conn{Conn: conn})
	return r, err
}

// randomLabel returns a label no zone has: "pndoctor-" and 12 random characters.
func randomLabel() string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 12)
	rand.Read(b)
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return "pndoctor-" + string(b)
}
