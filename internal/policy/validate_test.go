package policy

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/podnet/podnet/api"
)

// TestValidate checks policies given as api types (as the agent receives them), where
// some values cannot come out of Parse.
func TestValidate(t *testing.T) {
	valid := func() api.NetworkPolicy {
		return api.NetworkPolicy{Namespace: "x", Name: "p", Spec: api.NetworkPolicySpec{
			Ingress: []api.NetworkPolicyRule{{
				Peers: []api.NetworkPolicyPeer{{IPBlock: &api.IPBlock{CIDR: netip.MustParsePrefix("10.0.0.0/8")}}},
				// An empty protocol is TCP.
				Ports: []api.NetworkPolicyPort{{Port: &api.PortValue{Number: 80}}},
			}},
			// Empty policyTypes are the default.
		}}
	}
	if err := Validate(valid()); err != nil {
		t.Fatalf("valid policy: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(p *api.NetworkPolicy)
		want   string
	}{
		{"namespace missing", func(p *api.NetworkPolicy) { p.Namespace = "" },
			`policy "p": metadata.namespace: missing`},
		{"name missing", func(p *api.NetworkPolicy) { p.Name = "" },
			`policy in namespace "x": metadata.name: missing`},
		{"port number 0", func(p *api.NetworkPolicy) { p.Spec.Ingress[0].Ports[0].Port.Number = 0 },
			`policy "x/p": spec.ingress[0].ports[0].port "0": must be from 1 to 65535`},
		{"endPort smaller than port", func(p *api.NetworkPolicy) { p.Spec.Ingress[0].Ports[0].EndPort = 70 },
			`policy "x/p": spec.ingress[0].ports[0].endPort "70": smaller than port 80`},
		{"cidr zero", func(p *api.NetworkPolicy) { p.Spec.Ingress[0].Peers[0].IPBlock.CIDR = netip.Prefix{} },
			`policy "x/p": spec.ingress[0].from[0].ipBlock.cidr: missing`},
		{"cidr with host bits", func(p *api.NetworkPolicy) {
			p.Spec.Ingress[0].Peers[0].IPBlock.CIDR = netip.MustParsePrefix("10.1.2.3/8")
		}, `policy "x/p": spec.ingress[0].from[0].ipBlock.cidr "10.1.2.3/8": host bits are set (did you mean 10.0.0.0/8?)`},
		{"except zero", func(p *api.NetworkPolicy) {
			p.Spec.Ingress[0].Peers[0].IPBlock.Except = []netip.Prefix{{}}
		}, `policy "x/p": spec.ingress[0].from[0].ipBlock.except[0]: missing`},
		{"except IPv4-mapped", func(p *api.NetworkPolicy) {
			p.Spec.Ingress[0].Peers[0].IPBlock.Except = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/112")}
		}, `policy "x/p": spec.ingress[0].from[0].ipBlock.except[0] "::ffff:10.0.0.0/112": IPv4-mapped IPv6 prefixes are not allowed`},
		{"several errors", func(p *api.NetworkPolicy) {
			p.Spec.PolicyTypes = []string{"Egress", "ingress"}
			p.Spec.Egress = []api.NetworkPolicyRule{{Ports: []api.NetworkPolicyPort{{Protocol: "udp"}}}}
		}, `policy "x/p": spec.egress[0].ports[0].protocol "udp": not a protocol (want TCP, UDP or SCTP)` + "\n" +
			`policy "x/p": spec.policyTypes[1] "ingress": not a policy type (want Ingress or Egress)`},
	} {
		p := valid()
		tc.change(&p)
		err := Validate(p)
		if err == nil {
			t.Errorf("%s: no error, want %s", tc.name, tc.want)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, err, tc.want)
		}
		var ve *api.ValidationError
		if !errors.As(err, &ve) || ve.Object == "" || ve.Field == "" {
			t.Errorf("%s: not an *api.ValidationError naming object and field: %#v", tc.name, err)
		}
	}
}

func TestDefault(t *testing.T) {
	p := api.NetworkPolicy{Name: "p", Spec: api.NetworkPolicySpec{
		Ingress: []api.NetworkPolicyRule{{Ports: []api.NetworkPolicyPort{{}, {Protocol: "UDP"}}}},
		Egress:  []api.NetworkPolicyRule{{}},
	}}
	Default(&p)
	want := api.NetworkPolicy{Namespace: "default", Name: "p", Spec: api.NetworkPolicySpec{
		PolicyTypes: []string{"Ingress", "Egress"},
		Ingress:     []api.NetworkPolicyRule{{Ports: []api.NetworkPolicyPort{{Protocol: "TCP"}, {Protocol: "UDP"}}}},
		Egress:      []api.NetworkPolicyRule{{}},
	}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Default:\n got %+v\nwant %+v", p, want)
	}
	// Given policy types are kept.
	p.Spec.PolicyTypes = []string{"Egress"}
	Default(&p)
	if !reflect.DeepEqual(p.Spec.PolicyTypes, []string{"Egress"}) {
		t.Errorf("Default changed given policyTypes to %v", p.Spec.PolicyTypes)
	}
}

func TestPolicyTypes(t *testing.T) {
	for _, tc := range []struct {
		spec api.NetworkPolicySpec
		want []string
	}{
		{api.NetworkPolicySpec{}, []string{"Ingress"}},
		{api.NetworkPolicySpec{Ingress: []api.NetworkPolicyRule{{}}}, []string{"Ingress"}},
		{api.NetworkPolicySpec{Egress: []api.NetworkPolicyRule{{}}}, []string{"Ingress", "Egress"}},
		{api.NetworkPolicySpec{PolicyTypes: []string{"Egress"}, Ingress: []api.NetworkPolicyRule{{}}}, []string{"Egress"}},
	} {
		if got := PolicyTypes(tc.spec); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("PolicyTypes(%+v) = %v, want %v", tc.spec, got, tc.want)
		}
	}
}
