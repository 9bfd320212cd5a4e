package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/podnet/podnet/internal/agentproc"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The dns section: queries per second and latency of podnet's cluster DNS server and of
// CoreDNS serving the same records, measured with dnsperf.
//
// Everything runs inside one throwaway namespace and talks over its loopback: podnet's
// server (package internal/dns, run by `podnet-bench serve-dns`, a child process), CoreDNS
// (built from its Go module by bench.sh; plugins file, cache and forward, as the
// Kubernetes Corefile has kubernetes, cache and forward), and an authoritative upstream
// for names outside the cluster (in this process). Each server is pinned to the same one
// core (taskset, GOMAXPROCS=1) and dnsperf to the other; one server is measured at a time.
//
// Mixes: "hits", A queries for random services; "external names", what the stub
// resolver of a pod of ns-0 (ndots:5, search ns-0.svc.cluster.local svc.cluster.local
// cluster.local) sends to resolve random names host-<k>.example.com: A and AAAA of each
// search expansion in turn, then of the name itself. podnet answers the first expansion
// at once (autopath: it knows the namespace of the client's address, see dnsPodClient),
// so its mix is the first expansion only; CoreDNS serving a zone file has no pod
// namespaces and gets the whole walk, and so does podnet's server when the client is no
// pod (the row "podnet, client not a pod").

// dnsCoreDNSVersion is the CoreDNS release bench.sh builds into bin/coredns.
const dnsCoreDNSVersion = "1.15.0"

// Ports in the section's namespace, on 127.0.0.1.
const (
	dnsPodnetPort   = 5300
	dnsCoreDNSPort  = 5301
	dnsUpstreamPort = 5302
)

const (
	dnsOutstanding = 100   // dnsperf -q: queries in flight
	dnsFixedRate   = 10000 // dnsperf -Q of the latency runs, below every server's capacity
	dnsFixedLength = 5 * time.Second
	dnsWarmup      = 3 * time.Second // per row, untimed: fills the caches
	dnsQPSTarget   = 1.5             // podnet / CoreDNS
	dnsStubSamples = 200             // resolutions by the Go stub
	dnsStartWait   = 60 * time.Second
	dnsStopWait    = 10 * time.Second
)

// dnsRow is one row of the table: a server, a client address, a query mix.
type dnsRow struct {
	name       string // key of the results
	label      string
	mix        string // "hits" or "external"
	server     string // "podnet" or "coredns"
	src        netip.Addr
	file       string // query file name in the section's directory
	perRes     int    // queries per resolution; 0: every query is one lookup
	roundTrips int    // round trips per resolution the mix stands for
}

var dnsRows = []dnsRow{
	{"hits-podnet", "podnet", "hits", "podnet", dnsPodClient, "hits.txt", 0, 1},
	{"hits-coredns", "CoreDNS", "hits", "coredns", dnsPodClient, "hits.txt", 0, 1},
	{"ext-podnet", "podnet (autopath)", "external", "podnet", dnsPodClient, "external-first.txt", dnsQueriesAutopath, 1},
	{"ext-coredns", "CoreDNS (whole search walk)", "external", "coredns", dnsPodClient, "external-walk.txt", dnsQueriesWalk, 4},
	{"ext-podnet-walk", "podnet, client not a pod (whole search walk)", "external", "podnet", dnsOtherClient, "external-walk.txt", dnsQueriesWalk, 4},
}

// perfRun is what one dnsperf run measured.
type perfRun struct {
	qps             float64
	sent, completed int
	lost            int
	avg, p50, p99   time.Duration // over the answered queries (dnsperf -v)
	rcodes          map[string]int
	cpu             float64 // the server's CPU time during the run / the run's length
}

// stubResult is how a pod's stub resolver fared, one resolution at a time on an idle
// server: round trips per resolution and the latency of a whole resolution.
type stubResult struct {
	rounds   map[int]int // round trips -> resolutions
	p50, p99 time.Duration
	err      error
}

