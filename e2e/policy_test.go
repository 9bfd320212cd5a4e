package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/policy"
	"github.com/podnet/podnet/internal/probe"
)

// The upstream Kubernetes network-policy model with real traffic: namespaces x, y, z
// (labelled ns=x|y|z), pods a, b, c in each (labelled pod=a|b|c), each serving TCP and UDP
// on ports 80 and 81, dual-stack. For each case the policies are applied through the
// agent and every pod probes every pod on both ports, both protocols and both families;
// the outcome must equal what the reference evaluator (policy.Decide, itself checked
// against hand-written tables) decides. The first table, without policies, has every
// path open: each denial that follows is a drop on a path that works.
func TestPrivilegedPolicyModel(t *testing.T) {
	for _, driver := range []string{api.DriverBridge, api.DriverRouted} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			m := newPolicyModel(t, driver)
			m.check(t, "no policies")
			for _, c := range policyModelCases {
				t.Run(c.name, func(t *testing.T) {
					m.reset(t)
					c.run(t, m)
				})
			}
		})
	}
}

// policyModel is the 9 pods of the model on one node.
type policyModel struct {
	n    *node
	pods []modelPod
}

type modelPod struct {
	ns, name string
	sb       netns.NsHandle
	ep       api.Endpoint
}

func (p modelPod) String() string { return p.ns + p.name }

func newPolicyModel(t *testing.T, driver string) *policyModel {
	n := newNode(t)
	ctx := context.Background()
	subnets := []string{"10.72.0.0/24", "fd72::/64"}
	if driver == api.DriverRouted {
		subnets = []string{"10.73.0.0/24", "fd73::/64"}
	}
	if _, err := n.api.CreateNetwork(ctx, api.NetworkSpec{Name: "model", Driver: driver, Subnets: subnets}); err != nil {
		t.Fatal(err)
	}
	m := &policyModel{n: n}
	for _, ns := range []string{"x", "y", "z"} {
		if _, err := n.api.LabelNamespace(ctx, api.NamespaceLabelRequest{Name: ns, Labels: map[string]string{"ns": ns}}); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"a", "b", "c"} {
			sb, err := n.lab.Sandbox()
			if err != nil {
				t.Fatal(err)
			}
			named := []api.NamedPort{
				{Name: "serve-80-tcp", Port: 80, Protocol: "tcp"}, {Name: "serve-81-tcp", Port: 81, Protocol: "tcp"},
				{Name: "serve-80-udp", Port: 80, Protocol: "udp"}, {Name: "serve-81-udp", Port: 81, Protocol: "udp"},
			}
			switch name { // one name, different numbers: web is 80 on a, 81 on b, absent on c
			case "a":
				named = append(named, api.NamedPort{Name: "web", Port: 80, Protocol: "tcp"})
			case "b":
				named = append(named, api.NamedPort{Name: "web", Port: 81, Protocol: "tcp"})
			}
			key := api.EndpointKey{Network: "model", ContainerID: ns + name, IfName: "eth0"}
			if _, err := n.api.Attach(ctx, api.AttachRequest{EndpointKey: key, Name: name, Namespace: ns,
				Labels: map[string]string{"pod": name}, NamedPorts: named}, int(sb)); err != nil {
				t.Fatal(err)
			}
			serveModelPod(t, sb)
			m.pods = append(m.pods, modelPod{ns: ns, name: name, sb: sb})
		}
	}
	m.refresh(t)
	return m
}

