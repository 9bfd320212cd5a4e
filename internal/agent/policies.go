package agent

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/policy"
	"github.com/podnet/podnet/internal/store"
)

// Network policies (Kubernetes NetworkPolicy semantics): stored cluster-wide, compiled
// per node into podnet's nftables table (driver.Policies: sets of addresses, rules per
// policy rule), so that a pod joining a selector changes set elements only.
//
// What changes the compiled policies: a policy applied or removed, a namespace
// relabelled, an endpoint attached, detached or relabelled, on this node or (through the
// store's watch) another. Each of them syncs the tables with the store's desired state
// (syncPolicies). While any policy exists, bridged packets cross the node's inet hooks
// (kernel BridgeNetfilter), so that two pods of one bridge meet their policies too; it
// is never turned off again (the node's owner may rely on it: Docker and kube-proxy do).
//
// Connections established before a policy change are not cut by it: their packets are
// accepted as established (ct state) before the policy chains.

// ApplyPolicies validates policies (defaulted as the Kubernetes API does) and stores
// them, replacing those with the same namespace and name, all or none.
func (a *Agent) ApplyPolicies(pols []api.NetworkPolicy) ([]api.NetworkPolicy, error) {
	if len(pols) == 0 {
		return nil, api.AsError(api.Missing("policy apply", "policies"))
	}
	seen := map[string]bool{}
	for i := range pols {
		policy.Default(&pols[i])
		p := &pols[i]
		if err := policy.Validate(*p); err != nil {
			return nil, invalidConfig(err)
		}
		if key := p.Namespace + "/" + p.Name; seen[key] {
			return nil, api.AsError(api.Invalid(fmt.Sprintf("policy %q", key), "name", p.Name, "given twice"))
		} else {
			seen[key] = true
		}
	}
	err := a.store.Update(func(tx store.Tx) error {
		for i := range pols {
			old, ok, err := tx.NetworkPolicy(pols[i].Namespace, pols[i].Name)
			if err != nil {
				return err
			}
			if err := notSourced("policy", old.Namespace+"/"+old.Name, old.Source); err != nil {
				return err
			}
			pols[i].Created, pols[i].Source = a.created(), ""
			if ok {
				pols[i].Created = old.Created
			}
			if err := tx.PutNetworkPolicy(pols[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, p := range pols {
		a.log.Info("network policy applied", "policy", p.Namespace+"/"+p.Name)
	}
	a.followPolicies("policy apply", policiesNamed(pols...))
	return pols, nil
}

// Policies lists the policies of a namespace, or of all when ns is "".
func (a *Agent) Policies(ns string) (pols []api.NetworkPolicy, err error) {
	err = a.store.View(func(tx store.Tx) error {
		pols, err = tx.NetworkPolicies(ns)
		return err
	})
	if pols == nil {
		pols = []api.NetworkPolicy{}
	}
	return pols, err
}

// Policy returns one policy.
func (a *Agent) Policy(ns, name string) (p api.NetworkPolicy, err error) {
	err = a.store.View(func(tx store.Tx) error {
		var ok bool
		if p, ok, err = tx.NetworkPolicy(ns, name); err == nil && !ok {
			err = api.Errorf(api.CodeNotFound, "policy %s/%s does not exist", ns, name)
		}
		return err
	})
	return p, err
}

// DeletePolicy removes a policy.
func (a *Agent) DeletePolicy(ns, name string) error {
	err := a.store.Update(func(tx store.Tx) error {
		if old, ok, err := tx.NetworkPolicy(ns, name); err != nil {
			return err
		} else if ok {
			if err := notSourced("policy", ns+"/"+name, old.Source); err != nil {
				return err
			}
		}
		err := tx.DeleteNetworkPolicy(ns, name)
		if errors.Is(err, store.ErrNotFound) {
			return api.Errorf(api.CodeNotFound, "policy %s/%s does not exist", ns, name)
		}
		return err
	})
	if err != nil {
		return err
	}
	a.log.Info("network policy removed", "policy", ns+"/"+name)
	a.followPolicies("policy rm", policiesNamed(api.NetworkPolicy{Namespace: ns, Name: name}))
	return nil
}

// ExplainPolicy decides one connection as the policies do (policy.Decide), in both
// directions, naming the policies and rules that decide it.
func (a *Agent) ExplainPolicy(req api.PolicyExplainRequest) (policy.Verdict, error) {
	r, err := a.records()
	if err != nil {
		return policy.Verdict{}, err
	}
	w := policy.World{Policies: r.pols, Namespaces: r.nss, Endpoints: r.all}
	from, err := explainPeer(w, r.all, "from", req.From)
	if err != nil {
		return policy.Verdict{}, err
	}
	to, err := explainPeer(w, r.all, "to", req.To)
	if err != nil {
		return policy.Verdict{}, err
	}
	proto := strings.ToUpper(req.Protocol)
	switch proto {
	case "":
		proto = policy.ProtocolTCP
	case policy.ProtocolTCP, policy.ProtocolUDP, policy.ProtocolSCTP:
	default:
		return policy.Verdict{}, api.AsError(api.Invalid("policy explain", "protocol", req.Protocol, "want tcp, udp or sctp"))
	}
	return policy.Decide(w, from, to, req.Port, proto), nil
}

// explainPeer finds what s names: an endpoint (NAMESPACE/NAME, NAME in the default
// namespace, or a container ID) or an address (a pod's, or one outside the pods).
func explainPeer(w policy.World, eps []api.Endpoint, field, s string) (policy.Peer, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return w.PeerOf(a.Unmap()), nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		ns, name = api.DefaultNamespace, s
	}
	i := slices.IndexFunc(eps, func(ep api.Endpoint) bool {
		return ep.ContainerID == s || ep.Name == name && cmp.Or(ep.Namespace, api.DefaultNamespace) == ns
	})
	if i < 0 {
		return policy.Peer{}, api.AsError(api.Invalid("policy explain", field, s, "no endpoint of that name, container ID or address"))
	}
	return policy.EndpointPeer(eps[i], netip.Addr{}), nil
}

// hasPolicies reports whether the store holds a network policy.
func (a *Agent) hasPolicies() bool {
	var n int
	err := a.store.View(func(tx store.Tx) error {
		pols, err := tx.NetworkPolicies("")
		n = len(pols)
		return err
	})
	return err != nil || n > 0 // when in doubt, sync
}

// policyInputsChanged applies a change of what the policies compile to by reading the
// store whole: the tables are synced with its desired state (a no-op when nothing
// changed for this node). Changes the agent knows one by one go through followPolicies.
func (a *Agent) policyInputsChanged() {
	if err := a.syncPolicies(); err != nil {
		a.log.Error("network policies: sync the tables", "err", err)
	}
}

// syncPolicies makes the tables follow the store after a change of the policies'
// inputs (syncRulesetLocked: an incremental update of the policies, unless there was no
// policy or the tables lack what the update needs), and lets bridged packets meet the
// policies once any exists.
func (a *Agent) syncPolicies() error {
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	return a.syncPoliciesLocked()
}

// followPolicies applies a change of the policies' inputs that the caller committed to
// the store: change reads what changed and tells the compiler (polc), and the tables
// follow with what that changed in the compiled policies (applyPoliciesLocked). A change
// costs what it touches (one pod: its place in each policy; one policy: the pods of the
// namespaces it reaches), not what the store holds. Without a compiler (before the
// first sync, after an error), or when the tables cannot be updated so, the tables are
// synced with the store's whole state instead. Errors are logged: Reconcile repairs.
func (a *Agent) followPolicies(what string, change func(tx store.Tx, c *driver.PolicyCompiler) error) {
	if err := a.followPoliciesErr(change); err != nil {
		a.log.Error("network policies: update the tables", "change", what, "err", err)
	}
}

func (a *Agent) followPoliciesErr(change func(tx store.Tx, c *driver.PolicyCompiler) error) error {
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	if a.polc == nil || a.appliedPolicies == nil {
		return a.syncPoliciesLocked()
	}
	if err := a.store.View(func(tx store.Tx) error { return change(tx, a.polc) }); err != nil {
		a.polc = nil // it may hold half the change
		return err
	}
	want := a.polc.Policies()
	if len(want) > 0 {
		if err := a.node.BridgeNetfilter(true); err != nil {
			return err
		}
	}
	if done, err := a.applyPoliciesLocked(want); done || err != nil {
		return err
	}
	return a.syncPoliciesLocked()
}

// syncPoliciesLocked is syncPolicies for a caller that holds dpMu.
func (a *Agent) syncPoliciesLocked() error {
	if a.hasPolicies() {
		if err := a.node.BridgeNetfilter(true); err != nil {
			return err
		}
	}
	return a.syncRulesetLocked(true, true)
}

// policiesNamed tells the compiler the policies' current records (or that they are
// gone).
func policiesNamed(pols ...api.NetworkPolicy) func(store.Tx, *driver.PolicyCompiler) error {
	return func(tx store.Tx, c *driver.PolicyCompiler) error {
		for _, p := range pols {
			cur, ok, err := tx.NetworkPolicy(p.Namespace, p.Name)
			switch {
			case err != nil:
				return err
			case ok:
				c.SetPolicy(cur)
			default:
				c.DeletePolicy(p.Namespace, p.Name)
			}
		}
		return nil
	}
}

// namespaceNamed tells the compiler a namespace's current record (or that it has none).
func namespaceNamed(name string) func(store.Tx, *driver.PolicyCompiler) error {
	return func(tx store.Tx, c *driver.PolicyCompiler) error {
		ns, ok, err := tx.Namespace(name)
		switch {
		case err != nil:
			return err
		case ok:
			c.SetNamespace(ns)
		default:
			c.DeleteNamespace(name)
		}
		return nil
	}
}

// endpointsKeyed tells the compiler the endpoints' current records (or that they are
// gone).
func (a *Agent) endpointsKeyed(keys ...api.EndpointKey) func(store.Tx, *driver.PolicyCompiler) error {
	return func(tx store.Tx, c *driver.PolicyCompiler) error {
		for _, k := range keys {
			ep, ok, err := tx.Endpoint(k)
			switch {
			case err != nil:
				return err
			case ok:
				c.SetEndpoint(ep, a.mine(ep))
			default:
				c.DeleteEndpoint(k)
			}
		}
		return nil
	}
}
