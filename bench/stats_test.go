package main

import (
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

func TestSelectImplementations(t *testing.T) {
	got, err := selectImplementations("floor, reference")
	if err != nil || len(got) != 2 || got[0].name != "reference" || got[1].name != "floor" {
		t.Errorf("selectImplementations = %v, %v; want reference, floor in table order", got, err)
	}
	for _, bad := range []string{"", "podnet,bogus"} {
		if _, err := selectImplementations(bad); err == nil {
			t.Errorf("selectImplementations(%q) succeeded, want an error", bad)
		}
	}
}
