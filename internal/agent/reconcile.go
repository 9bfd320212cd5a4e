package agent

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
)

// Reconcile makes the kernel agree with the store: bridges and rules of every network
// exist, endpoints whose veth vanished (their sandbox is gone) are released, host veths
// without a record are removed, and the node side of every attached endpoint is
// repaired where it drifted from its plan (repairEndpoints). At startup (no request can
// be in flight) endpoints cut off mid-attach by a crash are rolled back too. Calling it again when everything
// agrees changes nothing.
func (a *Agent) Reconcile(startup bool) (err error) {
	start := time.Now()
	defer func() {
		result := "ok"
		if err != nil {
			result = "error"
		}
		a.metrics.reconciles.WithLabelValues(result).Inc()
		a.metrics.reconcileSecond.Observe(time.Since(start).Seconds())
	}()
	return a.reconcile(startup)
}

func (a *Agent) reconcile(startup bool) error {
	a.netMu.Lock()
	nets, err := a.Networks()
	if err == nil {
		for _, n := range nets {
			if err = a.ensureNetworkKernel(n); err != nil {
				break
			}
		}
	}
	if err == nil && a.hasPolicies() {
		err = a.node.BridgeNetfilter(true) // set back if someone turned it off
	}
	if err == nil {
		err = a.reconcileDataplane(startup)
	}
	if err == nil {
		err = a.syncOverlays(nets)
	}
	a.netMu.Unlock()
	if err != nil {
		return err
	}
	// Links first: a veth that exists now had its record committed before (Attach
	// records the endpoint before creating the veth).
	links, err := a.node.LinksWithPrefix(spec.VethPrefix)
	if err != nil {
		return err
	}
	eps, err := a.Endpoints("")
	if err != nil {
		return err
	}
	eps = slices.DeleteFunc(eps, func(ep api.Endpoint) bool { return !a.mine(ep) })
	known := map[string]bool{}
	for _, ep := range eps {
		known[ep.HostIf] = true
		if ep.State == api.StateAttaching && startup {
			complete, err := a.node.EndpointComplete(ep.HostIf)
			if err != nil {
				return err
			}
			if complete {
				if err := a.markAttached(ep.EndpointKey); err != nil {
					return err
				}
				ep.State = api.StateAttached
			}
		}
		switch {
		case ep.State == api.StateAttaching && startup:
			a.log.Info("rolling back interrupted attach", "endpoint", ep.EndpointKey.String())
			a.metrics.repairs.WithLabelValues("attach-rolled-back").Inc()
		case ep.State == api.StateDetaching && startup:
			a.log.Info("finishing interrupted detach", "endpoint", ep.EndpointKey.String())
			a.metrics.repairs.WithLabelValues("detach-finished").Inc()
		case ep.State == api.StateAttached && links[ep.HostIf] == 0:
			a.log.Info("releasing endpoint whose interface is gone", "endpoint", ep.EndpointKey.String(), "hostIf", ep.HostIf)
			a.metrics.repairs.WithLabelValues("endpoint-gone").Inc()
		default:
			continue
		}
		unlock := a.lockEndpoint(ep.EndpointKey)
		if ep.State == api.StateAttached {
			// The links were listed before the records were read: an attach that
			// finished in between has its veth although the list lacks it. Under the
			// endpoint's lock no attach is in flight; look again.
			if now, err := a.node.LinksWithPrefix(ep.HostIf); err != nil || now[ep.HostIf] != 0 {
				unlock()
				if err != nil {
					return err
				}
				continue
			}
		}
		err = a.detachLocked(ep.EndpointKey)
		unlock()
		if err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(links)) {
		if index := links[name]; !known[name] {
			// By index: a new endpoint of the same key may have reused the name since.
			a.log.Info("removing orphan veth", "hostIf", name)
			a.metrics.repairs.WithLabelValues("orphan-veth").Inc()
			if err := a.node.DeleteLinkIndex(index); err != nil {
				return err
			}
		}
	}
	// Now that the bridges exist again: ports, routes, neighbours, sysctls.
	if err := a.repairEndpoints(eps, links); err != nil {
		return err
	}
	return a.releaseOrphanAllocations()
}

// Run reconciles periodically until ctx ends.
func (a *Agent) Run(ctx context.Context) {
	t := time.NewTicker(a.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.node.EnableForwarding(); err != nil {
				a.log.Error("enable forwarding", "err", err)
			}
			if err := a.Reconcile(false); err != nil {
				a.log.Error("reconcile", "err", err)
			}
		}
	}
}
