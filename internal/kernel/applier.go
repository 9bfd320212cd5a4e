package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/spec"
)

// Applier is the node's kernel as the agent reads and changes it. Node implements it on
// the kernel; kerneltest.Fake in memory, recording every change as a line of text.
// Sandbox namespaces are handles that OpenSandbox returned.
type Applier interface {
	// EnableForwarding turns on IPv4 and IPv6 forwarding in the node.
	EnableForwarding() error
	// BridgeNetfilter makes bridged packets cross the node's inet hooks, or not.
	BridgeNetfilter(on bool) error
	// Routes lists the node's routes (for the overlap check of a new network).
	Routes() ([]spec.NodeRoute, error)
	// Tunnels lists the node's overlay devices.
	Tunnels() ([]spec.Tunnel, error)
	// SyncOverlay makes one network's cross-node data path equal to its plan (see
	// Node.SyncOverlay); RemoveOverlay removes it.
	SyncOverlay(o plan.Overlay) error
	RemoveOverlay(device string, subnets []netip.Prefix) error
	// SyncLearnedRoutes makes routes the node's routes learned over BGP for prefixes
	// outside its pod networks (see Node.SyncLearnedRoutes).
	SyncLearnedRoutes(routes []plan.OverlayRoute) error
	// OnLink reports whether the node reaches addr directly, and through which interface.
	OnLink(addr netip.Addr) (dev string, ok bool, err error)
	// Underlay returns the interface that holds addr, a local address of the node, and
	// its MTU.
	Underlay(addr netip.Addr) (dev string, mtu int, err error)
	// LinkExists reports whether the node has an interface of that name.
	LinkExists(name string) (bool, error)
	// EnsureBridge creates or repairs a bridge; the zero Bridge does nothing.
	EnsureBridge(b plan.Bridge) error
	// EnsureRoutedGateway sets up what lets the node answer routed sandboxes' gateway.
	EnsureRoutedGateway() error
	// RemoveRoutedGateway undoes EnsureRoutedGateway.
	RemoveRoutedGateway() error
	// EnsureLocalAddress makes addr local to the node (the cluster DNS address).
	EnsureLocalAddress(addr netip.Addr) error
	// DeleteLink removes an interface by name; success when it is gone already.
	DeleteLink(name string) error
	// DeleteLinkIndex removes an interface by index; success when it is gone already.
	DeleteLinkIndex(index int) error
	// LinksWithPrefix maps the names of the node's interfaces starting with prefix to
	// their indexes.
	LinksWithPrefix(prefix string) (map[string]int, error)
	// OpenSandbox returns the namespace of a request: the descriptor fd (which it owns
	// from then on) or, when fd is negative, the namespace at path. It refuses what is
	// not a network namespace (ErrNotNetNS) and the node's own namespace or the calling
	// process's (ErrNodeNamespace). The caller closes the handle.
	OpenSandbox(fd int, path string) (netns.NsHandle, error)
	// AddEndpoint creates an endpoint's veth pair, its addresses, routes, neighbours and
	// sysctls; on failure it removes what it created.
	AddEndpoint(sandbox netns.NsHandle, ep plan.Endpoint) error
	// CheckEndpoint compares an endpoint's kernel state with its plan.
	CheckEndpoint(sandbox netns.NsHandle, ep plan.Endpoint) error
	// EndpointComplete reports whether an endpoint's host side was completed (up, with
	// its node routes): the last step of AddEndpoint.
	EndpointComplete(hostIf string) (bool, error)
	// RepairEndpoint restores the node side of an endpoint where it drifted from its
	// plan and says what it repaired; ErrHostIfGone when its host veth is gone.
	RepairEndpoint(ep plan.Endpoint) (repaired []string, err error)
	// PortHolder finds a socket of the node that holds a host port (see PortHolder).
	PortHolder(proto string, ip netip.Addr, port uint16) (h Holder, ok bool, err error)
	// FlushConntrack deletes the node's conntrack entries to a port (see FlushConntrack).
	FlushConntrack(proto string, dst netip.Addr, dport uint16) (int, error)
	// Conntrack returns how many connection tracking entries the node holds and how
	// many it can hold (nf_conntrack_count, nf_conntrack_max).
	Conntrack() (count, limit int, err error)
	// Close releases the applier's handles; the kernel configuration stays.
	Close()
}

var _ Applier = (*Node)(nil)

// Errors of OpenSandbox.
var (
	// ErrNotNetNS: the descriptor or path is not a network namespace.
	ErrNotNetNS = errors.New("not a network namespace")
	// ErrNodeNamespace: the namespace is the node's own (or the agent's): the sandbox
	// side of an endpoint, its default route above all, would replace the node's.
	ErrNodeNamespace = errors.New("is the node's own network namespace, not a sandbox's")
)

// OpenSandbox implements Applier.
func (n *Node) OpenSandbox(fd int, path string) (netns.NsHandle, error) {
	if fd < 0 {
		h, err := netns.GetFromPath(path)
		if err != nil {
			return netns.None(), fmt.Errorf("cannot open: %w", err)
		}
		fd = int(h)
	}
	if !IsNetNS(fd) {
		unix.Close(fd)
		return netns.None(), ErrNotNetNS
	}
	self, err := netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		unix.Close(fd)
		return netns.None(), fmt.Errorf("open the agent's own namespace: %w", err)
	}
	defer self.Close()
	for _, own := range []netns.NsHandle{n.ns, self} {
		same, err := SameNS(fd, int(own))
		if err != nil {
			unix.Close(fd)
			return netns.None(), err
		}
		if same {
			unix.Close(fd)
			return netns.None(), ErrNodeNamespace
		}
	}
	return netns.NsHandle(fd), nil
}

// PortHolder implements Applier: PortHolder in the node's namespace.
func (n *Node) PortHolder(proto string, ip netip.Addr, port uint16) (Holder, bool, error) {
	return PortHolder(n.ns, proto, ip, port)
}

// FlushConntrack implements Applier: FlushConntrack in the node's namespace.
func (n *Node) FlushConntrack(proto string, dst netip.Addr, dport uint16) (int, error) {
	return FlushConntrack(n.ns, proto, dst, dport)
}

// Conntrack implements Applier from /proc/sys/net/netfilter in the node's namespace.
func (n *Node) Conntrack() (count, limit int, err error) {
	for _, f := range []struct {
		key string
		v   *int
	}{{"net/netfilter/nf_conntrack_count", &count}, {"net/netfilter/nf_conntrack_max", &limit}} {
		s, err := ReadSysctl(n.ns, f.key)
		if err != nil {
			return 0, 0, err
		}
		if *f.v, err = strconv.Atoi(strings.TrimSpace(s)); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", f.key, err)
		}
	}
	return count, limit, nil
}
