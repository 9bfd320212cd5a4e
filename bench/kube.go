package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agentproc"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/kube"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/testutil/kubetest"
)

// The kube section (issue 12): the time from a Service or EndpointSlice change in the
// Kubernetes API until traffic follows it, with kubeFew and with -kube-services services,
// podnet against kube-proxy's nftables mode, both watching one API server and measured
// at the same time.
//
//   - The API server: internal/testutil/kubetest.Launch (the release hack/kube-apiserver.sh
//     builds, Debian's etcd), on 127.0.0.1 of the benchmark's namespace.
//   - podnet's node: a namespace of internal/lab with `podnet agent` (--netns, embedded
//     store, --service-cidr the API server's range), a bridge network, a client pod and
//     kubeBackends backend pods attached through the agent's API (each backend answers a
//     connection with its address, probe.ServeIdentity), and `podnet controller` feeding
//     the agent through its socket.
//   - kube-proxy's node: another lab namespace where the same pods are plain veths on a
//     plain bridge that holds podnet's gateway address, each pod with the address podnet
//     gave its twin (so one EndpointSlice serves both nodes), forwarding and
//     bridge-nf-call-iptables on as podnet's agent sets them; kube-proxy (hack/kube-proxy.sh,
//     the same release, --proxy-mode nftables) runs inside it and execs Debian's nft
//     there. A Node object of the API names it and gives its address.
//   - The controller and kube-proxy each run inside their node's namespace and reach the
//     API server through a relay of the benchmark (a listener on 127.0.0.1:PORT inside
//     the namespace that copies each connection to the API server): the same path for both.
//
// Each setting is filled with services svc-<i> in kubeNamespaces namespaces, each with an
// EndpointSlice of every backend, written by kubeWriters goroutines at once. Then
// -kube-rounds rounds of (a) creating a Service (its ClusterIP picked by the benchmark
// in the API server's range, so that the probers know it before the write) and its
// EndpointSlice with one backend, (b) moving that slice to another backend, then deleting
// both (not timed). A change is timed from the start of its first API write until
// traffic follows on both nodes at once: a prober per node connects from the client pod
// to ClusterIP:80 every kubeInterval, each connection waiting kubeConnectWait at most for
// the backend's answer, and the time is the start of the first connection from which on
// kubeConfirm answers in a row came from the wanted backend. Changes are kubePause
// apart, so that each finds both proxies idle (kube-proxy past its minimum sync period).

const (
	kubeFew        = 100
	kubeMaxRounds  = 100 // rounds per setting (each takes about 8 s)
	kubeBackends   = 3
	kubeNamespaces = 10
	kubePort       = 80
	kubeTargetPort = 8080
	// kubePodSubnet is podnet's bridge network; kube-proxy's node copies its addresses.
	kubePodSubnet = "10.94.0.0/24"
	kubeWriters   = 16 // API writes at once while filling (more do not write faster here)
	kubeFillLap   = 1000
	// The probers: a connection every kubeInterval, each waiting kubeConnectWait for an
	// answer; kubeConfirm answers in a row from the wanted backend end a change, which
	// fails if that has not happened kubeFollowWait after its start.
	kubeInterval    = 2 * time.Millisecond
	kubeConnectWait = 200 * time.Millisecond
	kubeConfirm     = 10
	kubeFollowWait  = 30 * time.Second
	// kubePause separates changes. kube-proxy starts a sync no sooner than its minimum
	// sync period (1 s) after the previous one ended, and a change of two writes (a
	// create, the untimed delete) makes two syncs: 2.5 s later both proxies are idle.
	kubePause     = 2500 * time.Millisecond
	kubeMaxFailed = 5 // failed changes of one side that end its rounds
	// kubeQuiet is the wait between reading the proxies' metrics and a change.
	kubeQuiet = 300 * time.Millisecond
	// After a fill, every ClusterIP must answer on both nodes within kubeConvergeWait;
	// the check makes kubeCheckers connections at once per node.
	kubeConvergeWait = 5 * time.Minute
	kubeCheckers     = 16
	kubeStartWait    = 60 * time.Second
	kubeTarget       = time.Second // podnet's median, per change
	kubeGrowthTarget = 1.5         // podnet's median from the API's answer, with -kube-services / with kubeFew
	kubeProxyNode    = "kp-node"
	kubeBridge       = "kpbr0"
	// Inside the node namespaces.
	podnetMetricsAddr    = "127.0.0.1:9464"
	kubeProxyMetricsAddr = "127.0.0.1:10249"
	kubeProxyHealthAddr  = "127.0.0.1:10256"
)

// kubeSides are the two proxies, in the order of every [2] array of the section.
var kubeSides = [2]string{"podnet", "kube-proxy"}

const (
	sidePodnet = iota
	sideKubeProxy
)

// kubeChanges are the changes of a round, in their order.
var kubeChanges = []struct{ name, label string }{
	{"create", "create Service + EndpointSlice (one backend)"},
	{"update", "EndpointSlice moved to another backend"},
}

// kubeSample is one change measured on both nodes.
type kubeSample struct {
	ok     [2]bool
	follow [2]time.Duration // from the first write until traffic followed
	call   time.Duration    // the API writes
	// wrote: podnet's controller applied its last batch to the agent (status.lastSync),
	// kube-proxy finished its last rules sync
	// (kubeproxy_sync_proxy_rules_last_timestamp_seconds); from the first write.
	wrote [2]time.Duration
	lag   float64 // the controller's lagSeconds for its last batch
	// used is what the proxies counted from just before the change until kubePause
	// after traffic followed; the CPU times leave out the benchmark's own requests.
	used kubeCounters
}

// kubeCounters are what the proxies count, at one moment or over a change.
type kubeCounters struct {
	// rules is the time spent writing rules (podnet's agent: podnet_nftables_duration_seconds
	// of update and sync; kube-proxy: kubeproxy_sync_proxy_rules_duration_seconds, both
	// families), ops how many writes.
	rules [2]time.Duration
	ops   [2]float64
	// mirror is the time podnet's agent took to answer the controller's Mirror requests
	// (podnet_request_duration_seconds of verb mirror), mirrors how many.
	mirror  time.Duration
	mirrors float64
	// cpu by process: podnet's agent, podnet's controller, kube-proxy (with the nft it ran).
	cpu [3]time.Duration
}

const (
	cpuAgent = iota
	cpuController
	cpuKubeProxy
)

func (c kubeCounters) minus(o kubeCounters) kubeCounters {
	for i := range c.rules {
		c.rules[i] -= o.rules[i]
		c.ops[i] -= o.ops[i]
	}
	c.mirror -= o.mirror
	c.mirrors -= o.mirrors
	for i := range c.cpu {
		c.cpu[i] -= o.cpu[i]
	}
	return c
}

// kubeRow is one change at one setting.
type kubeRow struct {
	services int
	change   string
	samples  []kubeSample
	failed   [2]int
	firstErr [2]string
}

// kubeFill is what filling one setting took.
type kubeFill struct {
	services int
	wall     time.Duration // the writes (a Service and an EndpointSlice each)
	converge [2]time.Duration
	err      [2]error
}

type kubeResult struct {
	many, rounds  int
	kpUnavailable string // why kube-proxy's rows are missing
	kpVersion     string
	rows          []*kubeRow
	fills         []kubeFill
	kpTables      string // the nftables tables of kube-proxy's node after its start
	rootBefore    map[string]string
	rootAfter     map[string]string
	ctrl          kube.Status // the controller's status at the end
	err           error
}

