package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agentproc"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/plan"
)

// The cluster section (multi-node): node namespaces on one underlay bridge
// (internal/lab.Cluster), Debian's etcd on 127.0.0.1, one `podnet agent` process per
// node.
//
//   - throughput across nodes, one TCP stream, pod on node 0 to pod on node 1: podnet's
//     vxlan and direct networks against the same kernel objects built without podnet
//     (a bridge with proxy ARP, a VXLAN device with static FDB and neighbour entries
//     and a route, or a route via the other node; no agent, no nftables) on two more
//     nodes of the same underlay; rounds interleave the four rows;
//   - convergence: with 10 and with 20 nodes (a pod on every node but the last), the
//     time from the start of the last node's first ADD until every other node routes to
//     the block it claimed (read from each node's routing table every 2 ms);
//   - etcd requests per ADD, from the agents' podnet_store_requests_total, for ADDs into
//     a block the node holds already;
//   - ADD median on etcd against the embedded store (bbolt), the rows interleaved.

const (
	clusterTpNodes   = 4 // podnet n0, n1; the hand-built floors f2, f3
	clusterLease     = 5 * time.Second
	convergeSamples  = 5 // joining nodes timed per cluster size
	convergeDeadline = 10 * time.Second
	addSamples       = 20
)

var convergeSizes = []int{10, 20}

// clusterTpRows are the rows of the cross-node throughput table.
var clusterTpRows = []struct{ name, label, ref string }{
	{"floor-vxlan", "hand-built VXLAN (bridge, vxlan device, static FDB), no rules", ""},
	{"vxlan", "podnet crossNode vxlan, pod to pod", "floor-vxlan"},
	{"floor-direct", "hand-built routing via the other node (bridge, route), no rules", ""},
	{"direct", "podnet crossNode direct, pod to pod", "floor-direct"},
}

const clusterTarget = 0.95

type clusterResult struct {
	rates    map[string][]float64
	converge map[int][]time.Duration
	// convergeCPU is, per join, the CPU time the other nodes' agents spent on it, each
	// on average: what a node pays for a join, whatever the machine's cores.
	convergeCPU map[int][]time.Duration
	// requests per ADD into a held block, and the ADD medians on etcd and bbolt.
	perAdd           float64
	addEtcd, addBolt summary
	errs             map[string]error
	err              error
}

// measureCluster runs the whole section.
func measureCluster(ctx context.Context, binDir string, runs int, d time.Duration) (res clusterResult) {
	res = clusterResult{rates: map[string][]float64{}, converge: map[int][]time.Duration{}, convergeCPU: map[int][]time.Duration{}, errs: map[string]error{}}
	dir, err := os.MkdirTemp("", "podnet-bench-cluster-")
	if err != nil {
		res.err = err
		return res
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(binDir, "podnet")
	res.errs["throughput"] = clusterThroughput(ctx, bin, filepath.Join(dir, "tp"), runs, d, res.rates)
	for _, n := range convergeSizes {
		if ctx.Err() != nil {
			break
		}
		res.converge[n], res.convergeCPU[n], res.errs[fmt.Sprintf("converge-%d", n)] = clusterConverge(ctx, bin, filepath.Join(dir, fmt.Sprintf("conv%d", n)), n)
	}
	if ctx.Err() == nil {
		res.perAdd, res.addEtcd, res.addBolt, res.errs["add"] = clusterAdds(ctx, bin, filepath.Join(dir, "add"))
	}
	return res
}

// cluster is a lab.Cluster with etcd and podnet agents on some of its nodes.
type cluster struct {
	lab    *lab.Cluster
	etcd   *agentproc.Etcd
	agents []*agentproc.Proc
	dir    string
}

// startCluster builds n nodes and runs an agent on the first agents of them.
func startCluster(bin, dir string, n, agents int) (*cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &cluster{dir: dir}
	var err error
	if c.etcd, err = agentproc.StartEtcd(dir); err != nil {
		return nil, err
	}
	if c.lab, err = lab.NewCluster(n); err != nil {
		c.stop()
		return nil, err
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, nil, 0o644); err != nil {
		c.stop()
		return nil, err
	}
	for i := range agents {
		p := agentproc.New(bin, filepath.Join(dir, fmt.Sprintf("n%d.sock", i)), filepath.Join(dir, fmt.Sprintf("n%d.log", i)),
			"--netns", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(c.lab.Nodes[i].Node)), "--store", c.etcd.Endpoint(),
			"--node-name", fmt.Sprintf("n%d", i), "--node-ip", lab.UnderlayAddr(i).Addr().String(),
			"--lease-ttl", clusterLease.String(), "--resolv-conf", resolv, "--state-dir", filepath.Join(dir, fmt.Sprintf("n%d", i)))
		c.agents = append(c.agents, p)
		if err := p.Start(30 * time.Second); err != nil {
			c.stop()
			return nil, fmt.Errorf("agent n%d: %w", i, err)
		}
	}
	return c, nil
}

