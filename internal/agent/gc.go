package agent

import (
	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/store"
)

// GC detaches every endpoint of req.Network whose whole key (network, container ID,
// interface name) is not in req.Valid, then releases addresses whose owner has no
// endpoint record. A request without a network, or with a valid attachment that does
// not carry its whole key on that network, is refused with code 7 before anything is
// released (api.GCRequest.Validate).
//
// An empty Valid releases every endpoint of the network. CNI 1.1 (SPEC.md, "GC: Clean
// up any stale resources") defines cni.dev/valid-attachments as "the list of still
// valid attachments to this network", after which "the network plugin may then remove
// any resources related to attachments that do not exist in this set": with an empty
// set, none is still valid. A runtime whose last container of the network is gone sends
// that list (libcni may omit the key then; the plugin reads a missing key as empty, as
// libcni itself does: GC without a list DELs every attachment it has cached).
func (a *Agent) GC(req api.GCRequest) (api.GCResponse, error) {
	if err := req.Validate(); err != nil {
		return api.GCResponse{}, err
	}
	eps, err := a.Endpoints(req.Network)
	if err != nil {
		return api.GCResponse{}, err
	}
	var resp api.GCResponse
	for _, k := range staleAttachments(req.Network, eps, req.Valid) {
		unlock := a.lockEndpoint(k)
		err := a.detachLocked(k)
		unlock()
		if err != nil {
			return resp, err
		}
		resp.Released = append(resp.Released, k)
	}
	if err := a.releaseOrphanAllocations(); err != nil {
		return resp, err
	}
	if len(resp.Released) > 0 {
		a.log.Info("gc released endpoints", "network", req.Network, "count", len(resp.Released))
	}
	return resp, nil
}

// staleAttachments returns the keys of the endpoints of network that valid does not
// list, in the order of eps. Keys match whole: a valid attachment of another network
// protects nothing here, and an endpoint of another network is never stale here.
func staleAttachments(network string, eps []api.Endpoint, valid []api.EndpointKey) []api.EndpointKey {
	keep := make(map[api.EndpointKey]bool, len(valid))
	for _, k := range valid {
		keep[k] = true
	}
	var stale []api.EndpointKey
	for _, ep := range eps {
		if ep.Network == network && !keep[ep.EndpointKey] {
			stale = append(stale, ep.EndpointKey)
		}
	}
	return stale
}

// releaseOrphanAllocations frees addresses whose owner has no endpoint record (a node's
// tunnel addresses stay while the node has its record: tunnel.go).
func (a *Agent) releaseOrphanAllocations() error {
	return a.store.Update(func(tx store.Tx) error {
		nets, err := tx.Networks()
		if err != nil {
			return err
		}
		nodes, err := tx.Nodes()
		if err != nil {
			return err
		}
		known := map[string]bool{}
		for _, nd := range nodes {
			known[nd.Name] = true
		}
		for _, n := range nets {
			eps, err := tx.Endpoints(n.Name)
			if err != nil {
				return err
			}
			live := map[string]bool{}
			for _, ep := range eps {
				live[ep.EndpointKey.String()] = true
			}
			allocs, err := tx.Allocations(n.Name)
			if err != nil {
				return err
			}
			for addr, owner := range allocs {
				if !live[owner] && !known[tunnelNode(owner)] {
					a.log.Info("releasing orphan address", "network", n.Name, "address", addr, "owner", owner)
					if err := tx.DeleteAllocation(n.Name, addr); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}
