package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
)

func decodeJSON[T any](t *testing.T, r cliResult) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, r, err)
	}
	return v
}

// TestPrivilegedCLINetworks drives `podnet network` and `podnet endpoint` against the
// agent process: create (table and JSON output), refused creates that name the
// conflict, ls, inspect, rm refused while an endpoint is attached, endpoint ls.
func TestPrivilegedCLINetworks(t *testing.T) {
	n := newNode(t)
	if r := n.mustPodnet(t, "network", "create", "blue", "--subnet", "10.89.0.0/24", "--subnet", "fd89::/64"); r.stdout != "blue\n" {
		t.Fatalf("network create printed %q", r.stdout)
	}
	red := decodeJSON[api.Network](t, n.mustPodnet(t, "-o", "json", "network", "create", "red",
		"--subnet", "10.90.0.0/24", "--gateway", "10.90.0.254", "--mtu", "1400", "--no-masquerade"))
	if want := []api.Subnet{{Prefix: netip.MustParsePrefix("10.90.0.0/24"), Gateway: netip.MustParseAddr("10.90.0.254")}}; red.Name != "red" ||
		!slices.Equal(red.Subnets, want) || red.MTU != 1400 || red.Masquerade || red.Bridge != "pn-red" {
		t.Fatalf("network create -o json: %+v", red)
	}
	if got := n.links(t, "pn-"); !slices.Equal(got, []string{"pn-blue", "pn-red"}) {
		t.Fatalf("bridges %q", got)
	}

	refused := []struct {
		args []string
		msg  string
	}{
		{[]string{"green", "--subnet", "10.89.0.128/25"}, `overlaps subnet 10.89.0.0/24 of podnet network "blue"`},
		{[]string{"green", "--subnet", "10.91.0.0/24", "--subnet", "fd89::/48"}, `overlaps subnet fd89::/64 of podnet network "blue"`},
		{[]string{"green", "--subnet", "10.0.0.0/8"}, `overlaps subnet 10.89.0.0/24 of podnet network "blue"`},
		{[]string{"uplink", "--subnet", "203.0.113.0/25"}, `overlaps node route 203.0.113.0/24 dev uplink0`},
		{[]string{"blue", "--subnet", "10.92.0.0/24"}, `network "blue" already exists`},
		{[]string{"green", "--subnet", "10.92.0.0/24", "--gateway", "10.93.0.1"}, `not inside any subnet`},
	}
	for _, c := range refused {
		r := n.podnet(t, nil, append([]string{"network", "create"}, c.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("network create %s: want a failure naming %q, got %s", strings.Join(c.args, " "), c.msg, r)
		}
	}
	nets := decodeJSON[[]api.Network](t, n.mustPodnet(t, "-o", "json", "network", "ls"))
	if len(nets) != 2 {
		t.Fatalf("networks after refused creates: %+v", nets)
	}
	if got := n.links(t, "pn-"); !slices.Equal(got, []string{"pn-blue", "pn-red"}) {
		t.Fatalf("bridges after refused creates %q", got)
	}
	table := n.mustPodnet(t, "network", "ls").stdout
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^NAME\s+DRIVER\s+SUBNETS\s+GATEWAYS\s+BRIDGE\s+CROSS-NODE\s+MTU\s+MASQUERADE$`),
		regexp.MustCompile(`(?m)^blue\s+bridge\s+10\.89\.0\.0/24,fd89::/64\s+10\.89\.0\.1,fd89::1\s+pn-blue\s+1500\s+true$`),
		regexp.MustCompile(`(?m)^red\s+bridge\s+10\.90\.0\.0/24\s+10\.90\.0\.254\s+pn-red\s+1400\s+false$`),
	} {
		if !want.MatchString(table) {
			t.Errorf("network ls lacks a line matching %s:\n%s", want, table)
		}
	}

	// Attach a pod to blue through the CNI plugin (a config without subnets: the network
	// must exist).
	rt := newRuntime(t, []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"blue","plugins":[{"type":"podnet-cni","socket":%q}]}`, n.socket)))
	p := n.newPod(t, "cli-pod")
	rt.mustAdd(t, p)

	// The agent records an ADD as attached just after its reply (off the reply path):
	// wait for that, a few seconds at most.
	var eps []api.Endpoint
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		eps = decodeJSON[[]api.Endpoint](t, n.mustPodnet(t, "-o", "json", "endpoint", "ls"))
		if len(eps) != 1 || eps[0].State == api.StateAttached || time.Now().After(deadline) {
			break
		}
	}
	if len(eps) != 1 {
		t.Fatalf("endpoint ls: %+v", eps)
	}
	ep := eps[0]
	if ep.Network != "blue" || ep.ContainerID != p.id || ep.IfName != "eth0" || ep.Netns != p.path || ep.State != api.StateAttached ||
		!slices.Equal(ep.IPs, resultIPs(p.res)) || ep.MAC != sandboxMAC(t, p) || !slices.Equal(n.veths(t), []string{ep.HostIf}) {
		t.Fatalf("endpoint ls -o json: %+v, state %s, netns %s, IPs %v, MAC %s (pod %s in %s with %v, MAC %s, node veths %q)",
			ep, ep.State, ep.Netns, ep.IPs, ep.MAC, p.id, p.path, resultIPs(p.res), sandboxMAC(t, p), n.veths(t))
	}
	if eps := decodeJSON[[]api.Endpoint](t, n.mustPodnet(t, "-o", "json", "endpoint", "ls", "--network", "red")); len(eps) != 0 {
		t.Fatalf("endpoint ls --network red: %+v", eps)
	}
	if out := n.mustPodnet(t, "endpoint", "ls").stdout; !strings.Contains(out, p.id) || !strings.Contains(out, ep.IPs[0].String()) {
		t.Errorf("endpoint ls table lacks %s %s:\n%s", p.id, ep.IPs[0], out)
	}
	inspect := decodeJSON[struct {
		api.Network
		Endpoints []api.Endpoint `json:"endpoints"`
	}](t, n.mustPodnet(t, "network", "inspect", "blue"))
	if inspect.Name != "blue" || len(inspect.Subnets) != 2 || len(inspect.Endpoints) != 1 || inspect.Endpoints[0].ContainerID != p.id {
		t.Fatalf("network inspect blue: %+v", inspect)
	}

	r := n.podnet(t, nil, "network", "rm", "blue")
	if r.code == 0 || !strings.Contains(r.stderr, "endpoint(s) attached") || !strings.Contains(r.stderr, p.id) {
		t.Fatalf("network rm with an endpoint attached: want a refusal naming the endpoint, got %s", r)
	}
	if got := n.links(t, "pn-"); !slices.Equal(got, []string{"pn-blue", "pn-red"}) {
		t.Fatalf("bridges after refused rm %q", got)
	}
	if err := rt.check(p); err != nil {
		t.Fatalf("CHECK after refused rm: %v", err)
	}

	// Right after DEL the network can go (the agent finishes the detach first).
	rt.mustDel(t, p)
	if r := n.mustPodnet(t, "network", "rm", "blue", "red"); r.stdout != "blue\nred\n" {
		t.Errorf("network rm printed %q", r.stdout)
	}
	if nets := n.mustPodnet(t, "-o", "json", "network", "ls").stdout; strings.TrimSpace(nets) != "[]" {
		t.Fatalf("network ls after rm: %s", nets)
	}
	if got := n.links(t, "pn-"); len(got) != 0 {
		t.Fatalf("bridges after rm %q", got)
	}
	wantBare(t, p)
	if r := n.podnet(t, nil, "network", "rm", "blue"); r.code == 0 || !strings.Contains(r.stderr, `network "blue" does not exist`) {
		t.Fatalf("rm of a missing network: %s", r)
	}
	if r := n.podnet(t, nil, "network", "inspect", "blue"); r.code == 0 || !strings.Contains(r.stderr, `network "blue" does not exist`) {
		t.Fatalf("inspect of a missing network: %s", r)
	}
}

