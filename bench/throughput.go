package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agentproc"
)

// The throughput section: each path below carries one TCP stream at a time, then
// request/response traffic (64-byte messages, one at a time), in rounds: every path once
// per round, each round starting one path further, so that drift of the machine spreads
// over all of them. A path's figures are medians over its runs, compared with the path
// of the same topology without podnet (its floor: the same links built with netlink and
// nothing else, or for a published port the same pod reached without DNAT) and with
// Debian's reference plugins on the same path (bridge with ipMasq, ptp with ipMasq,
// portmap). A second podnet node carries the same paths with -tp-endpoints more
// endpoints, each publishing a port, to show what the size of the tables costs a packet.
//
// Namespaces: two sandboxes joined by a bare veth pair; the floors' hubs and sandboxes;
// per podnet node a node namespace with a `podnet agent` and an uplink veth to an
// "outside" namespace that plays a client elsewhere on the network; the reference
// plugins' node, with its uplink from the same outside namespace. Published ports are
// dialed from the outside at the node's uplink address.

// tpPath is one row of the throughput tables.
type tpPath struct {
	name, label string
	floor       string  // the row of the same path without podnet's rules ("": none)
	ref         string  // the reference plugins' row of the same path ("": none)
	base        string  // the same path on the node without extra endpoints ("": none)
	target      float64 // minimum throughput ratio to floor, judged at once (atonce.go); 0: none
	// compare: the path on a node of the -tp-compare agent, beside base (the same path
	// of this agent); its ratios to base are the A/B figures, without targets. Left out
	// of the tables unless asked for.
	compare bool
}

// tpCPUSlack is how much more CPU per GB than its floor (or base) a podnet path may cost.
const tpCPUSlack = 1.10

var tpPaths = []tpPath{
	{name: "veth", label: "bare veth pair, ns to ns"},
	{name: "floor-bridge", label: "floor: plain bridge, two veths, no rules"},
	{name: "ref-bridge", label: "reference: bridge plugin (ipMasq), pod to pod"},
	{name: "bridge", label: "podnet bridge network, pod to pod", floor: "floor-bridge", ref: "ref-bridge", target: 0.95},
	{name: "bridge-big", label: "podnet bridge network, node with extra endpoints", floor: "floor-bridge", ref: "ref-bridge", base: "bridge", target: 0.95},
	{name: "floor-routed", label: "floor: plain forwarding, two veths, no rules"},
	{name: "ref-ptp", label: "reference: ptp plugin (ipMasq), pod to pod"},
	{name: "routed", label: "podnet routed network, pod to pod", floor: "floor-routed", ref: "ref-ptp", target: 0.95},
	{name: "routed-big", label: "podnet routed network, node with extra endpoints", floor: "floor-routed", ref: "ref-ptp", base: "routed", target: 0.95},
	{name: "to-pod", label: "floor: outside -> pod address, routed by the node (podnet bridge network, no DNAT)"},
	{name: "ref-portmap", label: "reference: portmap, outside -> node:port -> pod"},
	{name: "dnat", label: "published port, DNAT: outside -> node:port -> the same pod", floor: "to-pod", ref: "ref-portmap", target: 0.95},
	{name: "dnat-big", label: "published port, DNAT, node with extra endpoints", floor: "to-pod", ref: "ref-portmap", base: "dnat", target: 0.95},
	{name: "proxy", label: "published port, port mode proxy: outside -> node:port -> pod"},
	{name: "bridge-cmp", label: "podnet bridge network, the -tp-compare agent", floor: "floor-bridge", ref: "ref-bridge", base: "bridge", compare: true},
	{name: "routed-cmp", label: "podnet routed network, the -tp-compare agent", floor: "floor-routed", ref: "ref-ptp", base: "routed", compare: true},
	{name: "dnat-cmp", label: "published port, DNAT, the -tp-compare agent", floor: "to-pod", ref: "ref-portmap", base: "dnat", compare: true},
}

// Sandbox indexes of a podnet node's testbed; extra endpoints follow tpNodeSandboxes.
const (
	tpBridgeA = iota
	tpBridgeB
	tpRoutedA
	tpRoutedB
	tpDNATServer
	tpProxyServer
	tpOutside
	tpNodeSandboxes
)

