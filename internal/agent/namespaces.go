package agent

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// Namespaces and their labels, which network policies select namespaces by.
//
// A namespace exists as soon as something lives in it (an endpoint, a service, a
// policy) or it has labels of its own (a record in the store). Every namespace carries
// api.NamespaceNameLabel with its name, as in Kubernetes; that label is never stored and
// cannot be set or removed.

// Namespaces lists the namespaces, sorted by name, with their labels.
func (a *Agent) Namespaces() (out []api.Namespace, err error) {
	err = a.store.View(func(tx store.Tx) error {
		out, err = namespacesIn(tx)
		return err
	})
	return out, err
}

// namespacesIn lists the namespaces of tx with their labels.
func namespacesIn(tx store.Tx) ([]api.Namespace, error) {
	byName := map[string]api.Namespace{}
	records, err := tx.Namespaces()
	if err != nil {
		return nil, err
	}
	for _, ns := range records {
		byName[ns.Name] = ns
	}
	eps, err := tx.Endpoints("")
	if err != nil {
		return nil, err
	}
	svcs, err := tx.Services("")
	if err != nil {
		return nil, err
	}
	pols, err := tx.NetworkPolicies("")
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(eps)+len(svcs)+len(pols))
	for _, ep := range eps {
		names = append(names, cmp.Or(ep.Namespace, api.DefaultNamespace))
	}
	for _, s := range svcs {
		names = append(names, s.Namespace)
	}
	for _, p := range pols {
		names = append(names, p.Namespace)
	}
	for _, n := range names {
		if _, ok := byName[n]; !ok {
			byName[n] = api.Namespace{Name: n}
		}
	}
	out := make([]api.Namespace, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, withNameLabel(byName[name]))
	}
	return out, nil
}

// withNameLabel returns ns with api.NamespaceNameLabel among its labels.
func withNameLabel(ns api.Namespace) api.Namespace {
	labels := maps.Clone(ns.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[api.NamespaceNameLabel] = ns.Name
	ns.Labels = labels
	return ns
}

// LabelNamespace sets and removes labels of a namespace (creating its record). A label
// that has another value already is refused unless req.Overwrite, as kubectl label does.
func (a *Agent) LabelNamespace(req api.NamespaceLabelRequest) (ns api.Namespace, err error) {
	obj := fmt.Sprintf("namespace %q", req.Name)
	if err := spec.ValidateNamespace(req.Name); err != nil || req.Name == "" {
		return ns, api.AsError(api.Invalid("", "namespace", req.Name, "must be a DNS label (lowercase letters, digits and '-', at most 63)"))
	}
	if err := spec.ValidateLabels(req.Labels); err != nil {
		return ns, invalidConfig(err)
	}
	for k := range req.Labels {
		if k == api.NamespaceNameLabel {
			return ns, api.AsError(api.Invalid(obj, "label", k, "is the namespace's name: it cannot be set"))
		}
	}
	for _, k := range req.Remove {
		if k == api.NamespaceNameLabel {
			return ns, api.AsError(api.Invalid(obj, "label", k, "is the namespace's name: it cannot be removed"))
		}
	}
	err = a.store.Update(func(tx store.Tx) error {
		cur, _, err := tx.Namespace(req.Name)
		if err != nil {
			return err
		}
		if err := notSourced("namespace", cur.Name, cur.Source); err != nil {
			return err
		}
		labels := maps.Clone(cur.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		for _, k := range slices.Sorted(maps.Keys(req.Labels)) {
			if old, ok := labels[k]; ok && old != req.Labels[k] && !req.Overwrite {
				return api.AsError(api.Invalid(obj, "label", k, "already has the value %q (use --overwrite)", old))
			}
			labels[k] = req.Labels[k]
		}
		for _, k := range req.Remove {
			delete(labels, k)
		}
		ns = api.Namespace{Name: req.Name, Labels: labels}
		return tx.PutNamespace(ns)
	})
	if err != nil {
		return api.Namespace{}, err
	}
	a.log.Info("namespace labelled", "namespace", req.Name, "labels", ns.Labels)
	a.followPolicies("namespace label", namespaceNamed(req.Name))
	return withNameLabel(ns), nil
}
