package trace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/testutil"
)

// The privileged tests build a podnet-like node in throwaway namespaces (internal/lab):
// bridges pn-a and pn-b (networks A and B), sandboxes a1 and a2 on A and b1 on B, routed
// sandboxes r1 and r2 on network C (no bridge, host routes through their veths), each
// serving TCP on testPort; podnet's real tables (internal/nft) when a test syncs them.
// Setting PODNET_TRACE_RECORD=1 rewrites the recorded traces of testdata (see
// recordTrace).

var (
	subnetA = netip.MustParsePrefix("198.51.100.0/26")
	subnetB = netip.MustParsePrefix("198.51.100.64/26")
	subnetC = netip.MustParsePrefix("198.51.100.128/26")
	netA    = nft.Network{Name: "net-a", Bridge: "pn-a", Subnets: []netip.Prefix{subnetA}, Masquerade: true}
	netB    = nft.Network{Name: "net-b", Bridge: "pn-b", Subnets: []netip.Prefix{subnetB}}
	netC    = nft.Network{Name: "net-c", Subnets: []netip.Prefix{subnetC}} // routed
	// A service VIP whose backend is b1 (network B).
	serviceVIP = netip.MustParseAddr("10.96.0.10")
)

const (
	testPort      = 8080
	publishedPort = 18080
)

// hostAddr is address n of p, with p's length.
func hostAddr(p netip.Prefix, n int) netip.Prefix {
	a := p.Addr()
	for range n {
		a = a.Next()
	}
	return netip.PrefixFrom(a, p.Bits())
}

// topo is the test node: its namespaces by name ("node", "outside", sandboxes), their
// IPv4 addresses, and the endpoints for podnet's tables.
type topo struct {
	ns        map[string]netns.NsHandle
	addr      map[string]netip.Addr
	endpoints []nft.Endpoint
}

func buildTopo(t *testing.T) *topo {
	t.Helper()
	l := labtest.New(t)
	tp := &topo{ns: map[string]netns.NsHandle{"node": l.Node, "outside": l.Outside}, addr: map[string]netip.Addr{
		"node": lab.NodeAddr4.Addr(), "outside": lab.OutsideAddr4.Addr(),
	}}
	must(t, kernel.WriteSysctl(l.Node, "net/ipv4/ip_forward", "1"), "turn forwarding on")
	for _, n := range []nft.Network{netA, netB} {
		must(t, l.Bridge(n.Bridge, hostAddr(n.Subnets[0], 1)), "bridge "+n.Bridge)
	}
	for _, sb := range []struct {
		name string
		net  nft.Network
		n    int
	}{{"a1", netA, 10}, {"a2", netA, 11}, {"b1", netB, 10}} {
		ns, err := l.Sandbox()
		must(t, err, "sandbox "+sb.name)
		tp.ns[sb.name] = ns
		a := hostAddr(sb.net.Subnets[0], sb.n)
		tp.addr[sb.name] = a.Addr()
		v := lab.Veth{HostIf: "v" + sb.name, Bridge: sb.net.Bridge, Hairpin: true, Addrs: []netip.Prefix{a},
			Gateways: []netip.Addr{hostAddr(sb.net.Subnets[0], 1).Addr()}}
		mac, err := l.Plug(ns, v)
		must(t, err, "plug "+sb.name)
		tp.endpoints = append(tp.endpoints, nft.Endpoint{HostIf: v.HostIf, Bridge: sb.net.Bridge, Addrs: []netip.Addr{a.Addr()}, MAC: mac})
		serve(t, ns)
	}
	for i, name := range []string{"r1", "r2"} {
		ns, err := l.Sandbox()
		must(t, err, "sandbox "+name)
		tp.ns[name] = ns
		a := hostAddr(subnetC, 10+i).Addr()
		tp.addr[name] = a
		_, err = l.Routed(ns, "v"+name, a)
		must(t, err, "routed "+name)
		tp.endpoints = append(tp.endpoints, nft.Endpoint{HostIf: "v" + name, Addrs: []netip.Addr{a}})
		serve(t, ns)
	}
	return tp
}

