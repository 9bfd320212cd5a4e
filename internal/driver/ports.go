package driver

import (
	"net/netip"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/portproxy"
)

// publish plans an endpoint's published ports, the same for both drivers: in port mode
// nat one DNAT element per mapping and endpoint address of the mapping's family (every
// family when the mapping has no host IP); in port mode proxy one userland proxy per
// mapping, on all host addresses dual-stack when the mapping has no host IP, leading to
// the endpoint's address of the host IP's family (IPv4 first for all addresses).
func publish(n api.Network, addrs []netip.Addr, ports []api.PortMapping) ([]nft.PortMapping, []portproxy.Mapping) {
	if n.PortMode == api.PortModeProxy {
		var proxies []portproxy.Mapping
		for _, m := range ports {
			backend := proxyBackend(addrs, m.HostIP)
			proxies = append(proxies, portproxy.Mapping{Protocol: m.Protocol, HostIP: m.HostIP, HostPort: m.HostPort,
				Backend: netip.AddrPortFrom(backend, m.ContainerPort)})
		}
		return nil, proxies
	}
	var nat []nft.PortMapping
	for _, m := range ports {
		for _, addr := range addrs {
			if m.HostIP.IsValid() && m.HostIP.Is4() != addr.Is4() {
				continue
			}
			nat = append(nat, nft.PortMapping{Protocol: m.Protocol, HostIP: m.HostIP, HostPort: m.HostPort, Addr: addr, Port: m.ContainerPort})
		}
	}
	return nat, nil
}

// proxyBackend is the endpoint address a proxy on hostIP leads to: of hostIP's family,
// IPv4 first for all host addresses.
func proxyBackend(addrs []netip.Addr, hostIP netip.Addr) netip.Addr {
	want4 := !hostIP.IsValid() || hostIP.Is4()
	for _, a := range addrs {
		if a.Is4() == want4 {
			return a
		}
	}
	if !hostIP.IsValid() && len(addrs) > 0 {
		return addrs[0]
	}
	return netip.Addr{}
}
