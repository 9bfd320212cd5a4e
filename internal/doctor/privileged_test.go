package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/dns/dnstest"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/testutil"
)

// Each test builds a node by hand (newNode().healthy(): no podnet), checks that the
// doctor finds nothing wrong with it, breaks one thing as a field incident would, and
// checks that the doctor names the class and the culprit. With -update, the snapshots
// of the broken nodes are recorded in testdata for the unit tests.

const probeTimeout = 2 * time.Second

func TestPrivilegedHealthyHandBuiltNode(t *testing.T) {
	n := newNode(t).healthy()
	rep, s := n.diagnose("healthy-hand-built")
	wantClean(t, rep)
	// The doctor sees the sandboxes behind the veths (held open by this process).
	for _, name := range []string{"a", "b", "r"} {
		p := n.pods[name]
		var peer *Peer
		for _, l := range s.Links {
			if l.Name == p.hostIf {
				peer = l.Peer
			}
		}
		if peer == nil || peer.MAC != p.mac.String() {
			t.Errorf("pod %s: peer of %s %+v, want mac %s", name, p.hostIf, peer, p.mac)
		}
	}
	if len(rep.Findings) != 0 {
		t.Errorf("healthy node: %d findings, want none", len(rep.Findings))
	}
}

func TestPrivilegedRouteOverlap(t *testing.T) {
	n := newNode(t).healthy()
	n.uplink("corp0", netip.MustParsePrefix("198.18.1.1/24"), netip.MustParsePrefix("198.18.1.2/24"))
	// A less specific corporate route is harmless to the pods (info only).
	n.route(&netlink.Route{Dst: ipnet(netip.MustParsePrefix("10.0.0.0/8")), Gw: net.ParseIP("198.18.1.2"), LinkIndex: n.link("corp0").Attrs().Index})
	rep, _ := n.diagnose("")
	wantClean(t, rep)
	wantFinding(t, rep, ClassRouteOverlap, "route 10.0.0.0/8 via 198.18.1.2 dev corp0", SeverityInfo)
	dst := netip.AddrPortFrom(n.pods["a"].ip, 8080)
	if _, err := probe.TCP(context.Background(), n.lab.Node, n.pods["a"].ns, dst, probeTimeout); err != nil {
		t.Fatalf("with the harmless route: node -> pod a: %v", err)
	}

	// A more specific one steals half of br0's pods.
	n.route(&netlink.Route{Dst: ipnet(netip.MustParsePrefix("10.88.0.0/25")), Gw: net.ParseIP("198.18.1.2"), LinkIndex: n.link("corp0").Attrs().Index})
	rep, _ = n.diagnose("route-overlap")
	f := wantFinding(t, rep, ClassRouteOverlap, "route 10.88.0.0/25 via 198.18.1.2 dev corp0", SeverityError)
	if f.Fix != "ip route del 10.88.0.0/25 via 198.18.1.2 dev corp0" {
		t.Errorf("fix %q", f.Fix)
	}
	if rep.ExitCode() != 2 {
		t.Errorf("exit code %d, want 2", rep.ExitCode())
	}
	// The kernel agrees: pod a is reached through corp0, and does not answer.
	kernelRoute(t, n, "10.88.0.2", "corp0")
	if err := probe.Blocked(context.Background(), n.lab.Node, n.pods["a"].ns, dst, time.Second); err != nil {
		t.Errorf("node -> pod a through the overlapping route: %v", err)
	}
}

func TestPrivilegedRouteOverlapPolicyRouting(t *testing.T) {
	n := newNode(t).healthy()
	n.uplink("corp0", netip.MustParsePrefix("198.18.1.1/24"), netip.MustParsePrefix("198.18.1.2/24"))
	rep, _ := n.diagnose("")
	wantClean(t, rep)
	// Same prefix as br0's, in a table that a rule consults before main.
	n.route(&netlink.Route{Dst: ipnet(netip.MustParsePrefix("10.88.0.0/24")), Gw: net.ParseIP("198.18.1.2"), LinkIndex: n.link("corp0").Attrs().Index, Table: 100})
	rule := netlink.NewRule()
	rule.Priority, rule.Table, rule.Family = 100, 100, netlink.FAMILY_V4
	if err := n.h.RuleAdd(rule); err != nil {
		t.Fatal(err)
	}
	rep, _ = n.diagnose("route-overlap-table")
	wantFinding(t, rep, ClassRouteOverlap, "route 10.88.0.0/24 via 198.18.1.2 dev corp0 table 100", SeverityError)
	kernelRoute(t, n, "10.88.0.3", "corp0")
}

