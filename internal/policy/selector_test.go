package policy

import (
	"maps"
	"testing"

	"github.com/podnet/podnet/api"
)

func TestMatches(t *testing.T) {
	req := func(key, op string, values ...string) api.LabelSelectorRequirement {
		return api.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
	}
	exprs := func(rs ...api.LabelSelectorRequirement) api.LabelSelector {
		return api.LabelSelector{MatchExpressions: rs}
	}
	web := map[string]string{"app": "web", "tier": "front"}
	for _, tc := range []struct {
		name   string
		sel    api.LabelSelector
		labels map[string]string
		want   bool
	}{
		{"empty selector, labels", api.LabelSelector{}, web, true},
		{"empty selector, no labels", api.LabelSelector{}, nil, true},
		{"matchLabels equal", api.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, web, true},
		{"matchLabels all pairs", api.LabelSelector{MatchLabels: map[string]string{"app": "web", "tier": "front"}}, web, true},
		{"matchLabels one pair differs", api.LabelSelector{MatchLabels: map[string]string{"app": "web", "tier": "back"}}, web, false},
		{"matchLabels key absent", api.LabelSelector{MatchLabels: map[string]string{"role": "db"}}, web, false},
		{"matchLabels empty value, absent", api.LabelSelector{MatchLabels: map[string]string{"role": ""}}, web, false},
		{"matchLabels empty value, present empty", api.LabelSelector{MatchLabels: map[string]string{"role": ""}}, map[string]string{"role": ""}, true},

		{"In, value in", exprs(req("app", "In", "db", "web")), web, true},
		{"In, value not in", exprs(req("app", "In", "db")), web, false},
		{"In, key absent", exprs(req("role", "In", "db")), web, false},
		{"NotIn, value in", exprs(req("app", "NotIn", "web")), web, false},
		{"NotIn, value not in", exprs(req("app", "NotIn", "db")), web, true},
		{"NotIn, key absent", exprs(req("role", "NotIn", "db")), web, true},
		{"NotIn, no labels", exprs(req("role", "NotIn", "db")), nil, true},
		{"Exists, present", exprs(req("app", "Exists")), web, true},
		{"Exists, present with empty value", exprs(req("app", "Exists")), map[string]string{"app": ""}, true},
		{"Exists, absent", exprs(req("role", "Exists")), web, false},
		{"DoesNotExist, absent", exprs(req("role", "DoesNotExist")), web, true},
		{"DoesNotExist, present", exprs(req("app", "DoesNotExist")), web, false},
		{"unknown operator matches nothing", exprs(req("app", "Equals", "web")), web, false},

		{"expressions are ANDed", exprs(req("app", "In", "web"), req("tier", "NotIn", "front")), web, false},
		{"labels and expressions are ANDed",
			api.LabelSelector{MatchLabels: map[string]string{"app": "web"}, MatchExpressions: []api.LabelSelectorRequirement{req("role", "Exists")}},
			web, false},
		{"labels and expressions both hold",
			api.LabelSelector{MatchLabels: map[string]string{"app": "web"}, MatchExpressions: []api.LabelSelectorRequirement{req("role", "DoesNotExist")}},
			web, true},
	} {
		if got := Matches(tc.sel, tc.labels); got != tc.want {
			t.Errorf("%s: Matches(%+v, %v) = %v, want %v", tc.name, tc.sel, tc.labels, got, tc.want)
		}
	}
}

func TestNamespaceLabels(t *testing.T) {
	ns := api.Namespace{Name: "x", Labels: map[string]string{"team": "a", api.NamespaceNameLabel: "fake"}}
	got := NamespaceLabels(ns)
	want := map[string]string{"team": "a", api.NamespaceNameLabel: "x"}
	if !maps.Equal(got, want) {
		t.Errorf("NamespaceLabels = %v, want %v", got, want)
	}
	if ns.Labels[api.NamespaceNameLabel] != "fake" {
		t.Errorf("NamespaceLabels changed its argument")
	}
	if got := NamespaceLabels(api.Namespace{Name: "y"}); !maps.Equal(got, map[string]string{api.NamespaceNameLabel: "y"}) {
		t.Errorf("NamespaceLabels without labels = %v", got)
	}
}

func TestSelects(t *testing.T) {
	p := api.NetworkPolicy{Namespace: "default", Name: "p", Spec: api.NetworkPolicySpec{
		PodSelector: api.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
	}}
	for _, tc := range []struct {
		ep   api.Endpoint
		want bool
	}{
		{api.Endpoint{Namespace: "default", Labels: map[string]string{"app": "web"}}, true},
		{api.Endpoint{Labels: map[string]string{"app": "web"}}, true}, // no namespace: default
		{api.Endpoint{Namespace: "other", Labels: map[string]string{"app": "web"}}, false},
		{api.Endpoint{Namespace: "default", Labels: map[string]string{"app": "db"}}, false},
	} {
		if got := Selects(p, tc.ep); got != tc.want {
			t.Errorf("Selects(%s/%v) = %v, want %v", tc.ep.Namespace, tc.ep.Labels, got, tc.want)
		}
		// A policy without a namespace is in the default namespace.
		p2 := p
		p2.Namespace = ""
		if got := Selects(p2, tc.ep); got != tc.want {
			t.Errorf("Selects(policy without namespace, %s/%v) = %v, want %v", tc.ep.Namespace, tc.ep.Labels, got, tc.want)
		}
	}
}
