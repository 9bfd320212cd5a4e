package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agentproc"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/policy"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/store/etcdstore/etcdtest"
	"github.com/podnet/podnet/internal/testutil"
)

// clusterAgent is one node's `podnet agent` process, on the cluster's etcd.
type clusterAgent struct {
	*agentproc.Proc
	i int
	c *api.Client
}

// newEtcdCluster starts an embedded etcd, n node namespaces on an underlay and the
// nodes' agents on that etcd (runClusterAgent).
func newEtcdCluster(t *testing.T, n int) (*lab.Cluster, []*clusterAgent) {
	t.Helper()
	testutil.RequireRoot(t)
	etcd := etcdtest.Start(t)
	c, err := lab.NewCluster(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var agents []*clusterAgent
	for i := range n {
		agents = append(agents, startClusterAgent(t, c, i, etcd))
	}
	return c, agents
}

// startClusterAgent runs node i's agent on etcd (its client URLs): see runClusterAgent.
func startClusterAgent(t *testing.T, c *lab.Cluster, i int, etcd []string) *clusterAgent {
	t.Helper()
	return runClusterAgent(t, c, i, "etcd://"+strings.TrimPrefix(etcd[0], "http://"), false)
}

// runClusterAgent runs node i's agent: store, node name n<i>, underlay address
// lab.UnderlayAddr(i), a lease of 2 s. inside starts the process in the node's
// namespace (what bgp networks need: the speaker's sockets are the process's); else it
// runs in the test's and manages the node's by --netns.
func runClusterAgent(t *testing.T, c *lab.Cluster, i int, store string, inside bool) *clusterAgent {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--store", store, "--node-name", fmt.Sprintf("n%d", i),
		"--node-ip", lab.UnderlayAddr(i).Addr().String(), "--lease-ttl", "2s",
		"--metrics-address", "", "--state-dir", filepath.Join(dir, "state"), "--resolv-conf", filepath.Join(dir, "resolv.conf")}
	if !inside {
		args = append(args, "--netns", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(c.Nodes[i].Node)))
	}
	p := agentproc.New(bin.podnet, filepath.Join(dir, "podnet.sock"), filepath.Join(dir, "agent.log"), args...)
	if inside {
		p.In(c.Nodes[i].Node)
	}
	a := &clusterAgent{Proc: p, i: i, c: p.Client()}
	a.start(t)
	t.Cleanup(func() {
		if err := a.Stop(); err != nil || t.Failed() {
			t.Logf("agent n%d: %v\n%s", i, err, a.LogTail(40))
		}
	})
	return a
}

func (a *clusterAgent) start(t *testing.T) {
	t.Helper()
	if err := a.Start(20 * time.Second); err != nil {
		t.Fatalf("agent n%d: %v", a.i, err)
	}
}

// clusterPod is one sandbox attached to a network on a node of the cluster.
type clusterPod struct {
	ns   netns.NsHandle
	ip   netip.Addr
	node int
	key  api.EndpointKey
	res  api.Result // what the attach returned
}

func attachOn(t *testing.T, c *lab.Cluster, a *clusterAgent, network, id string, labels map[string]string) clusterPod {
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
	return clusterPod{ns: sb, ip: res.IPs[0].Address.Addr(), node: a.i, key: key, res: res}
}

// crossNodePolicy: a policy applied on n2 isolates a pod of n1, whose node then admits
// only peers with role=client; a pod of n0 relabelled on n0 becomes one on n1 through the
// store; the policy removed, the other nodes' pods reach the pod again.
func crossNodePolicy(t *testing.T, agents []*clusterAgent, pods []clusterPod) {
	t.Helper()
	ctx := context.Background()
	target := netip.AddrPortFrom(pods[1].ip, 8200)
	pols, err := policy.Parse(strings.NewReader(doc("default", "clients-only", "podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agents[2].c.ApplyPolicies(ctx, pols); err != nil {
		t.Fatal(err)
	}
	for _, from := range []clusterPod{pods[0], pods[2]} {
		eventuallyState(t, fmt.Sprintf("n%d's pod kept out of n1's", from.node), func() (bool, string) {
			err := probe.Blocked(ctx, from.ns, pods[1].ns, target, 500*time.Millisecond)
			return err == nil, fmt.Sprint(err)
		})
	}
	if _, err := agents[0].c.SetLabels(ctx, api.LabelsRequest{EndpointKey: pods[0].key, Labels: map[string]string{"app": "web", "role": "client"}}); err != nil {
		t.Fatal(err)
	}
	eventuallyState(t, "n0's pod, now a client, let into n1's", func() (bool, string) {
		got, err := probe.TCP(ctx, pods[0].ns, pods[1].ns, target, 500*time.Millisecond)
		return err == nil && got == pods[0].ip, fmt.Sprint(got, err)
	})
	if err := probe.Blocked(ctx, pods[2].ns, pods[1].ns, target, time.Second); err != nil {
		t.Errorf("n2's pod, not a client: %v", err)
	}
	if err := agents[1].c.DeletePolicy(ctx, "default", "clients-only"); err != nil {
		t.Fatal(err)
	}
	eventuallyState(t, "n2's pod let in once the policy is gone", func() (bool, string) {
		_, err := probe.TCP(ctx, pods[2].ns, pods[1].ns, target, 500*time.Millisecond)
		return err == nil, fmt.Sprint(err)
	})
}

// eventuallyState polls cond every 20 ms until it holds or 10 s pass.
func eventuallyState(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	eventuallyWithin(t, what, 10*time.Second, cond)
}

// eventuallyWithin polls cond every 20 ms until it holds or d passes.
func eventuallyWithin(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last: %s)", what, d, last)
		}
	}
}

