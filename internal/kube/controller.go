// Package kube is podnet's Kubernetes mode: a controller that mirrors the Kubernetes
// API's namespaces, pods, services with their EndpointSlices, and network policies into
// podnet's store, so that podnet serves a cluster's services, DNS and policies instead
// of kube-proxy and CoreDNS; with Config.NodePodCIDRs, nodes too (their pod ranges,
// inside which each node claims its address blocks). The agents need no Kubernetes
// credentials: they read only podnet's store.
//
// One controller of a cluster is active at a time, elected through a
// coordination.k8s.io Lease; the others stand by. The active one watches the API with
// client-go informers, queues the keys of changed objects, and applies them in batches
// (api.MirrorRequest) to a Sink: the store shared by the nodes (StoreSink), or one
// agent's socket (api.Client). When it starts leading it lists what the store holds of
// source api.SourceKubernetes and deletes what the API no longer has. An object podnet
// cannot honour, or a field of it, is reported as a Kubernetes Event on the object and
// in the log; the rest keeps working.
package kube

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/mirror"
	"github.com/podnet/podnet/internal/store"
)

// Sink is where the controller writes: api.Client (an agent's socket) or StoreSink.
type Sink interface {
	Mirror(ctx context.Context, req api.MirrorRequest) (api.MirrorResult, error)
	MirrorInventory(ctx context.Context, source string) (api.MirrorInventory, error)
}

// StoreSink applies mirror requests to a store shared by the nodes (etcd): every agent
// follows through its watch of the store.
type StoreSink struct {
	Store store.Store
}

func (s StoreSink) Mirror(_ context.Context, req api.MirrorRequest) (api.MirrorResult, error) {
	var res mirror.Result
	err := s.Store.Update(func(tx store.Tx) (err error) {
		res, err = mirror.Apply(tx, req, time.Now().UTC())
		return err
	})
	return api.MirrorResult{Errors: res.Errors}, err
}

func (s StoreSink) MirrorInventory(_ context.Context, source string) (inv api.MirrorInventory, err error) {
	err = s.Store.View(func(tx store.Tx) error {
		inv.Keys, err = mirror.Inventory(tx, source)
		return err
	})
	return inv, err
}

// Defaults of Config.
const (
	DefaultLeaseNamespace = "kube-system"
	DefaultLeaseName      = "podnet-controller"
	DefaultLeaseDuration  = 15 * time.Second
	DefaultRenewDeadline  = 10 * time.Second
	DefaultRetryPeriod    = 2 * time.Second
	DefaultBatch          = 500
)

// Config configures a controller.
type Config struct {
	Client kubernetes.Interface
	Sink   Sink
	Log    *slog.Logger
	// Identity names this controller in the Lease (default: the hostname and pid).
	Identity string
	// The Lease that elects the active controller, and its timing (client-go's
	// leaderelection: a standby takes over LeaseDuration after the leader's last renewal;
	// a leader that cannot renew within RenewDeadline stops).
	LeaseNamespace, LeaseName                 string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Batch is the most changes applied in one request (one store transaction).
	Batch int
	// NodePodCIDRs mirrors the nodes (api.KindNode): each node's spec.podCIDRs become
	// the ranges its address blocks are taken from (and its InternalIP is recorded).
	// Off, no node is mirrored, and the nodes a previous term mirrored lose what it
	// gave them at the start of the term (the store's inventory lists them and the API
	// is not asked): their blocks come from the whole subnet again.
	NodePodCIDRs bool
}

// Status is what `podnet controller status` shows.
type Status struct {
	Identity string `json:"identity"`
	// Leader is the identity holding the Lease ("" while unknown); Leading is this one.
	Leader  string `json:"leader"`
	Leading bool   `json:"leading"`
	// Synced: the informers have listed everything and the store was brought level.
	Synced bool `json:"synced"`
	// Objects counts the objects mirrored, per kind.
	Objects map[string]int `json:"objects"`
	// LastSync is when the last batch was applied.
	LastSync time.Time `json:"lastSync,omitzero"`
	// LagSeconds is, for the last batch, the time from the first watch event of its
	// oldest key to the batch applied; MaxLagSeconds the largest since leading.
	LagSeconds    float64 `json:"lagSeconds"`
	MaxLagSeconds float64 `json:"maxLagSeconds"`
	// Pending keys wait in the queue.
	Pending int `json:"pending"`
	// Reported counts the objects with a problem reported as an Event right now.
	Reported int `json:"reported"`
	// SinkErrors counts the batches the sink failed (retried with backoff).
	SinkErrors uint64 `json:"sinkErrors"`
}

