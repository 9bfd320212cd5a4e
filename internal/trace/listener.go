package trace

import (
	"errors"
	"fmt"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/podnet/podnet/internal/nftwire"
	"golang.org/x/sys/unix"
)

// listenerReadBuffer is the receive buffer of the listener's socket: a busy namespace
// with several flows traced sends a few hundred events per packet burst.
const listenerReadBuffer = 4 << 20

// maxEvents bounds the events a listener keeps (a few tens of MB): a flow that floods
// the node while a trace watches it for long does not exhaust memory. Events past it
// count as lost.
const maxEvents = 100_000

// Listener receives the nf_tables trace events of one network namespace: the events of
// every packet that has nftrace set there, whoever set it. (google/nftables has no way to
// receive them: they come on the multicast group NFNLGRP_NFTRACE of a netfilter netlink
// socket, which the listener joins.)
type Listener struct {
	conn   *netlink.Conn
	notify chan struct{}
	done   chan struct{}

	mu     sync.Mutex // guards events, raw, lost, closed and err
	events []Event
	raw    [][]byte // the messages as received, for recording test data
	lost   int      // receive errors for lack of buffer space (ENOBUFS): events lost
	closed bool
	err    error
}

// Listen starts receiving the trace events of the network namespace nsFD. Events the
// kernel sends before Listen returns are not seen: listen before marking a flow.
func Listen(nsFD int) (*Listener, error) {
	c, err := nftwire.Dial(nsFD)
	if err != nil {
		return nil, fmt.Errorf("listen for trace events: %w", err)
	}
	if err := c.SetReadBuffer(listenerReadBuffer); err != nil {
		c.Close()
		return nil, fmt.Errorf("listen for trace events: %w", err)
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTRACE); err != nil {
		c.Close()
		return nil, fmt.Errorf("listen for trace events: join NFNLGRP_NFTRACE: %w", err)
	}
	l := &Listener{conn: c, notify: make(chan struct{}, 1), done: make(chan struct{})}
	go l.run()
	return l, nil
}

func (l *Listener) run() {
	defer close(l.done)
	for {
		msgs, err := l.conn.Receive()
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return
		}
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				l.lost++
				l.mu.Unlock()
				continue
			}
			l.err = fmt.Errorf("receive trace events: %w", err)
			l.mu.Unlock()
			return
		}
		for _, m := range msgs {
			e, err := Decode(m)
			if err != nil {
				continue // not a trace event (nothing else is sent to the group)
			}
			if len(l.events) >= maxEvents {
				l.lost++
				continue
			}
			l.events = append(l.events, e)
			if b, err := m.MarshalBinary(); err == nil {
				l.raw = append(l.raw, b)
			}
		}
		l.mu.Unlock()
		select {
		case l.notify <- struct{}{}:
		default:
		}
	}
}

// Notify returns a channel that receives a value after events arrived.
func (l *Listener) Notify() <-chan struct{} { return l.notify }

// Events returns the events received so far, in the order the kernel sent them.
func (l *Listener) Events() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.events...)
}

// Raw returns the trace messages received so far as the kernel sent them (netlink
// header included), for test data.
func (l *Listener) Raw() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]byte(nil), l.raw...)
}

// Lost returns how many times the kernel could not deliver events for lack of buffer
// space, plus the events past maxEvents: the trace then misses some.
func (l *Listener) Lost() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// Close stops receiving and returns the error that stopped the listener early, if any.
// Called twice, the second call does nothing and returns nil.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	err := l.err
	l.mu.Unlock()
	cerr := l.conn.Close()
	<-l.done
	return errors.Join(err, cerr)
}
