package agent

import (
	"net/netip"
	"testing"

	"github.com/podnet/podnet/api"
)

// A mirrored service's element update keeps the tables verified when nothing else
// committed: the next Reconcile skips reading every service and comparing the tables,
// and what the agent holds as verified is the store's desired state. A commit the agent
// did not make (the fake's tables changed behind its back) ends that.
func TestServicesUpdateKeepsTablesVerified(t *testing.T) {
	fa := startFake(t, newFakeNode(), newTranscript(t))
	defer fa.Close()
	if err := fa.Reconcile(false); err != nil {
		t.Fatal(err)
	}
	if !fa.tablesUnchanged() {
		t.Fatal("tables not verified after Reconcile")
	}
	service := func(name, vip string, backends ...string) api.MirrorChange {
		s := &api.ServiceSpec{Name: name, Namespace: "kb-0", VIPs: []netip.Addr{netip.MustParseAddr(vip)},
			Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "tcp"}}}
		for _, b := range backends {
			s.Slices = append(s.Slices, api.SliceEndpoint{Addrs: []netip.Addr{netip.MustParseAddr(b)}, Ready: true, Serving: true})
		}
		return api.MirrorChange{Kind: api.KindService, Namespace: "kb-0", Name: name, Service: s}
	}
	for _, step := range []struct {
		name    string
		changes []api.MirrorChange
	}{
		{"two services", []api.MirrorChange{service("web", "10.96.0.10", "10.88.1.5"), service("db", "10.96.0.11")}},
		{"a backend moved", []api.MirrorChange{service("web", "10.96.0.10", "10.88.1.6", "10.88.1.7")}},
		{"a service deleted", []api.MirrorChange{{Kind: api.KindService, Namespace: "kb-0", Name: "db", Delete: true}}},
	} {
		if _, err := fa.Mirror(api.MirrorRequest{Source: api.SourceKubernetes, Changes: step.changes}); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if !fa.tablesUnchanged() {
			t.Fatalf("%s: tables no longer verified", step.name)
		}
		want, err := fa.desiredRuleset()
		if err != nil {
			t.Fatal(err)
		}
		fa.dpMu.Lock()
		add, remove, same := servicesDelta(fa.verifiedWant, want)
		fa.dpMu.Unlock()
		if !same || len(add)+len(remove) != 0 {
			t.Fatalf("%s: verified state differs from the store's desired state: add %v, remove %v (same but services: %v)", step.name, add, remove, same)
		}
		if ok, err := fa.node.tables.InSync(want); err != nil || !ok {
			t.Fatalf("%s: tables not in sync with the store: %v %v", step.name, ok, err)
		}
	}
	// Another commit: verified no more, until a Reconcile compares again.
	if err := fa.node.tables.Sync(fa.verifiedWant); err != nil {
		t.Fatal(err)
	}
	if fa.tablesUnchanged() {
		t.Error("tables still verified after a commit the agent did not make")
	}
	if _, err := fa.Mirror(api.MirrorRequest{Source: api.SourceKubernetes, Changes: []api.MirrorChange{service("api", "10.96.0.12")}}); err != nil {
		t.Fatal(err)
	}
	if fa.tablesUnchanged() {
		t.Error("tables verified again by an element update that followed a commit the agent did not make")
	}
}
