package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// Cluster membership and the cross-node data paths.
//
// Every agent records its node (name, underlay address, version) and keeps it alive
// under a lease of the store (store.Register): on etcd, a node whose agent dies is
// dead once its lease expires. On a store shared by several nodes (Config.Shared), the
// agent watches the store, and every change (a network or service created on another
// node, a block claimed, a node joining, leaving or dying) runs syncCluster: the
// networks' bridges, the nftables tables (services balance over the pods of every
// node), the routes, FDB and neighbour entries towards the other live nodes' blocks
// (driver.OverlayFor, kernel SyncOverlay), and the DNS snapshot. Reconcile runs the
// overlay part too, so a route, FDB entry or VXLAN device deleted by hand comes back.

// DefaultLeaseTTL is how long a node stays alive in the store after its agent stopped
// renewing its lease.
const DefaultLeaseTTL = 15 * time.Second

// DefaultBlockGrace is how long a node must have been dead before the other nodes
// release its blocks that hold no address (an agent restarted within it finds them).
const DefaultBlockGrace = 10 * time.Minute

// startCluster records the node and registers it; on a shared store it starts the
// watch. It fails when another live node holds the name.
func (a *Agent) startCluster() error {
	if a.nodeIP.IsValid() {
		dev, mtu, err := a.node.Underlay(a.nodeIP)
		if err != nil {
			return fmt.Errorf("node %q: --node-ip %s: %w", a.nodeName, a.nodeIP, err)
		}
		a.underDev, a.underMTU = dev, mtu
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.clusterStop = cancel
	lost, err := a.register(ctx)
	if err != nil {
		cancel()
		return err
	}
	a.clusterWG.Go(func() { a.keepRegistered(ctx, lost) })
	// The loop also installs what the BGP speaker learns, on a store of one node too.
	a.clusterSig = make(chan struct{}, 1)
	a.clusterWG.Go(func() { a.clusterLoop(ctx) })
	if !a.shared {
		return nil
	}
	if err := a.store.Watch(ctx, a.clusterChanged); err != nil {
		a.stopCluster()
		return fmt.Errorf("watch the store: %w", err)
	}
	a.clusterChanged() // what the store holds already
	return nil
}

// stopCluster ends the watch and the lease (the node is dead at once: its agent
// stopped).
func (a *Agent) stopCluster() {
	if a.clusterStop != nil {
		a.clusterStop()
		a.clusterWG.Wait()
	}
}

// register records the node and takes its lease.
func (a *Agent) register(ctx context.Context) (<-chan struct{}, error) {
	holder := a.nodeIP.String()
	if !a.nodeIP.IsValid() {
		holder = a.nodeName
	}
	lost, err := a.store.Register(ctx, a.nodeName, holder, a.leaseTTL)
	if err != nil {
		if errors.Is(err, store.ErrNodeTaken) {
			return nil, api.Errorf(api.CodeInvalidConfig, "node name %q: %v (give this node another --node-name)", a.nodeName, err)
		}
		return nil, fmt.Errorf("node %q: register: %w", a.nodeName, err)
	}
	err = a.store.Update(func(tx store.Tx) error {
		n, ok, err := tx.Node(a.nodeName)
		if err != nil {
			return err
		}
		if !ok || n.Registered.IsZero() { // none yet, or one podnet controller made (Kubernetes Node)
			n.Registered = a.created()
		}
		n.Name, n.IP, n.Version = a.nodeName, a.nodeIP, Version
		return tx.PutNode(n)
	})
	if err != nil {
		return nil, fmt.Errorf("node %q: record: %w", a.nodeName, err)
	}
	return lost, nil
}

// keepRegistered registers the node again whenever its lease is lost (the agent was cut
// off from etcd for longer than the TTL), until ctx ends.
func (a *Agent) keepRegistered(ctx context.Context, lost <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-lost:
		}
		a.log.Warn("node lease lost: registering again", "node", a.nodeName)
		for {
			var err error
			if lost, err = a.register(ctx); err == nil {
				break
			}
			a.log.Error("register node", "node", a.nodeName, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// clusterChanged asks clusterLoop for a sync; syncs coalesce.
func (a *Agent) clusterChanged() {
	select {
	case a.clusterSig <- struct{}{}:
	default:
	}
}

func (a *Agent) clusterLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.clusterSig:
		}
		if err := a.syncCluster(); err != nil {
			a.log.Error("cluster sync", "err", err)
		}
	}
}

