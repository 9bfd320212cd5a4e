// Package dnstest holds fakes for testing DNS code without sockets: a ResponseWriter
// recorder, a clock that moves only when told, and an upstream resolver answering from
// zone lines.
package dnstest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Recorder is a miekg/dns ResponseWriter that keeps the message written to it.
type Recorder struct {
	// Remote is the client address the handler sees: a *net.UDPAddr or a *net.TCPAddr
	// (which also tells the handler the transport).
	Remote net.Addr
	// Msg is the last message written; nil when none was.
	Msg *mdns.Msg
	// Size is the packed length of Msg (compression applied as the handler asked).
	Size int
}

// UDP returns a recorder for a query from addr over UDP.
func UDP(addr string) *Recorder {
	return &Recorder{Remote: net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 40000))}
}

// TCP returns a recorder for a query from addr over TCP.
func TCP(addr string) *Recorder {
	return &Recorder{Remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 40000))}
}

// LocalAddr implements mdns.ResponseWriter.
func (r *Recorder) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(169, 254, 20, 10), Port: 53}
}

// RemoteAddr implements mdns.ResponseWriter.
func (r *Recorder) RemoteAddr() net.Addr { return r.Remote }

// WriteMsg implements mdns.ResponseWriter: it keeps m and checks that it packs.
func (r *Recorder) WriteMsg(m *mdns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	r.Msg, r.Size = m, len(b)
	return nil
}

// Write implements mdns.ResponseWriter.
func (r *Recorder) Write(b []byte) (int, error) {
	m := new(mdns.Msg)
	if err := m.Unpack(b); err != nil {
		return 0, err
	}
	r.Msg, r.Size = m, len(b)
	return len(b), nil
}

// Close implements mdns.ResponseWriter.
func (r *Recorder) Close() error { return nil }

// TsigStatus implements mdns.ResponseWriter.
func (r *Recorder) TsigStatus() error { return nil }

// TsigTimersOnly implements mdns.ResponseWriter.
func (r *Recorder) TsigTimersOnly(bool) {}

// Hijack implements mdns.ResponseWriter.
func (r *Recorder) Hijack() {}

// Clock is a fake clock: it moves only with Advance. Safe for concurrent use.
type Clock struct {
	// mu guards now.
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// DefaultNegativeSOA is the SOA an Upstream puts in its negative answers.
const DefaultNegativeSOA = "example. 30 IN SOA ns.example. hostmaster.example. 1 7200 1800 86400 30"

// Upstream is a fake recursive resolver answering from zone lines: the records of the
// name and type asked (following CNAMEs), NODATA for a name that has other records,
// NXDOMAIN otherwise (both with NegativeSOA). An owner "*.<domain>" is a wildcard that
// answers for every name below <domain> without records of its own. It implements the
// Exchanger interface of package dns and miekg/dns's Handler. Safe for concurrent use.
type Upstream struct {
	// mu guards every field below.
	mu      sync.Mutex
	records map[string][]mdns.RR // lower-case owner -> records
	soa     mdns.RR
	err     error
	rcode   int
	queries map[string]int // "name TYPE" -> count
}

// NewUpstream returns an upstream holding the records of lines; it panics on a line
// that does not parse (a test's typo).
func NewUpstream(lines ...string) *Upstream {
	u := &Upstream{records: make(map[string][]mdns.RR), queries: make(map[string]int), soa: mustRR(DefaultNegativeSOA)}
	for _, l := range lines {
		u.Add(l)
	}
	return u
}

// Add adds the record of a zone line.
func (u *Upstream) Add(line string) {
	rr := mustRR(line)
	u.mu.Lock()
	defer u.mu.Unlock()
	name := strings.ToLower(rr.Header().Name)
	u.records[name] = append(u.records[name], rr)
}

// SetNegativeSOA replaces the SOA of negative answers (a zone line).
func (u *Upstream) SetNegativeSOA(line string) {
	rr := mustRR(line)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.soa = rr
}

// Fail makes Exchange return err (nil: answer again).
func (u *Upstream) Fail(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.err = err
}

// SetRcode makes every answer carry rcode and no records (0: answer again).
func (u *Upstream) SetRcode(rcode int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.rcode = rcode
}

// Queries returns how many times name (any case, fully qualified) of type t was asked.
func (u *Upstream) Queries(name string, t uint16) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.queries[strings.ToLower(name)+" "+mdns.TypeToString[t]]
}

// Total returns how many queries were asked in all.
func (u *Upstream) Total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.queries {
		n += c
	}
	return n
}

// Exchange answers m.
func (u *Upstream) Exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	if len(m.Question) != 1 {
		return nil, fmt.Errorf("dnstest: %d questions", len(m.Question))
	}
	q := m.Question[0]
	u.mu.Lock()
	defer u.mu.Unlock()
	u.queries[strings.ToLower(q.Name)+" "+mdns.TypeToString[q.Qtype]]++
	if u.err != nil {
		return nil, u.err
	}
	r := new(mdns.Msg)
	r.SetReply(m)
	r.RecursionAvailable = true
	if u.rcode != 0 {
		r.Rcode = u.rcode
		return r, nil
	}
	name := q.Name
	for range 8 { // follow CNAMEs
		rrs, ok := u.find(name)
		if !ok {
			if len(r.Answer) == 0 {
				r.Rcode = mdns.RcodeNameError
			}
			r.Ns = []mdns.RR{mdns.Copy(u.soa)}
			return r, nil
		}
		var cname *mdns.CNAME
		found := false
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == mdns.TypeANY {
				r.Answer = append(r.Answer, rr)
				found = true
			}
			if c, ok := rr.(*mdns.CNAME); ok {
				cname = c
			}
		}
		if found || cname == nil {
			if !found {
				r.Ns = []mdns.RR{mdns.Copy(u.soa)}
			}
			return r, nil
		}
		r.Answer = append(r.Answer, cname)
		name = cname.Target
	}
	return r, nil
}

// find returns the records of name, or of the wildcard covering it (renamed). u.mu held.
func (u *Upstream) find(name string) ([]mdns.RR, bool) {
	lower := strings.ToLower(mdns.Fqdn(name))
	if rrs, ok := u.records[lower]; ok {
		return copies(rrs, ""), true
	}
	for i, end := mdns.NextLabel(lower, 0); !end; i, end = mdns.NextLabel(lower, i) {
		if rrs, ok := u.records["*."+lower[i:]]; ok {
			return copies(rrs, name), true
		}
	}
	return nil, false
}

func copies(rrs []mdns.RR, owner string) []mdns.RR {
	out := make([]mdns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = mdns.Copy(rr)
		if owner != "" {
			out[i].Header().Name = owner
		}
	}
	return out
}

// ServeDNS answers over a real socket (an in-process server on loopback).
func (u *Upstream) ServeDNS(w mdns.ResponseWriter, m *mdns.Msg) {
	r, err := u.Exchange(context.Background(), m)
	if err != nil {
		return // no answer: the client times out
	}
	_ = w.WriteMsg(r)
}

func mustRR(line string) mdns.RR {
	rr, err := mdns.NewRR(line)
	if err != nil || rr == nil {
		panic(fmt.Sprintf("dnstest: zone line %q: %v", line, err))
	}
	return rr
}
