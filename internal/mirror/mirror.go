// Package mirror writes the objects of an outside source (podnet controller, from the
// Kubernetes API) into podnet's store: namespaces, pods (the labels and named ports of
// the endpoints attached under their names), services with the VIPs and backends the
// source gives, network policies, and nodes (their pod ranges and address, on the
// node records the agents keep). The agent applies a request that came through its
// socket with it; the controller applies it to a shared store (etcd) directly, where
// every agent sees the change through its watch.
package mirror

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/policy"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// ServicePool is the name under which service VIPs are allocated in the store, whether
// podnet chose them or the source gave them: a VIP is never held by two services.
const ServicePool = "_services"

// ServiceOwner is the IPAM owner of a service's VIPs.
func ServiceOwner(ns, name string) string { return "service/" + ns + "/" + name }

// Result says what Apply did.
type Result struct {
	// Errors has, per change in request order, "" or why it was refused.
	Errors []string
	// Changed is true when anything was written.
	Changed bool
	// Relabelled are the endpoints whose labels or named ports a pod changed: each as it
	// was, then as it is now.
	Relabelled []api.Endpoint
}

// Apply applies req's changes, in order, in tx. A change that is invalid, or that would
// take a VIP another service holds, is refused (its error in Result.Errors) and the
// others go on; an object identical to what the store holds is not written again. A
// delete removes the object only when it came from req.Source. Apply may run more than
// once for one request (store.Store.Update retries), so it keeps no state.
func Apply(tx store.Tx, req api.MirrorRequest, now time.Time) (Result, error) {
	if req.Source == "" {
		return Result{}, api.Invalid("mirror request", "source", req.Source, "a source is required")
	}
	res := Result{Errors: make([]string, len(req.Changes))}
	ap := &applier{tx: tx}
	for i, c := range req.Changes {
		changed, err := ap.apply(req.Source, c, now)
		var r refusal
		switch {
		case errors.As(err, &r):
			res.Errors[i] = r.Error()
		case err != nil:
			return Result{}, err // the store failed: nothing commits
		}
		res.Changed = res.Changed || changed
	}
	res.Relabelled = ap.relabelled
	return res, nil
}

// refusal is a change Apply refuses (the others go on), as opposed to a failure of the
// store (nothing commits).
type refusal struct{ error }

func refuse(err error) error { return refusal{err} }

// applier applies the changes of one request.
type applier struct {
	tx store.Tx
	// pods indexes the endpoints by pod (NAMESPACE/NAME), read once per request, at its
	// first pod.
	pods map[string][]api.EndpointKey
	// relabelled are the endpoints pods changed, before and after (Result.Relabelled).
	relabelled []api.Endpoint
}

func (ap *applier) apply(source string, c api.MirrorChange, now time.Time) (bool, error) {
	tx := ap.tx
	switch c.Kind {
	case api.KindNamespace:
		return applyNamespace(tx, source, c)
	case api.KindPod:
		return ap.applyPod(source, c)
	case api.KindService:
		return applyService(tx, source, c, now)
	case api.KindNetworkPolicy:
		return applyPolicy(tx, source, c, now)
	case api.KindNode:
		return applyNode(tx, source, c)
	}
	return false, refuse(api.Invalid("mirror change "+c.Key(), "kind", c.Kind, "want %s, %s, %s, %s or %s",
		api.KindNamespace, api.KindPod, api.KindService, api.KindNetworkPolicy, api.KindNode))
}

// mismatch refuses a change whose object does not carry the names of the change.
func mismatch(c api.MirrorChange, ns, name string) error {
	if ns != c.Namespace || name != c.Name {
		return api.Invalid("mirror change "+c.Key(), "object", ns+"/"+name, "names another object than the change")
	}
	return nil
}