// Controller mirrors the Kubernetes API into podnet's store.
type Controller struct {
	cfg Config
	log *slog.Logger
	// leadMu is held for a term of leadership (lead).
	leadMu   sync.Mutex
	recorder record.EventRecorder

	mu     sync.Mutex
	status Status
	// mirrored are the keys of the objects in the store, reported the problems last
	// reported per key (an Event is sent when they change), since the first event
	// per pending key.
	mirrored map[string]bool
	reported map[string]string
	since    map[string]time.Time
	queue    workqueue.TypedRateLimitingInterface[string]
}

// New returns a controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.LeaseNamespace == "" {
		cfg.LeaseNamespace = DefaultLeaseNamespace
	}
	if cfg.LeaseName == "" {
		cfg.LeaseName = DefaultLeaseName
	}
	cfg.LeaseDuration = cmpOr(cfg.LeaseDuration, DefaultLeaseDuration)
	cfg.RenewDeadline = cmpOr(cfg.RenewDeadline, DefaultRenewDeadline)
	cfg.RetryPeriod = cmpOr(cfg.RetryPeriod, DefaultRetryPeriod)
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Controller{cfg: cfg, log: cfg.Log, status: Status{Identity: cfg.Identity, Objects: map[string]int{}}}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Run takes part in the election until ctx ends. A leader that cannot renew the Lease
// in time (the API server restarting, or another controller took over) stops mirroring
// at once, drops its caches and stands by again: a new term starts from a fresh list.
func (c *Controller) Run(ctx context.Context) error {
	// One event recorder for the process: posting an Event retries for a while when the
	// API server is away, which must not hold up a term's end.
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cfg.Client.CoreV1().Events("")})
	defer func() { go broadcaster.Shutdown() }()
	c.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "podnet-controller"})
	for {
		err := c.campaign(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			c.log.Error("leading ended", "err", err)
		default:
			c.log.Warn("lost the leader lease: standing by")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.cfg.RetryPeriod):
		}
	}
}