func (r *kubeResult) row(services int, change string) *kubeRow {
	for _, row := range r.rows {
		if row.services == services && row.change == change {
			return row
		}
	}
	row := &kubeRow{services: services, change: change}
	r.rows = append(r.rows, row)
	return row
}

// kubeNode is one node of the section: its namespaces, the client pod's prober, the
// backends, and the processes that program it.
type kubeNode struct {
	lab      *lab.Lab
	client   *kubeClient
	backends []netip.Addr
	pods     []netip.Prefix // the client's address, then the backends'
	gateway  netip.Addr     // the pods' default gateway
	relay    *relay
	stops    []func()
	// podnet
	agent     *agentproc.Proc
	ctrl      *agentproc.Child
	ctrlSock  string
	ctrlLog   string
	agentSock string
	// kube-proxy
	kp    *agentproc.Child
	kpLog string
}

// pids are the node's processes by their index in kubeCounters.cpu (0: none).
func (n *kubeNode) pids() (pids [3]int) {
	if n.agent != nil {
		pids[cpuAgent] = n.agent.PID()
	}
	if n.ctrl != nil && n.ctrl.Cmd.Process != nil {
		pids[cpuController] = n.ctrl.Cmd.Process.Pid
	}
	if n.kp != nil && n.kp.Cmd.Process != nil {
		pids[cpuKubeProxy] = n.kp.Cmd.Process.Pid
	}
	return pids
}

func (n *kubeNode) close() error {
	if n == nil {
		return nil
	}
	var errs []error
	if n.ctrl != nil {
		n.ctrl.Stop(10 * time.Second)
	}
	if n.kp != nil {
		n.kp.Stop(10 * time.Second)
	}
	if n.agent != nil {
		errs = append(errs, n.agent.Stop())
	}
	for _, stop := range n.stops {
		stop()
	}
	if n.relay != nil {
		n.relay.close()
	}
	if n.client != nil {
		n.client.close()
	}
	if n.lab != nil {
		errs = append(errs, n.lab.Close())
	}
	return errors.Join(errs...)
}

// measureKube runs the kube section.
func measureKube(ctx context.Context, binDir string, many, rounds int, alone bool) (res kubeResult) {
	res = kubeResult{many: many, rounds: rounds}
	began := time.Now()
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "podnet-bench: kube [%3.0f s]: %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	dir, err := os.MkdirTemp("", "podnet-bench-kube-")
	if err != nil {
		res.err = err
		return res
	}
	defer os.RemoveAll(dir)
	if res.rootBefore, err = rootState(); err != nil {
		res.err = err
		return res
	}

	progress("starting kube-apiserver %s", kubetest.Version)
	kc, err := kubetest.Launch(filepath.Join(dir, "api"), kubetest.Options{})
	if err != nil {
		res.err = err
		return res
	}
	defer kc.Stop()
	// The fills write thousands of objects from many goroutines: client-go's default
	// 5 requests/s would make that take an hour.
	fast := rest.CopyConfig(kc.Config)
	fast.QPS, fast.Burst = 5000, 5000
	cs, err := kubernetes.NewForConfig(fast)
	if err != nil {
		res.err = err
		return res
	}

	var nodes [2]*kubeNode
	defer func() {
		for _, n := range nodes {
			res.err = errors.Join(res.err, n.close())
		}
		// kube-proxy has stopped: whatever it changed outside its namespace shows now.
		var err error
		if res.rootAfter, err = rootState(); err != nil {
			res.err = errors.Join(res.err, err)
		}
	}()
	progress("podnet's node: agent, pods, controller")
	if nodes[sidePodnet], err = newPodnetNode(ctx, binDir, filepath.Join(dir, "podnet"), kc); err != nil {
		res.err = fmt.Errorf("podnet's node: %w", err)
		return res
	}
	var unavailable string
	if alone {
		unavailable = "not run (-kube-alone)"
	} else {
		progress("kube-proxy's node: bridge, pods, kube-proxy")
		nodes[sideKubeProxy], res.kpVersion, unavailable, err = newKubeProxyNode(ctx, filepath.Join(dir, "kube-proxy"), kc, cs, nodes[sidePodnet])
	}
	switch {
	case err != nil:
		res.err = fmt.Errorf("kube-proxy's node: %w", err)
		return res
	case unavailable != "":
		res.kpUnavailable = unavailable
		progress("kube-proxy not available, measuring podnet alone: %s", unavailable)
	}
	live := func(side int) bool { return nodes[side] != nil && nodes[side].kp != nil || side == sidePodnet }

	for k := range kubeNamespaces {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kubeNamespace(k)}}, metav1.CreateOptions{}); err != nil {
			res.err = fmt.Errorf("create namespace: %w", err)
			return res
		}
	}
	backends := nodes[sidePodnet].backends
	used := map[netip.Addr]bool{kc.ServiceCIDR.Addr().Next(): true} // the "kubernetes" service
	var vips []netip.AddrPort
	for _, setting := range []int{kubeFew, many} {
		if ctx.Err() != nil {
			return res
		}
		progress("writing services %d-%d with their EndpointSlices", len(vips), setting-1)
		start := time.Now()
		more, err := kubeFillServices(ctx, cs, len(vips), setting, backends, progress)
		vips = append(vips, more...)
		fill := kubeFill{services: setting, wall: time.Since(start)}
		if err != nil {
			res.err = err
			return res
		}
		for _, v := range more {
			used[v.Addr()] = true
		}
		progress("waiting until every ClusterIP (%d) answers on both nodes", len(vips))
		written := time.Now()
		var wg sync.WaitGroup
		for side, n := range nodes {
			if !live(side) {
				continue
			}
			wg.Go(func() { fill.converge[side], fill.err[side] = n.client.converge(ctx, vips, written) })
		}
		wg.Wait()
		res.fills = append(res.fills, fill)
		for side, err := range fill.err {
			if err != nil {
				res.err = fmt.Errorf("%s with %d services: %w", kubeSides[side], setting, err)
				return res
			}
		}
		if live(sideKubeProxy) && res.kpTables == "" {
			res.kpTables = tablesIn(nodes[sideKubeProxy].lab.Node)
		}
		settle(ctx)
		progress("%d services: %d rounds of changes", setting, rounds)
		m := kubeMeasurer{cs: cs, nodes: nodes, live: live, kc: kc, used: used, res: &res}
		if err := m.rounds(ctx, setting, rounds, backends, progress); err != nil {
			res.err = err
			return res
		}
	}
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res.ctrl, _ = kube.ReadStatus(rctx, nodes[sidePodnet].ctrlSock)
	return res
}

// kubeMeasurer makes the timed changes.
type kubeMeasurer struct {
	cs    kubernetes.Interface
	kc    *kubetest.Cluster
	nodes [2]*kubeNode
	live  func(side int) bool
	used  map[netip.Addr]bool // ClusterIPs taken, or used before (never reused: no stale rules)
	res   *kubeResult
}

