// Package agent is the podnet node agent: it owns the store and all kernel
// configuration of one node namespace, and serves the JSON API the CLI and the CNI
// plugin use. Every operation validates first, then allocates in one store
// transaction, then applies the kernel plan, and rolls back what it did on failure.
package agent

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/portproxy"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// Version is reported by STATUS.
const Version = "0.1.0"

// Config configures an agent.
type Config struct {
	// Store is the state store; the agent closes it.
	Store store.Store
	// NodeNS is the namespace the agent manages; the agent does not close it.
	NodeNS netns.NsHandle
	// ReconcileInterval is how often kernel state is compared with the store (0: 10s).
	ReconcileInterval time.Duration
	Logger            *slog.Logger
	// ServiceCIDRs are the pools of service VIPs (one per family; default
	// api.DefaultServiceCIDR).
	ServiceCIDRs []netip.Prefix
	// DNS configures the cluster DNS server.
	DNS DNSConfig
}

// Agent serves one node.
type Agent struct {
	store store.Store
	node  *kernel.Node
	nft   nft.Applier
	proxy *portproxy.Manager
	log   *slog.Logger
	// serviceCIDRs are the VIP pools.
	serviceCIDRs []netip.Prefix
	dns          *dnsService
	every        time.Duration

	// netMu serializes changes to the set of networks (create, delete, nftables sync).
	netMu sync.Mutex
	// epMu serializes operations on one endpoint key (striped by hash).
	epMu [64]sync.Mutex

	// detachq feeds detachLoop with endpoints that DEL marked detaching.
	detachq    chan api.EndpointKey
	detachDone chan struct{}
	// dpMu serializes changes to the nftables tables: every incremental update computes
	// what it writes and writes it under dpMu, and Reconcile derives the whole desired
	// state from the store and writes it under dpMu, so that neither overwrites the other
	// with something stale.
	dpMu sync.Mutex
	// pendingMu guards pending: the endpoints marked detaching whose detach has not
	// finished yet (so that an ADD finds them without reading every endpoint).
	pendingMu sync.Mutex
	pending   map[api.EndpointKey]bool
	// marking counts markAttached calls in flight.
	marking sync.WaitGroup
}

// New opens the node, reconciles the store with the kernel and returns a ready agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 10 * time.Second
	}
	node, err := kernel.OpenNode(cfg.NodeNS)
	if err != nil {
		return nil, err
	}
	tbl, err := nft.Open(int(cfg.NodeNS))
	if err != nil {
		node.Close()
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	proxy, err := portproxy.New(cfg.NodeNS, portproxy.Config{Logf: func(format string, args ...any) {
		cfg.Logger.Warn(fmt.Sprintf(format, args...), "component", "portproxy")
	}})
	if err != nil {
		tbl.Close()
		node.Close()
		return nil, fmt.Errorf("port proxy: %w", err)
	}
	if len(cfg.ServiceCIDRs) == 0 {
		cfg.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix(api.DefaultServiceCIDR)}
	}
	a := &Agent{store: cfg.Store, node: node, nft: tbl, proxy: proxy, log: cfg.Logger, every: cfg.ReconcileInterval,
		serviceCIDRs: cfg.ServiceCIDRs,
		detachq:      make(chan api.EndpointKey, 4096), detachDone: make(chan struct{}),
		pending: map[api.EndpointKey]bool{}}
	if err := a.startDNS(cfg.DNS); err != nil {
		a.proxy.Close()
		tbl.Close()
		node.Close()
		return nil, err
	}
	go a.detachLoop()
	if err := node.EnableForwarding(); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.Reconcile(true); err != nil {
		a.Close()
		return nil, fmt.Errorf("reconcile at start: %w", err)
	}
	return a, nil
}

// OpenBoltStore opens the embedded store in stateDir.
func OpenBoltStore(stateDir string) (store.Store, error) {
	return store.OpenBolt(filepath.Join(stateDir, "podnet.db"))
}

// Close finishes pending detaches and releases the store and kernel handles. The
// kernel configuration stays. Serve must have returned.
func (a *Agent) Close() error {
	close(a.detachq)
	<-a.detachDone
	a.marking.Wait()
	a.stopDNS()
	a.proxy.Close()
	a.node.Close()
	if c, ok := a.nft.(interface{ Close() error }); ok {
		c.Close()
	}
	return a.store.Close()
}

