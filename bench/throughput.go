package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
)

// The throughput section: one TCP stream at a time, a Go sender and receiver with
// large writes (as iperf3 does), through each path below, in rounds (every path once
// per round, so that drift of the machine spreads over all of them); the figure of a
// path is the median of its runs, compared with the bare veth pair of the same run.
//
// Namespaces (one testbed): two sandboxes joined by a bare veth pair; the topologies
// of a bridge network and of a routed network built with netlink and nothing else
// (floors: what the kernel costs without podnet's rules); the node, with an uplink
// veth to an "outside" namespace that plays a client elsewhere on the network;
// sandboxes attached by a `podnet agent` (through the API, with the sandbox's netns
// descriptor) to a bridge network, a routed network and a bridge network in port mode
// proxy. Published ports are dialed from the outside at the node's uplink address.

// tpPath is one row of the throughput table.
type tpPath struct {
	name   string
	label  string
	target float64 // minimum ratio to the bare veth pair; 0: reported only
}

var tpPaths = []tpPath{
	{"veth", "bare veth pair, ns to ns", 0},
	{"floor-bridge", "netlink floor: plain bridge, two veths, no rules", 0},
	{"floor-routed", "netlink floor: plain forwarding, two veths, no rules", 0},
	{"bridge", "podnet bridge network, pod to pod", 0.9},
	{"routed", "podnet routed network, pod to pod", 0.9},
	{"dnat", "published port, DNAT: outside -> node:port -> pod (bridge)", 0.9},
	{"proxy", "published port, port mode proxy: outside -> node:port -> pod", 0},
}

// Sandbox indexes of the throughput testbed.
const (
	tpVethA = iota
	tpVethB
	tpFloorBridgeHub
	tpFloorBridgeA
	tpFloorBridgeB
	tpFloorRoutedHub
	tpFloorRoutedA
	tpFloorRoutedB
	tpBridgeA
	tpBridgeB
	tpRoutedA
	tpRoutedB
	tpDNATServer
	tpProxyServer
	tpOutside
	tpNamespaces
)

const (
	tpPort         = 5201 // the receiver's port, in every server namespace
	tpDNATHostPort = 18080
	tpProxyPort    = 18081
	tpWrite        = 128 << 10 // bytes per write and per read (iperf3's default length)
	tpDialTimeout  = 5 * time.Second
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
	tpNode4      = netip.MustParsePrefix("203.0.113.1/24") // node end of the uplink
	tpOutside4   = netip.MustParsePrefix("203.0.113.2/24")
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
	rates    map[string][]float64  // bit/s per run, by path name
	seen     map[string]netip.Addr // the client address the receiver saw, by path name
	errs     map[string]error      // why a path has no figure, or failed in a later run
	brNFCall string                // bridge-nf-call-iptables in the node namespace
	err      error                 // the section's own setup or cleanup failed
}