// Sandbox indexes of the testbed without agent: the bare pair, the floors, the
// reference plugins' pods (its node is the reference plugins' node).
const (
	tpVethA = iota
	tpVethB
	tpFloorBridgeHub
	tpFloorBridgeA
	tpFloorBridgeB
	tpFloorRoutedHub
	tpFloorRoutedA
	tpFloorRoutedB
	tpRefBridgeA
	tpRefBridgeB
	tpRefPtpA
	tpRefPtpB
	tpPlainSandboxes
)

const (
	tpPort         = 5201 // the receiver's port, in every server namespace
	tpDNATHostPort = 18080
	tpProxyPort    = 18081
	tpRefHostPort  = 18082
	tpExtraPort    = 20000     // extra endpoint i publishes tpExtraPort+i
	tpWrite        = 128 << 10 // bytes per write and per read (iperf3's default length)
	tpDialTimeout  = 5 * time.Second
	tpRRDuration   = 500 * time.Millisecond // request/response traffic per run
	tpPPSDuration  = 500 * time.Millisecond // small datagrams per run
	tpAttachers    = 4                      // extra endpoints attached at once
	tpMaxExtra     = 2000                   // half on each network: a bridge takes 1,024 ports
)

// Addresses of the links the benchmark makes itself.
var (
	tpVethA4     = netip.MustParsePrefix("10.96.0.1/24")
	tpVethB4     = netip.MustParsePrefix("10.96.0.2/24")
	tpBridgeA4   = netip.MustParsePrefix("10.95.0.2/24")
	tpBridgeB4   = netip.MustParsePrefix("10.95.0.3/24")
	tpRoutedHubA = netip.MustParsePrefix("10.94.1.1/24")
	tpRoutedA4   = netip.MustParsePrefix("10.94.1.2/24")
	tpRoutedHubB = netip.MustParsePrefix("10.94.2.1/24")
	tpRoutedB4   = netip.MustParsePrefix("10.94.2.2/24")
	tpNode4      = netip.MustParsePrefix("203.0.113.1/24") // a node's end of its uplink
	tpOutside4   = netip.MustParsePrefix("203.0.113.2/24")
	tpRefNode4   = netip.MustParsePrefix("198.51.100.1/24") // the reference node's uplink
	tpRefOut4    = netip.MustParsePrefix("198.51.100.2/24")
	tpPods       = netip.MustParsePrefix("10.98.0.0/16") // podnet's networks, routed by the outside via a node
	tpRefPods    = netip.MustParsePrefix("10.99.0.0/16")
)

// flow is a path as the sender and the receiver see it.
type flow struct {
	client, server netns.NsHandle
	listen, dial   netip.AddrPort
}

// directFlow dials the address the server listens on.
func directFlow(client, server netns.NsHandle, addr netip.Addr) flow {
	dst := netip.AddrPortFrom(addr, tpPort)
	return flow{client: client, server: server, listen: dst, dial: dst}
}

// tpResult is the throughput section's outcome.
type tpResult struct {
	runs     map[string][]tpRun // by path name
	errs     map[string]error   // why a path has no figure, or failed in a later run
	brNFCall string             // bridge-nf-call-iptables in the node namespace
	extra    int                // endpoints (each publishing a port) added to the big node
	compare  string             // the directory of the -tp-compare agent ("": none)
	// The comparisons run at once (atonce.go), their rounds, and why a pair stopped.
	pairs    []tpPair
	duels    map[tpPair][]tpDuel
	pairErrs map[tpPair]error
	err      error // the section's own setup or cleanup failed
}

// tpBed is the section's namespaces and agents; close removes them.
type tpBed struct {
	plain  *testbed // the bare pair, the floors, the reference node and its pods
	nodes  []*tpNode
	flows  map[string]flow
	closed []func() error
}