func (a *Agent) lockEndpoint(k api.EndpointKey) func() {
	h := fnv.New32a()
	h.Write([]byte(k.String()))
	m := &a.epMu[h.Sum32()%uint32(len(a.epMu))]
	m.Lock()
	return m.Unlock
}

// Status reports readiness and counts.
func (a *Agent) Status() (api.Status, error) {
	st := api.Status{Ready: true, Version: Version}
	err := a.store.View(func(tx store.Tx) error {
		ns, err := tx.Networks()
		if err != nil {
			return err
		}
		eps, err := tx.Endpoints("")
		st.Networks, st.Endpoints = len(ns), len(eps)
		return err
	})
	return st, err
}

// CreateNetwork validates a spec, refuses overlaps, and creates the network's store
// record, bridge and rules; on failure nothing is left.
func (a *Agent) CreateNetwork(s api.NetworkSpec) (api.Network, error) {
	n, err := spec.Canonicalize(s)
	if err != nil {
		return api.Network{}, invalidConfig(err)
	}
	a.netMu.Lock()
	defer a.netMu.Unlock()
	return a.createNetworkLocked(n)
}

func (a *Agent) createNetworkLocked(n api.Network) (api.Network, error) {
	var others []api.Network
	err := a.store.View(func(tx store.Tx) error {
		_, ok, err := tx.Network(n.Name)
		if err != nil {
			return err
		}
		if ok {
			return api.Errorf(api.CodeInvalidConfig, "network %q already exists", n.Name)
		}
		others, err = tx.Networks()
		return err
	})
	if err != nil {
		return api.Network{}, err
	}
	routes, err := a.node.Routes()
	if err != nil {
		return api.Network{}, err
	}
	own := map[string]bool{}
	for _, o := range others {
		own[o.Bridge] = true
	}
	if err := spec.CheckOverlap(n, others, routes, own); err != nil {
		return api.Network{}, invalidConfig(err)
	}
	if n.Bridge != "" {
		if exists, err := a.node.LinkExists(n.Bridge); err != nil {
			return api.Network{}, err
		} else if exists {
			return api.Network{}, api.Errorf(api.CodeInvalidConfig, "network %q: interface %s already exists on the node", n.Name, n.Bridge)
		}
	}
	n.Created = time.Now().UTC().Truncate(time.Second)
	if err := a.store.Update(func(tx store.Tx) error { return tx.PutNetwork(n) }); err != nil {
		return api.Network{}, fmt.Errorf("store network %q: %w", n.Name, err)
	}
	if err := a.applyNetworkLocked(n); err != nil {
		if n.Bridge != "" {
			_ = a.node.DeleteLink(n.Bridge)
		}
		_ = a.store.Update(func(tx store.Tx) error { return tx.DeleteNetwork(n.Name) })
		_ = a.nftUpdate(nft.Delta{}, nft.Delta{Networks: []nft.Network{nftNetwork(n)}})
		return api.Network{}, err
	}
	a.log.Info("network created", "network", n.Name, "bridge", n.Bridge, "subnets", subnetStrings(n))
	return n, nil
}

// applyNetworkLocked sets up what a network needs in the node: its bridge, or for a
// routed network what lets the node answer the sandboxes' gateway; and the elements of
// its subnets in the nftables sets (an update of those elements only: its cost does not
// grow with the number of networks, endpoints or services).
func (a *Agent) applyNetworkLocked(n api.Network) error {
	if err := a.ensureNetworkKernel(n); err != nil {
		return err
	}
	return a.nftNetworkUpdate(nft.Delta{Networks: []nft.Network{nftNetwork(n)}}, nft.Delta{})
}

