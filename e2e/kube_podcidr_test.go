package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/store/etcdstore/etcdtest"
	"github.com/podnet/podnet/internal/testutil"
	"github.com/podnet/podnet/internal/testutil/kubetest"
)

// podnet controller --node-pod-cidrs against a real kube-apiserver that enforces RBAC,
// writing into the etcd of a node's agent. The controller runs as a user of its own:
// refused until the ClusterRole of deploy/controller-rbac.yaml is bound to it, then
// enough for all it does (the Lease, the watches, an Event). The Node object's
// spec.podCIDRs and InternalIP reach the node's record before its agent registers and
// stay after (podnet node ls shows them), and the node's pods of a vxlan network get
// their addresses from a block inside its podCIDR, not from the subnet's lowest block.
func TestPrivilegedKubernetesPodCIDR(t *testing.T) {
	testutil.RequireRoot(t)
	const user = "podnet-controller"
	kc := kubetest.StartWith(t, kubetest.Options{RBAC: true, Users: []string{user}})
	etcd := etcdtest.Start(t)
	store := "etcd://" + strings.TrimPrefix(etcd[0], "http://")
	ctx := context.Background()

	podCIDR := netip.MustParsePrefix("10.97.5.0/24")
	internalIP := lab.UnderlayAddr(0).Addr()
	nodes := kc.Client.CoreV1().Nodes()
	n0 := mustCreate(t, "node n0", nodes.Create, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n0"},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR.String(), PodCIDRs: []string{podCIDR.String()}}})
	n0.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP.String()}, {Type: corev1.NodeHostName, Address: "n0"}}
	if _, err := nodes.UpdateStatus(ctx, n0, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("status of node n0: %v", err)
	}
	ctl := startControllerAs(t, kc.UserKubeconfigs[user], t.TempDir(), "c1", "--store", store, "--node-pod-cidrs")
	eventuallyState(t, "the controller refused by RBAC", func() (bool, string) {
		s := ctl.state(t)
		log, _ := os.ReadFile(ctl.log)
		return !s.Leading && strings.Contains(string(log), `is forbidden: User \"`+user+`\"`), fmt.Sprint(s)
	})
	applyRBAC(t, kc, "../deploy/controller-rbac.yaml", user)
	eventuallyState(t, "node n0 mirrored", func() (bool, string) {
		s := ctl.state(t)
		return s.Leading && s.Synced && s.Objects[api.KindNode] == 1, fmt.Sprint(s)
	})

	c, err := lab.NewCluster(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	agent := startClusterAgent(t, c, 0, etcd)
	eventuallyState(t, "n0's record: the agent's and the API's", func() (bool, string) {
		ns, err := agent.c.Nodes(ctx)
		if err != nil || len(ns) != 1 {
			return false, fmt.Sprint(ns, err)
		}
		n := ns[0]
		return n.Name == "n0" && n.Alive && n.IP == internalIP && n.InternalIP == internalIP &&
			slices.Equal(n.PodCIDRs, []netip.Prefix{podCIDR}) && n.Source == api.SourceKubernetes, fmt.Sprintf("%+v", n)
	})
	out, err := exec.Command(bin.podnet, "--socket", agent.Socket(), "node", "ls").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PODCIDRS") || !strings.Contains(string(out), podCIDR.String()) {
		t.Errorf("podnet node ls: %v\n%s", err, out)
	}

	// The network's lowest block, 10.97.0.0/26, is where n0's pods would go without
	// its podCIDR.
	if _, err := agent.c.CreateNetwork(ctx, api.NetworkSpec{Name: "pods", Subnets: []string{"10.97.0.0/16"}, CrossNode: api.CrossNodeVXLAN}); err != nil {
		t.Fatal(err)
	}
	web := kubeAttach(t, c, agent, "pods", "web-0")
	if !podCIDR.Contains(web.ip) {
		t.Errorf("web-0's address %s: not in n0's podCIDR %s", web.ip, podCIDR)
	}
	ns, err := agent.c.Nodes(ctx)
	if err != nil || len(ns) != 1 || len(ns[0].Blocks["pods"]) == 0 {
		t.Fatalf("n0's blocks: %+v, %v", ns, err)
	}
	for _, b := range ns[0].Blocks["pods"] {
		if !podCIDR.Contains(b.Addr()) {
			t.Errorf("n0 holds block %s, outside its podCIDR %s", b, podCIDR)
		}
	}
	// What podnet cannot honour is an Event on the object (the role lets it post one).
	local := corev1.ServiceExternalTrafficPolicyLocal
	mustCreate(t, "service web-etp", kc.Client.CoreV1().Services("default").Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-etp", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ExternalTrafficPolicy: local,
			Ports: []corev1.ServicePort{{Name: "http", Port: 82}}}})
	eventuallyState(t, "an Event on web-etp", func() (bool, string) {
		evs, err := kc.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web-etp"})
		if err != nil {
			return false, err.Error()
		}
		return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool { return e.Reason == "PodnetUnsupported" }), fmt.Sprint(evs.Items)
	})

	// The address is the pod's: the node reaches it.
	got, err := probe.AskIdentity(ctx, c.Nodes[0].Node, netip.AddrPortFrom(web.ip, 8080), 5*time.Second)
	if err != nil || got != web.ip {
		t.Errorf("n0 to web-0 at %s: answered by %s, %v", web.ip, got, err)
	}
}

// applyRBAC creates the objects of the manifest at path, and binds its ClusterRole to
// user as well (the manifest binds it to a service account).
func applyRBAC(t *testing.T, kc *kubetest.Cluster, path, user string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var role string
	for _, doc := range strings.Split(string(data), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			_, err = kc.Client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			role = o.Name
			_, err = kc.Client.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = kc.Client.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("%s: unexpected %T", path, obj)
		}
		if err != nil {
			t.Fatalf("%s: create %T: %v", path, obj, err)
		}
	}
	if _, err := kc.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role + "-" + user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
