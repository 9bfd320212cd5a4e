package main

import (
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
