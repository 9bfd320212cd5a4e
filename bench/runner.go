package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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
	drain       drain         // what the sequential DELs left to finish after answering
	wall        time.Duration // concurrent ADD wall time
	unavailable string        // Setup failed: why
	err         error         // a measurement or the cleanup failed
}

// Between preparing a testbed and timing on it, settle waits at least settleMin, then
// until the CPUs are mostly idle (busy below idleBelow of their time, at most
// settleMax), so that the kernel's asynchronous cleanup of the previous testbed's
// namespaces (a thousand after a ports row) does not compete for the two cores.
const (
	settleMin = time.Second
	settleMax = 30 * time.Second
	idleBelow = 0.15
)

func settle(ctx context.Context) {
	deadline := time.Now().Add(settleMax)
	select {
	case <-ctx.Done():
		return
	case <-time.After(settleMin):
	}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if busy, err := cpuBusy(250 * time.Millisecond); err != nil || busy < idleBelow {
			return
		}
	}
	if ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "podnet-bench: CPUs still busy after %v, timing anyway\n", settleMax)
	}
}

// cpuBusy is the fraction of all CPUs' time that was not idle during the next d.
func cpuBusy(d time.Duration) (float64, error) {
	before, err := readCPUStat()
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	after, err := readCPUStat()
	if err != nil {
		return 0, err
	}
	busy, idle := after.busy-before.busy, after.idle-before.idle
	if busy+idle == 0 {
		return 0, nil
	}
	return float64(busy) / float64(busy+idle), nil
}

// cpuStat is the machine's CPU time by kind, from the first line of /proc/stat: idle
// (idle and iowait), busy (the rest) and softirq (part of busy).
type cpuStat struct{ idle, busy, softirq time.Duration }

func readCPUStat() (cpuStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return cpuStat{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var s cpuStat
	// user nice system idle iowait irq softirq steal; guest time is in user already.
	for k, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return cpuStat{}, fmt.Errorf("/proc/stat: %q: %w", v, err)
		}
		d := time.Duration(n) * time.Second / clockTicks
		if k == 3 || k == 4 { // idle, iowait
			s.idle += d
		} else {
			s.busy += d
		}
		if k == 6 {
			s.softirq = d
		}
	}
	return s, nil
}

// setUp builds a testbed of n sandboxes, sets r up on it and lets the machine settle.
// tearDown undoes both (call it whatever happened); unavailable says why r.Setup
// failed, err why the testbed could not be built.
func setUp(ctx context.Context, prefix string, n int, r runner) (tb *testbed, tearDown func() error, unavailable string, err error) {
	tb, tearDown, unavailable, err = prepare(prefix, n, r)
	if err == nil && unavailable == "" {
		settle(ctx)
	}
	return tb, tearDown, unavailable, err
}

// prepare is setUp without the wait for the machine to settle.
func prepare(prefix string, n int, r runner) (tb *testbed, tearDown func() error, unavailable string, err error) {
	tb, err = newTestbed(prefix, n)
	if err != nil {
		return nil, func() error { return nil }, "", err
	}
	serr := r.Setup(tb)
	tearDown = func() error { return errors.Join(r.Teardown(), tb.remove()) }
	if serr != nil {
		return tb, tearDown, serr.Error(), nil
	}
	return tb, tearDown, "", nil
}

// setupRow is one runner of the setup section on its own testbed.
type setupRow struct {
	name     string
	r        runner
	tb       *testbed
	tearDown func() error
	res      result
	ok       bool // set up and not failed: still measured
}