// dnsResult is the dns section's outcome.
type dnsResult struct {
	runs        map[string][]perfRun
	fixed       map[string]perfRun
	stub        map[string]stubResult
	errs        map[string]error // why a row has no figure
	records     int              // records in CoreDNS's zone file
	compared    int              // questions asked both servers
	differences []string         // answers that differ
	upstream    int64            // queries the upstream got (cache misses of both)
	pinned      string           // how servers and dnsperf were placed on CPUs
	dnsperf     string           // dnsperf's version
	coredns     string           // why CoreDNS is missing, or its version
	err         error            // the section's own setup or cleanup failed
}

// measureDNS runs the dns section on its own namespace and removes it again.
func measureDNS(ctx context.Context, prefix, binDir string, runs int, d time.Duration) (res dnsResult) {
	res = dnsResult{runs: map[string][]perfRun{}, fixed: map[string]perfRun{}, stub: map[string]stubResult{}, errs: map[string]error{}}
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "podnet-bench: dns: %s\n", fmt.Sprintf(format, args...))
	}
	dnsperf, err := exec.LookPath("dnsperf")
	if err != nil {
		res.err = errors.New("dnsperf missing (apt-get install dnsperf; bench.sh installs it)")
		return res
	}
	res.dnsperf = debianVersion("dnsperf")
	taskset, _ := exec.LookPath("taskset")
	serverCPU, loadCPU, placement := pickCPUs(taskset)
	res.pinned = placement

	tb, err := newTestbed(prefix, 0)
	if err != nil {
		res.err = err
		return res
	}
	defer func() { res.err = errors.Join(res.err, tb.remove()) }()
	if err := kernel.EnsureLoopbackUp(tb.node); err != nil {
		res.err = err
		return res
	}

	progress("writing the zone (%d services in %d namespaces, %d headless with %d backends) and the query files",
		dnsServices, dnsNamespaces, dnsHeadless, dnsHeadlessBackends)
	zonePath := filepath.Join(tb.dir, "cluster.local.zone")
	if res.records, err = writeZoneFile(zonePath, dnsSnapshot()); err != nil {
		res.err = err
		return res
	}
	for name, write := range map[string]func(io.Writer) error{
		"hits.txt":           writeHitQueries,
		"external-first.txt": func(w io.Writer) error { return writeExternalQueries(w, false) },
		"external-walk.txt":  func(w io.Writer) error { return writeExternalQueries(w, true) },
	} {
		if err := writeFileWith(filepath.Join(tb.dir, name), write); err != nil {
			res.err = err
			return res
		}
	}

	// The upstream, then the servers.
	upAddr := netip.AddrPortFrom(dnsPodClient, dnsUpstreamPort)
	var upConn net.PacketConn
	if err := inNetns(tb.node, func() (err error) {
		upConn, err = net.ListenPacket("udp4", upAddr.String())
		return err
	}); err != nil {
		res.err = fmt.Errorf("upstream: listen on %s: %w", upAddr, err)
		return res
	}
	up := startUpstream(upConn)
	defer func() { res.err = errors.Join(res.err, up.stop()) }()

	servers := map[string]netip.AddrPort{
		"podnet":  netip.AddrPortFrom(dnsPodClient, dnsPodnetPort),
		"coredns": netip.AddrPortFrom(dnsPodClient, dnsCoreDNSPort),
	}
	self, err := os.Executable()
	if err != nil {
		res.err = fmt.Errorf("find own executable: %w", err)
		return res
	}
	progress("starting podnet's server and CoreDNS, %s", placement)
	podnetSrv, err := startChild(tb.node, "podnet dns server", filepath.Join(tb.dir, "podnet-dns.log"), serverCPU, taskset,
		self, serveDNSCommand, "-listen", servers["podnet"].String(), "-upstream", upAddr.String())
	defer func() { res.err = errors.Join(res.err, podnetSrv.stop()) }()
	if err == nil {
		err = waitServing(ctx, tb.node, servers["podnet"], podnetSrv)
	}
	if err != nil {
		res.err = err
		return res
	}
	var coreSrv *child
	corePath := filepath.Join(binDir, "coredns")
	res.coredns, err = coreDNSVersion(corePath)
	if err == nil {
		corefile := filepath.Join(tb.dir, "Corefile")
		err = os.WriteFile(corefile, []byte(coreFile(zonePath, upAddr)), 0o644)
		if err == nil {
			coreSrv, err = startChild(tb.node, "coredns", filepath.Join(tb.dir, "coredns.log"), serverCPU, taskset,
				corePath, "-conf", corefile)
		}
		if err == nil {
			err = waitServing(ctx, tb.node, servers["coredns"], coreSrv)
		}
	}
	if err != nil {
		res.coredns = err.Error()
		for _, row := range dnsRows {
			if row.server == "coredns" {
				res.errs[row.name] = fmt.Errorf("CoreDNS not available: %w", err)
			}
		}
		coreSrv.stop() // if it started at all; why it failed is said already
		coreSrv = nil
	} else {
		defer func() { res.err = errors.Join(res.err, coreSrv.stop()) }()
		progress("comparing the answers of both servers")
		res.compared, res.differences, err = compareServers(tb.node, servers["podnet"], servers["coredns"])
		if err != nil {
			res.err = err
			return res
		}
	}

	rows := slices.DeleteFunc(slices.Clone(dnsRows), func(r dnsRow) bool { return res.errs[r.name] != nil })
	pids := map[string]int{"podnet": podnetSrv.cmd.Process.Pid}
	if coreSrv != nil {
		pids["coredns"] = coreSrv.cmd.Process.Pid
	}
	perf := func(row dnsRow, length time.Duration, rate int, out string) (perfRun, error) {
		cpu0, err := cpuTime(pids[row.server])
		if err != nil {
			return perfRun{}, err
		}
		start := time.Now()
		r, err := runDNSPerf(ctx, tb.node, dnsperf, taskset, loadCPU, servers[row.server], row.src,
			filepath.Join(tb.dir, row.file), length, rate, filepath.Join(tb.dir, out))
		took := time.Since(start)
		cpu1, cerr := cpuTime(pids[row.server])
		if err == nil {
			err = cerr
		}
		// dnsperf's own start and stop are in took: a little less than the true share.
		r.cpu = (cpu1 - cpu0).Seconds() / took.Seconds()
		return r, err
	}
	for _, row := range rows {
		progress("warming up %s (%v)", row.name, dnsWarmup)
		if _, err := perf(row, dnsWarmup, 0, "warmup.out"); err != nil {
			res.errs[row.name] = fmt.Errorf("warm-up: %w", err)
		}
	}
	settle(ctx)
	for run := range runs {
		for _, row := range rows {
			if res.errs[row.name] != nil || ctx.Err() != nil {
				continue
			}
			progress("%s, run %d/%d (%v)", row.name, run+1, runs, d)
			r, err := perf(row, d, 0, "run.out")
			if err != nil {
				res.errs[row.name] = fmt.Errorf("run %d: %w", run+1, err)
				continue
			}
			res.runs[row.name] = append(res.runs[row.name], r)
		}
	}
	for _, row := range rows {
		if res.errs[row.name] != nil || ctx.Err() != nil {
			continue
		}
		progress("%s at %d queries/s (%v)", row.name, dnsFixedRate, dnsFixedLength)
		r, err := perf(row, dnsFixedLength, dnsFixedRate, "fixed.out")
		if err != nil {
			res.errs[row.name] = fmt.Errorf("fixed rate: %w", err)
			continue
		}
		res.fixed[row.name] = r
	}
	for _, row := range rows {
		if row.mix != "external" || res.errs[row.name] != nil || ctx.Err() != nil {
			continue
		}
		progress("%s: %d resolutions by a stub resolver, one at a time", row.name, dnsStubSamples)
		res.stub[row.name] = stubResolutions(tb.node, servers[row.server], row.src)
	}
	res.upstream = up.queries.Load()
	return res
}

