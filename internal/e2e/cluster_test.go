package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/store/etcdstore/etcdtest"
	"github.com/podnet/podnet/internal/testutil"
)

// podnetBin is the podnet binary the tests run, built once by TestMain.
var podnetBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podnet-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	podnetBin = filepath.Join(dir, "podnet")
	out, err := exec.Command("go", "build", "-o", podnetBin, "github.com/podnet/podnet/cmd/podnet").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build podnet: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agent is one node's `podnet agent` process, on the cluster's etcd.
type agent struct {
	t      *testing.T
	i      int
	node   netns.NsHandle
	args   []string
	socket string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
	c      *api.Client
}

// startAgent runs node i's agent: its namespace by /proc path, etcd, node name n<i>,
// underlay address lab.UnderlayAddr(i), a lease of 2 s.
func startAgent(t *testing.T, c *lab.Cluster, i int, etcd []string) *agent {
	t.Helper()
	dir := t.TempDir()
	a := &agent{t: t, i: i, node: c.Nodes[i].Node, socket: filepath.Join(dir, "podnet.sock"), log: filepath.Join(dir, "agent.log")}
	a.args = []string{"agent", "--netns", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(a.node)),
		"--store", "etcd://" + strings.TrimPrefix(etcd[0], "http://"), "--node-name", fmt.Sprintf("n%d", i),
		"--node-ip", lab.UnderlayAddr(i).Addr().String(), "--lease-ttl", "2s", "--socket", a.socket,
		"--metrics-address", "", "--state-dir", filepath.Join(dir, "state"), "--resolv-conf", filepath.Join(dir, "resolv.conf")}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.c = api.NewClient(a.socket)
	a.start()
	t.Cleanup(a.stop)
	return a
}