// rounds makes the rounds of one setting.
func (m *kubeMeasurer) rounds(ctx context.Context, services, rounds int, backends []netip.Addr, progress func(string, ...any)) error {
	ns := kubeNamespace(0)
	for k := range rounds {
		if ctx.Err() != nil {
			return nil
		}
		stop := false
		for _, ch := range kubeChanges {
			row := m.res.row(services, ch.name)
			for side := range row.failed {
				stop = stop || row.failed[side] >= kubeMaxFailed
			}
		}
		if stop {
			progress("too many failed changes, ending the rounds of %d services", services)
			return nil
		}
		ip, err := m.freeIP()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("timed-%d-%d", services, k)
		dst := netip.AddrPortFrom(ip, kubePort)
		first, second := backends[k%len(backends)], backends[(k+1)%len(backends)]

		var slice *discoveryv1.EndpointSlice
		m.measure(ctx, m.res.row(services, "create"), dst, first, func(ctx context.Context) error {
			if _, err := m.cs.CoreV1().Services(ns).Create(ctx, kubeService(ns, name, ip), metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create service %s/%s (ClusterIP %s): %w", ns, name, ip, err)
			}
			var err error
			slice, err = m.cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, kubeSlice(ns, name, first), metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("create EndpointSlice of %s/%s: %w", ns, name, err)
			}
			return nil
		})
		if slice != nil {
			m.measure(ctx, m.res.row(services, "update"), dst, second, func(ctx context.Context) error {
				moved := kubeSlice(ns, name, second)
				moved.ResourceVersion = slice.ResourceVersion
				if _, err := m.cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, moved, metav1.UpdateOptions{}); err != nil {
					return fmt.Errorf("update EndpointSlice of %s/%s: %w", ns, name, err)
				}
				return nil
			})
		}
		// Not timed: back to the setting's number of services.
		if err := m.cs.DiscoveryV1().EndpointSlices(ns).Delete(ctx, name+"-1", metav1.DeleteOptions{}); err != nil && slice != nil {
			return fmt.Errorf("delete EndpointSlice of %s/%s: %w", ns, name, err)
		}
		m.cs.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{})
		sleepCtx(ctx, kubePause)
		if k%5 == 4 || k == rounds-1 {
			progress("%d services: %d of %d rounds", services, k+1, rounds)
		}
	}
	return nil
}

// freeIP picks a ClusterIP of the range that no service has or had, from the low end
// (the API server allocates from the upper band on its own).
func (m *kubeMeasurer) freeIP() (netip.Addr, error) {
	for a := m.kc.ServiceCIDR.Addr().Next(); m.kc.ServiceCIDR.Contains(a); a = a.Next() {
		if !m.used[a] {
			m.used[a] = true
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free ClusterIP left in %s", m.kc.ServiceCIDR)
}

// measure makes one change (write) while both nodes' probers wait for answers of want
// at dst, and records the sample, or the failure, in row.
func (m *kubeMeasurer) measure(ctx context.Context, row *kubeRow, dst netip.AddrPort, want netip.Addr, write func(context.Context) error) {
	var s kubeSample
	var errs [2]error
	// The scrapes make the proxies work (podnet's agent lists its services for its
	// gauges): that ends, garbage collection included, before the change starts, and
	// is not counted.
	before := m.snapshot()
	sleepCtx(ctx, kubeQuiet)
	before.cpu = m.cpu()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for side, n := range m.nodes {
		if !m.live(side) {
			continue
		}
		wg.Go(func() { s.follow[side], errs[side] = n.client.follow(pctx, dst, want, start) })
	}
	werr := write(ctx)
	s.call = time.Since(start)
	if werr != nil {
		cancel()
	}
	wg.Wait()
	// What each proxy says about the change, read as soon as traffic followed (not
	// counted in the CPU times either).
	paused := m.cpu()
	if st, err := kube.ReadStatus(ctx, m.nodes[sidePodnet].ctrlSock); err == nil && !st.LastSync.IsZero() {
		s.wrote[sidePodnet], s.lag = st.LastSync.Sub(start), st.LagSeconds
	}
	if m.live(sideKubeProxy) {
		if mt, err := scrapeIn(m.nodes[sideKubeProxy].lab.Node, kubeProxyMetricsAddr); err == nil {
			if ts := mt.sum("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "ip_family", is("IPv4")); ts > 0 {
				s.wrote[sideKubeProxy] = time.Unix(0, int64(ts*1e9)).Sub(start)
			}
		}
	}
	resumed := m.cpu()
	sleepCtx(ctx, kubePause)
	after := m.cpu()
	s.used = m.snapshot().minus(before)
	for i := range s.used.cpu {
		s.used.cpu[i] = after[i] - before.cpu[i] - (resumed[i] - paused[i])
	}
	for side := range m.nodes {
		if !m.live(side) {
			continue
		}
		err := errs[side]
		if werr != nil {
			err = werr
		}
		if err != nil {
			if row.failed[side] == 0 {
				row.firstErr[side] = fmt.Sprintf("%s to %s, want %s: %v", row.change, dst, want, err)
			}
			row.failed[side]++
			continue
		}
		s.ok[side] = true
	}
	if s.ok[sidePodnet] || s.ok[sideKubeProxy] {
		row.samples = append(row.samples, s)
	}
}

// cpu reads the CPU time of the proxies' processes, by kubeCounters.cpu's index.
func (m *kubeMeasurer) cpu() (c [3]time.Duration) {
	for side, n := range m.nodes {
		if !m.live(side) {
			continue
		}
		for i, pid := range n.pids() {
			if pid != 0 {
				d, _ := procCPU(pid)
				c[i] += d
			}
		}
	}
	return c
}

// snapshot reads the proxies' metrics (not the CPU times).
func (m *kubeMeasurer) snapshot() (c kubeCounters) {
	if mt, err := scrapeIn(m.nodes[sidePodnet].lab.Node, podnetMetricsAddr); err == nil {
		c.rules[sidePodnet] = seconds(mt.sum("podnet_nftables_duration_seconds_sum", "op", is("update", "sync")))
		c.ops[sidePodnet] = mt.sum("podnet_nftables_duration_seconds_count", "op", is("update", "sync"))
		c.mirror = seconds(mt.sum("podnet_request_duration_seconds_sum", "verb", is("mirror")))
		c.mirrors = mt.sum("podnet_request_duration_seconds_count", "verb", is("mirror"))
	}
	if m.live(sideKubeProxy) {
		// Both families' proxiers (dual stack); a change of an IPv4 service syncs IPv4's.
		if mt, err := scrapeIn(m.nodes[sideKubeProxy].lab.Node, kubeProxyMetricsAddr); err == nil {
			c.rules[sideKubeProxy] = seconds(mt.sum("kubeproxy_sync_proxy_rules_duration_seconds_sum", "", nil))
			c.ops[sideKubeProxy] = mt.sum("kubeproxy_sync_proxy_rules_duration_seconds_count", "", nil)
		}
	}
	return c
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func kubeNamespace(k int) string { return fmt.Sprintf("kb-%d", k) }

// kubeService is a ClusterIP service with port "http" 80 -> kubeTargetPort, without a
// selector (its EndpointSlices are the benchmark's). clusterIP may be invalid: the API
// server allocates one.
func kubeService(ns, name string, clusterIP netip.Addr) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: kubePort,
			TargetPort: intstr.FromInt32(kubeTargetPort), Protocol: corev1.ProtocolTCP}}}}
	if clusterIP.IsValid() {
		s.Spec.ClusterIP = clusterIP.String()
	}
	return s
}

// kubeSlice is the EndpointSlice <svc>-1 of service svc: the backends, ready, on port
// "http" kubeTargetPort.
func kubeSlice(ns, svc string, backends ...netip.Addr) *discoveryv1.EndpointSlice {
	name, port, proto, ready := "http", int32(kubeTargetPort), corev1.ProtocolTCP, true
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-1", Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "podnet-bench"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	for _, b := range backends {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{b.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return s
}