// cpuTime is the CPU time (user and system) process pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("server CPU time: %w", err)
	}
	// The fields after the command name (which may hold spaces), from field 3 (state) on.
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("server CPU time: /proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("server CPU time: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on every Linux ABI Go
// supports).
const clockTicks = 100

// pickCPUs chooses the core of the servers and the one of dnsperf, and says how.
func pickCPUs(taskset string) (server, load int, how string) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil || set.Count() < 2 || taskset == "" {
		return -1, -1, "not pinned (fewer than 2 usable CPUs or no taskset): servers with GOMAXPROCS=1"
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < 2; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus[0], cpus[1], fmt.Sprintf("each server on CPU %d (taskset, GOMAXPROCS=1), dnsperf on CPU %d", cpus[0], cpus[1])
}

// pinned prefixes argv with taskset onto cpu (none when cpu < 0).
func pinned(taskset string, cpu int, argv []string) []string {
	if cpu < 0 {
		return argv
	}
	return append([]string{taskset, "-c", strconv.Itoa(cpu)}, argv...)
}

func writeFileWith(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// coreFile is CoreDNS's configuration: the cluster zone from the file, everything else
// forwarded to the upstream, with Kubernetes' default cache in front of both.
func coreFile(zonePath string, upstream netip.AddrPort) string {
	return fmt.Sprintf(`.:%d {
	bind %s
	errors
	file %s %s
	forward . %s
	cache 30
}
`, dnsCoreDNSPort, dnsPodClient, zonePath, dnsZone, upstream)
}

// coreDNSVersion checks the binary bench.sh built; the error says why it is missing.
func coreDNSVersion(path string) (string, error) {
	if !fileExists(path) {
		why := "not built"
		if b, err := os.ReadFile(path + ".build-error"); err == nil {
			why = "build failed: " + oneLine(string(b))
		}
		return "", fmt.Errorf("%s missing (%s; bench.sh builds it from github.com/coredns/coredns@v%s)", path, why, dnsCoreDNSVersion)
	}
	out, err := exec.Command(path, "-version").Output()
	if err != nil {
		return "", fmt.Errorf("%s -version: %w", path, err)
	}
	v, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return v, nil
}

// child is a server process of the dns section.
type child struct {
	name    string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error         // read only after exited is closed
	logPath string
}

// startChild starts argv (pinned to cpu) inside ns, with GOMAXPROCS=1 and its output
// in logPath. On error nothing is left running.
func startChild(ns netns.NsHandle, name, logPath string, cpu int, taskset string, argv ...string) (*child, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: create log: %w", name, err)
	}
	defer log.Close()
	argv = pinned(taskset, cpu, argv)
	c := &child{name: name, logPath: logPath, exited: make(chan struct{}), cmd: exec.Command(argv[0], argv[1:]...)}
	c.cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	c.cmd.Stdout, c.cmd.Stderr = log, log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	// Forked from a thread inside ns: the process and its sockets live there.
	if err := inNetns(ns, c.cmd.Start); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// stop ends the process with SIGTERM (SIGKILL after dnsStopWait); a process that had
// exited by itself is reported. Calling it on nil is harmless.
func (c *child) stop() error {
	if c == nil {
		return nil
	}
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited during the run (%v): %s", c.name, c.waitErr, c.logTail())
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(dnsStopWait):
		c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s ignored SIGTERM for %v, killed: %s", c.name, dnsStopWait, c.logTail())
	}
	var exit *exec.ExitError
	if c.waitErr != nil && !(errors.As(c.waitErr, &exit) && agentproc.KilledBy(exit, syscall.SIGTERM)) {
		return fmt.Errorf("%s stopped with %v: %s", c.name, c.waitErr, c.logTail())
	}
	return nil
}

func (c *child) logTail() string {
	b, _ := os.ReadFile(c.logPath)
	s := strings.TrimSpace(string(b))
	if len(s) > 500 {
		s = "..." + s[len(s)-500:]
	}
	if s == "" {
		return "(log empty)"
	}
	return oneLine(s)
}

// waitServing waits until the server at addr answers the zone's dns-version TXT record.
func waitServing(ctx context.Context, ns netns.NsHandle, addr netip.AddrPort, c *child) error {
	deadline := time.Now().Add(dnsStartWait)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-c.exited:
			return fmt.Errorf("%s exited before serving (%v): %s", c.name, c.waitErr, c.logTail())
		default:
		}
		conn, err := dialDNS(ns, dnsPodClient, addr)
		if err == nil {
			var m *mdns.Msg
			m, err = ask(conn, "dns-version."+dnsZone, mdns.TypeTXT, 200*time.Millisecond)
			conn.Close()
			if err == nil && (m.Rcode != mdns.RcodeSuccess || len(m.Answer) == 0) {
				err = fmt.Errorf("answer %s with %d records", mdns.RcodeToString[m.Rcode], len(m.Answer))
			}
			if err == nil {
				return nil
			}
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("%s did not serve %s within %v (%v): %s", c.name, addr, dnsStartWait, last, c.logTail())
}

// dialDNS opens a UDP socket inside ns from src to server.
func dialDNS(ns netns.NsHandle, src netip.Addr, server netip.AddrPort) (*mdns.Conn, error) {
	var c *net.UDPConn
	err := inNetns(ns, func() (err error) {
		c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(server))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", server, src, err)
	}
	return &mdns.Conn{Conn: c}, nil
}

// ask sends one question and waits for its answer (answers to earlier questions that
// arrive late are skipped).
func ask(c *mdns.Conn, name string, qtype uint16, timeout time.Duration) (*mdns.Msg, error) {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	c.SetDeadline(time.Now().Add(timeout))
	if err := c.WriteMsg(m); err != nil {
		return nil, err
	}
	for {
		r, err := c.ReadMsg()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", name, mdns.TypeToString[qtype], err)
		}
		if r.Id == m.Id {
			return r, nil
		}
	}
}