// kernelRoute checks that the kernel's own lookup of dst leaves through dev.
func kernelRoute(t *testing.T, n *node, dst, dev string) {
	t.Helper()
	rs, err := n.h.RouteGet(net.ParseIP(dst))
	if err != nil || len(rs) == 0 {
		t.Fatalf("route get %s: %v", dst, err)
	}
	if got := n.link2name(rs[0].LinkIndex); got != dev {
		t.Errorf("kernel routes %s through %s, want %s", dst, got, dev)
	}
}

func (n *node) link2name(index int) string {
	l, err := n.h.LinkByIndex(index)
	if err != nil {
		return fmt.Sprint(index)
	}
	return l.Attrs().Name
}

func TestPrivilegedStaleLeftovers(t *testing.T) {
	n := newNode(t).healthy()
	// Harmless leftovers: flannel's vxlan device with a route to a range that is no pod
	// range here, and a table of Calico's chains that no hook reaches.
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, VxlanId: 1, SrcAddr: net.ParseIP("203.0.113.1"), Port: 8472}
	if err := n.h.LinkAdd(vx); err != nil {
		t.Fatal(err)
	}
	if err := n.h.LinkSetUp(n.link("flannel.1")); err != nil {
		t.Fatal(err)
	}
	if err := lab.AddAddrs(n.lab.Node, "flannel.1", netip.MustParsePrefix("10.244.1.0/32")); err != nil {
		t.Fatal(err)
	}
	n.route(&netlink.Route{Dst: ipnet(netip.MustParsePrefix("10.244.2.0/24")), Gw: net.ParseIP("10.244.2.0"), LinkIndex: n.link("flannel.1").Attrs().Index, Flags: int(netlink.FLAG_ONLINK)})
	nf, err := nftables.New(nftables.WithNetNSFd(int(n.lab.Node)))
	if err != nil {
		t.Fatal(err)
	}
	filter := nf.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "filter"})
	accept := nftables.ChainPolicyAccept
	fwd := nf.AddChain(&nftables.Chain{Name: "FORWARD", Table: filter, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	cali := nf.AddChain(&nftables.Chain{Name: "cali-FORWARD", Table: filter})
	nf.AddChain(&nftables.Chain{Name: "cali-from-wl-dispatch", Table: filter})
	if err := nf.Flush(); err != nil {
		t.Fatal(err)
	}
	rep, _ := n.diagnose("")
	wantClean(t, rep)
	wantFinding(t, rep, ClassStaleLeftover, "vxlan flannel.1 (id 1) with address 10.244.1.0/32", SeverityInfo)
	wantFinding(t, rep, ClassStaleLeftover, "chain ip filter cali-FORWARD", SeverityInfo)

	// The chains are hooked again, and drop.
	nf.AddRule(&nftables.Rule{Table: filter, Chain: cali, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}})
	nf.AddRule(&nftables.Rule{Table: filter, Chain: fwd, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "cali-FORWARD"}}})
	if err := nf.Flush(); err != nil {
		t.Fatal(err)
	}
	// A stale bridge (no ports) whose subnet is more specific than br0's.
	if err := n.lab.Bridge("cni0", netip.MustParsePrefix("10.88.0.129/25")); err != nil {
		t.Fatal(err)
	}
	rep, _ = n.diagnose("stale-plugin-leftover")
	f := wantFinding(t, rep, ClassStaleLeftover, "bridge cni0 with address 10.88.0.129/25", SeverityError)
	if !strings.Contains(f.Fix, "ip link del cni0") {
		t.Errorf("fix %q", f.Fix)
	}
	wantFinding(t, rep, ClassStaleLeftover, "chain ip filter cali-FORWARD", SeverityError)
	wantFinding(t, rep, ClassStaleLeftover, "vxlan flannel.1 (id 1) with address 10.244.1.0/32", SeverityInfo)
	noFinding(t, rep, ClassRouteOverlap) // the cause is the leftover, not a route of its own
	kernelRoute(t, n, "10.88.0.130", "cni0")
}

