package dns

import (
	"net/netip"
	"sync"
)

// Bounds of the work in progress. Beyond them work is turned away at once, never queued:
// a client that floods the server cannot make it hold more, and the work of other
// clients never waits behind its own.
const (
	// maxForwards bounds the questions waiting for an upstream at once, in all and per
	// client: beyond, a question gets SERVFAIL at once (as CoreDNS's forward
	// max_concurrent) instead of a goroutine and, for a new name, an upstream socket for
	// up to queryTimeout. A pod resolving a hundred uncached names at once is far beyond
	// normal (a stub asks A and AAAA of one name at a time).
	maxForwards          = 1000
	maxForwardsPerClient = 100
	// maxUDPInFlight bounds the UDP queries being answered at once, in all and per client:
	// beyond, a datagram is dropped as soon as it is read (the client retries). Twice the
	// forward bounds, so that questions waiting for an upstream never take all the room
	// of answers from the zone and the cache, which take microseconds.
	maxUDPInFlight          = 2 * maxForwards
	maxUDPInFlightPerClient = 2 * maxForwardsPerClient
)

// inflight counts work in progress, in all and per client, and refuses work beyond its
// bounds. Safe for concurrent use.
type inflight struct {
	max, perClient int

	// mu guards n and clients.
	mu      sync.Mutex
	n       int
	clients map[netip.Addr]int // clients with work in progress: counts are never zero
}

func newInflight(max, perClient int) *inflight {
	return &inflight{max: max, perClient: perClient, clients: make(map[netip.Addr]int)}
}

// acquire takes a slot for client; false when client or everyone is at the bound. Each
// true must be matched by one release.
func (l *inflight) acquire(client netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n >= l.max || l.clients[client] >= l.perClient {
		return false
	}
	l.n++
	l.clients[client]++
	return true
}

// release gives back a slot acquire took for client.
func (l *inflight) release(client netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.clients[client]; c > 1 {
		l.clients[client] = c - 1
	} else {
		delete(l.clients, client)
	}
	l.n--
}