// compareServers asks both servers the comparison questions and lists the answers that
// differ (rcode, or answer records with their TTLs and SOA serials left out, in any order).
func compareServers(ns netns.NsHandle, a, b netip.AddrPort) (int, []string, error) {
	ca, err := dialDNS(ns, dnsOtherClient, a)
	if err != nil {
		return 0, nil, err
	}
	defer ca.Close()
	cb, err := dialDNS(ns, dnsOtherClient, b)
	if err != nil {
		return 0, nil, err
	}
	defer cb.Close()
	render := func(m *mdns.Msg) string {
		var rrs []string
		for _, rr := range m.Answer {
			rr = mdns.Copy(rr)
			rr.Header().Ttl = 0
			if soa, ok := rr.(*mdns.SOA); ok {
				soa.Serial = 0 // podnet's grows with every snapshot
			}
			rrs = append(rrs, strings.ReplaceAll(rr.String(), "\t", " "))
		}
		slices.Sort(rrs)
		return mdns.RcodeToString[m.Rcode] + " [" + strings.Join(rrs, "; ") + "]"
	}
	var diffs []string
	qs := comparisonQuestions()
	for _, q := range qs {
		ma, err := ask(ca, q.name, q.qtype, 2*time.Second)
		if err != nil {
			return 0, nil, fmt.Errorf("podnet: %w", err)
		}
		mb, err := ask(cb, q.name, q.qtype, 2*time.Second)
		if err != nil {
			return 0, nil, fmt.Errorf("CoreDNS: %w", err)
		}
		if ra, rb := render(ma), render(mb); ra != rb {
			diffs = append(diffs, fmt.Sprintf("%s %s: podnet %s, CoreDNS %s", q.name, mdns.TypeToString[q.qtype], ra, rb))
		}
	}
	return len(qs), diffs, nil
}

