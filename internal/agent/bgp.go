package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/bgp"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/store"
)

// The bgp cross-node mode.
//
// While the store holds a network of crossNode bgp, the agent runs a BGP speaker
// (internal/bgp) in the process's network namespace, which must be the node's: GoBGP
// opens its sockets from goroutines of its own. The cluster's BGP settings and peers
// live in the store (BGPConfig, BGPPeers), so `podnet bgp config` and `podnet bgp peer`
// on any node reach every node. On every cross-node sync (syncOverlays: a store change,
// reconcile, a network created) the speaker is brought to the desired state:
//   - its AS is the cluster's (api.DefaultASN until configured): a change restarts it;
//   - its peers are the other live nodes (the node mesh, unless turned off) and the
//     configured peers that are for every node or for this one;
//   - it advertises this node's blocks of the bgp networks, next hop the node's address.
//
// Routes it learns go into the kernel: those inside a bgp network's subnets with the
// network's overlay routes (kernel RouteProtocol), the others (a router's networks)
// as learned routes (kernel LearnedProtocol), except prefixes that overlap a pod network
// or a service range of this node. A learned next hop must be on the node's L2 segment.
// When the speaker's routes change, clusterLoop syncs the overlays at once.

// bgpConnectRetry is how long the speaker waits before it dials a peer again. (After
// a session went down, GoBGP holds the peer idle for a fixed 5 s first.)
const bgpConnectRetry = time.Second

// bgpState is the agent's speaker; its fields are guarded by mu.
type bgpState struct {
	mu sync.Mutex
	sp *bgp.Speaker
	// asn is the AS the speaker runs with; stop ends it and its watch.
	asn  uint32
	stop context.CancelFunc
	done chan struct{} // closed when the watch goroutine ended
	// learned is what the speaker learned last; mesh are the addresses of the peers
	// that are nodes.
	learned []bgp.Route
	mesh    map[netip.Addr]bool
	// installed: learned routes may be in the kernel (SyncLearnedRoutes must clear them
	// once the speaker stops).
	installed bool
}

// bgpSettings reads the cluster's BGP configuration, defaulted.
func bgpSettings(tx store.Tx) (api.BGPConfig, []api.BGPPeer, error) {
	c, ok, err := tx.BGPConfig()
	if err != nil {
		return c, nil, err
	}
	if !ok {
		c = api.BGPConfig{ASN: api.DefaultASN, NodeMesh: true}
	}
	peers, err := tx.BGPPeers()
	return c, peers, err
}