// syncPodnet writes podnet's tables to the node, with ports.
func (tp *topo) syncPodnet(t *testing.T, ports ...nft.PortMapping) {
	t.Helper()
	tb, err := nft.Open(int(tp.ns["node"]))
	must(t, err, "open podnet's tables")
	t.Cleanup(func() { tb.Close() })
	must(t, tb.Sync(nft.Ruleset{Networks: []nft.Network{netA, netB, netC}, Endpoints: tp.endpoints, Ports: ports,
		Services: []nft.Service{{Name: "default/web", VIP: serviceVIP, Protocol: "tcp", Port: 80, Backends: []netip.AddrPort{netip.AddrPortFrom(tp.addr["b1"], testPort)}}},
	}), "sync podnet's tables")
}

// serve accepts TCP connections on testPort in ns and closes them.
func serve(t *testing.T, ns netns.NsHandle) {
	t.Helper()
	ln, err := kernel.ListenIn(ns, "tcp", fmt.Sprintf(":%d", testPort))
	must(t, err, "listen")
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func must(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// trace runs one trace of TCP from -> dst:port with a probe sent from the sandbox (or the
// outside) from.
func (tp *topo) trace(t *testing.T, from string, dst netip.Addr, port uint16) Result {
	t.Helper()
	return tp.run(t, Flow{Src: tp.addr[from], Dst: dst, Proto: TCP, Port: port}, from)
}

// wantNoMarker checks that the marker's tables are gone from the node.
func (tp *topo) wantNoMarker(t *testing.T) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(tp.ns["node"])))
	must(t, err, "nftables")
	tables, err := c.ListTables()
	must(t, err, "list tables")
	for _, tb := range tables {
		if tb.Name == TableName {
			t.Errorf("table %s left behind after the trace", TableName)
		}
	}
}

// Bridge pod to pod, in one network: the SYN goes through the bridge family's and the
// inet hooks (br_netfilter), podnet's anti-spoofing accepts it in both and exempts it
// from conntrack (no policy isolates either pod), it leaves by the other sandbox's port,
// the replies come back, untracked too; no conntrack entry, no NAT.
func TestPrivilegedTraceBridge(t *testing.T) {
	tp := buildTopo(t)
	tp.syncPodnet(t)
	res := tp.trace(t, "a1", tp.addr["a2"], testPort)
	recordTrace(t, "bridge", res)
	ft := wantFlow(t, res, true)
	if ft.Conntrack != nil || len(ft.NAT) != 0 {
		t.Errorf("conntrack %+v, nat %v; want no entry, no NAT", ft.Conntrack, ft.NAT)
	}
	p := ft.Packets[0]
	if p.Direction != "original" || p.CtState != "untracked" || p.Header.TCPFlags != 0x02 {
		t.Errorf("first packet %s, ct %s, %s; want the SYN, original, ct untracked", p.Direction, p.CtState, p.Header)
	}
	wantChain(t, p, "bridge prerouting", "bridge podnet", "antispoof", "accept")
	wantNotrack(t, wantChain(t, p, "ip prerouting", "inet podnet", "antispoof", "accept"))
	wantChain(t, p, "ip forward", "inet podnet", "forward", "accept")
	wantHooks(t, p, "bridge prerouting", "ip prerouting", "ip forward", "bridge forward", "bridge postrouting", "ip postrouting")
	if p.Fate.Verdict != "left" || !strings.Contains(p.Fate.Detail, "pn-a (bridge port va2)") {
		t.Errorf("first packet: %+v; want it to leave through pn-a, port va2", p.Fate)
	}
	if !slices.ContainsFunc(ft.Packets, func(p Packet) bool { return p.Direction == "reply" && p.Header.TCPFlags == 0x12 }) {
		t.Error("no SYN-ACK in the trace")
	}

	// The same path for ICMP: an echo request and its reply.
	f := Flow{Src: tp.addr["a1"], Dst: tp.addr["a2"], Proto: ICMP}
	res = tp.run(t, f, "a1")
	ft = wantFlow(t, res, true)
	if p := ft.Packets[0]; !p.Header.ICMPEcho || p.Header.ICMPType != 8 || p.Fate.Verdict != "left" {
		t.Errorf("first packet %s: %s; want an echo request that left", p.Header, p.Fate.Detail)
	}
}

