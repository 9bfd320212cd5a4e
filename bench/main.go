// Command podnet-bench measures podnet in one run and side by side, and prints
// markdown tables with the ratios podnet is held to:
//
//   - setup: pod setup latency of podnet (agent + podnet-cni; and the agent's API alone,
//     without the plugin's exec), Debian's reference CNI plugins (bridge + host-local)
//     and the same kernel work done directly with netlink (the floor), the rows
//     interleaved pod by pod; where podnet's ADD time goes; how long each DEL's work
//     goes on after its reply;
//   - throughput: one TCP stream, request/response and small datagrams through podnet's
//     bridge and routed networks and through a published port (DNAT, proxy mode),
//     against the same topology without rules and the reference plugins, in rounds; then
//     each comparison with both paths at once, by the CPU time per byte and per datagram
//     (see atonce.go);
//   - ports: ADD latency of a pod publishing a port once 1,000 mappings exist, against
//     the first ADDs, for podnet and the reference chain bridge + host-local + portmap;
//   - dns: queries per second and latency (dnsperf) of podnet's cluster DNS server and of
//     CoreDNS on the same zone (10,000 services, 1,000 headless), for service lookups and
//     for a pod's search-list walk to an external name (one round trip with autopath);
//   - services: connection setup to a service VIP with 10 and with 10,000 services, and
//     the time to create them through the agent's API;
//   - policy: with 100 network policies, the time until traffic follows a policy change
//     or a label change with 10 and with 5,000 endpoints, TCP connect latency with and
//     without policies (between bridged pods and between routed ones), and the rule count of podnet's tables (see policy.go);
//   - cluster: cross-node throughput (vxlan, direct) against the same kernel objects
//     without podnet, convergence with 10 and 20 nodes, etcd requests per ADD, ADD on
//     etcd against bbolt (see cluster.go);
//   - kube: the time from a Service or EndpointSlice change in a real kube-apiserver until
//     traffic follows it, with 100 and with 5,000 services, podnet (controller and agent)
//     against kube-proxy's nftables mode measured at the same time (see kube.go). Not in
//     the default run (it takes 5-6 minutes, most of it writing 5,000 services through
//     the API server): -only kube.
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

// implementation is one row of the setup table (and, with publish, of the ports table).
type implementation struct {
	name  string // as in -only
	label string // as in the table
	new   func(binDir string) runner
}

var implementations = []implementation{
	{"podnet", "podnet", func(bin string) runner { return &podnet{bin: bin} }},
	{"podnet-api", "podnet, agent API without the plugin", func(bin string) runner { return &podnet{bin: bin, direct: true} }},
	{"reference", "reference", func(string) runner { return &reference{} }},
	{"floor", "netlink floor", func(string) runner { return &floor{} }},
}

// Section names for -only.
const (
	sectionSetup      = "setup"
	sectionThroughput = "throughput"
	sectionPorts      = "ports"
	sectionDNS        = "dns"
	sectionServices   = "services"
	sectionPolicy     = "policy"
	sectionCluster    = "cluster"
	sectionKube       = "kube"
)

// defaultSections is what runs without -only (all but kube).
const defaultSections = "setup,throughput,ports,dns,services,policy,cluster"

// selection is what -only asked for.
type selection struct {
	setup      []implementation // rows of the setup section; none: section not run
	throughput bool
	ports      bool
	dns        bool
	services   bool
	policy     bool
	cluster    bool
	kube       bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == serveDNSCommand {
		os.Exit(serveDNS(os.Args[2:])) // the dns section's podnet server, a child process
	}
	os.Exit(run())
}