// campaign is one election: it returns when ctx ends or when this controller led and
// lost the Lease.
func (c *Controller) campaign(ctx context.Context) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: c.cfg.LeaseNamespace, Name: c.cfg.LeaseName},
		Client:     c.cfg.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.cfg.Identity},
	}
	var leadErr error // written under leadMu
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, Name: c.cfg.LeaseName, ReleaseOnCancel: true,
		LeaseDuration: c.cfg.LeaseDuration, RenewDeadline: c.cfg.RenewDeadline, RetryPeriod: c.cfg.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				// One term at a time, even if this goroutine started late.
				c.leadMu.Lock()
				defer c.leadMu.Unlock()
				if ctx.Err() != nil {
					return
				}
				c.setLeading(true)
				c.log.Info("leading: mirroring the Kubernetes API", "identity", c.cfg.Identity)
				leadErr = c.lead(ctx)
			},
			OnStoppedLeading: func() { c.setLeading(false) },
			OnNewLeader: func(id string) {
				c.mu.Lock()
				c.status.Leader = id
				c.mu.Unlock()
				if id != c.cfg.Identity {
					c.log.Info("standing by", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	le.Run(ctx)
	// The term ends with le.Run's context; leadMu is free once lead has returned.
	c.leadMu.Lock()
	defer c.leadMu.Unlock()
	return leadErr
}

func (c *Controller) setLeading(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.Leading = on
	if !on {
		c.status.Synced = false
	}
}

// Status returns the controller's status now.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Objects = maps.Clone(s.Objects)
	if c.queue != nil {
		s.Pending = c.queue.Len()
	}
	s.Reported = len(c.reported)
	return s
}

// informerSet holds the listers of what the controller mirrors.
type informerSet struct {
	namespaces cache.GenericLister
	pods       cache.GenericLister
	services   cache.GenericLister
	slices     cache.Indexer
	policies   cache.GenericLister
	// nodes is nil unless Config.NodePodCIDRs.
	nodes cache.GenericLister
}

// lead mirrors while this controller holds the Lease (ctx).
func (c *Controller) lead(ctx context.Context) error {
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	c.mu.Lock()
	c.queue, c.mirrored, c.reported, c.since = queue, map[string]bool{}, map[string]string{}, map[string]time.Time{}
	c.status.Objects, c.status.MaxLagSeconds = map[string]int{}, 0
	c.mu.Unlock()
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()

	recorder := c.recorder

	f := informers.NewSharedInformerFactory(c.cfg.Client, 0)
	var in informerSet
	watch := func(inf cache.SharedIndexInformer, key func(obj any) []string, same func(a, b any) bool) {
		inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { c.enqueue(key(obj)) },
			UpdateFunc: func(old, cur any) {
				if same == nil || !same(old, cur) {
					c.enqueue(key(cur))
				}
			},
			DeleteFunc: func(obj any) {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				c.enqueue(key(obj))
			},
		})
	}
	objKey := func(kind string) func(obj any) []string {
		return func(obj any) []string {
			m, err := metaOf(obj)
			if err != nil {
				return nil
			}
			return []string{api.MirrorChange{Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName()}.Key()}
		}
	}
	nsInf := f.Core().V1().Namespaces()
	watch(nsInf.Informer(), objKey(api.KindNamespace), nil)
	podInf := f.Core().V1().Pods()
	// A pod's status changes often; only what podnet mirrors counts.
	watch(podInf.Informer(), objKey(api.KindPod), func(a, b any) bool {
		pa, oka := a.(*corev1.Pod)
		pb, okb := b.(*corev1.Pod)
		return oka && okb && reflect.DeepEqual(Pod(pa), Pod(pb))
	})
	svcInf := f.Core().V1().Services()
	watch(svcInf.Informer(), objKey(api.KindService), nil)
	sliceInf := f.Discovery().V1().EndpointSlices()
	watch(sliceInf.Informer(), func(obj any) []string {
		m, err := metaOf(obj)
		if err != nil || m.GetLabels()[discoveryv1.LabelServiceName] == "" {
			return nil
		}
		return []string{api.MirrorChange{Kind: api.KindService, Namespace: m.GetNamespace(), Name: m.GetLabels()[discoveryv1.LabelServiceName]}.Key()}
	}, nil)
	npInf := f.Networking().V1().NetworkPolicies()
	watch(npInf.Informer(), objKey(api.KindNetworkPolicy), nil)
	in.namespaces = cache.NewGenericLister(nsInf.Informer().GetIndexer(), corev1.Resource("namespaces"))
	in.pods = cache.NewGenericLister(podInf.Informer().GetIndexer(), corev1.Resource("pods"))
	in.services = cache.NewGenericLister(svcInf.Informer().GetIndexer(), corev1.Resource("services"))
	if err := sliceInf.Informer().AddIndexers(cache.Indexers{byService: func(obj any) ([]string, error) {
		m, err := metaOf(obj)
		if err != nil || m.GetLabels()[discoveryv1.LabelServiceName] == "" {
			return nil, err
		}
		return []string{m.GetNamespace() + "/" + m.GetLabels()[discoveryv1.LabelServiceName]}, nil
	}}); err != nil {
		return err
	}
	in.slices = sliceInf.Informer().GetIndexer()
	in.policies = cache.NewGenericLister(npInf.Informer().GetIndexer(), networkingv1.Resource("networkpolicies"))
	if c.cfg.NodePodCIDRs {
		nodeInf := f.Core().V1().Nodes()
		// A node's status changes often (conditions, images); only its addresses and
		// pod ranges count.
		watch(nodeInf.Informer(), objKey(api.KindNode), func(a, b any) bool {
			na, oka := a.(*corev1.Node)
			nb, okb := b.(*corev1.Node)
			if !oka || !okb {
				return false
			}
			ta, pa := Node(na)
			tb, pb := Node(nb)
			return reflect.DeepEqual(ta, tb) && slices.Equal(pa, pb)
		})
		in.nodes = cache.NewGenericLister(nodeInf.Informer().GetIndexer(), corev1.Resource("nodes"))
	}

	f.Start(ctx.Done())
	defer f.Shutdown()
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("informer of %v did not sync", typ)
		}
	}
	// What the store holds and the API no longer has (deleted while no controller
	// mirrored) is queued too: its key finds no object, which deletes it.
	for {
		inv, err := c.cfg.Sink.MirrorInventory(ctx, api.SourceKubernetes)
		if err == nil {
			c.mu.Lock()
			for _, k := range inv.Keys {
				c.mirrored[k] = true
			}
			c.countLocked()
			c.mu.Unlock()
			c.enqueue(inv.Keys)
			break
		}
		c.log.Error("list the mirrored objects", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.cfg.RetryPeriod):
		}
	}
	c.log.Info("caches synced", "pending", queue.Len())
	if queue.Len() == 0 {
		c.mu.Lock()
		c.status.Synced = true
		c.mu.Unlock()
	}
	for c.work(ctx, in, recorder) {
	}
	return nil
}

