package agent

import (
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/store"
)

// The policies follow each change the agent makes (a policy applied, changed or
// removed, a namespace or pod relabelled, a pod attached or detached) with an update of
// the tables: no whole comparison, no rewrite. After each, the compiler the agent keeps
// holds the policies compiled afresh from the store, the tables equal the store's
// desired state, and they are still verified (the next Reconcile skips reading every
// record), but after ADD and DEL, whose endpoint elements end that.
func TestPoliciesFollowChangesIncrementally(t *testing.T) {
	node := newFakeNode()
	st := &listCounter{Store: node.store}
	fa := startFakeOn(t, node, newTranscript(t), st)
	defer fa.Close()
	fa.createNetwork(t, blueSpec)
	for _, id := range []string{"c1", "c2", "c3"} {
		req := attachReq("blue", id)
		req.Namespace, req.Labels = "x", map[string]string{"app": id}
		if err := fa.add(req); err != nil {
			t.Fatal(err)
		}
	}
	if err := fa.idle(); err != nil {
		t.Fatal(err)
	}
	ingress := func(name, app, from string, port uint16) api.NetworkPolicy {
		return api.NetworkPolicy{Namespace: "x", Name: name, Spec: api.NetworkPolicySpec{
			PodSelector: api.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Ingress: []api.NetworkPolicyRule{{
				Peers: []api.NetworkPolicyPeer{{
					NamespaceSelector: &api.LabelSelector{MatchLabels: map[string]string{"team": "a"}},
					PodSelector:       &api.LabelSelector{MatchLabels: map[string]string{"role": from}},
				}},
				Ports: []api.NetworkPolicyPort{{Protocol: "TCP", Port: &api.PortValue{Number: port}}},
			}},
		}}
	}
	// The first policy creates the policy chains: the tables are rewritten.
	if _, err := fa.ApplyPolicies([]api.NetworkPolicy{ingress("web", "c1", "front", 80)}); err != nil {
		t.Fatal(err)
	}
	if err := fa.Reconcile(false); err != nil {
		t.Fatal(err)
	}
	tables := fa.node.tables
	steps := []struct {
		name   string
		change func() error
	}{
		{"namespace labelled into the peers' selector", func() error {
			_, err := fa.LabelNamespace(api.NamespaceLabelRequest{Name: "x", Labels: map[string]string{"team": "a"}})
			return err
		}},
		{"pod relabelled into a peer", func() error {
			_, err := fa.SetLabels(key("blue", "c2"), map[string]string{"app": "c2", "role": "front"})
			return err
		}},
		{"a second policy", func() error {
			_, err := fa.ApplyPolicies([]api.NetworkPolicy{ingress("db", "c3", "front", 5432)})
			return err
		}},
		{"its port changed", func() error {
			_, err := fa.ApplyPolicies([]api.NetworkPolicy{ingress("db", "c3", "front", 5433)})
			return err
		}},
		{"namespace labelled out", func() error {
			_, err := fa.LabelNamespace(api.NamespaceLabelRequest{Name: "x", Remove: []string{"team"}})
			return err
		}},
		{"the second policy removed", func() error { return fa.DeletePolicy("x", "db") }},
		// The same changes from the Kubernetes API (podnet controller). A pod's change
		// lists the endpoints once, in the store's transaction (mirror.Apply finds the
		// pod's endpoints so).
		{"mirrored: a policy", func() error {
			p := ingress("api", "c3", "front", 8080)
			return mirrorChange(fa, api.MirrorChange{Kind: api.KindNetworkPolicy, Namespace: "x", Name: "api", Policy: &p})
		}},
		{"mirrored: a namespace labelled", func() error {
			return mirrorChange(fa, api.MirrorChange{Kind: api.KindNamespace, Name: "x",
				NS: &api.Namespace{Name: "x", Labels: map[string]string{"team": "a"}}})
		}},
		{"mirrored: a pod relabelled, 1 list", func() error {
			return mirrorChange(fa, api.MirrorChange{Kind: api.KindPod, Namespace: "x", Name: "c1",
				Pod: &api.Pod{Namespace: "x", Name: "c1", Labels: map[string]string{"app": "c3", "role": "front"}}})
		}},
		{"mirrored: the policy deleted", func() error {
			return mirrorChange(fa, api.MirrorChange{Kind: api.KindNetworkPolicy, Namespace: "x", Name: "api", Delete: true})
		}},
		// ADD and DEL change the endpoints' elements too, which ends verified.
		{"a pod attached into a selection", func() error {
			req := attachReq("blue", "c4")
			req.Namespace, req.Labels = "x", map[string]string{"app": "c1", "role": "front"}
			return fa.add(req)
		}},
		{"a pod detached", func() error { return fa.del(key("blue", "c2")) }},
	}
	layouts := len(tables.PolicyUpdates())
	for _, step := range steps {
		syncs, compares, lists := tables.Syncs(), tables.InSyncs(), st.lists.Load()
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if n, m := tables.Syncs()-syncs, tables.InSyncs()-compares; n+m != 0 {
			t.Errorf("%s: %d rewrites and %d comparisons of the tables, want none", step.name, n, m)
		}
		wantLists := int64(0)
		if strings.HasSuffix(step.name, ", 1 list") {
			wantLists = 1
		}
		if n := st.lists.Load() - lists; n != wantLists {
			t.Errorf("%s: listed the endpoints %d times, want %d", step.name, n, wantLists)
		}
		attach := strings.HasPrefix(step.name, "a pod")
		if !attach && !fa.tablesUnchanged() {
			t.Errorf("%s: tables no longer verified", step.name)
		}
		want := mustDesired(t, fa)
		if len(want.Policies) == 0 {
			t.Fatalf("%s: no policy", step.name)
		}
		fa.dpMu.Lock()
		got, verified := fa.polc.Policies(), fa.verifiedRulesetLocked()
		fa.dpMu.Unlock()
		if !reflect.DeepEqual(got, want.Policies) {
			t.Errorf("%s: the agent's compiler holds\n%+v\nthe store compiles to\n%+v", step.name, got, want.Policies)
		}
		if !attach && !reflect.DeepEqual(verified, want) {
			t.Errorf("%s: the verified state is not the store's desired state", step.name)
		}
		if ok, err := tables.InSync(want); err != nil || !ok {
			t.Errorf("%s: tables differ from the store's desired state (%v):\n%s", step.name, err, tables.Dump())
		}
	}
	// A policy applied and removed, twice (through the CLI's API and mirrored): their
	// rules and sets, not the tables.
	if n := len(tables.PolicyUpdates()) - layouts; n != 4 {
		t.Errorf("%d policies' rules and sets changed with UpdatePolicies, want 4", n)
	}
}

// mirrorChange applies one change as podnet controller sends it.
func mirrorChange(fa *fakeAgent, c api.MirrorChange) error {
	res, err := fa.Mirror(api.MirrorRequest{Source: api.SourceKubernetes, Changes: []api.MirrorChange{c}})
	if err == nil && res.Errors[0] != "" {
		err = errors.New(res.Errors[0])
	}
	return err
}

// listCounter is a store that counts the lists of endpoints read through it.
type listCounter struct {
	store.Store
	lists atomic.Int64
}

func (s *listCounter) View(fn func(store.Tx) error) error {
	return s.Store.View(func(tx store.Tx) error { return fn(countingTx{tx, s}) })
}

func (s *listCounter) Update(fn func(store.Tx) error) error {
	return s.Store.Update(func(tx store.Tx) error { return fn(countingTx{tx, s}) })
}

type countingTx struct {
	store.Tx
	s *listCounter
}

func (tx countingTx) Endpoints(network string) ([]api.Endpoint, error) {
	tx.s.lists.Add(1)
	return tx.Tx.Endpoints(network)
}
