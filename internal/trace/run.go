package trace

import (
	"context"
	"errors"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/fastpath"
)

// Options says what Run traces.
type Options struct {
	// Node is the namespace to trace in (the node's), NodePath its name for the report.
	Node     netns.NsHandle
	NodePath string
	Flow     Flow
	// Source is the namespace of the flow's source (a sandbox), or netns.None(): needed
	// to send probes, and to show the source's route decision.
	Source netns.NsHandle
	// Send sends Count probes from Source, each waiting up to Timeout (default
	// DefaultProbeTimeout) for its answer.
	// Without Send, Run watches for Timeout (until ctx ends with Timeout 0), or until
	// Count packets of the flow were marked (with Count > 0).
	Send    bool
	Count   int
	Timeout time.Duration
	// Settle is how long Run keeps listening after the last probe, for the events of
	// the packets still on their way (default DefaultSettle).
	Settle time.Duration
}

// DefaultSettle is how long Run keeps listening after the last probe by default.
const DefaultSettle = 300 * time.Millisecond

// DefaultProbeTimeout is how long a probe waits for its answer when Options.Timeout is 0.
const DefaultProbeTimeout = 2 * time.Second

// Result is a trace: the report, what it was built from, and the trace messages as the
// kernel sent them (test data).
type Result struct {
	Report Report
	Input  Input
	Raw    [][]byte
}

// Run traces o.Flow in o.Node: it listens for trace events, marks the flow, sends the
// probes or watches, then removes the marking, reads the flow's conntrack entries, the
// rules of the tables the packets went through and the route decisions that explain a
// packet lost, and builds the report. When ctx ends early (an interrupt), Run stops
// watching and reports what it saw; the marking is removed in every case (and by the
// kernel, should the process die: Mark).
func Run(ctx context.Context, o Options) (Result, error) {
	if err := o.Flow.Validate(); err != nil {
		return Result{}, err
	}
	if o.Send && !o.Source.IsOpen() {
		return Result{}, errors.New("sending probes needs the namespace of the source")
	}
	if o.Settle == 0 {
		o.Settle = DefaultSettle
	}
	if o.Send && o.Timeout == 0 {
		o.Timeout = DefaultProbeTimeout
	}
	node := int(o.Node)
	l, err := Listen(node)
	if err != nil {
		return Result{}, err
	}
	defer l.Close()
	// Packets that podnet's fast path redirects cross no hook: keep the flow off it.
	unbypass, err := fastpath.Bypass(o.Node, o.Flow.Src, o.Flow.Dst)
	if err != nil {
		return Result{}, err
	}
	defer unbypass()
	m, err := Mark(node, o.Flow)
	if err != nil {
		return Result{}, err
	}
	defer m.Close()

	in := Input{Flow: o.Flow, Node: o.NodePath}
	if o.Send {
		probes, err := SendProbes(ctx, o.Source, o.Flow, o.Count, o.Timeout)
		in.Probes = probes
		if err != nil {
			return Result{}, err
		}
		settle(ctx, l, o.Settle)
	} else {
		watch(ctx, l, o.Count, o.Timeout)
	}
	if err := m.Close(); err != nil {
		return Result{}, err
	}
	if err := l.Close(); err != nil {
		return Result{}, err
	}
	in.Events, in.Lost = l.Events(), l.Lost()

	if in.Conntrack, err = ReadConntrack(o.Node, o.Flow); err != nil {
		return Result{}, err
	}
	var tables []TableRef
	for _, t := range tablesOf(in.Events) {
		if t.Name != TableName {
			tables = append(tables, t)
		}
	}
	if in.Catalog, err = LoadCatalog(node, tables); err != nil {
		return Result{}, err
	}
	if o.Source.IsOpen() {
		in.Routes = append(in.Routes, LookupRoute(o.Source, "source", o.Flow.Dst, o.Flow.Src, ""))
	}
	rep := Build(in)
	if len(rep.wanted) > 0 {
		for _, q := range rep.wanted {
			in.Routes = append(in.Routes, LookupRoute(o.Node, "node", q.dst, q.src, q.iif))
		}
		rep = Build(in)
	}
	return Result{Report: rep, Input: in, Raw: l.Raw()}, nil
}

// settle waits until no event came for d, or ctx ends.
func settle(ctx context.Context, l *Listener, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-l.Notify():
			t.Reset(d)
		}
	}
}

// watch waits until ctx ends, timeout passes (0: no limit) or count packets of the flow
// were marked in their original direction (0: no limit).
func watch(ctx context.Context, l *Listener, count int, timeout time.Duration) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-expired:
			return
		case <-l.Notify():
			if count > 0 && markedPackets(l.Events()) >= count {
				// Let the last packet finish its way.
				settle(ctx, l, DefaultSettle)
				return
			}
		}
	}
}

// markedPackets counts the packets the marker's inet rules marked in their original
// direction.
func markedPackets(events []Event) int {
	n := 0
	for _, e := range events {
		if e.Family == "inet" && e.Table == TableName && e.Type == TypeRule && e.Handle != 0 &&
			(e.Chain == chainMarkPrerouting || e.Chain == chainMarkOutput) {
			n++
		}
	}
	return n
}