// kubeFillServices writes services from..to-1 (svc-<i> in namespace kb-<i mod 10>) with an
// EndpointSlice of every backend each, kubeWriters at once, and returns their
// ClusterIP:80 in order.
func kubeFillServices(ctx context.Context, cs kubernetes.Interface, from, to int, backends []netip.Addr, progress func(string, ...any)) ([]netip.AddrPort, error) {
	vips := make([]netip.AddrPort, to-from)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next, done atomic.Int64
	next.Store(int64(from))
	var mu sync.Mutex // guards firstErr
	var firstErr error
	var wg sync.WaitGroup
	for range kubeWriters {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				ns, name := kubeNamespace(i%kubeNamespaces), fmt.Sprintf("svc-%d", i)
				err := func() error {
					svc, err := cs.CoreV1().Services(ns).Create(ctx, kubeService(ns, name, netip.Addr{}), metav1.CreateOptions{})
					if err != nil {
						return fmt.Errorf("create service %s/%s: %w", ns, name, err)
					}
					ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
					if err != nil {
						return fmt.Errorf("service %s/%s: ClusterIP %q: %w", ns, name, svc.Spec.ClusterIP, err)
					}
					vips[i-from] = netip.AddrPortFrom(ip, kubePort)
					if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, kubeSlice(ns, name, backends...), metav1.CreateOptions{}); err != nil {
						return fmt.Errorf("create EndpointSlice of %s/%s: %w", ns, name, err)
					}
					return nil
				}()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				if n := done.Add(1); n%kubeFillLap == 0 {
					progress("%d services written", int(n)+from)
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return vips, firstErr
}

// newPodnetNode builds podnet's node: agent, network, pods, backends' servers, relay and
// controller, which it waits for until it leads and has synced.
func newPodnetNode(ctx context.Context, binDir, dir string, kc *kubetest.Cluster) (n *kubeNode, err error) {
	n = &kubeNode{}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.close())
			n = nil
		}
	}()
	bin := filepath.Join(binDir, "podnet")
	if _, err := os.Stat(bin); err != nil {
		return n, fmt.Errorf("%s missing (make build)", bin)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return n, err
	}
	if n.lab, err = lab.New(); err != nil {
		return n, err
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, nil, 0o644); err != nil {
		return n, err
	}
	n.agentSock = filepath.Join(dir, "podnet.sock")
	n.agent = agentproc.New(bin, n.agentSock, filepath.Join(dir, "agent.log"),
		"--netns", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(n.lab.Node)), "--state-dir", filepath.Join(dir, "state"),
		"--resolv-conf", resolv, "--service-cidr", kc.ServiceCIDR.String(), "--metrics-address", podnetMetricsAddr)
	if err := n.agent.Start(agentStartTimeout); err != nil {
		n.agent = nil
		return n, err
	}
	c := n.agent.Client()
	if _, err := c.CreateNetwork(ctx, api.NetworkSpec{Name: "pods", Driver: api.DriverBridge, Subnets: []string{kubePodSubnet}}); err != nil {
		return n, fmt.Errorf("create network: %w", err)
	}
	for i := range 1 + kubeBackends {
		sb, err := n.lab.Sandbox()
		if err != nil {
			return n, err
		}
		name := "client"
		if i > 0 {
			name = fmt.Sprintf("backend-%d", i-1)
		}
		r, err := c.Attach(ctx, api.AttachRequest{EndpointKey: api.EndpointKey{Network: "pods", ContainerID: name, IfName: "eth0"}}, int(sb))
		if err != nil {
			return n, fmt.Errorf("attach %s: %w", name, err)
		}
		if len(r.IPs) == 0 {
			return n, fmt.Errorf("attach %s: no address", name)
		}
		n.pods, n.gateway = append(n.pods, r.IPs[0].Address), r.IPs[0].Gateway
		if i == 0 {
			if n.client, err = newKubeClient(sb); err != nil {
				return n, err
			}
			continue
		}
		addr := r.IPs[0].Address.Addr()
		n.backends = append(n.backends, addr)
		stop, err := serveIdentity(sb, addr)
		if err != nil {
			return n, err
		}
		n.stops = append(n.stops, stop)
	}
	if n.relay, err = startRelay(n.lab.Node, kc.URL); err != nil {
		return n, err
	}
	n.ctrlSock, n.ctrlLog = filepath.Join(dir, "controller.sock"), filepath.Join(dir, "controller.log")
	cmd := exec.Command(bin, "--socket", n.agentSock, "controller", "--kubeconfig", kc.Kubeconfig,
		"--status-socket", n.ctrlSock, "--identity", "podnet-bench")
	if n.ctrl, err = agentproc.StartChild(cmd, n.ctrlLog, func(cmd *exec.Cmd) error { return kernel.StartIn(n.lab.Node, cmd) }); err != nil {
		return n, fmt.Errorf("start podnet controller: %w", err)
	}
	deadline := time.Now().Add(kubeStartWait)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := kube.ReadStatus(sctx, n.ctrlSock)
		cancel()
		if err == nil && st.Leading && st.Synced {
			return n, nil
		}
		select {
		case <-n.ctrl.Done():
			return n, fmt.Errorf("podnet controller exited:\n%s", agentproc.Tail(n.ctrlLog, 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return n, fmt.Errorf("podnet controller not leading and synced within %v (%v, %v):\n%s", kubeStartWait, st, err, agentproc.Tail(n.ctrlLog, 20))
		}
	}
}

