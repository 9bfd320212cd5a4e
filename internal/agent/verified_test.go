package agent

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/nft"
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
		add, remove, same := servicesDelta(fa.verifiedRulesetLocked(), want)
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

// TestWithServiceChanges folds several batches at once: a later batch wins for a key,
// untouched services keep their order and the added ones follow in the order of their
// first batch.
func TestWithServiceChanges(t *testing.T) {
	svc := func(vip string, port uint16, backends ...string) nft.Service {
		s := nft.Service{Name: "ns/" + vip, VIP: netip.MustParseAddr(vip), Protocol: "tcp", Port: port}
		for _, b := range backends {
			s.Backends = append(s.Backends, netip.MustParseAddrPort(b+":8080"))
		}
		return s
	}
	a, b, c := svc("10.96.0.1", 80), svc("10.96.0.2", 80), svc("10.96.0.3", 80)
	b2, d, e := svc("10.96.0.2", 80, "10.88.0.2"), svc("10.96.0.4", 80), svc("10.96.0.5", 80)
	d2 := svc("10.96.0.4", 80, "10.88.0.4")
	before := []nft.Service{a, b, c}
	got := withServiceChanges(before, []serviceBatch{
		{add: []nft.Service{b2, d}, remove: []nft.Service{c}},
		{add: []nft.Service{e}},
		{remove: []nft.Service{e}},
		{add: []nft.Service{d2, c}},
	})
	want := []nft.Service{a, b2, d2, c}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("withServiceChanges =\n%v\nwant\n%v", got, want)
	}
	if !reflect.DeepEqual(before, []nft.Service{a, b, c}) {
		t.Errorf("withServiceChanges changed its input: %v", before)
	}
}
