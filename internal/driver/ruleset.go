package driver

import (
	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/portproxy"
)

// Ruleset is the node's desired nftables state for the store's contents: every
// network's subnets, the elements of every endpoint of the node (eps) not marked
// detaching (DEL takes them out at once), and every service with the backends its
// selector finds among pods (the endpoints of every node of the cluster; eps on a node
// of its own). Endpoints of a network that is not listed are left out. underlay is the
// node's underlay interface (NetworkTables); node is the node's name (ServiceTables).
func Ruleset(nets []api.Network, eps []api.Endpoint, svcs []api.Service, pods []api.Endpoint, underlay, node string) nft.Ruleset {
	var r nft.Ruleset
	byName := make(map[string]api.Network, len(nets))
	for _, n := range nets {
		byName[n.Name] = n
		r.Networks = append(r.Networks, NetworkTables(n, underlay))
	}
	for _, ep := range eps {
		n, ok := byName[ep.Network]
		if !ok || ep.State == api.StateDetaching {
			continue
		}
		t := EndpointFor(n, ep).Tables
		r.Endpoints = append(r.Endpoints, t.Endpoints...)
		r.Ports = append(r.Ports, t.Ports...)
	}
	for _, svc := range svcs {
		svc.Backends = Backends(svc, pods)
		r.Services = append(r.Services, ServiceTables(svc, node)...)
	}
	return r
}

// Proxies are the node's desired port proxies for the store's contents: those of every
// endpoint not marked detaching.
func Proxies(nets []api.Network, eps []api.Endpoint) []portproxy.Mapping {
	byName := make(map[string]api.Network, len(nets))
	for _, n := range nets {
		byName[n.Name] = n
	}
	var out []portproxy.Mapping
	for _, ep := range eps {
		if n, ok := byName[ep.Network]; ok && ep.State != api.StateDetaching && n.PortMode == api.PortModeProxy {
			out = append(out, EndpointFor(n, ep).Proxies...)
		}
	}
	return out
}
