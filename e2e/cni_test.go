package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/spec"
)

// The network most tests attach to, defined by the CNI config itself.
const netName = "e2e"

var (
	subnets   = []string{"10.87.0.0/24", "fd87::/64"}
	gateway4  = netip.MustParseAddr("10.87.0.1")
	gateway6  = netip.MustParseAddr("fd87::1")
	subnet4   = netip.MustParsePrefix("10.87.0.0/24")
	subnet6   = netip.MustParsePrefix("fd87::/64")
	defRoute4 = netip.MustParsePrefix("0.0.0.0/0")
	defRoute6 = netip.MustParsePrefix("::/0")
)

// checkResult verifies an ADD result against the CNI 1.1 shape and against the kernel:
// the sandbox interface with its path and MAC, one address per family that indexes it,
// the gateways and the default routes, and the same MAC and addresses on the real eth0.
func checkResult(t *testing.T, p *pod) {
	t.Helper()
	r := p.res
	sb := -1
	for i, ifc := range r.Interfaces {
		if ifc.Sandbox != "" {
			if sb >= 0 {
				t.Fatalf("%s: two sandbox interfaces in %+v", p.id, r)
			}
			sb = i
		}
	}
	if sb < 0 {
		t.Fatalf("%s: no interface with a sandbox in %s", p.id, resultJSON(r))
	}
	ifc := r.Interfaces[sb]
	if ifc.Name != "eth0" || ifc.Sandbox != p.path {
		t.Errorf("%s: sandbox interface %q in %q, want eth0 in %q", p.id, ifc.Name, ifc.Sandbox, p.path)
	}
	mac, err := net.ParseMAC(ifc.Mac)
	if err != nil || len(mac) != 6 {
		t.Errorf("%s: sandbox interface mac %q: %v", p.id, ifc.Mac, err)
	}
	host := spec.HostVethName(p.key(netName))
	if !slices.ContainsFunc(r.Interfaces, func(i *types100.Interface) bool { return i.Name == host && i.Sandbox == "" }) {
		t.Errorf("%s: host interface %s missing from %s", p.id, host, resultJSON(r))
	}
	if len(r.IPs) != 2 {
		t.Fatalf("%s: %d ips, want one per family: %s", p.id, len(r.IPs), resultJSON(r))
	}
	for _, ipc := range r.IPs {
		a := prefixOf(ipc.Address)
		sub, gw := subnet4, gateway4
		if a.Addr().Is6() {
			sub, gw = subnet6, gateway6
		}
		if a.Bits() != sub.Bits() || !sub.Contains(a.Addr()) || a.Addr() == gw {
			t.Errorf("%s: address %s, want a host of %s", p.id, a, sub)
		}
		if g, _ := netip.AddrFromSlice(ipc.Gateway); g.Unmap() != gw {
			t.Errorf("%s: address %s has gateway %v, want %s", p.id, a, ipc.Gateway, gw)
		}
		if ipc.Interface == nil || *ipc.Interface != sb {
			t.Errorf("%s: address %s does not index the sandbox interface %d", p.id, a, sb)
		}
	}
	for _, want := range []struct {
		dst netip.Prefix
		gw  netip.Addr
	}{{defRoute4, gateway4}, {defRoute6, gateway6}} {
		if !slices.ContainsFunc(r.Routes, func(rt *types.Route) bool {
			gw, _ := netip.AddrFromSlice(rt.GW)
			return prefixOf(rt.Dst) == want.dst && gw.Unmap() == want.gw
		}) {
			t.Errorf("%s: no route %s via %s in %s", p.id, want.dst, want.gw, resultJSON(r))
		}
	}

	// The kernel agrees with the result.
	h, err := netlink.NewHandleAt(p.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("%s: sandbox eth0: %v", p.id, err)
	}
	if link.Attrs().HardwareAddr.String() != mac.String() {
		t.Errorf("%s: eth0 has mac %s, result says %s", p.id, link.Attrs().HardwareAddr, mac)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range resultIPs(r) {
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return prefixOf(*a.IPNet) == want }) {
			t.Errorf("%s: eth0 lacks %s", p.id, want)
		}
	}
}

