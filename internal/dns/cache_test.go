package dns

import (
	"fmt"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/internal/dns/dnstest"
)

func answerMsg(name string, rcode int, lines ...string) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, mdns.TypeA)
	m.Response, m.Rcode = true, rcode
	for _, l := range lines {
		rr, err := mdns.NewRR(l)
		if err != nil {
			panic(err)
		}
		if _, ok := rr.(*mdns.SOA); ok {
			m.Ns = append(m.Ns, rr)
		} else {
			m.Answer = append(m.Answer, rr)
		}
	}
	return m
}

// TestCacheTTL checks what is cached and for how long.
func TestCacheTTL(t *testing.T) {
	const soaLine = "example. 600 IN SOA ns.example. h.example. 1 7200 1800 86400 %d"
	for _, tc := range []struct {
		name string
		msg  *mdns.Msg
		ttl  uint32 // 0: not cached
	}{
		{"positive: lowest TTL", answerMsg("a.example.", 0, "a.example. 300 IN CNAME b.example.", "b.example. 60 IN A 192.0.2.1"), 60},
		{"positive: capped", answerMsg("a.example.", 0, "a.example. 86400 IN A 192.0.2.1"), 3600},
		{"NXDOMAIN: SOA minimum", answerMsg("a.example.", mdns.RcodeNameError, fmt.Sprintf(soaLine, 30)), 30},
		{"NODATA: SOA TTL lower than minimum", answerMsg("a.example.", 0, "example. 20 IN SOA ns.example. h.example. 1 7200 1800 86400 900"), 20},
		{"NODATA: capped", answerMsg("a.example.", 0, fmt.Sprintf(soaLine, 900)), 300},
		{"negative: capped", answerMsg("a.example.", mdns.RcodeNameError, "example. 86400 IN SOA ns.example. h.example. 1 7200 1800 86400 86400"), 300},
		{"negative without SOA", answerMsg("a.example.", mdns.RcodeNameError), 0},
		{"zero TTL", answerMsg("a.example.", 0, "a.example. 0 IN A 192.0.2.1"), 0},
		{"SERVFAIL", answerMsg("a.example.", mdns.RcodeServerFailure), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ttl, ok := cacheTTL(tc.msg, 3600, 300)
			if !ok {
				ttl = 0
			}
			if ttl != tc.ttl {
				t.Errorf("ttl %d, want %d", ttl, tc.ttl)
			}
		})
	}
}

// TestCacheExpiry checks hits, TTLs counting down and expiry with a fake clock.
func TestCacheExpiry(t *testing.T) {
	clock := dnstest.NewClock(epoch)
	c := newCache(10, 3600, 300, clock)
	k := cacheKey{name: "a.example.", qtype: mdns.TypeA, qclass: mdns.ClassINET}
	c.put(k, answerMsg("a.example.", 0, "a.example. 60 IN A 192.0.2.1"))
	clock.Advance(59 * time.Second)
	r, ok := c.get(k)
	if !ok || r.answer[0].Header().Ttl != 1 {
		t.Fatalf("after 59 s: hit %v %v, want TTL 1", ok, r.answer)
	}
	if _, ok := c.get(cacheKey{name: "a.example.", qtype: mdns.TypeA, qclass: mdns.ClassINET, do: true}); ok {
		t.Errorf("a DO query hit the non-DO entry")
	}
	clock.Advance(time.Second)
	if _, ok := c.get(k); ok {
		t.Errorf("hit after 60 s")
	}
	if c.len() != 0 {
		t.Errorf("expired entry kept")
	}
}

// TestCacheBounded checks that the cache never holds more than its size, preferring to
// evict expired entries.
func TestCacheBounded(t *testing.T) {
	clock := dnstest.NewClock(epoch)
	c := newCache(3, 3600, 300, clock)
	short := cacheKey{name: "short.example.", qtype: mdns.TypeA}
	c.put(short, answerMsg("short.example.", 0, "short.example. 1 IN A 192.0.2.1"))
	for i := range 2 {
		name := fmt.Sprintf("n%d.example.", i)
		c.put(cacheKey{name: name, qtype: mdns.TypeA}, answerMsg(name, 0, name+" 300 IN A 192.0.2.1"))
	}
	clock.Advance(2 * time.Second)
	c.put(cacheKey{name: "new.example.", qtype: mdns.TypeA}, answerMsg("new.example.", 0, "new.example. 300 IN A 192.0.2.1"))
	if c.len() != 3 {
		t.Errorf("%d entries, want 3", c.len())
	}
	for _, name := range []string{"n0.example.", "n1.example.", "new.example."} {
		if _, ok := c.get(cacheKey{name: name, qtype: mdns.TypeA}); !ok {
			t.Errorf("%s evicted while an expired entry was there", name)
		}
	}
	for i := range 100 {
		name := fmt.Sprintf("m%d.example.", i)
		c.put(cacheKey{name: name, qtype: mdns.TypeA}, answerMsg(name, 0, name+" 300 IN A 192.0.2.1"))
		if c.len() > 3 {
			t.Fatalf("%d entries, want at most 3", c.len())
		}
	}
	if off := newCache(-1, 3600, 300, clock); off != nil {
		t.Errorf("negative size: cache not disabled")
	}
}
