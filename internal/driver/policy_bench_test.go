package driver_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/testutil"
)

// benchWorld is the policy bench's testbed "many" (bench/policy.go): n pods in
// namespaces ns-0..ns-9, 100 policies.
func benchWorld(n int) ([]api.NetworkPolicy, []api.Namespace, []api.Endpoint) {
	var nss []api.Namespace
	for k := range 10 {
		nss = append(nss, api.Namespace{Name: fmt.Sprintf("ns-%d", k), Labels: map[string]string{"team": fmt.Sprintf("team-%d", k)}})
	}
	var eps []api.Endpoint
	for i := range n {
		eps = append(eps, api.Endpoint{EndpointKey: api.EndpointKey{Network: fmt.Sprintf("pol-%d", i%10), ContainerID: fmt.Sprintf("pol%08d", i), IfName: "eth0"},
			Name: fmt.Sprintf("pod-%d", i), Namespace: fmt.Sprintf("ns-%d", i%10),
			Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%100), "role": fmt.Sprintf("role-%d", i%7)},
			IPs:    []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i / 250), byte(i%250 + 1)}), 22)}})
	}
	var pols []api.NetworkPolicy
	for j := range 100 {
		pols = append(pols, testutil.IngressPolicy(fmt.Sprintf("ns-%d", j%10), fmt.Sprintf("pol-%d", j), fmt.Sprintf("app-%d", j), (j+1)%10, fmt.Sprintf("role-%d", j%7), uint16(10000+j)))
	}
	return pols, nss, eps
}

// What a change costs the compiler and the delta of the tables, with n pods: a policy's
// port, a pod's labels.
func BenchmarkPolicyChange(b *testing.B) {
	for _, n := range []int{10, 5000} {
		pols, nss, eps := benchWorld(n)
		c := driver.NewPolicyCompiler(pols, nss, eps, eps)
		b.Run(fmt.Sprintf("port/%d", n), func(b *testing.B) {
			old := c.Policies()
			for i := range b.N {
				p := pols[3]
				p.Spec.Ingress[0].Ports = []api.NetworkPolicyPort{{Protocol: "TCP", Port: &api.PortValue{Number: uint16(20000 + i%2)}}}
				c.SetPolicy(p)
				next := c.Policies()
				if _, _, ok := nft.PolicyDelta(old, next); !ok {
					b.Fatal("delta")
				}
				old = next
			}
		})
		b.Run(fmt.Sprintf("label/%d", n), func(b *testing.B) {
			old := c.Policies()
			for i := range b.N {
				ep := eps[1]
				ep.Labels = map[string]string{"app": "app-1", "role": fmt.Sprintf("role-%d", i%7)}
				c.SetEndpoint(ep, true)
				next := c.Policies()
				if _, _, ok := nft.PolicyDelta(old, next); !ok {
					b.Fatal("delta")
				}
				old = next
			}
		})
	}
}
