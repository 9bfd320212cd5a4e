package trace

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden reports of testdata")

// recordedCases are the traces the privileged tests recorded (PODNET_TRACE_RECORD=1).
var recordedCases = []string{"bridge", "routed", "published", "service", "isolation", "foreign", "noroute"}

// buildRecorded builds the report of a recorded trace, with edit applied to its events.
func buildRecorded(t *testing.T, name string, edit func([]Event)) Report {
	t.Helper()
	msgs, in := readRecorded(t, name)
	in.Events = decodeAll(t, msgs)
	if edit != nil {
		edit(in.Events)
	}
	return Build(in)
}

func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		must(t, os.WriteFile(path, got, 0o644), "write "+file)
		return
	}
	want, err := os.ReadFile(path)
	must(t, err, "read golden (go test -update writes it)")
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", file, got, want)
	}
}

// The reports of recorded kernel traces, for people and as JSON, against golden files.
func TestReportGolden(t *testing.T) {
	for _, name := range recordedCases {
		t.Run(name, func(t *testing.T) {
			r := buildRecorded(t, name, nil)
			var text, js bytes.Buffer
			must(t, WriteText(&text, r), "text")
			must(t, WriteJSON(&js, r), "json")
			golden(t, name+".txt", text.Bytes())
			golden(t, name+".json", js.Bytes())
		})
	}
}

// What the goldens must say, whatever their wording.
func TestReportRecorded(t *testing.T) {
	r := buildRecorded(t, "published", nil)
	if len(r.Flows) != 1 || !strings.Contains(strings.Join(r.Flows[0].NAT, ","), "dnat to 198.51.100.10:8080") {
		t.Errorf("published port: flows %d, nat %v; want one DNATed to a1", len(r.Flows), r.Flows[0].NAT)
	}
	r = buildRecorded(t, "isolation", nil)
	if f := r.Flows[0].Packets[0].Fate; f.Verdict != "dropped" || f.Table != "inet podnet" || f.Chain != "forward" {
		t.Errorf("isolation: fate %+v", f)
	}
	r = buildRecorded(t, "noroute", nil)
	if f := r.Flows[0].Packets[0].Fate; f.Verdict != "lost" || f.Route == nil || f.Route.Err == "" {
		t.Errorf("noroute: fate %+v; want lost, with the node's route decision", f)
	}
	r = buildRecorded(t, "foreign", nil)
	if f := r.Flows[0].Packets[0].Fate; f.Verdict != "dropped" || f.Table != "inet other" || f.Rule != "ip daddr 198.51.100.11 tcp dport 8080 drop" {
		t.Errorf("foreign: fate %+v", f)
	}
	for _, name := range recordedCases {
		r := buildRecorded(t, name, nil)
		for _, ft := range r.Flows {
			for _, p := range ft.Packets {
				for _, h := range p.Hooks {
					for _, cv := range h.Chains {
						if strings.HasSuffix(cv.Table, " "+TableName) {
							t.Errorf("%s: the marker's chain %s shows in the path", name, cv.Chain)
						}
					}
				}
			}
		}
	}
}

// Trace ids are not to be relied upon from one hook to the next: with a new id for every
// base chain, the report is the same (conntrack ids and the order of hooks group the
// events).
func TestReportTraceIDsChange(t *testing.T) {
	for _, name := range recordedCases {
		want := textOf(t, buildRecorded(t, name, nil))
		got := textOf(t, buildRecorded(t, name, func(es []Event) {
			id := uint32(1)
			for i := range es {
				if es[i].HasPacket {
					id++
				}
				es[i].ID = id
			}
		}))
		if got != want {
			t.Errorf("%s with new trace ids:\n%s\nwant\n%s", name, got, want)
		}
	}
}

// Before Linux 6.16 the events have no conntrack view: packets are grouped by addresses
// and ports, and the path is the same where no NAT applies.
func TestReportWithoutConntrackView(t *testing.T) {
	for _, name := range []string{"bridge", "isolation", "foreign"} {
		r := buildRecorded(t, name, func(es []Event) {
			for i := range es {
				es[i].Ct = nil
			}
		})
		want := buildRecorded(t, name, nil)
		if len(r.Flows) != 1 || len(r.Flows[0].Packets) != len(want.Flows[0].Packets) {
			t.Fatalf("%s: %d flows; want 1 with %d packets", name, len(r.Flows), len(want.Flows[0].Packets))
		}
		for i, p := range r.Flows[0].Packets {
			w := want.Flows[0].Packets[i]
			if p.Direction != w.Direction || packetSignature(p) != packetSignature(w) {
				t.Errorf("%s packet %d: %s %s, want %s %s", name, i+1, p.Direction, p.Fate.Detail, w.Direction, w.Fate.Detail)
			}
		}
		if r.Result != want.Result {
			t.Errorf("%s: result %q, want %q", name, r.Result, want.Result)
		}
	}
}

// Events of packets that another tool marked (nftrace set by its own rule) are not the
// flow's: they are left out.
func TestReportIgnoresOtherTraces(t *testing.T) {
	r := buildRecorded(t, "bridge", func(es []Event) {
		for i := range es {
			if es[i].Table == TableName && strings.HasPrefix(es[i].Chain, "mark-") && es[i].Type == TypeRule && es[i].Handle != 0 {
				es[i].Type = TypePolicy // as if our rules had not matched
				es[i].Handle, es[i].Verdict, es[i].Policy = 0, "", "accept"
			}
		}
	})
	if len(r.Flows) != 0 {
		t.Errorf("%d flows, want none", len(r.Flows))
	}
}

func textOf(t *testing.T, r Report) string {
	t.Helper()
	var b bytes.Buffer
	must(t, WriteText(&b, r), "text")
	return b.String()
}
