package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podnet/podnet/api"
)

// recordingSink is a Sink that records what it is asked, holds an inventory, and fails
// the first failures requests.
type recordingSink struct {
	mu        sync.Mutex
	inventory []string
	failures  int
	applied   map[string]api.MirrorChange // key -> last change applied
	counts    map[string]int              // key -> changes applied
	requests  int
}

func (s *recordingSink) Mirror(_ context.Context, req api.MirrorRequest) (api.MirrorResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if s.failures > 0 {
		s.failures--
		return api.MirrorResult{}, errors.New("store unavailable")
	}
	if req.Source != api.SourceKubernetes {
		return api.MirrorResult{}, fmt.Errorf("source %q", req.Source)
	}
	res := api.MirrorResult{Errors: make([]string, len(req.Changes))}
	for i, c := range req.Changes {
		if c.Kind == api.KindService && c.Name == "refused" && !c.Delete {
			res.Errors[i] = "service default/refused: vips: held by default/web"
			continue
		}
		s.applied[c.Key()] = c
		if s.counts == nil {
			s.counts = map[string]int{}
		}
		s.counts[c.Key()]++
	}
	return res, nil
}

func (s *recordingSink) MirrorInventory(context.Context, string) (api.MirrorInventory, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return api.MirrorInventory{Keys: slices.Clone(s.inventory)}, nil
}

func (s *recordingSink) change(key string) (api.MirrorChange, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.applied[key]
	return c, ok
}

func (s *recordingSink) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key]
}

// runController runs a controller of cfg (its Client and Sink set) until the test ends.
func runController(t *testing.T, cfg Config) *Controller {
	t.Helper()
	cfg.Identity, cfg.Log = "t", slog.New(slog.DiscardHandler)
	cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod = 2*time.Second, time.Second, 100*time.Millisecond
	c := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
	}
	t.Fatalf("%s: not within 20s (last: %s)", what, last)
}

// The controller against client-go's fake clientset and a recording sink: the objects
// the API holds are mirrored, with the service's backends from its EndpointSlice; what
// the store holds and the API lacks is deleted; a failing store is retried; an
// unsupported field and a refused object become Events; status counts what is mirrored.
func TestControllerMirrors(t *testing.T) {
	name, port, ready := "http", int32(8080), true
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default", Labels: map[string]string{api.NamespaceNameLabel: "default"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.94.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}}},
	)
	sink := &recordingSink{inventory: []string{"Service/default/old"}, failures: 1, applied: map[string]api.MirrorChange{}}
	c := New(Config{Client: client, Sink: sink, Identity: "t", Log: slog.New(slog.DiscardHandler),
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	waitFor(t, "web mirrored with its backend, old deleted", func() (bool, string) {
		web, ok := sink.change("Service/default/web")
		old, gone := sink.change("Service/default/old")
		return ok && web.Service != nil && len(web.Service.Slices) == 1 && gone && old.Delete, fmt.Sprint(web, old)
	})
	s := c.Status()
	if !s.Leading || s.Leader != "t" || s.SinkErrors != 1 || s.Objects[api.KindService] != 1 || s.Objects[api.KindNamespace] != 1 {
		t.Errorf("status after the first sync: %+v", s)
	}
	if web, _ := sink.change("Service/default/web"); web.Service.Slices[0].Addrs[0].String() != "10.94.0.2" || web.Service.VIPs[0].String() != "10.96.0.10" {
		t.Errorf("web as mirrored: %+v", web.Service)
	}

	// An unsupported field: mirrored anyway, and an Event on the service.
	svcs := client.CoreV1().Services("default")
	if _, err := svcs.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext-ips", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.11", ExternalIPs: []string{"198.51.100.7"},
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A service the store refuses: an Event, not mirrored.
	if _, err := svcs.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "refused", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Events for ext-ips and refused", func() (bool, string) {
		evs, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var got []string
		for _, e := range evs.Items {
			got = append(got, e.InvolvedObject.Name+" "+e.Reason+" "+e.Message)
		}
		slices.Sort(got)
		return len(got) == 2 && strings.HasPrefix(got[0], "ext-ips PodnetUnsupported externalIPs 198.51.100.7") &&
			strings.HasPrefix(got[1], "refused PodnetRefused service default/refused: vips: held by default/web"), fmt.Sprint(got)
	})
	if _, ok := sink.change("Service/default/ext-ips"); !ok {
		t.Error("a service with an unsupported field was not mirrored")
	}

	// Deleted in the API: deleted in the store; the count follows.
	if err := svcs.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web deleted", func() (bool, string) {
		web, _ := sink.change("Service/default/web")
		return web.Delete && c.Status().Objects[api.KindService] == 1, fmt.Sprint(web, c.Status())
	})
}

func apiNode(name, ip string, podCIDRs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: podCIDRs}}
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR = podCIDRs[0]
	}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

