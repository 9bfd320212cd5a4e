package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// drainer is a runner whose DEL may answer before its work is done (podnet's agent
// deletes the veth pair and frees the address after the reply). drained reports
// whether no pod holds an address any more.
type drainer interface {
	drained() (bool, error)
}

// drainTimeout bounds the wait for the veths of the DELed pods to go.
const drainTimeout = 2 * time.Minute

// vethWatch records when veths leave a namespace, from the kernel's link notifications
// (no polling: the watch costs nothing while the runner works).
type vethWatch struct {
	done chan struct{}
	mu   sync.Mutex
	gone []time.Time // arrival of each veth's RTM_DELLINK, in order
	err  error
	more chan struct{} // signalled on every arrival
}

func watchVethDeletes(ns netns.NsHandle) (*vethWatch, error) {
	w := &vethWatch{done: make(chan struct{}), more: make(chan struct{}, 1)}
	ch := make(chan netlink.LinkUpdate, 4096)
	err := netlink.LinkSubscribeWithOptions(ch, w.done, netlink.LinkSubscribeOptions{
		Namespace:         &ns,
		ReceiveBufferSize: 4 << 20,
		ErrorCallback: func(err error) {
			w.mu.Lock()
			w.err = errors.Join(w.err, err)
			w.mu.Unlock()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to link changes of the node: %w", err)
	}
	go func() {
		for u := range ch {
			// A bridge port's removal is also announced with family AF_BRIDGE.
			if u.Header.Type != unix.RTM_DELLINK || u.Family != unix.AF_UNSPEC || u.Link == nil || u.Link.Type() != "veth" {
				continue
			}
			w.mu.Lock()
			w.gone = append(w.gone, time.Now())
			w.mu.Unlock()
			select {
			case w.more <- struct{}{}:
			default:
			}
		}
	}()
	return w, nil
}

// wait returns the times of the first n deletions once they happened.
func (w *vethWatch) wait(ctx context.Context, n int) ([]time.Time, error) {
	deadline := time.After(drainTimeout)
	for {
		w.mu.Lock()
		got, err := w.gone, w.err
		w.mu.Unlock()
		switch {
		case err != nil:
			return nil, fmt.Errorf("watch veths: %w", err)
		case len(got) >= n:
			return got[:n], nil
		}
		select {
		case <-w.more:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, fmt.Errorf("%d of %d veths still there %v after the DELs", n-len(got), n, drainTimeout)
		}
	}
}

func (w *vethWatch) stop() { close(w.done) }

// drain is how long the DELs took to finish their work in the kernel and the store.
type drain struct {
	vethGone summary       // per DEL: from its start until its veth was gone
	tail     time.Duration // from the last DEL's reply until the last veth was gone and every address free
}

// measureDrain pairs the k-th veth deletion with the k-th DEL (a runner deletes them in
// the order it was asked: podnet's detach worker is one FIFO queue), then waits, for a
// drainer, until the addresses are free.
func measureDrain(ctx context.Context, w *vethWatch, r runner, starts []time.Time, took []time.Duration) (drain, error) {
	gone, err := w.wait(ctx, len(starts))
	if err != nil {
		return drain{}, err
	}
	var d drain
	per := make([]time.Duration, len(starts))
	last := gone[len(gone)-1]
	for i, s := range starts {
		per[i] = gone[i].Sub(s)
	}
	lastReply := starts[len(starts)-1].Add(took[len(took)-1])
	if dr, ok := r.(drainer); ok {
		deadline := time.Now().Add(drainTimeout)
		for {
			ok, err := dr.drained()
			if err != nil {
				return drain{}, fmt.Errorf("addresses free after DEL: %w", err)
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return drain{}, fmt.Errorf("addresses still held %v after the DELs", drainTimeout)
			}
			time.Sleep(time.Millisecond)
		}
		last = latest(last, time.Now())
	}
	d.vethGone = summarize(per)
	d.tail = max(last.Sub(lastReply), 0)
	return d, nil
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
