package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/dns"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/store"
)

// DNSConfig configures the agent's cluster DNS server.
type DNSConfig struct {
	// Disable runs no DNS server (ADD results then carry no DNS settings).
	Disable bool
	// Domain is the cluster zone (api.DefaultClusterDomain when empty).
	Domain string
	// Upstreams are resolvers for names outside the zone, "IP" or "IP:PORT"; when
	// empty, the node's resolv.conf.
	Upstreams []string
	// ResolvConf is the node's resolv.conf (dns.DefaultResolvConf when empty).
	ResolvConf string
	// Address is where the server listens in the node (api.DNSAddress:53 when
	// invalid); the agent makes the address local on an interface of its own.
	Address netip.AddrPort
}

// dnsService is the running DNS server of the agent.
type dnsService struct {
	srv    *dns.Server
	cfg    DNSConfig
	node   string // the node's resolv.conf text, for pod resolv.conf rendering
	cancel context.CancelFunc
	done   chan error
	// kick wakes refreshLoop for the work in full, pods and services; requests coalesce.
	kick chan struct{}

	// mu guards full, pods and services: what refreshLoop has yet to hand the server.
	mu sync.Mutex
	// full asks for a new snapshot of everything (rebuildDNS).
	full bool
	// pods are the endpoints to read again (updateDNSPods), services the services
	// (updateDNSServices), when full is not set.
	pods     map[api.EndpointKey]bool
	services map[dns.ServiceName]bool

	// held are the endpoints' pods the server holds, by endpoint, and named the
	// endpoints of each pod of the server: endpoints of one namespace and name (no
	// name, several interfaces of one sandbox) are one pod there, with the addresses of
	// all. refreshLoop's alone (and startDNS's before the loop starts).
	held  map[api.EndpointKey]dns.Pod
	named map[dns.PodID]map[api.EndpointKey]bool
}

// hold records that the server holds pod p of endpoint k.
func (d *dnsService) hold(k api.EndpointKey, p dns.Pod) {
	id := p.ID()
	if d.named[id] == nil {
		d.named[id] = map[api.EndpointKey]bool{}
	}
	d.held[k], d.named[id][k] = p, true
}

// release forgets the pod of endpoint k, and returns its ID.
func (d *dnsService) release(k api.EndpointKey) dns.PodID {
	id := d.held[k].ID()
	delete(d.held, k)
	if delete(d.named[id], k); len(d.named[id]) == 0 {
		delete(d.named, id)
	}
	return id
}

// startDNS makes the DNS address local in the node, starts the server there, and
// refuses search domains that answer a random label (a wildcard would hijack every
// search expansion of every pod).
func (a *Agent) startDNS(cfg DNSConfig) error {
	if cfg.Disable {
		return nil
	}
	if cfg.Domain == "" {
		cfg.Domain = api.DefaultClusterDomain
	}
	if !cfg.Address.IsValid() {
		cfg.Address = netip.AddrPortFrom(netip.MustParseAddr(api.DNSAddress), 53)
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = dns.DefaultResolvConf
	}
	dc := dns.Config{Domain: cfg.Domain, DNSAddress: cfg.Address.Addr(), ResolvConf: cfg.ResolvConf,
		// Pods of the snapshot are allowed too (dns.Server.allowed).
		AllowedClients:  []netip.Prefix{netip.PrefixFrom(cfg.Address.Addr(), cfg.Address.Addr().BitLen())},
		ReversePrefixes: a.serviceCIDRs,
		// Upstreams are reached from the node's namespace, whatever the agent's own.
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return kernel.DialIn(ctx, a.nodeNS, network, addr, dns.DefaultUpstreamTimeout)
		},
		Logf: func(format string, args ...any) {
			a.log.Warn(fmt.Sprintf(format, args...), "component", "dns")
		},
		Observer: a.metrics}
	for _, u := range cfg.Upstreams {
		ap, err := parseUpstream(u)
		if err != nil {
			return fmt.Errorf("dns upstream %q: %w", u, err)
		}
		dc.Upstreams = append(dc.Upstreams, ap)
	}
	srv, err := dns.New(dc)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	if err := a.node.EnsureLocalAddress(cfg.Address.Addr()); err != nil {
		return fmt.Errorf("dns address: %w", err)
	}
	node, _ := os.ReadFile(cfg.ResolvConf)
	ctx, cancel := context.WithCancel(context.Background())
	d := &dnsService{srv: srv, cfg: cfg, node: string(node), cancel: cancel, done: make(chan error, 1), kick: make(chan struct{}, 1),
		held: map[api.EndpointKey]dns.Pod{}, named: map[dns.PodID]map[api.EndpointKey]bool{}}
	go func() { d.done <- srv.ListenAndServe(ctx, a.nodeNS, cfg.Address) }()
	a.dns = d
	a.rebuildDNS(d)
	go a.refreshLoop(ctx, d)
	if res, err := a.CheckDNS(ctx); err != nil {
		a.stopDNS()
		return err
	} else if len(res.Problems) > 0 {
		a.stopDNS()
		return fmt.Errorf("dns: refusing to start: %s", strings.Join(res.Problems, "; "))
	}
	a.log.Info("cluster DNS serving", "address", cfg.Address, "zone", cfg.Domain, "upstreams", srv.Upstreams())
	return nil
}

