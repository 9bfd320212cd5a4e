// Package demo shows podnet's main job end to end on any Linux machine without touching
// the host's network: a throwaway node namespace with an uplink to an "outside"
// namespace, an in-process agent on a temporary store, one network, two sandboxes,
// sandbox-to-sandbox TCP over IPv4 and IPv6, egress through masquerade, isolation
// from a second network, a published port, a service found through the cluster DNS,
// and removal of everything.
package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agent"
	"github.com/podnet/podnet/internal/doctor"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/trace"
)

const timeout = 3 * time.Second

type stepper struct {
	w      io.Writer
	n      int
	failed bool
}

// step runs fn and prints its outcome; after a failure later steps are skipped.
func (s *stepper) step(title string, fn func() (string, error)) {
	s.n++
	if s.failed {
		fmt.Fprintf(s.w, "  -  %2d. %s (skipped)\n", s.n, title)
		return
	}
	start := time.Now()
	detail, err := fn()
	d := time.Since(start).Round(100 * time.Microsecond)
	if err != nil {
		s.failed = true
		fmt.Fprintf(s.w, "FAIL %2d. %s: %v\n", s.n, title, err)
		return
	}
	if detail != "" {
		detail = ": " + detail
	}
	fmt.Fprintf(s.w, " ok  %2d. %s%s (%s)\n", s.n, title, detail, d)
}