// runDNSPerf runs dnsperf (pinned to cpu) from src inside ns against server for d, with
// rate queries/s at most (0: as fast as the server answers, dnsOutstanding in flight),
// its per-query output in outPath, and reads the figures.
func runDNSPerf(ctx context.Context, ns netns.NsHandle, dnsperf, taskset string, cpu int, server netip.AddrPort, src netip.Addr,
	file string, d time.Duration, rate int, outPath string) (perfRun, error) {
	secs := strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
	argv := []string{dnsperf, "-s", server.Addr().String(), "-p", strconv.Itoa(int(server.Port())), "-a", src.String(),
		"-d", file, "-l", secs, "-q", strconv.Itoa(dnsOutstanding), "-t", "2", "-v"}
	if rate > 0 {
		argv = append(argv, "-Q", strconv.Itoa(rate))
	}
	argv = pinned(taskset, cpu, argv)
	out, err := os.Create(outPath)
	if err != nil {
		return perfRun{}, err
	}
	defer out.Close()
	cctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = out, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := inNetns(ns, cmd.Run); err != nil {
		return perfRun{}, fmt.Errorf("dnsperf: %w: %s", err, oneLine(stderr.String()))
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return perfRun{}, err
	}
	r, err := parseDNSPerf(out)
	if err != nil {
		return perfRun{}, fmt.Errorf("dnsperf output: %w (stderr: %s)", err, oneLine(stderr.String()))
	}
	return r, nil
}

