package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var ds []time.Duration
		for _, x := range v {
			ds = append(ds, time.Duration(x)*time.Millisecond)
		}
		return ds
	}
	tests := []struct {
		name        string
		in          []time.Duration
		median, p90 time.Duration
	}{
		{"empty", nil, 0, 0},
		{"one", ms(7), 7 * time.Millisecond, 7 * time.Millisecond},
		{"even count interpolates", ms(4, 1, 3, 2), 2500 * time.Microsecond, 3700 * time.Microsecond},
		{"unsorted 1..10", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 5500 * time.Microsecond, 9100 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := summarize(tt.in)
			if s.n != len(tt.in) || s.median != tt.median || s.p90 != tt.p90 {
				t.Errorf("summarize = %+v, want n=%d median=%v p90=%v", s, len(tt.in), tt.median, tt.p90)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{9, 1, 5}, 5}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseOnly(t *testing.T) {
	names := func(ims []implementation) string {
		var s []string
		for _, im := range ims {
			s = append(s, im.name)
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		only              string
		setup             string
		throughput, ports bool
	}{
		{"setup,throughput,ports", "podnet,podnet-api,reference,floor", true, true},
		{"floor, reference", "reference,floor", false, false},
		{"throughput,ports", "", true, true},
		{"ports,podnet", "podnet", false, true},
	}
	for _, tt := range tests {
		sel, err := parseOnly(tt.only)
		if err != nil || names(sel.setup) != tt.setup || sel.throughput != tt.throughput || sel.ports != tt.ports {
			t.Errorf("parseOnly(%q) = setup %q throughput %v ports %v, %v; want setup %q throughput %v ports %v",
				tt.only, names(sel.setup), sel.throughput, sel.ports, err, tt.setup, tt.throughput, tt.ports)
		}
	}
	for _, bad := range []string{"", " , ", "podnet,bogus"} {
		if _, err := parseOnly(bad); err == nil {
			t.Errorf("parseOnly(%q) succeeded, want an error", bad)
		}
	}
}

// A path's figures: medians of the runs' rates and of their CPU per GB, the spread of
// the rates, and the medians of the runs' own round-trip percentiles.
func TestFiguresOf(t *testing.T) {
	run := func(gbit float64, gb int64, busy time.Duration) tpRun {
		return tpRun{bps: gbit * 1e9, bytes: gb * 1e9, busy: busy, sender: busy / 2}
	}
	us := func(v ...int) []time.Duration {
		var ds []time.Duration
		for _, x := range v {
			ds = append(ds, time.Duration(x)*time.Microsecond)
		}
		return ds
	}
	runs := []tpRun{run(10, 5, 2*time.Second), run(30, 10, 2*time.Second), run(20, 4, 2*time.Second)}
	for i, rtts := range [][]time.Duration{us(10, 20, 30), us(40, 50, 60), us(1, 2, 3)} {
		runs[i].rtts = rtts
	}
	f := figuresOf(runs)
	if f.n != 3 || f.bps != 20e9 || f.min != 10e9 || f.max != 30e9 {
		t.Errorf("rates: n %d, median %v, min %v, max %v; want 3, 20e9, 10e9, 30e9", f.n, f.bps, f.min, f.max)
	}
	// Per GB: 400 ms, 200 ms, 500 ms of busy time.
	if f.cpu != 400*time.Millisecond || f.sender != 200*time.Millisecond {
		t.Errorf("CPU per GB %v, sender %v; want 400ms, 200ms", f.cpu, f.sender)
	}
	if f.p50 != 20*time.Microsecond {
		t.Errorf("round trip p50 %v, want 20µs (the median of 20, 50, 2)", f.p50)
	}
	if got := figuresOf(nil); got.n != 0 || got.bps != 0 {
		t.Errorf("no runs: %+v", got)
	}
}

// Ratios pair the runs of one round: a path twice as fast as its floor in every round is
// 2 however the machine's speed drifts between rounds.
func TestPairedRatio(t *testing.T) {
	runs := func(gbit ...float64) []tpRun {
		var rs []tpRun
		for _, g := range gbit {
			rs = append(rs, tpRun{bps: g * 1e9})
		}
		return rs
	}
	if r := pairedRatio(runs(20, 60, 8), runs(10, 30, 4, 99), rate); r != 2 {
		t.Errorf("paired ratio %v, want 2", r)
	}
	if r := pairedRatio(runs(1), nil, rate); !math.IsNaN(r) {
		t.Errorf("no round with both: %v, want NaN", r)
	}
}
