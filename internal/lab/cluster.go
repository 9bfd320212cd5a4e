package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
)

// UnderlayGateway is the underlay's own address (on its bridge): the nodes' default
// route points to it.
var UnderlayGateway = netip.MustParsePrefix("192.168.77.1/24")

// UnderlayAddr is node i's address on the underlay (192.168.77.10+i/24).
func UnderlayAddr(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, 77, byte(10 + i)}), 24)
}

// Cluster is a set of node namespaces on one L2 underlay segment, for multi-node tests
// and the cluster demo: a namespace of its own holds the underlay bridge, and each node
// has an uplink (Uplink) on it with UnderlayAddr(i) and a default route to
// UnderlayGateway. The nodes have no outside namespace; their sandboxes come from
// Nodes[i].Sandbox().
type Cluster struct {
	Underlay netns.NsHandle
	Nodes    []*Lab
}

// NewCluster builds n nodes on an underlay.
func NewCluster(n int) (*Cluster, error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("cluster of %d nodes: want 1 to 200", n)
	}
	c := &Cluster{}
	var err error
	if c.Underlay, err = kernel.NewNS(); err != nil {
		return nil, err
	}
	if err := c.wireUnderlay(); err != nil {
		c.Close()
		return nil, fmt.Errorf("underlay: %w", err)
	}
	for i := range n {
		node, err := kernel.NewNS()
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes = append(c.Nodes, &Lab{Node: node, Outside: netns.None()})
		if err := c.wireNode(i); err != nil {
			c.Close()
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
	}
	return c, nil
}

func (c *Cluster) wireUnderlay() error {
	h, err := netlink.NewHandleAt(c.Underlay)
	if err != nil {
		return err
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "underlay"}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge: %w", err)
	}
	link, err := h.LinkByName("underlay")
	if err != nil {
		return err
	}
	if err := addAddrs(h, link, []netip.Prefix{UnderlayGateway}); err != nil {
		return err
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		if err := h.LinkSetUp(lo); err != nil {
			return err
		}
	}
	return h.LinkSetUp(link)
}

// wireNode plugs node i into the underlay bridge.
func (c *Cluster) wireNode(i int) error {
	node := c.Nodes[i].Node
	nh, err := netlink.NewHandleAt(node)
	if err != nil {
		return err
	}
	defer nh.Close()
	uh, err := netlink.NewHandleAt(c.Underlay)
	if err != nil {
		return err
	}
	defer uh.Close()
	port := fmt.Sprintf("n%d", i)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: Uplink}, PeerName: port, PeerNamespace: netlink.NsFd(int(c.Underlay))}
	if err := nh.LinkAdd(veth); err != nil {
		return fmt.Errorf("create uplink: %w", err)
	}
	br, err := uh.LinkByName("underlay")
	if err != nil {
		return err
	}
	p, err := uh.LinkByName(port)
	if err != nil {
		return err
	}
	if err := uh.LinkSetMaster(p, br); err != nil {
		return err
	}
	if err := uh.LinkSetUp(p); err != nil {
		return err
	}
	up, err := nh.LinkByName(Uplink)
	if err != nil {
		return err
	}
	if err := addAddrs(nh, up, []netip.Prefix{UnderlayAddr(i)}); err != nil {
		return err
	}
	if err := nh.LinkSetUp(up); err != nil {
		return err
	}
	if lo, err := nh.LinkByName("lo"); err == nil {
		if err := nh.LinkSetUp(lo); err != nil {
			return err
		}
	}
	r := &netlink.Route{LinkIndex: up.Attrs().Index, Gw: UnderlayGateway.Addr().AsSlice(), Family: unix.AF_INET}
	if err := nh.RouteAdd(r); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return waitUp(nh, Uplink)
}

// Close releases every namespace of the cluster.
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, n.Close())
	}
	c.Nodes = nil
	if c.Underlay.IsOpen() {
		errs = append(errs, c.Underlay.Close())
	}
	return errors.Join(errs...)
}

// CrossNodeRoutes lists the IPv4 routes of ns that podnet made to other nodes' blocks
// (kernel.RouteProtocol), as "DST via GW", sorted.
func CrossNodeRoutes(ns netns.NsHandle) ([]string, error) {
	return RoutesOf(ns, kernel.RouteProtocol)
}

// RoutesOf lists the IPv4 routes of ns of protocol proto, as "DST via GW", sorted.
func RoutesOf(ns netns.NsHandle, proto netlink.RouteProtocol) ([]string, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: proto}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range routes {
		out = append(out, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
	}
	slices.Sort(out)
	return out, nil
}