// newKubeProxyNode builds kube-proxy's node after podnet's (twin): the same pods with
// the same addresses on a plain bridge, the Node object, the relay and kube-proxy, which
// it waits for until it reports healthy. unavailable says why kube-proxy cannot run
// here (the node is then nil); err is any other failure.
func newKubeProxyNode(ctx context.Context, dir string, kc *kubetest.Cluster, cs kubernetes.Interface, twin *kubeNode) (n *kubeNode, version, unavailable string, err error) {
	bin, err := kubeProxyBinary()
	if err != nil {
		return nil, "", err.Error(), nil
	}
	out, _ := exec.Command(bin, "--version").Output()
	version = strings.TrimPrefix(strings.TrimSpace(string(out)), "Kubernetes ")
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if _, err := lookPathIn("nft", path); err != nil {
		return nil, version, "kube-proxy's nftables mode execs nft, which is not installed (Debian package nftables; make kube-proxy installs it)", nil
	}
	n = &kubeNode{}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.close())
			n = nil
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return n, version, "", err
	}
	if n.lab, err = lab.New(); err != nil {
		return n, version, "", err
	}
	// The same addresses as podnet's pods, and podnet's gateway on the bridge.
	gw := twin.gateway
	if !gw.IsValid() || len(twin.pods) != 1+kubeBackends {
		return n, version, "", fmt.Errorf("podnet's pods: want %d and a gateway, have %v, gateway %v", 1+kubeBackends, twin.pods, gw)
	}
	subnet := netip.MustParsePrefix(kubePodSubnet)
	if err := n.lab.Bridge(kubeBridge, netip.PrefixFrom(gw, subnet.Bits())); err != nil {
		return n, version, "", err
	}
	node, err := kernel.OpenNode(n.lab.Node)
	if err != nil {
		return n, version, "", err
	}
	err = errors.Join(node.EnableForwarding(), node.BridgeNetfilter(true))
	node.Close()
	if err != nil {
		return n, version, "", err
	}
	for i := range 1 + kubeBackends {
		sb, err := n.lab.Sandbox()
		if err != nil {
			return n, version, "", err
		}
		a := twin.pods[i]
		if _, err := n.lab.Plug(sb, lab.Veth{HostIf: fmt.Sprintf("kpveth%d", i), Bridge: kubeBridge,
			Addrs: []netip.Prefix{a}, Gateways: []netip.Addr{gw}}); err != nil {
			return n, version, "", err
		}
		if i == 0 {
			if n.client, err = newKubeClient(sb); err != nil {
				return n, version, "", err
			}
			continue
		}
		n.backends = append(n.backends, a.Addr())
		stop, err := serveIdentity(sb, a.Addr())
		if err != nil {
			return n, version, "", err
		}
		n.stops = append(n.stops, stop)
	}
	if !slices.Equal(n.backends, twin.backends) {
		return n, version, "", fmt.Errorf("backends %v, podnet's %v", n.backends, twin.backends)
	}

	// kube-proxy reads its node's addresses from the Node object (and waits 30 s for them).
	nodeObj, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: kubeProxyNode}}, metav1.CreateOptions{})
	if err != nil {
		return n, version, "", fmt.Errorf("create node %s: %w", kubeProxyNode, err)
	}
	nodeObj.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: lab.NodeAddr4.Addr().String()}, {Type: corev1.NodeHostName, Address: kubeProxyNode}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, nodeObj, metav1.UpdateOptions{}); err != nil {
		return n, version, "", fmt.Errorf("status of node %s: %w", kubeProxyNode, err)
	}
	if n.relay, err = startRelay(n.lab.Node, kc.URL); err != nil {
		return n, version, "", err
	}
	n.kpLog = filepath.Join(dir, "kube-proxy.log")
	cmd := exec.Command(bin, kubeProxyArgs(kc.Kubeconfig)...)
	cmd.Env = append(os.Environ(), "PATH="+path)
	if n.kp, err = agentproc.StartChild(cmd, n.kpLog, func(cmd *exec.Cmd) error { return kernel.StartIn(n.lab.Node, cmd) }); err != nil {
		return n, version, "", fmt.Errorf("start kube-proxy: %w", err)
	}
	deadline := time.Now().Add(kubeStartWait)
	for {
		// Healthy, and its rules written once (healthz answers 200 before the first sync).
		code, err := httpGetIn(n.lab.Node, kubeProxyHealthAddr, "/healthz")
		if err == nil && code == http.StatusOK {
			mt, err := scrapeIn(n.lab.Node, kubeProxyMetricsAddr)
			if err == nil && mt.sum("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "ip_family", is("IPv4")) > 0 {
				return n, version, "", nil
			}
		}
		select {
		case <-n.kp.Done():
			return n, version, "", fmt.Errorf("kube-proxy exited:\n%s", agentproc.Tail(n.kpLog, 20))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return n, version, "", fmt.Errorf("kube-proxy not healthy within %v (%d, %v):\n%s", kubeStartWait, code, err, agentproc.Tail(n.kpLog, 20))
		}
	}
}

// kubeProxyArgs runs kube-proxy in nftables mode for kubeProxyNode, with its servers
// on the loopback of its namespace, and leaving alone the conntrack sysctls and module
// parameter it would otherwise set (nf_conntrack_max and the hash size are the whole
// machine's, not its namespace's).
func kubeProxyArgs(kubeconfig string) []string {
	return []string{
		"--proxy-mode=nftables",
		"--kubeconfig=" + kubeconfig,
		"--hostname-override=" + kubeProxyNode,
		"--cluster-cidr=" + kubePodSubnet,
		"--metrics-bind-address=" + kubeProxyMetricsAddr,
		"--healthz-bind-address=" + kubeProxyHealthAddr,
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--oom-score-adj=0",
	}
}

// kubeProxyBinary is $PODNET_KUBE_PROXY, or what hack/kube-proxy.sh builds (once; later
// runs find it in the cache), run from the module root as bench.sh does.
func kubeProxyBinary() (string, error) {
	if bin := os.Getenv("PODNET_KUBE_PROXY"); bin != "" {
		return bin, nil
	}
	cmd := exec.Command("hack/kube-proxy.sh")
	cmd.Env = append(os.Environ(), "KUBE_VERSION="+kubetest.Version)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/kube-proxy.sh could not build kube-proxy %s: %v: %s", kubetest.Version, err, agentproc.LastLines(stderr.String(), 10))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	return lines[len(lines)-1], nil
}

func lookPathIn(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s", name, path)
}

// serveIdentity answers connections on addr:kubeTargetPort inside ns with addr.
func serveIdentity(ns netns.NsHandle, addr netip.Addr) (stop func(), err error) {
	l, err := kernel.ListenIn(ns, "tcp", netip.AddrPortFrom(addr, kubeTargetPort).String())
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", addr, err)
	}
	go probe.ServeIdentity(l, addr)
	return func() { l.Close() }, nil
}

// relay accepts connections on the API server's address inside a node's namespace
// (127.0.0.1:PORT there) and copies each to the API server, in the benchmark's own
// namespace: a process inside the node reaches the API server with the cluster's
// kubeconfig, and nothing of the benchmark's namespace changes.
type relay struct {
	l     net.Listener
	mu    sync.Mutex // guards conns
	conns map[net.Conn]bool
}

func startRelay(ns netns.NsHandle, apiURL string) (*relay, error) {
	target := strings.TrimPrefix(apiURL, "https://")
	if err := kernel.EnsureLoopbackUp(ns); err != nil {
		return nil, err
	}
	l, err := kernel.ListenIn(ns, "tcp", target)
	if err != nil {
		return nil, fmt.Errorf("relay to the API server: %w", err)
	}
	r := &relay{l: l, conns: map[net.Conn]bool{}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go r.serve(c, target)
		}
	}()
	return r, nil
}

func (r *relay) serve(c net.Conn, target string) {
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !r.track(c, up) {
		return
	}
	defer r.untrack(c, up)
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// track records a relayed pair; false (both closed) once the relay is closed.
func (r *relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		r.conns[c] = true
	}
	return true
}

func (r *relay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(r.conns, c)
	}
}

// close stops accepting and closes the relayed connections.
func (r *relay) close() {
	r.l.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

// kubeClient is a client pod's prober: a pool of sockets made in its namespace (the
// policy section's polClient), shared by goroutines.
type kubeClient struct {
	mu sync.Mutex // guards pc
	pc polClient
}

// newKubeClient makes a prober for ns (the handle stays the caller's).
func newKubeClient(ns netns.NsHandle) (*kubeClient, error) {
	fd, err := unix.Dup(int(ns))
	if err != nil {
		return nil, err
	}
	return &kubeClient{pc: polClient{ns: netns.NsHandle(fd)}}, nil
}

func (c *kubeClient) socket() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pc.socket()
}

func (c *kubeClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pc.close()
}

// kubeTry is one connection of a prober.
type kubeTry struct {
	start   time.Time
	fd      int
	reading bool   // connected, waiting for the identity
	buf     []byte // what the backend sent so far
}

