package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agentproc"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/kube"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/store/etcdstore/etcdtest"
	"github.com/podnet/podnet/internal/testutil"
	"github.com/podnet/podnet/internal/testutil/kubetest"
)

// kubeController is one `podnet controller` process.
type kubeController struct {
	id     string
	status string // its status socket
	log    string
	child  *agentproc.Child
}

// startController runs a controller writing into the agents' etcd (store).
func startController(t *testing.T, kc *kubetest.Cluster, store, dir, id string) *kubeController {
	t.Helper()
	return startControllerWith(t, kc, dir, id, "--store", store)
}

// startControllerWith runs a controller with the sink flags given (--store etcd://...,
// or --socket for an agent's) and short Lease timings: a standby takes over within
// about 4 s of the leader's death.
func startControllerWith(t *testing.T, kc *kubetest.Cluster, dir, id string, sink ...string) *kubeController {
	t.Helper()
	return startControllerAs(t, kc.Kubeconfig, dir, id, sink...)
}

// startControllerAs is startControllerWith with the credentials of kubeconfig.
func startControllerAs(t *testing.T, kubeconfig, dir, id string, sink ...string) *kubeController {
	t.Helper()
	c := &kubeController{id: id, status: filepath.Join(dir, id+".sock"), log: filepath.Join(dir, id+".log")}
	cmd := exec.Command(bin.podnet, append([]string{"controller", "--kubeconfig", kubeconfig,
		"--identity", id, "--status-socket", c.status,
		"--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms"}, sink...)...)
	child, err := agentproc.StartChild(cmd, c.log, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.child = child
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("controller %s:\n%s", id, agentproc.Tail(c.log, 30))
		}
	})
	return c
}

func (c *kubeController) stop() {
	select {
	case <-c.child.Done():
	default:
		c.child.Stop(10 * time.Second)
	}
}

func (c *kubeController) state(t *testing.T) kube.Status {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, _ := kube.ReadStatus(ctx, c.status)
	return s
}

// kubePod is a pod of the API attached on a node through the agent as kubelet's CNI
// ADD would (K8S_POD_NAMESPACE, K8S_POD_NAME).
type kubePod struct {
	name string
	ns   netns.NsHandle
	ip   netip.Addr
	node int
}

func kubeAttach(t *testing.T, c *lab.Cluster, a *clusterAgent, network, name string) kubePod {
	t.Helper()
	sb, err := c.Nodes[a.i].Sandbox()
	if err != nil {
		t.Fatal(err)
	}
	return kubeAttachIn(t, sb, a.c, a.i, network, name)
}

// kubeAttachIn attaches sandbox sb through the agent cl of node i, and serves its
// identity on port 8080.
func kubeAttachIn(t *testing.T, sb netns.NsHandle, cl *api.Client, i int, network, name string) kubePod {
	t.Helper()
	key := api.EndpointKey{Network: network, ContainerID: "k8s-" + name, IfName: "eth0"}
	res, err := cl.Attach(context.Background(), api.AttachRequest{EndpointKey: key, Namespace: "default", Name: name}, int(sb))
	if err != nil {
		t.Fatalf("attach %s on n%d: %v", name, i, err)
	}
	p := kubePod{name: name, ns: sb, ip: res.IPs[0].Address.Addr(), node: i}
	l, err := kernel.ListenIn(sb, "tcp", netip.AddrPortFrom(p.ip, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go probe.ServeIdentity(l, p.ip)
	return p
}

func apiPod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "none",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
}

// slice is the EndpointSlice the endpointslice controller would write for svc: ready
// endpoints at the pods' addresses, port "http" 8080.
func slice(svc string, pods ...kubePod) *discoveryv1.EndpointSlice {
	name, port := "http", int32(8080)
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	}
	for _, p := range pods {
		node, host := fmt.Sprintf("n%d", p.node), p.name
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.ip.String()}, NodeName: &node, Hostname: &host,
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: p.name}})
	}
	return s
}

