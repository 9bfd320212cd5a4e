package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// queryTimeout bounds one upstream question (all upstreams, UDP and TCP): a stub
// resolver gives up after 5 s (glibc's default timeout).
const queryTimeout = 5 * time.Second

// Server is the cluster DNS server. It is safe for concurrent use; SetSnapshot,
// UpdateServices and UpdatePods may be called at any time, and queries see either the
// old or the new snapshot.
type Server struct {
	set      *settings
	upstream Exchanger // nil: names outside the zone are REFUSED
	cache    *cache
	observer Observer // nil: none
	flight   flightGroup
	forwards *inflight // questions waiting for upstream (maxForwards)
	zone     atomic.Pointer[zone]

	// mu guards serial and the zone's replacement (SetSnapshot, UpdateServices,
	// UpdatePods).
	mu     sync.Mutex
	serial uint32
}

var (
	_ mdns.Handler = (*Server)(nil)
	_ Exchanger    = (*Server)(nil)
)

// New validates cfg, reads the node's resolv.conf when cfg does not give the upstreams
// or search domains, and returns a server with an empty snapshot.
func New(cfg Config) (*Server, error) {
	set, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	s := &Server{set: set, upstream: cfg.Upstream, observer: cfg.Observer, forwards: newInflight(maxForwards, maxForwardsPerClient)}
	if s.upstream == nil && len(set.upstreams) > 0 {
		s.upstream = &Forwarder{Upstreams: set.upstreams, Timeout: set.upstreamTimeout, UDPSize: set.maxUDP, Dial: cfg.Dial}
	}
	s.cache = newCache(set.cacheSize, set.cacheMax, set.cacheMaxNeg, set.clock)
	s.SetSnapshot(Snapshot{})
	return s, nil
}

// SetSnapshot replaces the cluster data: the indexes are built here, once, and swapped
// in atomically. The zone's SOA serial grows with every call.
func (s *Server) SetSnapshot(snap Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zone.Store(buildZone(s.set, snap, s.nextSerialLocked()))
}

// UpdateServices changes the services of the current snapshot: the services of remove
// go (a name the snapshot does not have is no error), then each service of put (one
// per name) takes the place of the one of its namespace and name, or is added. Names
// compare as the zone's do (in lower case). Queries then see what SetSnapshot would
// give them for the snapshot with those changes, with a new SOA serial. Only the
// changed services' records are built; the indexes they sit in are copied (a copy of
// pointers, not of records), so a change of a few services costs a small fraction of
// a SetSnapshot of a large cluster.
func (s *Server) UpdateServices(put []Service, remove []ServiceName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zone.Store(s.zone.Load().withServices(s.set, put, remove, s.nextSerialLocked()))
}

// UpdatePods changes the pods of the current snapshot: the pods of remove go, then each
// pod of put (one per namespace and name) takes the place of the one of its namespace
// and name, its old addresses going, or is added. A pod is known by its namespace
// (compared as the zone's names, in lower case) and its name (as given): remove may list
// a pod as it was put or snapshotted, its addresses are not read, and a pod the snapshot
// does not have is no error. Queries then see what SetSnapshot would give them for the
// snapshot with those changes (pod records, PTR records, the namespaces that exist, the
// clients' namespaces), with a new SOA serial. Only the addresses of the pods of the
// call are indexed; the indexes they sit in are copied (a copy of pointers and
// addresses, not of records), so an attached or detached pod costs a small fraction of
// a SetSnapshot of a large cluster.
func (s *Server) UpdatePods(put, remove []Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zone.Store(s.zone.Load().withPods(s.set, put, remove, s.nextSerialLocked()))
}

// nextSerialLocked is the SOA serial of a new zone: the clock's seconds, or one more
// than the last serial when that is not less.
func (s *Server) nextSerialLocked() uint32 {
	serial := uint32(s.set.clock.Now().Unix())
	if serial <= s.serial {
		serial = s.serial + 1
	}
	s.serial = serial
	return serial
}