// parseDNSPerf reads dnsperf -v output: a line "> RCODE name type latency" per answer
// ("> T ..." for a timeout), then the statistics.
func parseDNSPerf(r io.Reader) (perfRun, error) {
	run := perfRun{rcodes: map[string]int{}}
	var lat []time.Duration
	var sum time.Duration
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "> "); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				continue
			}
			run.rcodes[f[0]]++
			if len(f) >= 4 {
				if s, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil && f[0] != "T" && f[0] != "I" {
					l := time.Duration(math.Round(s * 1e9))
					lat = append(lat, l)
					sum += l
				}
			}
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		first := strings.Fields(v)
		if len(first) == 0 {
			continue
		}
		switch k {
		case "Queries sent":
			run.sent, _ = strconv.Atoi(first[0])
		case "Queries completed":
			run.completed, _ = strconv.Atoi(first[0])
		case "Queries lost":
			run.lost, _ = strconv.Atoi(first[0])
		case "Queries per second":
			run.qps, _ = strconv.ParseFloat(first[0], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return run, err
	}
	if run.qps == 0 || len(lat) == 0 {
		return run, errors.New("no statistics or no answers")
	}
	slices.Sort(lat)
	run.avg = sum / time.Duration(len(lat))
	run.p50, run.p99 = percentile(lat, 0.5), percentile(lat, 0.99)
	return run, nil
}

// stubResolutions resolves dnsStubSamples external names from src as a pod's stub
// resolver does (glibc, ndots:5, search list dnsSearch): A and AAAA of one candidate at
// once on one socket, the next candidate when both are NXDOMAIN. It checks the final
// address and counts round trips.
func stubResolutions(ns netns.NsHandle, server netip.AddrPort, src netip.Addr) stubResult {
	res := stubResult{rounds: map[int]int{}}
	c, err := dialDNS(ns, src, server)
	if err != nil {
		res.err = err
		return res
	}
	defer c.Close()
	candidates := append(slices.Clone(dnsSearch), "")
	var took []time.Duration
	for i := range dnsStubSamples {
		k := (i * 7) % dnsExternalNames
		name := externalName(k)
		start := time.Now()
		rounds, found := 0, netip.Addr{}
		for _, suffix := range candidates {
			rounds++
			a, aaaa, err := askBoth(c, name+suffix, 2*time.Second)
			if err != nil {
				res.err = err
				return res
			}
			if a.Rcode == mdns.RcodeNameError && aaaa.Rcode == mdns.RcodeNameError {
				continue
			}
			for _, rr := range a.Answer {
				if rec, ok := rr.(*mdns.A); ok {
					found, _ = netip.AddrFromSlice(rec.A.To4())
				}
			}
			break
		}
		took = append(took, time.Since(start))
		if found != externalA(k) {
			res.err = fmt.Errorf("%s: resolved to %v after %d round trips, want %s", name, found, rounds, externalA(k))
			return res
		}
		res.rounds[rounds]++
	}
	slices.Sort(took)
	res.p50, res.p99 = percentile(took, 0.5), percentile(took, 0.99)
	return res
}