// backendsSeen asks ip:port from ns until every one of want answered, and fails on any
// other answer.
func backendsSeen(t *testing.T, what string, ns netns.NsHandle, dst netip.AddrPort, want ...kubePod) {
	t.Helper()
	eventuallyState(t, what, func() (bool, string) {
		seen := map[netip.Addr]bool{}
		for range 40 {
			got, err := probe.AskIdentity(context.Background(), ns, dst, time.Second)
			if err != nil {
				return false, err.Error()
			}
			if !slices.ContainsFunc(want, func(p kubePod) bool { return p.ip == got }) {
				return false, "answered by " + got.String()
			}
			seen[got] = true
			if len(seen) == len(want) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d of %d backends answered", len(seen), len(want))
	})
}

func dnsAnswers(ns netns.NsHandle, name string, qtype uint16) ([]string, error) {
	r, err := probe.Lookup(context.Background(), ns, netip.AddrPortFrom(netip.MustParseAddr(api.DNSAddress), 53), name, qtype, 2*time.Second)
	if err != nil {
		return nil, err
	}
	return probe.Answers(r), nil
}

func wantDNS(t *testing.T, ns netns.NsHandle, name string, qtype uint16, want ...string) {
	t.Helper()
	slices.Sort(want)
	eventuallyState(t, "DNS "+name, func() (bool, string) {
		got, err := dnsAnswers(ns, name, qtype)
		return err == nil && slices.Equal(got, want), fmt.Sprint(got, err)
	})
}

func mustCreate[T any](t *testing.T, what string, create func(context.Context, T, metav1.CreateOptions) (T, error), obj T) T {
	t.Helper()
	out, err := create(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s: %v", what, err)
	}
	return out
}

// A real kube-apiserver feeds two podnet nodes on etcd through `podnet controller`:
// pods attached by CNI take their labels from the API (whether the pod object came
// first or the attach), a ClusterIP service balances over its EndpointSlice's pods on
// both nodes from both nodes and follows scaling, DNS answers for ClusterIP, headless
// and ExternalName services, a NodePort reaches the backends through a node's address,
// a NetworkPolicy from the API is enforced and follows relabelling, the CLI refuses to
// change mirrored objects, an unsupported field becomes an Event, and the mirror
// survives a controller restart (deleting what went while it was down), a change of
// leader and an API server restart.
func TestPrivilegedKubernetes(t *testing.T) {
	testutil.RequireRoot(t)
	kc := kubetest.Start(t)
	k := kc.Client
	etcd := etcdtest.Start(t)
	store := "etcd://" + strings.TrimPrefix(etcd[0], "http://")
	c, err := lab.NewCluster(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	agents := []*clusterAgent{startClusterAgent(t, c, 0, etcd), startClusterAgent(t, c, 1, etcd)}
	ctx := context.Background()
	if _, err := agents[0].c.CreateNetwork(ctx, api.NetworkSpec{Name: "pods", Subnets: []string{"10.94.0.0/16"}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c1 := startController(t, kc, store, dir, "c1")
	eventuallyState(t, "c1 leads", func() (bool, string) { s := c1.state(t); return s.Leading && s.Synced, fmt.Sprint(s) })

	// web-0: the pod object first, then the attach; web-1: the attach first.
	mustCreate(t, "pod web-0", k.CoreV1().Pods("default").Create, apiPod("web-0", map[string]string{"app": "web"}))
	eventuallyState(t, "pod web-0 mirrored", func() (bool, string) { s := c1.state(t); return s.Objects[api.KindPod] == 1, fmt.Sprint(s) })
	web0 := kubeAttach(t, c, agents[0], "pods", "web-0")
	web1 := kubeAttach(t, c, agents[1], "pods", "web-1")
	client0 := kubeAttach(t, c, agents[0], "pods", "client-0")
	client1 := kubeAttach(t, c, agents[1], "pods", "client-1")
	mustCreate(t, "pod web-1", k.CoreV1().Pods("default").Create, apiPod("web-1", map[string]string{"app": "web"}))
	for _, name := range []string{"client-0", "client-1"} {
		mustCreate(t, "pod "+name, k.CoreV1().Pods("default").Create, apiPod(name, map[string]string{"role": "other"}))
	}
	eventuallyState(t, "labels of the API on both web endpoints", func() (bool, string) {
		eps, err := agents[0].c.AllEndpoints(ctx, "pods")
		n := 0
		for _, ep := range eps {
			if strings.HasPrefix(ep.Name, "web-") && ep.Labels["app"] == "web" && len(ep.NamedPorts) == 1 && ep.NamedPorts[0].Port == 8080 {
				n++
			}
		}
		return n == 2, fmt.Sprint(eps, err)
	})

	// A ClusterIP service, its target port named, backends from an EndpointSlice.
	web := mustCreate(t, "service web", k.CoreV1().Services("default").Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}})
	vip := netip.MustParseAddr(web.Spec.ClusterIP)
	ws := mustCreate(t, "slice web", k.DiscoveryV1().EndpointSlices("default").Create, slice("web", web0, web1))
	for _, from := range []kubePod{client0, client1} {
		backendsSeen(t, fmt.Sprintf("web's ClusterIP from n%d", from.node), from.ns, netip.AddrPortFrom(vip, 80), web0, web1)
	}
	wantDNS(t, client1.ns, "web.default.svc.cluster.local", mdns.TypeA, vip.String())
	// Scaled down to web-1, and back.
	down := slice("web", web1)
	down.ResourceVersion = ws.ResourceVersion
	ws, err = k.DiscoveryV1().EndpointSlices("default").Update(ctx, down, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	backendsSeen(t, "web scaled down to web-1", client0.ns, netip.AddrPortFrom(vip, 80), web1)
	up := slice("web", web0, web1)
	up.ResourceVersion = ws.ResourceVersion
	if _, err := k.DiscoveryV1().EndpointSlices("default").Update(ctx, up, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	backendsSeen(t, "web scaled up again", client0.ns, netip.AddrPortFrom(vip, 80), web0, web1)

	// The CLI does not change what the API owns.
	if err := agents[1].c.DeleteService(ctx, "default", "web"); err == nil || !strings.Contains(err.Error(), "service default/web comes from kubernetes") {
		t.Errorf("CLI delete of a mirrored service: %v", err)
	}

	// Headless (records per endpoint, hostnames) and ExternalName, in DNS.
	mustCreate(t, "service web-h", k.CoreV1().Services("default").Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-h", Namespace: "default"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}}})
	mustCreate(t, "slice web-h", k.DiscoveryV1().EndpointSlices("default").Create, slice("web-h", web0, web1))
	mustCreate(t, "service ext", k.CoreV1().Services("default").Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.org"}})
	wantDNS(t, client0.ns, "web-h.default.svc.cluster.local", mdns.TypeA, web0.ip.String(), web1.ip.String())
	wantDNS(t, client0.ns, "web-1.web-h.default.svc.cluster.local", mdns.TypeA, web1.ip.String())
	wantDNS(t, client0.ns, "ext.default.svc.cluster.local", mdns.TypeCNAME, "CNAME db.example.org.")

	// NodePort: n1's node namespace reaches both backends through n0's address: web-1,
	// on n1, through n0 and the tunnel, masqueraded to n0's tunnel address so that the
	// reply comes back through the tunnel.
	np := mustCreate(t, "service web-np", k.CoreV1().Services("default").Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-np", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Name: "http", Port: 81, TargetPort: intstr.FromString("http")}}}})
	mustCreate(t, "slice web-np", k.DiscoveryV1().EndpointSlices("default").Create, slice("web-np", web0, web1))
	nodePort := netip.AddrPortFrom(lab.UnderlayAddr(0).Addr(), uint16(np.Spec.Ports[0].NodePort))
	backendsSeen(t, "NodePort through n0's address from n1", c.Nodes[1].Node, nodePort, web0, web1)
	// The nodes themselves reach the other's pod, and the ClusterIP's both backends.
	for i, p := range []kubePod{web1, web0} {
		backendsSeen(t, fmt.Sprintf("n%d to %s", i, p.name), c.Nodes[i].Node, netip.AddrPortFrom(p.ip, 8080), p)
		backendsSeen(t, fmt.Sprintf("web's ClusterIP from n%d's node namespace", i), c.Nodes[i].Node, netip.AddrPortFrom(vip, 80), web0, web1)
	}

	// An unsupported field is an Event on the service; the service still works.
	local := corev1.ServiceExternalTrafficPolicyLocal
	mustCreate(t, "service web-etp", k.CoreV1().Services("default").Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-etp", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ExternalTrafficPolicy: local,
			Ports: []corev1.ServicePort{{Name: "http", Port: 82, TargetPort: intstr.FromString("http")}}}})
	eventuallyState(t, "an Event on web-etp", func() (bool, string) {
		evs, err := k.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web-etp"})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if e.Reason == "PodnetUnsupported" && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "externalTrafficPolicy") {
				return true, ""
			}
		}
		return false, fmt.Sprint(evs.Items)
	})

	// A NetworkPolicy from the API: web admits only role=client. client-0 reaches web-1
	// before, not after; relabelled in the API, it does again.
	target := netip.AddrPortFrom(web1.ip, 8081) // probe's own server, beside ServeIdentity's
	for _, from := range []kubePod{client0, client1} {
		if _, err := probe.TCP(ctx, from.ns, web1.ns, target, 2*time.Second); err != nil {
			t.Fatalf("%s -> web-1 before any policy: %v", from.name, err)
		}
	}
	mustCreate(t, "policy", k.NetworkingV1().NetworkPolicies("default").Create, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "clients-only", Namespace: "default"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}}}}}})
	eventuallyState(t, "client-0 kept out of web-1", func() (bool, string) {
		err := probe.Blocked(ctx, client0.ns, web1.ns, target, 500*time.Millisecond)
		return err == nil, fmt.Sprint(err)
	})
	pod, err := k.CoreV1().Pods("default").Get(ctx, "client-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Labels = map[string]string{"role": "client"}
	if _, err := k.CoreV1().Pods("default").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventuallyState(t, "client-0, relabelled role=client, let in", func() (bool, string) {
		got, err := probe.TCP(ctx, client0.ns, web1.ns, target, 500*time.Millisecond)
		return err == nil && got == client0.ip, fmt.Sprint(got, err)
	})
	if err := probe.Blocked(ctx, client1.ns, web1.ns, target, time.Second); err != nil {
		t.Errorf("client-1, not a client, to web-1: %v", err)
	}

	// A controller restart: a service deleted while none ran is gone after.
	mustCreate(t, "service gone", k.CoreV1().Services("default").Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 90}}}})
	eventuallyState(t, "service gone mirrored", func() (bool, string) {
		_, err := agents[0].c.Service(ctx, "default", "gone")
		return err == nil, fmt.Sprint(err)
	})
	c1.stop()
	if err := k.CoreV1().Services("default").Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c2 := startController(t, kc, store, dir, "c2")
	c3 := startController(t, kc, store, dir, "c3")
	var leader, standby *kubeController
	eventuallyState(t, "one of c2 and c3 leads", func() (bool, string) {
		s2, s3 := c2.state(t), c3.state(t)
		switch {
		case s2.Leading && s2.Synced && !s3.Leading:
			leader, standby = c2, c3
		case s3.Leading && s3.Synced && !s2.Leading:
			leader, standby = c3, c2
		default:
			return false, fmt.Sprint(s2, s3)
		}
		return true, ""
	})
	eventuallyState(t, "service gone removed on resync", func() (bool, string) {
		_, err := agents[1].c.Service(ctx, "default", "gone")
		return api.ErrorCode(err) == api.CodeNotFound, fmt.Sprint(err)
	})
	eventuallyState(t, "the standby knows the leader", func() (bool, string) {
		s := standby.state(t)
		return s.Leader == leader.id && !s.Leading, fmt.Sprint(s)
	})

	// The leader dies (SIGKILL: no release of the Lease); the standby takes over.
	leader.child.Cmd.Process.Signal(syscall.SIGKILL)
	<-leader.child.Done()
	eventuallyWithin(t, standby.id+" takes over", 30*time.Second, func() (bool, string) {
		s := standby.state(t)
		return s.Leading && s.Synced, fmt.Sprint(s)
	})
	// The new leader mirrors; then the API server restarts and its watches resume.
	mustCreate(t, "service pre", k.CoreV1().Services("default").Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "pre", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 90}}}})
	eventuallyState(t, "service pre mirrored by "+standby.id, func() (bool, string) {
		_, err := agents[0].c.Service(ctx, "default", "pre")
		return err == nil, fmt.Sprint(err)
	})
	kc.Restart()
	late := mustCreate(t, "service late", k.CoreV1().Services("default").Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}})
	mustCreate(t, "slice late", k.DiscoveryV1().EndpointSlices("default").Create, slice("late", web0))
	start := time.Now()
	eventuallyWithin(t, "service late reachable after the API server restart", 30*time.Second, func() (bool, string) {
		// client-0 (role=client): the policy admits it to web-0.
		got, err := probe.AskIdentity(ctx, client0.ns, netip.AddrPortFrom(netip.MustParseAddr(late.Spec.ClusterIP), 80), time.Second)
		return err == nil && got == web0.ip, fmt.Sprint(got, err, standby.state(t))
	})
	t.Logf("service late reachable %v after its creation", time.Since(start).Round(time.Millisecond))
	// Deleted in the API: gone from the data path (connection refused: no such VIP
	// answers... the address is unrouted, so the connection does not succeed).
	if err := k.CoreV1().Services("default").Delete(ctx, "late", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	eventuallyState(t, "service late gone", func() (bool, string) {
		_, err := agents[0].c.Service(ctx, "default", "late")
		return api.ErrorCode(err) == api.CodeNotFound, fmt.Sprint(err)
	})
}