// Leftovers of a plugin that programmed legacy iptables (Calico before nftables mode):
// a chain and an ipset alone are harmless (info); hooked into FORWARD with a drop, the
// chain breaks the pods' way out (an error naming the chain), which the probe shows.
func TestPrivilegedStaleLegacyLeftovers(t *testing.T) {
	testutil.RequireCommands(t, "iptables-legacy", "ipset")
	n := newNode(t).healthy()
	ctx := context.Background()
	out := netip.AddrPortFrom(lab.OutsideAddr4.Addr(), 9092)
	if _, err := probe.TCP(ctx, n.pods["a"].ns, n.lab.Outside, out, probeTimeout); err != nil {
		t.Fatalf("pod a -> outside before the leftovers: %v", err)
	}
	n.exec("iptables-legacy -t filter -N cali-FORWARD", "iptables-legacy -t filter -A cali-FORWARD -j DROP",
		"ipset create felix-all-ipam-pools hash:net", "ipset add felix-all-ipam-pools 10.65.0.0/16")
	rep, s := n.diagnose("")
	wantClean(t, rep)
	wantFinding(t, rep, ClassStaleLeftover, "chain ip filter cali-FORWARD (legacy iptables)", SeverityInfo)
	wantFinding(t, rep, ClassStaleLeftover, "ipset felix-all-ipam-pools", SeverityInfo)
	if len(s.IPSets) != 1 || s.IPSets[0].Entries != 1 {
		t.Errorf("ipsets read: %+v", s.IPSets)
	}

	n.exec("iptables-legacy -t filter -A FORWARD -j cali-FORWARD")
	if err := probe.Blocked(ctx, n.pods["a"].ns, n.lab.Outside, out, time.Second); err != nil {
		t.Errorf("pod a -> outside through the hooked chain: %v", err)
	}
	rep, _ = n.diagnose("")
	f := wantFinding(t, rep, ClassStaleLeftover, "chain ip filter cali-FORWARD (legacy iptables)", SeverityError)
	if want := "iptables-legacy -t filter -D FORWARD 1"; !strings.HasPrefix(f.Fix, want) {
		t.Errorf("fix %q, want it to start with %q", f.Fix, want)
	}
}

func TestPrivilegedForwardingDisabled(t *testing.T) {
	n := newNode(t).healthy()
	rep, _ := n.diagnose("")
	wantClean(t, rep)
	ctx := context.Background()
	out := netip.AddrPortFrom(lab.OutsideAddr4.Addr(), 9090)
	if _, err := probe.TCP(ctx, n.pods["a"].ns, n.lab.Outside, out, probeTimeout); err != nil {
		t.Fatalf("healthy: pod a -> outside: %v", err)
	}

	n.sysctl("net/ipv4/ip_forward", "0")
	n.sysctl("net/ipv6/conf/all/forwarding", "0")
	rep, _ = n.diagnose("ip-forward-disabled")
	wantFinding(t, rep, ClassForwardDisabled, "sysctl net.ipv4.ip_forward=0", SeverityError)
	wantFinding(t, rep, ClassForwardDisabled, "sysctl net.ipv6.conf.all.forwarding=0", SeverityError)
	if err := probe.Blocked(ctx, n.pods["a"].ns, n.lab.Outside, out, time.Second); err != nil {
		t.Errorf("forwarding off: pod a -> outside: %v", err)
	}

	// On for the node, off for the bridge the pods send through.
	n.sysctl("net/ipv4/ip_forward", "1")
	n.sysctl("net/ipv6/conf/all/forwarding", "1")
	n.sysctl("net/ipv4/conf/br0/forwarding", "0")
	rep, _ = n.diagnose("ip-forward-disabled-bridge")
	wantFinding(t, rep, ClassForwardDisabled, "sysctl net.ipv4.conf.br0.forwarding=0", SeverityError)
	if err := probe.Blocked(ctx, n.pods["a"].ns, n.lab.Outside, out, time.Second); err != nil {
		t.Errorf("br0 forwarding off: pod a -> outside: %v", err)
	}
}