func resultJSON(r types.Result) string {
	b, _ := json.Marshal(r)
	return string(b)
}

// tcp checks a TCP connection from client to server's address of family and that the
// server saw client's own address (same network: no NAT).
func tcp(t *testing.T, client, server *pod, family int, port uint16) {
	t.Helper()
	src, err := probe.TCP(context.Background(), client.ns, server.ns, netip.AddrPortFrom(server.ip(family), port), probeTimeout)
	if err != nil {
		t.Fatalf("%s -> %s (IPv%d): %v", client.id, server.id, family, err)
	}
	if src != client.ip(family) {
		t.Fatalf("%s -> %s (IPv%d): server saw %s, want %s", client.id, server.id, family, src, client.ip(family))
	}
}

// egress checks that p reaches the outside through the node, masqueraded.
func egress(t *testing.T, n *node, p *pod) {
	t.Helper()
	for _, out := range []struct{ server, node netip.Prefix }{{lab.OutsideAddr4, lab.NodeAddr4}, {lab.OutsideAddr6, lab.NodeAddr6}} {
		src, err := probe.TCP(context.Background(), p.ns, n.lab.Outside, netip.AddrPortFrom(out.server.Addr(), 9090), probeTimeout)
		if err != nil {
			t.Fatalf("%s -> outside %s: %v", p.id, out.server.Addr(), err)
		}
		if src != out.node.Addr() {
			t.Fatalf("%s -> outside %s: server saw %s, want the node's %s (masquerade)", p.id, out.server.Addr(), src, out.node.Addr())
		}
	}
}