// Domain returns the cluster zone, fully qualified ("cluster.local.").
func (s *Server) Domain() string { return s.set.origin }

// Upstreams returns the resolvers names outside the zone go to (empty when
// Config.Upstream replaced the forwarder).
func (s *Server) Upstreams() []netip.AddrPort {
	if f, ok := s.upstream.(*Forwarder); ok {
		return f.Upstreams
	}
	return nil
}

// ServeDNS implements miekg/dns's Handler. The transport (truncation at the client's
// UDP size, or none over TCP) and the client's address (REFUSED for strangers, the
// namespace for autopath) come from w.RemoteAddr.
func (s *Server) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	client, udp := clientOf(w.RemoteAddr())
	if m := s.respond(context.Background(), client, udp, r); m != nil {
		_ = w.WriteMsg(m)
		if s.observer != nil {
			s.observer.Answered(m.Rcode)
		}
	}
}

// Exchange answers m as the server answers a local client over TCP (loopback: no
// autopath, no truncation): the server as an in-process resolver, for
// CheckSearchDomains at startup and for tools. It fails only when m is an answer.
func (s *Server) Exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	r := s.respond(ctx, netip.IPv6Loopback(), false, m)
	if r == nil {
		return nil, errors.New("dns: exchange: not a query")
	}
	return r, nil
}

// clientOf returns the client's address and whether it came over UDP.
func clientOf(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap(), true
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap(), false
	}
	return netip.Addr{}, false
}

// reply is an answer before it becomes a message. Its record slices may be shared with
// the zone or the cache: never modify them (their capacity is their length, so appending
// copies).
type reply struct {
	rcode             int
	aa, ad            bool
	answer, ns, extra []mdns.RR
	// zone: the name is inside the cluster zone (autopath may take over a NXDOMAIN).
	zone bool
	// alias: the name is a CNAME of the zone, followed; the rcode is the target's
	// (RFC 6604), and a NXDOMAIN is not the name's own (autopath leaves it alone).
	alias bool
}

// respond builds the answer to r from client; nil means no answer at all.
func (s *Server) respond(ctx context.Context, client netip.Addr, udp bool, r *mdns.Msg) *mdns.Msg {
	if r.Response {
		return nil // never answer an answer
	}
	m := new(mdns.Msg)
	m.SetReply(r)
	opt := r.IsEdns0()
	switch {
	case r.Opcode != mdns.OpcodeQuery:
		m.Rcode = mdns.RcodeNotImplemented
	case len(r.Question) != 1:
		m.Rcode = mdns.RcodeFormatError
	case opt != nil && opt.Version() != 0:
		m.Rcode = mdns.RcodeBadVers // RFC 6891 section 6.1.3
	case !s.allowed(client):
		m.Rcode = mdns.RcodeRefused
	default:
		s.answer(ctx, client, r, m, opt)
	}
	if opt != nil {
		// RFC 6891: answer with OPT; RFC 3225: copy the DO bit.
		m.SetEdns0(s.set.maxUDP, opt.Do())
	}
	size := mdns.MaxMsgSize
	if udp {
		size = mdns.MinMsgSize
		if opt != nil {
			size = min(max(int(opt.UDPSize()), mdns.MinMsgSize), int(s.set.maxUDP))
		}
	}
	m.Truncate(size) // sets TC when records had to go
	m.Compress = true
	return m
}

