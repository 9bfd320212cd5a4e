package agent

import (
	"errors"
	"fmt"
	"slices"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// CreateNetwork validates a spec, refuses overlaps, and creates the network's store
// record, bridge and rules; on failure nothing is left.
func (a *Agent) CreateNetwork(s api.NetworkSpec) (api.Network, error) {
	s, err := a.crossNodeDefaults(s)
	if err != nil {
		return api.Network{}, err
	}
	n, err := spec.Canonicalize(s)
	if err != nil {
		return api.Network{}, invalidConfig(err)
	}
	a.netMu.Lock()
	defer a.netMu.Unlock()
	return a.createNetworkLocked(n)
}

func (a *Agent) createNetworkLocked(n api.Network) (api.Network, error) {
	var others []api.Network
	err := a.store.View(func(tx store.Tx) error {
		_, ok, err := tx.Network(n.Name)
		if err != nil {
			return err
		}
		if ok {
			return api.Errorf(api.CodeInvalidConfig, "network %q already exists", n.Name)
		}
		others, err = tx.Networks()
		return err
	})
	if err != nil {
		return api.Network{}, err
	}
	routes, err := a.node.Routes()
	if err != nil {
		return api.Network{}, err
	}
	own := map[string]bool{}
	for _, o := range others {
		own[o.Bridge] = true
	}
	if err := spec.CheckOverlap(n, others, routes, own); err != nil {
		return api.Network{}, invalidConfig(err)
	}
	if n.Bridge != "" {
		if exists, err := a.node.LinkExists(n.Bridge); err != nil {
			return api.Network{}, err
		} else if exists {
			return api.Network{}, api.Errorf(api.CodeInvalidConfig, "network %q: interface %s already exists on the node", n.Name, n.Bridge)
		}
	}
	n.Created = a.created()
	err = a.store.Update(func(tx store.Tx) error {
		if _, ok, err := tx.Network(n.Name); err != nil {
			return err
		} else if ok { // created on another node meanwhile
			return api.Errorf(api.CodeInvalidConfig, "network %q already exists", n.Name)
		}
		if err := checkVNI(tx, n); err != nil {
			return err
		}
		return tx.PutNetwork(n)
	})
	if ae := (*api.Error)(nil); errors.As(err, &ae) {
		return api.Network{}, err
	}
	if err != nil {
		return api.Network{}, fmt.Errorf("store network %q: %w", n.Name, err)
	}
	if err := a.applyNetworkLocked(n); err != nil {
		if n.Bridge != "" {
			_ = a.node.DeleteLink(n.Bridge)
		}
		_ = a.store.Update(func(tx store.Tx) error { return tx.DeleteNetwork(n.Name) })
		_ = a.nftUpdate(nft.Delta{}, nft.Delta{Networks: []nft.Network{a.networkTables(n)}})
		return api.Network{}, err
	}
	a.log.Info("network created", "network", n.Name, "bridge", n.Bridge, "subnets", subnetStrings(n))
	return n, nil
}

// applyNetworkLocked sets up what a network needs in the node: its bridge, or for a
// routed network what lets the node answer the sandboxes' gateway; and the elements of
// its subnets in the nftables sets (an update of those elements only: its cost does not
// grow with the number of networks, endpoints or services).
func (a *Agent) applyNetworkLocked(n api.Network) error {
	if err := a.ensureNetworkKernel(n); err != nil {
		return err
	}
	if n.CrossNode != "" {
		nets, err := a.Networks()
		if err != nil {
			return err
		}
		if err := a.syncOverlays(nets); err != nil {
			return err
		}
	}
	return a.nftNetworkUpdate(nft.Delta{Networks: []nft.Network{a.networkTables(n)}}, nft.Delta{})
}

// nftNetworkUpdate adds or removes networks' elements; when the tables are missing
// (deleted behind podnet's back) it writes the whole desired state instead.
func (a *Agent) nftNetworkUpdate(add, remove nft.Delta) error {
	err := a.nftUpdate(add, remove)
	if errors.Is(err, nft.ErrNoTable) {
		return a.syncRuleset()
	}
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

func (a *Agent) ensureNetworkKernel(n api.Network) error {
	np := driver.NetworkFor(n)
	if np.RoutedGateway {
		if err := a.node.EnsureRoutedGateway(); err != nil {
			return err
		}
	}
	return a.node.EnsureBridge(np.Bridge)
}

// syncRuleset writes the whole desired nftables state in one batch.
func (a *Agent) syncRuleset() error {
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	return a.syncRulesetLocked(false, false)
}

// ensureNetwork returns the network name, creating it from def when missing; an
// existing network must agree with def.
func (a *Agent) ensureNetwork(name string, def *api.NetworkSpec) error {
	if def == nil {
		return nil
	}
	if def.Name == "" {
		def.Name = name
	}
	if def.Name != name {
		return api.Errorf(api.CodeInvalidConfig, "network %q: definition names network %q", name, def.Name)
	}
	n, ok, err := a.lookupNetwork(name)
	if err != nil {
		return err
	}
	if ok {
		return invalidConfig(spec.Agrees(n, *def))
	}
	full, err := a.crossNodeDefaults(*def)
	if err != nil {
		return err
	}
	want, err := spec.Canonicalize(full)
	if err != nil {
		return invalidConfig(err)
	}
	a.netMu.Lock()
	defer a.netMu.Unlock()
	if n, ok, err := a.lookupNetwork(name); err != nil {
		return err
	} else if ok { // created meanwhile
		return invalidConfig(spec.Agrees(n, *def))
	}
	_, err = a.createNetworkLocked(want)
	return err
}

func (a *Agent) lookupNetwork(name string) (n api.Network, ok bool, err error) {
	err = a.store.View(func(tx store.Tx) error {
		n, ok, err = tx.Network(name)
		return err
	})
	return n, ok, err
}

// Network returns one network.
func (a *Agent) Network(name string) (api.Network, error) {
	n, ok, err := a.lookupNetwork(name)
	if err != nil {
		return n, err
	}
	if !ok {
		return n, notFoundNetwork(name)
	}
	return n, nil
}

// Networks lists all networks.
func (a *Agent) Networks() (ns []api.Network, err error) {
	err = a.store.View(func(tx store.Tx) error {
		ns, err = tx.Networks()
		return err
	})
	return ns, err
}

// Endpoints lists this node's attachments of one network or of all ("").
func (a *Agent) Endpoints(network string) ([]api.Endpoint, error) {
	eps, err := a.AllEndpoints(network)
	return slices.DeleteFunc(eps, func(ep api.Endpoint) bool { return !a.mine(ep) }), err
}

// AllEndpoints lists the endpoints of one network, or of all, on every node of the
// cluster.
func (a *Agent) AllEndpoints(network string) (eps []api.Endpoint, err error) {
	err = a.store.View(func(tx store.Tx) error {
		eps, err = tx.Endpoints(network)
		return err
	})
	return eps, err
}

// DeleteNetwork removes a network without endpoints, its bridge and its rules.
func (a *Agent) DeleteNetwork(name string) error {
	a.netMu.Lock()
	defer a.netMu.Unlock()
	eps, err := a.Endpoints(name)
	if err != nil {
		return err
	}
	for _, ep := range eps {
		unlock := a.lockEndpoint(ep.EndpointKey)
		err := a.finishDetachLocked(ep.EndpointKey)
		unlock()
		if err != nil {
			return err
		}
	}
	var n api.Network
	err = a.store.Update(func(tx store.Tx) error {
		var ok bool
		var err error
		if n, ok, err = tx.Network(name); err != nil {
			return err
		} else if !ok {
			return notFoundNetwork(name)
		}
		eps, err := tx.Endpoints(name)
		if err != nil {
			return err
		}
		if len(eps) > 0 {
			return api.Errorf(api.CodeBusy, "network %q has %d endpoint(s) attached (first: container %s); detach them first", name, len(eps), eps[0].ContainerID)
		}
		return tx.DeleteNetwork(name)
	})
	if err != nil {
		return err
	}
	if err := a.nftNetworkUpdate(nft.Delta{}, nft.Delta{Networks: []nft.Network{a.networkTables(n)}}); err != nil {
		return err
	}
	if n.Bridge != "" {
		if err := a.node.DeleteLink(n.Bridge); err != nil {
			return err
		}
	}
	if n.Driver == api.DriverRouted {
		nets, err := a.Networks()
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(nets, func(o api.Network) bool { return o.Driver == api.DriverRouted }) {
			if err := a.node.RemoveRoutedGateway(); err != nil {
				return err
			}
		}
	}
	a.log.Info("network removed", "network", name)
	return nil
}

func subnetStrings(n api.Network) []string {
	var out []string
	for _, s := range n.Subnets {
		out = append(out, s.Prefix.String())
	}
	return out
}

func notFoundNetwork(name string) error {
	return api.Errorf(api.CodeNotFound, "network %q does not exist", name)
}