// nftNetworkUpdate adds or removes networks' elements; when the tables are missing
// (deleted behind podnet's back) it writes the whole desired state instead.
func (a *Agent) nftNetworkUpdate(add, remove nft.Delta) error {
	err := a.nftUpdate(add, remove)
	if errors.Is(err, nft.ErrNoTable) {
		return a.syncRuleset()
	}
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

func (a *Agent) ensureNetworkKernel(n api.Network) error {
	if n.Driver == api.DriverRouted {
		return a.node.EnsureRoutedGateway()
	}
	return a.node.EnsureBridge(plan.BridgeFor(n))
}

// syncRuleset writes the whole desired nftables state in one batch.
func (a *Agent) syncRuleset() error {
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	r, err := a.desiredRuleset()
	if err != nil {
		return err
	}
	if err := a.nft.Sync(r); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

// ensureNetwork returns the network name, creating it from def when missing; an
// existing network must agree with def.
func (a *Agent) ensureNetwork(name string, def *api.NetworkSpec) error {
	if def == nil {
		return nil
	}
	if def.Name == "" {
		def.Name = name
	}
	if def.Name != name {
		return api.Errorf(api.CodeInvalidConfig, "network %q: definition names network %q", name, def.Name)
	}
	n, ok, err := a.lookupNetwork(name)
	if err != nil {
		return err
	}
	if ok {
		return invalidConfig(spec.Agrees(n, *def))
	}
	want, err := spec.Canonicalize(*def)
	if err != nil {
		return invalidConfig(err)
	}
	a.netMu.Lock()
	defer a.netMu.Unlock()
	if n, ok, err := a.lookupNetwork(name); err != nil {
		return err
	} else if ok { // created meanwhile
		return invalidConfig(spec.Agrees(n, *def))
	}
	_, err = a.createNetworkLocked(want)
	return err
}

func (a *Agent) lookupNetwork(name string) (n api.Network, ok bool, err error) {
	err = a.store.View(func(tx store.Tx) error {
		n, ok, err = tx.Network(name)
		return err
	})
	return n, ok, err
}

// Network returns one network.
func (a *Agent) Network(name string) (api.Network, error) {
	n, ok, err := a.lookupNetwork(name)
	if err != nil {
		return n, err
	}
	if !ok {
		return n, notFoundNetwork(name)
	}
	return n, nil
}

// Networks lists all networks.
func (a *Agent) Networks() (ns []api.Network, err error) {
	err = a.store.View(func(tx store.Tx) error {
		ns, err = tx.Networks()
		return err
	})
	return ns, err
}

// Endpoints lists attachments of one network or of all ("").
func (a *Agent) Endpoints(network string) (eps []api.Endpoint, err error) {
	err = a.store.View(func(tx store.Tx) error {
		eps, err = tx.Endpoints(network)
		return err
	})
	return eps, err
}

// DeleteNetwork removes a network without endpoints, its bridge and its rules.
func (a *Agent) DeleteNetwork(name string) error {
	a.netMu.Lock()
	defer a.netMu.Unlock()
	eps, err := a.Endpoints(name)
	if err != nil {
		return err
	}
	for _, ep := range eps {
		unlock := a.lockEndpoint(ep.EndpointKey)
		err := a.finishDetachLocked(ep.EndpointKey)
		unlock()
		if err != nil {
			return err
		}
	}
	var n api.Network
	err = a.store.Update(func(tx store.Tx) error {
		var ok bool
		var err error
		if n, ok, err = tx.Network(name); err != nil {
			return err
		} else if !ok {
			return notFoundNetwork(name)
		}
		eps, err := tx.Endpoints(name)
		if err != nil {
			return err
		}
		if len(eps) > 0 {
			return api.Errorf(api.CodeBusy, "network %q has %d endpoint(s) attached (first: container %s); detach them first", name, len(eps), eps[0].ContainerID)
		}
		return tx.DeleteNetwork(name)
	})
	if err != nil {
		return err
	}
	if err := a.nftNetworkUpdate(nft.Delta{}, nft.Delta{Networks: []nft.Network{nftNetwork(n)}}); err != nil {
		return err
	}
	if n.Bridge != "" {
		if err := a.node.DeleteLink(n.Bridge); err != nil {
			return err
		}
	}
	if n.Driver == api.DriverRouted {
		nets, err := a.Networks()
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(nets, func(o api.Network) bool { return o.Driver == api.DriverRouted }) {
			if err := a.node.RemoveRoutedGateway(); err != nil {
				return err
			}
		}
	}
	a.log.Info("network removed", "network", name)
	return nil
}

var containerIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)

func validateKey(k api.EndpointKey) error {
	if k.Network == "" {
		return api.Errorf(api.CodeInvalidConfig, "network: empty network name")
	}
	if !containerIDRE.MatchString(k.ContainerID) {
		return api.Errorf(api.CodeInvalidEnv, "containerID %q: must be letters, digits, '_', '.', '-', starting with a letter or digit", k.ContainerID)
	}
	if !api.ValidIfName(k.IfName) {
		return api.Errorf(api.CodeInvalidEnv, "ifName %q: must be 1-15 bytes without '/', ':' or spaces", k.IfName)
	}
	return nil
}

// sandboxNS returns the namespace of a request: the descriptor that came with it, else
// the path. The caller closes it. The node's namespace, or the agent's own, is refused:
// the sandbox side of an endpoint (its default route above all) would replace the node's.
func (a *Agent) sandboxNS(fd int, path string) (netns.NsHandle, error) {
	h, err := openSandboxNS(fd, path)
	if err != nil {
		return h, err
	}
	self, err := netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		h.Close()
		return netns.None(), fmt.Errorf("open the agent's own namespace: %w", err)
	}
	defer self.Close()
	for _, node := range []netns.NsHandle{a.node.NS(), self} {
		same, err := kernel.SameNS(int(h), int(node))
		if err != nil {
			h.Close()
			return netns.None(), err
		}
		if same {
			h.Close()
			if path == "" {
				path = "(descriptor)"
			}
			return netns.None(), api.Errorf(api.CodeInvalidEnv, "CNI_NETNS %q: is the node's own network namespace, not a sandbox's", path)
		}
	}
	return h, nil
}