func (b *tpBed) close() error {
	var errs []error
	for _, c := range slices.Backward(b.closed) {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// openSandboxes opens a handle of every sandbox of tb; closeHandles closes them (and
// those opened before a failure).
func openSandboxes(tb *testbed) ([]netns.NsHandle, error) {
	ns := make([]netns.NsHandle, len(tb.sandboxes))
	for i, path := range tb.sandboxes {
		var err error
		if ns[i], err = netns.GetFromPath(path); err != nil {
			return ns, fmt.Errorf("open %s: %w", path, err)
		}
	}
	return ns, nil
}

func closeHandles(ns []netns.NsHandle) {
	for _, h := range ns {
		if h.IsOpen() {
			h.Close()
		}
	}
}

// measureThroughput builds the throughput testbeds (the big node with extra endpoints,
// each publishing a port, none without; a node of the agent in compareDir, none for
// ""), runs `runs` rounds of d-long streams and of request/response traffic, then
// atOnce rounds of the comparisons at once, and removes everything again.
func measureThroughput(ctx context.Context, prefix, binDir string, runs, atOnce int, d time.Duration, extra int, compareDir, only string) (res tpResult) {
	res = tpResult{runs: map[string][]tpRun{}, errs: map[string]error{}, extra: extra, compare: compareDir}
	bed := &tpBed{flows: map[string]flow{}}
	defer func() { res.err = errors.Join(res.err, bed.close()) }()
	if err := bed.build(ctx, prefix, binDir, extra, compareDir, res.errs); err != nil {
		res.err = err
		return res
	}
	res.brNFCall = readSysctlIn(bed.nodes[0].tb.node, "net/bridge/bridge-nf-call-iptables")
	settle(ctx)
	var order []tpPath
	for _, p := range tpPaths {
		if _, ok := bed.flows[p.name]; ok && res.errs[p.name] == nil && (only == "" || slices.Contains(strings.Split(only, ","), p.name)) {
			order = append(order, p)
		}
	}
	for run := range runs {
		for k := range order {
			p := order[(k+run)%len(order)]
			if res.errs[p.name] != nil || ctx.Err() != nil {
				continue
			}
			fmt.Fprintf(os.Stderr, "podnet-bench: throughput %s, run %d/%d\n", p.name, run+1, runs)
			f := bed.flows[p.name]
			r, err := stream(ctx, f, d)
			if err == nil {
				r.rtts, err = requestResponse(ctx, f, tpRRDuration)
			}
			if err == nil {
				var pr ppsRun
				pr, err = packetRate(ctx, f, tpPPSDuration)
				r.pps, r.ppsBusy = pr.pps, pr.busy
			}
			if err == nil {
				res.runs[p.name] = append(res.runs[p.name], r)
			} else {
				res.errs[p.name] = fmt.Errorf("run %d: %w", run+1, err)
			}
		}
	}
	if atOnce > 0 {
		for _, p := range tpPairsOf(order) {
			if slices.ContainsFunc(order, func(q tpPath) bool { return q.name == p.b }) {
				res.pairs = append(res.pairs, p)
			}
		}
		res.duels, res.pairErrs = measureAtOnce(ctx, bed.flows, res.pairs, atOnce, d, res.errs)
	}
	return res
}

// build makes the testbeds and adds every path that could be set up to b.flows, or
// why not to errs; an error means the section cannot run.
func (b *tpBed) build(ctx context.Context, prefix, binDir string, extra int, compareDir string, errs map[string]error) error {
	plain, err := newTestbed(prefix, tpPlainSandboxes)
	if err != nil {
		return err
	}
	b.plain = plain
	b.closed = append(b.closed, plain.remove)
	ns, err := openSandboxes(plain)
	b.closed = append(b.closed, func() error { closeHandles(ns); return nil })
	if err != nil {
		return err
	}
	for _, p := range []struct {
		path  string
		setup func() (flow, error)
	}{
		{"veth", func() (flow, error) {
			err := wireVeth(ns[tpVethA], "eth0", tpVethA4, ns[tpVethB], "eth0", tpVethB4)
			return directFlow(ns[tpVethA], ns[tpVethB], tpVethB4.Addr()), err
		}},
		{"floor-bridge", func() (flow, error) {
			err := wireFloorBridge(ns[tpFloorBridgeHub], ns[tpFloorBridgeA], ns[tpFloorBridgeB])
			return directFlow(ns[tpFloorBridgeA], ns[tpFloorBridgeB], tpBridgeB4.Addr()), err
		}},
		{"floor-routed", func() (flow, error) {
			err := wireFloorRouted(ns[tpFloorRoutedHub], ns[tpFloorRoutedA], ns[tpFloorRoutedB])
			return directFlow(ns[tpFloorRoutedA], ns[tpFloorRoutedB], tpRoutedB4.Addr()), err
		}},
	} {
		if f, err := p.setup(); err != nil {
			errs[p.path] = err
		} else {
			b.flows[p.path] = f
		}
	}

	// podnet's node; the big node has only the paths that the extra endpoints may slow.
	n, err := b.startNode(ctx, prefix+"-n0", binDir, 0)
	if err != nil {
		return err
	}
	maps.Copy(b.flows, n.flows)
	maps.Copy(errs, n.errs)
	more := func(suffix, binDir string, extra int) {
		n, err := b.startNode(ctx, prefix+"-n"+strconv.Itoa(len(b.nodes)), binDir, extra)
		for _, p := range []string{"bridge", "routed", "dnat"} {
			if err != nil {
				errs[p+suffix] = err
			} else {
				b.flows[p+suffix] = n.flows[p]
			}
		}
	}
	if extra > 0 {
		more("-big", binDir, extra)
	}
	if compareDir != "" {
		more("-cmp", compareDir, 0)
	}

	// The reference plugins' node is the plain testbed's node; the outside namespace of
	// podnet's first node reaches it by a second uplink.
	out := b.nodes[0].ns[tpOutside]
	if err := wireVeth(plain.node, "uplink0", tpRefNode4, out, "eth1", tpRefOut4); err != nil {
		return fmt.Errorf("wire uplink between the reference node and outside: %w", err)
	}
	if err := routeIn(out, tpRefPods, tpRefNode4.Addr()); err != nil {
		return err
	}
	refFlows, err := referencePaths(plain, ns, out)
	for path, f := range refFlows {
		b.flows[path] = f
	}
	if err != nil {
		for _, p := range []string{"ref-bridge", "ref-ptp", "ref-portmap"} {
			if _, ok := refFlows[p]; !ok {
				errs[p] = err
			}
		}
	}
	return nil
}

// startNode starts a podnet node (startTpNode) that b removes.
func (b *tpBed) startNode(ctx context.Context, prefix, binDir string, extra int) (*tpNode, error) {
	n, err := startTpNode(ctx, prefix, binDir, extra)
	if n != nil {
		b.nodes = append(b.nodes, n)
		b.closed = append(b.closed, n.close)
	}
	return n, err
}

// tpNode is a node namespace with a podnet agent and an uplink to an outside namespace,
// and the sandboxes of the podnet paths.
type tpNode struct {
	tb    *testbed
	ns    []netns.NsHandle
	agent *agentproc.Proc
	flows map[string]flow
	errs  map[string]error
}

func (n *tpNode) close() error {
	var errs []error
	if n.agent != nil {
		errs = append(errs, n.agent.Stop())
	}
	closeHandles(n.ns)
	return errors.Join(append(errs, n.tb.remove())...)
}

// startTpNode builds a podnet node with its agent, the paths' networks and pods, and
// extra more endpoints alternately on the bridge and the routed network, each
// publishing a port. A nil node means nothing is left to remove.
func startTpNode(ctx context.Context, prefix, binDir string, extra int) (*tpNode, error) {
	tb, err := newTestbed(prefix, tpNodeSandboxes+extra)
	if err != nil {
		return nil, err
	}
	n := &tpNode{tb: tb, flows: map[string]flow{}, errs: map[string]error{}}
	if n.ns, err = openSandboxes(tb); err != nil {
		return n, err
	}
	if err := wireVeth(tb.node, "uplink0", tpNode4, n.ns[tpOutside], "eth0", tpOutside4); err != nil {
		return n, fmt.Errorf("wire uplink between node and outside: %w", err)
	}
	if err := routeIn(n.ns[tpOutside], tpPods, tpNode4.Addr()); err != nil {
		return n, err
	}
	if n.agent, err = startAgent(binDir, tb); err != nil {
		return n, err
	}
	c := n.agent.Client()
	for _, spec := range []api.NetworkSpec{
		{Name: "tp-bridge", Driver: api.DriverBridge, Subnets: []string{"10.98.0.0/21"}},
		{Name: "tp-routed", Driver: api.DriverRouted, Subnets: []string{"10.98.8.0/21"}},
		{Name: "tp-proxy", Driver: api.DriverBridge, Subnets: []string{"10.98.16.0/24"}, PortMode: api.PortModeProxy},
	} {
		if _, err := c.CreateNetwork(ctx, spec); err != nil {
			return n, fmt.Errorf("POST %s %+v: %w", api.PathNetworks, spec, err)
		}
	}
	attach := func(network string, sb int, ports ...api.PortMapping) (netip.Addr, error) {
		req := api.AttachRequest{
			EndpointKey: api.EndpointKey{Network: network, ContainerID: fmt.Sprintf("tp%d", sb), IfName: "eth0"},
			Netns:       tb.sandboxes[sb],
			Ports:       ports,
		}
		res, err := c.Attach(ctx, req, int(n.ns[sb]))
		if err != nil {
			return netip.Addr{}, fmt.Errorf("attach %s (ports %v): %w", req.EndpointKey, ports, err)
		}
		if len(res.IPs) == 0 {
			return netip.Addr{}, fmt.Errorf("attach %s: result without an address", req.EndpointKey)
		}
		return res.IPs[0].Address.Addr(), nil
	}
	if err := attachExtra(ctx, extra, func(i int) error {
		network := []string{"tp-bridge", "tp-routed"}[i%2]
		_, err := attach(network, tpNodeSandboxes+i, api.PortMapping{HostPort: uint16(tpExtraPort + i), ContainerPort: 80, Protocol: "tcp"})
		return err
	}); err != nil {
		return n, err
	}
	podToPod := func(network string, a, b int) (flow, error) {
		if _, err := attach(network, a); err != nil {
			return flow{}, err
		}
		server, err := attach(network, b)
		return directFlow(n.ns[a], n.ns[b], server), err
	}
	published := func(network string, sb int, hostPort uint16) (flow, error) {
		server, err := attach(network, sb, api.PortMapping{HostPort: hostPort, ContainerPort: tpPort, Protocol: "tcp"},
			api.PortMapping{HostPort: hostPort, ContainerPort: tpPort, Protocol: "udp"})
		return flow{client: n.ns[tpOutside], server: n.ns[sb],
			listen: netip.AddrPortFrom(server, tpPort), dial: netip.AddrPortFrom(tpNode4.Addr(), hostPort)}, err
	}
	for _, p := range []struct {
		path  string
		setup func() (flow, error)
	}{
		{"bridge", func() (flow, error) { return podToPod("tp-bridge", tpBridgeA, tpBridgeB) }},
		{"routed", func() (flow, error) { return podToPod("tp-routed", tpRoutedA, tpRoutedB) }},
		{"dnat", func() (flow, error) { return published("tp-bridge", tpDNATServer, tpDNATHostPort) }},
		{"proxy", func() (flow, error) { return published("tp-proxy", tpProxyServer, tpProxyPort) }},
	} {
		f, err := p.setup()
		if err != nil && extra > 0 {
			return n, fmt.Errorf("%s: %w", p.path, err)
		}
		if err != nil {
			n.errs[p.path] = err
			continue
		}
		n.flows[p.path] = f
	}
	if f, ok := n.flows["dnat"]; ok {
		n.flows["to-pod"] = flow{client: f.client, server: f.server, listen: f.listen, dial: f.listen}
	}
	return n, nil
}

// attachExtra runs attach(i) for i < n, tpAttachers at a time, and returns the first error.
func attachExtra(ctx context.Context, n int, attach func(i int) error) error {
	if n == 0 {
		return nil
	}
	fmt.Fprintf(os.Stderr, "podnet-bench: throughput: attaching %d extra endpoints, each publishing a port\n", n)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range tpAttachers {
		wg.Go(func() {
			for i := range next {
				if err := attach(i); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return cmp.Or(first, ctx.Err())
}

// referencePaths attaches the reference plugins' pods on tb's node (Debian's bridge
// with ipMasq and portmap, and ptp with ipMasq, exec'd as a runtime does) and returns
// their paths; out is the outside namespace, wired to the node already.
func referencePaths(tb *testbed, ns []netns.NsHandle, out netns.NsHandle) (map[string]flow, error) {
	for _, name := range []string{"bridge", "ptp", "portmap", "host-local"} {
		if bin := filepath.Join(referenceCNIPath, name); !fileExists(bin) {
			return nil, fmt.Errorf("%s missing (apt-get install containernetworking-plugins)", bin)
		}
	}
	hostLocal := func(subnet, dir string) map[string]any {
		return map[string]any{"type": "host-local", "subnet": subnet, "dataDir": filepath.Join(tb.dir, dir),
			"routes": []map[string]any{{"dst": "0.0.0.0/0"}}}
	}
	bridge := newCNIRuntime(tb, referenceCNIPath, []map[string]any{
		{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "ipam": hostLocal("10.99.0.0/24", "ipam-bridge")},
		{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
	}, func(i int) map[string]any {
		if i != tpRefBridgeB {
			return nil
		}
		return map[string]any{"portMappings": []map[string]any{
			{"hostPort": tpRefHostPort, "containerPort": tpPort, "protocol": "tcp"},
			{"hostPort": tpRefHostPort, "containerPort": tpPort, "protocol": "udp"},
		}}
	})
	ptp := newCNIRuntime(tb, referenceCNIPath, []map[string]any{
		{"type": "ptp", "ipMasq": true, "ipam": hostLocal("10.99.1.0/24", "ipam-ptp")},
	}, nil)
	addr := func(r *cniRuntime, i int) (netip.Addr, error) {
		if err := r.add(i); err != nil {
			return netip.Addr{}, err
		}
		var res struct {
			IPs []struct{ Address netip.Prefix } `json:"ips"`
		}
		if err := json.Unmarshal(r.results[i], &res); err != nil || len(res.IPs) == 0 {
			return netip.Addr{}, fmt.Errorf("reference ADD of pod %d: no address in %s (%v)", i, r.results[i], err)
		}
		return res.IPs[0].Address.Addr(), nil
	}
	flows := map[string]flow{}
	for _, p := range []struct {
		r    *cniRuntime
		a, b int
		path string
	}{{bridge, tpRefBridgeA, tpRefBridgeB, "ref-bridge"}, {ptp, tpRefPtpA, tpRefPtpB, "ref-ptp"}} {
		if _, err := addr(p.r, p.a); err != nil {
			return flows, err
		}
		server, err := addr(p.r, p.b)
		if err != nil {
			return flows, err
		}
		flows[p.path] = directFlow(ns[p.a], ns[p.b], server)
		if p.path == "ref-bridge" {
			flows["ref-portmap"] = flow{client: out, server: ns[p.b],
				listen: netip.AddrPortFrom(server, tpPort), dial: netip.AddrPortFrom(tpRefNode4.Addr(), tpRefHostPort)}
		}
	}
	return flows, nil
}

// routeIn adds a route to dst via gw inside ns.
func routeIn(ns netns.NsHandle, dst netip.Prefix, gw netip.Addr) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	if err := h.RouteAdd(&netlink.Route{Dst: ipNet(dst), Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("route %s via %s: %w", dst, gw, err)
	}
	return nil
}

// wireVeth joins namespaces a and b with a veth pair named aName in a and bName in b,
// gives each end its address (none if invalid) and sets both ends and lo up.
func wireVeth(a netns.NsHandle, aName string, aAddr netip.Prefix, b netns.NsHandle, bName string, bAddr netip.Prefix) error {
	ha, err := netlink.NewHandleAt(a)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer ha.Close()
	hb, err := netlink.NewHandleAt(b)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer hb.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(int(b))}
	if err := ha.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %q: %w", aName, err)
	}
	for _, end := range []struct {
		h    *netlink.Handle
		name string
		addr netip.Prefix
	}{{ha, aName, aAddr}, {hb, bName, bAddr}} {
		link, err := end.h.LinkByName(end.name)
		if err != nil {
			return fmt.Errorf("find %q: %w", end.name, err)
		}
		if end.addr.IsValid() {
			if err := end.h.AddrAdd(link, &netlink.Addr{IPNet: ipNet(end.addr)}); err != nil {
				return fmt.Errorf("add %s to %q: %w", end.addr, end.name, err)
			}
		}
		if err := end.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %q up: %w", end.name, err)
		}
		lo, err := end.h.LinkByName("lo")
		if err == nil {
			err = end.h.LinkSetUp(lo)
		}
		if err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
	}
	return nil
}

// wireFloorBridge builds with netlink the topology of a bridge network and nothing
// else: bridge br0 in hub, veths from it to eth0 of a and of b, one subnet.
func wireFloorBridge(hub, a, b netns.NsHandle) error {
	h, err := netlink.NewHandleAt(hub)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", Flags: net.FlagUp}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge: %w", err)
	}
	for _, end := range []struct {
		ns   netns.NsHandle
		host string
		addr netip.Prefix
	}{{a, "veth-a", tpBridgeA4}, {b, "veth-b", tpBridgeB4}} {
		if err := wireVeth(hub, end.host, netip.Prefix{}, end.ns, "eth0", end.addr); err != nil {
			return err
		}
		link, err := h.LinkByName(end.host)
		if err == nil {
			err = h.LinkSetMasterByIndex(link, br.Index)
		}
		if err != nil {
			return fmt.Errorf("put %q in the bridge: %w", end.host, err)
		}
	}
	return nil
}

// wireFloorRouted builds with netlink the topology of a routed network and nothing
// else: hub forwards between a veth to eth0 of a and one to eth0 of b, a subnet on
// each, and a and b route everything to hub.
func wireFloorRouted(hub, a, b netns.NsHandle) error {
	if err := writeSysctlIn(hub, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	for _, end := range []struct {
		ns        netns.NsHandle
		host      string
		hub, addr netip.Prefix
	}{{a, "veth-a", tpRoutedHubA, tpRoutedA4}, {b, "veth-b", tpRoutedHubB, tpRoutedB4}} {
		if err := wireVeth(hub, end.host, end.hub, end.ns, "eth0", end.addr); err != nil {
			return err
		}
		h, err := netlink.NewHandleAt(end.ns)
		if err != nil {
			return fmt.Errorf("netlink handle: %w", err)
		}
		err = h.RouteAdd(&netlink.Route{Gw: end.hub.Addr().AsSlice()})
		h.Close()
		if err != nil {
			return fmt.Errorf("default route via %s: %w", end.hub.Addr(), err)
		}
	}
	return nil
}

// writeSysctlIn sets a /proc/sys/ value inside ns.
func writeSysctlIn(ns netns.NsHandle, key, value string) error {
	err := inNetns(ns, func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644)
	})
	if err != nil {
		return fmt.Errorf("set %s=%s: %w", key, value, err)
	}
	return nil
}

// readSysctlIn reads a /proc/sys/ value as seen from inside ns ("absent" when the
// file does not exist).
func readSysctlIn(ns netns.NsHandle, key string) string {
	var v string
	err := inNetns(ns, func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	})
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "absent"
	case err != nil:
		return "unknown"
	}
	return v
}