func metaOf(obj any) (metav1.Object, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

func (c *Controller) enqueue(keys []string) {
	now := time.Now()
	c.mu.Lock()
	for _, k := range keys {
		if _, ok := c.since[k]; !ok {
			c.since[k] = now
		}
	}
	queue := c.queue
	c.mu.Unlock()
	for _, k := range keys {
		queue.Add(k)
	}
}

// work applies one batch of queued keys; false when the queue shut down.
func (c *Controller) work(ctx context.Context, in informerSet, recorder record.EventRecorder) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	keys := []string{key}
	for len(keys) < c.cfg.Batch && c.queue.Len() > 0 {
		k, quit := c.queue.Get()
		if quit {
			break
		}
		keys = append(keys, k)
	}
	defer func() {
		for _, k := range keys {
			c.queue.Done(k)
		}
	}()
	// The keys' first events; an event from now on (the key queued again while this
	// batch is applied) starts a lag of its own.
	first := time.Time{}
	c.mu.Lock()
	for _, k := range keys {
		if t, ok := c.since[k]; ok && (first.IsZero() || t.Before(first)) {
			first = t
		}
		delete(c.since, k)
	}
	c.mu.Unlock()
	req := api.MirrorRequest{Source: api.SourceKubernetes}
	var objs []runtime.Object
	var applied []string
	for _, k := range keys {
		change, obj, problems, ok := c.change(k, in)
		c.report(k, obj, problems, recorder)
		if ok {
			req.Changes = append(req.Changes, change)
			objs = append(objs, obj)
			applied = append(applied, k)
		}
	}
	if len(req.Changes) > 0 {
		res, err := c.cfg.Sink.Mirror(ctx, req)
		if err != nil {
			c.log.Error("mirror into podnet", "changes", len(req.Changes), "err", err)
			c.mu.Lock()
			c.status.SinkErrors++
			for _, k := range keys {
				if _, ok := c.since[k]; !ok && !first.IsZero() {
					c.since[k] = first // the lag goes on until the retry lands
				}
			}
			c.mu.Unlock()
			for _, k := range keys {
				c.queue.AddRateLimited(k)
			}
			return true
		}
		for i, msg := range res.Errors {
			if msg != "" && i < len(objs) {
				c.log.Warn("podnet refused an object", "object", applied[i], "reason", msg)
				if objs[i] != nil {
					recorder.Event(objs[i], corev1.EventTypeWarning, "PodnetRefused", msg)
				}
			}
		}
		c.applied(req.Changes, res.Errors)
	}
	now := time.Now()
	c.mu.Lock()
	var lag time.Duration
	if !first.IsZero() {
		lag = now.Sub(first)
	}
	for _, k := range keys {
		c.queue.Forget(k)
	}
	c.status.LastSync, c.status.LagSeconds = now, lag.Seconds()
	c.status.MaxLagSeconds = max(c.status.MaxLagSeconds, lag.Seconds())
	if c.queue.Len() == 0 {
		c.status.Synced = true
	}
	c.mu.Unlock()
	return true
}