// serveModelPod serves TCP (closing each connection at once) and UDP (echo) on ports 80
// and 81 of both families inside sb until the test ends.
func serveModelPod(t *testing.T, sb netns.NsHandle) {
	for _, port := range []int{80, 81} {
		l, err := kernel.ListenIn(sb, "tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Fatal(err)
		}
		u, err := kernel.ListenPacketIn(sb, "udp", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close(); u.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		go probe.Echo(u)
	}
}

// refresh reads the pods' records (labels, addresses) back from the agent.
func (m *policyModel) refresh(t *testing.T) {
	eps, err := m.n.api.Endpoints(context.Background(), "model")
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.pods {
		for _, ep := range eps {
			if ep.ContainerID == m.pods[i].ns+m.pods[i].name {
				m.pods[i].ep = ep
			}
		}
	}
}

// reset removes every policy and restores the model's labels.
func (m *policyModel) reset(t *testing.T) {
	ctx := context.Background()
	pols, err := m.n.api.Policies(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pols {
		if err := m.n.api.DeletePolicy(ctx, p.Namespace, p.Name); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"x", "y", "z"} {
		if _, err := m.n.api.LabelNamespace(ctx, api.NamespaceLabelRequest{Name: ns, Labels: map[string]string{"ns": ns}, Remove: []string{"team"}, Overwrite: true}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range m.pods {
		if p.ep.Labels["pod"] != p.name || len(p.ep.Labels) != 1 {
			m.label(t, p.String(), map[string]string{"pod": p.name})
		}
	}
	m.refresh(t)
}

// apply applies a YAML document of policies.
func (m *policyModel) apply(t *testing.T, yaml string) {
	t.Helper()
	pols, err := policy.Parse(strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.n.api.ApplyPolicies(context.Background(), pols); err != nil {
		t.Fatal(err)
	}
}

// label replaces the labels of pod "xa".
func (m *policyModel) label(t *testing.T, pod string, labels map[string]string) {
	t.Helper()
	if _, err := m.n.api.SetLabels(context.Background(), api.LabelsRequest{EndpointKey: api.EndpointKey{Network: "model", ContainerID: pod, IfName: "eth0"}, Labels: labels}); err != nil {
		t.Fatal(err)
	}
	m.refresh(t)
}

// probeTarget is one port and protocol every pod serves.
type probeTarget struct {
	proto string
	port  uint16
}

var modelTargets = []probeTarget{{"tcp", 80}, {"tcp", 81}, {"udp", 80}, {"udp", 81}}

// check probes every pair, port, protocol and family, and compares with policy.Decide.
func (m *policyModel) check(t *testing.T, what string) {
	t.Helper()
	ctx := context.Background()
	pols, err := m.n.api.Policies(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	nss, err := m.n.api.Namespaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eps, err := m.n.api.Endpoints(ctx, "model")
	if err != nil {
		t.Fatal(err)
	}
	w := policy.World{Policies: pols, Namespaces: nss, Endpoints: eps}
	// Established flows pass whatever the policies say: a probe whose source port an
	// earlier one of the same pair used would ride on its conntrack entry (UDP entries
	// live 30 s and more). Each table starts from none.
	for _, tg := range modelTargets {
		if _, err := kernel.FlushConntrack(m.n.lab.Node, tg.proto, netip.Addr{}, tg.port); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		from, to   int
		target     probeTarget
		v6         bool
		got, want  bool
		unexpected error
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	sem := make(chan struct{}, 96)
	for i, from := range m.pods {
		for j, to := range m.pods {
			if i == j {
				continue
			}
			for _, tg := range modelTargets {
				for _, v6 := range []bool{false, true} {
					dst := modelAddr(to.ep, v6)
					want := policy.Decide(w, policy.EndpointPeer(from.ep, modelAddr(from.ep, v6)), policy.EndpointPeer(to.ep, dst), tg.port, strings.ToUpper(tg.proto)).Allowed
					wg.Go(func() {
						sem <- struct{}{}
						defer func() { <-sem }()
						got, err := reach(ctx, from.sb, netip.AddrPortFrom(dst, tg.port), tg.proto)
						mu.Lock()
						results = append(results, result{i, j, tg, v6, got, want, err})
						mu.Unlock()
					})
				}
			}
		}
	}
	wg.Wait()
	var bad []string
	for _, r := range results {
		family := "v4"
		if r.v6 {
			family = "v6"
		}
		switch {
		case r.unexpected != nil:
			bad = append(bad, fmt.Sprintf("%s -> %s %s/%d %s: %v", m.pods[r.from], m.pods[r.to], r.target.proto, r.target.port, family, r.unexpected))
		case r.got != r.want:
			bad = append(bad, fmt.Sprintf("%s -> %s %s/%d %s: reached %v, policies say %v", m.pods[r.from], m.pods[r.to], r.target.proto, r.target.port, family, r.got, r.want))
		}
	}
	denied := 0
	for _, r := range results {
		if !r.want {
			denied++
		}
	}
	t.Logf("%s: %d probes, %d of them denied by the policies", what, len(results), denied)
	if len(bad) > 0 {
		t.Errorf("%s: %d of %d probes differ from the policies:\n%s", what, len(bad), len(results), strings.Join(bad, "\n"))
	}
}

func modelAddr(ep api.Endpoint, v6 bool) netip.Addr {
	for _, ip := range ep.IPs {
		if ip.Addr().Is6() == v6 {
			return ip.Addr()
		}
	}
	return netip.Addr{}
}

// reach reports whether a TCP connection (or a UDP datagram, echoed) from ns gets to dst
// within 3 s (the machine may be busy): false for silence, which is what a drop does; any other failure (a
// refusal, an unreachable) is an error, since nothing in the model rejects.
func reach(ctx context.Context, ns netns.NsHandle, dst netip.AddrPort, proto string) (bool, error) {
	const timeout = 3 * time.Second
	if proto == "udp" {
		c, err := kernel.DialIn(ctx, ns, "udp", dst.String(), timeout)
		if err != nil {
			return false, err
		}
		defer c.Close()
		if _, err = probe.AskUDP(c, timeout); errors.Is(err, probe.ErrNoUDPAnswer) {
			return false, nil
		}
		return err == nil, err
	}
	c, err := kernel.DialIn(ctx, ns, "tcp", dst.String(), timeout)
	if err == nil {
		c.Close()
		return true, nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, nil
	}
	return false, err
}

// policyModelCases are the cases of the upstream e2e suite that the issue names. Each
// runs with no policy and the model's labels at the start.
var policyModelCases = []struct {
	name string
	run  func(t *testing.T, m *policyModel)
}{
	{"default deny ingress", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "deny", `podSelector: {}`))
		m.check(t, "deny all ingress in x")
	}},
	{"default deny egress", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "deny-out", "podSelector: {}\n  policyTypes: [Egress]"))
		m.check(t, "deny all egress in x")
	}},
	{"allow all over deny", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "deny", `podSelector: {}`)+"---\n"+doc("x", "allow", "podSelector: {}\n  ingress: [{}]"))
		m.check(t, "deny and allow all in x")
	}},
	{"pod selector", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "a-from-b", "podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]"))
		m.check(t, "x/a from x/b only")
	}},
	{"namespace selector", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "from-y", "podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: \"y\"}}}]"))
		m.check(t, "x from namespace y")
	}},
	{"both selectors in one peer vs two peers", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "and", "podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: \"y\"}}, podSelector: {matchLabels: {pod: c}}}]")+
			"---\n"+doc("x", "or", "podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: \"y\"}}}, {podSelector: {matchLabels: {pod: c}}}]"))
		m.check(t, "x/a from y/c; x/b from y or x/c")
	}},
	{"match expressions", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "expr", "podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}\n  ingress:\n  - from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [\"y\", z]}]}, podSelector: {matchExpressions: [{key: pod, operator: Exists}]}}]"))
		m.check(t, "x/b, x/c from y and z")
	}},
	{"ipBlock with except", func(t *testing.T, m *policyModel) {
		ya, yb := modelAddr(m.pods[3].ep, false), modelAddr(m.pods[4].ep, true)
		m.apply(t, doc("x", "block", fmt.Sprintf("podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - ipBlock: {cidr: %s, except: [%s/32]}\n    - ipBlock: {cidr: %q, except: [%q]}",
			netip.PrefixFrom(ya, 16).Masked(), ya, netip.PrefixFrom(yb, 64).Masked(), netip.PrefixFrom(yb, 128))))
		m.check(t, "x from every pod address but y/a's IPv4 and y/b's IPv6")
	}},
	{"ports by number, by name and range", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "ports", "podSelector: {}\n  ingress:\n  - ports: [{port: 81}]\n  - from: [{namespaceSelector: {matchLabels: {ns: \"y\"}}}]\n    ports: [{port: web}, {protocol: UDP, port: 80, endPort: 81}]"))
		m.check(t, "x: 81/tcp from all; web (80 on a, 81 on b) and udp 80-81 from y")
	}},
	{"egress only, by name", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("y", "out", "podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {ns: z}}}]\n    ports: [{port: web}, {protocol: UDP, port: serve-81-udp}]"))
		m.check(t, "y/a out to z on web and udp serve-81-udp only")
	}},
	{"stacked policies", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("z", "one", "podSelector: {matchLabels: {pod: c}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: a}}}]\n    ports: [{port: 80}]")+
			"---\n"+doc("z", "two", "podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: x}}}]\n    ports: [{port: 81, protocol: UDP}]"))
		m.check(t, "z/c from z/a on 80; all of z from x on udp 81")
	}},
	{"policy updated and deleted", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "p", `podSelector: {}`))
		m.check(t, "x denies all ingress")
		m.apply(t, doc("x", "p", "podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: z}}}]"))
		m.check(t, "x updated: from z")
		if err := m.n.api.DeletePolicy(context.Background(), "x", "p"); err != nil {
			t.Fatal(err)
		}
		m.check(t, "x's policy deleted")
	}},
	{"pod relabelled into and out of a selector", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "to-a", "podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}, namespaceSelector: {}}]"))
		m.check(t, "x/a from role=client: nobody")
		m.label(t, "yb", map[string]string{"pod": "b", "role": "client"})
		m.check(t, "y/b relabelled role=client")
		m.label(t, "xa", map[string]string{"pod": "x"})
		m.check(t, "x/a relabelled out of the policy")
	}},
	{"namespace relabelled", func(t *testing.T, m *policyModel) {
		m.apply(t, doc("x", "team", "podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: blue}}}]"))
		m.check(t, "x from team=blue: nobody")
		if _, err := m.n.api.LabelNamespace(context.Background(), api.NamespaceLabelRequest{Name: "z", Labels: map[string]string{"team": "blue"}}); err != nil {
			t.Fatal(err)
		}
		m.check(t, "z relabelled team=blue")
	}},
}