// TestPrivilegedCNILifecycle is a pod's life as podman or containerd drive it: ADD
// creates the network from the config, pods talk to each other and to the outside,
// CHECK sees the kernel, DEL is idempotent and works after the sandbox is gone.
func TestPrivilegedCNILifecycle(t *testing.T) {
	n := newNode(t)
	rt := newRuntime(t, confList("1.1.0", netName, n.socket, subnets, ""))
	if err := rt.status(); err != nil {
		t.Fatalf("STATUS of a fresh agent: %v", err)
	}
	if nets := n.mustPodnet(t, "-o", "json", "network", "ls").stdout; strings.TrimSpace(nets) != "[]" {
		t.Fatalf("networks before the first ADD: %s", nets)
	}

	a := n.newPod(t, "pod-a")
	rt.mustAdd(t, a)
	checkResult(t, a)
	// The first ADD created the network from the config.
	ctx, cancel := ctxOp()
	defer cancel()
	nw, err := n.api.Network(ctx, netName)
	if err != nil {
		t.Fatalf("network after ADD: %v", err)
	}
	if want := []api.Subnet{{Prefix: subnet4, Gateway: gateway4}, {Prefix: subnet6, Gateway: gateway6}}; !slices.Equal(nw.Subnets, want) {
		t.Fatalf("network subnets %+v, want %+v", nw.Subnets, want)
	}

	b, destroyB := newDoomedPod(t, "pod-b")
	rt.mustAdd(t, b)
	checkResult(t, b)
	if a.ip(4) == b.ip(4) || a.ip(6) == b.ip(6) {
		t.Fatalf("a and b share an address: %v %v", resultIPs(a.res), resultIPs(b.res))
	}
	n.wantVeths(t, netName, a, b)
	n.wantEndpoints(t, netName, a, b)

	for _, family := range []int{4, 6} {
		tcp(t, a, b, family, 8080)
		tcp(t, b, a, family, 8081)
	}
	egress(t, n, a)

	for _, p := range []*pod{a, b} {
		if err := rt.check(p); err != nil {
			t.Fatalf("CHECK %s: %v", p.id, err)
		}
	}
	// CHECK looks at the kernel: remove a's IPv4 address behind the agent's back.
	h, err := netlink.NewHandleAt(a.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	a4 := netip.PrefixFrom(a.ip(4), 24)
	if err := h.AddrDel(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: a4.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	err = rt.check(a)
	wantCode(t, "CHECK after the address was deleted", err, api.CodeCheckFailed)
	if !strings.Contains(err.Error(), a4.String()) {
		t.Errorf("CHECK error %q does not name the missing address %s", err, a4)
	}

	// DEL twice: the second finds nothing and succeeds.
	rt.mustDel(t, a)
	rt.mustDel(t, a)
	wantBare(t, a)
	n.wantVeths(t, netName, b)

	// The sandbox disappears before the runtime's DEL (container crashed, netns
	// unmounted): the veth pair goes with it, DEL still succeeds and releases b's
	// addresses, which a new pod can then ask for.
	destroyB()
	rt.mustDel(t, b)
	n.wantVeths(t, netName)
	n.wantEndpoints(t, netName)
	c := n.newPod(t, "pod-c")
	c.rt.CapabilityArgs = map[string]any{"ips": []string{b.ip(4).String(), b.ip(6).String()}}
	rt.mustAdd(t, c)
	if c.ip(4) != b.ip(4) || c.ip(6) != b.ip(6) {
		t.Fatalf("c got %v, asked for b's released %s and %s", resultIPs(c.res), b.ip(4), b.ip(6))
	}
	rt.mustDel(t, c)
	n.wantVeths(t, netName)
	n.wantEndpoints(t, netName)
}

// TestPrivilegedCNIGCAndStatus covers GC (keeps exactly the listed attachments, none
// without a list), STATUS, and the codes a runtime gets while the agent is down.
func TestPrivilegedCNIGCAndStatus(t *testing.T) {
	n := newNode(t)
	conf := confList("1.1.0", netName, n.socket, subnets, "")
	rt := newRuntime(t, conf)
	var pods []*pod
	for i := range 4 {
		p := n.newPod(t, fmt.Sprintf("gc-%d", i))
		rt.mustAdd(t, p)
		pods = append(pods, p)
	}
	keep, drop := pods[:2], pods[2:]

	fresh := newRuntime(t, conf) // a runtime that lost its cache: only the plugin's GC acts
	if err := fresh.gc(keep...); err != nil {
		t.Fatalf("GC: %v", err)
	}
	n.wantEndpoints(t, netName, keep...)
	n.wantVeths(t, netName, keep...)
	for _, p := range drop {
		wantBare(t, p)
	}
	for _, p := range keep {
		if err := rt.check(p); err != nil {
			t.Fatalf("CHECK %s after GC: %v", p.id, err)
		}
	}
	tcp(t, keep[0], keep[1], 4, 8080)
	// The released addresses are free again.
	again := n.newPod(t, "gc-again")
	again.rt.CapabilityArgs = map[string]any{"ips": []string{drop[0].ip(4).String()}}
	rt.mustAdd(t, again)
	keep = append(keep, again)

	// GC through the runtime that has the dropped pods cached: libcni DELs them (already
	// gone: success), then calls the plugin's GC.
	if err := rt.gc(keep...); err != nil {
		t.Fatalf("GC with cached attachments: %v", err)
	}
	n.wantEndpoints(t, netName, keep...)
	if err := rt.status(); err != nil {
		t.Fatalf("STATUS: %v", err)
	}

	// Agent down: STATUS says not available (50), ADD and DEL say try again later (11).
	n.stop()
	wantCode(t, "STATUS with the agent stopped", rt.status(), api.CodeNotAvailable)
	late := n.newPod(t, "gc-late")
	wantCode(t, "ADD with the agent stopped", rt.add(late), api.CodeTryAgainLater)
	wantCode(t, "DEL with the agent stopped", rt.del(keep[0]), api.CodeTryAgainLater)
	wantBare(t, late)

	// Back up: state survived, the failed ADD left nothing, the runtime retries.
	n.start()
	if err := rt.status(); err != nil {
		t.Fatalf("STATUS after restart: %v", err)
	}
	n.wantEndpoints(t, netName, keep...)
	rt.mustDel(t, keep[0])
	rt.mustAdd(t, late)
	n.wantEndpoints(t, netName, keep[1], keep[2], late)
	n.wantVeths(t, netName, keep[1], keep[2], late)

	// The last containers are gone: GC without arguments, where libcni omits
	// cni.dev/valid-attachments, means no attachment of the network is still valid
	// (CNI 1.1), and the plugin releases them all.
	ctx, cancel := ctxOp()
	defer cancel()
	if err := fresh.cni.GCNetworkList(ctx, fresh.list, nil); err != nil {
		t.Fatalf("GC without valid attachments: %v", err)
	}
	n.wantEndpoints(t, netName)
	n.wantVeths(t, netName)
	for _, p := range []*pod{keep[1], keep[2], late} {
		wantBare(t, p)
	}
}

// recordingExec is libcni's default executor that also keeps what the plugin printed.
type recordingExec struct {
	invoke.DefaultExec

	mu     sync.Mutex // guards stdout
	stdout map[string][]byte
}

func newRecordingExec() *recordingExec {
	return &recordingExec{
		DefaultExec: invoke.DefaultExec{RawExec: &invoke.RawExec{}, PluginDecoder: version.PluginDecoder{}},
		stdout:      map[string][]byte{},
	}
}

func (e *recordingExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	out, err := e.DefaultExec.ExecPlugin(ctx, path, stdin, environ)
	for _, kv := range environ {
		if cmd, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			e.mu.Lock()
			e.stdout[cmd] = out
			e.mu.Unlock()
		}
	}
	return out, err
}

func (e *recordingExec) printed(cmd string) []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stdout[cmd]
}

