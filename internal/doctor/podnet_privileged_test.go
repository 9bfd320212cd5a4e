package doctor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agent"
	"github.com/podnet/podnet/internal/fastpath"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
	"github.com/podnet/podnet/internal/store"
)

// TestPrivilegedHealthyPodnetNode runs a real agent on a lab node (as internal/agent's
// privileged tests do), with a bridge and a routed network, dual-stack, a published port
// and the cluster DNS server, and checks that the doctor finds nothing wrong with
// podnet's own node, its pods' resolv.conf included.
func TestPrivilegedHealthyPodnetNode(t *testing.T) {
	l := labtest.New(t)
	dir := t.TempDir()
	nodeResolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(nodeResolv, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenBolt(filepath.Join(dir, "podnet.db"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{Store: st, NodeNS: l.Node, ReconcileInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), DNS: agent.DNSConfig{ResolvConf: nodeResolv}})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	socket := filepath.Join(dir, "podnet.sock")
	done := make(chan struct{})
	go func() { a.Serve(ctx, socket); close(done) }()
	t.Cleanup(func() { cancel(); <-done; a.Close() })
	c := api.NewClient(socket)
	for i := 0; ; i++ {
		if _, err := c.Status(ctx); err == nil {
			break
		} else if i > 200 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, spec := range []api.NetworkSpec{
		{Name: "blue", Subnets: []string{"10.89.0.0/24", "fd89::/64"}},
		{Name: "green", Driver: api.DriverRouted, Subnets: []string{"10.78.0.0/24", "fd78::/64"}},
	} {
		if _, err := c.CreateNetwork(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	var res api.Result
	for i, key := range []api.EndpointKey{
		{Network: "blue", ContainerID: "a", IfName: "eth0"}, {Network: "blue", ContainerID: "b", IfName: "eth0"},
		{Network: "green", ContainerID: "c", IfName: "eth0"}, {Network: "green", ContainerID: "d", IfName: "eth0"},
	} {
		sb, err := l.Sandbox()
		if err != nil {
			t.Fatal(err)
		}
		req := api.AttachRequest{EndpointKey: key}
		if i == 0 {
			req.Ports = []api.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}
		}
		if res, err = c.Attach(ctx, req, int(sb)); err != nil {
			t.Fatalf("attach %s: %v", key, err)
		}
	}
	// A pod's resolv.conf as the runtime writes it from the result.
	var rc strings.Builder
	for _, ns := range res.DNS.Nameservers {
		rc.WriteString("nameserver " + ns + "\n")
	}
	rc.WriteString("search " + strings.Join(res.DNS.Search, " ") + "\noptions " + strings.Join(res.DNS.Options, " ") + "\n")
	podResolv := filepath.Join(dir, "pod-resolv.conf")
	if err := os.WriteFile(podResolv, []byte(rc.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if len(res.DNS.Search) == 0 {
		t.Fatalf("no search domains in the result: %+v", res.DNS)
	}

	// The fast path attaches to the pods' host veths as they appear.
	for i := 0; ; i++ {
		st, err := c.Status(ctx)
		if err == nil && st.FastPath != nil && st.FastPath.Ports == 4 {
			break
		} else if i > 200 {
			t.Fatalf("fast path: %+v (%v), want 4 ports", st.FastPath, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	n := &node{t: t, lab: l}
	rep, s := n.diagnose("healthy-podnet", podResolv)
	wantClean(t, rep)
	// With the agent's records as `podnet doctor` reads them: still nothing wrong, not
	// even an info on the fast path.
	if n.intended, err = ReadIntended(ctx, c); err != nil {
		t.Fatal(err)
	}
	rep, _ = n.diagnose("", podResolv)
	wantClean(t, rep)
	for _, f := range rep.Findings {
		if f.Class == ClassFastPathDetached || f.Class == ClassForeignBPF {
			t.Errorf("unexpected %s: %s", f.Class, f.Culprit)
		}
	}
	withProgram := 0
	for _, l := range s.Links {
		if hasProgram(&l, fastpath.ProgName) {
			withProgram++
		}
	}
	if withProgram != 4 {
		t.Errorf("the snapshot has the fast path on %d links, want the 4 pods' host veths", withProgram)
	}
	// The doctor saw what there is to see: 2 bridged and 2 routed pods, probes answered.
	v := newView(s)
	pods := 0
	for _, c := range v.carriers {
		for _, veth := range c.veths {
			if veth.Peer != nil {
				pods++
			}
		}
	}
	if len(v.carriers) != 3 || pods != 4 {
		t.Errorf("carriers %d (want 3: pn-blue and 2 routed veths), visible pods %d (want 4)", len(v.carriers), pods)
	}
	for _, p := range s.ResolvConfs[0].Probes {
		if p.Err != "" || p.Rcode != "NXDOMAIN" {
			t.Errorf("probe of the cluster DNS: %+v", p)
		}
	}

	// Without a default route, the routed pods' gateway is still proxied: podnet routes
	// 169.254.1.1 through an interface of its own in table default.
	h, err := netlink.NewHandleAt(l.Node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	up, err := h.LinkByName(lab.Uplink)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RouteDel(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: lab.OutsideAddr4.Addr().AsSlice()}); err != nil {
		t.Fatal(err)
	}
	rep, _ = n.diagnose("")
	wantClean(t, rep)

	// Drift: a routed pod's host route deleted by hand is named from the agent's record.
	var routedEP api.Endpoint
	for _, ep := range n.intended.Endpoints {
		if ep.Network == "green" {
			routedEP = ep
		}
	}
	veth, err := h.LinkByName(routedEP.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	gone := routedEP.IPs[0].Addr()
	if err := h.RouteDel(&netlink.Route{LinkIndex: veth.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: ipnet(netip.PrefixFrom(gone, gone.BitLen()))}); err != nil {
		t.Fatal(err)
	}
	rep, _ = n.diagnose("")
	wantFinding(t, rep, ClassStateDrift, fmt.Sprintf("route %s dev %s (missing)", gone, routedEP.HostIf), SeverityError)
}