// With NodePodCIDRs the nodes are mirrored (name, InternalIP, podCIDRs); a status
// update that changes neither is not mirrored again, one of the InternalIP is; a podCIDR
// that does not parse is an Event on the node.
func TestControllerMirrorsNodes(t *testing.T) {
	client := fake.NewClientset(apiNode("n0", "192.0.2.10", "10.244.0.0/24"))
	sink := &recordingSink{applied: map[string]api.MirrorChange{}}
	c := runController(t, Config{Client: client, Sink: sink, NodePodCIDRs: true})
	ctx := context.Background()

	waitFor(t, "n0 mirrored", func() (bool, string) {
		n, ok := sink.change("Node//n0")
		return ok && n.Node != nil, fmt.Sprint(n)
	})
	n0, _ := sink.change("Node//n0")
	want := api.Node{Name: "n0", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")},
		InternalIP: netip.MustParseAddr("192.0.2.10"), Source: api.SourceKubernetes}
	if !reflect.DeepEqual(*n0.Node, want) || n0.Namespace != "" || n0.Delete {
		t.Errorf("n0 as mirrored: %+v %+v, want %+v", n0, *n0.Node, want)
	}
	waitFor(t, "status counts the node", func() (bool, string) {
		s := c.Status()
		return s.Objects[api.KindNode] == 1, fmt.Sprint(s)
	})

	// A heartbeat (a condition changed): n0 is not queued. Node n1 is created after it:
	// the informer hands the two events over in order, so n1 mirrored means that n0's
	// update was seen.
	nodes := client.CoreV1().Nodes()
	hb := apiNode("n0", "192.0.2.10", "10.244.0.0/24")
	hb.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if _, err := nodes.UpdateStatus(ctx, hb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes.Create(ctx, apiNode("n1", "192.0.2.11", "10.244.1.0/33"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n1 mirrored without its bad podCIDR", func() (bool, string) {
		n, ok := sink.change("Node//n1")
		return ok && n.Node != nil && n.Node.InternalIP.String() == "192.0.2.11" && len(n.Node.PodCIDRs) == 0, fmt.Sprint(n)
	})
	if n := sink.count("Node//n0"); n != 1 {
		t.Errorf("n0 mirrored %d times after a heartbeat, want once", n)
	}
	waitFor(t, "an Event on n1", func() (bool, string) {
		evs, err := client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == "n1" && e.Reason == "PodnetUnsupported" &&
				strings.HasPrefix(e.Message, "spec.podCIDRs 10.244.1.0/33: not a CIDR") {
				return true, ""
			}
		}
		return false, fmt.Sprint(evs.Items)
	})

	// A new InternalIP is mirrored; a deleted node is deleted.
	moved := apiNode("n0", "192.0.2.20", "10.244.0.0/24")
	if _, err := nodes.UpdateStatus(ctx, moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n0's new InternalIP", func() (bool, string) {
		n, _ := sink.change("Node//n0")
		return n.Node != nil && n.Node.InternalIP.String() == "192.0.2.20", fmt.Sprint(n)
	})
	if err := nodes.Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n1 deleted", func() (bool, string) {
		n, _ := sink.change("Node//n1")
		return n.Delete && c.Status().Objects[api.KindNode] == 1, fmt.Sprint(n, c.Status())
	})
}

// Without NodePodCIDRs no node is mirrored, and a node the store holds from a term that
// mirrored them is deleted (its pod ranges cleared) at the start.
func TestControllerWithoutNodePodCIDRs(t *testing.T) {
	client := fake.NewClientset(apiNode("n0", "192.0.2.10", "10.244.0.0/24"),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	sink := &recordingSink{inventory: []string{"Node//n0"}, applied: map[string]api.MirrorChange{}}
	c := runController(t, Config{Client: client, Sink: sink})
	waitFor(t, "synced, n0's pod ranges deleted", func() (bool, string) {
		s := c.Status()
		n, _ := sink.change("Node//n0")
		return s.Synced && s.Pending == 0 && n.Delete, fmt.Sprint(s, n)
	})
	// No informer watches the nodes, so nothing queues a new one; a namespace created
	// after it shows that the controller goes on mirroring the rest.
	ctx := context.Background()
	if _, err := client.CoreV1().Nodes().Create(ctx, apiNode("n1", "192.0.2.11", "10.244.1.0/24"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "late"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "namespace late mirrored", func() (bool, string) {
		_, ok := sink.change("Namespace//late")
		return ok, ""
	})
	if n := sink.count("Node//n0") + sink.count("Node//n1"); n != 1 || c.Status().Objects[api.KindNode] != 0 {
		t.Errorf("nodes mirrored without NodePodCIDRs: %d changes (want n0's delete only), status %+v", n, c.Status())
	}
}