// Routed pod to pod (network C): no bridge hooks; the node routes the SYN from r1's veth
// to r2's through podnet's forward chain, and the replies come back.
func TestPrivilegedTraceRouted(t *testing.T) {
	tp := buildTopo(t)
	tp.syncPodnet(t)
	res := tp.trace(t, "r1", tp.addr["r2"], testPort)
	recordTrace(t, "routed", res)
	ft := wantFlow(t, res, true)
	p := ft.Packets[0]
	wantHooks(t, p, "ip prerouting", "ip forward", "ip postrouting")
	wantChain(t, p, "ip prerouting", "inet podnet", "antispoof", "accept")
	wantChain(t, p, "ip forward", "inet podnet", "forward", "accept")
	if p.Fate.Verdict != "left" || !strings.Contains(p.Fate.Detail, "vr2") {
		t.Errorf("first packet: %+v; want it to leave through vr2", p.Fate)
	}
	if len(ft.NAT) != 0 || !slices.ContainsFunc(ft.Packets, func(p Packet) bool { return p.Direction == "reply" && p.Header.TCPFlags == 0x12 }) {
		t.Errorf("nat %v; want none, and a SYN-ACK", ft.NAT)
	}
}

// A service VIP: a1 connects to the VIP, podnet's prerouting chain dispatches it through
// the slot tree to the service's pick chain, which DNATs it to b1 in network B; the forward chain accepts it
// as DNATed traffic before the isolation rule, and postrouting masquerades it.
func TestPrivilegedTraceServiceVIP(t *testing.T) {
	tp := buildTopo(t)
	tp.syncPodnet(t)
	res := tp.trace(t, "a1", serviceVIP, 80)
	recordTrace(t, "service", res)
	ft := wantFlow(t, res, true)
	if want := fmt.Sprintf("dnat to %s:%d", tp.addr["b1"], testPort); !slices.Contains(ft.NAT, want) {
		t.Errorf("nat %v, want %q", ft.NAT, want)
	}
	p := ft.Packets[0]
	cv := wantChain(t, p, "ip prerouting", "inet podnet", "prerouting", "accept")
	if !slices.ContainsFunc(cv.Steps, func(s Step) bool { return strings.Contains(s.Rule, "@services4 goto service-slots4") }) {
		t.Errorf("prerouting steps %+v: no services dispatch", cv.Steps)
	}
	fwd := wantChain(t, p, "ip forward", "inet podnet", "forward", "accept")
	if !slices.ContainsFunc(fwd.Steps, func(s Step) bool { return strings.Contains(s.Rule, "ct status dnat accept") }) {
		t.Errorf("forward steps %+v: not accepted as DNATed traffic", fwd.Steps)
	}
	if p.Fate.Verdict != "left" || !strings.Contains(p.Fate.Detail, "pn-b (bridge port vb1)") {
		t.Errorf("first packet: %+v; want it to leave through pn-b, port vb1", p.Fate)
	}
}

// A published port: from outside to the node's address, DNATed by podnet's prerouting
// chain to a1; conntrack shows the translation, the hooks after prerouting the packet
// translated.
func TestPrivilegedTracePublishedPort(t *testing.T) {
	tp := buildTopo(t)
	tp.syncPodnet(t, nft.PortMapping{Protocol: "tcp", HostPort: publishedPort, Addr: tp.addr["a1"], Port: testPort})
	res := tp.trace(t, "outside", tp.addr["node"], publishedPort)
	recordTrace(t, "published", res)
	ft := wantFlow(t, res, true)
	want := fmt.Sprintf("dnat to %s:%d", tp.addr["a1"], testPort)
	if !slices.Contains(ft.NAT, want) {
		t.Errorf("nat %v, want %q", ft.NAT, want)
	}
	if c := ft.Conntrack; c == nil || c.Original.Dst != tp.addr["node"] || c.Reply.Src != tp.addr["a1"] {
		t.Errorf("conntrack %+v: want original to %s, reply from %s", c, tp.addr["node"], tp.addr["a1"])
	}
	p := ft.Packets[0]
	cv := wantChain(t, p, "ip prerouting", "inet podnet", "prerouting", "accept")
	if !slices.ContainsFunc(cv.Steps, func(s Step) bool { return strings.Contains(s.Rule, "dnat ip to") }) {
		t.Errorf("prerouting steps %+v: no dnat rule", cv.Steps)
	}
	for _, h := range p.Hooks {
		if h.Hook == "forward" && h.Header.Dst != tp.addr["a1"] {
			t.Errorf("at %s %s the packet goes to %s, want %s (translated)", h.Family, h.Hook, h.Header.Dst, tp.addr["a1"])
		}
	}
	if p.Fate.Verdict != "left" || !strings.Contains(p.Fate.Detail, "pn-a (bridge port va1)") {
		t.Errorf("first packet: %+v; want it to leave through pn-a, port va1", p.Fate)
	}
}

