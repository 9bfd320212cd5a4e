package agent

import (
	"cmp"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/dns"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/mirror"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/store"
)

// Mirror applies the changes of a source (podnet controller feeding a node of its own
// through the socket) in one transaction, then brings the tables, the policies and DNS
// up to date with what changed: the elements of the services it names (as
// CreateService does, without deriving the whole ruleset) and their DNS records; the
// policies it names, the namespaces it relabels and the endpoints its pods relabel,
// through the policy compiler (followPolicies, endpointRelabelled). A change of a node's
// record syncs the tables with the store and rebuilds DNS.
func (a *Agent) Mirror(req api.MirrorRequest) (api.MirrorResult, error) {
	byKind := map[string][]api.MirrorChange{}
	for _, c := range req.Changes {
		byKind[c.Kind] = append(byKind[c.Kind], c)
	}
	services := byKind[api.KindService]
	before := a.serviceTablesOf(services)
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
	case len(byKind[api.KindNode]) > 0:
		a.policyInputsChanged()
		a.refreshDNS()
	default:
		if len(services) > 0 {
			a.dpMu.Lock()
			add, remove := serviceChanges(before, a.serviceTablesOf(services))
			if err := a.servicesUpdateLocked(add, remove); err != nil {
				a.log.Error("nftables: mirrored services", "err", err)
			}
			a.dpMu.Unlock()
			a.refreshDNSServices(serviceNames(services)...)
		}
		if len(res.Relabelled) > 0 {
			a.endpointRelabelled(res.Relabelled...) // their services, DNS, policies
		}
		var pols []api.NetworkPolicy
		for _, c := range byKind[api.KindNetworkPolicy] {
			pols = append(pols, api.NetworkPolicy{Namespace: c.Namespace, Name: c.Name})
		}
		if nss := byKind[api.KindNamespace]; len(pols)+len(nss) > 0 {
			a.followPolicies("mirror", func(tx store.Tx, c *driver.PolicyCompiler) error {
				for _, ns := range nss {
					if err := namespaceNamed(ns.Name)(tx, c); err != nil {
						return err
					}
				}
				return policiesNamed(pols...)(tx, c)
			})
		}
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
		out = append(out, dns.ServiceName{Namespace: cmp.Or(c.Namespace, api.DefaultNamespace), Name: c.Name})
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