func (c *cluster) stop() error {
	var errs []error
	for _, a := range c.agents {
		errs = append(errs, a.Stop())
	}
	if c.lab != nil {
		errs = append(errs, c.lab.Close())
	}
	if c.etcd != nil {
		c.etcd.Stop()
	}
	return errors.Join(errs...)
}

// attach attaches a new sandbox of node i to network; it returns the sandbox and the
// pod's IPv4 address.
func (c *cluster) attach(ctx context.Context, i int, network, id string) (netns.NsHandle, netip.Addr, error) {
	sb, err := c.lab.Nodes[i].Sandbox()
	if err != nil {
		return sb, netip.Addr{}, err
	}
	res, err := c.agents[i].Client().Attach(ctx, api.AttachRequest{EndpointKey: api.EndpointKey{Network: network, ContainerID: id, IfName: "eth0"}}, int(sb))
	if err != nil {
		return sb, netip.Addr{}, fmt.Errorf("attach %s on n%d: %w", id, i, err)
	}
	return sb, res.IPs[0].Address.Addr(), nil
}

// clusterThroughput measures the four cross-node rows.
func clusterThroughput(ctx context.Context, bin, dir string, runs int, d time.Duration, rates map[string][]float64) (err error) {
	c, err := startCluster(bin, dir, clusterTpNodes, 2)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	flows := map[string]flow{}
	for _, nw := range []api.NetworkSpec{
		{Name: "cv", Subnets: []string{"10.81.0.0/16"}, CrossNode: api.CrossNodeVXLAN},
		{Name: "cd", Subnets: []string{"10.82.0.0/16"}, CrossNode: api.CrossNodeDirect},
	} {
		if _, err := c.agents[0].Client().CreateNetwork(ctx, nw); err != nil {
			return err
		}
		a, _, err := c.attach(ctx, 0, nw.Name, "tp-a")
		if err != nil {
			return err
		}
		b, ip, err := c.attach(ctx, 1, nw.Name, "tp-b")
		if err != nil {
			return err
		}
		name := map[string]string{"cv": "vxlan", "cd": "direct"}[nw.Name]
		flows[name] = directFlow(a, b, ip)
	}
	for _, fl := range []struct {
		name, bridge string
		subnet       netip.Prefix
		vxlan        bool
	}{
		{"floor-vxlan", "fv", netip.MustParsePrefix("10.83.0.0/16"), true},
		{"floor-direct", "fd", netip.MustParsePrefix("10.84.0.0/16"), false},
	} {
		f, err := handBuilt(c.lab, fl.bridge, fl.subnet, fl.vxlan)
		if err != nil {
			return fmt.Errorf("%s: %w", fl.name, err)
		}
		flows[fl.name] = f
	}
	// The podnet rows need their routes from the watch: wait until the pods connect.
	for _, name := range []string{"vxlan", "direct"} {
		f := flows[name]
		var err error
		for range 100 {
			if _, err = stream(ctx, f, 50*time.Millisecond); err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	settle(ctx)
	for run := range runs {
		for _, row := range clusterTpRows {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(os.Stderr, "podnet-bench: cluster throughput %s, run %d/%d\n", row.name, run+1, runs)
			r, err := stream(ctx, flows[row.name], d)
			if err != nil {
				return fmt.Errorf("%s: %w", row.name, err)
			}
			rates[row.name] = append(rates[row.name], r.bps)
		}
	}
	return nil
}

// handBuilt wires the same cross-node path as podnet's without podnet, on nodes 2 and 3
// of c: a bridge with proxy ARP holding the subnet's first address, a pod per node with
// an address in the node's /26, and a VXLAN device with static FDB and neighbour
// entries (vxlan), or a route via the other node's underlay address (direct). The
// kernel objects are made by internal/kernel's node applier, the nftables tables are
// not written. Pod MTU: underlay - 50 for vxlan.
func handBuilt(c *lab.Cluster, name string, subnet netip.Prefix, vxlan bool) (flow, error) {
	mtu := 1500
	if vxlan {
		mtu -= api.VXLANOverhead
	}
	bridge := "pnfloor-" + name
	gw := netip.PrefixFrom(subnet.Addr().Next(), subnet.Bits())
	var pods [2]netns.NsHandle
	var ips [2]netip.Addr
	for k, i := range []int{2, 3} {
		node, err := kernel.OpenNode(c.Nodes[i].Node)
		if err != nil {
			return flow{}, err
		}
		defer node.Close()
		if err := node.EnableForwarding(); err != nil {
			return flow{}, err
		}
		if err := node.EnsureBridge(plan.Bridge{Name: bridge, MTU: mtu, Addrs: []netip.Prefix{gw}, Sysctls: []plan.Sysctl{
			{Key: "net/ipv4/conf/" + bridge + "/proxy_arp", Value: "1"}, {Key: "net/ipv4/neigh/" + bridge + "/proxy_delay", Value: "0"}}}); err != nil {
			return flow{}, err
		}
		block := blockOf(subnet, k)
		ips[k] = block.Addr().Next().Next()
		if pods[k], err = c.Nodes[i].Sandbox(); err != nil {
			return flow{}, err
		}
		if _, err := c.Nodes[i].Plug(pods[k], lab.Veth{HostIf: "vf" + name, Bridge: bridge, MTU: mtu,
			Addrs: []netip.Prefix{netip.PrefixFrom(ips[k], subnet.Bits())}, Gateways: []netip.Addr{gw.Addr()}}); err != nil {
			return flow{}, err
		}
		other := lab.UnderlayAddr(5 - i).Addr() // node 3 for 2, 2 for 3
		o := plan.Overlay{Network: name, Subnets: []netip.Prefix{subnet}}
		route := plan.OverlayRoute{Dst: blockOf(subnet, 1-k), Via: other, Dev: lab.Uplink}
		if vxlan {
			mac := func(n int) []byte { return []byte{0x0e, 0xf1, 0, 0, 0, byte(n)} }
			o.Device = plan.VXLAN{Name: "vxfloor", VNI: 77, Port: 4789, Local: lab.UnderlayAddr(i).Addr(), Dev: lab.Uplink, MTU: mtu, MAC: mac(i)}
			o.Peers = []plan.VTEP{{NodeIP: other, MAC: mac(5 - i)}}
			route.Dev, route.Onlink = "vxfloor", true
		}
		o.Routes = []plan.OverlayRoute{route}
		if err := node.SyncOverlay(o); err != nil {
			return flow{}, err
		}
	}
	return directFlow(pods[0], pods[1], ips[1]), nil
}

// blockOf is the k-th /26 of subnet.
func blockOf(subnet netip.Prefix, k int) netip.Prefix {
	a := subnet.Masked().Addr().As4()
	a[3] = byte(k * 64)
	return netip.PrefixFrom(netip.AddrFrom4(a), 26)
}

// clusterConverge times, convergeSamples times on a cluster of n nodes, from the start
// of a node's first ADD until every other node routes to the block it claimed.
func clusterConverge(ctx context.Context, bin, dir string, n int) (samples, cpu []time.Duration, err error) {
	fmt.Fprintf(os.Stderr, "podnet-bench: cluster convergence, %d nodes\n", n)
	c, err := startCluster(bin, dir, n, n)
	if err != nil {
		return nil, nil, err
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	if _, err := c.agents[0].Client().CreateNetwork(ctx, api.NetworkSpec{Name: "conv", Subnets: []string{"10.85.0.0/16"}}); err != nil {
		return nil, nil, err
	}
	joining := n - convergeSamples
	for i := range joining {
		if _, _, err := c.attach(ctx, i, "conv", fmt.Sprintf("p%d", i)); err != nil {
			return nil, nil, err
		}
	}
	settle(ctx)
	for j := joining; j < n; j++ {
		// Every other node reports the route to j's block as the kernel makes it: the
		// waiting costs no CPU that the agents need (polling 19 namespaces' routes did).
		routed, stop, err := watchRoutesVia(c, j)
		if err != nil {
			return nil, nil, err
		}
		cpu0, err := c.agentsCPU(j)
		if err != nil {
			stop()
			return nil, nil, err
		}
		start := time.Now()
		if _, _, err := c.attach(ctx, j, "conv", fmt.Sprintf("p%d", j)); err != nil {
			stop()
			return nil, nil, err
		}
		var last time.Time
		for range n - 1 {
			select {
			case at := <-routed:
				last = at
			case <-time.After(convergeDeadline):
				stop()
				return nil, nil, fmt.Errorf("node n%d's block not routed by every node after %v", j, convergeDeadline)
			}
		}
		stop()
		samples = append(samples, last.Sub(start))
		// The work the join caused goes on after the routes (nftables, DNS): counted
		// until things settle.
		time.Sleep(500 * time.Millisecond)
		cpu1, err := c.agentsCPU(j)
		if err != nil {
			return nil, nil, err
		}
		cpu = append(cpu, (cpu1-cpu0)/time.Duration(n-1))
	}
	return samples, cpu, nil
}

// agentsCPU is the CPU time the agents but agent j have used so far (every thread's
// time on a CPU, /proc/PID/task/TID/schedstat).
func (c *cluster) agentsCPU(j int) (time.Duration, error) {
	var total time.Duration
	for i, a := range c.agents {
		if i == j {
			continue
		}
		cpu, err := threadsCPU(a.PID())
		if err != nil {
			return 0, fmt.Errorf("agent n%d: %w", i, err)
		}
		total += cpu
	}
	return total, nil
}

// threadsCPU is the CPU time of a process's live threads (every thread's time on a
// CPU, /proc/PID/task/TID/schedstat).
func threadsCPU(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("process %d: no threads to read (%v)", pid, err)
	}
	var total time.Duration
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that ended meanwhile
		}
		var ns int64
		fmt.Sscan(string(b), &ns)
		total += time.Duration(ns)
	}
	return total, nil
}

