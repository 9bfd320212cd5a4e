package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Paths at once: the rounds of the throughput section pair two paths' runs seconds
// apart, and this guest's speed swings by 2-4x within a minute, so a ratio of one round
// can be off by tens of percent and the medians of one run move by ±5-15% from the next.
// Here the two paths of a comparison run at the same time, both senders pinned to the
// sender's CPU and both receivers to the receiver's, so that whatever the machine's
// speed, it is the same for both; and what is compared is the CPU time of each path's
// own threads per byte (sender and receiver of the stream) and per datagram (the sender
// of the datagrams), from the kernel's per-thread counters. A thread's time includes
// the softirq work done in its context, which on veth is the packet's whole path: the
// transmit, the bridge or the forwarding, netfilter's hooks and the receiving socket
// (this kernel has no IRQ time accounting, so softirq time is charged to the thread it
// runs in). The quartiles of the per-round ratios are within a few percent where the
// rounds' ratios of throughput spread by ±10-20%.

// tpPair is a comparison run at once: path a against path b (ratios a / b).
type tpPair struct {
	a, b string
	why  string // what b is to a: "floor", "reference plugin", "base"
	// Targets on a's CPU time over b's (0: reported only): per byte and per datagram.
	// The throughput targets of the rounds become costs: a path that moves at least
	// 0.95 of its floor's bytes for the same CPU costs at most 1/0.95 per byte.
	maxByte, maxPacket float64
	// The CPU per GB target of the rounds, per byte too (0: none).
	maxByteCPU float64
}

// tpPairsOf lists the comparisons of the paths: a podnet path against its floor and its
// reference plugin's path, and a path of a big (or -cmp) node against the same path of
// the base node only (the floor and reference comparisons of the base node's path stand
// for it; what differs is the node). Targets as issue 13's: throughput at least 0.95 of
// the floor and at least the reference plugin's, CPU per GB within 10% of the floor,
// and no per-packet growth with the extra endpoints (5% here: the quartiles' width).
func tpPairsOf(paths []tpPath) []tpPair {
	var out []tpPair
	for _, p := range paths {
		switch {
		case p.compare:
			out = append(out, tpPair{a: p.name, b: p.base, why: "base"})
		case p.base != "":
			out = append(out, tpPair{a: p.name, b: p.base, why: "base", maxByteCPU: tpCPUSlack, maxPacket: 1 / 0.95})
		default:
			if p.floor != "" {
				pr := tpPair{a: p.name, b: p.floor, why: "floor", maxByteCPU: tpCPUSlack}
				if p.target > 0 {
					pr.maxByte = 1 / p.target
				}
				out = append(out, pr)
			}
			if p.ref != "" {
				out = append(out, tpPair{a: p.name, b: p.ref, why: "reference plugin", maxByte: 1})
			}
		}
	}
	return out
}

// tpDuel is one round of a pair: each path's CPU time per byte of its stream (its
// sending and receiving threads) and per datagram (its sending thread), in ns.
type tpDuel struct {
	aByte, bByte, aPacket, bPacket float64
}

// measureAtOnce runs `rounds` rounds of every pair whose paths have flows and no error:
// the two streams at once for d, then the two datagram floods at once. The pairs' order
// turns by one each round, like the rounds of the paths.
func measureAtOnce(ctx context.Context, flows map[string]flow, pairs []tpPair, rounds int, d time.Duration, errs map[string]error) (map[tpPair][]tpDuel, map[tpPair]error) {
	duels, failed := map[tpPair][]tpDuel{}, map[tpPair]error{}
	var todo []tpPair
	for _, p := range pairs {
		_, okA := flows[p.a]
		_, okB := flows[p.b]
		if okA && okB && errs[p.a] == nil && errs[p.b] == nil {
			todo = append(todo, p)
		}
	}
	for round := range rounds {
		for k := range todo {
			p := todo[(k+round)%len(todo)]
			if failed[p] != nil || ctx.Err() != nil {
				continue
			}
			fmt.Fprintf(os.Stderr, "podnet-bench: throughput at once %s / %s, run %d/%d\n", p.a, p.b, round+1, rounds)
			fa, fb, err := apart(flows[p.a], flows[p.b])
			var du tpDuel
			if err == nil {
				var ra, rb tpRun
				ra, rb, err = both(fa, fb, func(f flow) (tpRun, error) { return stream(ctx, f, d) })
				du.aByte, du.bByte = ra.byteCPU(), rb.byteCPU()
			}
			if err == nil {
				var ra, rb ppsRun
				ra, rb, err = both(fa, fb, func(f flow) (ppsRun, error) { return packetRate(ctx, f, tpPPSDuration) })
				du.aPacket, du.bPacket = ra.packetCPU(), rb.packetCPU()
			}
			if err != nil {
				failed[p] = fmt.Errorf("run %d: %w", round+1, err)
				continue
			}
			duels[p] = append(duels[p], du)
		}
	}
	return duels, failed
}

