package agent

import (
	"errors"
	"fmt"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/store"
)

// repairEndpoints restores the node side of every attached endpoint whose host veth
// exists (links: the host veths Reconcile listed, name to index) as its plan says:
// bridge port, up, MTU, node routes, neighbour entries, sysctls (see
// kernel.Node.RepairEndpoint). Networks and bridges must be ensured first: a bridge
// deleted by hand comes back empty, and this puts its ports back. Each repair is
// logged at Info. A failure to repair one endpoint is logged and does not stop the
// others; the error returned is a store failure.
func (a *Agent) repairEndpoints(eps []api.Endpoint, links map[string]int) error {
	for _, ep := range eps {
		if links[ep.HostIf] == 0 {
			continue // gone: Reconcile released it
		}
		if err := a.repairEndpoint(ep.EndpointKey); err != nil {
			return err
		}
	}
	return nil
}

// repairEndpoint repairs one endpoint under its lock, if it is still recorded as
// attached: an ADD or DEL of it in flight (attaching, detaching) owns its kernel state.
// A kernel failure is logged; the error returned is the store's.
func (a *Agent) repairEndpoint(k api.EndpointKey) error {
	unlock := a.lockEndpoint(k)
	defer unlock()
	var n api.Network
	var ep api.Endpoint
	var found bool
	err := a.store.View(func(tx store.Tx) error {
		var err error
		if ep, found, err = tx.Endpoint(k); err != nil || !found || ep.State != api.StateAttached {
			return err
		}
		n, found, err = tx.Network(k.Network)
		return err
	})
	if err != nil {
		return fmt.Errorf("repair %s: %w", k, err)
	}
	if !found || ep.State != api.StateAttached {
		return nil
	}
	p := driver.EndpointFor(n, ep).Kernel
	repaired, err := a.node.RepairEndpoint(p)
	for _, r := range repaired {
		a.log.Info("repaired endpoint", "endpoint", k.String(), "hostIf", p.HostIf, "repair", r)
	}
	a.metrics.repaired(repaired)
	if err != nil && !errors.Is(err, kernel.ErrHostIfGone) { // gone: its sandbox went away meanwhile, the next Reconcile releases it
		a.log.Error("repair endpoint", "endpoint", k.String(), "hostIf", p.HostIf, "err", err)
	}
	return nil
}