// syncBGP runs, reconfigures or stops the speaker for nets and the cluster view v, and
// returns the routes to install: those of each bgp network, by network, and the learned
// routes outside the pod networks (the caller holds netMu).
func (a *Agent) syncBGP(nets []api.Network, v clusterView) (byNet map[string][]plan.OverlayRoute, outside []plan.OverlayRoute, err error) {
	var bgpNets []api.Network
	for _, n := range nets {
		if n.CrossNode == api.CrossNodeBGP {
			bgpNets = append(bgpNets, n)
		}
	}
	if len(bgpNets) == 0 {
		a.stopBGP()
		return nil, nil, nil
	}
	var cfg api.BGPConfig
	var peers []api.BGPPeer
	if err := a.store.View(func(tx store.Tx) error {
		cfg, peers, err = bgpSettings(tx)
		return err
	}); err != nil {
		return nil, nil, err
	}
	sp, err := a.startBGP(cfg.ASN)
	if err != nil {
		return nil, nil, err
	}

	var desired []bgp.Peer
	mesh := map[netip.Addr]bool{}
	if cfg.NodeMesh {
		for _, n := range v.nodes {
			if n.Name != a.nodeName && n.Alive && n.IP.IsValid() {
				// One side of each pair dials, the node with the lower address: when
				// both do, GoBGP's collision handling and its fixed 5 s idle time after a
				// failed attempt can keep a restarted node's sessions down for a long
				// while, each side refusing the other's attempts in turn.
				desired = append(desired, bgp.Peer{Name: n.Name, Address: n.IP, ASN: cfg.ASN, Passive: n.IP.Less(a.nodeIP)})
				mesh[n.IP] = true
			}
		}
	}
	for _, p := range peers {
		if (p.Node == "" || p.Node == a.nodeName) && !mesh[p.Address] {
			desired = append(desired, bgp.Peer{Name: p.Name, Address: p.Address, ASN: p.ASN})
		}
	}
	var errs []error
	if err := sp.SetPeers(desired); err != nil {
		errs = append(errs, err)
	}

	var own []bgp.Route
	for _, b := range v.blocks {
		if b.Node == a.nodeName && slices.ContainsFunc(bgpNets, func(n api.Network) bool { return n.Name == b.Network }) {
			if b.Prefix.Addr().Is4() != a.nodeIP.Is4() {
				continue // BGP next hops are of the prefix's family: IPv6 blocks need an IPv6 node address
			}
			own = append(own, bgp.Route{Prefix: b.Prefix, NextHop: a.nodeIP})
		}
	}
	if err := sp.Advertise(own); err != nil {
		errs = append(errs, err)
	}

	a.bgp.mu.Lock()
	a.bgp.mesh = mesh
	learned := slices.Clone(a.bgp.learned)
	a.bgp.installed = true
	a.bgp.mu.Unlock()

	byNet = map[string][]plan.OverlayRoute{}
	for _, r := range learned {
		dev, ok, err := a.node.OnLink(r.NextHop)
		if err != nil || !ok {
			a.log.Error("bgp: next hop not on this node's L2 segment, route skipped", "prefix", r.Prefix.String(), "via", r.NextHop.String(), "peer", r.Peer, "err", err)
			continue
		}
		route := plan.OverlayRoute{Dst: r.Prefix, Via: r.NextHop, Dev: dev}
		i := slices.IndexFunc(bgpNets, func(n api.Network) bool {
			return slices.ContainsFunc(n.Subnets, func(s api.Subnet) bool { return s.Prefix.Overlaps(r.Prefix) })
		})
		switch {
		case i >= 0 && slices.ContainsFunc(bgpNets[i].Subnets, func(s api.Subnet) bool {
			return s.Prefix.Bits() <= r.Prefix.Bits() && s.Prefix.Contains(r.Prefix.Addr())
		}):
			byNet[bgpNets[i].Name] = append(byNet[bgpNets[i].Name], route)
		case a.reservedForPods(nets, r.Prefix):
			a.log.Warn("bgp: learned route overlaps a pod network or the service range of this node, not installed", "prefix", r.Prefix.String(), "peer", r.Peer)
		default:
			outside = append(outside, route)
		}
	}
	return byNet, outside, errors.Join(errs...)
}

// reservedForPods reports whether p overlaps a subnet of a network or a service range.
func (a *Agent) reservedForPods(nets []api.Network, p netip.Prefix) bool {
	for _, n := range nets {
		for _, s := range n.Subnets {
			if s.Prefix.Overlaps(p) {
				return true
			}
		}
	}
	return slices.ContainsFunc(a.serviceCIDRs, p.Overlaps)
}

