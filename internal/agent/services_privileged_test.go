package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/probe"
)

// backend is a sandbox that answers every TCP connection on :8080 and UDP datagram on
// :5353 with its name.
type backend struct {
	*sandbox
	name string
	stop func()
}

func (e *env) backend(network, name string, labels map[string]string) *backend {
	e.t.Helper()
	ns, err := e.lab.Sandbox()
	if err != nil {
		e.t.Fatal(err)
	}
	sb := &sandbox{ns: ns, key: api.EndpointKey{Network: network, ContainerID: name, IfName: "eth0"}}
	sb.res, err = e.c.Attach(context.Background(), api.AttachRequest{EndpointKey: sb.key, Name: name, Labels: labels}, int(ns))
	if err != nil {
		e.t.Fatalf("attach %s: %v", name, err)
	}
	l, err := kernel.ListenIn(ns, "tcp", ":8080")
	if err != nil {
		e.t.Fatal(err)
	}
	u, err := kernel.ListenPacketIn(ns, "udp", ":5353")
	if err != nil {
		e.t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", name)
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := u.ReadFrom(buf)
			if err != nil {
				return
			}
			u.WriteTo([]byte(name), from)
		}
	}()
	b := &backend{sandbox: sb, name: name, stop: func() { l.Close(); u.Close() }}
	e.t.Cleanup(b.stop)
	return b
}

