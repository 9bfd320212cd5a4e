package main

import (
	"math"
	"net/netip"
	"testing"

	"github.com/vishvananda/netns"
)

// TestPairsOf checks which comparisons run at once and what they are held to.
func TestPairsOf(t *testing.T) {
	got := map[[2]string]tpPair{}
	for _, p := range tpPairsOf(tpPaths) {
		got[[2]string{p.a, p.b}] = p
	}
	want := map[[2]string]tpPair{
		{"bridge", "floor-bridge"}: {why: "floor", maxByte: 1 / 0.95, maxByteCPU: tpCPUSlack},
		{"bridge", "ref-bridge"}:   {why: "reference plugin", maxByte: 1},
		{"bridge-big", "bridge"}:   {why: "base", maxByteCPU: tpCPUSlack, maxPacket: 1 / 0.95},
		{"routed", "floor-routed"}: {why: "floor", maxByte: 1 / 0.95, maxByteCPU: tpCPUSlack},
		{"routed", "ref-ptp"}:      {why: "reference plugin", maxByte: 1},
		{"routed-big", "routed"}:   {why: "base", maxByteCPU: tpCPUSlack, maxPacket: 1 / 0.95},
		{"dnat", "to-pod"}:         {why: "floor", maxByte: 1 / 0.95, maxByteCPU: tpCPUSlack},
		{"dnat", "ref-portmap"}:    {why: "reference plugin", maxByte: 1},
		{"dnat-big", "dnat"}:       {why: "base", maxByteCPU: tpCPUSlack, maxPacket: 1 / 0.95},
		{"bridge-cmp", "bridge"}:   {why: "base"},
		{"routed-cmp", "routed"}:   {why: "base"},
		{"dnat-cmp", "dnat"}:       {why: "base"},
	}
	if len(got) != len(want) {
		t.Errorf("%d pairs, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		w.a, w.b = k[0], k[1]
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("pair %s / %s: %+v, want %+v", k[0], k[1], g, w)
		}
	}
}

// TestApart checks that two flows to one listening address get their own ports, the one
// that dials the server directly moving.
func TestApart(t *testing.T) {
	pod := netip.MustParseAddrPort("10.98.0.3:5201")
	node := netip.MustParseAddrPort("203.0.113.1:18080")
	server := netns.NsHandle(7)
	dnat := flow{server: server, listen: pod, dial: node}
	direct := flow{server: server, listen: pod, dial: pod}
	moved := netip.MustParseAddrPort("10.98.0.3:5202")
	for _, c := range []struct {
		name   string
		a, b   flow
		wa, wb flow
	}{
		{"direct second", dnat, direct, dnat, flow{server: server, listen: moved, dial: moved}},
		{"direct first", direct, dnat, flow{server: server, listen: moved, dial: moved}, dnat},
		{"other namespace", dnat, flow{server: 8, listen: pod, dial: pod}, dnat, flow{server: 8, listen: pod, dial: pod}},
	} {
		a, b, err := apart(c.a, c.b)
		if err != nil || a != c.wa || b != c.wb {
			t.Errorf("%s: %+v, %+v, %v; want %+v, %+v", c.name, a, b, err, c.wa, c.wb)
		}
	}
	if _, _, err := apart(dnat, dnat); err == nil {
		t.Error("two flows through published ports to one address: no error")
	}
}

func TestQuartiles(t *testing.T) {
	q1, q2, q3 := quartiles([]float64{1, 2, 3, 4, 5})
	if q1 != 2 || q2 != 3 || q3 != 4 {
		t.Errorf("quartiles of 1..5: %v %v %v", q1, q2, q3)
	}
	if _, q2, _ := quartiles(nil); !math.IsNaN(q2) {
		t.Errorf("median of none: %v", q2)
	}
	rs := duelRatios([]tpDuel{{aByte: 2, bByte: 1}, {aByte: 1, bByte: 0}, {aByte: 3, bByte: 2}}, func(d tpDuel) (float64, float64) { return d.aByte, d.bByte })
	if len(rs) != 2 || rs[0] != 1.5 || rs[1] != 2 {
		t.Errorf("ratios %v, want [1.5 2] (a round without b's figure left out)", rs)
	}
}