// One node on its embedded store, fed through the agent's socket (no --store): a pod's
// labels come from the API, a ClusterIP service reaches its EndpointSlice's backend and
// follows the slice to another, and a service deleted in the API leaves the agent.
func TestPrivilegedKubernetesOneNode(t *testing.T) {
	kc := kubetest.Start(t)
	k := kc.Client
	n := newNode(t)
	ctx := context.Background()
	if _, err := n.api.CreateNetwork(ctx, api.NetworkSpec{Name: "pods", Subnets: []string{"10.95.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	c := startControllerWith(t, kc, t.TempDir(), "solo", "--socket", n.socket)
	eventuallyState(t, "solo leads", func() (bool, string) { s := c.state(t); return s.Leading && s.Synced, fmt.Sprint(s) })
	var pods []kubePod
	for _, name := range []string{"web-0", "web-1", "client"} {
		mustCreate(t, "pod "+name, k.CoreV1().Pods("default").Create, apiPod(name, map[string]string{"app": name}))
		sb, err := n.lab.Sandbox()
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, kubeAttachIn(t, sb, n.api, 0, "pods", name))
	}
	web0, web1, client := pods[0], pods[1], pods[2]
	eventuallyState(t, "client's labels from the API", func() (bool, string) {
		eps, err := n.api.Endpoints(ctx, "pods")
		for _, ep := range eps {
			if ep.Name == "client" {
				return ep.Labels["app"] == "client", fmt.Sprint(ep.Labels)
			}
		}
		return false, fmt.Sprint(eps, err)
	})
	svc := mustCreate(t, "service web", k.CoreV1().Services("default").Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}})
	vip := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 80)
	sl := mustCreate(t, "slice web", k.DiscoveryV1().EndpointSlices("default").Create, slice("web", web0))
	backendsSeen(t, "web's ClusterIP through the socket-fed agent", client.ns, vip, web0)
	moved := slice("web", web1)
	moved.ResourceVersion = sl.ResourceVersion
	if _, err := k.DiscoveryV1().EndpointSlices("default").Update(ctx, moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	backendsSeen(t, "web follows its slice to web-1", client.ns, vip, web1)
	if err := k.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventuallyState(t, "web gone from the agent", func() (bool, string) {
		_, err := n.api.Service(ctx, "default", "web")
		return api.ErrorCode(err) == api.CodeNotFound, fmt.Sprint(err)
	})
}
