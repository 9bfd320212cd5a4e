package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// The data path of endpoints beyond their interfaces: anti-spoofing elements and
// published ports, either as DNAT map elements (port mode nat) or as userland proxies
// of the agent (port mode proxy), as the drivers plan them (internal/driver). Desired
// state is derived from the store; ADD and DEL change it incrementally, Reconcile
// compares it whole.

// records are the store's networks, endpoints and services, read in one view: what the
// desired data path, the metrics and the graph derive from.
type records struct {
	nets []api.Network
	// eps are this node's endpoints, all those of every node (services balance over
	// them, policies select peers among them); the same on a store of one node.
	eps, all []api.Endpoint
	svcs     []api.Service
	pols     []api.NetworkPolicy
	// nss are the namespaces that have labels.
	nss []api.Namespace
}

func (a *Agent) records() (r records, err error) {
	err = a.store.View(func(tx store.Tx) (err error) {
		if r.nets, err = tx.Networks(); err != nil {
			return err
		}
		if r.all, err = tx.Endpoints(""); err != nil {
			return err
		}
		if r.svcs, err = tx.Services(""); err != nil {
			return err
		}
		if r.pols, err = tx.NetworkPolicies(""); err != nil {
			return err
		}
		r.nss, err = tx.Namespaces()
		return err
	})
	r.eps = r.all
	if a.shared {
		r.eps = slices.DeleteFunc(slices.Clone(r.all), func(ep api.Endpoint) bool { return !a.mine(ep) })
	}
	return r, err
}

// desiredRuleset is podnet's nftables content for the networks, endpoints, services and
// network policies in the store (driver.Ruleset, driver.Policies). Endpoints that DEL
// marked detaching are out of it.
// clusterNode is the node's name on a store shared by several nodes, "" on a store of
// one (where every backend is the node's).
func (a *Agent) clusterNode() string {
	if a.shared {
		return a.nodeName
	}
	return ""
}

func (a *Agent) desiredRuleset() (nft.Ruleset, error) {
	rs, _, err := a.desired()
	return rs, err
}

// desired is desiredRuleset with the compiler of its policies, which can follow the
// changes that come after the read.
func (a *Agent) desired() (nft.Ruleset, *driver.PolicyCompiler, error) {
	r, err := a.records()
	rs := driver.Ruleset(r.nets, r.eps, r.svcs, r.all, a.underDev, a.clusterNode())
	c := driver.NewPolicyCompiler(r.pols, r.nss, r.all, r.eps)
	rs.Policies = c.Policies()
	return rs, c, err
}

// syncRulesetLocked writes the whole desired nftables state in one batch; the caller
// holds dpMu. With ifDiffers it first brings the policies up to date incrementally
// (applyPoliciesLocked), then compares, and writes only when the tables differ: a
// repair, unless the caller knows the store changed (news: another node, a policy),
// which is not drift. The comparison is skipped when the tables were found (or made)
// equal to this very state and nothing committed since.
func (a *Agent) syncRulesetLocked(ifDiffers, news bool) error {
	want, polc, err := a.desired()
	if err != nil {
		a.polc = nil
		return err
	}
	a.polc = polc // read under dpMu: what later changes start from
	if ifDiffers {
		if _, err := a.applyPoliciesLocked(want.Policies); err != nil {
			return err
		}
		gen, genErr := a.nft.Generation()
		if genErr == nil && a.verified && gen == a.verifiedGen {
			verifiedWant := a.verifiedRulesetLocked()
			if reflect.DeepEqual(want, verifiedWant) {
				return nil
			}
			// Tables known to equal verifiedWant: when only services changed (the
			// store's news of a mirrored Service or EndpointSlice), change their
			// elements instead of comparing everything.
			if add, remove, ok := servicesDelta(verifiedWant, want); ok {
				if err := a.servicesUpdateLocked(add, remove); err != nil {
					return err
				}
				if a.verified {
					a.setVerifiedLocked(a.verifiedGen, want) // the same services, in want's order
				}
				return nil
			}
		}
		start := time.Now()
		ok, err := a.nft.InSync(want)
		a.metrics.observeNft("compare", start)
		if err != nil {
			return err
		}
		if ok {
			if after, err := a.nft.Generation(); genErr == nil && err == nil && after == gen {
				a.setVerifiedLocked(gen, want)
			}
			a.appliedPolicies = &want.Policies
			return nil
		}
		if news {
			a.log.Debug("nftables tables follow a change of the store")
		} else {
			a.log.Info("nftables tables differ from the desired state: restoring")
			a.metrics.repairs.WithLabelValues("nftables").Inc()
		}
	}
	defer a.metrics.observeNft("sync", time.Now())
	gen, genErr := a.nft.Generation()
	if err := a.nft.Sync(want); err != nil {
		a.appliedPolicies = nil
		return fmt.Errorf("nftables: %w", err)
	}
	a.appliedPolicies = &want.Policies
	// One batch commits one generation: if nothing else committed, the tables are want.
	if after, err := a.nft.Generation(); genErr == nil && err == nil && after == gen+1 {
		a.setVerifiedLocked(after, want)
	}
	return nil
}