// crossRoutes lists node i's routes to other nodes' blocks, "DST via GW".
func crossRoutes(t *testing.T, c *lab.Cluster, i int) []string {
	r, err := lab.CrossNodeRoutes(c.Nodes[i].Node)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mustCross checks TCP (the source the server sees: no NAT), 1 MB of full-size
// segments and a 1,400-byte UDP datagram from a to b.
func mustCross(t *testing.T, a, b clusterPod, port uint16) {
	t.Helper()
	ctx := context.Background()
	got, err := probe.TCP(ctx, a.ns, b.ns, netip.AddrPortFrom(b.ip, port), 5*time.Second)
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
	c, agents := newEtcdCluster(t, 3)
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
		eventuallyState(t, fmt.Sprintf("bridge of blue on n%d", i), func() (bool, string) {
			h, _ := netlink.NewHandleAt(c.Nodes[i].Node)
			defer h.Close()
			_, err := h.LinkByName(blue.Bridge)
			return err == nil, fmt.Sprint(err)
		})
	}

	var bluePods, greenPods []clusterPod
	for i, a := range agents {
		bluePods = append(bluePods, attachOn(t, c, a, "blue", fmt.Sprintf("b%d", i), map[string]string{"app": "web"}))
		greenPods = append(greenPods, attachOn(t, c, a, "green", fmt.Sprintf("g%d", i), nil))
	}
	// Each node's routes to the other two nodes' blocks, for both networks.
	for i := range 3 {
		eventuallyState(t, fmt.Sprintf("cross-node routes of n%d", i), func() (bool, string) {
			r := crossRoutes(t, c, i)
			return len(r) == 4, strings.Join(r, ", ")
		})
	}
	for _, pods := range [][]clusterPod{bluePods, greenPods} {
		mustCross(t, pods[0], pods[1], 8080)
		mustCross(t, pods[2], pods[0], 8090)
	}
	crossNodePolicy(t, agents, bluePods)

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
		go probe.ServeIdentity(l, p.ip)
	}
	eventuallyState(t, "the service from n0 reaches backends on n1 and n2", func() (bool, string) {
		if ip, err := probe.AskIdentity(ctx, bluePods[0].ns, vip, time.Second); err == nil {
			backends[ip] = true
		}
		return backends[bluePods[1].ip] && backends[bluePods[2].ip], fmt.Sprint(backends)
	})

	// kill -9 of n2's agent: its lease expires, n0 and n1 withdraw its blocks.
	before := crossRoutes(t, c, 0)
	agents[2].Kill()
	via2 := "via " + lab.UnderlayAddr(2).Addr().String()
	eventuallyState(t, "n2's routes withdrawn on n0 after its lease expired", func() (bool, string) {
		r := crossRoutes(t, c, 0)
		return !slices.ContainsFunc(r, func(s string) bool { return strings.HasSuffix(s, via2) }), strings.Join(r, ", ")
	})
	nodes, err = agents[0].c.Nodes(ctx)
	if err != nil || nodes[2].Alive {
		t.Errorf("node ls after n2's agent was killed: %+v, %v", nodes, err)
	}
	// Restarted: the same endpoints, the same addresses, the routes back.
	agents[2].start(t)
	eventuallyState(t, "n2's routes back on n0", func() (bool, string) {
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