// both runs fn on fa and fb at the same time.
func both[T any](fa, fb flow, fn func(flow) (T, error)) (a, b T, err error) {
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() { a, errA = fn(fa) })
	wg.Go(func() { b, errB = fn(fb) })
	wg.Wait()
	return a, b, errors.Join(errA, errB)
}

// apart gives two flows that end in the same server namespace at the same address and
// port (an outside client dialing a pod directly and through its published port) their
// own port: the flow whose client dials the server's address directly moves to the next
// port.
func apart(fa, fb flow) (flow, flow, error) {
	if fa.server != fb.server || fa.listen != fb.listen {
		return fa, fb, nil
	}
	next := func(f flow) flow {
		p := netip.AddrPortFrom(f.listen.Addr(), f.listen.Port()+1)
		f.listen, f.dial = p, p
		return f
	}
	switch {
	case fb.listen == fb.dial:
		return fa, next(fb), nil
	case fa.listen == fa.dial:
		return next(fa), fb, nil
	}
	return fa, fb, fmt.Errorf("both flows need %s in the same namespace", fa.listen)
}

// duelRatios are the per-round ratios get(a) / get(b), sorted.
func duelRatios(ds []tpDuel, get func(tpDuel) (a, b float64)) []float64 {
	var rs []float64
	for _, d := range ds {
		if a, b := get(d); a > 0 && b > 0 {
			rs = append(rs, a/b)
		}
	}
	slices.Sort(rs)
	return rs
}

// quartiles are the first quartile, the median and the third quartile of sorted (NaN
// for none).
func quartiles(sorted []float64) (q1, q2, q3 float64) {
	if len(sorted) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	return quantile(sorted, 0.25), quantile(sorted, 0.5), quantile(sorted, 0.75)
}

// printAtOnce prints the pairs' table: the median over the rounds of a's CPU time over
// b's, per byte and per datagram, with the quartiles of those ratios, and the targets.
func printAtOnce(w io.Writer, rounds int, d time.Duration, res tpResult) {
	if len(res.pairs) == 0 {
		return
	}
	label := map[string]string{}
	for _, p := range tpPaths {
		label[p.name] = p.label
	}
	fmt.Fprintf(w, "Paths at once (these ratios carry the targets): the two paths of a comparison run at the same time, %d rounds of a %v stream each, then %v of %d-byte datagrams each, both senders pinned to CPU %d and both receivers to CPU %d; CPU time of each path's own threads (RUSAGE_THREAD, with the softirq work done in their context: on veth the packet's whole path) per byte of the stream (sender and receiver) and per datagram (sender), as a / b; median over the rounds and its quartiles. A throughput target of 0.95 becomes at most 1/0.95 = 1.05 of the CPU per byte\n\n",
		rounds, d, tpPPSDuration, ppsSize, senderCPU, receiverCPU)
	fmt.Fprintf(w, "| a | b | CPU per byte a / b | quartiles | CPU per packet a / b | quartiles | target | rounds |\n")
	fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|---|---:|\n")
	for _, p := range res.pairs {
		ds := res.duels[p]
		b1, b2, b3 := quartiles(duelRatios(ds, func(d tpDuel) (float64, float64) { return d.aByte, d.bByte }))
		k1, k2, k3 := quartiles(duelRatios(ds, func(d tpDuel) (float64, float64) { return d.aPacket, d.bPacket }))
		var targets []string
		judge := func(what string, r, limit float64) {
			if limit > 0 {
				targets = append(targets, fmt.Sprintf("%s <= %.2f%s", what, limit, atOnceVerdict(r, limit)))
			}
		}
		judge("per byte", b2, p.maxByte)
		judge("per byte (CPU per GB)", b2, p.maxByteCPU)
		judge("per packet", k2, p.maxPacket)
		target := "reported"
		if len(targets) > 0 {
			target = strings.Join(targets, "; ")
		}
		if err := res.pairErrs[p]; err != nil {
			target += "; failed: " + cell(err.Error())
		}
		fmt.Fprintf(w, "| %s | %s (%s) | %s | %s - %s | %s | %s - %s | %s | %d |\n", label[p.a], label[p.b], p.why,
			ratioText(b2), ratioText(b1), ratioText(b3), ratioText(k2), ratioText(k1), ratioText(k3), target, len(ds))
	}
	fmt.Fprintln(w)
}

// atOnceVerdict is ", meets target" when r is at most limit.
func atOnceVerdict(r, limit float64) string {
	if math.IsNaN(r) {
		return ""
	}
	return verdict(r <= limit)
}