func openSandboxNS(fd int, path string) (netns.NsHandle, error) {
	if fd < 0 {
		if path == "" {
			return netns.None(), api.Errorf(api.CodeInvalidEnv, "netns: no namespace descriptor and no path given")
		}
		h, err := netns.GetFromPath(path)
		if err != nil {
			return netns.None(), api.Errorf(api.CodeInvalidEnv, "netns %q: cannot open: %v", path, err)
		}
		fd = int(h)
	}
	if !kernel.IsNetNS(fd) {
		unix.Close(fd)
		return netns.None(), api.Errorf(api.CodeInvalidEnv, "netns %q: not a network namespace", path)
	}
	return netns.NsHandle(fd), nil
}

// Attach connects a sandbox to a network (CNI ADD). sandboxFD is owned by Attach.
func (a *Agent) Attach(req api.AttachRequest, sandboxFD int) (api.Result, error) {
	sb, err := a.sandboxNS(sandboxFD, req.Netns)
	if err != nil {
		return api.Result{}, err
	}
	defer sb.Close()
	if err := validateKey(req.EndpointKey); err != nil {
		return api.Result{}, err
	}
	mac, err := plan.ParseMAC(req.MAC)
	if err != nil {
		return api.Result{}, invalidConfig(err)
	}
	if req.Namespace == "" {
		req.Namespace = api.DefaultNamespace
	}
	for _, err := range []error{spec.ValidateNamespace(req.Namespace), spec.ValidateLabels(req.Labels)} {
		if err != nil {
			return api.Result{}, invalidConfig(err)
		}
	}
	for _, m := range req.Ports {
		if err := spec.ValidatePort(m); err != nil {
			return api.Result{}, invalidConfig(err)
		}
	}
	var static []netip.Addr
	for _, s := range req.IPs {
		str := s
		if i := strings.IndexByte(str, '/'); i >= 0 {
			str = str[:i]
		}
		ip, err := netip.ParseAddr(str)
		if err != nil {
			return api.Result{}, api.Errorf(api.CodeInvalidConfig, "ips: %q is not an IP address", s)
		}
		static = append(static, ip.Unmap())
	}
	if err := a.ensureNetwork(req.Network, req.Define); err != nil {
		return api.Result{}, err
	}
	if len(static) > 0 || len(req.Ports) > 0 {
		if err := a.finishDetachesHolding(static, req.Ports); err != nil {
			return api.Result{}, err
		}
	}
	unlock := a.lockEndpoint(req.EndpointKey)
	defer func() { unlock() }()

	// A DEL of the same attachment may still be finishing (podman's network reload is
	// DEL then ADD with the same address): finish it now.
	if err := a.finishDetachLocked(req.EndpointKey); err != nil {
		return api.Result{}, err
	}
	owner := req.EndpointKey.String()
	var n api.Network
	var ep api.Endpoint
	var p plan.Endpoint
	record := func(tx store.Tx) error {
		var ok bool
		var err error
		if n, ok, err = tx.Network(req.Network); err != nil {
			return err
		} else if !ok {
			return notFoundNetwork(req.Network)
		}
		if old, ok, err := tx.Endpoint(req.EndpointKey); err != nil {
			return err
		} else if ok {
			return api.Errorf(api.CodeInvalidConfig, "container %s already has interface %s on network %q (state %s); DEL it first", old.ContainerID, old.IfName, old.Network, old.State)
		}
		addrs, err := ipam.Allocate(tx, n, owner, static)
		if err != nil {
			return err
		}
		p = plan.EndpointFor(n, req.EndpointKey, addrs, mac)
		ep = api.Endpoint{
			EndpointKey: req.EndpointKey, Name: req.Name, Namespace: req.Namespace, Labels: req.Labels, Netns: req.Netns,
			HostIf: p.HostIf, MAC: p.MAC.String(), IPs: addrs, Ports: req.Ports, State: api.StateAttaching,
			Created: time.Now().UTC().Truncate(time.Second),
		}
		if err := reservePorts(tx, ep); err != nil {
			return err
		}
		return tx.PutEndpoint(ep)
	}
	err = a.store.Update(record)
	if api.ErrorCode(err) == api.CodePoolExhausted {
		// Addresses of DELs still finishing are not free yet: finish them (without
		// holding our own endpoint lock, which one of them may share), try again.
		unlock()
		ferr := a.finishDetachesOf(req.Network)
		unlock = a.lockEndpoint(req.EndpointKey)
		if ferr != nil {
			return api.Result{}, ferr
		}
		if err = a.finishDetachLocked(req.EndpointKey); err == nil {
			err = a.store.Update(record)
		}
	}
	if err != nil {
		return api.Result{}, err
	}
	rollback := func() {
		if rerr := a.forget(req.EndpointKey); rerr != nil {
			a.log.Error("roll back failed attach", "endpoint", owner, "err", rerr)
		}
	}
	if len(ep.Ports) > 0 {
		if err := a.checkPortHolders(ep.Ports); err != nil {
			rollback()
			return api.Result{}, err
		}
	}
	if err := a.publish(n, ep); err != nil {
		rollback()
		return api.Result{}, err
	}
	if err := a.node.AddEndpoint(sb, p); err != nil {
		a.unpublish(n, ep, true)
		rollback()
		if errors.Is(err, kernel.ErrSandboxIfExists) {
			return api.Result{}, api.Errorf(api.CodeInvalidConfig, "ifName %q: the sandbox already has an interface of that name", req.IfName)
		}
		return api.Result{}, fmt.Errorf("attach %s: %w", owner, err)
	}
	// The kernel side is complete (EndpointComplete: host veth up, with its node routes),
	// which is what a restart checks for an endpoint still recorded as attaching; so the
	// record can be marked attached off the reply's path (one store commit less per ADD).
	a.marking.Add(1)
	go func() {
		defer a.marking.Done()
		if err := a.markAttached(req.EndpointKey); err != nil {
			a.log.Error("mark endpoint attached", "endpoint", owner, "err", err)
		}
	}()
	a.endpointChurn(ep)
	a.log.Debug("attached", "endpoint", owner, "ips", ep.IPs, "hostIf", ep.HostIf)
	res := plan.ResultFor(n, p, req.Netns)
	res.DNS = a.resultDNS(ep.Namespace)
	return res, nil
}