// TestPrivilegedCNIVersions runs ADD, CHECK and DEL with configs of every supported
// spec version: the plugin prints its result in the config's version.
func TestPrivilegedCNIVersions(t *testing.T) {
	n := newNode(t)
	for i, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			name := "v" + strings.ReplaceAll(v, ".", "")
			subs := []string{fmt.Sprintf("10.87.%d.0/24", 10+i), fmt.Sprintf("fd87:%d::/64", 10+i)}
			rec := newRecordingExec()
			rt := newRuntimeExec(t, confList(v, name, n.socket, subs, ""), rec)
			p := n.newPod(t, "ver-"+name)
			res, err := rt.addRaw(p)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var printed struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []struct {
					Version string `json:"version"`
					Address string `json:"address"`
				} `json:"ips"`
			}
			if err := json.Unmarshal(rec.printed("ADD"), &printed); err != nil {
				t.Fatalf("plugin printed %q: %v", rec.printed("ADD"), err)
			}
			if printed.CNIVersion != v || res.Version() != v {
				t.Fatalf("result printed as cniVersion %q (libcni parsed %q), want %q:\n%s", printed.CNIVersion, res.Version(), v, rec.printed("ADD"))
			}
			if len(printed.IPs) != 2 {
				t.Fatalf("printed ips %+v", printed.IPs)
			}
			if v == "0.4.0" {
				// 0.4.0 results carry the family of each address; later versions dropped it.
				r040, ok := res.(*types040.Result)
				if !ok {
					t.Fatalf("libcni parsed a %T", res)
				}
				for _, ipc := range r040.IPs {
					want := "4"
					if ipc.Address.IP.To4() == nil {
						want = "6"
					}
					if ipc.Version != want {
						t.Errorf("0.4.0 ip %s: version %q, want %q", ipc.Address.String(), ipc.Version, want)
					}
				}
			} else if printed.IPs[0].Version != "" {
				t.Errorf("%s result has an ip version field: %s", v, rec.printed("ADD"))
			}
			if p.res, err = types100.NewResultFromResult(res); err != nil {
				t.Fatal(err)
			}
			if got := resultIPs(p.res); len(got) != 2 || !netip.MustParsePrefix(subs[0]).Contains(got[0].Addr()) {
				t.Fatalf("addresses %v, want one from %v", got, subs)
			}
			n.wantEndpoints(t, name, p)
			if err := rt.check(p); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			if err := rt.gc(p); err != nil { // a no-op in libcni below 1.1.0
				t.Fatalf("GC: %v", err)
			}
			if err := rt.status(); err != nil {
				t.Fatalf("STATUS: %v", err)
			}
			n.wantEndpoints(t, name, p)
			rt.mustDel(t, p)
			n.wantEndpoints(t, name)
			wantBare(t, p)
		})
	}
}