func parseUpstream(s string) (netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip, 53), nil
	}
	return netip.ParseAddrPort(s)
}

func (a *Agent) stopDNS() {
	if a.dns == nil {
		return
	}
	a.dns.cancel()
	<-a.dns.done
	a.dns = nil
}

// refreshDNS asks for a new DNS snapshot of everything (pods, services, backends). The
// rebuild reads every service and endpoint, so it runs off the caller's path and
// coalesces: an ADD or DEL does not pay for it, and DNS follows within the time of one
// rebuild.
func (a *Agent) refreshDNS() {
	if a.dns == nil {
		return
	}
	a.dns.mu.Lock()
	a.dns.full = true
	a.dns.mu.Unlock()
	a.dns.wake()
}

// refreshDNSPods asks DNS to read the pods of the endpoints of keys again (attached,
// detached or gone): it costs what they cost, not what the store holds. Like refreshDNS,
// it runs off the caller's path.
func (a *Agent) refreshDNSPods(keys ...api.EndpointKey) {
	if a.dns != nil {
		request(a.dns, &a.dns.pods, keys)
	}
}

// refreshDNSServices asks DNS to read the named services (and their backends) again, a
// change of those services alone: it costs what they cost, not what the store holds.
// Like refreshDNS, it runs off the caller's path.
func (a *Agent) refreshDNSServices(names ...dns.ServiceName) {
	if a.dns != nil {
		request(a.dns, &a.dns.services, names)
	}
}

// request adds keys to the pending requests of d that pending points to (guarded by
// d.mu) and wakes d's refreshLoop; nothing without keys.
func request[K comparable](d *dnsService, pending *map[K]bool, keys []K) {
	if len(keys) == 0 {
		return
	}
	d.mu.Lock()
	if *pending == nil {
		*pending = map[K]bool{}
	}
	for _, k := range keys {
		(*pending)[k] = true
	}
	d.mu.Unlock()
	d.wake()
}

func (d *dnsService) wake() {
	select {
	case d.kick <- struct{}{}:
	default: // refreshLoop is woken already and will see this request
	}
}

// refreshLoop brings the server up to date, one request after the other: each reads
// the store after the change that asked for it was committed, and only this loop hands
// the server its data, so an older read never replaces a newer one.
func (a *Agent) refreshLoop(ctx context.Context, d *dnsService) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
			d.mu.Lock()
			full, pods, services := d.full, d.pods, d.services
			d.full, d.pods, d.services = false, nil, nil
			d.mu.Unlock()
			if full { // the snapshot reads the pods and services too
				a.rebuildDNS(d)
				continue
			}
			if len(pods) > 0 {
				a.updateDNSPods(d, pods)
			}
			if len(services) > 0 {
				a.updateDNSServices(d, services)
			}
		}
	}
}

// rebuildDNS hands the DNS server the services, backends and pods of the store.
func (a *Agent) rebuildDNS(d *dnsService) {
	var snap dns.Snapshot
	held := map[api.EndpointKey]dns.Pod{}
	err := a.store.View(func(tx store.Tx) error {
		snap = dns.Snapshot{}
		clear(held)
		eps, err := tx.Endpoints("")
		if err != nil {
			return err
		}
		svcs, err := tx.Services("")
		if err != nil {
			return err
		}
		for _, ep := range eps {
			if pod, ok := dnsPodOf(ep); ok {
				snap.Pods = append(snap.Pods, pod)
				held[ep.EndpointKey] = pod
			}
		}
		for _, svc := range svcs {
			snap.Services = append(snap.Services, dnsServiceOf(svc, eps))
		}
		return nil
	})
	if err != nil {
		a.log.Error("dns snapshot", "err", err)
		return
	}
	d.srv.SetSnapshot(snap)
	d.held, d.named = map[api.EndpointKey]dns.Pod{}, map[dns.PodID]map[api.EndpointKey]bool{}
	for k, p := range held {
		d.hold(k, p)
	}
}

// dnsPodOf is the pod of ep as DNS sees it; ok is false for an endpoint that DEL marked
// detaching, which DNS no longer names.
func dnsPodOf(ep api.Endpoint) (dns.Pod, bool) {
	if ep.State == api.StateDetaching {
		return dns.Pod{}, false
	}
	pod := dns.Pod{Namespace: driver.NamespaceOf(ep), Name: ep.Name}
	for _, p := range ep.IPs {
		pod.Addrs = append(pod.Addrs, p.Addr())
	}
	return pod, true
}