func run() int {
	pods := flag.Int("pods", 100, "setup: pods set up and torn down one after another")
	concurrent := flag.Int("concurrent", 20, "setup: pods set up at once")
	runs := flag.Int("runs", 20, "throughput, cluster: runs per path (the median is reported)")
	duration := flag.Duration("duration", time.Second, "throughput, cluster: length of one stream")
	tpOnly := flag.String("tp-paths", "", "throughput: comma-separated paths to time (default: all; see the table for their names)")
	tpEndpoints := flag.Int("tp-endpoints", 1000, "throughput: extra endpoints, each publishing a port, on the big node (0: no big node)")
	tpAtOnce := flag.Int("tp-at-once", 12, "throughput: rounds of the comparisons run at once (two paths at the same time on the same CPUs; 0: none)")
	tpCompare := flag.String("tp-compare", "", "throughput: a directory holding another podnet (an A/B run): a node of its agent runs the bridge, routed and dnat paths beside this one's, in the same rounds (rows bridge-cmp, routed-cmp, dnat-cmp)")
	mappings := flag.Int("mappings", 1000, "ports: mappings that exist when the second sample is timed")
	sample := flag.Int("sample", 20, "ports: ADDs timed at the start and with -mappings mappings")
	dnsRuns := flag.Int("dns-runs", 3, "dns: runs per row (the median is reported)")
	dnsDuration := flag.Duration("dns-duration", 8*time.Second, "dns: length of one dnsperf run")
	services := flag.Int("services", 10000, "services: services defined when the second sample of connections is timed")
	connections := flag.Int("connections", 500, "services: connections to VIPs per sample")
	polEndpoints := flag.Int("policy-endpoints", 5000, "policy: endpoints of the large testbed (the small one has 10)")
	polRounds := flag.Int("policy-rounds", 20, "policy: times each change is made and undone per testbed")
	polConns := flag.Int("policy-connections", 2000, "policy: connects per testbed and driver (bridge, routed) for the per-packet cost")
	kubeServices := flag.Int("kube-services", 5000, "kube: services defined when the second sample of changes is timed (the first has 100)")
	kubeRounds := flag.Int("kube-rounds", 10, "kube: rounds of changes (create, move the backend) per number of services")
	kubeAlone := flag.Bool("kube-alone", false, "kube: podnet alone, without kube-proxy's node (whose syncs compete for the CPUs during podnet's changes)")
	only := flag.String("only", defaultSections,
		"comma-separated sections (setup, throughput, ports, dns, services, policy, cluster, kube) and setup rows (reference, podnet, podnet-api, floor: the setup section with only those rows)")
	bin := flag.String("bin", "./bin", "directory holding podnet and podnet-cni")
	flag.Parse()

	sel, err := parseOnly(*only)
	switch {
	case err != nil:
	case *pods < 1 || *concurrent < 1:
		err = errors.New("-pods and -concurrent must be at least 1")
	case *runs < 1 || *duration < 100*time.Millisecond || *tpAtOnce < 0:
		err = errors.New("-runs must be at least 1, -duration at least 100ms and -tp-at-once at least 0")
	case *tpEndpoints < 0 || *tpEndpoints > tpMaxExtra:
		err = fmt.Errorf("-tp-endpoints must be between 0 and %d (the addresses of the big node's networks)", tpMaxExtra)
	case *sample < 1 || *mappings < *sample || *mappings+*sample > maxBridgePorts:
		err = fmt.Errorf("-sample must be at least 1, -mappings at least -sample, and -mappings + -sample at most %d (the ports of one Linux bridge)", maxBridgePorts)
	case *dnsRuns < 1 || *dnsDuration < time.Second:
		err = errors.New("-dns-runs must be at least 1 and -dns-duration at least 1s")
	case *services < svcFew || *services > maxServices || *connections < 1:
		err = fmt.Errorf("-services must be between %d and %d, -connections at least 1", svcFew, maxServices)
	case *polEndpoints < polFew || *polEndpoints > polMaxNetworks*polPerNetwork || *polRounds < 1 || *polConns < 1:
		err = fmt.Errorf("-policy-endpoints must be between %d and %d, -policy-rounds and -policy-connections at least 1", polFew, polMaxNetworks*polPerNetwork)
	case *kubeServices <= kubeFew || *kubeServices > maxServices || *kubeRounds < 1 || *kubeRounds > kubeMaxRounds:
		err = fmt.Errorf("-kube-services must be between %d and %d, -kube-rounds between 1 and %d", kubeFew+1, maxServices, kubeMaxRounds)
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
	if *tpCompare != "" {
		if *tpCompare, err = filepath.Abs(*tpCompare); err == nil {
			_, err = os.Stat(filepath.Join(*tpCompare, "podnet"))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "podnet-bench: -tp-compare:", err)
			return 2
		}
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
	failed := false
	report := func(what string, err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "podnet-bench: %s: %v\n", what, err)
			failed = true
		}
	}

	var setup map[string]result
	var parts addParts
	if len(sel.setup) > 0 && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "podnet-bench: setup (%d rows interleaved, %d pods, %d concurrent)\n", len(sel.setup), *pods, *concurrent)
		setup, parts = measureSetup(ctx, prefix+"-setup", sel.setup, binDir, *pods, *concurrent)
		for _, im := range sel.setup {
			report("setup "+im.label, setup[im.name].err)
		}
		report("setup: parts of an ADD", parts.err)
	}
	var tp tpResult
	if sel.throughput && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "podnet-bench: throughput (%d runs of %v per path)\n", *runs, *duration)
		tp = measureThroughput(ctx, prefix+"-tp", binDir, *runs, *tpAtOnce, *duration, *tpEndpoints, *tpCompare, *tpOnly)
		report("throughput", tp.err)
		for _, p := range tpPaths {
			report("throughput "+p.name, tp.errs[p.name])
		}
	}
	ports := map[string]portsResult{}
	for _, row := range portsRows {
		if !sel.ports || ctx.Err() != nil {
			break
		}
		ports[row.name] = measurePorts(ctx, prefix+"-ports-"+row.name, row.name, row.new(binDir), *sample, *mappings)
		report("ports "+row.label, ports[row.name].err)
	}

	var dnsRes dnsResult
	if sel.dns && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "podnet-bench: dns (%d runs of %v per row)\n", *dnsRuns, *dnsDuration)
		dnsRes = measureDNS(ctx, prefix+"-dns", binDir, *dnsRuns, *dnsDuration)
		report("dns", dnsRes.err)
		for _, row := range dnsRows {
			report("dns "+row.name, dnsRes.errs[row.name])
		}
	}
	var svcRes svcResult
	if sel.services && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "podnet-bench: services (%d services, %d connections per sample)\n", *services, *connections)
		svcRes = measureServices(ctx, prefix+"-svc", binDir, *services, *connections)
		report("services", svcRes.err)
	}

	var polRes polResult
	if sel.policy && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "podnet-bench: policy (100 policies; %d and %d endpoints; %d rounds of changes, %d connects per testbed and driver)\n", polFew, *polEndpoints, *polRounds, *polConns)
		polRes = measurePolicy(ctx, prefix+"-pol", binDir, *polEndpoints, *polRounds, *polConns)
		report("policy", polRes.err)
	}

	var clusterRes clusterResult
	if sel.cluster && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "podnet-bench: cluster (%d runs of %v per throughput row; convergence with %v nodes)\n", *runs, *duration, convergeSizes)
		clusterRes = measureCluster(ctx, binDir, *runs, *duration)
		report("cluster", clusterRes.err)
		for what, err := range clusterRes.errs {
			report("cluster "+what, err)
		}
	}

	var kubeRes kubeResult
	if sel.kube && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "podnet-bench: kube (%d and %d services, %d rounds of changes each)\n", kubeFew, *kubeServices, *kubeRounds)
		kubeRes = measureKube(ctx, binDir, *kubeServices, *kubeRounds, *kubeAlone)
		report("kube", kubeRes.err)
	}

	if left := namedNetnsWithPrefix(prefix); len(left) > 0 {
		report("namespaces left behind", errors.New(strings.Join(left, " ")))
	}
	after, err := rootLinks()
	if err != nil || !slices.Equal(before, after) {
		report("links of the root netns changed during the run", fmt.Errorf("(err %v):\nbefore %v\nafter  %v", err, before, after))
	}
	if ctx.Err() != nil {
		return 130
	}

	w := os.Stdout
	printHeader(w, started, load)
	if len(sel.setup) > 0 {
		printSetup(w, *pods, *concurrent, sel.setup, setup, parts)
	}
	if sel.throughput {
		printThroughput(w, *runs, *tpAtOnce, *duration, tp)
	}
	if sel.ports {
		printPorts(w, *sample, *mappings, ports)
		printDoctor(w, *mappings+*sample, ports)
	}
	if sel.dns {
		printDNS(w, *dnsRuns, *dnsDuration, dnsRes)
	}
	if sel.services {
		printServices(w, *services, *connections, svcRes)
	}
	if sel.policy {
		printPolicy(w, *polRounds, *polConns, polRes)
	}
	if sel.cluster {
		printCluster(w, *runs, *duration, clusterRes)
	}
	if sel.kube {
		printKube(w, kubeRes)
	}
	if failed {
		return 1
	}
	return 0
}

