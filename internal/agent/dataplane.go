package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/portproxy"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// The data path of endpoints beyond their interfaces: anti-spoofing elements and
// published ports, either as DNAT map elements (port mode nat) or as userland proxies
// of the agent (port mode proxy). Desired state is derived from the store; ADD and DEL
// change it incrementally, Reconcile compares it whole.

// desiredRuleset is podnet's nftables content for the networks and endpoints in the
// store. Endpoints that DEL marked detaching are out of it already.
func (a *Agent) desiredRuleset() (nft.Ruleset, error) {
	var r nft.Ruleset
	err := a.store.View(func(tx store.Tx) error {
		nets, err := tx.Networks()
		if err != nil {
			return err
		}
		byName := map[string]api.Network{}
		for _, n := range nets {
			byName[n.Name] = n
			r.Networks = append(r.Networks, nftNetwork(n))
		}
		eps, err := tx.Endpoints("")
		if err != nil {
			return err
		}
		for _, ep := range eps {
			if ep.State == api.StateDetaching {
				continue
			}
			d := endpointDelta(byName[ep.Network], ep)
			r.Endpoints = append(r.Endpoints, d.Endpoints...)
			r.Ports = append(r.Ports, d.Ports...)
		}
		svcs, err := tx.Services("")
		if err != nil {
			return err
		}
		for _, svc := range svcs {
			svc.Backends = backendsOf(svc, eps)
			r.Services = append(r.Services, serviceRules(svc)...)
		}
		return nil
	})
	return r, err
}

// nftNetwork is what a network contributes to the nftables tables: its subnets.
func nftNetwork(n api.Network) nft.Network {
	rn := nft.Network{Name: n.Name, Bridge: n.Bridge, Masquerade: n.Masquerade}
	for _, s := range n.Subnets {
		rn.Subnets = append(rn.Subnets, s.Prefix)
	}
	return rn
}

// endpointDelta is what one endpoint contributes to the nftables tables.
func endpointDelta(n api.Network, ep api.Endpoint) nft.Delta {
	e := nft.Endpoint{HostIf: ep.HostIf, Bridged: n.Driver == api.DriverBridge}
	if e.Bridged {
		// Recorded by Attach from the plan; a record without one has every frame of its
		// port dropped, which a DEL and ADD repairs.
		e.MAC, _ = net.ParseMAC(ep.MAC)
	}
	for _, p := range ep.IPs {
		e.Addrs = append(e.Addrs, p.Addr())
	}
	d := nft.Delta{Endpoints: []nft.Endpoint{e}}
	if n.PortMode == api.PortModeProxy {
		return d
	}
	for _, m := range ep.Ports {
		for _, addr := range e.Addrs {
			if m.HostIP.IsValid() && m.HostIP.Is4() != addr.Is4() {
				continue
			}
			d.Ports = append(d.Ports, nft.PortMapping{Protocol: m.Protocol, HostIP: m.HostIP, HostPort: m.HostPort, Addr: addr, Port: m.ContainerPort})
		}
	}
	return d
}

// proxyMappings are the userland proxies of an endpoint of a proxy-mode network. A
// mapping on all host addresses listens dual-stack and leads to the IPv4 address when
// the endpoint has one.
func proxyMappings(n api.Network, ep api.Endpoint) []portproxy.Mapping {
	if n.PortMode != api.PortModeProxy {
		return nil
	}
	var out []portproxy.Mapping
	for _, m := range ep.Ports {
		backend := proxyBackend(ep.IPs, m.HostIP)
		out = append(out, portproxy.Mapping{Protocol: m.Protocol, HostIP: m.HostIP, HostPort: m.HostPort, Backend: netip.AddrPortFrom(backend, m.ContainerPort)})
	}
	return out
}

// proxyBackend is the endpoint address a proxy on hostIP leads to: of hostIP's family,
// IPv4 first for all host addresses.
func proxyBackend(ips []netip.Prefix, hostIP netip.Addr) netip.Addr {
	want4 := !hostIP.IsValid() || hostIP.Is4()
	for _, p := range ips {
		if p.Addr().Is4() == want4 {
			return p.Addr()
		}
	}
	if !hostIP.IsValid() && len(ips) > 0 {
		return ips[0].Addr()
	}
	return netip.Addr{}
}

