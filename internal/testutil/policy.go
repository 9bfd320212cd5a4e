package testutil

import (
	"fmt"

	"github.com/podnet/podnet/api"
)

// IngressPolicy is the shape of the policy bench's policies (bench/policy.go, and the
// driver's benchmark of its world): a policy of namespace ns selecting the pods
// app=app, admitting the pods role=role of the namespaces team=team-<team> on TCP port.
func IngressPolicy(ns, name, app string, team int, role string, port uint16) api.NetworkPolicy {
	return api.NetworkPolicy{Namespace: ns, Name: name, Spec: api.NetworkPolicySpec{
		PodSelector: api.LabelSelector{MatchLabels: map[string]string{"app": app}},
		PolicyTypes: []string{api.PolicyIngress},
		Ingress: []api.NetworkPolicyRule{{
			Peers: []api.NetworkPolicyPeer{{
				NamespaceSelector: &api.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("team-%d", team)}},
				PodSelector:       &api.LabelSelector{MatchLabels: map[string]string{"role": role}},
			}},
			Ports: []api.NetworkPolicyPort{{Protocol: "TCP", Port: &api.PortValue{Number: port}}},
		}},
	}}
}