// servicesDelta is what to add and remove to go from have's services to want's, when the
// two rulesets differ in their services only.
func servicesDelta(have, want nft.Ruleset) (add, remove []nft.Service, ok bool) {
	h, w := have, want
	h.Services, w.Services = nil, nil
	if !reflect.DeepEqual(h, w) {
		return nil, nil, false
	}
	add, remove = serviceChanges(have.Services, want.Services)
	return add, remove, true
}

// serviceKey is what names a service's elements in the tables: VIP, protocol, port.
type serviceKey struct {
	vip   netip.Addr
	proto string
	port  uint16
}

func keyOf(s nft.Service) serviceKey { return serviceKey{s.VIP, s.Protocol, s.Port} }

// serviceChanges are the services of after that are new or changed (Update replaces a
// service's elements) and those of before whose VIP, protocol and port after lacks.
func serviceChanges(before, after []nft.Service) (add, remove []nft.Service) {
	old := make(map[serviceKey]nft.Service, len(before))
	for _, s := range before {
		old[keyOf(s)] = s
	}
	for _, s := range after {
		k := keyOf(s)
		if o, found := old[k]; !found || !reflect.DeepEqual(o, s) {
			add = append(add, s)
		}
		delete(old, k)
	}
	for _, s := range before {
		if _, gone := old[keyOf(s)]; gone {
			remove = append(remove, s)
		}
	}
	return add, remove
}

// servicesUpdateLocked changes the elements of services (add: new or changed, remove:
// gone; the caller holds dpMu). When the tables were verified just before and only this
// batch committed, they stay verified, with those services changed in verifiedWant: the
// next Reconcile need not read every service and compare the tables.
func (a *Agent) servicesUpdateLocked(add, remove []nft.Service) error {
	return a.batchKeepingVerifiedLocked(func() error {
		return a.nftUpdateLocked(nft.Delta{Services: add}, nft.Delta{Services: remove})
	}, func() {
		a.verifiedServices = append(a.verifiedServices, serviceBatch{add: add, remove: remove})
	})
}

// serviceBatch is the services one element batch added (new or changed) and removed.
type serviceBatch struct{ add, remove []nft.Service }

// setVerifiedLocked records that the tables equaled want at generation gen (the caller
// holds dpMu).
func (a *Agent) setVerifiedLocked(gen uint32, want nft.Ruleset) {
	a.verified, a.verifiedGen, a.verifiedWant, a.verifiedServices = true, gen, want, nil
}

// verifiedRulesetLocked is verifiedWant with the service batches since folded in (the
// caller holds dpMu).
func (a *Agent) verifiedRulesetLocked() nft.Ruleset {
	if len(a.verifiedServices) > 0 {
		a.verifiedWant.Services = withServiceChanges(a.verifiedWant.Services, a.verifiedServices)
		a.verifiedServices = nil
	}
	return a.verifiedWant
}

// batchKeepingVerifiedLocked runs apply, which commits at most one nftables batch (the
// caller holds dpMu). When the tables were verified before and that batch was the only
// commit since, they stay verified, and keep makes verifiedWant say what the batch
// changed; when another commit came between, they are verified no more; when nothing
// committed, nothing changes.
func (a *Agent) batchKeepingVerifiedLocked(apply func() error, keep func()) error {
	gen, genErr := a.nft.Generation()
	verified := genErr == nil && a.verified && gen == a.verifiedGen
	if err := apply(); err != nil {
		a.verified = false
		return err
	}
	switch after, err := a.nft.Generation(); {
	case err == nil && genErr == nil && after == gen:
	case verified && err == nil && after == gen+1:
		a.verifiedGen = after
		keep()
	default:
		a.verified = false
	}
	return nil
}

// withServiceChanges is svcs after the batches, in order: a service a batch adds
// replaces or joins those of its key, one it removes leaves (a new slice: svcs may be
// shared).
func withServiceChanges(svcs []nft.Service, batches []serviceBatch) []nft.Service {
	last := map[serviceKey]*nft.Service{} // by key, the last batch's: nil when removed
	var order []serviceKey                // the keys the batches add, first time first
	added := map[serviceKey]bool{}
	for _, b := range batches {
		for i := range b.add {
			k := keyOf(b.add[i])
			if !added[k] {
				added[k] = true
				order = append(order, k)
			}
			last[k] = &b.add[i]
		}
		for _, s := range b.remove {
			last[keyOf(s)] = nil
		}
	}
	out := make([]nft.Service, 0, len(svcs)+len(order))
	for _, s := range svcs {
		if _, changed := last[keyOf(s)]; !changed {
			out = append(out, s)
		}
	}
	for _, k := range order {
		if s := last[k]; s != nil {
			out = append(out, *s)
		}
	}
	return out
}

