package agent

import (
	"slices"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/dns"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/mirror"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// Services: virtual IPs from the service CIDR(s), allocated with the same IPAM code as
// endpoint addresses (in an address pool that is not a network), load-balanced by
// nftables over the ready backends; the backends of selector services follow endpoint
// churn (attach, detach, labels) at once.

func (a *Agent) servicePoolNetwork() api.Network {
	n := api.Network{Name: mirror.ServicePool}
	for _, p := range a.serviceCIDRs {
		// The first address is reserved, as Kubernetes reserves it for its API.
		n.Subnets = append(n.Subnets, api.Subnet{Prefix: p, Gateway: p.Addr().Next()})
	}
	return n
}

// notSourced refuses to change an object that a source (podnet controller) mirrors:
// the source would put it back.
func notSourced(kind, name, source string) error {
	if source == "" {
		return nil
	}
	return api.Errorf(api.CodeInvalidConfig, "%s %s comes from %s (podnet controller mirrors it): change it there", kind, name, source)
}

// CreateService validates a definition, allocates its VIPs and installs its data path.
func (a *Agent) CreateService(s api.ServiceSpec) (api.Service, error) {
	svc, err := spec.CanonicalizeService(s)
	if err != nil {
		return api.Service{}, invalidConfig(err)
	}
	if svc.Source != "" {
		return api.Service{}, invalidConfig(api.Invalid("service "+svc.Namespace+"/"+svc.Name, "source", svc.Source, "only podnet controller creates the services of a source"))
	}
	svc.Created = a.created()
	err = a.store.Update(func(tx store.Tx) error {
		if _, ok, err := tx.Service(svc.Namespace, svc.Name); err != nil {
			return err
		} else if ok {
			return api.Errorf(api.CodeInvalidConfig, "service %s/%s already exists", svc.Namespace, svc.Name)
		}
		if err := mirror.NodePortsFree(tx, svc); err != nil {
			return err
		}
		if !svc.Headless && svc.ExternalName == "" {
			// Given VIPs must be free addresses of the service CIDRs.
			vips, err := ipam.Allocate(tx, a.servicePoolNetwork(), mirror.ServiceOwner(svc.Namespace, svc.Name), svc.VIPs)
			if err != nil {
				return err
			}
			svc.VIPs = svc.VIPs[:0]
			for _, p := range vips {
				svc.VIPs = append(svc.VIPs, p.Addr())
			}
		}
		return tx.PutService(svc)
	})
	if err != nil {
		return api.Service{}, err
	}
	// Backends are read under dpMu: a concurrent churn cannot apply an older set after.
	a.dpMu.Lock()
	svc, err = a.Service(svc.Namespace, svc.Name)
	if err == nil {
		if uerr := a.servicesUpdateLocked(driver.ServiceTables(svc, a.clusterNode()), nil); uerr != nil {
			a.log.Error("nftables: add service", "service", svc.Namespace+"/"+svc.Name, "err", uerr)
		}
	}
	a.dpMu.Unlock()
	if err != nil {
		return api.Service{}, err
	}
	a.refreshDNSServices(dns.ServiceName{Namespace: svc.Namespace, Name: svc.Name})
	a.log.Info("service created", "service", svc.Namespace+"/"+svc.Name, "vips", svc.VIPs, "backends", len(svc.Backends))
	return svc, nil
}

// DeleteService removes a service, its VIPs and its data path.
func (a *Agent) DeleteService(ns, name string) error {
	if ns == "" {
		ns = api.DefaultNamespace
	}
	svc, err := a.Service(ns, name)
	if err != nil {
		return err
	}
	if err := notSourced("service", ns+"/"+name, svc.Source); err != nil {
		return err
	}
	err = a.store.Update(func(tx store.Tx) error {
		if err := tx.DeleteService(ns, name); err != nil {
			return err
		}
		_, err := ipam.Release(tx, mirror.ServicePool, mirror.ServiceOwner(ns, name))
		return err
	})
	if err != nil {
		return err
	}
	a.dpMu.Lock()
	err = a.servicesUpdateLocked(nil, driver.ServiceTables(svc, a.clusterNode()))
	a.dpMu.Unlock()
	if err != nil {
		a.log.Error("nftables: remove service", "service", ns+"/"+name, "err", err)
	}
	a.refreshDNSServices(dns.ServiceName{Namespace: ns, Name: name})
	return nil
}

// Service returns one service with its ready backends.
func (a *Agent) Service(ns, name string) (api.Service, error) {
	if ns == "" {
		ns = api.DefaultNamespace
	}
	var svc api.Service
	err := a.store.View(func(tx store.Tx) error {
		var ok bool
		var err error
		if svc, ok, err = tx.Service(ns, name); err != nil {
			return err
		} else if !ok {
			return api.Errorf(api.CodeNotFound, "service %s/%s does not exist", ns, name)
		}
		eps, err := tx.Endpoints("")
		svc.Backends = driver.Backends(svc, eps)
		return err
	})
	return svc, err
}

// Services lists the services of a namespace ("" for all) with their backends.
func (a *Agent) Services(ns string) (svcs []api.Service, err error) {
	err = a.store.View(func(tx store.Tx) error {
		if svcs, err = tx.Services(ns); err != nil {
			return err
		}
		eps, err := tx.Endpoints("")
		for i := range svcs {
			svcs[i].Backends = driver.Backends(svcs[i], eps)
		}
		return err
	})
	return svcs, err
}

// servicesSelecting returns the services (with backends) whose selector matches ep. The
// endpoints are read only when one does.
func (a *Agent) servicesSelecting(ep api.Endpoint) (svcs []api.Service, err error) {
	if len(ep.Labels) == 0 {
		return nil, nil
	}
	err = a.store.View(func(tx store.Tx) error {
		if svcs, err = tx.Services(driver.NamespaceOf(ep)); err != nil {
			return err
		}
		svcs = slices.DeleteFunc(svcs, func(s api.Service) bool { return !spec.Selects(s.Selector, ep.Labels) })
		if len(svcs) == 0 {
			return nil
		}
		eps, err := tx.Endpoints("")
		for i := range svcs {
			svcs[i].Backends = driver.Backends(svcs[i], eps)
		}
		return err
	})
	return svcs, err
}

// endpointChurn brings the services that select ep (before and after a change of its
// labels), DNS and the network policies up to date after an endpoint came or went (ADD,
// DEL): the services in one nftables batch, the policies in another (they read each
// endpoint's record again). endpointRelabelled does the same after a change of labels
// or named ports.
func (a *Agent) endpointChurn(eps ...api.Endpoint) {
	a.endpointChanged(true, eps)
}

// endpointRelabelled is endpointChurn for endpoints whose labels or named ports changed
// (each as it was, then as it is): the DNS records of pods stay, those of the services
// that select them follow.
func (a *Agent) endpointRelabelled(eps ...api.Endpoint) {
	a.endpointChanged(false, eps)
}

func (a *Agent) endpointChanged(pods bool, eps []api.Endpoint) {
	a.dpMu.Lock()
	var rules []nft.Service
	var names []dns.ServiceName
	seen := map[dns.ServiceName]bool{}
	for _, ep := range eps {
		svcs, err := a.servicesSelecting(ep)
		if err != nil {
			a.log.Error("services of endpoint", "endpoint", ep.EndpointKey.String(), "err", err)
			continue
		}
		for _, svc := range svcs {
			if n := (dns.ServiceName{Namespace: svc.Namespace, Name: svc.Name}); !seen[n] {
				seen[n] = true
				names = append(names, n)
				rules = append(rules, driver.ServiceTables(svc, a.clusterNode())...)
			}
		}
	}
	if len(rules) > 0 {
		if err := a.servicesUpdateLocked(rules, nil); err != nil {
			a.log.Error("nftables: update service backends", "err", err)
		}
	}
	a.dpMu.Unlock()
	keys := make([]api.EndpointKey, len(eps))
	for i, ep := range eps {
		keys[i] = ep.EndpointKey
	}
	keys = slices.Compact(keys) // before and after
	if pods {
		a.refreshDNSPods(keys...)
	}
	a.refreshDNSServices(names...)
	a.followPolicies("endpoint "+keys[0].String(), a.endpointsKeyed(keys...))
}

// SetLabels replaces the labels of an endpoint; services follow at once.
func (a *Agent) SetLabels(k api.EndpointKey, labels map[string]string) (api.Endpoint, error) {
	if err := spec.ValidateLabels(labels); err != nil {
		return api.Endpoint{}, invalidConfig(err)
	}
	unlock := a.lockEndpoint(k)
	defer unlock()
	var before, after api.Endpoint
	err := a.store.Update(func(tx store.Tx) error {
		ep, ok, err := tx.Endpoint(k)
		if err != nil {
			return err
		}
		if !ok || ep.State == api.StateDetaching {
			return api.Errorf(api.CodeNotFound, "endpoint %s does not exist", k)
		}
		if ep.Name != "" {
			pod, ok, err := tx.Pod(driver.NamespaceOf(ep), ep.Name)
			if err != nil {
				return err
			}
			if ok {
				if err := notSourced("pod", pod.Namespace+"/"+pod.Name+" (endpoint "+k.String()+")", pod.Source); err != nil {
					return err
				}
			}
		}
		before, after = ep, ep
		after.Labels = labels
		return tx.PutEndpoint(after)
	})
	if err != nil {
		return api.Endpoint{}, err
	}
	a.endpointRelabelled(before, after)
	return after, nil
}