// watchRoutesVia subscribes to the route changes of every node but j and sends, once
// per node, when the node got podnet's route via j's underlay address (or has it
// already); stop ends the subscriptions.
func watchRoutesVia(c *cluster, j int) (routed <-chan time.Time, stop func(), err error) {
	via := lab.UnderlayAddr(j).Addr()
	out := make(chan time.Time, len(c.lab.Nodes))
	done := make(chan struct{})
	stop = sync.OnceFunc(func() { close(done) })
	for i, node := range c.lab.Nodes {
		if i == j {
			continue
		}
		ch := make(chan netlink.RouteUpdate, 256)
		ns := node.Node
		if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns, ListExisting: true}); err != nil {
			stop()
			return nil, nil, fmt.Errorf("subscribe to the routes of n%d: %w", i, err)
		}
		go func() {
			for u := range ch {
				gw, _ := netip.AddrFromSlice(u.Gw)
				if u.Type == unix.RTM_NEWROUTE && u.Protocol == kernel.RouteProtocol && gw.Unmap() == via {
					out <- time.Now()
					break
				}
			}
			for range ch { // drained until done closes it
			}
		}()
	}
	return out, stop, nil
}

// clusterAdds measures ADDs of a node on etcd (with its etcd requests) and, interleaved,
// ADDs of an agent on the embedded store.
func clusterAdds(ctx context.Context, bin, dir string) (perAdd float64, etcd, bolt summary, err error) {
	fmt.Fprintf(os.Stderr, "podnet-bench: cluster ADD on etcd and on bbolt, %d each\n", addSamples)
	c, err := startCluster(bin, filepath.Join(dir, "etcd"), 1, 1)
	if err != nil {
		return 0, summary{}, summary{}, err
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	boltLab, err := lab.New()
	if err != nil {
		return 0, summary{}, summary{}, err
	}
	defer boltLab.Close()
	boltDir := filepath.Join(dir, "bolt")
	os.MkdirAll(boltDir, 0o755)
	boltAgent := agentproc.New(bin, filepath.Join(boltDir, "podnet.sock"), filepath.Join(boltDir, "agent.log"),
		"--netns", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(boltLab.Node)), "--state-dir", boltDir,
		"--resolv-conf", filepath.Join(c.dir, "resolv.conf"), "--metrics-address", "")
	if err := boltAgent.Start(30 * time.Second); err != nil {
		return 0, summary{}, summary{}, err
	}
	defer boltAgent.Stop()
	spec := api.NetworkSpec{Name: "adds", Subnets: []string{"10.86.0.0/16"}}
	if _, err := c.agents[0].Client().CreateNetwork(ctx, spec); err != nil {
		return 0, summary{}, summary{}, err
	}
	if _, err := boltAgent.Client().CreateNetwork(ctx, spec); err != nil {
		return 0, summary{}, summary{}, err
	}
	// The first ADD claims the block; the timed ones allocate inside it.
	if _, _, err := c.attach(ctx, 0, "adds", "first"); err != nil {
		return 0, summary{}, summary{}, err
	}
	before, err := storeRequests(c.lab.Nodes[0].Node)
	if err != nil {
		return 0, summary{}, summary{}, err
	}
	var onEtcd, onBolt []time.Duration
	for k := range addSamples {
		start := time.Now()
		if _, _, err := c.attach(ctx, 0, "adds", fmt.Sprintf("e%d", k)); err != nil {
			return 0, summary{}, summary{}, err
		}
		onEtcd = append(onEtcd, time.Since(start))
		sb, err := boltLab.Sandbox()
		if err != nil {
			return 0, summary{}, summary{}, err
		}
		start = time.Now()
		if _, err := boltAgent.Client().Attach(ctx, api.AttachRequest{EndpointKey: api.EndpointKey{Network: "adds", ContainerID: fmt.Sprintf("b%d", k), IfName: "eth0"}}, int(sb)); err != nil {
			return 0, summary{}, summary{}, err
		}
		onBolt = append(onBolt, time.Since(start))
	}
	after, err := storeRequests(c.lab.Nodes[0].Node)
	if err != nil {
		return 0, summary{}, summary{}, err
	}
	return float64(after-before) / addSamples, summarize(onEtcd), summarize(onBolt), nil
}