func applyNamespace(tx store.Tx, source string, c api.MirrorChange) (bool, error) {
	old, ok, err := tx.Namespace(c.Name)
	if err != nil {
		return false, err
	}
	if c.Delete {
		if !ok || old.Source != source {
			return false, nil
		}
		return true, tx.DeleteNamespace(c.Name)
	}
	if c.NS == nil {
		return false, refuse(api.Invalid("mirror change "+c.Key(), "ns", "", "a put needs the namespace"))
	}
	ns := *c.NS
	ns.Source = source
	if err := mismatch(c, "", ns.Name); err != nil {
		return false, refuse(err)
	}
	if err := spec.ValidateNamespace(ns.Name); err != nil {
		return false, refuse(api.Invalid("namespace "+ns.Name, "name", ns.Name, "%v", err))
	}
	if err := spec.ValidateLabels(ns.Labels); err != nil {
		return false, refuse(api.Invalid("namespace "+ns.Name, "labels", fmt.Sprint(ns.Labels), "%v", err))
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[api.NamespaceNameLabel] = ns.Name
	if ok && reflect.DeepEqual(old, ns) {
		return false, nil
	}
	return true, tx.PutNamespace(ns)
}

// applyPod records a pod and gives its labels and named ports to the endpoints attached
// under its namespace and name (an endpoint attached later takes them from the record:
// PodOf).
func (ap *applier) applyPod(source string, c api.MirrorChange) (bool, error) {
	tx := ap.tx
	old, ok, err := tx.Pod(c.Namespace, c.Name)
	if err != nil {
		return false, err
	}
	if c.Delete {
		if !ok || old.Source != source {
			return false, nil
		}
		return true, tx.DeletePod(c.Namespace, c.Name)
	}
	if c.Pod == nil {
		return false, refuse(api.Invalid("mirror change "+c.Key(), "pod", "", "a put needs the pod"))
	}
	p := *c.Pod
	p.Source = source
	if err := mismatch(c, p.Namespace, p.Name); err != nil {
		return false, refuse(err)
	}
	what := "pod " + p.Namespace + "/" + p.Name
	if err := spec.ValidateNamespace(p.Namespace); err != nil {
		return false, refuse(api.Invalid(what, "namespace", p.Namespace, "%v", err))
	}
	if err := spec.ValidateLabels(p.Labels); err != nil {
		return false, refuse(api.Invalid(what, "labels", fmt.Sprint(p.Labels), "%v", err))
	}
	named, err := spec.ValidateNamedPorts(p.NamedPorts)
	if err != nil {
		return false, refuse(api.Invalid(what, "namedPorts", fmt.Sprint(p.NamedPorts), "%v", err))
	}
	p.NamedPorts = named
	if ok && reflect.DeepEqual(old, p) {
		return false, nil
	}
	if err := tx.PutPod(p); err != nil {
		return false, err
	}
	if ap.pods == nil {
		eps, err := tx.Endpoints("")
		if err != nil {
			return false, err
		}
		ap.pods = map[string][]api.EndpointKey{}
		for _, ep := range eps {
			if ep.Name != "" {
				k := namespaceOf(ep.Namespace) + "/" + ep.Name
				ap.pods[k] = append(ap.pods[k], ep.EndpointKey)
			}
		}
	}
	for _, k := range ap.pods[p.Namespace+"/"+p.Name] {
		ep, ok, err := tx.Endpoint(k)
		if err != nil {
			return false, err
		}
		if !ok || ep.State == api.StateDetaching ||
			reflect.DeepEqual(ep.Labels, p.Labels) && reflect.DeepEqual(ep.NamedPorts, p.NamedPorts) {
			continue
		}
		before := ep
		ep.Labels, ep.NamedPorts = p.Labels, p.NamedPorts
		if err := tx.PutEndpoint(ep); err != nil {
			return false, err
		}
		ap.relabelled = append(ap.relabelled, before, ep)
	}
	return true, nil
}

// PodOf gives ep the labels and named ports of its pod's record, when the source has
// one (the attach of a pod that the API already described).
func PodOf(tx store.Tx, ep *api.Endpoint) error {
	if ep.Name == "" {
		return nil
	}
	p, ok, err := tx.Pod(namespaceOf(ep.Namespace), ep.Name)
	if err != nil || !ok {
		return err
	}
	ep.Labels, ep.NamedPorts = p.Labels, p.NamedPorts
	return nil
}

func namespaceOf(ns string) string {
	if ns == "" {
		return api.DefaultNamespace
	}
	return ns
}

func applyService(tx store.Tx, source string, c api.MirrorChange, now time.Time) (bool, error) {
	old, ok, err := tx.Service(c.Namespace, c.Name)
	if err != nil {
		return false, err
	}
	owner := ServiceOwner(c.Namespace, c.Name)
	if c.Delete {
		if !ok || old.Source != source {
			return false, nil
		}
		if _, err := ipam.Release(tx, ServicePool, owner); err != nil {
			return false, err
		}
		return true, tx.DeleteService(c.Namespace, c.Name)
	}
	if c.Service == nil {
		return false, refuse(api.Invalid("mirror change "+c.Key(), "service", "", "a put needs the service"))
	}
	sp := *c.Service
	sp.Source = source
	if err := mismatch(c, sp.Namespace, sp.Name); err != nil {
		return false, refuse(err)
	}
	svc, err := spec.CanonicalizeService(sp)
	if err != nil {
		return false, refuse(err)
	}
	svc.Created = now
	if ok {
		svc.Created = old.Created
		if reflect.DeepEqual(old, svc) {
			return false, nil
		}
	}
	if err := NodePortsFree(tx, svc); err != nil {
		if _, taken := err.(*api.ValidationError); taken {
			return false, refuse(err)
		}
		return false, err
	}
	// The VIPs change hands only between free and this service.
	for _, v := range svc.VIPs {
		holder, held, err := tx.Allocation(ServicePool, v)
		if err != nil {
			return false, err
		}
		if held && holder != owner {
			return false, refuse(api.Invalid("service "+sp.Namespace+"/"+sp.Name, "vips", v.String(), "held by %s", strings.TrimPrefix(holder, "service/")))
		}
	}
	if _, err := ipam.Release(tx, ServicePool, owner); err != nil {
		return false, err
	}
	for _, v := range svc.VIPs {
		if err := tx.PutAllocation(ServicePool, v, owner); err != nil {
			return false, err
		}
	}
	return true, tx.PutService(svc)
}

// NodePortsFree refuses a service whose NodePort another service has (for the same
// protocol): every node's tables can dispatch a node port to one service only.
func NodePortsFree(tx store.Tx, svc api.Service) error {
	want := map[string]bool{}
	for _, p := range svc.Ports {
		if p.NodePort != 0 {
			want[fmt.Sprintf("%d/%s", p.NodePort, p.Protocol)] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	svcs, err := tx.Services("")
	if err != nil {
		return err
	}
	for _, o := range svcs {
		if o.Namespace == svc.Namespace && o.Name == svc.Name {
			continue
		}
		for _, p := range o.Ports {
			if np := fmt.Sprintf("%d/%s", p.NodePort, p.Protocol); p.NodePort != 0 && want[np] {
				return api.Invalid("service "+svc.Namespace+"/"+svc.Name, "nodePort", np, "held by service %s/%s", o.Namespace, o.Name)
			}
		}
	}
	return nil
}

func applyPolicy(tx store.Tx, source string, c api.MirrorChange, now time.Time) (bool, error) {
	old, ok, err := tx.NetworkPolicy(c.Namespace, c.Name)
	if err != nil {
		return false, err
	}
	if c.Delete {
		if !ok || old.Source != source {
			return false, nil
		}
		return true, tx.DeleteNetworkPolicy(c.Namespace, c.Name)
	}
	if c.Policy == nil {
		return false, refuse(api.Invalid("mirror change "+c.Key(), "policy", "", "a put needs the policy"))
	}
	p := *c.Policy
	p.Source = source
	if err := mismatch(c, p.Namespace, p.Name); err != nil {
		return false, refuse(err)
	}
	policy.Default(&p)
	if err := policy.Validate(p); err != nil {
		return false, refuse(err)
	}
	p.Created = now
	if ok {
		p.Created = old.Created
		if reflect.DeepEqual(old, p) {
			return false, nil
		}
	}
	return true, tx.PutNetworkPolicy(p)
}

// applyNode puts what the source says of a node (PodCIDRs, InternalIP, Source) on its
// record and keeps the rest, its agent's; a node whose agent has not registered yet
// gets a record of those and its name. A delete clears them, and removes the record
// only when no agent ever wrote it (IP and Registered zero). A pod range that overlaps
// another node's is refused: two nodes would claim the same blocks.
func applyNode(tx store.Tx, source string, c api.MirrorChange) (bool, error) {
	if c.Namespace != "" {
		return false, refuse(api.Invalid("mirror change "+c.Key(), "namespace", c.Namespace, "a node has no namespace"))
	}
	old, ok, err := tx.Node(c.Name)
	if err != nil {
		return false, err
	}
	if c.Delete {
		if !ok || old.Source != source {
			return false, nil
		}
		if !old.IP.IsValid() && old.Registered.IsZero() {
			return true, tx.DeleteNode(c.Name)
		}
		n := old
		n.PodCIDRs, n.InternalIP, n.Source = nil, netip.Addr{}, ""
		return true, tx.PutNode(n)
	}
	if c.Node == nil {
		return false, refuse(api.Invalid("mirror change "+c.Key(), "node", "", "a put needs the node"))
	}
	in := *c.Node
	if err := mismatch(c, "", in.Name); err != nil {
		return false, refuse(err)
	}
	what := "node " + in.Name
	if in.Name == "" {
		return false, refuse(api.Missing(what, "name"))
	}
	cidrs, err := podCIDRs(what, in.PodCIDRs)
	if err != nil {
		return false, refuse(err)
	}
	if a := in.InternalIP; a.IsValid() && (a.Zone() != "" || a.IsUnspecified()) {
		return false, refuse(api.Invalid(what, "internalIP", a.String(), "want a unicast address without zone"))
	}
	if len(cidrs) > 0 {
		nodes, err := tx.Nodes()
		if err != nil {
			return false, err
		}
		for _, o := range nodes {
			if o.Name == in.Name {
				continue
			}
			for _, op := range o.PodCIDRs {
				for _, p := range cidrs {
					if p.Overlaps(op) {
						return false, refuse(api.Invalid(what, "podCIDRs", p.String(), "overlaps podCIDR %s of node %s", op, o.Name))
					}
				}
			}
		}
	}
	n := old
	if !ok {
		n = api.Node{Name: in.Name}
	}
	n.PodCIDRs, n.InternalIP, n.Source = cidrs, in.InternalIP.Unmap(), source
	if ok && reflect.DeepEqual(old, n) {
		return false, nil
	}
	return true, tx.PutNode(n)
}

// podCIDRs checks a node's pod ranges: valid prefixes without host bits or zone, which
// do not overlap one another. None is nil.
func podCIDRs(what string, ps []netip.Prefix) ([]netip.Prefix, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(ps))
	for i, p := range ps {
		switch {
		case !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6():
			return nil, api.Invalid(what, fmt.Sprintf("podCIDRs[%d]", i), p.String(), "not a CIDR")
		case p != p.Masked():
			return nil, api.Invalid(what, fmt.Sprintf("podCIDRs[%d]", i), p.String(), "has host bits (the range is %s)", p.Masked())
		}
		for _, q := range out {
			if p.Overlaps(q) {
				return nil, api.Invalid(what, fmt.Sprintf("podCIDRs[%d]", i), p.String(), "overlaps podCIDR %s of the same node", q)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// Inventory lists the keys (api.MirrorChange.Key) of the objects of source in the store.
func Inventory(tx store.Tx, source string) ([]string, error) {
	var keys []string
	nss, err := tx.Namespaces()
	if err != nil {
		return nil, err
	}
	for _, ns := range nss {
		if ns.Source == source {
			keys = append(keys, api.MirrorChange{Kind: api.KindNamespace, Name: ns.Name}.Key())
		}
	}
	pods, err := tx.Pods("")
	if err != nil {
		return nil, err
	}
	for _, p := range pods {
		if p.Source == source {
			keys = append(keys, api.MirrorChange{Kind: api.KindPod, Namespace: p.Namespace, Name: p.Name}.Key())
		}
	}
	svcs, err := tx.Services("")
	if err != nil {
		return nil, err
	}
	for _, s := range svcs {
		if s.Source == source {
			keys = append(keys, api.MirrorChange{Kind: api.KindService, Namespace: s.Namespace, Name: s.Name}.Key())
		}
	}
	pols, err := tx.NetworkPolicies("")
	if err != nil {
		return nil, err
	}
	for _, p := range pols {
		if p.Source == source {
			keys = append(keys, api.MirrorChange{Kind: api.KindNetworkPolicy, Namespace: p.Namespace, Name: p.Name}.Key())
		}
	}
	nodes, err := tx.Nodes()
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if n.Source == source {
			keys = append(keys, api.MirrorChange{Kind: api.KindNode, Name: n.Name}.Key())
		}
	}
	slices.Sort(keys)
	return keys, nil
}