// startBGP returns the running speaker, started (or restarted, when the cluster's AS
// changed) as needed.
func (a *Agent) startBGP(asn uint32) (*bgp.Speaker, error) {
	a.bgp.mu.Lock()
	sp, running := a.bgp.sp, a.bgp.asn
	a.bgp.mu.Unlock()
	if sp != nil && running == asn {
		return sp, nil
	}
	a.stopBGP()
	if !a.nodeIP.Is4() {
		return nil, fmt.Errorf("bgp: the node's address %s is not IPv4: BGP needs an IPv4 router ID (--node-ip)", a.nodeIP)
	}
	if a.nodeNS > 0 {
		self, err := netns.GetFromPath("/proc/self/ns/net")
		if err != nil {
			return nil, fmt.Errorf("bgp: %w", err)
		}
		same := self.Equal(a.nodeNS)
		self.Close()
		if !same {
			return nil, fmt.Errorf("bgp: the speaker's sockets live in the agent's own network namespace, not in the node's (%s): run the agent inside the node's namespace for bgp networks", a.nsPath)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	// A peer that does not answer is dialled again after a second, not GoBGP's 5.
	sp, err := bgp.Start(ctx, bgp.Config{ASN: asn, RouterID: a.nodeIP, ListenPort: a.bgpPort, ConnectRetry: bgpConnectRetry,
		Logger: a.log.With("component", "bgp")})
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan struct{})
	a.bgp.mu.Lock()
	a.bgp.sp, a.bgp.asn, a.bgp.stop, a.bgp.done = sp, asn, cancel, done
	a.bgp.mu.Unlock()
	a.log.Info("bgp speaker started", "asn", asn, "router-id", a.nodeIP.String())
	go func() {
		defer close(done)
		err := sp.Watch(ctx, func(routes []bgp.Route) {
			a.bgp.mu.Lock()
			a.bgp.learned = routes
			a.bgp.mu.Unlock()
			a.clusterChanged() // clusterLoop installs them; never waits (stopBGP waits for this watch under netMu)
		})
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, bgp.ErrStopped) {
			a.log.Error("bgp watch", "err", err)
		}
	}()
	return sp, nil
}

// stopBGP stops the speaker, if it runs, and forgets what it learned.
func (a *Agent) stopBGP() {
	a.bgp.mu.Lock()
	stop, done := a.bgp.stop, a.bgp.done
	a.bgp.sp, a.bgp.asn, a.bgp.stop, a.bgp.done, a.bgp.learned, a.bgp.mesh = nil, 0, nil, nil, nil, nil
	a.bgp.mu.Unlock()
	if stop != nil {
		stop()
		<-done
		a.log.Info("bgp speaker stopped")
	}
}

// syncLearned installs the learned routes outside the pod networks, and removes them
// once the speaker stopped (the caller holds netMu).
func (a *Agent) syncLearned(outside []plan.OverlayRoute) error {
	a.bgp.mu.Lock()
	running, installed := a.bgp.sp != nil, a.bgp.installed
	if !running {
		a.bgp.installed = false
	}
	a.bgp.mu.Unlock()
	if !running && !installed {
		return nil
	}
	return a.node.SyncLearnedRoutes(outside)
}

// BGPStatus lists the sessions of this node's speaker (none while no network uses bgp).
func (a *Agent) BGPStatus() ([]api.BGPSession, error) {
	a.bgp.mu.Lock()
	sp, mesh := a.bgp.sp, a.bgp.mesh
	a.bgp.mu.Unlock()
	out := []api.BGPSession{}
	if sp == nil {
		return out, nil
	}
	sessions, err := sp.Sessions()
	if errors.Is(err, bgp.ErrStopped) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, s := range sessions {
		out = append(out, api.BGPSession{Node: a.nodeName, Peer: s.Peer.Name, Address: s.Peer.Address, ASN: s.Peer.ASN,
			Mesh: mesh[s.Peer.Address], State: s.State, UptimeSeconds: int64(s.Uptime.Seconds()),
			Received: s.Received, Advertised: s.Advertised})
	}
	return out, nil
}

// BGPConfig returns the cluster's BGP settings (the defaults until configured).
func (a *Agent) BGPConfig() (c api.BGPConfig, err error) {
	err = a.store.View(func(tx store.Tx) error {
		c, _, err = bgpSettings(tx)
		return err
	})
	return c, err
}

