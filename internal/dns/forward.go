package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Exchanger sends a query to a recursive resolver and returns its answer. Exchange may
// be called concurrently; it returns an error only when no answer came (a SERVFAIL is an
// answer). dnstest.Upstream is a fake.
type Exchanger interface {
	Exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error)
}

// Forwarder is the Exchanger that asks Upstreams in turn over UDP, retrying over TCP
// when an answer comes back truncated. It starts with the upstream that answered last,
// and moves to the next one on a timeout, a network error, SERVFAIL or REFUSED.
type Forwarder struct {
	Upstreams []netip.AddrPort
	// Timeout is the time one attempt gets (DefaultUpstreamTimeout when zero).
	Timeout time.Duration
	// UDPSize is the EDNS0 buffer size of the queries (DefaultMaxUDPSize when zero).
	UDPSize uint16
	// Dial opens the connection to an upstream ("udp" or "tcp"); net.Dialer when nil.
	// The agent dials from the node's namespace, which need not be its own.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	next atomic.Uint32 // the upstream to try first
}

var _ Exchanger = (*Forwarder)(nil)

// Exchange implements Exchanger.
func (f *Forwarder) Exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	if len(f.Upstreams) == 0 {
		return nil, errors.New("forward: no upstream resolvers")
	}
	timeout, size := f.Timeout, f.UDPSize
	if timeout <= 0 {
		timeout = DefaultUpstreamTimeout
	}
	if size == 0 {
		size = DefaultMaxUDPSize
	}
	start := int(f.next.Load()) % len(f.Upstreams)
	var errs []error
	var last *mdns.Msg
	for i := range f.Upstreams {
		n := (start + i) % len(f.Upstreams)
		addr := f.Upstreams[n].String()
		resp, err := f.exchangeOne(ctx, m, addr, timeout, size)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
			last = resp
			continue
		}
		f.next.Store(uint32(n))
		return resp, nil
	}
	if last != nil {
		return last, nil
	}
	return nil, fmt.Errorf("forward %s: %w", m.Question[0].Name, errors.Join(errs...))
}

// exchangeOne asks one upstream: UDP, then TCP if the answer was truncated.
func (f *Forwarder) exchangeOne(ctx context.Context, m *mdns.Msg, addr string, timeout time.Duration, size uint16) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &mdns.Client{Net: "udp", UDPSize: size, Timeout: timeout}
	resp, err := f.exchange(ctx, c, m, addr)
	if err == nil && !resp.Truncated {
		return resp, nil
	}
	var nerr net.Error
	if err != nil && (ctx.Err() != nil || (errors.As(err, &nerr) && nerr.Timeout())) {
		return nil, err // no answer in time: TCP would not do better
	}
	c.Net = "tcp"
	return f.exchange(ctx, c, m, addr)
}

func (f *Forwarder) exchange(ctx context.Context, c *mdns.Client, m *mdns.Msg, addr string) (*mdns.Msg, error) {
	if f.Dial == nil {
		resp, _, err := c.ExchangeContext(ctx, m, addr)
		return resp, err
	}
	conn, err := f.Dial(ctx, c.Net, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	co := &mdns.Conn{Conn: conn, UDPSize: c.UDPSize}
	resp, _, err := c.ExchangeWithConnContext(ctx, m, co)
	return resp, err
}

// flightGroup makes concurrent identical upstream questions share one exchange (the A
// and AAAA of many pods starting at once, autopath walking the same names).
type flightGroup struct {
	// mu guards calls.
	mu    sync.Mutex
	calls map[cacheKey]*flight
}

type flight struct {
	done  chan struct{}
	reply reply
	err   error
}

func (g *flightGroup) do(k cacheKey, fn func() (reply, error)) (reply, error) {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = make(map[cacheKey]*flight)
	}
	if f, ok := g.calls[k]; ok {
		g.mu.Unlock()
		<-f.done
		return f.reply, f.err
	}
	f := &flight{done: make(chan struct{})}
	g.calls[k] = f
	g.mu.Unlock()

	f.reply, f.err = fn()
	g.mu.Lock()
	delete(g.calls, k)
	g.mu.Unlock()
	close(f.done)
	return f.reply, f.err
}