func (a *Agent) resyncIfDiffers() error {
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	want, err := a.desiredRuleset()
	if err != nil {
		return err
	}
	if ok, err := a.nft.InSync(want); err != nil || ok {
		return err
	}
	a.log.Info("nftables tables differ from the desired state: restoring")
	if err := a.nft.Sync(want); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

// checkPortHolders refuses published ports that a process of the node has bound: DNAT
// would silently steal its traffic, a proxy could not bind.
func (a *Agent) checkPortHolders(ms []api.PortMapping) error {
	for _, m := range ms {
		h, found, err := a.node.PortHolder(m.Protocol, m.HostIP, m.HostPort)
		if err != nil {
			return fmt.Errorf("port %s: look for a process holding it: %w", m, err)
		}
		if found {
			who := "a process of the node"
			if h.PID != 0 {
				who = h.String()
				if h.PID == os.Getpid() {
					who += " (this agent's process)"
				}
			}
			return api.Errorf(api.CodeAddressInUse, "port %s: host port %d/%s is already bound by %s", m, m.HostPort, m.Protocol, who)
		}
	}
	return nil
}

// reservePorts records an endpoint's published ports in tx, refusing ports another
// endpoint publishes.
func reservePorts(tx store.Tx, ep api.Endpoint) error {
	if err := spec.ValidatePorts(ep.Ports, ep.IPs); err != nil {
		return invalidConfig(err)
	}
	owner := ep.EndpointKey.String()
	for _, m := range ep.Ports {
		owners, err := tx.PortOwners(m.Protocol, m.HostPort)
		if err != nil {
			return err
		}
		if _, other, clash := spec.PortConflict(m, owners); clash && other != owner {
			return api.Errorf(api.CodeAddressInUse, "port %s: host port %d/%s is already published by %s", m, m.HostPort, m.Protocol, other)
		}
		if err := tx.PutPort(m.Protocol, m.HostIP, m.HostPort, owner); err != nil {
			return err
		}
	}
	return nil
}

// releasePorts removes an endpoint's published ports from tx.
func releasePorts(tx store.Tx, ep api.Endpoint) error {
	for _, m := range ep.Ports {
		if err := tx.DeletePort(m.Protocol, m.HostIP, m.HostPort); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// publish installs an endpoint's data path elements: anti-spoofing and NAT ports in
// one nftables batch (before its host veth comes up), proxies for proxy mode.
func (a *Agent) publish(n api.Network, ep api.Endpoint) error {
	if err := a.nftUpdate(endpointDelta(n, ep), nft.Delta{}); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, m := range proxyMappings(n, ep) {
		if err := a.proxy.Add(m); err != nil {
			a.unpublish(n, ep, true)
			return api.Errorf(api.CodeAddressInUse, "%v", err)
		}
	}
	return nil
}

// unpublishPorts removes an endpoint's published ports (DNAT elements or proxies) and
// flushes the conntrack entries of its UDP mappings, so that datagrams of a flow
// already seen reach a new backend at once. DEL does this before it answers.
func (a *Agent) unpublishPorts(n api.Network, ep api.Endpoint) {
	if len(ep.Ports) == 0 {
		return
	}
	if d := endpointDelta(n, ep); len(d.Ports) > 0 {
		if err := a.nftUpdate(nft.Delta{}, nft.Delta{Ports: d.Ports}); err != nil {
			a.log.Error("nftables: remove published ports", "endpoint", ep.EndpointKey.String(), "err", err)
		}
	}
	for _, m := range proxyMappings(n, ep) {
		if err := a.proxy.Remove(m); err != nil {
			a.log.Error("remove proxy", "mapping", m.String(), "err", err)
		}
	}
	for _, m := range ep.Ports {
		if m.Protocol != "udp" || n.PortMode == api.PortModeProxy {
			continue
		}
		if _, err := a.node.FlushConntrack("udp", m.HostIP, m.HostPort); err != nil {
			a.log.Error("flush conntrack", "mapping", m.String(), "err", err)
		}
	}
}

// unpublish removes everything publish installed. Removing nftables elements costs the
// kernel an RCU grace period (~15 ms a batch), so DEL leaves the anti-spoofing
// elements to the detach worker. Errors are logged: Reconcile repairs what is left.
func (a *Agent) unpublish(n api.Network, ep api.Endpoint, portsToo bool) {
	d := endpointDelta(n, ep)
	if portsToo {
		a.unpublishPorts(n, ep)
	}
	if err := a.nftUpdate(nft.Delta{}, nft.Delta{Endpoints: d.Endpoints}); err != nil {
		a.log.Error("nftables: remove endpoint elements", "endpoint", ep.EndpointKey.String(), "err", err)
	}
}

// nftUpdate applies an incremental change under dpMu.
func (a *Agent) nftUpdate(add, remove nft.Delta) error {
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	return a.nft.Update(add, remove)
}

// reconcileDataplane makes nftables and the proxies match the store. The comparison
// runs without dpMu (it may take a while with many services); a difference is checked
// again under dpMu, where no update is in flight, before the whole state is rewritten.
func (a *Agent) reconcileDataplane() error {
	want, err := a.desiredRuleset()
	if err != nil {
		return err
	}
	ok, err := a.nft.InSync(want)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if !ok {
		if err := a.resyncIfDiffers(); err != nil {
			return err
		}
	}
	var proxies []portproxy.Mapping
	err = a.store.View(func(tx store.Tx) error {
		nets, err := tx.Networks()
		if err != nil {
			return err
		}
		for _, n := range nets {
			if n.PortMode != api.PortModeProxy {
				continue
			}
			eps, err := tx.Endpoints(n.Name)
			if err != nil {
				return err
			}
			for _, ep := range eps {
				if ep.State != api.StateDetaching {
					proxies = append(proxies, proxyMappings(n, ep)...)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return a.proxy.Sync(proxies)
}