// Isolation: a1 (network A) to b1 (network B). Without podnet's tables it goes through
// the node (the control: the same path, no drop); with them podnet's forward chain drops
// it and the trace names the rule.
func TestPrivilegedTraceIsolation(t *testing.T) {
	tp := buildTopo(t)
	res := tp.trace(t, "a1", tp.addr["b1"], testPort)
	ft := wantFlow(t, res, true)
	control := ft.Packets[0]
	wantHooks(t, control, "bridge prerouting", "ip prerouting", "bridge input", "ip forward", "ip postrouting", "bridge output", "bridge postrouting")
	if control.Fate.Verdict != "left" || !strings.Contains(control.Fate.Detail, "pn-b (bridge port vb1)") {
		t.Fatalf("without podnet's tables: %+v; want the SYN to leave through pn-b, port vb1", control.Fate)
	}

	tp.syncPodnet(t)
	res = tp.trace(t, "a1", tp.addr["b1"], testPort)
	recordTrace(t, "isolation", res)
	ft = wantFlow(t, res, false)
	p := ft.Packets[0]
	wantHooks(t, p, "bridge prerouting", "ip prerouting", "bridge input", "ip forward")
	f := p.Fate
	if f.Verdict != "dropped" || f.Hook != "ip forward" || f.Table != "inet podnet" || f.Chain != "forward" || !strings.Contains(f.Rule, "@same_network4 drop") {
		t.Errorf("fate %+v; want dropped in ip forward by the isolation rule of inet podnet forward", f)
	}
	if !ft.Dropped || !strings.Contains(res.Report.Result, "dropped in ip forward by rule") {
		t.Errorf("result %q; want the rule that dropped it", res.Report.Result)
	}
}

