package dns

import (
	"sync"
	"testing"

	mdns "github.com/miekg/dns"
)

// countingObserver counts what the server tells its Observer.
type countingObserver struct {
	mu     sync.Mutex
	rcodes map[int]int
	hits   int
	misses int
}

func (o *countingObserver) Answered(rcode int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rcodes[rcode]++
}

func (o *countingObserver) CacheLookup(hit bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if hit {
		o.hits++
	} else {
		o.misses++
	}
}

// The Observer hears of every answer with its code, and of every cache lookup of the
// forwarder: a miss, then a hit for the same name.
func TestObserver(t *testing.T) {
	o := &countingObserver{rcodes: map[int]int{}}
	f := newFixture(t, func(c *Config) { c.Observer = o })
	f.ask(t, query{qname: "web.ns1.svc.cluster.local.", qtype: mdns.TypeA})
	f.ask(t, query{qname: "nope.ns2.svc.cluster.local.", qtype: mdns.TypeA}) // not the client's own search suffix: no autopath
	f.ask(t, query{qname: "example.com.", qtype: mdns.TypeA})
	f.ask(t, query{qname: "example.com.", qtype: mdns.TypeA})
	f.ask(t, query{qname: "example.com.", qtype: mdns.TypeA, from: "192.0.2.9"}) // not allowed
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.rcodes[mdns.RcodeSuccess] != 3 || o.rcodes[mdns.RcodeNameError] != 1 || o.rcodes[mdns.RcodeRefused] != 1 {
		t.Errorf("answers by rcode = %v, want 3 NOERROR, 1 NXDOMAIN, 1 REFUSED", o.rcodes)
	}
	if o.misses != 1 || o.hits != 1 {
		t.Errorf("cache lookups: %d misses, %d hits; want 1 and 1", o.misses, o.hits)
	}
}