// allowed reports whether the server answers client: loopback, a pod of the current
// snapshot (so pods of networks created after New are served at once), or inside
// Config.AllowedClients (the node's addresses, the podnet subnets).
func (s *Server) allowed(client netip.Addr) bool {
	if !client.IsValid() {
		return false
	}
	client = client.Unmap()
	if client.IsLoopback() {
		return true
	}
	if _, ok := s.zone.Load().clientNS[client]; ok {
		return true
	}
	for _, p := range s.set.allowed {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

// answer fills m with the answer to the question of r.
func (s *Server) answer(ctx context.Context, client netip.Addr, r, m *mdns.Msg, opt *mdns.OPT) {
	q := r.Question[0]
	m.RecursionAvailable = true
	if q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY {
		m.Rcode = mdns.RcodeRefused // CHAOS and friends: nothing to say
		return
	}
	switch q.Qtype {
	case mdns.TypeAXFR, mdns.TypeIXFR:
		m.Rcode = mdns.RcodeRefused // no zone transfers
		return
	}
	name := strings.ToLower(q.Name)
	do := opt != nil && opt.Do()
	z := s.zone.Load()
	rep := s.lookup(ctx, z, client, name, q.Qtype, q.Qclass, do, r.CheckingDisabled)
	if rep.zone && !rep.alias && rep.rcode == mdns.RcodeNameError && !do {
		if ap, ok := s.autopath(ctx, z, client, q, name); ok {
			rep = ap
		}
	}
	m.Rcode = rep.rcode
	m.Authoritative = rep.aa
	m.AuthenticatedData = rep.ad && (do || r.AuthenticatedData)
	m.Answer, m.Ns, m.Extra = rep.answer, rep.ns, rep.extra
	if q.Name != name && len(q.Name) == len(name) && rep.zone {
		// Answer with the spelling the client used (the zone's records are lower case).
		m.Answer = renamed(m.Answer, name, q.Name)
	}
}

// lookup answers name (lower case) for client without autopath: from the zone, the
// reverse zones, or upstream.
func (s *Server) lookup(ctx context.Context, z *zone, client netip.Addr, name string, qtype, qclass uint16, do, cd bool) reply {
	if !z.contains(name) {
		return s.lookupOutside(ctx, z, client, name, qtype, qclass, do, cd)
	}
	rep, target := z.reply(name, qtype)
	if target == "" {
		return rep
	}
	return s.follow(ctx, z, client, rep, name, target, qtype, qclass, do, cd)
}

// contains reports whether name (lower case, fully qualified) is inside the zone.
func (z *zone) contains(name string) bool {
	return name == z.origin || (len(name) > len(z.origin) && name[len(name)-len(z.origin)-1] == '.' && strings.HasSuffix(name, z.origin))
}

// reply answers name from the zone; target is the target of a CNAME to follow ("" when
// the answer is complete).
func (z *zone) reply(name string, qtype uint16) (reply, string) {
	za := z.lookup(name, qtype)
	rep := reply{rcode: za.rcode, aa: true, answer: za.answer, extra: za.extra, zone: true}
	if len(za.answer) == 0 {
		rep.ns = z.soaNeg // NXDOMAIN or NODATA: RFC 2308
	}
	return rep, za.target
}

// maxAliases bounds the CNAMEs of the zone one answer follows (in a chain of
// ExternalName services pointing at each other).
const maxAliases = 8

// follow completes rep, whose answer ends with a CNAME of the zone to target, with the
// records of target (RFC 1034 section 4.3.2, step 3a; the spec's example answer to an A
// question for an ExternalName service): from the zone when target is inside it (maybe
// another CNAME, followed in turn), else as any other name, upstream through the cache.
// The rcode is that of the last name of the chain (RFC 6604). A chain that loops or is
// longer than maxAliases is SERVFAIL; a target nobody can be asked for (no upstream) is
// left to the client: the answer is the CNAMEs alone.
func (s *Server) follow(ctx context.Context, z *zone, client netip.Addr, rep reply, name, target string, qtype, qclass uint16, do, cd bool) reply {
	out := reply{aa: true, zone: true, alias: true, answer: rep.answer}
	seen := map[string]bool{name: true}
	for range maxAliases {
		if seen[target] {
			break // a loop
		}
		seen[target] = true
		if !z.contains(target) {
			next := s.lookupOutside(ctx, z, client, target, qtype, qclass, do, cd)
			if next.rcode == mdns.RcodeRefused {
				return out
			}
			out.rcode, out.ns, out.extra = next.rcode, next.ns, next.extra
			out.answer = concat(out.answer, next.answer)
			return out
		}
		next, nextTarget := z.reply(target, qtype)
		out.rcode, out.ns, out.extra = next.rcode, next.ns, next.extra
		out.answer = concat(out.answer, next.answer)
		if nextTarget == "" {
			return out
		}
		target = nextTarget
	}
	out.rcode, out.ns, out.extra = mdns.RcodeServerFailure, nil, nil
	return out
}

// lookupOutside answers a name outside the zone: from the reverse zones, or upstream.
func (s *Server) lookupOutside(ctx context.Context, z *zone, client netip.Addr, name string, qtype, qclass uint16, do, cd bool) reply {
	if a, ok := parseReverse(name); ok {
		if ptrs := z.ptrs(a); len(ptrs) > 0 {
			if qtype == mdns.TypePTR || qtype == mdns.TypeANY {
				return reply{aa: true, answer: ptrs}
			}
			return reply{aa: true, ns: z.reverseSOA(a)}
		}
		for _, p := range s.set.reverse {
			if p.Contains(a) {
				return reply{rcode: mdns.RcodeNameError, aa: true, ns: z.reverseSOA(a)}
			}
		}
	}
	return s.forward(ctx, client, name, qtype, qclass, do, cd)
}

func (z *zone) reverseSOA(a netip.Addr) []mdns.RR {
	if a.Is4() {
		return z.reverseSOA4
	}
	return z.reverseSOA6
}

// forward answers a name outside the zone from the cache or upstream. A question that
// must wait for upstream while client (or everyone) has maxForwards waiting already gets
// SERVFAIL at once.
func (s *Server) forward(ctx context.Context, client netip.Addr, name string, qtype, qclass uint16, do, cd bool) reply {
	if s.upstream == nil {
		return reply{rcode: mdns.RcodeRefused}
	}
	k := cacheKey{name: name, qtype: qtype, qclass: qclass, do: do, cd: cd}
	rep, ok := s.cache.get(k)
	if s.observer != nil {
		s.observer.CacheLookup(ok)
	}
	if ok {
		return rep
	}
	if !s.forwards.acquire(client) {
		return reply{rcode: mdns.RcodeServerFailure} // not logged: a flood would flood the log
	}
	defer s.forwards.release(client)
	rep, err := s.flight.do(k, func() (reply, error) {
		ctx, cancel := context.WithTimeout(ctx, queryTimeout)
		defer cancel()
		q := new(mdns.Msg)
		q.SetQuestion(name, qtype)
		q.Question[0].Qclass = qclass
		q.CheckingDisabled = cd
		q.SetEdns0(s.set.maxUDP, do)
		resp, err := s.upstream.Exchange(ctx, q)
		if err != nil {
			return reply{}, err
		}
		if len(resp.Question) != 1 || resp.Question[0].Qtype != qtype || !strings.EqualFold(resp.Question[0].Name, name) {
			return reply{}, errUnexpectedAnswer
		}
		return s.cache.put(k, resp), nil
	})
	if err != nil {
		s.set.logf("dns: forward %s %s: %v", name, mdns.TypeToString[qtype], err)
		return reply{rcode: mdns.RcodeServerFailure}
	}
	return rep
}

var errUnexpectedAnswer = errors.New("upstream answered another question")

// renamed returns rrs with the owner from replaced by to (copies of those records).
func renamed(rrs []mdns.RR, from, to string) []mdns.RR {
	var out []mdns.RR
	for i, rr := range rrs {
		if rr.Header().Name != from {
			continue
		}
		if out == nil {
			out = make([]mdns.RR, len(rrs))
			copy(out, rrs)
		}
		c := mdns.Copy(rr)
		c.Header().Name = to
		out[i] = c
	}
	if out == nil {
		return rrs
	}
	return out
}