// tpFigures are a path's medians over its runs.
type tpFigures struct {
	n                              int
	bps, min, max                  float64
	cpu, sender, receiver, softirq time.Duration // per GB
	p50, p99                       time.Duration // request/response round trip
}

func figuresOf(runs []tpRun) (f tpFigures) {
	f.n = len(runs)
	if f.n == 0 {
		return f
	}
	per := func(get func(tpRun) float64) float64 {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, get(r))
		}
		return median(xs)
	}
	f.bps = per(func(r tpRun) float64 { return r.bps })
	f.min, f.max = runs[0].bps, runs[0].bps
	for _, r := range runs {
		f.min, f.max = min(f.min, r.bps), max(f.max, r.bps)
	}
	gb := func(pick func(tpRun) time.Duration) time.Duration {
		return time.Duration(per(func(r tpRun) float64 { return float64(r.perGB(pick(r))) }))
	}
	f.cpu = gb(func(r tpRun) time.Duration { return r.busy })
	f.sender = gb(func(r tpRun) time.Duration { return r.sender })
	f.receiver = gb(func(r tpRun) time.Duration { return r.receiver })
	f.softirq = gb(func(r tpRun) time.Duration { return r.softirq })
	var p50s, p99s []float64
	for _, r := range runs {
		s := slices.Clone(r.rtts)
		slices.Sort(s)
		p50s = append(p50s, float64(percentile(s, 0.5)))
		p99s = append(p99s, float64(percentile(s, 0.99)))
	}
	f.p50, f.p99 = time.Duration(median(p50s)), time.Duration(median(p99s))
	return f
}