// applyPoliciesLocked changes the tables' policies from what they hold to want, in one
// incremental batch: their elements (nft.PolicyDelta) when every policy keeps its
// layout, else their rules and sets too (UpdatePolicies: a policy added or removed). It
// returns false, having changed nothing, when the tables' policies are unknown or
// cannot be updated so (none before or after, the first egress policy, sets missing):
// the caller compares and syncs the tables whole. When the tables were verified just
// before and only this batch committed, they stay verified, with want's policies.
func (a *Agent) applyPoliciesLocked(want []nft.Policy) (bool, error) {
	if a.appliedPolicies == nil {
		return false, nil
	}
	add, remove, same := nft.PolicyDelta(*a.appliedPolicies, want)
	if same && len(add.Policies)+len(remove.Policies)+len(remove.IngressIsolated)+len(remove.EgressIsolated) == 0 {
		a.appliedPolicies = &want
		return true, nil
	}
	err := a.batchKeepingVerifiedLocked(func() error {
		if same {
			return a.nftUpdateLocked(add, remove)
		}
		defer a.metrics.observeNft("policies", time.Now())
		return a.nft.UpdatePolicies(*a.appliedPolicies, want)
	}, func() { a.verifiedWant.Policies = want })
	switch {
	case errors.Is(err, nft.ErrNoTable) || errors.Is(err, nft.ErrConflict):
		return false, nil // the comparison finds them different: a sync rewrites them
	case err != nil:
		return false, fmt.Errorf("nftables: update policies: %w", err)
	}
	a.appliedPolicies = &want
	return true, nil
}

// resyncIfDiffers rewrites the tables when they differ from the store's desired state.
//
// An ADD commits its endpoint to the store before it adds the endpoint's elements to the
// tables, and a DEL marks its endpoint detaching (out of the desired state) before the
// detach takes the elements out: while one is in flight, a difference may be its own,
// not drift. Then the comparison waits for the next Reconcile, once: a difference that
// lasts that long is rewritten then, and counted as a repair only when nothing is in
// flight (else the tables merely follow the store). At startup the tables are written
// from the store (on a new node, created): no repair either.
func (a *Agent) resyncIfDiffers(startup bool) error {
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	inFlight := a.changesInFlight()
	if inFlight && !startup && !a.repairDeferred {
		a.repairDeferred = true
		return nil
	}
	a.repairDeferred = false
	return a.syncRulesetLocked(true, startup || inFlight)
}

