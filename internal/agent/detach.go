package agent

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// Detach removes an attachment (CNI DEL). The endpoint is marked detaching and the
// reply goes out at once; detachLoop then deletes the veth pair (which costs the kernel
// an RCU grace period, ~20 ms) and only after that releases the addresses, so an
// address is never handed out while its old interface still exists. Success when any
// or all of it is already gone.
func (a *Agent) Detach(req api.DetachRequest) error {
	if err := validateKey(req.EndpointKey); err != nil {
		return err
	}
	k := req.EndpointKey
	unlock := a.lockEndpoint(k)
	defer unlock()
	var ep api.Endpoint
	var n api.Network
	queued, marked := false, false
	err := a.store.Update(func(tx store.Tx) error {
		var ok bool
		var err error
		ep, ok, err = tx.Endpoint(k)
		if err != nil || !ok || ep.State == api.StateDetaching {
			queued = ok
			return err
		}
		if n, _, err = tx.Network(k.Network); err != nil {
			return err
		}
		ep.State = api.StateDetaching
		queued, marked = true, true
		return tx.PutEndpoint(ep)
	})
	if err != nil {
		return fmt.Errorf("detach %s: %w", k, err)
	}
	if !queued { // no record: remove a veth a crash may have left, synchronously
		return a.detachLocked(k)
	}
	if marked {
		a.setPending(k, true)
		// Published ports go at once: DEL removes exactly this endpoint's mappings
		// before it answers (the rest follows in detachLoop); so does its place among
		// the backends of services.
		a.unpublishPorts(driver.EndpointFor(n, ep))
		a.endpointChurn(ep)
	}
	select {
	case a.detachq <- k:
		return nil
	default: // queue full: do it now
		return a.detachLocked(k)
	}
}

// detachLoop finishes the detaches Detach queued.
func (a *Agent) detachLoop() {
	defer close(a.detachDone)
	for k := range a.detachq {
		unlock := a.lockEndpoint(k)
		if err := a.finishDetachLocked(k); err != nil {
			a.log.Error("detach", "endpoint", k.String(), "err", err)
		}
		unlock()
	}
}

// finishDetachLocked completes the detach of k if it is marked detaching.
func (a *Agent) finishDetachLocked(k api.EndpointKey) error {
	var ep api.Endpoint
	var ok bool
	err := a.store.View(func(tx store.Tx) (err error) {
		ep, ok, err = tx.Endpoint(k)
		return err
	})
	if err != nil || !ok || ep.State != api.StateDetaching {
		return err
	}
	return a.detachLocked(k)
}

// finishDetachesHolding finishes the detaches of endpoints (of any network) that still
// hold one of addrs or of the host ports of ports, so that what DEL released can be
// asked for at once. The caller holds no endpoint lock.
func (a *Agent) finishDetachesHolding(addrs []netip.Addr, ports []api.PortMapping) error {
	return a.finishDetachesWhere("", func(ep api.Endpoint) bool {
		return slices.ContainsFunc(ep.IPs, func(p netip.Prefix) bool { return slices.Contains(addrs, p.Addr()) }) ||
			slices.ContainsFunc(ep.Ports, func(m api.PortMapping) bool {
				_, _, clash := spec.PortConflict(m, portOwners(ports, m))
				return clash
			})
	})
}

// portOwners presents the requested mappings on m's protocol and port as an owner map
// for spec.PortConflict.
func portOwners(ports []api.PortMapping, m api.PortMapping) map[netip.Addr]string {
	owners := map[netip.Addr]string{}
	for _, r := range ports {
		if r.Protocol == m.Protocol && r.HostPort == m.HostPort {
			owners[r.HostIP] = "request"
		}
	}
	return owners
}

// finishDetachesOf finishes every pending detach of a network.
func (a *Agent) finishDetachesOf(network string) error {
	return a.finishDetachesWhere(network, func(api.Endpoint) bool { return true })
}

func (a *Agent) finishDetachesWhere(network string, match func(api.Endpoint) bool) error {
	a.pendingMu.Lock()
	var keys []api.EndpointKey
	for k := range a.pending {
		if network == "" || k.Network == network {
			keys = append(keys, k)
		}
	}
	a.pendingMu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	var eps []api.Endpoint
	err := a.store.View(func(tx store.Tx) error {
		for _, k := range keys {
			ep, ok, err := tx.Endpoint(k)
			if err != nil {
				return err
			}
			if ok {
				eps = append(eps, ep)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, ep := range eps {
		if ep.State != api.StateDetaching || !match(ep) {
			continue
		}
		unlock := a.lockEndpoint(ep.EndpointKey)
		err := a.finishDetachLocked(ep.EndpointKey)
		unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) setPending(k api.EndpointKey, on bool) {
	a.pendingMu.Lock()
	defer a.pendingMu.Unlock()
	if on {
		a.pending[k] = true
	} else {
		delete(a.pending, k)
	}
}

// detachLocked deletes the veth pair of k, then releases its addresses and record.
func (a *Agent) detachLocked(k api.EndpointKey) error {
	var ep api.Endpoint
	var n api.Network
	var ok bool
	err := a.store.View(func(tx store.Tx) (err error) {
		if ep, ok, err = tx.Endpoint(k); err != nil || !ok {
			return err
		}
		n, _, err = tx.Network(k.Network)
		return err
	})
	if err != nil {
		return fmt.Errorf("detach %s: %w", k, err)
	}
	if ok {
		// Detach removed the ports of an endpoint it marked detaching.
		a.unpublish(driver.EndpointFor(n, ep), ep.State != api.StateDetaching)
	}
	if err := a.node.DeleteLink(spec.HostVethName(k)); err != nil {
		return fmt.Errorf("detach %s: %w", k, err)
	}
	if err := a.forget(k); err != nil {
		return fmt.Errorf("detach %s: %w", k, err)
	}
	a.setPending(k, false)
	if ok && ep.State != api.StateDetaching { // GC, reconcile: services did not follow yet
		a.endpointChurn(ep)
	}
	a.log.Debug("detached", "endpoint", k.String())
	return nil
}
