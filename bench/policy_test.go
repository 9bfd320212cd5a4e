package main

import (
	"fmt"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/policy"
	"github.com/podnet/podnet/internal/testutil"
)

func TestFlipAt(t *testing.T) {
	const (
		a = outAllowed
		d = outDropped
		f = outFailed
		p = outPending
	)
	tests := []struct {
		outs   []outcome
		want   outcome
		k      int
		ok     bool
		reason string
	}{
		{nil, a, 0, false, "nothing yet"},
		{[]outcome{d, d, a, a, a}, a, 2, true, "flip after two drops"},
		{[]outcome{d, d, a, a}, a, 2, false, "two allowed are not three"},
		{[]outcome{a, a, a, a}, a, 0, true, "the first connect already had the new outcome"},
		{[]outcome{d, a, d, a, a, a}, a, 3, true, "a later old outcome moves the flip"},
		{[]outcome{d, a, a, a, p, a}, a, 1, true, "pending connects and those after them do not count"},
		{[]outcome{d, a, a, p, a, a}, a, 1, false, "the run is cut at the pending one"},
		{[]outcome{a, a, d, d, d}, d, 2, true, "the other way"},
		{[]outcome{a, f, d, d, d}, d, 2, true, "a failed connect is not the new outcome"},
		{[]outcome{d, d, d}, a, 3, false, "no flip"},
	}
	for _, tt := range tests {
		k, ok := flipAt(tt.outs, tt.want, 3)
		if k != tt.k || ok != tt.ok {
			t.Errorf("%s: flipAt(%v, %v) = %d, %v; want %d, %v", tt.reason, tt.outs, tt.want, k, ok, tt.k, tt.ok)
		}
	}
}

// TestPolPolicies checks that the section's policies are 100, distinct and valid as the
// agent validates them, as is each change's policy.
func TestPolPolicies(t *testing.T) {
	pols := append(polPolicies(), polWebAdmin(polPortAdmin), testutil.IngressPolicy("ns-0", "web-extra", "web", 1, "admin", polPortExtra))
	seen := map[string]bool{}
	for i, p := range pols {
		policy.Default(&p)
		if err := policy.Validate(p); err != nil {
			t.Errorf("policy %s/%s: %v", p.Namespace, p.Name, err)
		}
		if i < 100 {
			key := p.Namespace + "/" + p.Name
			if seen[key] {
				t.Errorf("policy %s given twice", key)
			}
			seen[key] = true
		}
	}
	if len(seen) != 100 {
		t.Errorf("%d policies, want 100", len(seen))
	}
}

// TestPolPods checks the probes' place, that the bridge networks hold the 5,000
// endpoints and the routed one the routed probes, and that each filler policy selects
// pods of its own namespace.
func TestPolPods(t *testing.T) {
	const n = 5000
	networks := polNetworksFor(n)
	perNetwork := make([]int, networks)
	routed := 0
	selected := map[string]int{}
	names := map[string]bool{}
	pols := polPolicies()
	for i := range n + polRoutedProbes {
		k, name, ns, labels := polPod(i, networks)
		if k == polRoutedNet {
			routed++
		} else {
			perNetwork[k]++
		}
		wantNet := 0
		if i == polWebRouted || i == polFrontendRouted {
			wantNet = polRoutedNet
		}
		if i < polProbes && (k != wantNet || name == "" || ns == "") {
			t.Errorf("probe %d: network %d, %s/%s", i, k, ns, name)
		}
		if names[ns+"/"+name] {
			t.Errorf("endpoint %d: %s/%s given twice", i, ns, name)
		}
		names[ns+"/"+name] = true
		ep := api.Endpoint{Namespace: ns, Name: name, Labels: labels}
		for _, p := range pols {
			if policy.Selects(p, ep) {
				selected[p.Namespace+"/"+p.Name]++
			}
		}
	}
	total := 0
	for k, c := range perNetwork {
		total += c
		if c > polPerNetwork+polProbes {
			t.Errorf("network %d: %d endpoints, want at most %d", k, c, polPerNetwork+polProbes)
		}
	}
	if total != n || routed != polRoutedProbes {
		t.Errorf("%d endpoints on the bridge networks, %d on the routed one; want %d and %d", total, routed, n, polRoutedProbes)
	}
	for j := 4; j < 100; j++ { // the filler policies pol-4..pol-99
		key := fmt.Sprintf("ns-%d/pol-%d", j%polNamespaces, j)
		if selected[key] != n/100 {
			t.Errorf("policy %s selects %d pods, want %d", key, selected[key], n/100)
		}
	}
	if selected["ns-0/web-frontend"] != 2 || selected["ns-1/frontend-egress"] != 2 {
		t.Errorf("web-frontend selects %d pods, frontend-egress %d; want web and web-r, frontend and frontend-r", selected["ns-0/web-frontend"], selected["ns-1/frontend-egress"])
	}
}
