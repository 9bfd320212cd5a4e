package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The ports section: how ADD of a pod that publishes a port slows down once many
// mappings exist. Each pod publishes one TCP port through the runtime's portMappings
// capability (except in the rows that tell the cost of the pods alone). Timed: ADD of pods 0..sample-1 (0 to sample-1 mappings exist), then,
// after pods up to `existing`-1 were added (the fill, timed as a whole only) and the
// machine has settled (the kernel's background work for a thousand new links, the
// agent's own), ADD of the next `sample` pods (`existing` mappings and more exist). There is no DEL:
// removing the node namespace at the end removes every rule and link at once.
//
// Every pod has its own sandbox namespace on one bridge, and a Linux bridge takes at
// most 1023 ports (BR_MAX_PORTS), which bounds existing+sample.

// portsRows are the rows of the ports table: the setup section's runners, with
// publish where the row publishes ports. The rows without ports tell how much of the
// growth comes from the number of pods (links on one bridge, records in the store)
// rather than from the number of mappings.
var portsRows = []implementation{
	{"podnet", "podnet (podnet-cni, portMappings capability)", func(bin string) runner { return &podnet{bin: bin, publish: true} }},
	{"reference", "reference (bridge + host-local + portmap)", func(bin string) runner { return &reference{publish: true, bin: bin} }},
	{"podnet-noports", "podnet, same pods without ports", func(bin string) runner { return &podnet{bin: bin} }},
	{"floor", "netlink floor, same pods without ports", func(string) runner { return &floor{} }},
}

const (
	portsHostPortBase = 20000
	maxBridgePorts    = 1023
	portsTarget       = 1.2 // podnet: ADD median with `existing` mappings / first ADDs
)

// podPorts is the capability argument of pod i: hostPort 20000+i to its port 80.
func podPorts(i int) map[string]any {
	return map[string]any{"portMappings": []map[string]any{
		{"hostPort": portsHostPortBase + i, "containerPort": 80, "protocol": "tcp"},
	}}
}

// portsResult is one row of the ports table.
type portsResult struct {
	first, loaded summary
	fill          time.Duration // wall time of the untimed ADDs between the two samples
	// doctor is `podnet doctor` on the node once every pod is added, findings what it
	// reported (rows that are diagnosable only).
	doctor      summary
	findings    string
	unavailable string // Setup failed: why
	err         error
}

// measurePorts runs one runner through the ports scenario on its own testbed of
// existing+sample sandboxes.
func measurePorts(ctx context.Context, prefix, label string, r runner, sample, existing int) (res portsResult) {
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "podnet-bench: ports %s: %s\n", label, fmt.Sprintf(format, args...))
	}
	progress("creating %d sandbox namespaces", existing+sample)
	tb, tearDown, unavailable, err := setUp(ctx, prefix, existing+sample, r)
	defer func() { res.err = errors.Join(res.err, tearDown()) }()
	if err != nil || unavailable != "" {
		res.err, res.unavailable = err, unavailable
		return res
	}

	progress("ADD pods 0-%d (timed)", sample-1)
	first, err := timeEach(ctx, podRange(0, sample), r.Add, "ADD")
	if err != nil {
		res.err = err
		return res
	}
	res.first = summarize(first)
	start := time.Now()
	for from := sample; from < existing; from += 250 {
		to := min(from+250, existing)
		progress("ADD pods %d-%d (fill)", from, to-1)
		if _, err := timeEach(ctx, podRange(from, to), r.Add, "ADD"); err != nil {
			res.err = err
			return res
		}
	}
	res.fill = time.Since(start)
	settle(ctx)
	progress("ADD pods %d-%d (timed)", existing, existing+sample-1)
	loaded, err := timeEach(ctx, podRange(existing, existing+sample), r.Add, "ADD")
	if err != nil {
		res.err = err
		return res
	}
	res.loaded = summarize(loaded)
	if d, ok := r.(diagnosable); ok && d.doctorBin() != "" {
		settle(ctx) // the kernel's background work for a thousand new links
		progress("podnet doctor on the node (%d runs)", doctorRuns)
		res.doctor, res.findings, res.err = timeDoctor(ctx, d.doctorBin(), tb, d.agentSocket())
	}
	return res
}