// ask connects from ns to addr and returns what the server said (its name).
func ask(ctx context.Context, ns netns.NsHandle, addr netip.AddrPort) (string, error) {
	c, err := kernel.DialIn(ctx, ns, "tcp", addr.String(), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestPrivilegedServices(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.network("blue", "10.89.0.0/24")
	if _, err := e.c.CreateNetwork(ctx, api.NetworkSpec{Name: "red", Driver: api.DriverRouted, Subnets: []string{"10.90.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	web := map[string]string{"app": "web"}
	b1, b2 := e.backend("blue", "web-1", web), e.backend("blue", "web-2", web)
	e.backend("blue", "other", map[string]string{"app": "db"})
	svc, err := e.c.CreateService(ctx, api.ServiceSpec{Name: "web", Ports: []api.ServicePort{
		{Name: "http", Port: 80, TargetPort: 8080}, {Name: "dns", Port: 53, TargetPort: 5353, Protocol: "udp"}},
		Selector: web})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.VIPs) != 1 || !netip.MustParsePrefix(api.DefaultServiceCIDR).Contains(svc.VIPs[0]) || len(svc.Backends) != 2 {
		t.Fatalf("service %+v", svc)
	}
	vip := netip.AddrPortFrom(svc.VIPs[0], 80)
	client := e.mustAttach("red", "client")

	spread := func(from netns.NsHandle, n int) map[string]int {
		t.Helper()
		seen := map[string]int{}
		for range n {
			name, err := ask(ctx, from, vip)
			if err != nil {
				t.Fatalf("connect to %s: %v", vip, err)
			}
			seen[name]++
		}
		return seen
	}
	// Another network (routed), the node itself, a backend (hairpin).
	if seen := spread(client.ns, 40); len(seen) != 2 || seen["other"] > 0 {
		t.Errorf("from another network: %v, want web-1 and web-2", seen)
	}
	if seen := spread(e.lab.Node, 10); len(seen) == 0 {
		t.Error("from the node: no answer")
	}
	if seen := spread(b1.ns, 10); len(seen) == 0 {
		t.Error("hairpin: no answer")
	}
	// UDP port of the service.
	u, err := kernel.DialIn(ctx, client.ns, "udp", netip.AddrPortFrom(svc.VIPs[0], 53).String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("?"))
	u.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	if n, err := u.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "web-") {
		t.Errorf("udp service: %q %v", buf[:n], err)
	}
	u.Close()

	// Churn: a new labelled endpoint joins at once; a detached one leaves at once;
	// relabelling moves an endpoint in.
	b3 := e.backend("blue", "web-3", web)
	if seen := spread(client.ns, 40); seen["web-3"] == 0 {
		t.Errorf("new backend not used: %v", seen)
	}
	if err := e.c.Detach(ctx, api.DetachRequest{EndpointKey: b2.key}, -1); err != nil {
		t.Fatal(err)
	}
	if seen := spread(client.ns, 30); seen["web-2"] > 0 {
		t.Errorf("detached backend still used: %v", seen)
	}
	if _, err := e.c.SetLabels(ctx, api.LabelsRequest{EndpointKey: b3.key, Labels: map[string]string{"app": "none"}}); err != nil {
		t.Fatal(err)
	}
	if seen := spread(client.ns, 20); seen["web-3"] > 0 || seen["web-1"] != 20 {
		t.Errorf("relabelled backend still used: %v", seen)
	}

	// A service without backends refuses (a TCP reset) instead of black-holing.
	empty, err := e.c.CreateService(ctx, api.ServiceSpec{Name: "empty", Ports: []api.ServicePort{{Port: 80}}, Selector: map[string]string{"app": "nobody"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ask(ctx, client.ns, netip.AddrPortFrom(empty.VIPs[0], 80)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("empty service: %v, want connection refused (a reset, not a timeout)", err)
	}

	// Client-IP affinity keeps a client on one backend.
	e.backend("blue", "sticky-1", map[string]string{"app": "sticky"})
	e.backend("blue", "sticky-2", map[string]string{"app": "sticky"})
	sticky, err := e.c.CreateService(ctx, api.ServiceSpec{Name: "sticky", Ports: []api.ServicePort{{Port: 80, TargetPort: 8080}},
		Selector: map[string]string{"app": "sticky"}, Affinity: api.AffinityClientIP})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for range 20 {
		name, err := ask(ctx, client.ns, netip.AddrPortFrom(sticky.VIPs[0], 80))
		if err != nil {
			t.Fatal(err)
		}
		got[name]++
	}
	if len(got) != 1 {
		t.Errorf("affinity: %v, want one backend", got)
	}

	// Services survive a restart; rm releases the VIP.
	e.restart()
	if seen := spread(client.ns, 5); seen["web-1"] != 5 {
		t.Errorf("after restart: %v", seen)
	}
	if err := e.c.DeleteService(ctx, "default", "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(ctx, client.ns, vip); err == nil {
		t.Error("deleted service still answers")
	}
	svcs, _ := e.c.Services(ctx, "")
	if len(svcs) != 2 {
		t.Errorf("services after rm: %+v", svcs)
	}
}

// lookup resolves name through the cluster DNS address from inside ns.
func lookup(ctx context.Context, ns netns.NsHandle, name string, qtype uint16) (*mdns.Msg, error) {
	return probe.Lookup(ctx, ns, netip.AddrPortFrom(netip.MustParseAddr(api.DNSAddress), 53), name, qtype, 2*time.Second)
}

// eventuallyAnswers waits (bounded) for DNS to answer name with want: the server's
// snapshot follows changes within one rebuild.
func eventuallyAnswers(ctx context.Context, ns netns.NsHandle, name string, qtype uint16, want []string) error {
	var got []string
	var err error
	for range 100 {
		var m *mdns.Msg
		if m, err = lookup(ctx, ns, name, qtype); err == nil {
			if got = probe.Answers(m); slices.Equal(got, want) {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: %v (%v), want %v", name, got, err, want)
}

// Sandboxes resolve services (ClusterIP and headless, with hostnames) through the DNS
// address of their resolv.conf, and external names through an upstream on 127.0.0.1 of
// the node namespace; autopath answers a search expansion in one round trip.
func TestPrivilegedDNS(t *testing.T) {
	startUpstream := func(e *env) {
		t.Helper()
		pc, err := kernel.ListenPacketIn(e.lab.Node, "udp", "127.0.0.1:5300")
		if err != nil {
			t.Fatal(err)
		}
		srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
			m := new(mdns.Msg)
			m.SetReply(r)
			if r.Question[0].Name == "example.com." && r.Question[0].Qtype == mdns.TypeA {
				rr, _ := mdns.NewRR("example.com. 60 IN A 192.0.2.80")
				m.Answer = append(m.Answer, rr)
			} else if r.Question[0].Name != "example.com." {
				m.Rcode = mdns.RcodeNameError
			}
			w.WriteMsg(m)
		})}
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	e := newEnv(t)
	startUpstream(e)
	e.dns.Upstreams = []string{"127.0.0.1:5300"}
	e.restart()
	ctx := context.Background()
	e.network("blue", "10.89.0.0/24")
	web := map[string]string{"app": "web"}
	b1 := e.backend("blue", "web-1", web)
	b2 := e.backend("blue", "web-2", web)
	svc, err := e.c.CreateService(ctx, api.ServiceSpec{Name: "web", Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: 8080}}, Selector: web})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.CreateService(ctx, api.ServiceSpec{Name: "web-direct", Headless: true, Ports: []api.ServicePort{{Name: "http", Port: 8080}}, Selector: web}); err != nil {
		t.Fatal(err)
	}
	client := e.mustAttach("blue", "client")
	if d := client.res.DNS; len(d.Nameservers) != 1 || d.Nameservers[0] != api.DNSAddress || !slices.Contains(d.Search, "default.svc.cluster.local") || !slices.Contains(d.Options, "ndots:5") {
		t.Fatalf("ADD result dns: %+v", d)
	}
	tests := []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"web.default.svc.cluster.local", mdns.TypeA, []string{svc.VIPs[0].String()}},
		{"web-direct.default.svc.cluster.local", mdns.TypeA, []string{b1.ip(0).String(), b2.ip(0).String()}},
		{"web-1.web-direct.default.svc.cluster.local", mdns.TypeA, []string{b1.ip(0).String()}},
		{"example.com", mdns.TypeA, []string{"192.0.2.80"}},
		// autopath: the first search expansion answers with the final answer.
		{"example.com.default.svc.cluster.local", mdns.TypeA, []string{"192.0.2.80", "CNAME example.com."}},
	}
	for _, tt := range tests {
		if err := eventuallyAnswers(ctx, client.ns, tt.name, tt.qtype, tt.want); err != nil {
			t.Error(err)
		}
	}
	m, err := lookup(ctx, client.ns, "nope.default.svc.cluster.local", mdns.TypeA)
	if err != nil || m.Rcode != mdns.RcodeNameError {
		t.Errorf("missing service: %v %v, want NXDOMAIN", m, err)
	}
	// Backends follow churn in DNS too.
	if err := e.c.Detach(ctx, api.DetachRequest{EndpointKey: b2.key}, -1); err != nil {
		t.Fatal(err)
	}
	if err := eventuallyAnswers(ctx, client.ns, "web-direct.default.svc.cluster.local", mdns.TypeA, []string{b1.ip(0).String()}); err != nil {
		t.Errorf("headless after detach: %v", err)
	}
}
