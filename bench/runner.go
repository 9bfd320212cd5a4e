package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netns"
)

// runner sets pods up and tears them down with one implementation (podnet, the
// reference plugins, or bare netlink). The harness calls Setup once, then Add and
// Del per pod (Add calls for different pods may run concurrently), then Teardown.
type runner interface {
	// Setup prepares the node namespace of tb. An error means the implementation is
	// not available, and the row says why.
	Setup(tb *testbed) error
	// Add attaches pod i's sandbox to the network.
	Add(i int) error
	// Del detaches pod i again.
	Del(i int) error
	// Teardown releases whatever Setup acquired; it is called even if Setup failed,
	// and must cope with a partial Setup.
	Teardown() error
}

// testbed is the throwaway world of one runner: a node namespace standing in for the
// host, one sandbox namespace per pod, and a temp directory for files. Removing the
// namespaces removes every kernel object the runner created in them.
type testbed struct {
	dir       string         // temp directory, removed with the testbed
	nodePath  string         // /run/netns/<node>
	node      netns.NsHandle // open handle of nodePath
	sandboxes []string       // /run/netns/<sandbox> per pod index
}

// newTestbed creates the namespaces of a runner; they are not part of any timing.
func newTestbed(prefix string, pods int) (tb *testbed, err error) {
	tb = &testbed{node: netns.None()}
	defer func() {
		if err != nil {
			err = errors.Join(err, tb.remove())
		}
	}()
	if tb.dir, err = os.MkdirTemp("", prefix+"-"); err != nil {
		return tb, fmt.Errorf("create temp dir: %w", err)
	}
	if tb.nodePath, err = createNamedNetns(prefix + "-node"); err != nil {
		return tb, err
	}
	if tb.node, err = netns.GetFromPath(tb.nodePath); err != nil {
		return tb, fmt.Errorf("open node netns: %w", err)
	}
	for i := range pods {
		path, err := createNamedNetns(fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			return tb, err
		}
		tb.sandboxes = append(tb.sandboxes, path)
	}
	return tb, nil
}

// remove deletes the namespaces and the temp directory; calling it twice is harmless.
func (tb *testbed) remove() error {
	var errs []error
	if tb.node.IsOpen() {
		errs = append(errs, tb.node.Close())
		tb.node = netns.None()
	}
	for _, p := range tb.sandboxes {
		errs = append(errs, deleteNamedNetns(p))
	}
	tb.sandboxes = nil
	if tb.nodePath != "" {
		errs = append(errs, deleteNamedNetns(tb.nodePath))
		tb.nodePath = ""
	}
	if tb.dir != "" {
		errs = append(errs, os.RemoveAll(tb.dir))
		tb.dir = ""
	}
	return errors.Join(errs...)
}

// result is one row of the table.
type result struct {
	add, del    summary
	wall        time.Duration // concurrent ADD wall time
	unavailable string        // Setup failed: why
	err         error         // a measurement or the cleanup failed
}

// settle is the pause between preparing a testbed and timing on it, so that the
// kernel's asynchronous cleanup of the previous runner's namespaces does not compete
// for the two cores.
const settle = time.Second

// measure runs one runner through the whole scenario on its own testbed: sequential
// ADD of pods 0..pods-1, sequential DEL of them, then concurrent ADD of the next
// `concurrent` pods (their DEL is not timed).
func measure(ctx context.Context, prefix string, r runner, pods, concurrent int) (res result) {
	tb, err := newTestbed(prefix, pods+concurrent)
	if err != nil {
		res.err = err
		return res
	}
	defer func() { res.err = errors.Join(res.err, tb.remove()) }()
	err = r.Setup(tb)
	defer func() { res.err = errors.Join(res.err, r.Teardown()) }()
	if err != nil {
		res.unavailable = err.Error()
		return res
	}
	select {
	case <-ctx.Done():
	case <-time.After(settle):
	}

	seq := make([]int, pods)
	for i := range seq {
		seq[i] = i
	}
	adds, err := timeEach(ctx, seq, r.Add, "ADD")
	if err != nil {
		res.err = err
		return res
	}
	dels, err := timeEach(ctx, seq, r.Del, "DEL")
	if err != nil {
		res.err = err
		return res
	}
	res.add, res.del = summarize(adds), summarize(dels)

	par := make([]int, concurrent)
	for k := range par {
		par[k] = pods + k
	}
	if res.wall, err = timeConcurrent(ctx, par, r.Add); err != nil {
		res.err = err
		return res
	}
	_, res.err = timeEach(ctx, par, r.Del, "DEL")
	return res
}

// timeEach calls op for each pod in turn and returns how long each call took.
func timeEach(ctx context.Context, pods []int, op func(int) error, verb string) ([]time.Duration, error) {
	took := make([]time.Duration, 0, len(pods))
	for _, i := range pods {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := time.Now()
		if err := op(i); err != nil {
			return nil, fmt.Errorf("%s pod %d: %w", verb, i, err)
		}
		took = append(took, time.Since(start))
	}
	return took, nil
}

// timeConcurrent calls op for all pods at once and returns the wall time until the
// last call returned.
func timeConcurrent(ctx context.Context, pods []int, op func(int) error) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	start := time.Now()
	for k, i := range pods {
		wg.Go(func() {
			if err := op(i); err != nil {
				errs[k] = fmt.Errorf("concurrent ADD pod %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}