// Run executes the demo, printing each step to w. It returns an error if any step failed.
func Run(ctx context.Context, w io.Writer, verbose bool) error {
	s := &stepper{w: w}
	fmt.Fprintln(w, "podnet demo: everything below happens in throwaway network namespaces")
	var l *lab.Lab
	s.step("create node namespace with an uplink to an outside namespace", func() (string, error) {
		var err error
		l, err = lab.New()
		return fmt.Sprintf("node %s, outside %s", lab.NodeAddr4.Addr(), lab.OutsideAddr4.Addr()), err
	})
	if l == nil {
		return fmt.Errorf("demo failed")
	}
	defer l.Close()

	dir, err := os.MkdirTemp("", "podnet-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "podnet.sock")
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	var stop func()
	s.step("start an agent in the node namespace on a temporary store", func() (string, error) {
		st, err := agent.OpenBoltStore(dir)
		if err != nil {
			return "", err
		}
		// An empty resolv.conf: the demo's DNS server forwards nowhere, no query leaves
		// the demo's namespaces.
		resolv := filepath.Join(dir, "resolv.conf")
		if err := os.WriteFile(resolv, nil, 0o644); err != nil {
			return "", err
		}
		a, err := agent.New(agent.Config{Store: st, NodeNS: l.Node, Logger: agent.DefaultLogger(level),
			DNS: agent.DNSConfig{ResolvConf: resolv}})
		if err != nil {
			st.Close()
			return "", err
		}
		actx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { a.Serve(actx, socket); a.Close(); close(done) }()
		stop = func() { cancel(); <-done }
		return socket, waitReady(ctx, api.NewClient(socket))
	})
	if stop != nil {
		defer stop()
	}
	c := api.NewClient(socket)

	var blue api.Network
	s.step(`create network "blue" (bridge, 10.89.0.0/24 + fd89::/64)`, func() (string, error) {
		var err error
		blue, err = c.CreateNetwork(ctx, api.NetworkSpec{Name: "blue", Subnets: []string{"10.89.0.0/24", "fd89::/64"}})
		return "bridge " + blue.Bridge, err
	})
	type sandbox struct {
		ns  netns.NsHandle
		key api.EndpointKey
		ips []netip.Prefix
	}
	attach := func(network, id string) (*sandbox, error) {
		ns, err := l.Sandbox()
		if err != nil {
			return nil, err
		}
		sb := &sandbox{ns: ns, key: api.EndpointKey{Network: network, ContainerID: id, IfName: "eth0"}}
		res, err := c.Attach(ctx, api.AttachRequest{EndpointKey: sb.key, Name: id}, int(ns))
		for _, ip := range res.IPs {
			sb.ips = append(sb.ips, ip.Address)
		}
		return sb, err
	}
	var a, b *sandbox
	s.step("attach sandbox a", func() (string, error) {
		var err error
		a, err = attach("blue", "a")
		return fmt.Sprint(a.ips), err
	})
	s.step("attach sandbox b", func() (string, error) {
		var err error
		b, err = attach("blue", "b")
		return fmt.Sprint(b.ips), err
	})
	for i, family := range []string{"IPv4", "IPv6"} {
		s.step("TCP from a to b over "+family, func() (string, error) {
			dst := netip.AddrPortFrom(b.ips[i].Addr(), 8080)
			src, err := probe.TCP(ctx, a.ns, b.ns, dst, timeout)
			if err == nil && src != a.ips[i].Addr() {
				err = fmt.Errorf("b saw source %s, want a's own address %s (no NAT inside a network)", src, a.ips[i].Addr())
			}
			return fmt.Sprintf("%s -> %s, b sees %s", a.ips[i].Addr(), dst, src), err
		})
	}
	egress := []struct {
		family       string
		server, node netip.Prefix
	}{
		{"IPv4", lab.OutsideAddr4, lab.NodeAddr4},
		{"IPv6", lab.OutsideAddr6, lab.NodeAddr6},
	}
	for _, e := range egress {
		s.step("egress from a to the outside over "+e.family+" (masquerade)", func() (string, error) {
			dst := netip.AddrPortFrom(e.server.Addr(), 9090)
			src, err := probe.TCP(ctx, a.ns, l.Outside, dst, timeout)
			if err == nil && src != e.node.Addr() {
				err = fmt.Errorf("outside saw source %s, want the node's %s", src, e.node.Addr())
			}
			return fmt.Sprintf("outside server %s sees the node's address %s", dst, src), err
		})
	}
	var x *sandbox
	s.step(`create network "red" (10.90.0.0/24) and attach sandbox x`, func() (string, error) {
		if _, err := c.CreateNetwork(ctx, api.NetworkSpec{Name: "red", Subnets: []string{"10.90.0.0/24"}}); err != nil {
			return "", err
		}
		var err error
		x, err = attach("red", "x")
		return fmt.Sprint(x.ips), err
	})
	s.step("isolation: x (red) cannot reach a (blue)", func() (string, error) {
		// Blocked passes on silence only (the isolation rule drops): a refusal or an
		// unreachable network fails the step.
		dst := netip.AddrPortFrom(a.ips[0].Addr(), 8081)
		return "no answer from " + dst.String() + " within 1s: dropped", probe.Blocked(ctx, x.ns, a.ns, dst, time.Second)
	})
	var web *sandbox
	s.step("attach sandbox web to blue with label app=web and port 8080 published as 80", func() (string, error) {
		ns, err := l.Sandbox()
		if err != nil {
			return "", err
		}
		web = &sandbox{ns: ns, key: api.EndpointKey{Network: "blue", ContainerID: "web", IfName: "eth0"}}
		res, err := c.Attach(ctx, api.AttachRequest{EndpointKey: web.key, Name: "web", Labels: map[string]string{"app": "web"},
			Ports: []api.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}}, int(ns))
		for _, ip := range res.IPs {
			web.ips = append(web.ips, ip.Address)
		}
		return fmt.Sprint(web.ips), err
	})
	s.step("published port: the outside reaches web through the node's address", func() (string, error) {
		dst := netip.AddrPortFrom(lab.NodeAddr4.Addr(), 8080)
		src, err := probe.TCPVia(ctx, l.Outside, web.ns, netip.AddrPortFrom(web.ips[0].Addr(), 80), dst, timeout)
		return fmt.Sprintf("%s -> %s:80, web sees the client %s", dst, web.ips[0].Addr(), src), err
	})
	var traced bytes.Buffer
	s.step("podnet trace: one connection from the outside to the published port", func() (string, error) {
		res, err := trace.Run(ctx, trace.Options{Node: l.Node, NodePath: nsPath(l.Node), Source: l.Outside, Send: true, Count: 1,
			Flow: trace.Flow{Src: lab.OutsideAddr4.Addr(), Dst: lab.NodeAddr4.Addr(), Proto: trace.TCP, Port: 8080}})
		if err != nil {
			return "", err
		}
		if err := trace.WriteText(&traced, res.Report); err != nil {
			return "", err
		}
		if !strings.Contains(traced.String(), "dnat") {
			return "", fmt.Errorf("the trace shows no DNAT:\n%s", traced.String())
		}
		return res.Report.Result, nil
	})
	indent(w, traced.String())
	var vip netip.Addr
	s.step(`service "web" (selector app=web) gets a virtual IP`, func() (string, error) {
		svc, err := c.CreateService(ctx, api.ServiceSpec{Name: "web", Ports: []api.ServicePort{{Name: "http", Port: 80}}, Selector: map[string]string{"app": "web"}})
		if err == nil && (len(svc.Backends) == 0 || svc.Backends[0].Hostname != "web") {
			err = fmt.Errorf("backends %v, want sandbox web", svc.Backends)
		}
		if len(svc.VIPs) > 0 {
			vip = svc.VIPs[0]
		}
		return fmt.Sprintf("VIP %s, backends %v", vip, svc.Backends), err
	})
	s.step("x (red network) resolves web.default.svc.cluster.local and connects to the VIP", func() (string, error) {
		// DNS follows a new service within one snapshot rebuild: ask a few times.
		var addrs []netip.Addr
		var err error
		for range 50 {
			if addrs, err = resolveIn(ctx, x.ns, "web.default.svc.cluster.local"); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return "", err
		}
		if len(addrs) != 1 || addrs[0] != vip {
			return "", fmt.Errorf("resolved %v, want %s", addrs, vip)
		}
		_, err = probe.TCPVia(ctx, x.ns, web.ns, netip.AddrPortFrom(web.ips[0].Addr(), 80), netip.AddrPortFrom(vip, 80), timeout)
		return fmt.Sprintf("DNS %s answers %s, connection through the VIP works", api.DNSAddress, vip), err
	})
	s.step("podnet doctor on the node: no finding", func() (string, error) {
		rep, err := diagnose(ctx, c, l.Node)
		if err == nil && rep.ExitCode() != 0 {
			var b bytes.Buffer
			doctor.WriteText(&b, rep)
			err = fmt.Errorf("findings on a healthy node:\n%s", b.String())
		}
		return fmt.Sprintf("%d findings", len(rep.Findings)), err
	})
	var diagnosis bytes.Buffer
	s.step("turn IPv4 forwarding off by hand: podnet doctor names it", func() (string, error) {
		if err := kernel.WriteSysctl(l.Node, "net/ipv4/ip_forward", "0"); err != nil {
			return "", err
		}
		rep, err := diagnose(ctx, c, l.Node)
		// The agent turns it on again at its next reconcile; the demo does not wait.
		if rerr := kernel.WriteSysctl(l.Node, "net/ipv4/ip_forward", "1"); err == nil {
			err = rerr
		}
		if err != nil {
			return "", err
		}
		doctor.WriteText(&diagnosis, rep)
		i := slices.IndexFunc(rep.Findings, func(f doctor.Finding) bool { return f.Class == doctor.ClassForwardDisabled })
		if i < 0 {
			return "", fmt.Errorf("doctor did not name %s:\n%s", doctor.ClassForwardDisabled, diagnosis.String())
		}
		return rep.Findings[i].Class + ": " + rep.Findings[i].Culprit, nil
	})
	indent(w, diagnosis.String())
	s.step("list endpoints", func() (string, error) {
		eps, err := c.Endpoints(ctx, "")
		if err == nil && len(eps) != 4 {
			err = fmt.Errorf("%d endpoints, want 4", len(eps))
		}
		return fmt.Sprintf("%d endpoints", len(eps)), err
	})
	s.step("detach every sandbox and remove both networks", func() (string, error) {
		if err := c.DeleteService(ctx, "default", "web"); err != nil {
			return "", err
		}
		for _, sb := range []*sandbox{a, b, x, web} {
			if err := c.Detach(ctx, api.DetachRequest{EndpointKey: sb.key}, -1); err != nil {
				return "", err
			}
		}
		for _, n := range []string{"blue", "red"} {
			if err := c.DeleteNetwork(ctx, n); err != nil {
				return "", err
			}
		}
		eps, err := c.Endpoints(ctx, "")
		if err == nil && len(eps) != 0 {
			err = fmt.Errorf("%d endpoints left", len(eps))
		}
		return "nothing left", err
	})
	if s.failed {
		return fmt.Errorf("demo failed")
	}
	fmt.Fprintln(w, "podnet demo: all steps passed; namespaces removed")
	return nil
}