// TestPrivilegedCNIStaticAddresses covers the ways a runtime asks for addresses and a
// MAC: the ips and mac capabilities (runtimeConfig), podman 4.3's CNI_ARGS
// "IgnoreUnknown=1;IP=...;MAC=...", both at once, and `podman network reload` (DEL,
// then ADD asking for the addresses and MAC the pod had).
func TestPrivilegedCNIStaticAddresses(t *testing.T) {
	n := newNode(t)
	rt := newRuntime(t, confList("1.1.0", netName, n.socket, subnets, ""))
	peer := n.newPod(t, "peer")
	rt.mustAdd(t, peer)

	cases := []struct {
		name    string
		caps    map[string]any
		args    [][2]string
		want4   string
		want6   string // "" when dynamic
		wantMAC string // "" when derived
	}{
		{
			name:  "capabilities",
			caps:  map[string]any{"ips": []string{"10.87.0.40/24", "fd87::40/64"}, "mac": "0a:58:0a:57:00:99"},
			want4: "10.87.0.40", want6: "fd87::40", wantMAC: "0a:58:0a:57:00:99",
		},
		{
			name:  "CNI_ARGS",
			args:  [][2]string{{"IgnoreUnknown", "1"}, {"IP", "10.87.0.50"}, {"MAC", "0a:58:0a:57:00:aa"}},
			want4: "10.87.0.50", wantMAC: "0a:58:0a:57:00:aa",
		},
		{
			name:  "CNI_ARGS two families and unknown keys",
			args:  [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"IP", "10.87.0.51,fd87::51"}, {"FOO", "bar"}},
			want4: "10.87.0.51", want6: "fd87::51",
		},
		{
			name:  "same address in capabilities and CNI_ARGS",
			caps:  map[string]any{"ips": []string{"10.87.0.60/24"}},
			args:  [][2]string{{"IgnoreUnknown", "1"}, {"IP", "10.87.0.60"}},
			want4: "10.87.0.60",
		},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := n.newPod(t, fmt.Sprintf("static-%d", i))
			p.rt.CapabilityArgs, p.rt.Args = c.caps, c.args
			rt.mustAdd(t, p)
			checkResult(t, p)
			if got := p.ip(4).String(); got != c.want4 {
				t.Errorf("IPv4 %s, want %s", got, c.want4)
			}
			if c.want6 != "" && p.ip(6).String() != c.want6 {
				t.Errorf("IPv6 %s, want %s", p.ip(6), c.want6)
			}
			if mac := sandboxMAC(t, p); c.wantMAC != "" && mac != c.wantMAC {
				t.Errorf("eth0 mac %s, want %s", mac, c.wantMAC)
			}
			if err := rt.check(p); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			tcp(t, p, peer, 4, 8080)
			rt.mustDel(t, p)
		})
	}

	t.Run("network reload", func(t *testing.T) {
		p := n.newPod(t, "reload")
		rt.mustAdd(t, p)
		ip4, ip6, mac := p.ip(4), p.ip(6), sandboxMAC(t, p)
		// Another pod takes the next free addresses meanwhile: the request must win over
		// the allocator's round-robin, not collide with it.
		other := n.newPod(t, "reload-other")
		rt.mustAdd(t, other)
		rt.mustDel(t, p)
		wantBare(t, p)
		p.rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"IP", ip4.String() + "," + ip6.String()}, {"MAC", mac}}
		rt.mustAdd(t, p)
		checkResult(t, p)
		if p.ip(4) != ip4 || p.ip(6) != ip6 || sandboxMAC(t, p) != mac {
			t.Fatalf("after reload: %v mac %s, want %s %s mac %s", resultIPs(p.res), sandboxMAC(t, p), ip4, ip6, mac)
		}
		for _, family := range []int{4, 6} {
			tcp(t, peer, p, family, 8082)
		}
		// Asking for an address someone else holds is refused with its own code.
		thief := n.newPod(t, "reload-thief")
		thief.rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"IP", ip4.String()}}
		wantCode(t, "ADD asking for a taken address", rt.add(thief), api.CodeAddressInUse)
		wantBare(t, thief)
		n.wantEndpoints(t, netName, peer, other, p)
	})
}

