package portproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

// tcpProxy accepts connections on a mapping's host port and relays each one to the
// backend. Goroutines: one accept loop, and per connection one for each direction.
type tcpProxy struct {
	m      Mapping
	ns     netns.NsHandle
	cfg    *Config
	ln     *net.TCPListener
	ctx    context.Context // canceled by close: aborts backend dials in progress
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection

	// mu guards conns and closed.
	mu     sync.Mutex
	conns  map[*net.TCPConn]struct{} // both ends of every live connection
	closed bool
}

func startTCP(ns netns.NsHandle, m Mapping, cfg *Config) (*tcpProxy, error) {
	network, addr := m.listenAddr()
	l, err := kernel.ListenIn(ns, network, addr)
	if err != nil {
		return nil, err
	}
	p := &tcpProxy{m: m, ns: ns, cfg: cfg, ln: l.(*net.TCPListener), conns: map[*net.TCPConn]struct{}{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

func (p *tcpProxy) acceptLoop() {
	defer p.wg.Done()
	var delay time.Duration
	for {
		c, err := p.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.cfg.Logf("portproxy: mapping %s: accept: %v; retrying in %v", p.m, err, delay)
			select {
			case <-time.After(delay):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// track registers c so that close can close it; false once the proxy is closing.
func (p *tcpProxy) track(c *net.TCPConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) untrack(c *net.TCPConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// serve connects client to the backend and relays until both directions are done.
func (p *tcpProxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	defer p.untrack(client)
	c, err := kernel.DialIn(p.ctx, p.ns, "tcp", p.m.Backend.String(), p.cfg.DialTimeout)
	if err != nil {
		if p.ctx.Err() == nil {
			p.cfg.Logf("portproxy: mapping %s: client %s: %v", p.m, client.RemoteAddr(), err)
		}
		return // the client sees its connection closed
	}
	backend := c.(*net.TCPConn)
	if !p.track(backend) {
		backend.Close()
		return
	}
	defer p.untrack(backend)
	relay(client, backend)
}

// relay copies a->b and b->a until both directions have ended. When one side ends its
// stream (FIN), the other side's write half is shut down so that the peer sees the
// end too and may still answer (half-close). An error in either direction (reset,
// close by the proxy) closes both connections, which ends the other direction.
func relay(a, b *net.TCPConn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(b, a)
	}()
	pipe(a, b)
	<-done
}

// pipe copies src to dst and then shuts down dst's write half. io.Copy between two
// *net.TCPConn is dst.ReadFrom(src), which Go implements with splice(2) through a
// pipe: the data never goes through user space.
func pipe(dst, src *net.TCPConn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		err = dst.CloseWrite()
	}
	if err != nil {
		dst.Close()
		src.Close()
	}
}

func (p *tcpProxy) close() {
	p.cancel()
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

var _ proxy = (*tcpProxy)(nil)
