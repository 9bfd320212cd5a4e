// Command podnet-bench measures pod setup latency, in one run and side by side:
// podnet (agent + podnet-cni), Debian's reference CNI plugins (bridge + host-local),
// and the same kernel work done directly with netlink (the floor). It prints a
// markdown table and the ratios that podnet is held to.
//
// Every kernel object lives in network namespaces that the benchmark creates under
// /run/netns and removes afterwards, also on failure and on ctrl-C; the namespace the
// benchmark is started in is never changed, and the benchmark checks that its list of
// links is the same at the end. Needs root. Run it as `bash bench/bench.sh [flags]`.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// implementation is one row of the table.
type implementation struct {
	name  string // as in -only
	label string // as in the table
	new   func(binDir string) runner
}

var implementations = []implementation{
	{"podnet", "podnet", func(bin string) runner { return &podnet{bin: bin} }},
	{"reference", "reference", func(string) runner { return &reference{} }},
	{"floor", "netlink floor", func(string) runner { return &floor{} }},
}

func main() {
	os.Exit(run())
}

func run() int {
	pods := flag.Int("pods", 100, "pods set up and torn down one after another")
	concurrent := flag.Int("concurrent", 20, "pods set up at once")
	only := flag.String("only", "reference,podnet,floor", "comma-separated implementations to run")
	bin := flag.String("bin", "./bin", "directory holding podnet and podnet-cni")
	flag.Parse()

	selected, err := selectImplementations(*only)
	if err == nil && (*pods < 1 || *concurrent < 1) {
		err = errors.New("-pods and -concurrent must be at least 1")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "podnet-bench:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "podnet-bench: needs root (network namespaces)")
		return 1
	}
	binDir, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "podnet-bench:", err)
		return 1
	}

	// The first ctrl-C or SIGTERM stops the run between two pod operations, and the
	// cleanup still runs; a second one kills at once.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigc
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		fmt.Fprintln(os.Stderr, "podnet-bench: interrupted, cleaning up (signal again to abort)")
		cancel()
	}()

	before, err := rootLinks()
	if err != nil {
		fmt.Fprintln(os.Stderr, "podnet-bench:", err)
		return 1
	}
	prefix := fmt.Sprintf("pnbench%d", os.Getpid())
	started, load := time.Now(), loadAverage()
	results := map[string]result{}
	for _, im := range selected {
		fmt.Fprintf(os.Stderr, "podnet-bench: running %s (%d pods, %d concurrent)\n", im.label, *pods, *concurrent)
		results[im.name] = measure(ctx, prefix+"-"+im.name, im.new(binDir), *pods, *concurrent)
		if ctx.Err() != nil {
			break
		}
	}

	failed := false
	for _, im := range selected {
		if res, ok := results[im.name]; ok && res.err != nil {
			fmt.Fprintf(os.Stderr, "podnet-bench: %s: %v\n", im.label, res.err)
			failed = true
		}
	}
	if left := namedNetnsWithPrefix(prefix); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "podnet-bench: namespaces left behind: %s\n", strings.Join(left, " "))
		failed = true
	}
	after, err := rootLinks()
	if err != nil || !slices.Equal(before, after) {
		fmt.Fprintf(os.Stderr, "podnet-bench: links of the root netns changed during the run (err %v):\nbefore %v\nafter  %v\n", err, before, after)
		failed = true
	}
	if ctx.Err() != nil {
		return 130
	}

	printReport(os.Stdout, started, load, *pods, *concurrent, selected, results)
	if failed {
		return 1
	}
	return 0
}

func selectImplementations(only string) ([]implementation, error) {
	want := map[string]bool{}
	for _, name := range strings.Split(only, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if !slices.ContainsFunc(implementations, func(im implementation) bool { return im.name == name }) {
			return nil, fmt.Errorf("-only: unknown implementation %q (want reference, podnet, floor)", name)
		}
		want[name] = true
	}
	var selected []implementation
	for _, im := range implementations {
		if want[im.name] {
			selected = append(selected, im)
		}
	}
	if len(selected) == 0 {
		return nil, errors.New("-only: no implementation selected")
	}
	return selected, nil
}