// A rule of another tool's table (inet other) drops a flow that podnet's tables let
// through: the trace names that table, chain and rule, printed in nft syntax.
func TestPrivilegedTraceForeignDrop(t *testing.T) {
	tp := buildTopo(t)
	tp.syncPodnet(t)
	res := tp.trace(t, "a1", tp.addr["a2"], testPort)
	ft := wantFlow(t, res, true)
	control := ft.Packets[0]
	if control.Fate.Verdict != "left" {
		t.Fatalf("before table inet other: %+v; want the SYN to leave", control.Fate)
	}

	c, err := nftables.New(nftables.WithNetNSFd(int(tp.ns["node"])))
	must(t, err, "nftables")
	other := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "other"})
	ch := c.AddChain(&nftables.Chain{Table: other, Name: "forward", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	a2 := tp.addr["a2"].As4()
	c.AddRule(&nftables.Rule{Table: other, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a2[:]},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{testPort >> 8, testPort & 0xff}},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	must(t, c.Flush(), "add table inet other")

	res = tp.trace(t, "a1", tp.addr["a2"], testPort)
	recordTrace(t, "foreign", res)
	ft = wantFlow(t, res, false)
	p := ft.Packets[0]
	f := p.Fate
	wantRule := fmt.Sprintf("ip daddr %s tcp dport %d drop", tp.addr["a2"], testPort)
	if f.Verdict != "dropped" || f.Hook != "ip forward" || f.Table != "inet other" || f.Chain != "forward" || f.Rule != wantRule {
		t.Errorf("fate %+v; want dropped in ip forward by inet other forward: %s", f, wantRule)
	}
	// The path up to the drop is the control's.
	for i, h := range p.Hooks {
		if i >= len(control.Hooks) || control.Hooks[i].Family != h.Family || control.Hooks[i].Hook != h.Hook {
			t.Errorf("hook %d: %s %s, not on the path without the drop", i, h.Family, h.Hook)
		}
	}
}

// A destination the node has no route to: the packet is not seen after prerouting, and
// the trace says why with the node's route decision. The control first: with the
// node's default route, it leaves through the uplink.
func TestPrivilegedTraceNoRoute(t *testing.T) {
	tp := buildTopo(t)
	tp.syncPodnet(t)
	dst := netip.MustParseAddr("192.0.2.99")
	f := Flow{Src: tp.addr["a1"], Dst: dst, Proto: UDP, Port: 53}
	res := tp.run(t, f, "a1")
	if p := res.Report.Flows[0].Packets[0]; p.Fate.Verdict != "left" || !strings.Contains(p.Fate.Detail, lab.Uplink) {
		t.Fatalf("with a route: %+v; want the datagram to leave through %s", p.Fate, lab.Uplink)
	}

	h, err := vnl.NewHandleAt(tp.ns["node"])
	must(t, err, "netlink")
	defer h.Close()
	must(t, h.RouteAdd(&vnl.Route{Dst: &net.IPNet{IP: net.IPv4(192, 0, 2, 0), Mask: net.CIDRMask(24, 32)}, Type: unix.RTN_UNREACHABLE}), "add unreachable route")
	res = tp.run(t, f, "a1")
	recordTrace(t, "noroute", res)
	ft := res.Report.Flows[0]
	p := ft.Packets[0]
	wantHooks(t, p, "bridge prerouting", "ip prerouting", "bridge input")
	if p.Fate.Verdict != "lost" || p.Fate.Route == nil || p.Fate.Route.Err == "" || p.Fate.Route.Iif != "pn-a" ||
		!strings.Contains(ft.Outcome, "not seen after ip prerouting (in pn-a): the node's routing decision dropped it: no route") ||
		!strings.Contains(ft.Outcome, "198.51.100.1 answered destination-unreachable code 1") {
		t.Errorf("fate %+v, outcome %q; want lost after prerouting, for lack of a route", p.Fate, ft.Outcome)
	}
}

// The marker's tables belong to its socket: closing the socket without deleting them
// (the process killed) removes them; a second marker in the namespace is refused.
func TestPrivilegedMarkerOwner(t *testing.T) {
	testutil.RequireRoot(t)
	ns, err := kernel.NewNS()
	must(t, err, "new namespace")
	defer ns.Close()
	tp := &topo{ns: map[string]netns.NsHandle{"node": ns}}
	f := Flow{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: UDP, Port: 53}
	m, err := Mark(int(ns), f)
	must(t, err, "mark")
	if _, err := Mark(int(ns), f); !errors.Is(err, ErrBusy) {
		t.Errorf("second Mark: %v, want ErrBusy", err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	must(t, err, "nftables")
	tables, err := c.ListTables()
	must(t, err, "list tables")
	if n := len(tables); n != 2 {
		t.Errorf("%d tables while marking, want 2 (inet and bridge %s)", n, TableName)
	}
	m.conn.Close() // what the kernel sees when the process dies
	tp.wantNoMarker(t)
}

// An interrupted watch (the context ends) returns at once, with the marker removed.
func TestPrivilegedTraceInterrupt(t *testing.T) {
	tp := buildTopo(t)
	f := Flow{Src: tp.addr["a1"], Dst: tp.addr["a2"], Proto: TCP, Port: testPort}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	// Without Timeout or Count, Run watches until ctx ends: returning at all is the proof.
	res, err := Run(ctx, Options{Node: tp.ns["node"], Flow: f, Source: netns.None()})
	must(t, err, "trace")
	if len(res.Report.Flows) != 0 || !strings.HasPrefix(res.Report.Result, "no packet of the flow was seen") {
		t.Errorf("report %+v; want no flow", res.Report)
	}
	tp.wantNoMarker(t)
}

// run traces f with one probe from the sandbox from.
func (tp *topo) run(t *testing.T, f Flow, from string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := Run(ctx, Options{Node: tp.ns["node"], NodePath: "node", Flow: f, Source: tp.ns[from], Send: true, Count: 1, Timeout: time.Second})
	must(t, err, "trace "+f.String())
	var b strings.Builder
	WriteText(&b, res.Report)
	t.Logf("%s", b.String())
	tp.wantNoMarker(t)
	return res
}

// wantFlow checks that res has one flow with packets, answered as answered says, and
// returns it. An unanswered probe may have more: its SYN retransmitted (after 1 s, the
// probe's timeout, which a loaded machine can reach first) is a flow of its own, since
// conntrack never confirmed the first; the tracer finds it took the same path.
func wantFlow(t *testing.T, res Result, answered bool) FlowTrace {
	t.Helper()
	r := res.Report
	if len(r.Flows) == 0 || len(r.Flows[0].Packets) == 0 {
		t.Fatalf("%d flows, want 1 with packets", len(r.Flows))
	}
	for i, ft := range r.Flows[1:] {
		if answered || ft.Probe != 1 || ft.SameAs != 1 || ft.Header != r.Flows[0].Header {
			t.Fatalf("%d flows, want 1 with packets (flow %d: probe %d, the same path as flow %d, header %+v)", len(r.Flows), i+2, ft.Probe, ft.SameAs, ft.Header)
		}
	}
	if len(r.Probes) != 1 || r.Probes[0].OK != answered {
		t.Fatalf("probes %+v, want one, answered: %v", r.Probes, answered)
	}
	ft := r.Flows[0]
	if ft.Probe != 1 || ft.ConntrackID == 0 && ft.Packets[0].CtState != "untracked" {
		t.Errorf("flow of probe %d, conntrack id %d (%s); want probe 1 and an id, or untracked", ft.Probe, ft.ConntrackID, ft.Packets[0].CtState)
	}
	if ft.Dropped == answered {
		t.Errorf("flow dropped: %v, want %v (%s)", ft.Dropped, !answered, ft.Outcome)
	}
	return ft
}

// wantChain checks that p went through chain of table at hook ("ip forward") with the
// final verdict, and returns the visit.
func wantChain(t *testing.T, p Packet, hook, table, chain, verdict string) ChainVisit {
	t.Helper()
	for _, h := range p.Hooks {
		if h.Family+" "+h.Hook != hook {
			continue
		}
		for _, cv := range h.Chains {
			if cv.Table == table && cv.Chain == chain {
				if cv.Verdict != verdict {
					t.Errorf("%s %s %s: verdict %s, want %s", hook, table, chain, cv.Verdict, verdict)
				}
				return cv
			}
		}
	}
	t.Errorf("packet did not go through %s %s at %s", table, chain, hook)
	return ChainVisit{}
}

// wantNotrack checks that a rule of cv exempted the packet from conntrack.
func wantNotrack(t *testing.T, cv ChainVisit) {
	t.Helper()
	if !slices.ContainsFunc(cv.Steps, func(s Step) bool { return strings.Contains(s.Rule, " notrack") }) {
		t.Errorf("%s %s: no notrack rule in %+v", cv.Table, cv.Chain, cv.Steps)
	}
}

// wantHooks checks the hooks of p, in order.
func wantHooks(t *testing.T, p Packet, want ...string) {
	t.Helper()
	var got []string
	for _, h := range p.Hooks {
		got = append(got, h.Family+" "+h.Hook)
	}
	if !slices.Equal(got, want) {
		t.Errorf("hooks %q, want %q", got, want)
	}
}

// recordTrace writes the trace messages of res and the rest of its input to testdata,
// when PODNET_TRACE_RECORD=1: the golden inputs of the unit tests (report_test.go).
func recordTrace(t *testing.T, name string, res Result) {
	t.Helper()
	if os.Getenv("PODNET_TRACE_RECORD") != "1" {
		return
	}
	var raw []byte
	for _, m := range res.Raw {
		raw = append(raw, m...)
	}
	must(t, os.WriteFile(filepath.Join("testdata", name+".nlmsg"), raw, 0o644), "write "+name+".nlmsg")
	in := res.Input
	in.Events = nil
	js, err := json.MarshalIndent(in, "", "  ")
	must(t, err, "marshal input")
	must(t, os.WriteFile(filepath.Join("testdata", name+".input.json"), append(js, '\n'), 0o644), "write "+name+".input.json")
}