// TestPrivilegedCLIRun runs commands with `podnet run`: the command runs inside a new
// sandbox attached to the network (it sees eth0 with its addresses and nothing of the
// node, and reaches the outside masqueraded), its exit status becomes podnet's, and the
// endpoint is gone after it exits.
func TestPrivilegedCLIRun(t *testing.T) {
	n := newNode(t)
	n.mustPodnet(t, "network", "create", "blue", "--subnet", "10.89.0.0/24", "--subnet", "fd89::/64")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A server outside the node that answers with the client address it saw.
	outside := netip.AddrPortFrom(lab.OutsideAddr4.Addr(), 9099)
	l, err := kernel.ListenIn(n.lab.Outside, "tcp", outside.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintln(c, host)
			c.Close()
		}
	}()
	announced := regexp.MustCompile(`podnet: sandbox (run-[0-9a-f]+): (\S+)`)
	helper := []string{helperEnv + "=ifaces", "PODNET_E2E_DIAL=" + outside.String()}

	t.Run("command sees the sandbox", func(t *testing.T) {
		r := n.podnet(t, helper, "run", "--network", "blue", "--name", "web", "--", self)
		if r.code != 0 {
			t.Fatalf("podnet run: %s", r)
		}
		rep := decodeJSON[helperReport](t, r)
		names := slices.Sorted(maps.Keys(rep.Interfaces))
		if !slices.Equal(names, []string{"eth0", "lo"}) {
			t.Fatalf("interfaces inside the sandbox %q, want eth0 and lo only", names)
		}
		var has4, has6 bool
		for _, a := range rep.Interfaces["eth0"] {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				continue
			}
			has4 = has4 || netip.MustParsePrefix("10.89.0.0/24").Contains(p.Addr()) && p.Bits() == 24
			has6 = has6 || netip.MustParsePrefix("fd89::/64").Contains(p.Addr()) && p.Bits() == 64
		}
		if !has4 || !has6 {
			t.Fatalf("eth0 addresses %q, want one in 10.89.0.0/24 and one in fd89::/64", rep.Interfaces["eth0"])
		}
		if rep.Saw != lab.NodeAddr4.Addr().String() {
			t.Fatalf("outside server saw %q, want the node's %s (masquerade)", rep.Saw, lab.NodeAddr4.Addr())
		}
		m := announced.FindAllStringSubmatch(r.stderr, -1)
		if len(m) != 2 || !slices.Contains(rep.Interfaces["eth0"], m[0][2]) {
			t.Fatalf("podnet run announced %q; eth0 has %q", m, rep.Interfaces["eth0"])
		}
		n.wantEndpoints(t, "blue")
		n.wantVeths(t, "blue")
	})

	t.Run("static address", func(t *testing.T) {
		r := n.podnet(t, helper, "run", "--network", "blue", "--ip", "10.89.0.77", "--", self)
		if r.code != 0 {
			t.Fatalf("podnet run --ip: %s", r)
		}
		if rep := decodeJSON[helperReport](t, r); !slices.Contains(rep.Interfaces["eth0"], "10.89.0.77/24") {
			t.Fatalf("eth0 addresses %q, want 10.89.0.77/24", rep.Interfaces["eth0"])
		}
		n.wantEndpoints(t, "blue")
	})

	for _, c := range []struct {
		name   string
		script string
		code   int
		stdout string // a regexp the command's output matches
	}{
		{"exit status", "exit 7", 7, ""},
		{"success", "cat /proc/net/dev", 0, `(?m)^\s*eth0:`},
		{"killed by a signal", "kill -TERM $$", 128 + 15, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := n.podnet(t, nil, "run", "--network", "blue", "--", "/bin/sh", "-c", c.script)
			if r.code != c.code {
				t.Fatalf("podnet run -- sh -c %q: want exit status %d, got %s", c.script, c.code, r)
			}
			if c.stdout != "" && !regexp.MustCompile(c.stdout).MatchString(r.stdout) {
				t.Fatalf("output does not match %s: %s", c.stdout, r)
			}
			if strings.Contains(r.stdout, "uplink0") {
				t.Fatalf("the command sees the node's uplink: %s", r)
			}
			n.wantEndpoints(t, "blue")
			n.wantVeths(t, "blue")
		})
	}

	t.Run("missing network", func(t *testing.T) {
		r := n.podnet(t, nil, "run", "--network", "nope", "--", "/bin/true")
		if r.code == 0 || !strings.Contains(r.stderr, `network "nope" does not exist`) {
			t.Fatalf("podnet run on a missing network: %s", r)
		}
		if eps := n.endpoints(t, ""); len(eps) != 0 {
			t.Fatalf("endpoints: %+v", eps)
		}
	})
}