// parseOnly reads -only: section names, and setup rows that select the setup section
// with only those rows.
func parseOnly(only string) (selection, error) {
	var sel selection
	rows := map[string]bool{}
	for _, name := range strings.Split(only, ",") {
		switch name = strings.TrimSpace(name); name {
		case "":
		case sectionSetup:
			for _, im := range implementations {
				rows[im.name] = true
			}
		case sectionThroughput:
			sel.throughput = true
		case sectionPorts:
			sel.ports = true
		case sectionDNS:
			sel.dns = true
		case sectionServices:
			sel.services = true
		case sectionPolicy:
			sel.policy = true
		case sectionCluster:
			sel.cluster = true
		case sectionKube:
			sel.kube = true
		default:
			if !slices.ContainsFunc(implementations, func(im implementation) bool { return im.name == name }) {
				return selection{}, fmt.Errorf("-only: unknown section or setup row %q (want setup, throughput, ports, dns, services, policy, cluster, kube, reference, podnet, podnet-api, floor)", name)
			}
			rows[name] = true
		}
	}
	for _, im := range implementations {
		if rows[im.name] {
			sel.setup = append(sel.setup, im)
		}
	}
	if len(sel.setup) == 0 && !sel.throughput && !sel.ports && !sel.dns && !sel.services && !sel.policy && !sel.cluster && !sel.kube {
		return selection{}, errors.New("-only: nothing selected")
	}
	return sel, nil
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

func printHeader(w io.Writer, started time.Time, load string) {
	fmt.Fprintf(w, "## podnet benchmarks\n\n")
	fmt.Fprintf(w, "%s; kernel %s; %d CPUs (%s); %s\n", started.Format("2006-01-02 15:04 MST"), kernelRelease(), runtime.NumCPU(), cpuModel(), runtime.Version())
	fmt.Fprintf(w, "load average at start: %s, at the end: %s (other work on the machine skews the figures)\n", load, loadAverage())
	fmt.Fprintf(w, "reference: containernetworking-plugins %s, iptables %s\n\n", debianVersion("containernetworking-plugins"), iptablesBackend())
}

func printSetup(w io.Writer, pods, concurrent int, selected []implementation, results map[string]result, parts addParts) {
	fmt.Fprintf(w, "### Pod setup\n\n")
	fmt.Fprintf(w, "%d pods ADD then DEL one at a time, the rows interleaved pod by pod (median, p90 per call), then %d ADD at once, row after row (wall time)\n\n", pods, concurrent)

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

	fmt.Fprintf(w, "What each DEL left to do after its reply: the time from its start until its host veth was gone from the node (median, p90), and after the last DEL's reply, how long until every veth was gone and every address free\n\n")
	fmt.Fprintf(w, "| | DEL until veth gone median | p90 | after the last reply |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|\n")
	for _, im := range selected {
		res, ok := results[im.name]
		if !ok || res.unavailable != "" || res.drain.vethGone.n < pods {
			fmt.Fprintf(w, "| %s | n/a | | |\n", im.label)
			continue
		}
		d := res.drain
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", im.label, ms(d.vethGone.median), ms(d.vethGone.p90), ms(d.tail))
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
	p, direct, ref, fl := results["podnet"], results["podnet-api"], results["reference"], results["floor"]
	if p.add.n > 0 && parts.exec.n > 0 {
		fmt.Fprintf(w, "Where podnet's ADD median of %s goes (medians of %d samples each, taken between the ADD and DEL rounds):\n\n", ms(p.add.median), parts.exec.n)
		fmt.Fprintf(w, "- exec of podnet-cni alone (CNI VERSION, no agent call): %s\n", ms(parts.exec.median))
		fmt.Fprintf(w, "- a request to the agent over its socket (STATUS): %s\n", ms(parts.roundTrip.median))
		if direct.add.n > 0 {
			fmt.Fprintf(w, "- ADD over the agent API without the plugin: %s; the plugin adds %s (exec, config, result)\n",
				ms(direct.add.median), ms(p.add.median-direct.add.median))
			fmt.Fprintf(w, "- the agent's own work (API ADD less one round trip): %s", ms(direct.add.median-parts.roundTrip.median))
			if fl.add.n > 0 {
				fmt.Fprintf(w, ", of which the kernel objects alone take about %s (netlink floor)", ms(fl.add.median))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}
	ratio("podnet ADD median / reference", p.add, ref.add, 0.2)
	ratio("podnet ADD median / floor", p.add, fl.add, 3)
	ratio("podnet DEL median / reference", p.del, ref.del, 0.2)
	ratio("podnet DEL median / floor", p.del, fl.del, 3)
	fmt.Fprintln(w)
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