// changesInFlight reports whether an ADD or a DEL has changed the store and not yet the
// tables (or not all of them).
func (a *Agent) changesInFlight() bool {
	a.pendingMu.Lock()
	defer a.pendingMu.Unlock()
	return a.attaching.Load() > 0 || len(a.pending) > 0
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

// portNode is the node whose host ports ep publishes: its own on a shared store, this
// node on a store of one node (whose endpoints are all this node's: see mine).
func (a *Agent) portNode(ep api.Endpoint) string {
	if !a.shared || ep.Node == "" {
		return a.nodeName
	}
	return ep.Node
}

// reservePorts records an endpoint's published ports in tx, refusing ports another
// endpoint publishes on the same node.
func (a *Agent) reservePorts(tx store.Tx, ep api.Endpoint) error {
	if err := spec.ValidatePorts(ep.Ports, ep.IPs); err != nil {
		return invalidConfig(err)
	}
	node, owner := a.portNode(ep), ep.EndpointKey.String()
	for _, m := range ep.Ports {
		owners, err := tx.PortOwners(node, m.Protocol, m.HostPort)
		if err != nil {
			return err
		}
		if _, other, clash := spec.PortConflict(m, owners); clash && other != owner {
			return api.Errorf(api.CodeAddressInUse, "port %s: host port %d/%s is already published by %s", m, m.HostPort, m.Protocol, other)
		}
		if err := tx.PutPort(node, m.Protocol, m.HostIP, m.HostPort, owner); err != nil {
			return err
		}
	}
	return nil
}

// releasePorts removes an endpoint's published ports from tx.
func (a *Agent) releasePorts(tx store.Tx, ep api.Endpoint) error {
	node := a.portNode(ep)
	for _, m := range ep.Ports {
		if err := tx.DeletePort(node, m.Protocol, m.HostIP, m.HostPort); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// publish installs an endpoint's data path elements: anti-spoofing and NAT ports in
// one nftables batch (before its host veth comes up), proxies in port mode proxy.
func (a *Agent) publish(e driver.Endpoint) error {
	if err := a.nftUpdate(e.Tables, nft.Delta{}); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, m := range e.Proxies {
		if err := a.proxy.Add(m); err != nil {
			a.unpublish(e, true)
			return api.Errorf(api.CodeAddressInUse, "%v", err)
		}
	}
	return nil
}

// unpublishPorts removes an endpoint's published ports (DNAT elements or proxies) and
// flushes the conntrack entries of its UDP NAT mappings, so that datagrams of a flow
// already seen reach a new backend at once. DEL does this before it answers.
func (a *Agent) unpublishPorts(e driver.Endpoint) {
	if len(e.Tables.Ports) > 0 {
		if err := a.nftUpdate(nft.Delta{}, nft.Delta{Ports: e.Tables.Ports}); err != nil {
			a.log.Error("nftables: remove published ports", "hostIf", e.Kernel.HostIf, "err", err)
		}
	}
	for _, m := range e.Proxies {
		if err := a.proxy.Remove(m); err != nil {
			a.log.Error("remove proxy", "mapping", m.String(), "err", err)
		}
	}
	type hostPort struct {
		ip   netip.Addr
		port uint16
	}
	flushed := map[hostPort]bool{}
	for _, m := range e.Tables.Ports {
		if hp := (hostPort{m.HostIP, m.HostPort}); m.Protocol == "udp" && !flushed[hp] {
			flushed[hp] = true
			if _, err := a.node.FlushConntrack("udp", m.HostIP, m.HostPort); err != nil {
				a.log.Error("flush conntrack", "mapping", m.String(), "err", err)
			}
		}
	}
}

// unpublish removes everything publish installed. Removing nftables elements costs the
// kernel an RCU grace period (~15 ms a batch), so DEL leaves the anti-spoofing
// elements to the detach worker. Errors are logged: Reconcile repairs what is left.
func (a *Agent) unpublish(e driver.Endpoint, portsToo bool) {
	if portsToo {
		a.unpublishPorts(e)
	}
	if err := a.nftUpdate(nft.Delta{}, nft.Delta{Endpoints: e.Tables.Endpoints}); err != nil {
		a.log.Error("nftables: remove endpoint elements", "hostIf", e.Kernel.HostIf, "err", err)
	}
}

// nftUpdate applies an incremental change under dpMu.
func (a *Agent) nftUpdate(add, remove nft.Delta) error {
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	return a.nftUpdateLocked(add, remove)
}

// nftUpdateLocked applies an incremental change; the caller holds dpMu. A failed update
// leaves the tables short of what the store says: the next Reconcile compares them in
// full (see verified).
func (a *Agent) nftUpdateLocked(add, remove nft.Delta) error {
	defer a.metrics.observeNft("update", time.Now())
	err := a.nft.Update(add, remove)
	if err != nil {
		a.verified = false
	}
	return err
}

// tablesUnchanged reports whether no nftables change was committed in the node since
// Reconcile last found the tables equal to the store's desired state: then they still
// are (every change of the desired state comes with an update of the tables, which
// changes the generation, or fails and clears verified), and the comparison is skipped.
func (a *Agent) tablesUnchanged() bool {
	gen, err := a.nft.Generation()
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	return err == nil && a.verified && gen == a.verifiedGen
}

// markVerified records that the tables equaled want at generation gen.
func (a *Agent) markVerified(gen uint32, want nft.Ruleset) {
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	a.setVerifiedLocked(gen, want)
	a.appliedPolicies = &want.Policies
	a.repairDeferred = false
}

// reconcileTables compares the nftables tables with the store's desired state and
// rewrites them when they differ. When they are equal and no change was committed during
// the comparison, the generation is recorded: the next Reconcile skips the comparison
// until something changes. startup: the agent's first Reconcile (resyncIfDiffers).
func (a *Agent) reconcileTables(startup bool) error {
	gen, genErr := a.nft.Generation()
	want, err := a.desiredRuleset()
	if err != nil {
		return err
	}
	start := time.Now()
	ok, err := a.nft.InSync(want)
	a.metrics.observeNft("compare", start)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if !ok {
		return a.resyncIfDiffers(startup)
	}
	if after, err := a.nft.Generation(); genErr == nil && err == nil && after == gen {
		a.markVerified(gen, want)
	}
	return nil
}

// reconcileDataplane makes nftables and the proxies match the store. The comparison of
// the tables is skipped when nothing changed since they were last found equal; it runs
// without dpMu (it may take a while with many services), and a difference is checked
// again under dpMu, where no update is in flight, before the whole state is rewritten.
func (a *Agent) reconcileDataplane(startup bool) error {
	if !a.tablesUnchanged() {
		if err := a.reconcileTables(startup); err != nil {
			return err
		}
	}
	r, err := a.records()
	if err != nil {
		return err
	}
	return a.proxy.Sync(driver.Proxies(r.nets, r.eps))
}