// markAttached records that an endpoint's kernel side is complete, unless a DEL has
// marked it detaching meanwhile.
func (a *Agent) markAttached(k api.EndpointKey) error {
	return a.store.Update(func(tx store.Tx) error {
		ep, ok, err := tx.Endpoint(k)
		if err != nil || !ok || ep.State != api.StateAttaching {
			return err
		}
		ep.State = api.StateAttached
		return tx.PutEndpoint(ep)
	})
}

// forget releases an endpoint's addresses and deletes its record (no kernel work).
func (a *Agent) forget(k api.EndpointKey) error {
	return a.store.Update(func(tx store.Tx) error {
		if _, err := ipam.Release(tx, k.Network, k.String()); err != nil {
			return err
		}
		if ep, ok, err := tx.Endpoint(k); err != nil {
			return err
		} else if ok {
			if err := releasePorts(tx, ep); err != nil {
				return err
			}
		}
		if err := tx.DeleteEndpoint(k); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	})
}

// Detach removes an attachment (CNI DEL). The endpoint is marked detaching and the
// reply goes out at once; detachLoop then deletes the veth pair (which costs the kernel
// an RCU grace period, ~20 ms) and only after that releases the addresses, so an
// address is never handed out while its old interface still exists. Success when any
// or all of it is already gone.
func (a *Agent) Detach(req api.DetachRequest) error {
	if err := validateKey(req.EndpointKey); err != nil {
		return err
	}
	k := req.EndpointKey
	unlock := a.lockEndpoint(k)
	defer unlock()
	var ep api.Endpoint
	var n api.Network
	queued, marked := false, false
	err := a.store.Update(func(tx store.Tx) error {
		var ok bool
		var err error
		ep, ok, err = tx.Endpoint(k)
		if err != nil || !ok || ep.State == api.StateDetaching {
			queued = ok
			return err
		}
		if n, _, err = tx.Network(k.Network); err != nil {
			return err
		}
		ep.State = api.StateDetaching
		queued, marked = true, true
		return tx.PutEndpoint(ep)
	})
	if err != nil {
		return fmt.Errorf("detach %s: %w", k, err)
	}
	if !queued { // no record: remove a veth a crash may have left, synchronously
		return a.detachLocked(k)
	}
	if marked {
		a.setPending(k, true)
		// Published ports go at once: DEL removes exactly this endpoint's mappings
		// before it answers (the rest follows in detachLoop); so does its place among
		// the backends of services.
		a.unpublishPorts(n, ep)
		a.endpointChurn(ep)
	}
	select {
	case a.detachq <- k:
		return nil
	default: // queue full: do it now
		return a.detachLocked(k)
	}
}