// SetBGPConfig changes the cluster's AS, and the node mesh when req says.
func (a *Agent) SetBGPConfig(req api.BGPConfigRequest) (c api.BGPConfig, err error) {
	if req.ASN == 0 {
		return c, api.AsError(api.Invalid("bgp config", "asn", "0", "must be 1 to 4294967295"))
	}
	err = a.store.Update(func(tx store.Tx) error {
		if c, _, err = bgpSettings(tx); err != nil {
			return err
		}
		c.ASN = req.ASN
		if req.NodeMesh != nil {
			c.NodeMesh = *req.NodeMesh
		}
		return tx.PutBGPConfig(c)
	})
	if err == nil {
		a.log.Info("bgp config set", "asn", c.ASN, "node-mesh", c.NodeMesh)
		a.clusterChanged()
	}
	return c, err
}

// BGPPeers lists the configured peers.
func (a *Agent) BGPPeers() (peers []api.BGPPeer, err error) {
	err = a.store.View(func(tx store.Tx) error {
		peers, err = tx.BGPPeers()
		return err
	})
	if peers == nil {
		peers = []api.BGPPeer{}
	}
	return peers, err
}

// AddBGPPeer records a peer; a name or, for an overlapping set of nodes, an address that
// another peer has is refused, as is a node's own address (the mesh has it).
func (a *Agent) AddBGPPeer(p api.BGPPeer) (api.BGPPeer, error) {
	obj := fmt.Sprintf("bgp peer %q", p.Name)
	switch {
	case api.CheckNetworkName(p.Name) != nil:
		return p, api.AsError(api.Invalid("bgp peer", "name", p.Name, "%v", api.CheckNetworkName(p.Name)))
	case !p.Address.IsValid():
		return p, api.AsError(api.Missing(obj, "address"))
	case p.Address.Zone() != "" || p.Address.IsUnspecified() || p.Address.IsMulticast() || p.Address.IsLoopback():
		return p, api.AsError(api.Invalid(obj, "address", p.Address.String(), "want a unicast address without zone"))
	case p.ASN == 0:
		return p, api.AsError(api.Invalid(obj, "asn", "0", "must be 1 to 4294967295"))
	}
	p.Address = p.Address.Unmap()
	err := a.store.Update(func(tx store.Tx) error {
		if _, ok, err := tx.BGPPeer(p.Name); err != nil {
			return err
		} else if ok {
			return api.Errorf(api.CodeInvalidConfig, "bgp peer %q already exists (rm it first)", p.Name)
		}
		nodes, err := tx.Nodes()
		if err != nil {
			return err
		}
		if p.Node != "" && !slices.ContainsFunc(nodes, func(n api.Node) bool { return n.Name == p.Node }) {
			return api.AsError(api.Invalid(obj, "node", p.Node, "no such node (see podnet node ls)"))
		}
		for _, n := range nodes {
			if n.IP == p.Address {
				return api.AsError(api.Invalid(obj, "address", p.Address.String(), "is node %q: nodes peer with each other through the node mesh", n.Name))
			}
		}
		peers, err := tx.BGPPeers()
		if err != nil {
			return err
		}
		for _, o := range peers {
			if o.Address == p.Address && (o.Node == "" || p.Node == "" || o.Node == p.Node) {
				return api.AsError(api.Invalid(obj, "address", p.Address.String(), "peer %q has it already", o.Name))
			}
		}
		return tx.PutBGPPeer(p)
	})
	if err == nil {
		a.log.Info("bgp peer added", "peer", p.Name, "address", p.Address.String(), "asn", p.ASN, "node", p.Node)
		a.clusterChanged()
	}
	return p, err
}

// RemoveBGPPeer removes a configured peer.
func (a *Agent) RemoveBGPPeer(name string) error {
	err := a.store.Update(func(tx store.Tx) error {
		err := tx.DeleteBGPPeer(name)
		if errors.Is(err, store.ErrNotFound) {
			return api.Errorf(api.CodeNotFound, "bgp peer %q does not exist", name)
		}
		return err
	})
	if err == nil {
		a.log.Info("bgp peer removed", "peer", name)
		a.clusterChanged()
	}
	return err
}