func (a *agent) start() {
	a.t.Helper()
	log, err := os.OpenFile(a.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		a.t.Fatal(err)
	}
	defer log.Close()
	a.cmd = exec.Command(podnetBin, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = log, log
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.exited = make(chan struct{})
	go func() { a.cmd.Wait(); close(a.exited) }()
	for i := 0; ; i++ {
		if st, err := a.c.Status(context.Background()); err == nil && st.Ready {
			return
		}
		select {
		case <-a.exited:
			a.t.Fatalf("agent n%d exited:\n%s", a.i, a.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if i > 1000 {
			a.t.Fatalf("agent n%d not ready after 20 s:\n%s", a.i, a.logTail())
		}
	}
}

// kill ends the agent with SIGKILL: no lease revoked, nothing cleaned up.
func (a *agent) kill() {
	a.cmd.Process.Kill()
	<-a.exited
}

func (a *agent) stop() {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		a.kill()
	}
	if a.t.Failed() {
		a.t.Logf("agent n%d log:\n%s", a.i, a.logTail())
	}
}

func (a *agent) logTail() string {
	b, _ := os.ReadFile(a.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// pod is one sandbox attached to a network on a node.
type pod struct {
	ns   netns.NsHandle
	ip   netip.Addr
	node int
	key  api.EndpointKey
}

func attach(t *testing.T, c *lab.Cluster, a *agent, network, id string, labels map[string]string) pod {
	t.Helper()
	sb, err := c.Nodes[a.i].Sandbox()
	if err != nil {
		t.Fatal(err)
	}
	key := api.EndpointKey{Network: network, ContainerID: id, IfName: "eth0"}
	res, err := a.c.Attach(context.Background(), api.AttachRequest{EndpointKey: key, Namespace: "default", Labels: labels}, int(sb))
	if err != nil {
		t.Fatalf("attach %s on n%d: %v", key, a.i, err)
	}
	return pod{ns: sb, ip: res.IPs[0].Address.Addr(), node: a.i, key: key}
}

// eventually polls cond every 20 ms until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for range 500 {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within 10 s (last: %s)", what, last)
}

// crossRoutes lists node i's routes of podnet's cross-node protocol, "DST via GW".
func crossRoutes(t *testing.T, c *lab.Cluster, i int) []string {
	h, err := netlink.NewHandleAt(c.Nodes[i].Node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: kernel.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range routes {
		out = append(out, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
	}
	slices.Sort(out)
	return out
}

// mustCross checks TCP (the source the server sees: no NAT), 1 MB of full-size
// segments and a 1,400-byte UDP datagram from a to b.
func mustCross(t *testing.T, a, b pod, port uint16) {
	t.Helper()
	ctx := context.Background()
	got, err := probe.TCP(ctx, a.ns, b.ns, netip.AddrPortFrom(b.ip, port), 5*time.Second)
	if (err != nil || got != a.ip) && os.Getenv("PODNET_E2E_HOLD") != "" {
		t.Logf("holding: pid %d, pod a fd %d, pod b fd %d", os.Getpid(), int(a.ns), int(b.ns))
		time.Sleep(180 * time.Second)
	}
	if err != nil || got != a.ip {
		t.Fatalf("%s (n%d) -> %s (n%d): seen from %s, %v; want %s", a.ip, a.node, b.ip, b.node, got, err, a.ip)
	}
	if err := probe.Bulk(ctx, a.ns, b.ns, netip.AddrPortFrom(b.ip, port+1), 1<<20, 10*time.Second); err != nil {
		t.Fatalf("%s (n%d) -> %s (n%d): %v", a.ip, a.node, b.ip, b.node, err)
	}
	if err := probe.UDPSize(ctx, a.ns, b.ns, netip.AddrPortFrom(b.ip, port+2), 1400, 5*time.Second); err != nil {
		t.Fatalf("%s (n%d) -> %s (n%d): %v", a.ip, a.node, b.ip, b.node, err)
	}
}

// Three nodes on one underlay with a real etcd and three podnet agent processes: a
// bridge network over vxlan and a routed network over direct routes, created on one node
// and present on all; pods on every node reach each other with TCP and UDP, small and
// large, without NAT; concurrent ADDs on every node never share an address; a service
// balances over backends on two nodes; a node whose agent is killed is withdrawn once
// its lease expires, and comes back with the same addresses when its agent restarts.
func TestPrivilegedCluster(t *testing.T) {
	testutil.RequireRoot(t)
	etcd := etcdtest.Start(t)
	c, err := lab.NewCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var agents []*agent
	for i := range 3 {
		agents = append(agents, startAgent(t, c, i, etcd))
	}
	ctx := context.Background()
	blue, err := agents[0].c.CreateNetwork(ctx, api.NetworkSpec{Name: "blue", Subnets: []string{"10.91.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	if blue.CrossNode != api.CrossNodeVXLAN || blue.MTU != 1450 || blue.BlockSize4 != 26 {
		t.Errorf("network on etcd: crossNode %q, mtu %d, block /%d; want vxlan (the default on etcd), 1450 (underlay 1500 - 50), /26", blue.CrossNode, blue.MTU, blue.BlockSize4)
	}
	if _, err := agents[1].c.CreateNetwork(ctx, api.NetworkSpec{Name: "green", Driver: api.DriverRouted, Subnets: []string{"10.92.0.0/16"}, CrossNode: api.CrossNodeDirect}); err != nil {
		t.Fatal(err)
	}
	// A second network with blue's VNI is refused, naming the field.
	_, err = agents[2].c.CreateNetwork(ctx, api.NetworkSpec{Name: "red", Subnets: []string{"10.93.0.0/16"}, VNI: blue.VNI})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf(`vni "%d"`, blue.VNI)) || !strings.Contains(err.Error(), `network "blue" has it already`) {
		t.Errorf("network with blue's VNI: %v", err)
	}
	// Every node makes blue's bridge (the network was created on n0 only).
	for i := range 3 {
		eventually(t, fmt.Sprintf("bridge of blue on n%d", i), func() (bool, string) {
			h, _ := netlink.NewHandleAt(c.Nodes[i].Node)
			defer h.Close()
			_, err := h.LinkByName(blue.Bridge)
			return err == nil, fmt.Sprint(err)
		})
	}

	var bluePods, greenPods []pod
	for i, a := range agents {
		bluePods = append(bluePods, attach(t, c, a, "blue", fmt.Sprintf("b%d", i), map[string]string{"app": "web"}))
		greenPods = append(greenPods, attach(t, c, a, "green", fmt.Sprintf("g%d", i), nil))
	}
	// Each node's routes to the other two nodes' blocks, for both networks.
	for i := range 3 {
		eventually(t, fmt.Sprintf("cross-node routes of n%d", i), func() (bool, string) {
			r := crossRoutes(t, c, i)
			return len(r) == 4, strings.Join(r, ", ")
		})
	}
	for _, pods := range [][]pod{bluePods, greenPods} {
		mustCross(t, pods[0], pods[1], 8080)
		mustCross(t, pods[2], pods[0], 8090)
	}

	nodes, err := agents[0].c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		if n.Name != fmt.Sprintf("n%d", i) || !n.Alive || n.IP != lab.UnderlayAddr(i).Addr() || len(n.Blocks["blue"]) != 1 || len(n.Blocks["green"]) != 1 {
			t.Errorf("node ls [%d]: %+v", i, n)
		}
	}

	// Concurrent ADDs on all nodes: no address twice, each inside its node's blocks.
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for i, a := range agents {
		for k := range 8 {
			wg.Go(func() {
				sb, err := c.Nodes[i].Sandbox()
				if err != nil {
					t.Error(err)
					return
				}
				key := api.EndpointKey{Network: "blue", ContainerID: fmt.Sprintf("c%d-%d", i, k), IfName: "eth0"}
				res, err := a.c.Attach(ctx, api.AttachRequest{EndpointKey: key}, int(sb))
				if err != nil {
					t.Errorf("concurrent attach %s on n%d: %v", key, i, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				ip := res.IPs[0].Address.Addr()
				if other, dup := seen[ip]; dup {
					t.Errorf("%s handed out twice: %s and %s", ip, other, key)
				}
				seen[ip] = key.String()
			})
		}
	}
	wg.Wait()

	// A service with backends on n1 and n2, from a pod on n0 by its VIP.
	svc, err := agents[0].c.CreateService(ctx, api.ServiceSpec{Name: "web", Namespace: "default", Selector: map[string]string{"app": "web"},
		Ports: []api.ServicePort{{Port: 80, TargetPort: 8080, Protocol: "tcp"}}})
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.AddrPortFrom(svc.VIPs[0], 80)
	backends := map[netip.Addr]bool{}
	for _, p := range bluePods[1:] {
		l, err := kernel.ListenIn(p.ns, "tcp", netip.AddrPortFrom(p.ip, 8080).String())
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go serveIdentity(l, p.ip)
	}
	eventually(t, "the service from n0 reaches backends on n1 and n2", func() (bool, string) {
		if ip, err := askIdentity(ctx, bluePods[0].ns, vip); err == nil {
			backends[ip] = true
		}
		return backends[bluePods[1].ip] && backends[bluePods[2].ip], fmt.Sprint(backends)
	})

	// kill -9 of n2's agent: its lease expires, n0 and n1 withdraw its blocks.
	before := crossRoutes(t, c, 0)
	agents[2].kill()
	via2 := "via " + lab.UnderlayAddr(2).Addr().String()
	eventually(t, "n2's routes withdrawn on n0 after its lease expired", func() (bool, string) {
		r := crossRoutes(t, c, 0)
		return !slices.ContainsFunc(r, func(s string) bool { return strings.HasSuffix(s, via2) }), strings.Join(r, ", ")
	})
	nodes, err = agents[0].c.Nodes(ctx)
	if err != nil || nodes[2].Alive {
		t.Errorf("node ls after n2's agent was killed: %+v, %v", nodes, err)
	}
	// Restarted: the same endpoints, the same addresses, the routes back.
	agents[2].start()
	eventually(t, "n2's routes back on n0", func() (bool, string) {
		r := crossRoutes(t, c, 0)
		return slices.Equal(r, before), strings.Join(r, ", ")
	})
	eps, err := agents[2].c.Endpoints(ctx, "blue")
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(eps, func(ep api.Endpoint) bool { return ep.EndpointKey == bluePods[2].key }); i < 0 || eps[i].IPs[0].Addr() != bluePods[2].ip {
		t.Errorf("n2's pod after the restart: %+v", eps)
	}
	mustCross(t, bluePods[0], bluePods[2], 8100)
}

// serveIdentity answers every connection on l with id.
func serveIdentity(l net.Listener, id netip.Addr) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(c, id)
		c.Close()
	}
}

// askIdentity connects from ns to dst and reads the identity a serveIdentity answers.
func askIdentity(ctx context.Context, ns netns.NsHandle, dst netip.AddrPort) (netip.Addr, error) {
	c, err := kernel.DialIn(ctx, ns, "tcp", dst.String(), time.Second)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.ParseAddr(strings.TrimSpace(line))
}