// printPorts prints the ports table and the ratios.
func printPorts(w io.Writer, sample, existing int, results map[string]portsResult) {
	fmt.Fprintf(w, "### ADD with published ports\n\n")
	fmt.Fprintf(w, "each pod publishes one TCP port (runtimeConfig.portMappings, hostPort %d+i -> 80), one ADD at a time; "+
		"median and p90 of pods 0-%d (0-%d mappings exist) and of pods %d-%d (%d or more mappings exist, where the row publishes ports); no DEL (the node namespace is removed whole)\n\n",
		portsHostPortBase, sample-1, sample-1, existing, existing+sample-1, existing)
	fmt.Fprintf(w, "| | first %d ADD median | p90 | ADD median from pod %d | p90 | ratio | target | fill: %d ADD wall |\n", sample, existing, existing-sample)
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---|---:|\n")
	for _, row := range portsRows {
		res, ok := results[row.name]
		target := "reported"
		if row.name == "podnet" {
			target = fmt.Sprintf("<= %g", portsTarget)
		}
		switch {
		case !ok:
			fmt.Fprintf(w, "| %s | not run | | | | | %s | |\n", row.label, target)
		case res.unavailable != "":
			fmt.Fprintf(w, "| %s | not available: %s | | | | | %s | |\n", row.label, cell(res.unavailable), target)
		case res.first.n < sample || res.loaded.n < sample:
			fmt.Fprintf(w, "| %s | failed: %s | | | | | %s | |\n", row.label, cell(fmt.Sprint(res.err)), target)
		default:
			r := float64(res.loaded.median) / float64(res.first.median)
			if row.name == "podnet" && r <= portsTarget {
				target += ", meets target"
			} else if row.name == "podnet" {
				target += ", MISSES target"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.2f | %s | %.1f s |\n", row.label,
				ms(res.first.median), ms(res.first.p90), ms(res.loaded.median), ms(res.loaded.p90), r, target, res.fill.Seconds())
		}
	}
	fmt.Fprintln(w)
	p, ref := results["podnet"], results["reference"]
	if p.loaded.n > 0 && ref.loaded.n > 0 {
		fmt.Fprintf(w, "- podnet ADD median / reference: first pods %.2f, with %d mappings %.2f\n",
			float64(p.first.median)/float64(ref.first.median), existing, float64(p.loaded.median)/float64(ref.loaded.median))
	}
	var growth []string
	for _, row := range portsRows {
		if res := results[row.name]; res.loaded.n > 0 && res.first.n > 0 {
			growth = append(growth, fmt.Sprintf("%s %+.2f ms", row.name, float64(res.loaded.median-res.first.median)/float64(time.Millisecond)))
		}
	}
	if len(growth) > 0 {
		fmt.Fprintf(w, "- ADD median growth from the first pods to pod %d: %s\n", existing, strings.Join(growth, ", "))
	}
	fmt.Fprintln(w)
}

// The doctor figure: `podnet doctor` on the ports section's nodes once every pod is
// added (existing+sample endpoints with their published ports), on podnet's node with
// the agent's records and on the reference plugins' node, which podnet never touched.
// The target (issue 10): within 1 s on a node with 1,000 endpoints.

const (
	doctorRuns   = 5
	doctorTarget = time.Second
)

// diagnosable is a row whose node the doctor reads: the podnet binary that runs it, and
// the socket of the node's podnet agent ("" for a node without one).
type diagnosable interface {
	doctorBin() string
	agentSocket() string
}

// timeDoctor runs `podnet doctor --netns NODE -o json` doctorRuns times, as a person would
// (the exec included), and returns the distribution of its wall time and the classes it
// reported the last time.
func timeDoctor(ctx context.Context, bin string, tb *testbed, socket string) (summary, string, error) {
	if socket == "" {
		socket = filepath.Join(tb.dir, "no-agent.sock") // not the machine's own agent
	}
	var times []time.Duration
	var findings string
	for range doctorRuns {
		if err := ctx.Err(); err != nil {
			return summary{}, "", err
		}
		cmd := exec.CommandContext(ctx, bin, "doctor", "--netns", tb.nodePath, "--socket", socket, "--output", "json")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		start := time.Now()
		err := cmd.Run()
		times = append(times, time.Since(start))
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			return summary{}, "", fmt.Errorf("podnet doctor: %w", err)
		}
		var rep struct {
			Findings []struct{ Class, Severity string }
		}
		if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
			return summary{}, "", fmt.Errorf("podnet doctor: %v: %s", jerr, oneLine(errOut.String()))
		}
		var fs []string
		for _, f := range rep.Findings {
			fs = append(fs, f.Severity+" "+f.Class)
		}
		findings = "none"
		if len(fs) > 0 {
			findings = strings.Join(fs, ", ")
		}
	}
	return summarize(times), findings, nil
}

// printDoctor prints the doctor's figures of the ports section's nodes.
func printDoctor(w io.Writer, endpoints int, results map[string]portsResult) {
	fmt.Fprintf(w, "### podnet doctor on a node with %d endpoints\n\n", endpoints)
	fmt.Fprintf(w, "`podnet doctor --netns NODE -o json` exec'd %d times on the ports section's nodes once every pod is added (each pod publishes a port); on podnet's node it also reads the agent's records\n\n", doctorRuns)
	fmt.Fprintf(w, "| node | doctor median | p90 | target | findings |\n|---|---:|---:|---|---|\n")
	for _, row := range portsRows {
		res, ok := results[row.name]
		if !ok || res.doctor.n == 0 {
			continue
		}
		target := "reported"
		if row.name == "podnet" {
			target = fmt.Sprintf("< %v", doctorTarget)
			if res.doctor.median < doctorTarget {
				target += ", meets target"
			} else {
				target += ", MISSES target"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", row.label, ms(res.doctor.median), ms(res.doctor.p90), target, cell(res.findings))
	}
	fmt.Fprintln(w)
}
