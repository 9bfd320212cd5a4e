package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/store/etcdstore/etcdtest"
	"github.com/podnet/podnet/internal/testutil"
	"github.com/podnet/podnet/internal/testutil/kubetest"
)

// podnet controller --node-pod-cidrs against a real kube-apiserver, writing into the
// etcd of a node's agent: the Node object's spec.podCIDRs and InternalIP reach the node's
// record before its agent registers and stay after (podnet node ls shows them), and the
// node's pods of a vxlan network get their addresses from a block inside its podCIDR,
// not from the subnet's lowest block.
func TestPrivilegedKubernetesPodCIDR(t *testing.T) {
	testutil.RequireRoot(t)
	kc := kubetest.Start(t)
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
	ctl := startControllerWith(t, kc, t.TempDir(), "c1", "--store", store, "--node-pod-cidrs")
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
	// The address is the pod's: the node reaches it.
	got, err := probe.AskIdentity(ctx, c.Nodes[0].Node, netip.AddrPortFrom(web.ip, 8080), 5*time.Second)
	if err != nil || got != web.ip {
		t.Errorf("n0 to web-0 at %s: answered by %s, %v", web.ip, got, err)
	}
}