func sandboxMAC(t *testing.T, p *pod) string {
	t.Helper()
	h, err := netlink.NewHandleAt(p.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("%s: eth0: %v", p.id, err)
	}
	return l.Attrs().HardwareAddr.String()
}

// TestPrivilegedCNIBadConfig: configs the agent or the plugin must refuse, each with its
// code, and each leaving nothing behind (no endpoint, no veth, no bridge, the sandbox
// untouched, the existing network unchanged).
func TestPrivilegedCNIBadConfig(t *testing.T) {
	n := newNode(t)
	rt := newRuntime(t, confList("1.1.0", netName, n.socket, subnets, ""))
	a := n.newPod(t, "good")
	rt.mustAdd(t, a)
	ctx, cancel := ctxOp()
	defer cancel()
	before, err := n.api.Network(ctx, netName)
	if err != nil {
		t.Fatal(err)
	}
	bridges := n.links(t, "pn-")

	cases := []struct {
		name string
		conf []byte
		caps map[string]any
		args [][2]string
		code int
		msg  string // part of the error message
		// delBroken: DEL with this config fails too (TestPrivilegedCNIDelWithBrokenConfig).
		delBroken bool
	}{
		{
			name: "other subnets, same network name",
			conf: confList("1.1.0", netName, n.socket, []string{"10.88.0.0/24", "fd88::/64"}, ""),
			code: api.CodeInvalidConfig, msg: "10.87.0.0/24",
		},
		{
			name: "one subnet fewer",
			conf: confList("1.1.0", netName, n.socket, []string{"10.87.0.0/24"}, ""),
			code: api.CodeInvalidConfig, msg: "subnets",
		},
		{
			name: "other gateway",
			conf: confList("1.1.0", netName, n.socket, subnets, `,"gateways":["10.87.0.254"]`),
			code: api.CodeInvalidConfig, msg: "gateway",
		},
		{
			name: "masquerade switched off",
			conf: confList("1.1.0", netName, n.socket, subnets, `,"noMasquerade":true`),
			code: api.CodeInvalidConfig, msg: "masquerade",
		},
		{
			name: "new network overlapping the existing one",
			conf: confList("1.1.0", "e2e-overlap", n.socket, []string{"10.87.0.128/25"}, ""),
			code: api.CodeInvalidConfig, msg: "overlaps",
		},
		{
			name: "not a CIDR",
			conf: confList("1.1.0", "e2e-bad", n.socket, []string{"10.89.0.0/33"}, ""),
			code: api.CodeInvalidConfig, msg: "10.89.0.0/33",
		},
		{
			name: "subnets of the wrong JSON type",
			conf: []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"e2e-bad","plugins":[{"type":"podnet-cni","socket":%q,"subnets":"10.89.0.0/24"}]}`, n.socket)),
			code: api.CodeInvalidConfig, msg: "subnets", delBroken: true,
		},
		{
			name: "network that does not exist, without subnets",
			conf: []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"e2e-missing","plugins":[{"type":"podnet-cni","socket":%q}]}`, n.socket)),
			code: api.CodeNotFound, msg: "e2e-missing",
		},
		{
			name: "multicast mac capability",
			conf: confList("1.1.0", netName, n.socket, subnets, ""),
			caps: map[string]any{"mac": "01:00:5e:00:00:01"},
			code: api.CodeInvalidConfig, msg: "mac",
		},
		{
			name: "address outside the network",
			conf: confList("1.1.0", netName, n.socket, subnets, ""),
			caps: map[string]any{"ips": []string{"10.99.0.5/24"}},
			code: api.CodeInvalidConfig, msg: "10.99.0.5",
		},
		{
			name: "CNI_ARGS IP not an address",
			conf: confList("1.1.0", netName, n.socket, subnets, ""),
			args: [][2]string{{"IgnoreUnknown", "1"}, {"IP", "10.87.0.300"}},
			code: api.CodeInvalidEnv, msg: "10.87.0.300",
		},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := newRuntime(t, c.conf)
			p := n.newPod(t, fmt.Sprintf("bad-%d", i))
			p.rt.CapabilityArgs, p.rt.Args = c.caps, c.args
			err := bad.add(p)
			wantCode(t, "ADD", err, c.code)
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", err, c.msg)
			}
			wantBare(t, p)
			// A runtime DELs after a failed ADD: that must succeed and change nothing.
			if err := bad.del(p); err != nil && !c.delBroken {
				t.Errorf("DEL after the failed ADD: %v", err)
			}
			checkUnchanged(t, n, a, before, bridges)
		})
	}

	// Bytes that are not a network config at all reach the plugin only from a runtime
	// that does not parse them first; exec it the way libcni does, with the raw bytes.
	t.Run("malformed JSON", func(t *testing.T) {
		p := n.newPod(t, "malformed")
		for _, stdin := range []string{
			`{"cniVersion":"1.1.0","name":"e2e","type":"podnet-cni","subnets":[`,
			`{"cniVersion":"1.1.0","name":"e2e","type":"podnet-cni"}}`,
		} {
			ctx, cancel := ctxOp()
			_, err := invoke.ExecPluginWithResult(ctx, bin.cni, []byte(stdin),
				&invoke.Args{Command: "ADD", ContainerID: p.id, NetNS: p.path, IfName: "eth0", Path: bin.dir}, nil)
			cancel()
			wantCode(t, fmt.Sprintf("ADD with stdin %s", stdin), err, api.CodeDecode)
		}
		wantBare(t, p)
		checkUnchanged(t, n, a, before, bridges)
	})
}

