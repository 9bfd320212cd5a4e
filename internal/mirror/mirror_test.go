package mirror

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/storetest"
)

var now = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)

func mustApply(t *testing.T, st store.Store, changes ...api.MirrorChange) Result {
	t.Helper()
	var res Result
	err := st.Update(func(tx store.Tx) (err error) {
		res, err = Apply(tx, api.MirrorRequest{Source: api.SourceKubernetes, Changes: changes}, now)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func svcChange(name string, vips ...string) api.MirrorChange {
	s := &api.ServiceSpec{Name: name, Namespace: "default", Ports: []api.ServicePort{{Name: "http", Port: 80, Protocol: "tcp"}}}
	for _, v := range vips {
		s.VIPs = append(s.VIPs, netip.MustParseAddr(v))
	}
	return api.MirrorChange{Kind: api.KindService, Namespace: "default", Name: name, Service: s}
}

func TestServicesKeepTheirVIPs(t *testing.T) {
	st := storetest.NewMemory()
	res := mustApply(t, st, svcChange("web", "10.96.0.10"), svcChange("db", "10.96.0.10"), svcChange("api", "10.96.0.11"))
	if !res.Changed || res.Errors[0] != "" || res.Errors[2] != "" {
		t.Fatalf("result %+v", res)
	}
	// The second holder of a VIP is refused, naming the VIP and its holder; the rest commits.
	if e := res.Errors[1]; !strings.Contains(e, `vips "10.96.0.10"`) || !strings.Contains(e, "held by default/web") {
		t.Errorf("db with web's VIP: %q", e)
	}
	st.View(func(tx store.Tx) error {
		svc, ok, _ := tx.Service("default", "web")
		if !ok || svc.Source != api.SourceKubernetes || !slices.Equal(svc.VIPs, []netip.Addr{netip.MustParseAddr("10.96.0.10")}) {
			t.Errorf("web: %+v", svc)
		}
		if _, ok, _ := tx.Service("default", "db"); ok {
			t.Error("db stored although refused")
		}
		owner, _, _ := tx.Allocation(ServicePool, netip.MustParseAddr("10.96.0.11"))
		if owner != ServiceOwner("default", "api") {
			t.Errorf("owner of api's VIP: %q", owner)
		}
		return nil
	})
	// The same content again writes nothing; a new VIP moves the allocation.
	if res := mustApply(t, st, svcChange("web", "10.96.0.10")); res.Changed {
		t.Error("unchanged service written again")
	}
	mustApply(t, st, svcChange("web", "10.96.0.12"))
	st.View(func(tx store.Tx) error {
		if _, held, _ := tx.Allocation(ServicePool, netip.MustParseAddr("10.96.0.10")); held {
			t.Error("web's old VIP still held")
		}
		return nil
	})
	// A delete releases the VIP.
	mustApply(t, st, api.MirrorChange{Kind: api.KindService, Namespace: "default", Name: "web", Delete: true})
	st.View(func(tx store.Tx) error {
		if _, held, _ := tx.Allocation(ServicePool, netip.MustParseAddr("10.96.0.12")); held {
			t.Error("deleted service's VIP still held")
		}
		return nil
	})
}

func TestDeleteLeavesOtherSources(t *testing.T) {
	st := storetest.NewMemory()
	st.Update(func(tx store.Tx) error {
		return tx.PutService(api.Service{Name: "cli", Namespace: "default", Ports: []api.ServicePort{{Port: 80, TargetPort: 80, Protocol: "tcp"}}})
	})
	if res := mustApply(t, st, api.MirrorChange{Kind: api.KindService, Namespace: "default", Name: "cli", Delete: true}); res.Changed {
		t.Error("a delete of the mirror removed podnet's own service")
	}
	mustApply(t, st, svcChange("web", "10.96.0.10"), api.MirrorChange{Kind: api.KindNamespace, Name: "shop", NS: &api.Namespace{Name: "shop"}},
		api.MirrorChange{Kind: api.KindPod, Namespace: "shop", Name: "p", Pod: &api.Pod{Namespace: "shop", Name: "p"}})
	var keys []string
	st.View(func(tx store.Tx) (err error) { keys, err = Inventory(tx, api.SourceKubernetes); return err })
	want := []string{"Namespace//shop", "Pod/shop/p", "Service/default/web"}
	if !slices.Equal(keys, want) {
		t.Errorf("inventory %q, want %q", keys, want)
	}
}

func TestPodLabelsReachEndpoints(t *testing.T) {
	st := storetest.NewMemory()
	key := api.EndpointKey{Network: "blue", ContainerID: "c1", IfName: "eth0"}
	st.Update(func(tx store.Tx) error {
		if err := tx.PutNetwork(api.Network{Name: "blue"}); err != nil {
			return err
		}
		return tx.PutEndpoint(api.Endpoint{EndpointKey: key, Name: "web-0", Labels: map[string]string{"old": "x"}, State: api.StateAttached})
	})
	pod := &api.Pod{Namespace: "default", Name: "web-0", Labels: map[string]string{"app": "web"},
		NamedPorts: []api.NamedPort{{Name: "http", Port: 8080, Protocol: "tcp"}}}
	res := mustApply(t, st, api.MirrorChange{Kind: api.KindPod, Namespace: "default", Name: "web-0", Pod: pod})
	if res.Errors[0] != "" {
		t.Fatal(res.Errors[0])
	}
	st.View(func(tx store.Tx) error {
		ep, _, _ := tx.Endpoint(key)
		if ep.Labels["app"] != "web" || ep.Labels["old"] != "" || len(ep.NamedPorts) != 1 {
			t.Errorf("endpoint after the pod: %+v", ep)
		}
		// An endpoint attached later takes them too.
		later := api.Endpoint{Name: "web-0", Namespace: "default"}
		if err := PodOf(tx, &later); err != nil || later.Labels["app"] != "web" {
			t.Errorf("PodOf: %+v, %v", later, err)
		}
		return nil
	})
	// Bad labels are refused, naming the pod and the field.
	bad := &api.Pod{Namespace: "default", Name: "web-0", Labels: map[string]string{"-x": "y"}}
	res = mustApply(t, st, api.MirrorChange{Kind: api.KindPod, Namespace: "default", Name: "web-0", Pod: bad})
	if !strings.Contains(res.Errors[0], "pod default/web-0") || !strings.Contains(res.Errors[0], "labels") {
		t.Errorf("bad labels: %q", res.Errors[0])
	}
}

func TestRefusals(t *testing.T) {
	st := storetest.NewMemory()
	pol := &api.NetworkPolicy{Namespace: "default", Name: "other"}
	res := mustApply(t, st,
		api.MirrorChange{Kind: "Deployment", Namespace: "default", Name: "x"},
		api.MirrorChange{Kind: api.KindNetworkPolicy, Namespace: "default", Name: "p", Policy: pol},
		api.MirrorChange{Kind: api.KindService, Namespace: "default", Name: "s"})
	for i, want := range []string{`kind "Deployment"`, "names another object", "a put needs the service"} {
		if !strings.Contains(res.Errors[i], want) {
			t.Errorf("change %d: %q, want it to say %q", i, res.Errors[i], want)
		}
	}
	if res.Changed {
		t.Error("refused changes wrote")
	}
	err := st.Update(func(tx store.Tx) error {
		_, err := Apply(tx, api.MirrorRequest{}, now)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "source") {
		t.Errorf("request without source: %v", err)
	}
}

func nodeChange(name string, internalIP string, podCIDRs ...string) api.MirrorChange {
	n := &api.Node{Name: name}
	if internalIP != "" {
		n.InternalIP = netip.MustParseAddr(internalIP)
	}
	for _, p := range podCIDRs {
		n.PodCIDRs = append(n.PodCIDRs, netip.MustParsePrefix(p))
	}
	return api.MirrorChange{Kind: api.KindNode, Name: name, Node: n}
}

func node(t *testing.T, st store.Store, name string) (n api.Node, ok bool) {
	t.Helper()
	if err := st.View(func(tx store.Tx) (err error) { n, ok, err = tx.Node(name); return err }); err != nil {
		t.Fatal(err)
	}
	return n, ok
}

// A node's pod ranges and address go onto its record beside what its agent wrote (or
// onto a record of their own before the agent registers); an unchanged node is not
// written again; a delete clears them, and removes only a record no agent wrote.
func TestNodes(t *testing.T) {
	st := storetest.NewMemory()
	registered := api.Node{Name: "n0", IP: netip.MustParseAddr("192.0.2.10"), Version: "v1", Registered: now}
	if err := st.Update(func(tx store.Tx) error { return tx.PutNode(registered) }); err != nil {
		t.Fatal(err)
	}
	res := mustApply(t, st, nodeChange("n0", "192.0.2.10", "10.244.0.0/24", "fd00:244::/64"), nodeChange("n1", "", "10.244.1.0/24"))
	if !res.Changed || res.Errors[0] != "" || res.Errors[1] != "" {
		t.Fatalf("result %+v", res)
	}
	want0 := registered
	want0.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("fd00:244::/64")}
	want0.InternalIP, want0.Source = netip.MustParseAddr("192.0.2.10"), api.SourceKubernetes
	if n, _ := node(t, st, "n0"); !reflect.DeepEqual(n, want0) {
		t.Errorf("n0:\n got %+v\nwant %+v", n, want0)
	}
	want1 := api.Node{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Source: api.SourceKubernetes}
	if n, ok := node(t, st, "n1"); !ok || !reflect.DeepEqual(n, want1) {
		t.Errorf("n1, not registered:\n got %+v\nwant %+v", n, want1)
	}
	var keys []string
	st.View(func(tx store.Tx) (err error) { keys, err = Inventory(tx, api.SourceKubernetes); return err })
	if want := []string{"Node//n0", "Node//n1"}; !slices.Equal(keys, want) {
		t.Errorf("inventory %q, want %q", keys, want)
	}

	if res := mustApply(t, st, nodeChange("n0", "192.0.2.10", "10.244.0.0/24", "fd00:244::/64")); res.Changed {
		t.Error("unchanged node written again")
	}

	// Deleted in the source: n0 keeps what its agent wrote, n1 goes.
	res = mustApply(t, st, api.MirrorChange{Kind: api.KindNode, Name: "n0", Delete: true}, api.MirrorChange{Kind: api.KindNode, Name: "n1", Delete: true})
	if !res.Changed {
		t.Error("deletes wrote nothing")
	}
	if n, ok := node(t, st, "n0"); !ok || !reflect.DeepEqual(n, registered) {
		t.Errorf("n0 after its delete:\n got %+v, %v\nwant %+v", n, ok, registered)
	}
	if n, ok := node(t, st, "n1"); ok {
		t.Errorf("n1, never registered, after its delete: %+v", n)
	}
	// A delete of a node the source never wrote changes nothing.
	if res := mustApply(t, st, api.MirrorChange{Kind: api.KindNode, Name: "n0", Delete: true}); res.Changed {
		t.Error("a delete removed the agent's record")
	}
}

func TestNodeRefusals(t *testing.T) {
	st := storetest.NewMemory()
	mustApply(t, st, nodeChange("n0", "", "10.244.0.0/24"))
	bad := func(name string, p netip.Prefix) api.MirrorChange {
		return api.MirrorChange{Kind: api.KindNode, Name: name, Node: &api.Node{Name: name, PodCIDRs: []netip.Prefix{p}}}
	}
	res := mustApply(t, st,
		nodeChange("n1", "", "10.244.0.128/25"),
		nodeChange("n2", "", "10.0.0.0/8"),
		nodeChange("n3", "", "10.245.0.0/24", "10.245.0.0/16"),
		bad("n4", netip.PrefixFrom(netip.MustParseAddr("10.246.0.7"), 24)),
		bad("n5", netip.Prefix{}),
		api.MirrorChange{Kind: api.KindNode, Name: "n6"},
		api.MirrorChange{Kind: api.KindNode, Name: "n7", Node: &api.Node{Name: "other"}},
		api.MirrorChange{Kind: api.KindNode, Namespace: "default", Name: "n8", Node: &api.Node{Name: "n8"}},
		nodeChange("n9", "", "10.244.1.0/24"),
	)
	for i, want := range []string{
		`node n1: podCIDRs "10.244.0.128/25": overlaps podCIDR 10.244.0.0/24 of node n0`,
		`node n2: podCIDRs "10.0.0.0/8": overlaps podCIDR 10.244.0.0/24 of node n0`,
		`node n3: podCIDRs[1] "10.245.0.0/16": overlaps podCIDR 10.245.0.0/24 of the same node`,
		`node n4: podCIDRs[0] "10.246.0.7/24": has host bits (the range is 10.246.0.0/24)`,
		`node n5: podCIDRs[0] "invalid Prefix": not a CIDR`,
		`a put needs the node`,
		`names another object than the change`,
		`namespace "default": a node has no namespace`,
		``,
	} {
		if res.Errors[i] != want && (want == "" || !strings.Contains(res.Errors[i], want)) {
			t.Errorf("change %d: %q, want it to say %q", i, res.Errors[i], want)
		}
	}
	for _, name := range []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8"} {
		if n, ok := node(t, st, name); ok {
			t.Errorf("refused node %s stored: %+v", name, n)
		}
	}
	// A node's new range may overlap its old one, not another node's.
	if res := mustApply(t, st, nodeChange("n0", "", "10.244.0.0/23")); !strings.Contains(res.Errors[0], "overlaps podCIDR 10.244.1.0/24 of node n9") {
		t.Errorf("n0 grown over n9's range: %q", res.Errors[0])
	}
	if res := mustApply(t, st, nodeChange("n0", "", "10.244.0.0/25")); res.Errors[0] != "" {
		t.Errorf("n0 shrunk inside its own range: %s", res.Errors[0])
	}
}
