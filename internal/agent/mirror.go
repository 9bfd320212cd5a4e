package agent

import (
	"slices"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/dns"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/mirror"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/store"
)

// Mirror applies the changes of a source (podnet controller feeding a node of its own
// through the socket) in one transaction, then brings the tables, the policies and DNS
// up to date. A request of services only (a Service or EndpointSlice changed, the usual
// case) changes those services' elements, as CreateService does, without deriving the
// whole ruleset, and those services' DNS records; anything else syncs the tables with
// the store and rebuilds DNS.
func (a *Agent) Mirror(req api.MirrorRequest) (api.MirrorResult, error) {
	servicesOnly := !slices.ContainsFunc(req.Changes, func(c api.MirrorChange) bool { return c.Kind != api.KindService })
	var before []nft.Service
	if servicesOnly {
		before = a.serviceTablesOf(req.Changes)
	}
	var res mirror.Result
	err := a.store.Update(func(tx store.Tx) (err error) {
		res, err = mirror.Apply(tx, req, a.created())
		return err
	})
	if err != nil {
		return api.MirrorResult{}, err
	}
	switch {
	case !res.Changed:
	case servicesOnly:
		a.dpMu.Lock()
		add, remove := serviceChanges(before, a.serviceTablesOf(req.Changes))
		if err := a.servicesUpdateLocked(add, remove); err != nil {
			a.log.Error("nftables: mirrored services", "err", err)
		}
		a.dpMu.Unlock()
		a.refreshDNSServices(serviceNames(req.Changes)...)
	default:
		a.policyInputsChanged()
		a.refreshDNS()
	}
	return api.MirrorResult{Errors: res.Errors}, nil
}

// serviceTablesOf is the nftables content of the services the changes name, as the
// store holds them now.
func (a *Agent) serviceTablesOf(changes []api.MirrorChange) []nft.Service {
	var out []nft.Service
	for _, c := range changes {
		if svc, err := a.Service(c.Namespace, c.Name); err == nil {
			out = append(out, driver.ServiceTables(svc, a.clusterNode())...)
		}
	}
	return out
}

// serviceNames are the services the changes name (in the namespace the store files
// them under, as Service reads them).
func serviceNames(changes []api.MirrorChange) []dns.ServiceName {
	out := make([]dns.ServiceName, 0, len(changes))
	for _, c := range changes {
		ns := c.Namespace
		if ns == "" {
			ns = api.DefaultNamespace
		}
		out = append(out, dns.ServiceName{Namespace: ns, Name: c.Name})
	}
	return out
}

// MirrorInventory lists the objects of a source the store holds.
func (a *Agent) MirrorInventory(source string) (inv api.MirrorInventory, err error) {
	err = a.store.View(func(tx store.Tx) error {
		inv.Keys, err = mirror.Inventory(tx, source)
		return err
	})
	return inv, err
}