// checkUnchanged verifies that the node still has exactly pod a on network before.
func checkUnchanged(t *testing.T, n *node, a *pod, before api.Network, bridges []string) {
	t.Helper()
	ctx, cancel := ctxOp()
	defer cancel()
	nets, err := n.api.Networks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 1 || !slices.Equal(nets[0].Subnets, before.Subnets) || nets[0].Masquerade != before.Masquerade {
		t.Fatalf("networks changed: %+v, want only %+v", nets, before)
	}
	if got := n.links(t, "pn-"); !slices.Equal(got, bridges) {
		t.Fatalf("bridges %q, want %q", got, bridges)
	}
	n.wantEndpoints(t, netName, a)
	n.wantVeths(t, netName, a)
	eps := n.endpoints(t, "")
	if len(eps) != 1 {
		t.Fatalf("endpoints on all networks: %+v", eps)
	}
}

// TestPrivilegedCNISubnetOrder: a config listing the network's subnets in another order
// defines the same network and must be accepted.
func TestPrivilegedCNISubnetOrder(t *testing.T) {
	n := newNode(t)
	rt := newRuntime(t, confList("1.1.0", netName, n.socket, subnets, ""))
	a := n.newPod(t, "order-a")
	rt.mustAdd(t, a)
	reordered := newRuntime(t, confList("1.1.0", netName, n.socket, []string{subnets[1], subnets[0]}, ""))
	b := n.newPod(t, "order-b")
	if err := reordered.add(b); err != nil {
		t.Fatalf("ADD with the network's subnets listed IPv6 first: %v", err)
	}
	n.wantEndpoints(t, netName, a, b)
}

