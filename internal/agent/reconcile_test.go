package agent

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// While an ADD or a DEL is between the store and the tables, a difference that Reconcile
// finds may be its own: the rewrite waits for the next Reconcile, once, and is no repair
// then. With nothing in flight, the same difference is rewritten at once and counted; at
// the agent's start it is rewritten at once, and not counted (the tables follow the
// store, or are created).
func TestReconcileWaitsForChangesInFlight(t *testing.T) {
	node := newFakeNode()
	fa := startFake(t, node, newTranscript(t))
	defer fa.Close()
	fa.createNetwork(t, blueSpec)
	if err := fa.add(attachReq("blue", "c1")); err != nil {
		t.Fatal(err)
	}
	if err := fa.idle(); err != nil {
		t.Fatal(err)
	}
	tables := node.tables
	repairs := func() float64 {
		var m dto.Metric
		if err := fa.metrics.repairs.WithLabelValues("nftables").Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	reconcile := func() {
		t.Helper()
		if err := fa.Reconcile(false); err != nil {
			t.Fatal(err)
		}
	}
	reconcile()

	// Nothing in flight: a repair at once.
	syncs, was := tables.Syncs(), repairs()
	tables.Break()
	reconcile()
	if n, r := tables.Syncs()-syncs, repairs()-was; n != 1 || r != 1 {
		t.Fatalf("nothing in flight: %d rewrites, %v repairs counted; want 1 and 1", n, r)
	}

	// A DEL in flight (Detach marks its endpoint pending before the detach takes the
	// endpoint's elements out), then an ADD.
	for _, inFlight := range []struct {
		name       string
		start, end func()
	}{
		{"a DEL", func() { fa.setPending(key("blue", "c1"), true) }, func() { fa.setPending(key("blue", "c1"), false) }},
		{"an ADD", func() { fa.attaching.Add(1) }, func() { fa.attaching.Add(-1) }},
	} {
		inFlight.start()
		tables.Break()
		syncs, was = tables.Syncs(), repairs()
		reconcile()
		if n := tables.Syncs() - syncs; n != 0 {
			t.Errorf("%s in flight, first Reconcile: %d rewrites, want none", inFlight.name, n)
		}
		reconcile()
		if n, r := tables.Syncs()-syncs, repairs()-was; n != 1 || r != 0 {
			t.Errorf("%s in flight, second Reconcile: %d rewrites, %v repairs counted; want 1 and none", inFlight.name, n, r)
		}
		inFlight.end()
		if ok, err := tables.InSync(mustDesired(t, fa)); err != nil || !ok {
			t.Errorf("%s: tables not in sync after the second Reconcile (%v)", inFlight.name, err)
		}
	}

	tables.Break()
	syncs, was = tables.Syncs(), repairs()
	if err := fa.Reconcile(true); err != nil {
		t.Fatal(err)
	}
	if n, r := tables.Syncs()-syncs, repairs()-was; n != 1 || r != 0 {
		t.Errorf("at startup: %d rewrites, %v repairs counted; want 1 and none", n, r)
	}
}