// applied records which objects the store holds now, and counts them (per change, not
// over everything mirrored: a batch costs what it changed).
func (c *Controller) applied(changes []api.MirrorChange, errs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ch := range changes {
		if i < len(errs) && errs[i] != "" {
			continue
		}
		k := ch.Key() // its kind is ch.Kind, as countLocked reads it
		switch {
		case ch.Delete && c.mirrored[k]:
			delete(c.mirrored, k)
			if c.status.Objects[ch.Kind]--; c.status.Objects[ch.Kind] <= 0 {
				delete(c.status.Objects, ch.Kind)
			}
		case !ch.Delete && !c.mirrored[k]:
			c.mirrored[k] = true
			c.status.Objects[ch.Kind]++
		}
	}
}

func (c *Controller) countLocked() {
	c.status.Objects = map[string]int{}
	for k := range c.mirrored {
		kind, _, _ := strings.Cut(k, "/")
		c.status.Objects[kind]++
	}
}

// report sends an Event when an object's problems changed (not again on every resync).
func (c *Controller) report(key string, obj runtime.Object, problems []string, recorder record.EventRecorder) {
	msg := strings.Join(problems, "; ")
	c.mu.Lock()
	prev := c.reported[key]
	if msg == "" {
		delete(c.reported, key)
	} else {
		c.reported[key] = msg
	}
	c.mu.Unlock()
	if msg == "" || msg == prev {
		return
	}
	c.log.Warn("object not fully honoured", "object", key, "problems", msg)
	if obj != nil {
		recorder.Event(obj, corev1.EventTypeWarning, "PodnetUnsupported", msg)
	}
}

// change builds the change of one key from the informers' caches: the object as it is
// now, or its delete when the API no longer has it. ok is false when nothing is to be
// written (an object that cannot be translated, reported in problems).
func (c *Controller) change(key string, in informerSet) (ch api.MirrorChange, obj runtime.Object, problems []string, ok bool) {
	kind, rest, _ := strings.Cut(key, "/")
	ns, name, _ := strings.Cut(rest, "/")
	ch = api.MirrorChange{Kind: kind, Namespace: ns, Name: name}
	get := func(l cache.GenericLister) (runtime.Object, bool) {
		var o runtime.Object
		var err error
		if ns == "" {
			o, err = l.Get(name)
		} else {
			o, err = l.ByNamespace(ns).Get(name)
		}
		if apierrors.IsNotFound(err) || o == nil {
			return nil, false
		}
		return o, err == nil
	}
	var found bool
	switch kind {
	case api.KindNamespace:
		if obj, found = get(in.namespaces); found {
			n := Namespace(obj.(*corev1.Namespace))
			ch.NS = &n
		}
	case api.KindPod:
		if obj, found = get(in.pods); found {
			p := Pod(obj.(*corev1.Pod))
			ch.Pod = &p
		}
	case api.KindService:
		if obj, found = get(in.services); found {
			s, probs := Service(obj.(*corev1.Service), c.slicesOf(in, ns, name))
			ch.Service, problems = &s, probs
		}
	case api.KindNode:
		// Without Config.NodePodCIDRs there is no lister: a node the store holds from
		// an earlier term is deleted (its pod ranges cleared).
		if ns != "" {
			return ch, nil, nil, false
		}
		if in.nodes != nil {
			if obj, found = get(in.nodes); found {
				n, probs := Node(obj.(*corev1.Node))
				ch.Node, problems = &n, probs
			}
		}
	case api.KindNetworkPolicy:
		if obj, found = get(in.policies); found {
			p, err := NetworkPolicy(obj.(*networkingv1.NetworkPolicy))
			if err != nil {
				return ch, obj, []string{err.Error()}, false
			}
			ch.Policy = &p
		}
	default:
		return ch, nil, nil, false
	}
	ch.Delete = !found
	return ch, obj, problems, true
}

// byService indexes EndpointSlices by NAMESPACE/SERVICE.
const byService = "service"

func (c *Controller) slicesOf(in informerSet, ns, name string) []*discoveryv1.EndpointSlice {
	objs, _ := in.slices.ByIndex(byService, ns+"/"+name)
	var out []*discoveryv1.EndpointSlice
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return out
}