// TestPrivilegedCNIDelWithBrokenConfig: the network config changes after ADD and no
// longer decodes (a value of the wrong JSON type in a defining key). DEL needs only the
// network name and the socket: it must still tear the pod down, or the runtime can
// never remove the containers created before the edit.
func TestPrivilegedCNIDelWithBrokenConfig(t *testing.T) {
	n := newNode(t)
	rt := newRuntime(t, confList("1.1.0", netName, n.socket, subnets, ""))
	p := n.newPod(t, "edited")
	rt.mustAdd(t, p)
	edited := newRuntime(t, []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"plugins":[{"type":"podnet-cni","socket":%q,"subnets":"10.87.0.0/24"}]}`, netName, n.socket)))
	if err := edited.del(p); err != nil {
		t.Fatalf("DEL fails when a key DEL does not use has the wrong JSON type: %v", err)
	}
	n.wantEndpoints(t, netName)
	wantBare(t, p)
}

// TestPrivilegedCNIAddressFreeAfterDel: once DEL has succeeded, the addresses it
// released can be handed out again. A node at capacity whose pods restart (DEL of every
// pod, then ADD of their replacements, as a kubelet does it: concurrently) must not see
// "pool exhausted"; nor must a client of the agent's API (podnet run).
func TestPrivilegedCNIAddressFreeAfterDel(t *testing.T) {
	n := newNode(t)
	// Each subtest fills its own /29 (5 usable addresses).
	fill := func(t *testing.T, rt *cniRuntime, prefix string) []*pod {
		var pods []*pod
		for i := range 5 {
			p := n.newPod(t, fmt.Sprintf("%s-%d", prefix, i))
			rt.mustAdd(t, p)
			pods = append(pods, p)
		}
		return pods
	}
	all := func(pods []*pod, op func(*pod) error) []error {
		errs := make([]error, len(pods))
		var wg sync.WaitGroup
		for i, p := range pods {
			wg.Go(func() { errs[i] = op(p) })
		}
		wg.Wait()
		return errs
	}

	t.Run("CNI", func(t *testing.T) {
		const small = "small"
		rt := newRuntime(t, confList("1.1.0", small, n.socket, []string{"10.86.0.0/29"}, ""))
		old := fill(t, rt, "old")
		wantCode(t, "ADD to a full network", rt.add(n.newPod(t, "too-many")), api.CodePoolExhausted)
		for i, err := range all(old, rt.del) {
			if err != nil {
				t.Fatalf("DEL %s: %v", old[i].id, err)
			}
		}
		var replacements []*pod
		for i := range 5 {
			replacements = append(replacements, n.newPod(t, fmt.Sprintf("new-%d", i)))
		}
		for i, err := range all(replacements, rt.add) {
			if err != nil {
				t.Fatalf("ADD of %s right after the 5 pods of a full /29 were DELeted: %v", replacements[i].id, err)
			}
		}
		n.wantEndpoints(t, small, replacements...)
		for i, err := range all(replacements, rt.del) {
			if err != nil {
				t.Fatalf("DEL %s: %v", replacements[i].id, err)
			}
		}
		n.wantEndpoints(t, small)
	})

	t.Run("API", func(t *testing.T) {
		const small = "small-api"
		rt := newRuntime(t, confList("1.1.0", small, n.socket, []string{"10.86.1.0/29"}, ""))
		old := fill(t, rt, "api-old")
		ctx, cancel := ctxOp()
		defer cancel()
		for _, p := range old {
			if err := n.api.Detach(ctx, api.DetachRequest{EndpointKey: p.key(small)}, -1); err != nil {
				t.Fatalf("detach %s: %v", p.id, err)
			}
		}
		p := n.newPod(t, "api-new")
		if _, err := n.api.Attach(ctx, api.AttachRequest{EndpointKey: p.key(small)}, int(p.ns)); err != nil {
			t.Fatalf("attach right after the 5 endpoints of a full /29 were detached: %v", err)
		}
	})
}

var _ invoke.Exec = (*recordingExec)(nil)