// pairedRatio is the median over the rounds of a's figure over b's in the same round:
// the machine's speed drifts (other guests of the host), and the runs of one round
// are seconds apart. NaN when no round has both.
func pairedRatio(a, b []tpRun, get func(tpRun) float64) float64 {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if d := get(b[i]); d > 0 {
			rs = append(rs, get(a[i])/d)
		}
	}
	if len(rs) == 0 {
		return math.NaN()
	}
	return median(rs)
}

func rate(r tpRun) float64     { return r.bps }
func cpuPerGB(r tpRun) float64 { return float64(r.perGB(r.busy)) }

// ratioText prints a ratio, "-" for none.
func ratioText(r float64) string {
	if math.IsNaN(r) {
		return "-"
	}
	return fmt.Sprintf("%.2f", r)
}

// printThroughput prints the throughput and the cost tables and the targets.
func printThroughput(w io.Writer, runs, atOnce int, d time.Duration, res tpResult) {
	fig := map[string]tpFigures{}
	for _, p := range tpPaths {
		fig[p.name] = figuresOf(res.runs[p.name])
	}
	paired := func(a, b string, get func(tpRun) float64) float64 {
		return pairedRatio(res.runs[a], res.runs[b], get)
	}
	fmt.Fprintf(w, "### Throughput\n\n")
	fmt.Fprintf(w, "one TCP stream, %d KiB blocking writes and reads, sender pinned to CPU %d and receiver to CPU %d, %v per run, then %v of %d-byte requests and responses one at a time; %d rounds, every path once per round, each round starting one path further; figures are medians over the runs, ratios medians over the rounds of the two paths' figures in the same round (the targets are judged on the paths at once, further down: steadier); bridge-nf-call-iptables in the node namespace: %s; the big node has %d extra endpoints, each publishing a port\n\n",
		tpWrite>>10, senderCPU, receiverCPU, d, tpRRDuration, rrSize, runs, res.brNFCall, res.extra)
	if res.compare != "" {
		fmt.Fprintf(w, "The -cmp rows are a node of the agent in %s, in the same rounds as the rest: their / base is that agent against the -bin one.\n\n", res.compare)
	}
	fmt.Fprintf(w, "| path | Gbit/s median | min - max | / bare veth | / floor | / reference plugin | server saw client as |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---|\n")
	gbps := func(r float64) string { return fmt.Sprintf("%.2f", r/1e9) }
	var notes []string
	for _, p := range tpPaths {
		f := fig[p.name]
		if p.compare && res.compare == "" {
			continue
		}
		if f.n == 0 {
			why := "not run"
			if err := res.errs[p.name]; err != nil {
				why = "failed: " + cell(err.Error())
			}
			fmt.Fprintf(w, "| %s | %s | | | | | |\n", p.label, why)
			continue
		}
		toRef := paired(p.name, p.ref, rate)
		if r := paired(p.name, p.base, rate); !math.IsNaN(r) {
			if p.compare {
				notes = append(notes, fmt.Sprintf("%s / %s throughput (the agent of %s / the -bin one): %.2f", p.name, p.base, res.compare, r))
			} else {
				notes = append(notes, fmt.Sprintf("%s / %s throughput (%d extra endpoints): %.2f", p.name, p.base, res.extra, r))
			}
		}
		var seen string
		if len(res.runs[p.name]) > 0 {
			seen = res.runs[p.name][len(res.runs[p.name])-1].from.String()
		}
		if err := res.errs[p.name]; err != nil {
			seen += "; then failed: " + cell(err.Error())
		}
		fmt.Fprintf(w, "| %s | %s | %s - %s | %s | %s | %s | %s |\n", p.label, gbps(f.bps), gbps(f.min), gbps(f.max),
			ratioText(paired(p.name, "veth", rate)), ratioText(paired(p.name, p.floor, rate)), ratioText(toRef), seen)
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "CPU time per GB moved (medians over the runs): all CPUs' non-idle time from /proc/stat, of which the sending and the receiving thread (RUSAGE_THREAD, softirq work done in their context included) and softirq time; request/response round trips (%d bytes each way, one connection)\n\n", rrSize)
	fmt.Fprintf(w, "| path | CPU per GB | sender | receiver | softirq | / floor | / base | round trip p50 | p99 |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	for _, p := range tpPaths {
		f := fig[p.name]
		if f.n == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %.1f µs | %.1f µs |\n", p.label, ms(f.cpu), ms(f.sender), ms(f.receiver), ms(f.softirq),
			ratioText(paired(p.name, p.floor, cpuPerGB)), ratioText(paired(p.name, p.base, cpuPerGB)), float64(f.p50)/1e3, float64(f.p99)/1e3)
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "small packets: %d-byte UDP datagrams from one pinned thread for %v per run (the sender's CPU does each datagram's whole path, so the rate is the inverse of a packet's cost there; a TCP stream hides that cost in 64 KB GSO packets); datagrams the receiver got per second, and all CPUs' busy time per datagram\n\n", ppsSize, tpPPSDuration)
	fmt.Fprintf(w, "| path | packets/s median | / floor | / reference plugin | / base | CPU per packet |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|\n")
	pps := func(r tpRun) float64 { return r.pps }
	perPacket := func(r tpRun) float64 {
		if r.pps == 0 {
			return 0
		}
		return float64(r.ppsBusy) / (r.pps * tpPPSDuration.Seconds())
	}
	for _, p := range tpPaths {
		rs := res.runs[p.name]
		if len(rs) == 0 {
			continue
		}
		var rates, costs []float64
		for _, r := range rs {
			rates, costs = append(rates, r.pps), append(costs, perPacket(r))
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %.2f µs |\n", p.label, median(rates),
			ratioText(paired(p.name, p.floor, pps)), ratioText(paired(p.name, p.ref, pps)), ratioText(paired(p.name, p.base, pps)), median(costs)/1e3)
	}
	fmt.Fprintln(w)
	printAtOnce(w, atOnce, d, res)
	for _, n := range notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
	}
}