// detachLoop finishes the detaches Detach queued.
func (a *Agent) detachLoop() {
	defer close(a.detachDone)
	for k := range a.detachq {
		unlock := a.lockEndpoint(k)
		if err := a.finishDetachLocked(k); err != nil {
			a.log.Error("detach", "endpoint", k.String(), "err", err)
		}
		unlock()
	}
}

// finishDetachLocked completes the detach of k if it is marked detaching.
func (a *Agent) finishDetachLocked(k api.EndpointKey) error {
	var ep api.Endpoint
	var ok bool
	err := a.store.View(func(tx store.Tx) (err error) {
		ep, ok, err = tx.Endpoint(k)
		return err
	})
	if err != nil || !ok || ep.State != api.StateDetaching {
		return err
	}
	return a.detachLocked(k)
}

// finishDetachesHolding finishes the detaches of endpoints (of any network) that still
// hold one of addrs or of the host ports of ports, so that what DEL released can be
// asked for at once. The caller holds no endpoint lock.
func (a *Agent) finishDetachesHolding(addrs []netip.Addr, ports []api.PortMapping) error {
	return a.finishDetachesWhere("", func(ep api.Endpoint) bool {
		return slices.ContainsFunc(ep.IPs, func(p netip.Prefix) bool { return slices.Contains(addrs, p.Addr()) }) ||
			slices.ContainsFunc(ep.Ports, func(m api.PortMapping) bool {
				_, _, clash := spec.PortConflict(m, portOwners(ports, m))
				return clash
			})
	})
}

// portOwners presents the requested mappings on m's protocol and port as an owner map
// for spec.PortConflict.
func portOwners(ports []api.PortMapping, m api.PortMapping) map[netip.Addr]string {
	owners := map[netip.Addr]string{}
	for _, r := range ports {
		if r.Protocol == m.Protocol && r.HostPort == m.HostPort {
			owners[r.HostIP] = "request"
		}
	}
	return owners
}

// finishDetachesOf finishes every pending detach of a network.
func (a *Agent) finishDetachesOf(network string) error {
	return a.finishDetachesWhere(network, func(api.Endpoint) bool { return true })
}