// follow connects to dst every kubeInterval from start on, each connection waiting
// kubeConnectWait at most for its backend's identity, until kubeConfirm answers in a
// row came from want, and returns the time from start to the first connection of that
// run. It fails after kubeFollowWait, or when ctx ends.
func (c *kubeClient) follow(ctx context.Context, dst netip.AddrPort, want netip.Addr, start time.Time) (time.Duration, error) {
	var tries []kubeTry
	var outs []outcome
	var last []string // why the latest connections did not count
	inFlight := map[int32]int{}
	defer func() {
		for fd := range inFlight {
			unix.Close(int(fd))
		}
	}()
	end := func(i int, out outcome, why string) {
		outs[i] = out
		if out != outAllowed {
			last = append(last, why)
			if len(last) > 3 {
				last = last[1:]
			}
		}
		delete(inFlight, int32(tries[i].fd))
		unix.Close(tries[i].fd)
	}
	next := start
	pfds := make([]unix.PollFd, 0, 256)
	for {
		now := time.Now()
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if now.Sub(start) > kubeFollowWait {
			return 0, fmt.Errorf("traffic did not follow within %v (%d connections, the last failures: %s)", kubeFollowWait, len(tries), strings.Join(last, "; "))
		}
		if !now.Before(next) {
			fd, err := c.socket()
			if err != nil {
				return 0, err
			}
			tries = append(tries, kubeTry{start: time.Now(), fd: fd})
			outs = append(outs, outPending)
			i := len(tries) - 1
			inFlight[int32(fd)] = i
			if err := startConnect(fd, dst); err != nil {
				end(i, outFailed, err.Error())
			}
			if next = next.Add(kubeInterval); next.Before(now) {
				next = now.Add(kubeInterval)
			}
		}
		pfds = pfds[:0]
		for fd, i := range inFlight {
			if now.Sub(tries[i].start) >= kubeConnectWait {
				end(i, outDropped, "no answer within "+kubeConnectWait.String())
				continue
			}
			ev := int16(unix.POLLOUT)
			if tries[i].reading {
				ev = unix.POLLIN
			}
			pfds = append(pfds, unix.PollFd{Fd: fd, Events: ev})
		}
		ts := unix.NsecToTimespec(int64(max(time.Until(next), 0)))
		if _, err := unix.Ppoll(pfds, &ts, nil); err != nil && !errors.Is(err, unix.EINTR) {
			return 0, fmt.Errorf("poll: %w", err)
		}
		for _, p := range pfds {
			if p.Revents == 0 {
				continue
			}
			i := inFlight[p.Fd]
			t := &tries[i]
			if !t.reading {
				if out, err := connected(int(p.Fd)); out != outAllowed {
					end(i, outFailed, fmt.Sprint(err))
					continue
				}
				t.reading = true
				continue
			}
			var b [64]byte
			m, err := unix.Read(int(p.Fd), b[:])
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				end(i, outFailed, "read: "+err.Error())
				continue
			}
			t.buf = append(t.buf, b[:m]...)
			if m > 0 && bytes.IndexByte(t.buf, '\n') < 0 {
				continue
			}
			got, perr := netip.ParseAddr(strings.TrimSpace(string(t.buf)))
			switch {
			case perr != nil:
				end(i, outFailed, fmt.Sprintf("answer %q", t.buf))
			case got != want:
				end(i, outFailed, "answered by "+got.String())
			default:
				end(i, outAllowed, "")
			}
		}
		if k, ok := flipAt(outs, outAllowed, kubeConfirm); ok {
			return tries[k].start.Sub(start), nil
		}
	}
}

// connectOnce makes one connection to dst and tells whether it was established
// within wait.
func (c *kubeClient) connectOnce(dst netip.AddrPort, wait time.Duration) bool {
	fd, err := c.socket()
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	start := time.Now()
	if startConnect(fd, dst) != nil {
		return false
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		left := wait - time.Since(start)
		if left <= 0 {
			return false
		}
		ts := unix.NsecToTimespec(int64(left))
		n, err := unix.Ppoll(pfd, &ts, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false
		}
		if n > 0 {
			out, _ := connected(fd)
			return out == outAllowed
		}
	}
}

