package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agentproc"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
)

// clusterNodes is the size of the demo cluster.
const clusterNodes = 3

// demoLease is the demo agents' lease: a killed node is withdrawn this long after.
const demoLease = 3 * time.Second

// RunCluster shows podnet as a cluster network: three node namespaces on an underlay,
// a real etcd (Debian's etcd-server, started here on 127.0.0.1), one podnet agent
// process per node (bin is the podnet binary), a vxlan network and a direct-routed one
// created on one node, a pod on each node, pod-to-pod TCP across nodes, a service with
// backends on two nodes, and a node failure withdrawn and restored. Everything is
// removed at the end.
func RunCluster(ctx context.Context, w io.Writer, bin string) error {
	s := &stepper{w: w}
	fmt.Fprintln(w, "podnet demo --cluster: three nodes in throwaway network namespaces, one etcd on 127.0.0.1")
	dir, err := os.MkdirTemp("", "podnet-cluster-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var etcd *agentproc.Etcd
	s.step("start etcd (Debian's etcd-server) on 127.0.0.1", func() (string, error) {
		var err error
		if etcd, err = agentproc.StartEtcd(dir); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s, %s", etcd.Version, etcd.URL), nil
	})
	if etcd != nil {
		defer etcd.Stop()
	}
	var c *lab.Cluster
	s.step(fmt.Sprintf("create %d node namespaces on one underlay bridge", clusterNodes), func() (string, error) {
		var err error
		c, err = lab.NewCluster(clusterNodes)
		return fmt.Sprintf("nodes %s, %s, %s", lab.UnderlayAddr(0).Addr(), lab.UnderlayAddr(1).Addr(), lab.UnderlayAddr(2).Addr()), err
	})
	if c == nil {
		return errors.New("demo failed")
	}
	defer c.Close()

	agents := make([]*agentproc.Proc, clusterNodes)
	defer func() {
		for _, a := range agents {
			if a != nil {
				a.Stop()
			}
		}
	}()
	s.step("start a podnet agent process per node, all on the etcd", func() (string, error) {
		resolv := filepath.Join(dir, "resolv.conf")
		if err := os.WriteFile(resolv, nil, 0o644); err != nil {
			return "", err
		}
		for i := range agents {
			agents[i] = agentproc.New(bin, filepath.Join(dir, fmt.Sprintf("n%d.sock", i)), filepath.Join(dir, fmt.Sprintf("n%d.log", i)),
				"--netns", nsPath(c.Nodes[i].Node), "--store", etcd.Endpoint(),
				"--node-name", fmt.Sprintf("n%d", i), "--node-ip", lab.UnderlayAddr(i).Addr().String(),
				"--lease-ttl", demoLease.String(), "--metrics-address", "", "--resolv-conf", resolv,
				"--state-dir", filepath.Join(dir, fmt.Sprintf("n%d", i)))
			if err := agents[i].Start(20 * time.Second); err != nil {
				return "", fmt.Errorf("n%d: %w", i, err)
			}
		}
		return "n0, n1, n2", nil
	})
	client := func(i int) *api.Client { return agents[i].Client() }

	s.step(`create network "blue" on n0 (bridge, crossNode vxlan: the default on etcd)`, func() (string, error) {
		n, err := client(0).CreateNetwork(ctx, api.NetworkSpec{Name: "blue", Subnets: []string{"10.91.0.0/16"}})
		return fmt.Sprintf("VNI %d, MTU %d (underlay 1500 - 50), blocks of /%d", n.VNI, n.MTU, n.BlockSize4), err
	})
	s.step(`create network "green" on n1 (routed, crossNode direct)`, func() (string, error) {
		_, err := client(1).CreateNetwork(ctx, api.NetworkSpec{Name: "green", Driver: api.DriverRouted, Subnets: []string{"10.92.0.0/16"}, CrossNode: api.CrossNodeDirect})
		return "routes to the other nodes' blocks via their underlay addresses", err
	})
	type pod struct {
		ns netns.NsHandle
		ip netip.Addr
	}
	pods := map[string][]pod{}
	s.step("attach a pod to each network on each node (each node claims a block)", func() (string, error) {
		var ips []string
		for _, network := range []string{"blue", "green"} {
			for i := range clusterNodes {
				sb, err := c.Nodes[i].Sandbox()
				if err != nil {
					return "", err
				}
				key := api.EndpointKey{Network: network, ContainerID: fmt.Sprintf("%s-%d", network, i), IfName: "eth0"}
				res, err := client(i).Attach(ctx, api.AttachRequest{EndpointKey: key, Namespace: "default", Labels: map[string]string{"app": "web"}}, int(sb))
				if err != nil {
					return "", fmt.Errorf("%s on n%d: %w", network, i, err)
				}
				ip := res.IPs[0].Address.Addr()
				pods[network] = append(pods[network], pod{sb, ip})
				ips = append(ips, fmt.Sprintf("%s n%d %s", network, i, ip))
			}
		}
		return strings.Join(ips, ", "), nil
	})
	for _, network := range []string{"blue", "green"} {
		s.step(fmt.Sprintf("%s: TCP from the pod on n0 to the pods on n1 and n2", network), func() (string, error) {
			p := pods[network]
			var out []string
			for j := 1; j < clusterNodes; j++ {
				// The routes come from the store's watch: wait for them briefly.
				var src netip.Addr
				var err error
				for range 100 {
					if src, err = probe.TCP(ctx, p[0].ns, p[j].ns, netip.AddrPortFrom(p[j].ip, 8080), time.Second); err == nil {
						break
					}
				}
				if err != nil {
					return "", fmt.Errorf("to %s on n%d: %w", p[j].ip, j, err)
				}
				out = append(out, fmt.Sprintf("%s on n%d sees %s (no NAT)", p[j].ip, j, src))
			}
			return strings.Join(out, "; "), nil
		})
	}
	s.step("a service selecting the blue pods: from n0's pod, its VIP reaches n1's and n2's", func() (string, error) {
		svc, err := client(0).CreateService(ctx, api.ServiceSpec{Name: "web", Namespace: "default", Selector: map[string]string{"app": "web"},
			Ports: []api.ServicePort{{Port: 80, TargetPort: 8080, Protocol: "tcp"}}})
		if err != nil {
			return "", err
		}
		var ls []net.Listener
		defer func() {
			for _, l := range ls {
				l.Close()
			}
		}()
		for _, network := range []string{"blue", "green"} {
			for _, p := range pods[network] {
				l, err := kernel.ListenIn(p.ns, "tcp", netip.AddrPortFrom(p.ip, 8080).String())
				if err != nil {
					return "", err
				}
				ls = append(ls, l)
				go probe.ServeIdentity(l, p.ip)
			}
		}
		seen := map[netip.Addr]bool{}
		vip := netip.AddrPortFrom(svc.VIPs[0], 80)
		for range 200 {
			if ip, err := probe.AskIdentity(ctx, pods["blue"][0].ns, vip, time.Second); err == nil {
				seen[ip] = true
			}
			if seen[pods["blue"][1].ip] && seen[pods["blue"][2].ip] {
				return fmt.Sprintf("%s answered by %d backends, among them %s (n1) and %s (n2)", vip, len(seen), pods["blue"][1].ip, pods["blue"][2].ip), nil
			}
		}
		return "", fmt.Errorf("%s reached only %v", vip, slices.Collect(func(yield func(netip.Addr) bool) {
			for ip := range seen {
				yield(ip)
			}
		}))
	})
	var before []string
	s.step("kill -9 n2's agent: n0 withdraws n2's blocks once its lease expires", func() (string, error) {
		before = crossRoutes(c.Nodes[0].Node)
		start := time.Now()
		agents[2].Kill()
		via := "via " + lab.UnderlayAddr(2).Addr().String()
		for time.Since(start) < 4*demoLease {
			if !slices.ContainsFunc(crossRoutes(c.Nodes[0].Node), func(r string) bool { return strings.Contains(r, via) }) {
				nodes, err := client(0).Nodes(ctx)
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("withdrawn %.1f s after the kill (lease %v); node ls: n2 alive=%v", time.Since(start).Seconds(), demoLease, nodes[2].Alive), nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return "", fmt.Errorf("n0 still routes to n2 after %v: %v", 4*demoLease, crossRoutes(c.Nodes[0].Node))
	})
	s.step("restart n2's agent: routes back, its pod keeps its address and is reachable", func() (string, error) {
		if err := agents[2].Start(20 * time.Second); err != nil {
			return "", err
		}
		for range 500 {
			if slices.Equal(crossRoutes(c.Nodes[0].Node), before) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		p := pods["blue"]
		src, err := probe.TCP(ctx, p[0].ns, p[2].ns, netip.AddrPortFrom(p[2].ip, 8081), 5*time.Second)
		return fmt.Sprintf("%s on n2 reached from %s", p[2].ip, src), err
	})
	s.step("stop the agents and etcd, remove the namespaces", func() (string, error) {
		var errs []error
		for i, a := range agents {
			if err := a.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("n%d: %w", i, err))
			}
			agents[i] = nil
		}
		return "", errors.Join(errs...)
	})
	if s.failed {
		return errors.New("demo failed")
	}
	fmt.Fprintln(w, "podnet demo --cluster: all steps passed; nothing is left behind")
	return nil
}

// crossRoutes lists a node's routes to other nodes' blocks (nil when unreadable).
func crossRoutes(ns netns.NsHandle) []string {
	r, _ := lab.CrossNodeRoutes(ns)
	return r
}