// rootLinks lists the links of the namespace the benchmark was started in (that of
// the process's main thread), as "index:name" sorted.
func rootLinks() ([]string, error) {
	ns, err := netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open root netns: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in root netns: %w", err)
	}
	defer h.Close()
	var links []netlink.Link
	for range 5 {
		if links, err = h.LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list root netns links: %w", err)
	}
	var out []string
	for _, l := range links {
		out = append(out, fmt.Sprintf("%d:%s", l.Attrs().Index, l.Attrs().Name))
	}
	slices.Sort(out)
	return out, nil
}

func printReport(w io.Writer, started time.Time, load string, pods, concurrent int, selected []implementation, results map[string]result) {
	fmt.Fprintf(w, "## podnet pod setup benchmark\n\n")
	fmt.Fprintf(w, "%s; kernel %s; %d CPUs (%s); %s\n", started.Format("2006-01-02 15:04 MST"), kernelRelease(), runtime.NumCPU(), cpuModel(), runtime.Version())
	fmt.Fprintf(w, "load average at start: %s (other work on the machine skews the figures)\n", load)
	fmt.Fprintf(w, "reference: containernetworking-plugins %s, iptables %s\n", debianVersion("containernetworking-plugins"), iptablesBackend())
	fmt.Fprintf(w, "%d pods ADD then DEL one at a time (median, p90 per call), then %d ADD at once (wall time)\n\n", pods, concurrent)

	fmt.Fprintf(w, "| | ADD median | ADD p90 | DEL median | DEL p90 | %d concurrent ADD wall |\n", concurrent)
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|\n")
	for _, im := range selected {
		res, ok := results[im.name]
		switch {
		case !ok:
			fmt.Fprintf(w, "| %s | not run | | | | |\n", im.label)
		case res.unavailable != "":
			fmt.Fprintf(w, "| %s | not available: %s | | | | |\n", im.label, cell(res.unavailable))
		case res.add.n < pods || res.del.n < pods || res.wall == 0:
			fmt.Fprintf(w, "| %s | failed: %s | | | | |\n", im.label, cell(fmt.Sprint(res.err)))
		default:
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", im.label,
				ms(res.add.median), ms(res.add.p90), ms(res.del.median), ms(res.del.p90), ms(res.wall))
		}
	}
	fmt.Fprintln(w)

	ratio := func(what string, a, b summary, target float64) {
		if a.n == 0 || b.n == 0 {
			fmt.Fprintf(w, "- %s: n/a (target <= %g)\n", what, target)
			return
		}
		r := float64(a.median) / float64(b.median)
		verdict := "meets target"
		if r > target {
			verdict = "MISSES target"
		}
		fmt.Fprintf(w, "- %s: %.2f (target <= %g, %s)\n", what, r, target, verdict)
	}
	p, ref, fl := results["podnet"], results["reference"], results["floor"]
	ratio("podnet ADD median / reference", p.add, ref.add, 0.2)
	ratio("podnet ADD median / floor", p.add, fl.add, 3)
	ratio("podnet DEL median / reference", p.del, ref.del, 0.2)
	ratio("podnet DEL median / floor", p.del, fl.del, 3)
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// cell makes text safe for one markdown table cell.
func cell(s string) string {
	return strings.ReplaceAll(oneLine(s), "|", "\\|")
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// loadAverage is the 1, 5 and 15 minute load average.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func cpuModel() string {
	if v := fieldOf("/proc/cpuinfo", "model name", ":"); v != "" {
		return v
	}
	return "unknown model"
}

// debianVersion reads an installed package's version from dpkg's status file.
func debianVersion(pkg string) string {
	f, err := os.Open("/var/lib/dpkg/status")
	if err != nil {
		return "(version unknown)"
	}
	defer f.Close()
	found := false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			found = false
		case line == "Package: "+pkg:
			found = true
		case found && strings.HasPrefix(line, "Version: "):
			return strings.TrimPrefix(line, "Version: ")
		}
	}
	return "(not installed)"
}

// iptablesBackend tells which iptables the reference plugin's ipMasq execs, from the
// alternatives symlink (the binary itself is not run).
func iptablesBackend() string {
	target, err := os.Readlink("/etc/alternatives/iptables")
	if err != nil {
		return "(not installed)"
	}
	return filepath.Base(target)
}

// fieldOf returns the value of the first "key<sep>value" line of a file.
func fieldOf(path, key, sep string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