// updateDNSPods hands the DNS server the pods of the endpoints of keys as the store holds
// them now (none when an endpoint is gone or detaching): each pod that such an endpoint
// was or is part of, with the addresses of its endpoints now, or its removal when it has
// none left.
func (a *Agent) updateDNSPods(d *dnsService, keys map[api.EndpointKey]bool) {
	now := map[api.EndpointKey]dns.Pod{}
	err := a.store.View(func(tx store.Tx) error {
		clear(now)
		for k := range keys {
			ep, ok, err := tx.Endpoint(k)
			if err != nil {
				return err
			}
			if pod, live := dnsPodOf(ep); ok && live {
				now[k] = pod
			}
		}
		return nil
	})
	if err != nil {
		a.log.Error("dns: read pods", "err", err)
		return
	}
	touched := map[dns.PodID]bool{}
	for k := range keys {
		old, had := d.held[k]
		pod, has := now[k]
		if had && has && reflect.DeepEqual(old, pod) {
			continue
		}
		if had {
			touched[d.release(k)] = true
		}
		if has {
			d.hold(k, pod)
			touched[pod.ID()] = true
		}
	}
	var put, remove []dns.Pod
	for id := range touched {
		ks := d.named[id]
		if len(ks) == 0 {
			remove = append(remove, dns.Pod{Namespace: id.Namespace, Name: id.Name})
			continue
		}
		pod := dns.Pod{Namespace: id.Namespace, Name: id.Name}
		for _, k := range slices.SortedFunc(maps.Keys(ks), api.EndpointKey.Compare) {
			pod.Addrs = append(pod.Addrs, d.held[k].Addrs...)
		}
		put = append(put, pod)
	}
	if len(put)+len(remove) > 0 {
		d.srv.UpdatePods(put, remove)
	}
}

// updateDNSServices hands the DNS server the named services as the store holds them
// now (those it no longer holds go).
func (a *Agent) updateDNSServices(d *dnsService, names map[dns.ServiceName]bool) {
	var put []dns.Service
	var remove []dns.ServiceName
	err := a.store.View(func(tx store.Tx) error {
		put, remove = nil, nil
		var eps []api.Endpoint // read at the first service that selects its backends
		read := false
		for n := range names {
			svc, ok, err := tx.Service(n.Namespace, n.Name)
			if err != nil {
				return err
			}
			if !ok {
				remove = append(remove, n)
				continue
			}
			// Backends are records of headless services only; those of a selector are
			// among the endpoints.
			if svc.Headless && len(svc.Slices) == 0 && !read {
				if eps, err = tx.Endpoints(""); err != nil {
					return err
				}
				read = true
			}
			put = append(put, dnsServiceOf(svc, eps))
		}
		return nil
	})
	if err != nil {
		a.log.Error("dns: read services", "err", err)
		return
	}
	d.srv.UpdateServices(put, remove)
}

// dnsServiceOf is svc as DNS sees it, with its backends among eps (those of a selector).
func dnsServiceOf(svc api.Service, eps []api.Endpoint) dns.Service {
	ds := dns.Service{Name: svc.Name, Namespace: svc.Namespace, VIPs: svc.VIPs, Headless: svc.Headless, ExternalName: svc.ExternalName}
	for _, p := range svc.Ports {
		port := p.Port
		if svc.Headless {
			port = p.TargetPort // clients connect to the backends directly
		}
		ds.Ports = append(ds.Ports, dns.Port{Name: p.Name, Port: port, Protocol: p.Protocol})
	}
	for _, b := range driver.Backends(svc, eps) {
		ds.Backends = append(ds.Backends, dns.Backend{Hostname: b.Hostname, Addr: b.Addr})
	}
	return ds
}

// resultDNS is the ClusterFirst resolver configuration of a sandbox of namespace ns.
func (a *Agent) resultDNS(ns string) api.DNS {
	if a.dns == nil {
		return api.DNS{}
	}
	_, d, err := dns.ResolvConf("ClusterFirst", ns, dns.ResolvConfig{Domain: a.dns.cfg.Domain, DNSAddress: a.dns.cfg.Address.Addr(), Node: a.dns.node})
	if err != nil {
		a.log.Error("resolv.conf", "namespace", ns, "err", err)
	}
	return d
}

// CheckDNS probes the search domains pods get (the cluster's and the node's) for a
// wildcard that answers a random label.
func (a *Agent) CheckDNS(ctx context.Context) (api.DNSCheck, error) {
	if a.dns == nil {
		return api.DNSCheck{}, api.Errorf(api.CodeNotAvailable, "the agent runs no DNS server (--no-dns)")
	}
	_, d, err := dns.ResolvConf("ClusterFirst", api.DefaultNamespace, dns.ResolvConfig{Domain: a.dns.cfg.Domain, DNSAddress: a.dns.cfg.Address.Addr(), Node: a.dns.node})
	if err != nil {
		return api.DNSCheck{}, err
	}
	res := api.DNSCheck{Search: d.Search}
	for _, domain := range d.Search {
		err := dns.CheckSearchDomains(ctx, a.dns.srv, []string{domain})
		var we *dns.WildcardError
		switch {
		case errors.As(err, &we):
			res.Problems = append(res.Problems, err.Error())
		case err != nil:
			a.log.Warn("dns check", "domain", domain, "err", err)
		}
	}
	return res, nil
}