func TestPrivilegedProxyARPDisabled(t *testing.T) {
	n := newNode(t).healthy()
	rep, _ := n.diagnose("")
	wantClean(t, rep)
	ctx := context.Background()
	r := n.pods["r"]
	if _, err := probe.TCP(ctx, r.ns, n.lab.Outside, netip.AddrPortFrom(lab.OutsideAddr4.Addr(), 9090), probeTimeout); err != nil {
		t.Fatalf("healthy: routed pod -> outside: %v", err)
	}
	if _, err := probe.TCP(ctx, r.ns, n.lab.Node, netip.AddrPortFrom(lab.NodeAddr4.Addr(), 9091), probeTimeout); err != nil {
		t.Fatalf("healthy: routed pod -> node: %v", err)
	}

	n.sysctl("net/ipv4/conf/vethr1/proxy_arp", "0")
	rep, _ = n.diagnose("proxy-arp-disabled")
	f := wantFinding(t, rep, ClassProxyARPDisabled, "sysctl net.ipv4.conf.vethr1.proxy_arp=0", SeverityError)
	if !strings.Contains(f.Fix, "sysctl -w net.ipv4.conf.vethr1.proxy_arp=1") {
		t.Errorf("fix %q", f.Fix)
	}
	// A fresh sandbox namespace would have no neighbour entry: flush the sandbox's.
	sh, err := netlink.NewHandleAt(r.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	eth0, err := sh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	flushGateway := func() {
		t.Helper()
		err := sh.NeighDel(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: net.ParseIP("169.254.1.1")})
		if err != nil && !errors.Is(err, unix.ENOENT) {
			t.Fatalf("flush the sandbox's gateway entry: %v", err)
		}
	}
	flushGateway()
	// The gateway's address resolution goes unanswered: EHOSTUNREACH after about 3 s.
	if err := probe.Unreachable(ctx, r.ns, n.lab.Outside, netip.AddrPortFrom(lab.OutsideAddr4.Addr(), 9090), 5*time.Second); err != nil {
		t.Errorf("proxy_arp off: routed pod -> outside: %v", err)
	}

	// Proxy ARP on again, but no route to the pod's gateway through another interface.
	n.sysctl("net/ipv4/conf/vethr1/proxy_arp", "1")
	if err := n.h.RouteDel(&netlink.Route{LinkIndex: n.link(lab.Uplink).Attrs().Index, Gw: lab.OutsideAddr4.Addr().AsSlice()}); err != nil {
		t.Fatal(err)
	}
	rep, _ = n.diagnose("proxy-arp-no-route")
	wantFinding(t, rep, ClassProxyARPDisabled, "no route to 169.254.1.1 except through vethr1", SeverityError)
	flushGateway()
	if err := probe.Unreachable(ctx, r.ns, n.lab.Node, netip.AddrPortFrom(lab.NodeAddr4.Addr(), 9091), 5*time.Second); err != nil {
		t.Errorf("no route to the gateway: routed pod -> node: %v", err)
	}
}

