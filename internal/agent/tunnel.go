package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/store"
)

// Tunnel addresses. A node sends through a network's VXLAN device what it originates
// towards another node's pods (its own connections, and connections it DNATs to a pod
// of another node and masquerades: NodePorts, VIPs reached from outside the pod
// networks). The source address of such a packet is the device's: without one, the
// kernel would pick the underlay address, and the remote pod's reply would take the
// underlay back and be dropped as spoofed (only the VXLAN device is an ingress of the
// network's addresses). So each node holds, per VXLAN network, one address of each
// subnet's family from its own blocks, allocated through IPAM under the owner
// TunnelOwner(node) (Calico's tunnel address, flannel's .0 on flannel.1): the reply to
// it is routed to the node's block, through the tunnel.
//
// The allocation lives as long as the node: the orphan sweep (gc.go) keeps it while the
// node has a record, releaseDeadBlocks releases it with the blocks of a node dead for the
// grace period, RemoveNode with the node, DeleteNetwork with the network.

// tunnelOwnerPrefix starts the IPAM owner of the tunnel addresses; endpoint owners
// (api.EndpointKey.String) start with the network's name, which cannot start with "_".
const tunnelOwnerPrefix = "_tunnel/"

// TunnelOwner is the IPAM owner of node's tunnel addresses.
func TunnelOwner(node string) string { return tunnelOwnerPrefix + node }

// tunnelNode is the node of a tunnel owner ("" for any other owner).
func tunnelNode(owner string) string {
	node, ok := strings.CutPrefix(owner, tunnelOwnerPrefix)
	if !ok {
		return ""
	}
	return node
}

// tunnelAddrs are the node's tunnel addresses in network n, as host prefixes, allocated
// when the node has none. verify reads the store even when the agent knows them (a
// Reconcile: another node may have released them while this node was dead).
func (a *Agent) tunnelAddrs(n api.Network, verify bool) ([]netip.Prefix, error) {
	known, ok := a.tunnels[n.Name]
	if ok && known.created.Equal(n.Created) {
		if !verify {
			return known.addrs, nil
		}
		held, err := a.tunnelHeld(n, known.addrs)
		if err != nil || held {
			return known.addrs, err
		}
	}
	delete(a.tunnels, n.Name)
	var got []netip.Prefix
	err := a.store.Update(func(tx store.Tx) error {
		var err error
		got, err = ipam.AllocateOnNode(tx, n, a.nodeName, TunnelOwner(a.nodeName), nil, a.now())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("network %q: tunnel address of node %q: %w", n.Name, a.nodeName, err)
	}
	addrs := make([]netip.Prefix, len(got))
	for i, p := range got {
		addrs[i] = netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
	}
	a.tunnels[n.Name] = tunnel{created: n.Created, addrs: addrs}
	return addrs, nil
}

// tunnel is what tunnelAddrs knows of one network.
type tunnel struct {
	created time.Time // of the network: one deleted and created again under its name is new
	addrs   []netip.Prefix
}

// tunnelHeld reports whether the store still gives addrs to this node's tunnel.
func (a *Agent) tunnelHeld(n api.Network, addrs []netip.Prefix) (bool, error) {
	var held []netip.Addr
	err := a.store.View(func(tx store.Tx) (err error) {
		held, err = tx.AllocationsOf(n.Name, TunnelOwner(a.nodeName))
		return err
	})
	want := make([]netip.Addr, len(addrs))
	for i, p := range addrs {
		want[i] = p.Addr()
	}
	slices.SortFunc(want, netip.Addr.Compare) // as AllocationsOf lists them
	return err == nil && slices.Equal(held, want), err
}

// releaseTunnels releases node's tunnel addresses in every network (in tx).
func releaseTunnels(tx store.Tx, node string) error {
	nets, err := tx.Networks()
	if err != nil {
		return err
	}
	for _, n := range nets {
		if _, err := ipam.Release(tx, n.Name, TunnelOwner(node)); err != nil {
			return err
		}
	}
	return nil
}