// converge waits until every one of vips answers a connection from the client pod (the
// last written first, then all of them, again until none is left), and returns the time
// from since until then.
func (c *kubeClient) converge(ctx context.Context, vips []netip.AddrPort, since time.Time) (time.Duration, error) {
	pending := vips
	if len(vips) > 0 {
		pending = []netip.AddrPort{vips[len(vips)-1]}
	}
	full := false
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		pending = c.unanswered(pending)
		if len(pending) == 0 {
			if full {
				return time.Since(since), nil
			}
			pending, full = vips, true
			continue
		}
		if time.Since(since) > kubeConvergeWait {
			return 0, fmt.Errorf("%d of %d ClusterIPs do not answer %v after the last write, e.g. %s", len(pending), len(vips), kubeConvergeWait, pending[0])
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// unanswered connects to each of dsts once, kubeCheckers at a time, and returns those
// that did not answer.
func (c *kubeClient) unanswered(dsts []netip.AddrPort) []netip.AddrPort {
	var mu sync.Mutex // guards out
	var out []netip.AddrPort
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(kubeCheckers, len(dsts)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(dsts) {
					return
				}
				if !c.connectOnce(dsts[i], kubeConnectWait) {
					mu.Lock()
					out = append(out, dsts[i])
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return out
}

// metrics are the samples of a Prometheus text exposition, by series (name and labels).
type metrics map[string]float64

// sum adds the values of name's series whose label's value passes keep (every series
// when keep is nil).
func (m metrics) sum(name, label string, keep func(value string) bool) float64 {
	var s float64
	for series, v := range m {
		base, labels, _ := strings.Cut(series, "{")
		if base != name {
			continue
		}
		if keep != nil {
			_, value, _ := strings.Cut(labels, label+`="`)
			value, _, _ = strings.Cut(value, `"`)
			if !keep(value) {
				continue
			}
		}
		s += v
	}
	return s
}

// is is a keep function of metrics.sum.
func is(want ...string) func(string) bool {
	return func(v string) bool { return slices.Contains(want, v) }
}

// httpGetIn asks http://addr/path from inside ns and returns the status code.
func httpGetIn(ns netns.NsHandle, addr, path string) (int, error) {
	resp, err := httpClientIn(ns, addr).Get("http://" + addr + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func httpClientIn(ns netns.NsHandle, addr string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return kernel.DialIn(ctx, ns, "tcp", addr, 2*time.Second)
		}}}
}

// scrapeIn reads the metrics served on addr inside ns.
func scrapeIn(ns netns.NsHandle, addr string) (metrics, error) {
	resp, err := httpClientIn(ns, addr).Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// procCPU is the CPU time of process pid: every thread's time on a CPU
// (/proc/PID/task/TID/schedstat), and that of its children that ended (kube-proxy's nft).
func procCPU(pid int) (time.Duration, error) {
	total, err := threadsCPU(pid)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return total, err
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	if f := strings.Fields(rest); len(f) > 14 {
		cu, _ := strconv.ParseInt(f[13], 10, 64)
		cs, _ := strconv.ParseInt(f[14], 10, 64)
		total += time.Duration(cu+cs) * time.Second / clockTicks
	}
	return total, nil
}

// rootSysctls are what kube-proxy could change outside its namespace: the conntrack
// settings it tunes by default (nf_conntrack_max and the module's hash size are the
// whole machine's), and sysctls its other modes write.
var rootSysctls = []string{
	"net/netfilter/nf_conntrack_max",
	"net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
	"net/netfilter/nf_conntrack_tcp_be_liberal",
	"net/netfilter/nf_conntrack_udp_timeout",
	"net/netfilter/nf_conntrack_udp_timeout_stream",
	"net/ipv4/conf/all/route_localnet",
	"net/ipv4/ip_forward",
	"net/bridge/bridge-nf-call-iptables",
}

// rootState reads, in the benchmark's own namespace, rootSysctls, the conntrack hash
// size and the nftables tables.
func rootState() (map[string]string, error) {
	root, err := netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open root netns: %w", err)
	}
	defer root.Close()
	st := map[string]string{}
	for _, k := range rootSysctls {
		v, err := kernel.ReadSysctl(root, k)
		if err != nil {
			v = "unreadable"
		}
		st[k] = v
	}
	b, err := os.ReadFile("/sys/module/nf_conntrack/parameters/hashsize")
	st["nf_conntrack hashsize"] = strings.TrimSpace(string(b))
	if err != nil {
		st["nf_conntrack hashsize"] = "unreadable"
	}
	st["nftables tables"] = tablesIn(root)
	return st, nil
}

// tablesIn lists the nftables tables of ns ("family name", sorted).
func tablesIn(ns netns.NsHandle) string {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return "unreadable: " + err.Error()
	}
	defer c.CloseLasting()
	tables, err := c.ListTables()
	if err != nil {
		return "unreadable: " + err.Error()
	}
	family := map[nftables.TableFamily]string{nftables.TableFamilyINet: "inet", nftables.TableFamilyIPv4: "ip",
		nftables.TableFamilyIPv6: "ip6", nftables.TableFamilyARP: "arp", nftables.TableFamilyNetdev: "netdev", nftables.TableFamilyBridge: "bridge"}
	var out []string
	for _, t := range tables {
		out = append(out, family[t.Family]+" "+t.Name)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// printKube prints the kube section.
func printKube(w io.Writer, res kubeResult) {
	fmt.Fprintf(w, "### Kubernetes services: from an API change to traffic\n\n")
	kp := "kube-proxy " + res.kpVersion + " in nftables mode (nft: Debian's nftables " + debianVersion("nftables") + ")"
	if res.kpUnavailable != "" {
		kp = "kube-proxy: not available here (" + res.kpUnavailable + "); its own control-plane measurements are graphs without figures to quote, " +
			"see https://kubernetes.io/blog/2025/02/28/nftables-kube-proxy/ (\"Part 2: control plane latency\")"
	}
	fmt.Fprintf(w, "one kube-apiserver %s (Debian's etcd) watched by podnet (`podnet controller` feeding a `podnet agent` through its socket) and by %s, "+
		"each proxy on a node namespace of its own with a client pod and %d backend pods (podnet's bridge network; for kube-proxy plain veths on a plain bridge "+
		"with the same addresses, bridge-nf-call-iptables on in both); the controller and kube-proxy reach the API server through the same relay. "+
		"Services svc-<i> (ClusterIP, port %d -> %d) in %d namespaces, each with an EndpointSlice of the %d backends, then %d rounds of: "+
		"create a Service and its EndpointSlice with one backend, then move the slice to another backend, each change timed from the start of its "+
		"first API write until the first of the connections (a new one every %v from the client pod to ClusterIP:%d, each waiting %v) from which on "+
		"%d answers in a row came from the wanted backend, on both nodes at once; changes %v apart "+
		"(kube-proxy starts a sync no sooner than 1 s, its minimum sync period, after the last one ended: each change finds both proxies idle)\n\n",
		kubetest.Version, kp, kubeBackends, kubePort, kubeTargetPort, kubeNamespaces, kubeBackends, res.rounds,
		kubeInterval, kubePort, kubeConnectWait, kubeConfirm, kubePause)
	fmt.Fprintf(w, "A create is two writes, the Service and then its EndpointSlice: kube-proxy syncs after the first and starts the sync that "+
		"brings the backend no sooner than its minimum sync period (--iptables-min-sync-period, 1 s by default, which its nftables mode uses too) "+
		"after that one ended; podnet's controller applies each write as it comes.\n\n")

	fmt.Fprintf(w, "| change | services | podnet median | p90 | max | kube-proxy median | p90 | max | podnet / kube-proxy (medians) | target (podnet) |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	medians := map[string][2]time.Duration{}
	for _, ch := range kubeChanges {
		for _, services := range []int{kubeFew, res.many} {
			row := res.findRow(services, ch.name)
			cells := make([]string, 0, 6)
			var med [2]time.Duration
			for side := range kubeSides {
				ds := row.follows(side)
				switch {
				case side == sideKubeProxy && res.kpUnavailable != "":
					cells = append(cells, "n/a", "", "")
				case len(ds) == 0 && res.err != nil:
					cells = append(cells, "failed (below)", "", "")
				case len(ds) == 0:
					cells = append(cells, "not run", "", "")
				default:
					s := summarize(ds)
					med[side] = s.median
					cells = append(cells, ms(s.median), ms(s.p90), ms(slices.Max(ds)))
				}
			}
			medians[fmt.Sprint(ch.name, services)] = med
			ratio, target := "", "< 1 s"
			if med[sidePodnet] > 0 && med[sideKubeProxy] > 0 {
				ratio = fmt.Sprintf("%.2f", float64(med[sidePodnet])/float64(med[sideKubeProxy]))
			}
			if med[sidePodnet] > 0 {
				target += verdict(med[sidePodnet] < kubeTarget)
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s |\n", ch.label, services, strings.Join(cells, " | "), ratio, target)
		}
	}
	fmt.Fprintln(w)
	// From the first write, the times hold the API server's own writes, which grow with
	// the services it holds whatever watches it: reported. The target applies from the
	// API's answer to the last write, when the change is in the API (below).
	for _, ch := range kubeChanges {
		few, many := medians[fmt.Sprint(ch.name, kubeFew)], medians[fmt.Sprint(ch.name, res.many)]
		apiFew, apiMany := res.findRow(kubeFew, ch.name).writeMedian(), res.findRow(res.many, ch.name).writeMedian()
		for side, name := range kubeSides {
			if few[side] == 0 || many[side] == 0 {
				continue
			}
			r := float64(many[side]) / float64(few[side])
			fmt.Fprintf(w, "- %s, %s: median with %d services / with %d: %.2f (reported; the API server's writes alone: %s -> %s, %.2f)\n",
				name, ch.name, res.many, kubeFew, r, ms(apiFew), ms(apiMany), float64(apiMany)/float64(max(apiFew, 1)))
		}
	}
	// The same without the API server's write time, which grows with the services it
	// holds whatever proxy watches it (and with kube-proxy's syncs on the same cores).
	for _, ch := range kubeChanges {
		for side, name := range kubeSides {
			few, many := res.findRow(kubeFew, ch.name).followsAfterAck(side), res.findRow(res.many, ch.name).followsAfterAck(side)
			if len(few) == 0 || len(many) == 0 {
				continue
			}
			mf, mm := summarize(few).median, summarize(many).median
			r := float64(mm) / float64(mf)
			target := "reported"
			if side == sidePodnet {
				target = fmt.Sprintf("target <= %g%s", kubeGrowthTarget, verdict(r <= kubeGrowthTarget))
			}
			fmt.Fprintf(w, "- %s, %s, from the API's answer to the last write: %s with %d services, %s with %d: %.2f (%s)\n",
				name, ch.name, ms(mm), res.many, ms(mf), kubeFew, r, target)
		}
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "Where the time goes (medians per change; times from the start of the change, CPU until %v after traffic followed): the API writes; "+
		"podnet: when the controller had applied its last batch (status lastSync) and its lag for it (lagSeconds: from the first watch event of the batch's "+
		"oldest key), the agent answering the controller's Mirror requests (podnet_request_duration_seconds, verb mirror), of which writing nftables "+
		"(podnet_nftables_duration_seconds, update and sync), CPU of agent and controller; kube-proxy: when its last rules sync ended "+
		"(kubeproxy_sync_proxy_rules_last_timestamp_seconds), its syncs (kubeproxy_sync_proxy_rules_duration_seconds), its CPU with the nft it ran\n\n", kubePause)
	fmt.Fprintf(w, "| change | services | API writes | podnet controller applied | controller lag | agent Mirror requests (count) | agent nftables writes (count) | agent CPU | controller CPU "+
		"| kube-proxy rules synced | kube-proxy syncs (count) | kube-proxy CPU |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, ch := range kubeChanges {
		for _, services := range []int{kubeFew, res.many} {
			row := res.findRow(services, ch.name)
			if len(row.samples) == 0 {
				fmt.Fprintf(w, "| %s | %d | n/a | | | | | | | | | |\n", ch.name, services)
				continue
			}
			med := func(f func(s kubeSample) time.Duration) string {
				var ds []time.Duration
				for _, s := range row.samples {
					ds = append(ds, f(s))
				}
				return ms(summarize(ds).median)
			}
			count := func(f func(s kubeSample) float64) string {
				var xs []float64
				for _, s := range row.samples {
					xs = append(xs, f(s))
				}
				return fmt.Sprintf("%.0f", median(xs))
			}
			kpCells := "n/a | | "
			if res.kpUnavailable == "" {
				kpCells = fmt.Sprintf("%s | %s (%s) | %s", med(func(s kubeSample) time.Duration { return s.wrote[sideKubeProxy] }),
					med(func(s kubeSample) time.Duration { return s.used.rules[sideKubeProxy] }), count(func(s kubeSample) float64 { return s.used.ops[sideKubeProxy] }),
					med(func(s kubeSample) time.Duration { return s.used.cpu[cpuKubeProxy] }))
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s (%s) | %s (%s) | %s | %s | %s |\n", ch.name, services,
				med(func(s kubeSample) time.Duration { return s.call }),
				med(func(s kubeSample) time.Duration { return s.wrote[sidePodnet] }),
				med(func(s kubeSample) time.Duration { return seconds(s.lag) }),
				med(func(s kubeSample) time.Duration { return s.used.mirror }), count(func(s kubeSample) float64 { return s.used.mirrors }),
				med(func(s kubeSample) time.Duration { return s.used.rules[sidePodnet] }), count(func(s kubeSample) float64 { return s.used.ops[sidePodnet] }),
				med(func(s kubeSample) time.Duration { return s.used.cpu[cpuAgent] }),
				med(func(s kubeSample) time.Duration { return s.used.cpu[cpuController] }), kpCells)
		}
	}
	fmt.Fprintln(w)

	for _, f := range res.fills {
		fmt.Fprintf(w, "- %d services with their EndpointSlices written in %.1f s (%d writers, %.0f objects/s); every ClusterIP answered, after the last write: ",
			f.services, f.wall.Seconds(), kubeWriters, float64(2*(f.services-prevServices(res.fills, f.services)))/f.wall.Seconds())
		var parts []string
		for side, name := range kubeSides {
			switch {
			case side == sideKubeProxy && res.kpUnavailable != "":
			case f.err[side] != nil:
				parts = append(parts, name+" failed: "+longCell(f.err[side].Error()))
			default:
				parts = append(parts, fmt.Sprintf("%s %.2f s", name, f.converge[side].Seconds()))
			}
		}
		fmt.Fprintf(w, "%s\n", strings.Join(parts, ", "))
	}
	for _, row := range res.rows {
		for side, name := range kubeSides {
			if row.failed[side] > 0 {
				fmt.Fprintf(w, "- %s, %s with %d services: %d changes failed, the first: %s\n", name, row.change, row.services, row.failed[side], longCell(row.firstErr[side]))
			}
		}
	}
	if row := res.findRow(kubeFew, "create"); len(row.samples) > 0 && row.samples[0].lag == 0 && row.samples[0].wrote[sidePodnet] > 0 {
		fmt.Fprintf(w, "- the controller's lag reads 0 for a create: the EndpointSlice's event queues the service's key again while the Service's batch is "+
			"applied, and the time of that event is lost when the batch ends (internal/kube Controller.work); \"controller applied\" is the figure to read\n")
	}
	if res.ctrl.Identity != "" {
		fmt.Fprintf(w, "- podnet controller at the end: %d services mirrored, largest lag %.3f s, %d failed batches, %d objects reported\n",
			res.ctrl.Objects[api.KindService], res.ctrl.MaxLagSeconds, res.ctrl.SinkErrors, res.ctrl.Reported)
	}
	if res.kpTables != "" {
		fmt.Fprintf(w, "- nftables tables of kube-proxy's node namespace once it ran: %s\n", res.kpTables)
	}
	if res.rootBefore != nil && res.rootAfter != nil {
		var changed []string
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range res.rootBefore {
				if !yield(k) {
					return
				}
			}
		})
		for _, k := range keys {
			if res.rootBefore[k] != res.rootAfter[k] {
				changed = append(changed, fmt.Sprintf("%s %s -> %s", k, res.rootBefore[k], res.rootAfter[k]))
			}
		}
		if len(changed) == 0 {
			fmt.Fprintf(w, "- the benchmark's own namespace, before and after (kube-proxy stopped): the same %s, nf_conntrack hashsize and nftables tables (%s)\n",
				strings.Join(rootSysctls, ", "), res.rootAfter["nftables tables"])
		} else {
			fmt.Fprintf(w, "- CHANGED in the benchmark's own namespace during the section: %s\n", strings.Join(changed, "; "))
		}
	}
	if res.err != nil {
		fmt.Fprintf(w, "- the section failed: %s\n", longCell(res.err.Error()))
	}
	fmt.Fprintln(w)
}

// findRow is row without adding one.
func (r kubeResult) findRow(services int, change string) *kubeRow {
	for _, row := range r.rows {
		if row.services == services && row.change == change {
			return row
		}
	}
	return &kubeRow{services: services, change: change}
}

// follows are the times of side's successful samples.
func (row *kubeRow) follows(side int) []time.Duration {
	var ds []time.Duration
	for _, s := range row.samples {
		if s.ok[side] {
			ds = append(ds, s.follow[side])
		}
	}
	return ds
}

// writeMedian is the median time of the changes' API writes (from the first write's
// start to the answer to the last), 0 without samples.
func (row *kubeRow) writeMedian() time.Duration {
	if len(row.samples) == 0 {
		return 0
	}
	var ds []time.Duration
	for _, s := range row.samples {
		ds = append(ds, s.call)
	}
	return summarize(ds).median
}

// followsAfterAck are the times of side's changes that followed, from the API server's
// answer to the change's last write (the change is in the API) instead of its first
// write's start: the API server's own write time left out (0 when traffic followed
// before the answer reached the bench).
func (row *kubeRow) followsAfterAck(side int) []time.Duration {
	var ds []time.Duration
	for _, s := range row.samples {
		if s.ok[side] {
			ds = append(ds, max(0, s.follow[side]-s.call))
		}
	}
	return ds
}

// prevServices is the setting filled before the one of services (0 for the first).
func prevServices(fills []kubeFill, services int) int {
	prev := 0
	for _, f := range fills {
		if f.services < services {
			prev = max(prev, f.services)
		}
	}
	return prev
}