func TestPrivilegedMTUMismatch(t *testing.T) {
	n := newNode(t).healthy()
	// An overlay bound to the uplink: the kernel gives it 1500 - 50. Pods at 1450.
	up := n.link(lab.Uplink)
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx0"}, VxlanId: 42, VtepDevIndex: up.Attrs().Index, SrcAddr: net.ParseIP("203.0.113.1"), Port: 4789}
	if err := n.h.LinkAdd(vx); err != nil {
		t.Fatal(err)
	}
	if err := n.h.LinkSetUp(n.link("vx0")); err != nil {
		t.Fatal(err)
	}
	n.route(&netlink.Route{Dst: ipnet(netip.MustParsePrefix("10.88.1.0/24")), Gw: net.ParseIP("10.88.1.0"), LinkIndex: n.link("vx0").Attrs().Index, Flags: int(netlink.FLAG_ONLINK)})
	setMTU := func(mtu int) {
		for _, p := range n.pods {
			if err := n.h.LinkSetMTU(n.link(p.hostIf), mtu); err != nil {
				t.Fatal(err)
			}
			sh, err := netlink.NewHandleAt(p.ns)
			if err != nil {
				t.Fatal(err)
			}
			eth0, _ := sh.LinkByName("eth0")
			if err := sh.LinkSetMTU(eth0, mtu); err != nil {
				t.Fatal(err)
			}
			sh.Close()
		}
	}
	setMTU(1450)
	rep, _ := n.diagnose("")
	wantClean(t, rep)
	noFinding(t, rep, ClassMTUMismatch)

	setMTU(1500)
	rep, _ = n.diagnose("mtu-mismatch-pods")
	wantFinding(t, rep, ClassMTUMismatch, "link vetha mtu 1500", SeverityWarning)

	// The overlay not reduced: a vxlan device bound to no device keeps 1500.
	setMTU(1450)
	if err := n.h.LinkDel(n.link("vx0")); err != nil {
		t.Fatal(err)
	}
	vx = &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx0"}, VxlanId: 42, SrcAddr: net.ParseIP("203.0.113.1"), Port: 4789}
	if err := n.h.LinkAdd(vx); err != nil {
		t.Fatal(err)
	}
	if err := n.h.LinkSetUp(n.link("vx0")); err != nil {
		t.Fatal(err)
	}
	n.route(&netlink.Route{Dst: ipnet(netip.MustParsePrefix("10.88.1.0/24")), Gw: net.ParseIP("10.88.1.0"), LinkIndex: n.link("vx0").Attrs().Index, Flags: int(netlink.FLAG_ONLINK)})
	rep, _ = n.diagnose("mtu-mismatch-overlay")
	f := wantFinding(t, rep, ClassMTUMismatch, "link vx0 mtu 1500", SeverityError)
	if f.Fix != "ip link set dev vx0 mtu 1450" {
		t.Errorf("fix %q", f.Fix)
	}
}

func TestPrivilegedNeighbourWrongMAC(t *testing.T) {
	n := newNode(t).healthy()
	rep, _ := n.diagnose("")
	wantClean(t, rep)
	ctx := context.Background()
	b := n.pods["b"]
	if _, err := probe.TCP(ctx, n.lab.Node, b.ns, netip.AddrPortFrom(b.ip, 8080), probeTimeout); err != nil {
		t.Fatalf("healthy: node -> pod b: %v", err)
	}

	// The node's entry for pod b holds pod a's MAC.
	a := n.pods["a"]
	n.neigh("br0", b.ip, a.mac)
	rep, _ = n.diagnose("neighbour-wrong-mac")
	f := wantFinding(t, rep, ClassNeighbourWrongMAC, fmt.Sprintf("neigh %s lladdr %s dev br0 PERMANENT", b.ip, a.mac), SeverityError)
	if want := fmt.Sprintf("ip neigh replace %s lladdr %s dev br0 nud permanent", b.ip, b.mac); f.Fix != want {
		t.Errorf("fix %q, want %q", f.Fix, want)
	}
	if err := probe.Blocked(ctx, n.lab.Node, b.ns, netip.AddrPortFrom(b.ip, 8081), time.Second); err != nil {
		t.Errorf("node -> pod b with pod a's MAC in its entry: %v", err)
	}

	// The routed pod's entry holds the MAC of the node's own uplink.
	r := n.pods["r"]
	n.neigh("vethr1", r.ip, n.link(lab.Uplink).Attrs().HardwareAddr)
	rep, _ = n.diagnose("")
	wantFinding(t, rep, ClassNeighbourWrongMAC, fmt.Sprintf("neigh %s lladdr %s dev vethr1 PERMANENT", r.ip, n.link(lab.Uplink).Attrs().HardwareAddr), SeverityError)
}

