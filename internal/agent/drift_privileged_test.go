package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/store"
)

// blockedTimeout bounds a probe that must fail. It is longer than an IPv4 address
// resolution takes to fail (3 solicitations 1 s apart), so that a connect failing for
// want of a neighbour reports EHOSTUNREACH rather than a timeout.
const blockedTimeout = 5 * time.Second

// dialErr connects from client to addr:port (listening in server) and returns the error.
func dialErr(client, server netns.NsHandle, addr netip.Addr, port uint16, timeout time.Duration) error {
	_, err := probe.TCP(context.Background(), client, server, netip.AddrPortFrom(addr, port), timeout)
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// mustReach checks that the node reaches every sandbox on every address, and every
// sandbox the next one.
func mustReach(t *testing.T, e *env, sbs ...*sandbox) {
	t.Helper()
	for i, sb := range sbs {
		for j := range sb.res.IPs {
			if err := dialErr(e.lab.Node, sb.ns, sb.ip(j), 8080, probeTimeout); err != nil {
				t.Fatalf("node -> %s %s: %v", sb.key.ContainerID, sb.ip(j), err)
			}
			if len(sbs) > 1 {
				peer := sbs[(i+1)%len(sbs)]
				if err := dialErr(sb.ns, peer.ns, peer.ip(j), 8081, probeTimeout); err != nil {
					t.Fatalf("%s -> %s %s: %v", sb.key.ContainerID, peer.key.ContainerID, peer.ip(j), err)
				}
			}
		}
	}
}

// nodeHandle is a netlink handle in the lab's node namespace, closed at cleanup.
func (e *env) nodeHandle() *netlink.Handle {
	e.t.Helper()
	h, err := netlink.NewHandleAt(e.lab.Node)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(h.Close)
	return h
}

// assertNoRepairs checks that RepairEndpoint finds nothing to repair on any endpoint.
func assertNoRepairs(t *testing.T, e *env) {
	t.Helper()
	var eps []api.Endpoint
	var nets map[string]api.Network
	err := e.agent.store.View(func(tx store.Tx) error {
		ns, err := tx.Networks()
		if err != nil {
			return err
		}
		nets = map[string]api.Network{}
		for _, n := range ns {
			nets[n.Name] = n
			more, err := tx.Endpoints(n.Name)
			if err != nil {
				return err
			}
			eps = append(eps, more...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) == 0 {
		t.Fatal("no endpoints")
	}
	for _, ep := range eps {
		repaired, err := e.agent.node.RepairEndpoint(driver.EndpointFor(nets[ep.Network], ep).Kernel)
		if err != nil || len(repaired) != 0 {
			t.Errorf("RepairEndpoint %s = %q, %v; want nothing to repair", ep.EndpointKey, repaired, err)
		}
	}
}

func (e *env) routedNetwork(name string, subnets ...string) api.Network {
	e.t.Helper()
	n, err := e.c.CreateNetwork(context.Background(), api.NetworkSpec{Name: name, Driver: api.DriverRouted, Subnets: subnets})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// Per kind of drift: the traffic it cuts, cut as the kernel reports it, and back after
// one Reconcile.
func TestPrivilegedReconcileRepairsDrift(t *testing.T) {
	cases := []struct {
		name   string
		routed bool
		// drift breaks the node side of a and b behind the agent's back, and proves the
		// traffic cut with the specific failure it causes.
		drift func(t *testing.T, e *env, h *netlink.Handle, n api.Network, a, b *sandbox)
		// repaired checks the kernel state Reconcile restored.
		repaired func(t *testing.T, e *env, h *netlink.Handle, n api.Network, a, b *sandbox)
	}{
		{
			name:   "routed host route deleted",
			routed: true,
			drift: func(t *testing.T, e *env, h *netlink.Handle, n api.Network, a, b *sandbox) {
				host := mustLink(t, h, a.res.Interfaces[0].Name)
				uplink := mustLink(t, h, "uplink0")
				for _, ip := range a.res.IPs {
					dst := netip.PrefixFrom(ip.Address.Addr(), ip.Address.Addr().BitLen())
					deleteRoute(t, h, host, dst)
					// The node now routes the pod to its default gateway, which drops it.
					routes, err := h.RouteGet(dst.Addr().AsSlice())
					if err != nil || len(routes) == 0 || routes[0].LinkIndex != uplink.Attrs().Index {
						t.Fatalf("node route to %s after the delete: %v %v, want via uplink0", dst.Addr(), routes, err)
					}
					// The outside, which has no route to pods, drops the SYN or answers
					// with an ICMP unreachable (subject to its ICMP rate limit).
					if err := dialErr(e.lab.Node, a.ns, dst.Addr(), 8080, time.Second); !isTimeout(err) &&
						!errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) {
						t.Fatalf("node -> %s without its host route: %v, want a timeout or unreachable from the outside", dst.Addr(), err)
					}
				}
			},
			repaired: func(t *testing.T, e *env, h *netlink.Handle, n api.Network, a, b *sandbox) {
				host := mustLink(t, h, a.res.Interfaces[0].Name)
				for _, ip := range a.res.IPs {
					routes, err := h.RouteGet(ip.Address.Addr().AsSlice())
					if err != nil || len(routes) == 0 || routes[0].LinkIndex != host.Attrs().Index {
						t.Errorf("node route to %s after reconcile: %v %v, want dev %s", ip.Address.Addr(), routes, err, host.Attrs().Name)
					}
				}
			},
		},
		{
			name: "bridge deleted",
			drift: func(t *testing.T, e *env, h *netlink.Handle, n api.Network, a, b *sandbox) {
				if err := h.LinkDel(mustLink(t, h, n.Bridge)); err != nil {
					t.Fatal(err)
				}
				for _, sb := range []*sandbox{a, b} {
					if m := mustLink(t, h, sb.res.Interfaces[0].Name).Attrs().MasterIndex; m != 0 {
						t.Fatalf("host veth of %s still has master %d after its bridge was deleted", sb.key.ContainerID, m)
					}
				}
				// The sandboxes' frames end in a host veth that belongs to no bridge.
				if err := dialErr(a.ns, b.ns, b.ip(0), 8081, time.Second); !isTimeout(err) {
					t.Fatalf("a -> b without the bridge: %v, want a timeout", err)
				}
				if err := dialErr(e.lab.Node, a.ns, a.ip(0), 8080, time.Second); !isTimeout(err) {
					t.Fatalf("node -> a without the bridge: %v, want a timeout", err)
				}
			},
			repaired: func(t *testing.T, e *env, h *netlink.Handle, n api.Network, a, b *sandbox) {
				br := mustLink(t, h, n.Bridge)
				for _, sb := range []*sandbox{a, b} {
					host := mustLink(t, h, sb.res.Interfaces[0].Name)
					if host.Attrs().MasterIndex != br.Attrs().Index {
						t.Errorf("host veth of %s: master %d, want %s (%d)", sb.key.ContainerID, host.Attrs().MasterIndex, n.Bridge, br.Attrs().Index)
					}
					pi, err := h.LinkGetProtinfo(host)
					if err != nil || !pi.Hairpin {
						t.Errorf("host veth of %s: hairpin %v (%v), want on", sb.key.ContainerID, pi.Hairpin, err)
					}
				}
			},
		},
		{
			name:   "routed proxy_arp off",
			routed: true,
			drift: func(t *testing.T, e *env, h *netlink.Handle, n api.Network, a, b *sandbox) {
				key := "net/ipv4/conf/" + a.res.Interfaces[0].Name + "/proxy_arp"
				if err := kernel.WriteSysctl(e.lab.Node, key, "0"); err != nil {
					t.Fatal(err)
				}
				// a must resolve its gateway again, and nobody answers.
				sh, err := netlink.NewHandleAt(a.ns)
				if err != nil {
					t.Fatal(err)
				}
				defer sh.Close()
				eth0 := mustLink(t, sh, "eth0")
				gw := netip.MustParseAddr(api.RoutedGateway4)
				if err := sh.NeighDel(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: netlink.FAMILY_V4, IP: gw.AsSlice()}); err != nil {
					t.Fatalf("flush sandbox neighbour %s: %v", gw, err)
				}
				err = dialErr(a.ns, e.lab.Node, lab.NodeAddr4.Addr(), 8082, blockedTimeout)
				if !errors.Is(err, syscall.EHOSTUNREACH) {
					t.Fatalf("a -> node with proxy_arp=0: %v, want EHOSTUNREACH (gateway unresolved)", err)
				}
			},
			repaired: func(t *testing.T, e *env, h *netlink.Handle, n api.Network, a, b *sandbox) {
				key := "net/ipv4/conf/" + a.res.Interfaces[0].Name + "/proxy_arp"
				if v, err := kernel.ReadSysctl(e.lab.Node, key); err != nil || v != "1" {
					t.Errorf("%s = %q, %v after reconcile; want 1", key, v, err)
				}
				if err := dialErr(a.ns, e.lab.Node, lab.NodeAddr4.Addr(), 8082, probeTimeout); err != nil {
					t.Errorf("a -> node after reconcile: %v", err)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			var n api.Network
			if c.routed {
				n = e.routedNetwork("green", "10.77.0.0/24", "fd77::/64")
			} else {
				n = e.network("blue", "10.89.0.0/24", "fd89::/64")
			}
			a := e.mustAttach(n.Name, "a")
			b := e.mustAttach(n.Name, "b")
			mustReach(t, e, a, b)
			h := e.nodeHandle()
			c.drift(t, e, h, n, a, b)
			if err := e.agent.Reconcile(false); err != nil {
				t.Fatal(err)
			}
			c.repaired(t, e, h, n, a, b)
			mustReach(t, e, a, b)
			assertNoRepairs(t, e)
		})
	}
}

// On a node where nothing drifted, Reconcile repairs nothing: links and routes stay as
// they are, and RepairEndpoint finds nothing to do on any endpoint.
func TestPrivilegedReconcileHealthyRepairsNothing(t *testing.T) {
	e := newEnv(t)
	e.network("blue", "10.89.0.0/24", "fd89::/64")
	e.routedNetwork("green", "10.77.0.0/24", "fd77::/64")
	a, b := e.mustAttach("blue", "a"), e.mustAttach("blue", "b")
	x, y := e.mustAttach("green", "x"), e.mustAttach("green", "y")
	mustReach(t, e, a, b)
	mustReach(t, e, x, y)
	// ADD marks endpoints attached off the reply's path.
	waitFor(t, func() bool {
		eps, _ := e.c.Endpoints(context.Background(), "")
		return len(eps) == 4 && !slices.ContainsFunc(eps, func(ep api.Endpoint) bool { return ep.State != api.StateAttached })
	})
	h := e.nodeHandle()
	before := nodeState(t, h)
	for range 2 {
		if err := e.agent.Reconcile(false); err != nil {
			t.Fatal(err)
		}
	}
	if after := nodeState(t, h); after != before {
		t.Errorf("reconcile of a healthy node changed it:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	assertNoRepairs(t, e)
}

// nodeState renders the node's links (index, name, flags, mtu, master, mac, alias)
// and main-table routes.
func nodeState(t *testing.T, h *netlink.Handle) string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range links {
		a := l.Attrs()
		lines = append(lines, strings.Join([]string{"link", a.Name, a.Flags.String(), strconv.Itoa(a.MTU), strconv.Itoa(a.Index), strconv.Itoa(a.MasterIndex), a.HardwareAddr.String(), a.Alias}, " "))
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		lines = append(lines, "route "+r.String())
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func mustLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

// deleteRoute deletes the node's route to dst through link.
func deleteRoute(t *testing.T, h *netlink.Handle, link netlink.Link, dst netip.Prefix) {
	t.Helper()
	routes, err := h.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == dst.String() {
			if err := h.RouteDel(&r); err != nil {
				t.Fatalf("delete route %s: %v", dst, err)
			}
			return
		}
	}
	t.Fatalf("no route %s dev %s", dst, link.Attrs().Name)
}