// syncCluster applies what other nodes changed in the store: networks (bridges of new
// ones, those deleted elsewhere), the overlays (first: a new node's pods are reachable
// as soon as its routes are in), the nftables tables, DNS.
//
// It runs on every node for every change in the cluster, so it does only what changed:
// the networks' devices when the set of networks changed, each overlay when its plan
// changed, the nftables comparison when the desired ruleset changed. Drift (a device,
// route or rule deleted by hand) is Reconcile's, which applies everything.
func (a *Agent) syncCluster() error {
	a.netMu.Lock()
	nets, err := a.Networks()
	changed := err == nil && !reflect.DeepEqual(nets, a.clusterNets)
	if changed {
		for _, n := range nets {
			if err = a.ensureNetworkKernel(n); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = a.syncOverlaysChanged(nets, false)
	}
	if err == nil {
		err = a.releaseDeadBlocks()
	}
	if err == nil && changed {
		err = a.removeGoneNetworks(nets)
	}
	if err == nil {
		a.clusterNets = nets
	}
	if err == nil && a.hasPolicies() {
		// A policy written by another node or podnet controller: bridged pods meet it too.
		err = a.node.BridgeNetfilter(true)
	}
	if err == nil {
		a.dpMu.Lock()
		err = a.syncRulesetLocked(true, true)
		a.dpMu.Unlock()
	}
	a.netMu.Unlock()
	a.refreshDNS()
	return err
}

// removeGoneNetworks removes the bridges and VXLAN devices of networks that another
// node deleted (the caller holds netMu).
func (a *Agent) removeGoneNetworks(nets []api.Network) error {
	want := map[string]bool{}
	for _, n := range nets {
		want[n.Bridge] = true
		want[spec.VXLANName(n.Name)] = true
	}
	var errs []error
	for _, prefix := range []string{"pn-", "pnh", "pnx"} {
		links, err := a.node.LinksWithPrefix(prefix)
		if err != nil {
			return err
		}
		for name, index := range links {
			if want[name] {
				continue
			}
			a.log.Info("removing the device of a network deleted on another node", "link", name)
			errs = append(errs, a.node.DeleteLinkIndex(index))
		}
	}
	return errors.Join(errs...)
}

// releaseDeadBlocks releases the tunnel addresses (tunnel.go) and the blocks that hold no
// address of nodes that have been dead for the grace period: a dead node's block that
// holds one (its pods may still run; its agent may come back) stays until `podnet node
// rm`. Nodes race to do it; the
// store's transaction lets one win. When this agent first saw a node dead counts, so a
// node that dies and an agent that starts later wait a whole grace period again.
func (a *Agent) releaseDeadBlocks() error {
	v, err := a.readCluster()
	if err != nil {
		return err
	}
	now := a.now()
	var due []string
	for _, n := range v.nodes {
		switch {
		case n.Alive || n.Name == a.nodeName:
			delete(a.deadSince, n.Name)
		case a.deadSince[n.Name].IsZero():
			a.deadSince[n.Name] = now
		case now.Sub(a.deadSince[n.Name]) >= a.blockGrace:
			due = append(due, n.Name)
		}
	}
	for _, name := range due {
		var released []string
		err := a.store.Update(func(tx store.Tx) error {
			released = released[:0]
			if alive, err := a.store.Alive(); err != nil || alive[name] {
				return err
			}
			// Its tunnel addresses go first: they hold its blocks otherwise.
			if err := releaseTunnels(tx, name); err != nil {
				return err
			}
			blocks, err := tx.Blocks("")
			if err != nil {
				return err
			}
			for _, b := range blocks {
				if b.Node != name {
					continue
				}
				allocs, err := tx.Allocations(b.Network)
				if err != nil {
					return err
				}
				if slices.ContainsFunc(slices.Collect(maps.Keys(allocs)), b.Prefix.Contains) {
					continue
				}
				if err := tx.DeleteBlock(b.Network, b.Prefix); err != nil {
					return err
				}
				released = append(released, b.Network+" "+b.Prefix.String())
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(released) > 0 {
			a.log.Info("released the empty blocks of a dead node", "node", name, "blocks", strings.Join(released, ", "))
		}
	}
	return nil
}

// clusterView is what the overlays derive from, read at once.
type clusterView struct {
	nodes  []api.Node
	blocks []api.Block
}

func (a *Agent) readCluster() (v clusterView, err error) {
	alive, err := a.store.Alive()
	if err != nil {
		return v, err
	}
	err = a.store.View(func(tx store.Tx) error {
		if v.nodes, err = tx.Nodes(); err != nil {
			return err
		}
		v.blocks, err = tx.Blocks("")
		return err
	})
	for i := range v.nodes {
		v.nodes[i].Alive = alive[v.nodes[i].Name]
	}
	return v, err
}

// syncOverlays applies the cross-node plan of every cross-node network, nets being all
// the networks (the caller holds netMu): the VXLAN devices, FDB and neighbour entries,
// the routes to other nodes' blocks, the BGP speaker and what it learned (bgp.go).
// Direct routing skips, with an error in the log, the nodes that are not on the node's
// own L2 segment.
func (a *Agent) syncOverlays(nets []api.Network) error {
	return a.syncOverlaysChanged(nets, true)
}

// syncOverlaysChanged is syncOverlays; unless all, it leaves alone the overlays whose
// plan equals the one it applied last.
func (a *Agent) syncOverlaysChanged(nets []api.Network, all bool) error {
	if all || a.appliedOverlays == nil {
		a.appliedOverlays = map[string]plan.Overlay{}
	}
	if !slices.ContainsFunc(nets, func(n api.Network) bool { return n.CrossNode != "" }) {
		a.stopBGP()
		return a.syncLearned(nil)
	}
	if !a.nodeIP.IsValid() {
		return fmt.Errorf("cross-node networks need the node's underlay address (--node-ip)")
	}
	v, err := a.readCluster()
	if err != nil {
		return err
	}
	learned, outside, bgpErr := a.syncBGP(nets, v)
	errs := []error{bgpErr}
	u := driver.Underlay{Node: a.nodeName, IP: a.nodeIP, Dev: a.underDev}
	for _, n := range nets {
		if n.CrossNode == "" {
			continue
		}
		o := driver.OverlayFor(n, u, v.nodes, v.blocks)
		switch n.CrossNode {
		case api.CrossNodeVXLAN:
			// Without its addresses (a full subnet) the device still carries the pods'
			// traffic: logged, not an error that would hold the rest of the sync back.
			addrs, err := a.tunnelAddrs(n, all)
			if err != nil {
				a.log.Error("vxlan: no tunnel address: the node's own and masqueraded connections to other nodes' pods will not be answered", "network", n.Name, "err", err)
			}
			o.Device.Addrs = addrs
		case api.CrossNodeBGP:
			o.Routes = learned[n.Name]
		case api.CrossNodeDirect:
			o.Routes = slices.DeleteFunc(o.Routes, func(r plan.OverlayRoute) bool {
				dev, ok, err := a.node.OnLink(r.Via)
				if err == nil && ok && dev == a.underDev {
					return false
				}
				a.log.Error("direct routing: node not on this node's L2 segment, its block skipped (use crossNode vxlan)",
					"network", n.Name, "via", r.Via.String(), "block", r.Dst.String(), "underlay", a.underDev)
				return true
			})
		}
		if prev, ok := a.appliedOverlays[n.Name]; ok && reflect.DeepEqual(prev, o) {
			continue
		}
		delete(a.appliedOverlays, n.Name)
		if err := a.node.SyncOverlay(o); err != nil {
			errs = append(errs, err)
			continue
		}
		a.appliedOverlays[n.Name] = o
	}
	errs = append(errs, a.syncLearned(outside))
	return errors.Join(errs...)
}

// networkTables is a network's part of the nftables tables on this node.
func (a *Agent) networkTables(n api.Network) nft.Network {
	return driver.NetworkTables(n, a.underDev)
}

// mine reports whether ep lives on this node: on a shared store, an endpoint records
// its node; on a store of one node every endpoint is this node's.
func (a *Agent) mine(ep api.Endpoint) bool {
	return !a.shared || ep.Node == a.nodeName || ep.Node == ""
}

// crossNodeDefaults completes a network spec for this node: the cluster's default data
// path, and for vxlan the MTU the underlay leaves (an explicit larger one is refused).
func (a *Agent) crossNodeDefaults(s api.NetworkSpec) (api.NetworkSpec, error) {
	if s.CrossNode == "" {
		s.CrossNode = a.defaultCrossNode
	}
	if s.CrossNode == "" {
		return s, nil
	}
	if !a.nodeIP.IsValid() {
		return s, api.Errorf(api.CodeInvalidConfig, "network %q: crossNode %s needs the node's underlay address (start the agent with --node-ip)", s.Name, s.CrossNode)
	}
	if s.CrossNode != api.CrossNodeVXLAN && a.nodeIP.Is4() {
		// An IPv6 route takes no IPv4 next hop, and a BGP route for an IPv6 prefix
		// needs an IPv6 one: only vxlan carries IPv6 blocks between IPv4 nodes.
		for _, sub := range s.Subnets {
			if p, err := netip.ParsePrefix(sub); err == nil && p.Addr().Is6() {
				return s, api.AsError(api.Invalid(fmt.Sprintf("network %q", s.Name), "subnet", sub,
					"crossNode %s cannot route IPv6 blocks between nodes with IPv4 addresses (this node's is %s): use crossNode vxlan", s.CrossNode, a.nodeIP))
			}
		}
	}
	if s.CrossNode == api.CrossNodeVXLAN {
		limit := a.underMTU - api.VXLANOverhead
		switch {
		case s.MTU == 0:
			s.MTU = limit
		case s.MTU > limit:
			return s, api.AsError(api.Invalid(fmt.Sprintf("network %q", s.Name), "mtu", fmt.Sprint(s.MTU),
				"larger than the underlay %s allows through VXLAN: %d (its MTU %d - %d)", a.underDev, limit, a.underMTU, api.VXLANOverhead))
		}
	}
	return s, nil
}

// checkVNI refuses a vxlan network whose VNI another network has (in tx).
func checkVNI(tx store.Tx, n api.Network) error {
	if n.CrossNode != api.CrossNodeVXLAN {
		return nil
	}
	nets, err := tx.Networks()
	if err != nil {
		return err
	}
	for _, o := range nets {
		if o.Name != n.Name && o.CrossNode == api.CrossNodeVXLAN && o.VNI == n.VNI {
			return api.AsError(api.Invalid(fmt.Sprintf("network %q", n.Name), "vni", fmt.Sprint(n.VNI), "network %q has it already", o.Name))
		}
	}
	return nil
}

// Nodes lists the cluster's nodes, alive or not, with their blocks.
func (a *Agent) Nodes() ([]api.NodeInfo, error) {
	v, err := a.readCluster()
	if err != nil {
		return nil, err
	}
	out := make([]api.NodeInfo, 0, len(v.nodes))
	for _, n := range v.nodes {
		info := api.NodeInfo{Node: n, Blocks: map[string][]netip.Prefix{}}
		for _, b := range v.blocks {
			if b.Node == n.Name {
				info.Blocks[b.Network] = append(info.Blocks[b.Network], b.Prefix)
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// RemoveNode force-releases a dead node: its record and its blocks, with the addresses
// its endpoints held and their records. A live node is refused.
func (a *Agent) RemoveNode(name string) error {
	alive, err := a.store.Alive()
	if err != nil {
		return err
	}
	if alive[name] {
		return api.Errorf(api.CodeBusy, "node %q is alive (its agent holds its lease): stop its agent first", name)
	}
	err = a.store.Update(func(tx store.Tx) error {
		if _, ok, err := tx.Node(name); err != nil {
			return err
		} else if !ok {
			return api.Errorf(api.CodeNotFound, "node %q does not exist", name)
		}
		eps, err := tx.Endpoints("")
		if err != nil {
			return err
		}
		for _, ep := range eps {
			if ep.Node != name {
				continue
			}
			for _, ip := range ep.IPs {
				if err := tx.DeleteAllocation(ep.Network, ip.Addr()); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
			for _, m := range ep.Ports {
				if err := tx.DeletePort(name, m.Protocol, m.HostIP, m.HostPort); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
			if err := tx.DeleteEndpoint(ep.EndpointKey); err != nil {
				return err
			}
		}
		if err := releaseTunnels(tx, name); err != nil {
			return err
		}
		blocks, err := tx.Blocks("")
		if err != nil {
			return err
		}
		for _, b := range blocks {
			if b.Node == name {
				if err := tx.DeleteBlock(b.Network, b.Prefix); err != nil {
					return err
				}
			}
		}
		return tx.DeleteNode(name)
	})
	if err == nil {
		a.log.Info("node removed", "node", name)
	}
	return err
}