func TestPrivilegedDNSSearchWildcard(t *testing.T) {
	n := newNode(t).healthy()
	up := dnstest.NewUpstream(
		"*.c1.example.org. 30 IN A 192.0.2.80",
		"api.c2.example.org. 30 IN A 192.0.2.10",
	)
	pc, err := kernel.ListenPacketIn(n.lab.Outside, "udp", netip.AddrPortFrom(lab.OutsideAddr4.Addr(), 53).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: up}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })

	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.conf", "nameserver 203.0.113.2\nsearch default.svc.c2.example.org svc.c2.example.org c2.example.org\noptions ndots:5\n")
	bad := write("bad.conf", "nameserver 203.0.113.2\nsearch default.svc.c2.example.org svc.c2.example.org c1.example.org\noptions ndots:5\n")
	rep, s := n.diagnose("", good)
	wantClean(t, rep)
	if len(s.ResolvConfs) != 1 || len(s.ResolvConfs[0].Probes) != 6 || s.ResolvConfs[0].Probes[0].Rcode != "NXDOMAIN" {
		t.Fatalf("probes of the healthy resolv.conf: %+v", s.ResolvConfs)
	}
	rep, s = n.diagnose("dns-search-wildcard", bad)
	wantFinding(t, rep, ClassDNSSearchWildcard, "search domain c1.example.org in "+bad, SeverityError)
	noFinding(t, rep, ClassForwardDisabled)
	// Recorded with a stable path for the unit tests.
	if *update {
		s.ResolvConfs[0].Path = "/etc/resolv.conf"
		recordSnapshot(t, "dns-search-wildcard", s)
	}

	// Without --resolv-conf: the doctor reads the resolv.conf a pod's process sees and
	// asks from inside the pod. A process in pod a sees the good file: probed, clean.
	pidA := podProcess(t, n.pods["a"], good)
	rep, s = n.diagnose("")
	wantClean(t, rep)
	if len(s.ResolvConfs) != 1 || len(s.ResolvConfs[0].Probes) != 6 || s.ResolvConfs[0].Probes[0].Rcode != "NXDOMAIN" || s.ResolvConfs[0].Path != fmt.Sprintf("/proc/%d/root/etc/resolv.conf", pidA) || len(s.ResolvConfs[0].Sandboxes) != 1 {
		t.Fatalf("the resolv.conf of pod a: %+v", s.ResolvConfs)
	}
	// One in pod b sees the bad one.
	pidB := podProcess(t, n.pods["b"], bad)
	rep, _ = n.diagnose("")
	wantFinding(t, rep, ClassDNSSearchWildcard, fmt.Sprintf("search domain c1.example.org in /proc/%d/root/etc/resolv.conf", pidB), SeverityError)
}