// measureThroughput builds the throughput testbed, runs `runs` rounds of d-long
// streams and removes everything again.
func measureThroughput(ctx context.Context, prefix, binDir string, runs int, d time.Duration) (res tpResult) {
	res = tpResult{rates: map[string][]float64{}, seen: map[string]netip.Addr{}, errs: map[string]error{}}
	tb, err := newTestbed(prefix, tpNamespaces)
	if err != nil {
		res.err = err
		return res
	}
	defer func() { res.err = errors.Join(res.err, tb.remove()) }()
	ns := make([]netns.NsHandle, len(tb.sandboxes))
	defer func() {
		for _, h := range ns {
			if h.IsOpen() {
				h.Close()
			}
		}
	}()
	for i, path := range tb.sandboxes {
		if ns[i], err = netns.GetFromPath(path); err != nil {
			res.err = fmt.Errorf("open %s: %w", path, err)
			return res
		}
	}

	flows := map[string]flow{}
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
			res.errs[p.path] = err
		} else {
			flows[p.path] = f
		}
	}
	if err := wireVeth(tb.node, "uplink0", tpNode4, ns[tpOutside], "eth0", tpOutside4); err != nil {
		res.err = fmt.Errorf("wire uplink between node and outside: %w", err)
		return res
	}
	agent, err := startAgent(binDir, tb)
	defer func() { res.err = errors.Join(res.err, agent.Stop()) }()
	if err != nil {
		for _, p := range []string{"bridge", "routed", "dnat", "proxy"} {
			res.errs[p] = err
		}
	} else {
		podnetFlows(ctx, agent.Client(), tb, ns, flows, res.errs)
	}
	res.brNFCall = readSysctlIn(tb.node, "net/bridge/bridge-nf-call-iptables")

	settle(ctx)
	for run := range runs {
		for _, p := range tpPaths {
			f, ok := flows[p.name]
			if !ok || res.errs[p.name] != nil || ctx.Err() != nil {
				continue
			}
			fmt.Fprintf(os.Stderr, "podnet-bench: throughput %s, run %d/%d\n", p.name, run+1, runs)
			rate, from, err := stream(ctx, f, d)
			if err != nil {
				res.errs[p.name] = fmt.Errorf("run %d: %w", run+1, err)
				continue
			}
			res.rates[p.name] = append(res.rates[p.name], rate)
			res.seen[p.name] = from
		}
	}
	return res
}

// podnetFlows creates podnet's networks through the agent's API and attaches the
// sandboxes, adding the podnet paths to flows, or their failure to errs.
func podnetFlows(ctx context.Context, c *api.Client, tb *testbed, ns []netns.NsHandle, flows map[string]flow, errs map[string]error) {
	networks := []api.NetworkSpec{
		{Name: "tp-bridge", Driver: api.DriverBridge, Subnets: []string{"10.98.0.0/24"}},
		{Name: "tp-routed", Driver: api.DriverRouted, Subnets: []string{"10.98.1.0/24"}},
		{Name: "tp-proxy", Driver: api.DriverBridge, Subnets: []string{"10.98.2.0/24"}, PortMode: api.PortModeProxy},
	}
	netErr := map[string]error{}
	for _, spec := range networks {
		if _, err := c.CreateNetwork(ctx, spec); err != nil {
			netErr[spec.Name] = fmt.Errorf("POST %s %+v: %w", api.PathNetworks, spec, err)
		}
	}
	attach := func(network string, sb int, ports ...api.PortMapping) (netip.Addr, error) {
		if err := netErr[network]; err != nil {
			return netip.Addr{}, err
		}
		req := api.AttachRequest{
			EndpointKey: api.EndpointKey{Network: network, ContainerID: fmt.Sprintf("tp%d", sb), IfName: "eth0"},
			Netns:       tb.sandboxes[sb],
			Ports:       ports,
		}
		res, err := c.Attach(ctx, req, int(ns[sb]))
		if err != nil {
			return netip.Addr{}, fmt.Errorf("attach %s (ports %v): %w", req.EndpointKey, ports, err)
		}
		if len(res.IPs) == 0 {
			return netip.Addr{}, fmt.Errorf("attach %s: result without an address", req.EndpointKey)
		}
		return res.IPs[0].Address.Addr(), nil
	}
	podToPod := func(network string, a, b int) (flow, error) {
		if _, err := attach(network, a); err != nil {
			return flow{}, err
		}
		server, err := attach(network, b)
		return directFlow(ns[a], ns[b], server), err
	}
	published := func(network string, sb int, hostPort uint16) (flow, error) {
		server, err := attach(network, sb, api.PortMapping{HostPort: hostPort, ContainerPort: tpPort, Protocol: "tcp"})
		return flow{client: ns[tpOutside], server: ns[sb],
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
		if f, err := p.setup(); err != nil {
			errs[p.path] = err
		} else {
			flows[p.path] = f
		}
	}
}

// stream sends one TCP stream along f for d and returns the goodput the receiver
// saw, in bit/s (bytes received over the time from accept to end of stream), and the
// client address it saw.
func stream(ctx context.Context, f flow, d time.Duration) (float64, netip.Addr, error) {
	var l net.Listener
	err := inNetns(f.server, func() (err error) {
		l, err = net.Listen("tcp4", f.listen.String())
		return err
	})
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	defer l.Close()
	type received struct {
		bytes int64
		took  time.Duration
		from  netip.Addr
		err   error
	}
	recv := make(chan received, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			recv <- received{err: err}
			return
		}
		defer c.Close()
		start := time.Now()
		r := received{from: netip.MustParseAddrPort(c.RemoteAddr().String()).Addr()}
		buf := make([]byte, tpWrite)
		for {
			n, err := c.Read(buf)
			r.bytes += int64(n)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					r.err = err
				}
				break
			}
		}
		r.took = time.Since(start)
		recv <- r
	}()

	var c net.Conn
	err = inNetns(f.client, func() (err error) {
		c, err = net.DialTimeout("tcp4", f.dial.String(), tpDialTimeout)
		return err
	})
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("connect to %s: %w", f.dial, err)
	}
	// The write deadline ends the stream at d, or at once on ctrl-C.
	c.SetWriteDeadline(time.Now().Add(d))
	stop := context.AfterFunc(ctx, func() { c.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, tpWrite)
	for {
		if _, err := c.Write(buf); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				c.Close()
				return 0, netip.Addr{}, fmt.Errorf("send to %s: %w", f.dial, err)
			}
			break
		}
	}
	c.Close()
	select {
	case r := <-recv:
		if r.err != nil {
			return 0, netip.Addr{}, fmt.Errorf("receive on %s: %w", f.listen, r.err)
		}
		if r.took <= 0 || r.bytes == 0 {
			return 0, netip.Addr{}, fmt.Errorf("receive on %s: nothing arrived", f.listen)
		}
		return float64(r.bytes) * 8 / r.took.Seconds(), r.from, nil
	case <-time.After(d + tpDialTimeout):
		return 0, netip.Addr{}, fmt.Errorf("receive on %s: no end of stream %v after the sender stopped", f.listen, tpDialTimeout)
	}
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

