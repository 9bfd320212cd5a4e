package cniplugin

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/api"
)

// convertResult turns the agent's result into a CNI result. The interface named
// ifName carries netns as its sandbox when the agent left it empty.
func convertResult(r api.Result, netns, ifName string) (*types100.Result, error) {
	out := &types100.Result{CNIVersion: types100.ImplementedSpecVersion}
	for _, i := range r.Interfaces {
		sandbox := i.Sandbox
		if sandbox == "" && i.Name == ifName {
			sandbox = netns
		}
		out.Interfaces = append(out.Interfaces, &types100.Interface{
			Name:    i.Name,
			Mac:     i.MAC,
			Mtu:     i.MTU,
			Sandbox: sandbox,
		})
	}
	for n, ip := range r.IPs {
		if !ip.Address.IsValid() {
			return nil, fmt.Errorf("agent result: ips[%d]: no address", n)
		}
		if ip.Interface < 0 || ip.Interface >= len(r.Interfaces) {
			return nil, fmt.Errorf("agent result: ips[%d] %s: interface index %d out of range (%d interfaces)", n, ip.Address, ip.Interface, len(r.Interfaces))
		}
		out.IPs = append(out.IPs, &types100.IPConfig{
			Interface: types100.Int(ip.Interface),
			Address:   ipNet(ip.Address),
			Gateway:   ipOrNil(ip.Gateway),
		})
	}
	for n, rt := range r.Routes {
		if !rt.Dst.IsValid() {
			return nil, fmt.Errorf("agent result: routes[%d]: no destination", n)
		}
		out.Routes = append(out.Routes, &types.Route{Dst: ipNet(rt.Dst.Masked()), GW: ipOrNil(rt.GW)})
	}
	out.DNS = types.DNS{
		Nameservers: r.DNS.Nameservers,
		Domain:      r.DNS.Domain,
		Search:      r.DNS.Search,
		Options:     r.DNS.Options,
	}
	return out, nil
}

// ipNet keeps the address bits of p (an interface address is not masked).
func ipNet(p netip.Prefix) net.IPNet {
	a := p.Addr()
	return net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

func ipOrNil(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return net.IP(a.Unmap().AsSlice())
}