// podProcess starts a process in p's sandbox that sees resolvConf as its
// /etc/resolv.conf (a mount namespace of its own, as a container's), and returns its
// pid once the file is in place; the test ends it.
func podProcess(t *testing.T, p *labPod, resolvConf string) int {
	t.Helper()
	want, err := os.ReadFile(resolvConf)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/fd/%d", os.Getpid(), int(p.ns)),
		"unshare", "--mount", "--propagation", "private", "sh", "-c", "mount --bind "+resolvConf+" /etc/resolv.conf && exec sleep 600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	path := fmt.Sprintf("/proc/%d/root/etc/resolv.conf", cmd.Process.Pid)
	for i := 0; ; i++ {
		if b, _ := os.ReadFile(path); string(b) == string(want) {
			return cmd.Process.Pid
		}
		if i == 500 {
			t.Fatalf("%s never showed %s", path, resolvConf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPrivilegedConntrackFull(t *testing.T) {
	n := newNode(t).healthy()
	rep, s := n.diagnose("")
	wantClean(t, rep)
	if s.Conntrack == nil || s.Conntrack.Max == 0 {
		t.Fatalf("conntrack not read: %+v", s.Conntrack)
	}
	// nf_conntrack_max is global and read-only here: fill this namespace's table to 96%.
	want := int(s.Conntrack.Max * 96 / 100)
	fillConntrack(t, n.lab.Node, want)
	count, err := kernel.ReadSysctl(n.lab.Node, "net/netfilter/nf_conntrack_count")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := strconv.Atoi(count); c < want {
		t.Fatalf("conntrack count %d after filling, want %d", c, want)
	}
	rep, _ = n.diagnose("conntrack-table-full")
	wantFinding(t, rep, ClassConntrackFull, fmt.Sprintf("sysctl net.netfilter.nf_conntrack_max=%d", s.Conntrack.Max), SeverityError)
}

// The machine's neighbour tables are read whatever the namespace diagnosed: their
// statistics from the initial namespace, their limits from the doctor's.
func TestPrivilegedNeighTables(t *testing.T) {
	n := newNode(t).healthy()
	_, s := n.diagnose("")
	b, err := os.ReadFile("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
	if err != nil {
		t.Fatal(err)
	}
	thresh, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	i := slices.IndexFunc(s.NeighTables, func(nt NeighTable) bool { return nt.Name == "arp_cache" })
	if i < 0 || thresh <= 0 || s.NeighTables[i].GCThresh3 != thresh {
		t.Fatalf("neighbour tables %+v; want arp_cache (its statistics read) with gc_thresh3 %d", s.NeighTables, thresh)
	}
}

func TestPrivilegedRPFilterStrict(t *testing.T) {
	n := newNode(t).healthy()
	// A second link into the uplink's subnet (a second NIC in the same network): the
	// route back to that subnet is the uplink's, which comes first.
	n.uplink("eth1", netip.MustParsePrefix("203.0.113.5/24"), netip.MustParsePrefix("203.0.113.6/24"))
	oh, err := netlink.NewHandleAt(n.lab.Outside)
	if err != nil {
		t.Fatal(err)
	}
	defer oh.Close()
	eth1, err := oh.LinkByName("eth1")
	if err != nil {
		t.Fatal(err)
	}
	// The outside reaches 203.0.113.5 through eth1, from 203.0.113.6.
	if err := oh.RouteAdd(&netlink.Route{LinkIndex: eth1.Attrs().Index, Dst: ipnet(netip.MustParsePrefix("203.0.113.5/32")), Src: net.ParseIP("203.0.113.6"), Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	n.sysctl("net/ipv4/conf/eth1/rp_filter", "2")
	rep, _ := n.diagnose("")
	wantClean(t, rep)
	ctx := context.Background()
	target := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.5"), 7070)
	if _, err := probe.TCP(ctx, n.lab.Outside, n.lab.Node, target, probeTimeout); err != nil {
		t.Fatalf("loose rp_filter: outside -> 203.0.113.5: %v", err)
	}

	n.sysctl("net/ipv4/conf/eth1/rp_filter", "1")
	if err := probe.Blocked(ctx, n.lab.Outside, n.lab.Node, target, time.Second); err != nil {
		t.Errorf("strict rp_filter: outside -> 203.0.113.5: %v", err)
	}
	rep, s := n.diagnose("rp-filter-strict")
	f := wantFinding(t, rep, ClassRPFilterStrict, "sysctl net.ipv4.conf.eth1.rp_filter=1", SeverityWarning)
	if f.Fix != "sysctl -w net.ipv4.conf.eth1.rp_filter=2" {
		t.Errorf("fix %q", f.Fix)
	}
	if s.RPFilterDrops <= 0 {
		t.Errorf("IPReversePathFilter %d, want the drops counted", s.RPFilterDrops)
	}
	if rep.ExitCode() != 1 {
		t.Errorf("exit code %d, want 1", rep.ExitCode())
	}
	// The uplink, strict too, is symmetric: not reported.
	n.sysctl("net/ipv4/conf/"+lab.Uplink+"/rp_filter", "1")
	rep, _ = n.diagnose("")
	for _, f := range rep.Findings {
		if f.Class == ClassRPFilterStrict && strings.Contains(f.Culprit, lab.Uplink) {
			t.Errorf("symmetric uplink reported: %+v", f)
		}
	}
}
