package driver

import (
	"fmt"
	"net/netip"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/spec"
)

// Backends lists the ready backends of svc: its manual endpoints, the endpoints of
// its namespace that its selector matches (those DEL marked detaching are not ready), or
// its slice endpoints that are ready (when none is, those still serving while they
// terminate, as kube-proxy does).
func Backends(svc api.Service, eps []api.Endpoint) []api.Backend {
	var out []api.Backend
	if len(svc.Slices) > 0 {
		return sliceBackends(svc.Slices)
	}
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

func sliceBackends(slices []api.SliceEndpoint) []api.Backend {
	var ready, terminating []api.Backend
	for _, e := range slices {
		for _, a := range e.Addrs {
			b := api.Backend{Addr: a, Hostname: e.Hostname, Endpoint: e.Pod, Ports: e.Ports, Node: e.Node}
			switch {
			case e.Ready:
				ready = append(ready, b)
			case e.Serving && e.Terminating:
				terminating = append(terminating, b)
			}
		}
	}
	if len(ready) == 0 {
		return terminating
	}
	return ready
}

// NamespaceOf is the namespace of an endpoint (api.DefaultNamespace when it has none).
func NamespaceOf(ep api.Endpoint) string {
	if ep.Namespace == "" {
		return api.DefaultNamespace
	}
	return ep.Namespace
}

// ServiceTables is the nftables content of one service (with its Backends) on node:
// one entry per VIP and port, leading to the backends of the VIP's family (with
// TrafficPolicyLocal, those of node only; node "" is a store of one node, where every
// backend is local).
func ServiceTables(svc api.Service, node string) []nft.Service {
	var out []nft.Service
	local := svc.InternalTrafficPolicy == api.TrafficPolicyLocal && node != ""
	for _, vip := range svc.VIPs {
		for _, p := range svc.Ports {
			r := nft.Service{
				Name: fmt.Sprintf("%s/%s:%d/%s", svc.Namespace, svc.Name, p.Port, p.Protocol),
				VIP:  vip, Protocol: p.Protocol, Port: p.Port, Affinity: svc.Affinity == api.AffinityClientIP,
				NodePort: p.NodePort,
			}
			for _, b := range svc.Backends {
				if b.Addr.Is4() != vip.Is4() || local && b.Node != node {
					continue
				}
				if port, ok := backendPort(p, b); ok {
					r.Backends = append(r.Backends, netip.AddrPortFrom(b.Addr, port))
				}
			}
			out = append(out, r)
		}
	}
	return out
}

// backendPort is where service port p reaches backend b: the port of the same name and
// protocol among b's own ports (EndpointSlice backends: none means p does not go to b),
// b's manual port, or p's target port.
func backendPort(p api.ServicePort, b api.Backend) (uint16, bool) {
	switch {
	case b.Ports != nil:
		for _, bp := range b.Ports {
			if bp.Name == p.Name && bp.Protocol == p.Protocol {
				return bp.Port, true
			}
		}
		return 0, false
	case b.Port != 0:
		return b.Port, true
	}
	return p.TargetPort, true
}