// askBoth sends the A and the AAAA question of name at once and waits for both answers.
func askBoth(c *mdns.Conn, name string, timeout time.Duration) (a, aaaa *mdns.Msg, err error) {
	qa, q6 := new(mdns.Msg), new(mdns.Msg)
	qa.SetQuestion(name, mdns.TypeA)
	q6.SetQuestion(name, mdns.TypeAAAA)
	c.SetDeadline(time.Now().Add(timeout))
	for _, q := range []*mdns.Msg{qa, q6} {
		if err := c.WriteMsg(q); err != nil {
			return nil, nil, err
		}
	}
	for a == nil || aaaa == nil {
		r, err := c.ReadMsg()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		switch r.Id {
		case qa.Id:
			a = r
		case q6.Id:
			aaaa = r
		}
	}
	return a, aaaa, nil
}

// printDNS prints the dns table and the ratios.
func printDNS(w io.Writer, runs int, d time.Duration, res dnsResult) {
	fmt.Fprintf(w, "### Cluster DNS\n\n")
	fmt.Fprintf(w, "zone: %d services with a VIP in %d namespaces, %d headless services with %d backends each (%d records in CoreDNS's zone file); "+
		"podnet: package internal/dns (this tree) in a process of its own; CoreDNS: %s, plugins errors, file, forward, cache 30; "+
		"upstream for host-<k>.example.com: an authoritative server of the benchmark; all on 127.0.0.1 inside a throwaway namespace; %s; "+
		"dnsperf %s, %d queries in flight, %v per run, median of %d runs (rounds interleave the rows), then %v at a fixed %d queries/s; "+
		"latencies from dnsperf -v (one line per answer); server CPU: its CPU time over the run's length\n\n",
		dnsServices, dnsNamespaces, dnsHeadless, dnsHeadlessBackends, res.records, res.coredns, res.pinned,
		res.dnsperf, dnsOutstanding, d, runs, dnsFixedLength, dnsFixedRate)
	fmt.Fprintf(w, "external names: a pod of %s (its address 127.0.0.1 is the pod \"dnsperf\" of %s in the snapshot) resolves host-<k>.example.com, search %s, ndots:5; A and AAAA per round trip\n\n",
		dnsClientNS, dnsClientNS, strings.Join(dnsSearch, " "))
	fmt.Fprintf(w, "| mix | server | queries per resolution (round trips) | queries/s (runs) | resolutions/s | avg | p99 | server CPU | avg at %dk q/s | p99 at %dk q/s | server CPU at %dk q/s | rcodes, lost |\n",
		dnsFixedRate/1000, dnsFixedRate/1000, dnsFixedRate/1000)
	fmt.Fprintf(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	qps := map[string]float64{}
	for _, row := range dnsRows {
		mix := "hits: A of random services"
		if row.mix == "external" {
			mix = "external names"
		}
		per := "1"
		if row.perRes > 0 {
			per = fmt.Sprintf("%d (%d)", row.perRes, row.roundTrips)
		}
		rs := res.runs[row.name]
		if len(rs) == 0 {
			why := "not run"
			if err := res.errs[row.name]; err != nil {
				why = "failed: " + cell(err.Error())
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | | | | | | | | |\n", mix, row.label, per, why)
			continue
		}
		q := median(mapSlice(rs, func(r perfRun) float64 { return r.qps }))
		qps[row.name] = q
		avg := medianDuration(mapSlice(rs, func(r perfRun) time.Duration { return r.avg }))
		p99 := medianDuration(mapSlice(rs, func(r perfRun) time.Duration { return r.p99 }))
		resol := "-"
		if row.perRes > 0 {
			resol = fmt.Sprintf("%.0f", q/float64(row.perRes))
		}
		cpu := median(mapSlice(rs, func(r perfRun) float64 { return r.cpu }))
		fixedAvg, fixedP99, fixedCPU := "", "", ""
		if f, ok := res.fixed[row.name]; ok {
			fixedAvg, fixedP99, fixedCPU = us(f.avg), us(f.p99), pct(f.cpu)
		}
		var each []string
		for _, r := range rs {
			each = append(each, fmt.Sprintf("%.0f", r.qps))
		}
		last := rs[len(rs)-1]
		status := rcodeSummary(last.rcodes)
		lost := 0
		for _, r := range rs {
			lost += r.lost
		}
		status += fmt.Sprintf(", lost %d", lost)
		if err := res.errs[row.name]; err != nil {
			status += "; then failed: " + cell(err.Error())
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.0f (%s) | %s | %s | %s | %s | %s | %s | %s | %s |\n", mix, row.label, per, q, strings.Join(each, " "),
			resol, us(avg), us(p99), pct(cpu), fixedAvg, fixedP99, fixedCPU, status)
	}
	fmt.Fprintln(w)
	verdict := func(r, target float64) string {
		if r >= target {
			return "meets target"
		}
		return "MISSES target"
	}
	if p, c := qps["hits-podnet"], qps["hits-coredns"]; p > 0 && c > 0 {
		fmt.Fprintf(w, "- hits, podnet / CoreDNS queries/s: %.2f (target >= %g, %s)\n", p/c, dnsQPSTarget, verdict(p/c, dnsQPSTarget))
	} else {
		fmt.Fprintf(w, "- hits, podnet / CoreDNS queries/s: n/a (target >= %g)\n", dnsQPSTarget)
	}
	if p, c := qps["ext-podnet"], qps["ext-coredns"]; p > 0 && c > 0 {
		rp, rc := p/dnsQueriesAutopath, c/dnsQueriesWalk
		fmt.Fprintf(w, "- external names, podnet (autopath) / CoreDNS resolutions/s: %.2f (target >= %g, %s); queries/s: %.2f\n",
			rp/rc, dnsQPSTarget, verdict(rp/rc, dnsQPSTarget), p/c)
	} else {
		fmt.Fprintf(w, "- external names, podnet / CoreDNS resolutions/s: n/a (target >= %g)\n", dnsQPSTarget)
	}
	if p, c := qps["ext-podnet-walk"], qps["ext-coredns"]; p > 0 && c > 0 {
		fmt.Fprintf(w, "- external names without autopath (same whole walk), podnet / CoreDNS queries/s: %.2f (reported)\n", p/c)
	}
	for _, row := range dnsRows {
		st, ok := res.stub[row.name]
		if !ok {
			continue
		}
		if st.err != nil {
			fmt.Fprintf(w, "- stub resolver, %s: failed: %v\n", row.label, st.err)
			continue
		}
		var rounds []string
		for _, n := range slices.Sorted(maps.Keys(st.rounds)) {
			rounds = append(rounds, fmt.Sprintf("%d round trip(s) x%d", n, st.rounds[n]))
		}
		target := ""
		if row.name == "ext-podnet" {
			if len(st.rounds) == 1 && st.rounds[1] == dnsStubSamples {
				target = " (target: one round trip with the shortcut, meets target)"
			} else {
				target = " (target: one round trip with the shortcut, MISSES target)"
			}
		}
		fmt.Fprintf(w, "- stub resolver on an idle server, %s: %s%s; a whole resolution takes median %s, p99 %s\n",
			row.label, strings.Join(rounds, ", "), target, us(st.p50), us(st.p99))
	}
	if res.compared > 0 {
		if len(res.differences) == 0 {
			fmt.Fprintf(w, "- same zone content: %d questions (A, AAAA, SRV, TXT, SOA of services, headless services, backends, pods, NXDOMAIN and NODATA names) answered alike by both servers (rcode and answer records, TTLs aside)\n", res.compared)
		} else {
			fmt.Fprintf(w, "- same zone content: %d of %d questions answered differently, e.g.: %s\n", len(res.differences), res.compared,
				cell(strings.Join(res.differences[:min(3, len(res.differences))], " / ")))
		}
	}
	fmt.Fprintf(w, "- the upstream got %d queries in all (the servers' cache misses, warm-up included)\n", res.upstream)
	fmt.Fprintln(w)
}

func rcodeSummary(rc map[string]int) string {
	total := 0
	for _, n := range rc {
		total += n
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(rc)) {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", k, 100*float64(rc[k])/float64(max(total, 1))))
	}
	return strings.Join(parts, " ")
}

func pct(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) }

func us(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func mapSlice[T, U any](in []T, f func(T) U) []U {
	out := make([]U, 0, len(in))
	for _, v := range in {
		out = append(out, f(v))
	}
	return out
}

func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return percentile(s, 0.5)
}
