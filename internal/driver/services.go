package driver

import (
	"fmt"
	"net/netip"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/spec"
)

// Backends lists the ready backends of svc: its manual endpoints, or the endpoints of
// its namespace that its selector matches (those DEL marked detaching are not ready).
func Backends(svc api.Service, eps []api.Endpoint) []api.Backend {
	var out []api.Backend
	for _, m := range svc.Manual {
		out = append(out, api.Backend{Addr: m.Addr(), Port: m.Port()})
	}
	for _, ep := range eps {
		if ep.State == api.StateDetaching || NamespaceOf(ep) != svc.Namespace || !spec.Selects(svc.Selector, ep.Labels) {
			continue
		}
		for _, p := range ep.IPs {
			out = append(out, api.Backend{Addr: p.Addr(), Hostname: ep.Name, Endpoint: ep.EndpointKey.String()})
		}
	}
	return out
}

// NamespaceOf is the namespace of an endpoint (api.DefaultNamespace when it has none).
func NamespaceOf(ep api.Endpoint) string {
	if ep.Namespace == "" {
		return api.DefaultNamespace
	}
	return ep.Namespace
}

// ServiceTables is the nftables content of one service (with its Backends): one entry
// per VIP and port, leading to the backends of the VIP's family.
func ServiceTables(svc api.Service) []nft.Service {
	var out []nft.Service
	for _, vip := range svc.VIPs {
		for _, p := range svc.Ports {
			r := nft.Service{
				Name: fmt.Sprintf("%s/%s:%d/%s", svc.Namespace, svc.Name, p.Port, p.Protocol),
				VIP:  vip, Protocol: p.Protocol, Port: p.Port, Affinity: svc.Affinity == api.AffinityClientIP,
			}
			for _, b := range svc.Backends {
				if b.Addr.Is4() != vip.Is4() {
					continue
				}
				port := p.TargetPort
				if b.Port != 0 {
					port = b.Port
				}
				r.Backends = append(r.Backends, netip.AddrPortFrom(b.Addr, port))
			}
			out = append(out, r)
		}
	}
	return out
}