func (a *Agent) finishDetachesWhere(network string, match func(api.Endpoint) bool) error {
	a.pendingMu.Lock()
	var keys []api.EndpointKey
	for k := range a.pending {
		if network == "" || k.Network == network {
			keys = append(keys, k)
		}
	}
	a.pendingMu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	var eps []api.Endpoint
	err := a.store.View(func(tx store.Tx) error {
		for _, k := range keys {
			ep, ok, err := tx.Endpoint(k)
			if err != nil {
				return err
			}
			if ok {
				eps = append(eps, ep)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, ep := range eps {
		if ep.State != api.StateDetaching || !match(ep) {
			continue
		}
		unlock := a.lockEndpoint(ep.EndpointKey)
		err := a.finishDetachLocked(ep.EndpointKey)
		unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) setPending(k api.EndpointKey, on bool) {
	a.pendingMu.Lock()
	defer a.pendingMu.Unlock()
	if on {
		a.pending[k] = true
	} else {
		delete(a.pending, k)
	}
}

// detachLocked deletes the veth pair of k, then releases its addresses and record.
func (a *Agent) detachLocked(k api.EndpointKey) error {
	var ep api.Endpoint
	var n api.Network
	var ok bool
	err := a.store.View(func(tx store.Tx) (err error) {
		if ep, ok, err = tx.Endpoint(k); err != nil || !ok {
			return err
		}
		n, _, err = tx.Network(k.Network)
		return err
	})
	if err != nil {
		return fmt.Errorf("detach %s: %w", k, err)
	}
	if ok {
		// Detach removed the ports of an endpoint it marked detaching.
		a.unpublish(n, ep, ep.State != api.StateDetaching)
	}
	if err := a.node.DeleteLink(spec.HostVethName(k)); err != nil {
		return fmt.Errorf("detach %s: %w", k, err)
	}
	if err := a.forget(k); err != nil {
		return fmt.Errorf("detach %s: %w", k, err)
	}
	a.setPending(k, false)
	if ok && ep.State != api.StateDetaching { // GC, reconcile: services did not follow yet
		a.endpointChurn(ep)
	}
	a.log.Debug("detached", "endpoint", k.String())
	return nil
}

// Check verifies an attachment against the kernel (CNI CHECK).
func (a *Agent) Check(req api.CheckRequest, sandboxFD int) error {
	sb, err := a.sandboxNS(sandboxFD, req.Netns)
	if err != nil {
		return err
	}
	defer sb.Close()
	if err := validateKey(req.EndpointKey); err != nil {
		return err
	}
	var n api.Network
	var ep api.Endpoint
	err = a.store.View(func(tx store.Tx) error {
		var ok bool
		var err error
		if n, ok, err = tx.Network(req.Network); err != nil {
			return err
		} else if !ok {
			return notFoundNetwork(req.Network)
		}
		if ep, ok, err = tx.Endpoint(req.EndpointKey); err != nil {
			return err
		} else if !ok {
			return api.Errorf(api.CodeUnknownContainer, "container %s has no interface %s on network %q", req.ContainerID, req.IfName, req.Network)
		}
		return nil
	})
	if err != nil {
		return err
	}
	p := endpointPlan(n, ep)
	if err := a.node.CheckEndpoint(sb, p); err != nil {
		return api.Errorf(api.CodeCheckFailed, "check %s: %v", req.EndpointKey, err)
	}
	return nil
}

// GC detaches every endpoint of req.Network whose whole key (network, container ID,
// interface name) is not in req.Valid, then releases addresses whose owner has no
// endpoint record. A request without a network, or with a valid attachment that does
// not carry its whole key on that network, is refused with code 7 before anything is
// released (api.GCRequest.Validate).
//
// An empty Valid releases every endpoint of the network. CNI 1.1 (SPEC.md, "GC: Clean
// up any stale resources") defines cni.dev/valid-attachments as "the list of still
// valid attachments to this network", after which "the network plugin may then remove
// any resources related to attachments that do not exist in this set": with an empty
// set, none is still valid. A runtime whose last container of the network is gone sends
// that list (libcni may omit the key then; the plugin reads a missing key as empty, as
// libcni itself does: GC without a list DELs every attachment it has cached).
func (a *Agent) GC(req api.GCRequest) (api.GCResponse, error) {
	if err := req.Validate(); err != nil {
		return api.GCResponse{}, err
	}
	eps, err := a.Endpoints(req.Network)
	if err != nil {
		return api.GCResponse{}, err
	}
	var resp api.GCResponse
	for _, k := range staleAttachments(req.Network, eps, req.Valid) {
		unlock := a.lockEndpoint(k)
		err := a.detachLocked(k)
		unlock()
		if err != nil {
			return resp, err
		}
		resp.Released = append(resp.Released, k)
	}
	if err := a.releaseOrphanAllocations(); err != nil {
		return resp, err
	}
	if len(resp.Released) > 0 {
		a.log.Info("gc released endpoints", "network", req.Network, "count", len(resp.Released))
	}
	return resp, nil
}

// staleAttachments returns the keys of the endpoints of network that valid does not
// list, in the order of eps. Keys match whole: a valid attachment of another network
// protects nothing here, and an endpoint of another network is never stale here.
func staleAttachments(network string, eps []api.Endpoint, valid []api.EndpointKey) []api.EndpointKey {
	keep := make(map[api.EndpointKey]bool, len(valid))
	for _, k := range valid {
		keep[k] = true
	}
	var stale []api.EndpointKey
	for _, ep := range eps {
		if ep.Network == network && !keep[ep.EndpointKey] {
			stale = append(stale, ep.EndpointKey)
		}
	}
	return stale
}

// releaseOrphanAllocations frees addresses whose owner has no endpoint record.
func (a *Agent) releaseOrphanAllocations() error {
	return a.store.Update(func(tx store.Tx) error {
		nets, err := tx.Networks()
		if err != nil {
			return err
		}
		for _, n := range nets {
			eps, err := tx.Endpoints(n.Name)
			if err != nil {
				return err
			}
			live := map[string]bool{}
			for _, ep := range eps {
				live[ep.EndpointKey.String()] = true
			}
			allocs, err := tx.Allocations(n.Name)
			if err != nil {
				return err
			}
			for addr, owner := range allocs {
				if !live[owner] {
					a.log.Info("releasing orphan address", "network", n.Name, "address", addr, "owner", owner)
					if err := tx.DeleteAllocation(n.Name, addr); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}

// Reconcile makes the kernel agree with the store: bridges and rules of every network
// exist, endpoints whose veth vanished (their sandbox is gone) are released, host veths
// without a record are removed, and the node side of every attached endpoint is
// repaired where it drifted from its plan (repairEndpoints). At startup (no request can
// be in flight) endpoints cut off mid-attach by a crash are rolled back too. Calling it again when everything
// agrees changes nothing.
func (a *Agent) Reconcile(startup bool) error {
	a.netMu.Lock()
	nets, err := a.Networks()
	if err == nil {
		for _, n := range nets {
			if err = a.ensureNetworkKernel(n); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = a.reconcileDataplane()
	}
	a.netMu.Unlock()
	if err != nil {
		return err
	}
	// Links first: a veth that exists now had its record committed before (Attach
	// records the endpoint before creating the veth).
	links, err := a.node.LinksWithPrefix(spec.VethPrefix)
	if err != nil {
		return err
	}
	eps, err := a.Endpoints("")
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, ep := range eps {
		known[ep.HostIf] = true
		if ep.State == api.StateAttaching && startup {
			complete, err := a.node.EndpointComplete(ep.HostIf)
			if err != nil {
				return err
			}
			if complete {
				if err := a.markAttached(ep.EndpointKey); err != nil {
					return err
				}
				ep.State = api.StateAttached
			}
		}
		switch {
		case ep.State == api.StateAttaching && startup:
			a.log.Info("rolling back interrupted attach", "endpoint", ep.EndpointKey.String())
		case ep.State == api.StateDetaching && startup:
			a.log.Info("finishing interrupted detach", "endpoint", ep.EndpointKey.String())
		case ep.State == api.StateAttached && links[ep.HostIf] == 0:
			a.log.Info("releasing endpoint whose interface is gone", "endpoint", ep.EndpointKey.String(), "hostIf", ep.HostIf)
		default:
			continue
		}
		unlock := a.lockEndpoint(ep.EndpointKey)
		err = a.detachLocked(ep.EndpointKey)
		unlock()
		if err != nil {
			return err
		}
	}
	for name, index := range links {
		if !known[name] {
			// By index: a new endpoint of the same key may have reused the name since.
			a.log.Info("removing orphan veth", "hostIf", name)
			if err := a.node.DeleteLinkIndex(index); err != nil {
				return err
			}
		}
	}
	// Now that the bridges exist again: ports, routes, neighbours, sysctls.
	if err := a.repairEndpoints(eps, links); err != nil {
		return err
	}
	return a.releaseOrphanAllocations()
}

// Run reconciles periodically until ctx ends.
func (a *Agent) Run(ctx context.Context) {
	t := time.NewTicker(a.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.node.EnableForwarding(); err != nil {
				a.log.Error("enable forwarding", "err", err)
			}
			if err := a.Reconcile(false); err != nil {
				a.log.Error("reconcile", "err", err)
			}
		}
	}
}

func subnetStrings(n api.Network) []string {
	var out []string
	for _, s := range n.Subnets {
		out = append(out, s.Prefix.String())
	}
	return out
}

func notFoundNetwork(name string) error {
	return api.Errorf(api.CodeNotFound, "network %q does not exist", name)
}

// invalidConfig turns a validation error into an API error with code 7 (nil stays nil).
func invalidConfig(err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	return &api.Error{Code: api.CodeInvalidConfig, Msg: err.Error()}
}

// DefaultLogger logs text to stderr at the given level.
func DefaultLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
