package dns

import (
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// cacheKey names one upstream question. The DO and CD bits are part of it: the answers
// differ (signatures, unvalidated data).
type cacheKey struct {
	name          string // lower case, fully qualified
	qtype, qclass uint16
	do, cd        bool
}

// cacheEntry is one upstream answer, without its meta records (withoutMeta). Its
// records are shared and never modified: a hit older than a second gets copies with the
// TTLs lowered.
type cacheEntry struct {
	rcode             int
	ad                bool
	answer, ns, extra []mdns.RR
	stored, expires   time.Time
}

// cache holds upstream answers, positive and negative, for at most their TTL (RFC 2308
// for negative ones: the SOA's TTL and MINIMUM, whichever is lower) and at most the
// configured caps. It is bounded: when full, an expired entry or else an arbitrary one
// makes room (O(1), as CoreDNS's cache, rather than an LRU list to maintain on every hit).
type cache struct {
	size           int
	maxTTL, maxNeg uint32
	clock          Clock

	// mu guards entries.
	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
}

func newCache(size int, maxTTL, maxNeg uint32, clock Clock) *cache {
	if size < 0 {
		return nil
	}
	return &cache{size: size, maxTTL: maxTTL, maxNeg: maxNeg, clock: clock, entries: make(map[cacheKey]*cacheEntry)}
}

// get returns the reply cached for k, its TTLs lowered by the time it spent in the
// cache; false when there is none or it expired.
func (c *cache) get(k cacheKey) (reply, bool) {
	if c == nil {
		return reply{}, false
	}
	now := c.clock.Now()
	c.mu.Lock()
	e := c.entries[k]
	if e != nil && !now.Before(e.expires) {
		delete(c.entries, k)
		e = nil
	}
	c.mu.Unlock()
	if e == nil {
		return reply{}, false
	}
	age := uint32(now.Sub(e.stored) / time.Second)
	return reply{
		rcode:  e.rcode,
		ad:     e.ad,
		answer: aged(e.answer, age),
		ns:     aged(e.ns, age),
		extra:  aged(e.extra, age),
	}, true
}

// put caches m (an upstream answer to k) if it may be cached and returns it as a reply.
func (c *cache) put(k cacheKey, m *mdns.Msg) reply {
	r := reply{rcode: m.Rcode, ad: m.AuthenticatedData, answer: sealed(m.Answer), ns: sealed(m.Ns), extra: withoutMeta(m.Extra)}
	if c == nil || m.Truncated || c.size == 0 {
		return r
	}
	ttl, ok := cacheTTL(m, c.maxTTL, c.maxNeg)
	if !ok {
		return r
	}
	now := c.clock.Now()
	e := &cacheEntry{
		rcode: r.rcode, ad: r.ad,
		answer: r.answer, ns: r.ns, extra: r.extra,
		stored: now, expires: now.Add(time.Duration(ttl) * time.Second),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.size {
		c.evictLocked(now)
	}
	c.entries[k] = e
	return r
}

// evictLocked removes an expired entry among the first few the map yields, else the
// first one (map order is random). c.mu must be held.
func (c *cache) evictLocked(now time.Time) {
	const scan = 8
	var victim cacheKey
	i := 0
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			victim = k
			break
		}
		if i == 0 {
			victim = k
		}
		if i++; i == scan {
			break
		}
	}
	delete(c.entries, victim)
}

// len returns the number of entries (tests).
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// cacheTTL returns how long m may be cached, in seconds: the lowest TTL of its records
// for a positive answer, the SOA's negative TTL for NXDOMAIN and NODATA (not cached
// without a SOA, RFC 2308 section 5). Errors are not cached.
func cacheTTL(m *mdns.Msg, maxTTL, maxNeg uint32) (uint32, bool) {
	switch {
	case m.Rcode == mdns.RcodeSuccess && len(m.Answer) > 0:
		ttl := maxTTL
		for _, sec := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range sec {
				if !isMeta(rr) {
					ttl = min(ttl, rr.Header().Ttl)
				}
			}
		}
		return ttl, ttl > 0
	case m.Rcode == mdns.RcodeSuccess || m.Rcode == mdns.RcodeNameError:
		for _, rr := range m.Ns {
			if s, ok := rr.(*mdns.SOA); ok {
				ttl := min(maxNeg, s.Hdr.Ttl, s.Minttl)
				return ttl, ttl > 0
			}
		}
	}
	return 0, false
}

// aged returns rrs with their TTLs lowered by age seconds (copies; rrs itself when age
// is zero).
func aged(rrs []mdns.RR, age uint32) []mdns.RR {
	if age == 0 || len(rrs) == 0 {
		return rrs
	}
	out := make([]mdns.RR, len(rrs))
	for i, rr := range rrs {
		c := mdns.Copy(rr)
		h := c.Header()
		if h.Ttl > age {
			h.Ttl -= age
		} else {
			h.Ttl = 0
		}
		out[i] = c
	}
	return out
}

// withoutMeta returns rrs without meta records (RFC 6895 section 3.1: OPT, TSIG, TKEY),
// which belong to one message and its transport, never to an answer passed on. An
// upstream's TSIG would even switch truncation off: miekg/dns's Msg.Truncate leaves a
// message ending with one alone, whatever its size.
func withoutMeta(rrs []mdns.RR) []mdns.RR {
	for i, rr := range rrs {
		if isMeta(rr) {
			out := make([]mdns.RR, 0, len(rrs)-1)
			out = append(out, rrs[:i]...)
			for _, rr := range rrs[i+1:] {
				if !isMeta(rr) {
					out = append(out, rr)
				}
			}
			return out[:len(out):len(out)]
		}
	}
	return rrs[:len(rrs):len(rrs)]
}

func isMeta(rr mdns.RR) bool {
	switch rr.Header().Rrtype {
	case mdns.TypeOPT, mdns.TypeTSIG, mdns.TypeTKEY:
		return true
	}
	return false
}

// sealed trims the capacity of rrs so that an append copies.
func sealed(rrs []mdns.RR) []mdns.RR { return rrs[:len(rrs):len(rrs)] }
