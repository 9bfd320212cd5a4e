package kernel

import (
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/plan"
)

// For the tests of package kernel_test, which may import packages that import kernel
// (internal/driver plans endpoints).

// Handle is the node's netlink handle.
func (n *Node) Handle() *netlink.Handle { return n.h }

// Announce sends an endpoint's address announcements (gratuitous ARP, unsolicited NA).
func (n *Node) Announce(sandbox netns.NsHandle, sh *netlink.Handle, link netlink.Link, ep plan.Endpoint) error {
	return n.announce(sandbox, sh, link, ep)
}
