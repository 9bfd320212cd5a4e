package kubetest

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/podnet/podnet/internal/testutil"
)

// eventTimeout bounds every wait for an informer event; it is a deadline for a
// failure message, not a latency expectation.
const eventTimeout = 30 * time.Second

// TestPrivilegedKubeAPIServer starts the API server and proves with client-go shared
// informers that it delivers add, update and delete for every kind the Kubernetes mode
// watches, and that an informer carries on across an API server restart.
func TestPrivilegedKubeAPIServer(t *testing.T) {
	testutil.RequireRoot(t)
	c := Start(t)
	ctx := t.Context()

	factory := informers.NewSharedInformerFactory(c.Client, 0)
	rec := newRecorder()
	rec.watch(t, "Namespace", factory.Core().V1().Namespaces().Informer())
	rec.watch(t, "Pod", factory.Core().V1().Pods().Informer())
	rec.watch(t, "Service", factory.Core().V1().Services().Informer())
	rec.watch(t, "EndpointSlice", factory.Discovery().V1().EndpointSlices().Informer())
	rec.watch(t, "NetworkPolicy", factory.Networking().V1().NetworkPolicies().Informer())
	rec.watch(t, "Node", factory.Core().V1().Nodes().Informer())
	rec.watch(t, "Lease", factory.Coordination().V1().Leases().Informer())
	stop := make(chan struct{})
	factory.Start(stop)
	t.Cleanup(func() { close(stop); factory.Shutdown() })
	syncCtx, cancel := context.WithTimeout(ctx, eventTimeout)
	defer cancel()
	for typ, ok := range factory.WaitForCacheSync(syncCtx.Done()) {
		if !ok {
			t.Fatalf("informer for %v did not sync within %v", typ, eventTimeout)
		}
	}

	cs := c.Client
	// A pod no scheduler has bound to a node goes at once on delete: no kubelet has
	// to confirm it.
	lifecycle(t, rec, "Pod", cs.CoreV1().Pods("default"), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	})
	svc := lifecycle(t, rec, "Service", cs.CoreV1().Services("default"), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	})
	if ip, err := netip.ParseAddr(svc.Spec.ClusterIP); err != nil || !c.ServiceCIDR.Contains(ip) {
		t.Errorf("service web: ClusterIP %q, want one allocated from %v", svc.Spec.ClusterIP, c.ServiceCIDR)
	}
	lifecycle(t, rec, "EndpointSlice", cs.DiscoveryV1().EndpointSlices("default"), &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}}},
		Ports:       []discoveryv1.EndpointPort{{Port: new(int32(8080))}},
	})
	lifecycle(t, rec, "NetworkPolicy", cs.NetworkingV1().NetworkPolicies("default"), &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-all"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	})
	lifecycle(t, rec, "Node", cs.CoreV1().Nodes(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	lifecycle(t, rec, "Lease", cs.CoordinationV1().Leases("default"), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "podnet"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: new("node-a")},
	})

	// No namespace controller runs: a deleted namespace stays Terminating (an update)
	// until someone empties its spec.finalizers, which removes it.
	nsClient := cs.CoreV1().Namespaces()
	addAndUpdate(t, rec, "Namespace", nsClient, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "blue"}})
	if err := nsClient.Delete(ctx, "blue", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete namespace blue: %v", err)
	}
	ns, err := nsClient.Get(ctx, "blue", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get terminating namespace blue: %v", err)
	}
	ns.Spec.Finalizers = nil
	if _, err := nsClient.Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("finalize namespace blue: %v", err)
	}
	rec.wait(t, "delete Namespace blue")

	// Restart: a lease created before it and deleted right after, and a pod created
	// after it, reach the informers (the delete may come as a watch event or, if the
	// informer relists after it, as a tombstone).
	leases := cs.CoordinationV1().Leases("default")
	if _, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "before-restart"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create lease before-restart: %v", err)
	}
	rec.wait(t, "add Lease default/before-restart")
	c.Restart()
	if err := leases.Delete(ctx, "before-restart", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete lease before-restart after the restart: %v", err)
	}
	pods := cs.CoreV1().Pods("default")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "after-restart"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod after-restart: %v", err)
	}
	rec.wait(t, "delete Lease default/before-restart")
	rec.wait(t, "add Pod default/after-restart")
}

// client is what lifecycle needs of a typed client-go client (PodInterface,
// NodeInterface...).
type client[T metav1.Object] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
}

// lifecycle creates obj, labels it and deletes it, waiting after each step for the
// informer event of kind, and returns the object as the informer delivered it on add.
func lifecycle[T metav1.Object](t *testing.T, rec *recorder, kind string, c client[T], obj T) T {
	t.Helper()
	added := addAndUpdate(t, rec, kind, c, obj)
	key, _ := cache.MetaNamespaceKeyFunc(added)
	if err := c.Delete(t.Context(), added.GetName(), metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete %s %s: %v", kind, key, err)
	}
	rec.wait(t, "delete "+kind+" "+key)
	return added
}

// addAndUpdate is lifecycle without the delete.
func addAndUpdate[T metav1.Object](t *testing.T, rec *recorder, kind string, c client[T], obj T) T {
	t.Helper()
	ctx := t.Context()
	created, err := c.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s %s: %v", kind, obj.GetName(), err)
	}
	key, _ := cache.MetaNamespaceKeyFunc(created)
	added := rec.wait(t, "add "+kind+" "+key).(T)
	created.SetLabels(map[string]string{"podnet.test/updated": "true"})
	if _, err := c.Update(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update %s %s: %v", kind, key, err)
	}
	rec.wait(t, "update "+kind+" "+key)
	return added
}

// recorder keeps the informer events seen, as "add|update|delete KIND KEY", with the
// object delivered.
type recorder struct {
	// mu guards seen.
	mu   sync.Mutex
	seen map[string]any
}

func newRecorder() *recorder { return &recorder{seen: map[string]any{}} }

func (r *recorder) record(op, kind string, obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	key, err := cache.MetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[op+" "+kind+" "+key] = obj
}

// watch records the events of inf as kind.
func (r *recorder) watch(t *testing.T, kind string, inf cache.SharedIndexInformer) {
	t.Helper()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.record("add", kind, obj) },
		UpdateFunc: func(_, obj any) { r.record("update", kind, obj) },
		DeleteFunc: func(obj any) { r.record("delete", kind, obj) },
	})
	if err != nil {
		t.Fatalf("watch %s: %v", kind, err)
	}
}

// wait returns the object of event once it has been seen, and fails the test, naming
// the event and listing those seen, if it is not within eventTimeout.
func (r *recorder) wait(t *testing.T, event string) any {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for {
		r.mu.Lock()
		obj, ok := r.seen[event]
		r.mu.Unlock()
		if ok {
			return obj
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var seen []string
	for e := range r.seen {
		seen = append(seen, e)
	}
	sort.Strings(seen)
	t.Fatalf("informer did not deliver %q within %v; seen:\n%s", event, eventTimeout, strings.Join(seen, "\n"))
	return nil
}
