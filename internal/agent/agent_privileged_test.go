package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/fastpath"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

const probeTimeout = 3 * time.Second

// env is one throwaway node with an agent serving on a socket.
type env struct {
	t      *testing.T
	lab    *lab.Lab
	dir    string
	socket string
	agent  *Agent
	c      *api.Client
	stop   func()
	// dns configures the agent's DNS server; by default it forwards nowhere (an empty
	// resolv.conf), so no test query leaves the lab.
	dns DNSConfig
}

func newEnv(t *testing.T) *env {
	t.Helper()
	l := labtest.New(t)
	e := &env{t: t, lab: l, dir: t.TempDir()}
	e.socket = filepath.Join(e.dir, "podnet.sock")
	e.dns.ResolvConf = filepath.Join(e.dir, "resolv.conf")
	if err := os.WriteFile(e.dns.ResolvConf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.start()
	t.Cleanup(func() { e.stop() })
	return e
}

func (e *env) start() {
	e.t.Helper()
	st, err := store.OpenBolt(filepath.Join(e.dir, "podnet.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(Config{Store: st, NodeNS: e.lab.Node, Logger: log, ReconcileInterval: time.Hour, DNS: e.dns})
	if err != nil {
		st.Close()
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Serve(ctx, e.socket); close(done) }()
	e.agent, e.c = a, api.NewClient(e.socket)
	stopped := false
	e.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			a.Close()
		}
	}
	for i := 0; ; i++ {
		if _, err := e.c.Status(context.Background()); err == nil {
			return
		} else if i > 200 {
			e.t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) restart() {
	e.stop()
	e.start()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Logf("%s", b); return len(b), nil }

func (e *env) network(name string, subnets ...string) api.Network {
	e.t.Helper()
	n, err := e.c.CreateNetwork(context.Background(), api.NetworkSpec{Name: name, Subnets: subnets})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

type sandbox struct {
	ns  netns.NsHandle
	key api.EndpointKey
	res api.Result
}

func (s *sandbox) ip(i int) netip.Addr { return s.res.IPs[i].Address.Addr() }

func (e *env) attach(network, id string, ips ...string) (*sandbox, error) {
	ns, err := e.lab.Sandbox()
	if err != nil {
		e.t.Fatal(err)
	}
	sb := &sandbox{ns: ns, key: api.EndpointKey{Network: network, ContainerID: id, IfName: "eth0"}}
	sb.res, err = e.c.Attach(context.Background(), api.AttachRequest{EndpointKey: sb.key, IPs: ips}, int(ns))
	return sb, err
}

func (e *env) mustAttach(network, id string, ips ...string) *sandbox {
	e.t.Helper()
	sb, err := e.attach(network, id, ips...)
	if err != nil {
		e.t.Fatalf("attach %s: %v", id, err)
	}
	return sb
}

func (e *env) links(prefix string) []string {
	e.t.Helper()
	links, err := e.agent.node.LinksWithPrefix(prefix)
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for name := range links {
		names = append(names, name)
	}
	return names
}

// fastPath reads the counters of the agent's fast path.
func (e *env) fastPath() fastpath.Stats {
	e.t.Helper()
	s, err := e.agent.fastpath.Stats()
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func wantCode(t *testing.T, err error, code int) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want code %d", code)
	}
	if got := api.ErrorCode(err); got != code {
		t.Fatalf("error %v: code %d, want %d", err, got, code)
	}
}

func TestPrivilegedAttachConnectivityAndDetach(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	n := e.network("blue", "10.89.0.0/24", "fd89::/64")
	a := e.mustAttach("blue", "a")
	b := e.mustAttach("blue", "b")

	if len(a.res.IPs) != 2 || a.res.IPs[0].Gateway != n.Subnets[0].Gateway || a.res.Interfaces[1].MAC == "" {
		t.Fatalf("result %+v", a.res)
	}
	// The fast path follows the host veths as they appear (internal/fastpath).
	waitFor(t, func() bool { s := e.fastPath(); return s.Ports == 2 && s.DstEntries == 4 })
	for i := range 2 {
		src, err := probe.TCP(ctx, a.ns, b.ns, netip.AddrPortFrom(b.ip(i), 8080), probeTimeout)
		if err != nil || src != a.ip(i) {
			t.Fatalf("a -> b family %d: src %v err %v (want src %s)", i, src, err, a.ip(i))
		}
		// The node reaches its sandboxes too.
		if _, err := probe.TCP(ctx, e.lab.Node, b.ns, netip.AddrPortFrom(b.ip(i), 8081), probeTimeout); err != nil {
			t.Fatalf("node -> b: %v", err)
		}
	}
	if st, err := e.c.Status(ctx); err != nil || st.FastPath == nil || st.FastPath.Ports != 2 || st.FastPath.RedirectedPackets == 0 {
		t.Errorf("a -> b: status %+v (%v), want the fast path on 2 ports, with packets redirected", st.FastPath, err)
	}
	for _, out := range []struct{ server, node netip.Prefix }{{lab.OutsideAddr4, lab.NodeAddr4}, {lab.OutsideAddr6, lab.NodeAddr6}} {
		src, err := probe.TCP(ctx, a.ns, e.lab.Outside, netip.AddrPortFrom(out.server.Addr(), 9090), probeTimeout)
		if err != nil || src != out.node.Addr() {
			t.Fatalf("egress to %s: src %v err %v, want masquerade to %s", out.server, src, err, out.node.Addr())
		}
	}
	if err := e.c.Check(ctx, api.CheckRequest{EndpointKey: a.key}, int(a.ns)); err != nil {
		t.Fatalf("check intact endpoint: %v", err)
	}
	// CHECK sees what really is in the kernel.
	h, _ := netlink.NewHandleAt(a.ns)
	defer h.Close()
	eth0, _ := h.LinkByName("eth0")
	if err := h.AddrDel(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: a.ip(0).AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.c.Check(ctx, api.CheckRequest{EndpointKey: a.key}, int(a.ns)), api.CodeCheckFailed)

	wantCode(t, e.c.DeleteNetwork(ctx, "blue"), api.CodeBusy)
	for _, sb := range []*sandbox{a, b} {
		if err := e.c.Detach(ctx, api.DetachRequest{EndpointKey: sb.key}, -1); err != nil {
			t.Fatal(err)
		}
		// DEL is idempotent.
		if err := e.c.Detach(ctx, api.DetachRequest{EndpointKey: sb.key}, -1); err != nil {
			t.Fatalf("second detach: %v", err)
		}
	}
	waitFor(t, func() bool { return len(e.links(spec.VethPrefix)) == 0 })
	if s := e.fastPath(); s.Ports != 0 || s.SrcEntries != 0 || s.DstEntries != 0 {
		t.Errorf("after DEL: fast path on %d ports with %d/%d entries, want none", s.Ports, s.SrcEntries, s.DstEntries)
	}
	// DEL of something the agent never knew is a success too.
	if err := e.c.Detach(ctx, api.DetachRequest{EndpointKey: api.EndpointKey{Network: "blue", ContainerID: "never", IfName: "eth0"}}, -1); err != nil {
		t.Fatal(err)
	}
	if err := e.c.DeleteNetwork(ctx, "blue"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.agent.node.LinkExists(n.Bridge); ok {
		t.Fatalf("bridge %s left after network rm", n.Bridge)
	}
	wantCode(t, e.c.DeleteNetwork(ctx, "blue"), api.CodeNotFound)
}

// Between two routed pods, the fast path gets from the agent's tables what it needs to
// address the frames itself (the pods' MACs), and carries their connections.
func TestPrivilegedRoutedFastPath(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.routedNetwork("green", "10.77.0.0/24", "fd77::/64")
	x, y := e.mustAttach("green", "x"), e.mustAttach("green", "y")
	waitFor(t, func() bool { s := e.fastPath(); return s.Ports == 2 && s.DstEntries == 4 })
	before := e.fastPath().Redirected.Packets
	for i := range 2 {
		src, err := probe.TCP(ctx, x.ns, y.ns, netip.AddrPortFrom(y.ip(i), 8080), probeTimeout)
		if err != nil || src != x.ip(i) {
			t.Fatalf("x -> y family %d: src %v err %v (want src %s)", i, src, err, x.ip(i))
		}
	}
	// Each connection's handshake, data and close went both ways on the fast path.
	if got := e.fastPath().Redirected.Packets - before; got < 2*6 {
		t.Errorf("x -> y: %d packets redirected, want at least 12", got)
	}
}

func TestPrivilegedIsolationAndNoMasquerade(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.network("blue", "10.89.0.0/24")
	if _, err := e.c.CreateNetwork(ctx, api.NetworkSpec{Name: "red", Subnets: []string{"10.90.0.0/24"}, NoMasquerade: true}); err != nil {
		t.Fatal(err)
	}
	a := e.mustAttach("blue", "a")
	x := e.mustAttach("red", "x")
	blueToRed, redToBlue := netip.AddrPortFrom(x.ip(0), 8080), netip.AddrPortFrom(a.ip(0), 8080)

	// Positive control: without podnet's tables the node forwards between the two
	// networks, so a probe below that gets no answer saw the rules, not a broken path.
	tbl, err := nft.Open(int(e.lab.Node))
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	if err := tbl.Delete(); err != nil {
		t.Fatal(err)
	}
	if src, err := probe.TCP(ctx, x.ns, a.ns, redToBlue, probeTimeout); err != nil || src != x.ip(0) {
		t.Fatalf("red -> blue without the tables: src %v err %v, want a connection from %s", src, err, x.ip(0))
	}
	if src, err := probe.TCP(ctx, a.ns, x.ns, blueToRed, probeTimeout); err != nil || src != a.ip(0) {
		t.Fatalf("blue -> red without the tables: src %v err %v, want a connection from %s", src, err, a.ip(0))
	}
	if err := e.agent.Reconcile(false); err != nil {
		t.Fatal(err)
	}
	if err := probe.Blocked(ctx, x.ns, a.ns, redToBlue, time.Second); err != nil {
		t.Fatalf("red -> blue: %v", err)
	}
	if err := probe.Blocked(ctx, a.ns, x.ns, blueToRed, time.Second); err != nil {
		t.Fatalf("blue -> red: %v", err)
	}

	// Without masquerade the outside sees the sandbox's own address, and only a route
	// back to 10.90.0.0/24 lets it answer (positive control); without one it cannot.
	outside := netip.AddrPortFrom(lab.OutsideAddr4.Addr(), 9090)
	oh, err := netlink.NewHandleAt(e.lab.Outside)
	if err != nil {
		t.Fatal(err)
	}
	defer oh.Close()
	back := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4(10, 90, 0, 0), Mask: net.CIDRMask(24, 32)}, Gw: lab.NodeAddr4.Addr().AsSlice()}
	if err := oh.RouteAdd(back); err != nil {
		t.Fatal(err)
	}
	if src, err := probe.TCP(ctx, x.ns, e.lab.Outside, outside, probeTimeout); err != nil || src != x.ip(0) {
		t.Fatalf("unmasqueraded egress, outside routes back: src %v err %v, want %s (not masqueraded)", src, err, x.ip(0))
	}
	if err := oh.RouteDel(back); err != nil {
		t.Fatal(err)
	}
	if err := probe.Blocked(ctx, x.ns, e.lab.Outside, outside, time.Second); err != nil {
		t.Fatalf("unmasqueraded egress, no route back: %v", err)
	}
	if src, err := probe.TCP(ctx, a.ns, e.lab.Outside, outside, probeTimeout); err != nil || src != lab.NodeAddr4.Addr() {
		t.Fatalf("masqueraded egress: src %v err %v, want the node's %s", src, err, lab.NodeAddr4.Addr())
	}
}

func TestPrivilegedConcurrentAttach(t *testing.T) {
	e := newEnv(t)
	e.network("blue", "10.89.0.0/16", "fd89::/64")
	const n = 100
	sbs := make([]*sandbox, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { sbs[i], errs[i] = e.attach("blue", fmt.Sprintf("c%03d", i)) })
	}
	wg.Wait()
	seen := map[netip.Addr]string{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("attach %d: %v", i, errs[i])
		}
		for _, ip := range sbs[i].res.IPs {
			if other, dup := seen[ip.Address.Addr()]; dup {
				t.Fatalf("%s handed to %s and %s", ip.Address, other, sbs[i].key.ContainerID)
			}
			seen[ip.Address.Addr()] = sbs[i].key.ContainerID
		}
	}
	if len(seen) != 2*n || len(e.links(spec.VethPrefix)) != n {
		t.Fatalf("%d addresses, %d veths", len(seen), len(e.links(spec.VethPrefix)))
	}
	for i := range n {
		wg.Go(func() { errs[i] = e.c.Detach(context.Background(), api.DetachRequest{EndpointKey: sbs[i].key}, -1) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("detach %d: %v", i, errs[i])
		}
	}
	// DEL replies before the veth pair is gone; the endpoint record goes last.
	waitFor(t, func() bool { eps, _ := e.c.Endpoints(context.Background(), "blue"); return len(eps) == 0 })
	if l := e.links(spec.VethPrefix); len(l) != 0 {
		t.Fatalf("veths left: %v", l)
	}
	assertNoAllocations(t, e, "blue")
}

func assertNoAllocations(t *testing.T, e *env, network string) {
	t.Helper()
	err := e.agent.store.View(func(tx store.Tx) error {
		allocs, err := tx.Allocations(network)
		if err == nil && len(allocs) != 0 {
			return fmt.Errorf("%d addresses still allocated: %v", len(allocs), allocs)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPrivilegedStaticIPsAndExhaustion(t *testing.T) {
	e := newEnv(t)
	e.network("small", "10.91.0.0/29") // .1 gateway, .2-.6 usable, .7 broadcast
	a := e.mustAttach("small", "a", "10.91.0.5")
	if a.ip(0) != netip.MustParseAddr("10.91.0.5") {
		t.Fatalf("static: got %s", a.ip(0))
	}
	_, err := e.attach("small", "b", "10.91.0.5")
	wantCode(t, err, api.CodeAddressInUse)
	_, err = e.attach("small", "b", "10.91.0.1")
	wantCode(t, err, api.CodeInvalidConfig)
	_, err = e.attach("small", "b", "10.99.0.1")
	wantCode(t, err, api.CodeInvalidConfig)
	for i := range 4 {
		e.mustAttach("small", fmt.Sprintf("f%d", i))
	}
	_, err = e.attach("small", "full")
	wantCode(t, err, api.CodePoolExhausted)
	// Failed attaches left nothing behind.
	if got := len(e.links(spec.VethPrefix)); got != 5 {
		t.Fatalf("%d veths, want 5", got)
	}
	eps, _ := e.c.Endpoints(context.Background(), "small")
	if len(eps) != 5 {
		t.Fatalf("%d endpoints, want 5", len(eps))
	}
}

func TestPrivilegedBadInputCreatesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// A node route 10.0.0.0/8 on the uplink, as a host's LAN route would be.
	h, err := netlink.NewHandleAt(e.lab.Node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	up, _ := h.LinkByName("uplink0")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 0, 0, 0), Mask: net.CIDRMask(8, 32)}, Gw: lab.OutsideAddr4.Addr().AsSlice()}); err != nil {
		t.Fatal(err)
	}
	e.network("blue", "172.20.0.0/16")
	cases := []struct {
		spec api.NetworkSpec
		want string
	}{
		{api.NetworkSpec{Name: "k8s", Subnets: []string{"10.32.0.0/12"}}, `network "k8s": subnet "10.32.0.0/12": overlaps node route 10.0.0.0/8 dev uplink0`},
		{api.NetworkSpec{Name: "dup", Subnets: []string{"172.20.128.0/17"}}, `network "dup": subnet "172.20.128.0/17": overlaps subnet 172.20.0.0/16 of podnet network "blue"`},
		{api.NetworkSpec{Name: "bad", Subnets: []string{"172.30.0.0/33"}}, `network "bad": subnet "172.30.0.0/33": not a CIDR prefix`},
		{api.NetworkSpec{Name: "bad", Subnets: []string{"172.30.0.0/16"}, MTU: 70000}, `network "bad": mtu "70000": must be between 576 and 65535`},
		{api.NetworkSpec{Name: "bad", Driver: "macvlan", Subnets: []string{"172.30.0.0/16"}}, `network "bad": driver "macvlan": unknown driver (known: bridge, routed)`},
		{api.NetworkSpec{Name: "blue", Subnets: []string{"172.31.0.0/16"}}, `network "blue" already exists`},
	}
	for _, c := range cases {
		_, err := e.c.CreateNetwork(ctx, c.spec)
		wantCode(t, err, api.CodeInvalidConfig)
		if err.Error() != c.want {
			t.Errorf("create %+v:\n got %q\nwant %q", c.spec, err, c.want)
		}
	}
	if l := e.links("pn-"); len(l) != 1 {
		t.Fatalf("bridges after refused creates: %v", l)
	}
	nets, _ := e.c.Networks(ctx)
	if len(nets) != 1 {
		t.Fatalf("networks: %+v", nets)
	}
	// A CNI definition contradicting the existing network is an invalid config.
	sb, _ := e.lab.Sandbox()
	_, err = e.c.Attach(ctx, api.AttachRequest{EndpointKey: api.EndpointKey{Network: "blue", ContainerID: "c", IfName: "eth0"},
		Define: &api.NetworkSpec{Subnets: []string{"172.21.0.0/16"}}}, int(sb))
	wantCode(t, err, api.CodeInvalidConfig)
	// Bad interface name and MAC: refused before anything is allocated.
	sb, _ = e.lab.Sandbox()
	_, err = e.c.Attach(ctx, api.AttachRequest{EndpointKey: api.EndpointKey{Network: "blue", ContainerID: "c", IfName: "this-name-is-too-long"}}, int(sb))
	wantCode(t, err, api.CodeInvalidEnv)
	sb, _ = e.lab.Sandbox()
	_, err = e.c.Attach(ctx, api.AttachRequest{EndpointKey: api.EndpointKey{Network: "blue", ContainerID: "c", IfName: "eth0"}, MAC: "01:00:5e:00:00:01"}, int(sb))
	wantCode(t, err, api.CodeInvalidConfig)
	// A sandbox that already has eth0: rolled back, address released.
	sb, _ = e.lab.Sandbox()
	sh, _ := netlink.NewHandleAt(sb)
	defer sh.Close()
	if err := sh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0peer"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.Attach(ctx, api.AttachRequest{EndpointKey: api.EndpointKey{Network: "blue", ContainerID: "c", IfName: "eth0"}}, int(sb))
	wantCode(t, err, api.CodeInvalidConfig)
	if l := e.links(spec.VethPrefix); len(l) != 0 {
		t.Fatalf("veths after failed attaches: %v", l)
	}
	assertNoAllocations(t, e, "blue")
	// A descriptor that is not a network namespace.
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	_, err = e.c.Attach(ctx, api.AttachRequest{EndpointKey: api.EndpointKey{Network: "blue", ContainerID: "c", IfName: "eth0"}}, int(f.Fd()))
	wantCode(t, err, api.CodeInvalidEnv)
}

func TestPrivilegedRestartKeepsStateAndRepairs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	n := e.network("blue", "10.89.0.0/24")
	a := e.mustAttach("blue", "a")
	e.restart()
	eps, err := e.c.Endpoints(ctx, "blue")
	if err != nil || len(eps) != 1 || eps[0].IPs[0].Addr() != a.ip(0) {
		t.Fatalf("after restart: %+v %v", eps, err)
	}
	// b's namespace is closed by this test (not by the lab) to make it disappear.
	bns, err := kernel.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	b := &sandbox{ns: bns, key: api.EndpointKey{Network: "blue", ContainerID: "b", IfName: "eth0"}}
	if b.res, err = e.c.Attach(ctx, api.AttachRequest{EndpointKey: b.key}, int(bns)); err != nil {
		t.Fatal(err)
	}
	if b.ip(0) == a.ip(0) {
		t.Fatalf("address %s handed out twice across restart", b.ip(0))
	}
	// The restarted agent's fast path holds both pods (the first agent's went with it).
	fastPath := func(ports, entries int) func() bool {
		return func() bool {
			s, err := e.agent.fastpath.Stats()
			return err == nil && s.Ports == ports && s.SrcEntries == entries && s.DstEntries == entries
		}
	}
	waitFor(t, fastPath(2, 2))
	// Break the kernel state behind the agent's back: flush podnet's table, delete the
	// bridge's address, add an orphan veth. Reconcile repairs all of it.
	tbl, err := nft.Open(int(e.lab.Node))
	if err != nil {
		t.Fatal(err)
	}
	if err := tbl.Delete(); err != nil {
		t.Fatal(err)
	}
	tbl.Close()
	h, _ := netlink.NewHandleAt(e.lab.Node)
	defer h.Close()
	br, _ := h.LinkByName(n.Bridge)
	gw := n.Subnets[0].Gateway
	if err := h.AddrDel(br, &netlink.Addr{IPNet: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: spec.VethPrefix + "orphan"}, PeerName: "orphanpeer"}); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Reconcile(false); err != nil {
		t.Fatal(err)
	}
	if _, err := probe.TCP(ctx, a.ns, e.lab.Outside, netip.AddrPortFrom(lab.OutsideAddr4.Addr(), 9090), probeTimeout); err != nil {
		t.Fatalf("egress after repair: %v", err)
	}
	if ok, _ := e.agent.node.LinkExists(spec.VethPrefix + "orphan"); ok {
		t.Fatal("orphan veth survived reconcile")
	}
	// A sandbox that disappears takes its veth with it; reconcile releases its address.
	if err := b.ns.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { ok, _ := e.agent.node.LinkExists(spec.HostVethName(b.key)); return !ok })
	waitFor(t, fastPath(1, 1)) // b's veth went, and its entries with it
	if err := e.agent.Reconcile(false); err != nil {
		t.Fatal(err)
	}
	eps, _ = e.c.Endpoints(ctx, "blue")
	if len(eps) != 1 {
		t.Fatalf("endpoints after sandbox vanished: %+v", eps)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i > 2000 {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An address released and handed out again (here on purpose, as a static request) is
// announced: the node's stale neighbour entry is replaced at once, not after ~30 s.
func TestPrivilegedAddressReuseIsAnnounced(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.network("blue", "10.89.0.0/24", "fd89::/64")
	// Another sandbox keeps the bridge's carrier up: a bridge without ports flushes its
	// neighbour entries, and the stale entry is what this test is about.
	e.mustAttach("blue", "keeper")
	a := e.mustAttach("blue", "a", "10.89.0.7", "fd89::7")
	for i := range 2 {
		if _, err := probe.TCP(ctx, e.lab.Node, a.ns, netip.AddrPortFrom(a.ip(i), 8080), probeTimeout); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.c.Detach(ctx, api.DetachRequest{EndpointKey: a.key}, -1); err != nil {
		t.Fatal(err)
	}
	const newMAC = "0a:58:0a:59:77:77"
	ns, _ := e.lab.Sandbox()
	key := api.EndpointKey{Network: "blue", ContainerID: "b", IfName: "eth0"}
	res, err := e.c.Attach(ctx, api.AttachRequest{EndpointKey: key, IPs: []string{"10.89.0.7", "fd89::7"}, MAC: newMAC}, int(ns))
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range res.IPs {

		waitFor(t, func() bool {
			mac, ok, _ := e.agent.node.(*kernel.Node).Neighbor(ip.Address.Addr())
			return ok && mac.String() == newMAC
		})
		start := time.Now()
		if _, err := probe.TCP(ctx, e.lab.Node, ns, netip.AddrPortFrom(ip.Address.Addr(), 8080), probeTimeout); err != nil {
			t.Fatalf("node -> reused %s: %v", ip.Address, err)
		}
		t.Logf("node -> reused %s connected in %s", ip.Address, time.Since(start))
	}
}

// A crash between the kernel work of an ADD and its record being marked attached leaves
// an endpoint recorded as attaching. On restart, one whose host veth is up (the last
// step of AddEndpoint) is complete and kept; one cut off earlier is rolled back.
func TestPrivilegedRestartResolvesInterruptedAttaches(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.network("blue", "10.89.0.0/24")
	done := e.mustAttach("blue", "done")
	cut := e.mustAttach("blue", "cut")
	waitFor(t, func() bool {
		eps, _ := e.c.Endpoints(ctx, "blue")
		return len(eps) == 2 && eps[0].State == api.StateAttached && eps[1].State == api.StateAttached
	})
	e.stop()
	// Rewind both records to attaching, and make "cut" look interrupted before its host
	// veth came up.
	st, err := store.OpenBolt(filepath.Join(e.dir, "podnet.db"))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(func(tx store.Tx) error {
		for _, k := range []api.EndpointKey{done.key, cut.key} {
			ep, _, err := tx.Endpoint(k)
			if err != nil {
				return err
			}
			ep.State = api.StateAttaching
			if err := tx.PutEndpoint(ep); err != nil {
				return err
			}
		}
		return nil
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	h, _ := netlink.NewHandleAt(e.lab.Node)
	defer h.Close()
	hostCut, err := h.LinkByName(spec.HostVethName(cut.key))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetDown(hostCut); err != nil {
		t.Fatal(err)
	}
	e.start()
	eps, err := e.c.Endpoints(ctx, "blue")
	if err != nil || len(eps) != 1 || eps[0].ContainerID != "done" || eps[0].State != api.StateAttached {
		t.Fatalf("after restart: %+v %v; want only the complete endpoint, attached", eps, err)
	}
	if ok, _ := e.agent.node.LinkExists(spec.HostVethName(cut.key)); ok {
		t.Fatal("the interrupted endpoint's veth survived the restart")
	}
	// Its address is free again: a static request for it succeeds.
	if _, err := e.attach("blue", "again", cut.ip(0).String()); err != nil {
		t.Fatalf("address of the rolled-back endpoint: %v", err)
	}
}

// A sandbox namespace that is the node's is refused (CNI error 4 naming CNI_NETNS) before
// anything changes: its "sandbox side" would replace the node's default route.
func TestPrivilegedNodeNamespaceRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.network("blue", "172.20.0.0/16")
	h, err := netlink.NewHandleAt(e.lab.Node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	routes := func() []string {
		rs, err := h.RouteList(nil, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.String())
		}
		slices.Sort(out)
		return out
	}
	before := routes()
	key := api.EndpointKey{Network: "blue", ContainerID: "c", IfName: "eth0"}
	_, err = e.c.Attach(ctx, api.AttachRequest{EndpointKey: key, Netns: "/proc/1/ns/net"}, int(e.lab.Node))
	wantCode(t, err, api.CodeInvalidEnv)
	if want := `CNI_NETNS "/proc/1/ns/net": is the node's own network namespace, not a sandbox's`; err == nil || err.Error() != want {
		t.Errorf("attach with the node's namespace: %v, want %q", err, want)
	}
	if after := routes(); !slices.Equal(before, after) {
		t.Errorf("node routes changed:\nbefore %v\nafter  %v", before, after)
	}
	if l := e.links(spec.VethPrefix); len(l) != 0 {
		t.Errorf("veths after the refused attach: %v", l)
	}
	assertNoAllocations(t, e, "blue")
	// The same request with a sandbox's namespace works.
	sb, _ := e.lab.Sandbox()
	if _, err := e.c.Attach(ctx, api.AttachRequest{EndpointKey: key}, int(sb)); err != nil {
		t.Fatalf("attach with a sandbox: %v", err)
	}
}