// resolveIn asks the cluster DNS server from inside ns, as the sandbox's resolv.conf
// says to.
func resolveIn(ctx context.Context, ns netns.NsHandle, name string) ([]netip.Addr, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return kernel.DialIn(ctx, ns, network, net.JoinHostPort(api.DNSAddress, "53"), timeout)
	}}
	ips, err := r.LookupNetIP(ctx, "ip4", name)
	if err != nil {
		return nil, err
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, nil
}

func waitReady(ctx context.Context, c *api.Client) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Status(ctx)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// diagnose runs podnet doctor's checks on ns, which the agent c talks to manages.
func diagnose(ctx context.Context, c *api.Client, ns netns.NsHandle) (doctor.Report, error) {
	in, err := doctor.ReadIntended(ctx, c)
	if err != nil {
		return doctor.Report{}, err
	}
	snap, err := doctor.Collect(ctx, ns, doctor.Options{Name: nsPath(ns), Intended: in})
	if err != nil {
		return doctor.Report{}, err
	}
	return doctor.Diagnose(snap), nil
}

// indent prints text under a step, indented.
func indent(w io.Writer, text string) {
	for line := range strings.Lines(text) {
		fmt.Fprint(w, "        "+line)
	}
}

// nsPath names a namespace the demo holds open, as other processes can open it.
func nsPath(ns netns.NsHandle) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}