// doc is a NetworkPolicy document of namespace ns named name with spec (YAML lines of
// the spec, indented by two).
func doc(ns, name, spec string) string {
	return fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: %s, namespace: %q}\nspec:\n  %s\n", name, ns, spec)
}

// A policy change does not cut connections that are established: their packets pass as
// established before any policy rule (podnet's choice, Calico's and Cilium's too); new
// connections follow the policy at once, and the drops show in the agent's metrics.
func TestPrivilegedPolicyEstablished(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	if _, err := n.api.CreateNetwork(ctx, api.NetworkSpec{Name: "est", Subnets: []string{"10.74.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	var sbs []netns.NsHandle
	var ips []netip.Addr
	for i, app := range []string{"client", "server"} {
		sb, err := n.lab.Sandbox()
		if err != nil {
			t.Fatal(err)
		}
		res, err := n.api.Attach(ctx, api.AttachRequest{EndpointKey: api.EndpointKey{Network: "est", ContainerID: fmt.Sprint("est", i), IfName: "eth0"},
			Labels: map[string]string{"app": app}}, int(sb))
		if err != nil {
			t.Fatal(err)
		}
		sbs, ips = append(sbs, sb), append(ips, res.IPs[0].Address.Addr())
	}
	l, err := kernel.ListenIn(sbs[1], "tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go probe.ServeEcho(l)
	server := netip.AddrPortFrom(ips[1], 80)
	c, err := kernel.DialIn(ctx, sbs[0], "tcp", server.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func(what string) {
		t.Helper()
		if err := probe.EchoOnce(c, what+"\n", 5*time.Second); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	echo("before the policy")
	drops := func() string {
		for _, l := range strings.Split(n.scrapeMetrics(t), "\n") {
			if strings.HasPrefix(l, `podnet_policy_drops_total{direction="ingress"}`) {
				return strings.Fields(l)[1]
			}
		}
		return "absent"
	}
	pols, err := policy.Parse(strings.NewReader(doc("default", "deny-server", "podSelector: {matchLabels: {app: server}}")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.api.ApplyPolicies(ctx, pols); err != nil {
		t.Fatal(err)
	}
	if d := drops(); d != "0" {
		t.Errorf("ingress drops before any new connection: %s, want 0", d)
	}
	echo("established, after the policy")
	if err := probe.Blocked(ctx, sbs[0], sbs[1], netip.AddrPortFrom(ips[1], 81), 2*time.Second); err != nil {
		t.Errorf("new connection under the deny policy: %v", err)
	}
	if d := drops(); d == "0" || d == "absent" {
		t.Errorf("ingress drops after a dropped connection: %s", d)
	}
	if err := n.api.DeletePolicy(ctx, "default", "deny-server"); err != nil {
		t.Fatal(err)
	}
	if _, err := probe.TCP(ctx, sbs[0], sbs[1], netip.AddrPortFrom(ips[1], 81), 5*time.Second); err != nil {
		t.Errorf("new connection once the policy is gone: %v", err)
	}
}
