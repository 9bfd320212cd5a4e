package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
)

// Three nodes on an IPv4 underlay with a real etcd and three agent processes, and one
// dual-stack network (an IPv4 /16 and an IPv6 /64) per data path and driver. Every
// attach result lists both addresses, the IPv6 one inside a /122 block of its node (the
// default: as many addresses as an IPv4 /26). Over vxlan, pods on different nodes reach
// each other over IPv6 with TCP (the server sees the client's own address: no NAT),
// 1 MB of full-size segments and a 1,400-byte UDP datagram, and over IPv4 as well; two
// pods of one node reach each other over IPv6 too. A dual-stack network routed directly
// between IPv4 nodes is refused (an IPv6 route takes no IPv4 next hop).
func TestPrivilegedCluster6(t *testing.T) {
	c, agents := newEtcdCluster(t, 3)
	ctx := context.Background()
	for k, tc := range []struct{ driver, crossNode string }{
		{api.DriverBridge, api.CrossNodeVXLAN},
		{api.DriverRouted, api.CrossNodeVXLAN},
		{api.DriverBridge, api.CrossNodeDirect},
		{api.DriverRouted, api.CrossNodeDirect},
	} {
		t.Run(tc.crossNode+"/"+tc.driver, func(t *testing.T) {
			name := fmt.Sprintf("ds%d", k)
			subnets := []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 94+k)), netip.MustParsePrefix(fmt.Sprintf("fd00:%d::/64", 94+k))}
			n, err := agents[k%3].c.CreateNetwork(ctx, api.NetworkSpec{Name: name, Driver: tc.driver, CrossNode: tc.crossNode,
				Subnets: []string{subnets[0].String(), subnets[1].String()}})
			if tc.crossNode == api.CrossNodeDirect {
				// Refused, naming the subnet, and nothing created.
				want := fmt.Sprintf(`subnet "%s": crossNode direct cannot route IPv6 blocks between nodes with IPv4 addresses`, subnets[1])
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("dual-stack direct network: %v; want an error with %q", err, want)
				}
				if _, err := agents[0].c.Network(ctx, name); err == nil || !strings.Contains(err.Error(), "does not exist") {
					t.Errorf("network %s after the refusal: %v", name, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.BlockSize4 != 26 || n.BlockSize6 != 122 {
				t.Errorf("network %s: blocks /%d and /%d, want /26 and /122", name, n.BlockSize4, n.BlockSize6)
			}
			// Pods 0 to 2 on nodes 0 to 2, pod 3 on node 0 again.
			var pods4, pods6 []clusterPod
			for i := range 4 {
				p4 := attachOn(t, c, agents[i%3], name, fmt.Sprintf("%s-%d", name, i), nil)
				p6 := p4
				p6.ip = dualStack(t, p4, subnets)
				pods4, pods6 = append(pods4, p4), append(pods6, p6)
			}
			nodes, err := agents[0].c.Nodes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pods6 {
				if !slices.ContainsFunc(nodes[p.node].Blocks[name], func(b netip.Prefix) bool { return b.Bits() == 122 && b.Contains(p.ip) }) {
					t.Errorf("pod %s on n%d: not inside a /122 block of its node (%v)", p.ip, p.node, nodes[p.node].Blocks[name])
				}
			}

			// Every node routes to the two other nodes' blocks of both families.
			for i := range 3 {
				eventuallyState(t, fmt.Sprintf("routes of n%d to the other nodes' blocks of %s", i, name), func() (bool, string) {
					r4, r6 := networkRoutes(t, c, i, subnets)
					return len(r4) == 2 && len(r6) == 2, strings.Join(append(r4, r6...), ", ")
				})
			}

			mustCross(t, pods4[0], pods4[1], 8080)
			mustCross(t, pods6[0], pods6[1], 8080)
			mustCross(t, pods6[2], pods6[0], 8090)
			mustCross(t, pods6[1], pods6[2], 8100)
			mustCross(t, pods6[3], pods6[0], 8110) // one node
		})
	}
}

// dualStack checks that p's attach result lists one IPv4 address in subnets[0] (the
// pod's ip) and one IPv6 address in subnets[1], and returns the IPv6 one.
func dualStack(t *testing.T, p clusterPod, subnets []netip.Prefix) netip.Addr {
	t.Helper()
	var got []string
	var v6 netip.Addr
	for _, ipc := range p.res.IPs {
		got = append(got, ipc.Address.String())
		if subnets[1].Contains(ipc.Address.Addr()) {
			v6 = ipc.Address.Addr()
		}
	}
	if len(p.res.IPs) != 2 || !subnets[0].Contains(p.ip) || !v6.IsValid() {
		t.Fatalf("attach %s on n%d: addresses %s, want one in %s and one in %s", p.key, p.node, strings.Join(got, ", "), subnets[0], subnets[1])
	}
	return v6
}

// networkRoutes lists node i's routes to other nodes' blocks inside subnets, IPv4 and
// IPv6 apart, as "DST via GW dev DEV".
func networkRoutes(t *testing.T, c *lab.Cluster, i int, subnets []netip.Prefix) (v4, v6 []string) {
	t.Helper()
	h, err := netlink.NewHandleAt(c.Nodes[i].Node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: kernel.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(r.Dst.IP)
		if !slices.ContainsFunc(subnets, func(s netip.Prefix) bool { return s.Contains(dst.Unmap()) }) {
			continue
		}
		dev := fmt.Sprint(r.LinkIndex)
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		var via any = r.Gw
		if r.Via != nil {
			via = r.Via
		}
		s := fmt.Sprintf("%s via %v dev %s", r.Dst, via, dev)
		if dst.Unmap().Is4() {
			v4 = append(v4, s)
		} else {
			v6 = append(v6, s)
		}
	}
	slices.Sort(v4)
	slices.Sort(v6)
	return v4, v6
}