// measureSetup runs every runner through the whole scenario, each on its own testbed,
// interleaved so that load on the shared machine hits every row alike: sequential ADD
// of pods 0..pods-1, one pod of each row after the other (the row order rotates with
// the pod); then sequential DEL of them the same way (each reply, then until each veth
// is gone and every address is free); then, row after row, concurrent ADD of the next
// `concurrent` pods (their DEL is not timed). A row whose Setup fails is reported
// unavailable; a row that fails stops being measured, the others go on. parts, when
// the podnet row ran, is the fixed costs inside its ADD (podnet.parts).
func measureSetup(ctx context.Context, prefix string, ims []implementation, binDir string, pods, concurrent int) (results map[string]result, parts addParts) {
	results = map[string]result{}
	var rows []*setupRow
	defer func() {
		for _, row := range rows {
			row.res.err = errors.Join(row.res.err, row.tearDown())
			results[row.name] = row.res
		}
	}()
	for _, im := range ims {
		row := &setupRow{name: im.name, r: im.new(binDir)}
		var unavailable string
		var err error
		row.tb, row.tearDown, unavailable, err = prepare(prefix+"-"+im.name, pods+concurrent, row.r)
		row.res.err, row.res.unavailable = err, unavailable
		row.ok = err == nil && unavailable == ""
		rows = append(rows, row)
	}
	settle(ctx)
	live := func(i int) []*setupRow { // the rows still measured, rotated by i
		var out []*setupRow
		for k := range rows {
			if row := rows[(k+i)%len(rows)]; row.ok {
				out = append(out, row)
			}
		}
		return out
	}
	timeOne := func(row *setupRow, verb string, i int, op func(int) error) (time.Time, time.Duration, bool) {
		start := time.Now()
		if err := op(i); err != nil {
			row.res.err, row.ok = fmt.Errorf("%s pod %d: %w", verb, i, err), false
			return start, 0, false
		}
		return start, time.Since(start), true
	}

	adds := map[*setupRow][]time.Duration{}
	for i := range pods {
		if ctx.Err() != nil {
			return results, parts
		}
		for _, row := range live(i) {
			if _, d, ok := timeOne(row, "ADD", i, row.r.Add); ok {
				adds[row] = append(adds[row], d)
			}
		}
	}
	for _, row := range live(0) {
		if p, ok := row.r.(*podnet); ok && !p.direct && !p.publish {
			exec, trip, err := p.parts(pods)
			parts = addParts{exec: exec, roundTrip: trip, err: err}
		}
	}

	watches := map[*setupRow]*vethWatch{}
	for _, row := range live(0) {
		w, err := watchVethDeletes(row.tb.node)
		if err != nil {
			row.res.err, row.ok = err, false
			continue
		}
		defer w.stop()
		watches[row] = w
	}
	dels := map[*setupRow][]time.Duration{}
	starts := map[*setupRow][]time.Time{}
	for i := range pods {
		if ctx.Err() != nil {
			return results, parts
		}
		for _, row := range live(i) {
			if start, d, ok := timeOne(row, "DEL", i, row.r.Del); ok {
				dels[row] = append(dels[row], d)
				starts[row] = append(starts[row], start)
			}
		}
	}
	for _, row := range live(0) {
		row.res.add, row.res.del = summarize(adds[row]), summarize(dels[row])
		var err error
		if row.res.drain, err = measureDrain(ctx, watches[row], row.r, starts[row], dels[row]); err != nil {
			row.res.err, row.ok = err, false
		}
	}

	for _, row := range live(0) {
		if ctx.Err() != nil {
			return results, parts
		}
		par := podRange(pods, pods+concurrent)
		var err error
		if row.res.wall, err = timeConcurrent(ctx, par, row.r.Add); err != nil {
			row.res.err, row.ok = err, false
			continue
		}
		if _, err := timeEach(ctx, par, row.r.Del, "DEL"); err != nil {
			row.res.err, row.ok = err, false
		}
	}
	return results, parts
}

// addParts is the fixed costs inside podnet's ADD through the plugin.
type addParts struct {
	exec      summary // exec of podnet-cni (CNI VERSION)
	roundTrip summary // a request to the agent over its socket (STATUS)
	err       error
}

// podRange lists the pod indexes from, from+1, ..., to-1.
func podRange(from, to int) []int {
	ps := make([]int, 0, max(to-from, 0))
	for i := from; i < to; i++ {
		ps = append(ps, i)
	}
	return ps
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