// podnet run gives the command the sandbox's resolv.conf (bind-mounted in a private
// mount namespace), per DNS policy; services are managed from the CLI and resolved
// through the cluster DNS server.
func TestPrivilegedCLIServicesAndResolvConf(t *testing.T) {
	n := newNode(t)
	n.mustPodnet(t, "network", "create", "blue", "--subnet", "10.89.0.0/24")
	r := n.mustPodnet(t, "run", "--network", "blue", "--namespace", "shop", "--", "cat", "/etc/resolv.conf")
	for _, want := range []string{"nameserver " + api.DNSAddress, "search shop.svc.cluster.local svc.cluster.local cluster.local", "options ndots:5"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ClusterFirst resolv.conf lacks %q:\n%s", want, r.stdout)
		}
	}
	r = n.mustPodnet(t, "run", "--network", "blue", "--dns-policy", "None", "--dns", "192.0.2.53", "--dns-search", "example.org", "--", "cat", "/etc/resolv.conf")
	if !strings.Contains(r.stdout, "nameserver 192.0.2.53") || !strings.Contains(r.stdout, "search example.org") || strings.Contains(r.stdout, api.DNSAddress) {
		t.Errorf("None resolv.conf:\n%s", r.stdout)
	}
	host, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	if r := n.mustPodnet(t, "run", "--network", "blue", "--dns-policy", "Default", "--", "cat", "/etc/resolv.conf"); r.stdout != string(host) {
		t.Errorf("Default resolv.conf differs from the node's:\n%s", r.stdout)
	}

	// A service over a labelled sandbox, from the CLI.
	n.mustPodnet(t, "service", "create", "web", "--port", "http:80:8080", "--selector", "app=web")
	r = n.mustPodnet(t, "service", "ls", "-o", "json")
	svcs := decodeJSON[[]api.Service](t, r)
	if len(svcs) != 1 || svcs[0].Name != "web" || len(svcs[0].VIPs) != 1 || len(svcs[0].Backends) != 0 {
		t.Fatalf("service ls: %+v", svcs)
	}
	bad := n.podnet(t, nil, "service", "create", "Web", "--port", "80")
	if bad.code == 0 || !strings.Contains(bad.stderr, `name "Web"`) {
		t.Errorf("bad service name: %s", bad)
	}
	n.mustPodnet(t, "service", "rm", "web")
	if r := n.mustPodnet(t, "service", "ls", "-o", "json"); len(decodeJSON[[]api.Service](t, r)) != 0 {
		t.Errorf("service still listed after rm: %s", r.stdout)
	}
	if r := n.mustPodnet(t, "dns", "check"); !strings.Contains(r.stdout, "cluster.local") {
		t.Errorf("dns check: %s", r)
	}
}