// printThroughput prints the throughput table and the ratios.
func printThroughput(w io.Writer, runs int, d time.Duration, res tpResult) {
	fmt.Fprintf(w, "### Throughput\n\n")
	fmt.Fprintf(w, "one TCP stream, Go sender and receiver, %d KiB writes, %v per run, median of %d runs (rounds interleave the paths); bridge-nf-call-iptables in the node namespace: %s\n\n",
		tpWrite>>10, d, runs, res.brNFCall)
	fmt.Fprintf(w, "| path | Gbit/s median | runs | / bare veth | target | server saw client as |\n")
	fmt.Fprintf(w, "|---|---:|---|---:|---|---|\n")
	gbps := func(r float64) string { return fmt.Sprintf("%.2f", r/1e9) }
	var veth float64
	if rs := res.rates["veth"]; len(rs) > 0 {
		veth = median(rs)
	}
	for _, p := range tpPaths {
		rs := res.rates[p.name]
		target := "reported"
		switch {
		case p.name == "veth":
			target = "the reference"
		case p.target > 0:
			target = fmt.Sprintf(">= %g", p.target)
		}
		if len(rs) == 0 {
			why := "not run"
			if err := res.errs[p.name]; err != nil {
				why = "failed: " + cell(err.Error())
			}
			fmt.Fprintf(w, "| %s | %s | | | %s | |\n", p.label, why, target)
			continue
		}
		var each []string
		for _, r := range rs {
			each = append(each, gbps(r))
		}
		m := median(rs)
		ratio := "n/a"
		if veth > 0 {
			r := m / veth
			ratio = fmt.Sprintf("%.2f", r)
			if p.target > 0 && r >= p.target {
				target += ", meets target"
			} else if p.target > 0 {
				target += ", MISSES target"
			}
		}
		if err := res.errs[p.name]; err != nil {
			target += "; then failed: " + cell(err.Error())
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", p.label, gbps(m), strings.Join(each, " "), ratio, target, res.seen[p.name])
	}
	fmt.Fprintln(w)
}