// storeRequests reads podnet_store_requests_total from the agent's metrics in ns
// (127.0.0.1:9464 there). It counts what the agent's background work asks too (lease
// keepalives, watch-driven syncs): a bound from above for the ADDs.
func storeRequests(ns netns.NsHandle) (int64, error) {
	c, err := kernel.DialIn(context.Background(), ns, "tcp", "127.0.0.1:9464", 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "podnet_store_requests_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	return 0, errors.New("podnet_store_requests_total not in the agent's metrics")
}

// printCluster prints the cluster section.
func printCluster(w io.Writer, runs int, d time.Duration, res clusterResult) {
	fmt.Fprintf(w, "### Cluster (multi-node, etcd)\n\n")
	fmt.Fprintf(w, "cross-node throughput: one TCP stream from a pod on one node to a pod on another, %v per run, median of %d runs (rounds interleave the rows); the floors are the same kernel objects without podnet's agent and rules, on two more nodes of the same underlay\n\n", d, runs)
	fmt.Fprintf(w, "| path | Gbit/s median | runs | / floor | target |\n|---|---:|---|---:|---|\n")
	for _, row := range clusterTpRows {
		rs := res.rates[row.name]
		if len(rs) == 0 {
			fmt.Fprintf(w, "| %s | %s | | | |\n", row.label, notRun(res.errs["throughput"]))
			continue
		}
		var each []string
		for _, r := range rs {
			each = append(each, fmt.Sprintf("%.2f", r/1e9))
		}
		ratio, target := "", "the reference"
		if row.ref != "" {
			target = fmt.Sprintf(">= %g", clusterTarget)
			if ref := res.rates[row.ref]; len(ref) > 0 {
				r := median(rs) / median(ref)
				ratio = fmt.Sprintf("%.2f", r)
				target += verdict(r >= clusterTarget)
			}
		}
		fmt.Fprintf(w, "| %s | %.2f | %s | %s | %s |\n", row.label, median(rs)/1e9, strings.Join(each, " "), ratio, target)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "convergence: from the start of a node's first ADD until every other node routes to the block it claimed (%d joining nodes per size); agent CPU: the CPU time each other node's agent spent on the join (median; until 0.5 s after the last route). All agents share this machine's CPUs: the time grows with their number, a node's own cost should not\n\n", convergeSamples)
	fmt.Fprintf(w, "| nodes | median | samples | target | agent CPU per join, per other node |\n|---:|---:|---|---|---:|\n")
	var m10 time.Duration
	for _, n := range convergeSizes {
		s := res.converge[n]
		if len(s) == 0 {
			fmt.Fprintf(w, "| %d | %s | | < 1 s | |\n", n, notRun(res.errs[fmt.Sprintf("converge-%d", n)]))
			continue
		}
		var each []string
		for _, x := range s {
			each = append(each, ms(x))
		}
		med := summarize(s).median
		target := "< 1 s"
		ok := med < time.Second
		if n == convergeSizes[0] {
			m10 = med
		} else if m10 > 0 {
			target += fmt.Sprintf(", <= 1.5x %d nodes (%.2fx)", convergeSizes[0], float64(med)/float64(m10))
			ok = ok && float64(med) <= 1.5*float64(m10)
		}
		target += verdict(ok)
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s |\n", n, ms(med), strings.Join(each, " "), target, ms(summarize(res.convergeCPU[n]).median))
	}
	fmt.Fprintln(w)
	if err := res.errs["add"]; err != nil || res.addEtcd.n == 0 {
		fmt.Fprintf(w, "- ADD on etcd vs bbolt: %s\n\n", notRun(err))
		return
	}
	fmt.Fprintf(w, "- etcd requests per ADD into a block the node holds: %.1f (target: 0 beyond the endpoint record; counts the agent's background requests too)\n", res.perAdd)
	fmt.Fprintf(w, "- ADD median through the agent's API (no plugin exec), %d ADDs each, interleaved: etcd %s (p90 %s), bbolt %s (p90 %s), ratio %.2f\n\n",
		addSamples, ms(res.addEtcd.median), ms(res.addEtcd.p90), ms(res.addBolt.median), ms(res.addBolt.p90), float64(res.addEtcd.median)/float64(res.addBolt.median))
}

func notRun(err error) string {
	if err != nil {
		return "failed: " + cell(err.Error())
	}
	return "not run"
}
