package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/dns"
	"github.com/podnet/podnet/internal/dns/dnstest"
	"github.com/podnet/podnet/internal/store"
)

// startTestDNS gives a fake agent a DNS server without sockets, fed as startDNS feeds
// the real one (a snapshot, then refreshLoop).
func (fa *fakeAgent) startTestDNS(t *testing.T) *dns.Server {
	t.Helper()
	srv := newTestDNSServer(t, fa)
	ctx, cancel := context.WithCancel(context.Background())
	d := &dnsService{srv: srv, cancel: cancel, done: make(chan error, 1), kick: make(chan struct{}, 1),
		held: map[api.EndpointKey]dns.Pod{}, named: map[dns.PodID]map[api.EndpointKey]bool{}}
	go func() { <-ctx.Done(); d.done <- nil }()
	fa.dns = d
	fa.rebuildDNS(d)
	go fa.refreshLoop(ctx, d)
	return srv
}

func newTestDNSServer(t *testing.T, fa *fakeAgent) *dns.Server {
	t.Helper()
	srv, err := dns.New(dns.Config{DNSAddress: netip.MustParseAddr(api.DNSAddress), Upstream: dnstest.NewUpstream(),
		SearchDomains: []string{}, ReversePrefixes: fa.serviceCIDRs, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// dnsQuestion is a question of TestMirrorDNS.
type dnsQuestion struct {
	name  string
	qtype uint16
}

// dnsAnswer is the rcode, answer and additional records of a question, one line.
func dnsAnswer(t *testing.T, srv *dns.Server, q dnsQuestion) string {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(q.name, q.qtype)
	r, err := srv.Exchange(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	var rrs []string
	for _, rr := range slices.Concat(r.Answer, r.Extra) {
		rrs = append(rrs, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	slices.Sort(rrs)
	return mdns.RcodeToString[r.Rcode] + " " + strings.Join(rrs, "; ")
}

// TestMirrorDNS follows mirrored services in DNS as a Kubernetes controller changes them
// (added, a backend moved, deleted, refused, and next to a pod's change), and checks
// after each change that the server answers as one rebuilt from the whole store would
// (as at an agent's start).
func TestMirrorDNS(t *testing.T) {
	tr := newTranscript(t)
	fa := startFake(t, newFakeNode(), tr)
	defer fa.Close()
	srv := fa.startTestDNS(t)

	service := func(name, vip string, backends ...string) api.MirrorChange {
		s := &api.ServiceSpec{Name: name, Namespace: "kb-0", Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "tcp"}}}
		if vip == "" {
			s.Headless = true
		} else {
			s.VIPs = []netip.Addr{netip.MustParseAddr(vip)}
		}
		for i, b := range backends {
			s.Slices = append(s.Slices, api.SliceEndpoint{Addrs: []netip.Addr{netip.MustParseAddr(b)}, Ready: true, Serving: true,
				Hostname: fmt.Sprintf("%s-%d", name, i)})
		}
		return api.MirrorChange{Kind: api.KindService, Namespace: "kb-0", Name: name, Service: s}
	}
	gone := func(name string) api.MirrorChange {
		return api.MirrorChange{Kind: api.KindService, Namespace: "kb-0", Name: name, Delete: true}
	}
	questions := []dnsQuestion{
		{"web.kb-0.svc.cluster.local.", mdns.TypeA},
		{"_http._tcp.web.kb-0.svc.cluster.local.", mdns.TypeSRV},
		{"10.0.96.10.in-addr.arpa.", mdns.TypePTR},
		{"db.kb-0.svc.cluster.local.", mdns.TypeA},
		{"db-0.db.kb-0.svc.cluster.local.", mdns.TypeA},
		{"_http._tcp.db.kb-0.svc.cluster.local.", mdns.TypeSRV},
		{"api.kb-0.svc.cluster.local.", mdns.TypeA},
		{"kb-0.svc.cluster.local.", mdns.TypeA},
	}
	steps := []struct {
		name    string
		changes []api.MirrorChange
		want    map[string]string // by question name and type; the others are as rebuilt
	}{
		{"services added", []api.MirrorChange{service("web", "10.96.0.10", "10.88.1.5"), service("db", "", "10.88.1.20")}, map[string]string{
			"web.kb-0.svc.cluster.local. A":     "NOERROR web.kb-0.svc.cluster.local. 5 IN A 10.96.0.10",
			"10.0.96.10.in-addr.arpa. PTR":      "NOERROR 10.0.96.10.in-addr.arpa. 5 IN PTR web.kb-0.svc.cluster.local.",
			"db-0.db.kb-0.svc.cluster.local. A": "NOERROR db-0.db.kb-0.svc.cluster.local. 5 IN A 10.88.1.20",
			"api.kb-0.svc.cluster.local. A":     "NXDOMAIN ",
			"kb-0.svc.cluster.local. A":         "NOERROR ",
			"_http._tcp.db.kb-0.svc.cluster.local. SRV": "NOERROR _http._tcp.db.kb-0.svc.cluster.local. 5 IN SRV 0 100 8080 db-0.db.kb-0.svc.cluster.local.; " +
				"db-0.db.kb-0.svc.cluster.local. 5 IN A 10.88.1.20",
		}},
		{"a backend moved", []api.MirrorChange{service("db", "", "10.88.1.21")}, map[string]string{
			"db.kb-0.svc.cluster.local. A":      "NOERROR db.kb-0.svc.cluster.local. 5 IN A 10.88.1.21",
			"db-0.db.kb-0.svc.cluster.local. A": "NOERROR db-0.db.kb-0.svc.cluster.local. 5 IN A 10.88.1.21",
		}},
		{"headless service without backends", []api.MirrorChange{service("db", "")}, map[string]string{
			"db.kb-0.svc.cluster.local. A": "NXDOMAIN ",
		}},
		{"refused: the VIP of another service", []api.MirrorChange{service("api", "10.96.0.10")}, map[string]string{
			"api.kb-0.svc.cluster.local. A": "NXDOMAIN ",
			"10.0.96.10.in-addr.arpa. PTR":  "NOERROR 10.0.96.10.in-addr.arpa. 5 IN PTR web.kb-0.svc.cluster.local.",
		}},
		{"a service and a pod (everything rebuilt)", []api.MirrorChange{service("api", "10.96.0.11"),
			{Kind: api.KindPod, Namespace: "kb-0", Name: "p", Pod: &api.Pod{Namespace: "kb-0", Name: "p"}}}, map[string]string{
			"api.kb-0.svc.cluster.local. A": "NOERROR api.kb-0.svc.cluster.local. 5 IN A 10.96.0.11",
		}},
		{"deleted", []api.MirrorChange{gone("web"), gone("db"), gone("api")}, map[string]string{
			"web.kb-0.svc.cluster.local. A": "NXDOMAIN ",
			"10.0.96.10.in-addr.arpa. PTR":  "NXDOMAIN ",
			"api.kb-0.svc.cluster.local. A": "NXDOMAIN ",
			"kb-0.svc.cluster.local. A":     "NXDOMAIN ", // no service left, no pod attached
		}},
	}
	for _, step := range steps {
		if _, err := fa.Mirror(api.MirrorRequest{Source: api.SourceKubernetes, Changes: step.changes}); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		for q, want := range step.want {
			name, typ, _ := strings.Cut(q, " ")
			question := dnsQuestion{name, mdns.StringToType[typ]}
			got := dnsAnswer(t, srv, question)
			for deadline := time.Now().Add(10 * time.Second); got != want && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond) // DNS follows off the request's path
				got = dnsAnswer(t, srv, question)
			}
			if got != want {
				t.Errorf("%s: %s: %q, want %q", step.name, q, got, want)
			}
		}
		// Each step's last change to DNS is one of the answers awaited above: refreshLoop
		// is done with the step.
		rebuilt := newTestDNSServer(t, fa)
		fa.rebuildDNS(&dnsService{srv: rebuilt})
		for _, q := range questions {
			if got, want := dnsAnswer(t, srv, q), dnsAnswer(t, rebuilt, q); got != want {
				t.Errorf("%s: %s %s: %q, rebuilt from the store: %q", step.name, q.name, mdns.TypeToString[q.qtype], got, want)
			}
		}
	}
}

// awaitDNS waits until srv answers q with want (DNS follows off the request's path).
func awaitDNS(t *testing.T, srv *dns.Server, q dnsQuestion, want string) {
	t.Helper()
	got := dnsAnswer(t, srv, q)
	for deadline := time.Now().Add(10 * time.Second); got != want && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		got = dnsAnswer(t, srv, q)
	}
	if got != want {
		t.Errorf("%s %s: %q, want %q", q.name, mdns.TypeToString[q.qtype], got, want)
	}
}

// The pods' records follow ADD and DEL without a new snapshot: DNS reads the endpoints
// that changed, never the list of every endpoint, and then answers as a server rebuilt
// from the whole store.
func TestDNSFollowsPodsIncrementally(t *testing.T) {
	node := newFakeNode()
	st := &listCounter{Store: node.store}
	fa := startFakeOn(t, node, newTranscript(t), st)
	defer fa.Close()
	srv := fa.startTestDNS(t)
	fa.createNetwork(t, blueSpec)
	if err := fa.idle(); err != nil {
		t.Fatal(err)
	}
	lists := st.lists.Load()
	podA := func(id, ns string) (dnsQuestion, string) {
		t.Helper()
		var ep api.Endpoint
		err := node.store.View(func(tx store.Tx) error {
			var ok bool
			var err error
			if ep, ok, err = tx.Endpoint(key("blue", id)); err == nil && !ok {
				err = fmt.Errorf("no endpoint %s", id)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		a := ep.IPs[0].Addr()
		name := strings.ReplaceAll(a.String(), ".", "-") + "." + ns + ".pod.cluster.local."
		return dnsQuestion{name, mdns.TypeA}, fmt.Sprintf("NOERROR %s 5 IN A %s", name, a)
	}
	attach := func(id, ns, name string) {
		t.Helper()
		req := attachReq("blue", id)
		req.Namespace, req.Name = ns, name
		if err := fa.add(req); err != nil {
			t.Fatal(err)
		}
	}

	attach("c1", "x", "c1")
	q1, want1 := podA("c1", "x")
	awaitDNS(t, srv, q1, want1)
	attach("c2", "y", "c2")
	q2, want2 := podA("c2", "y")
	awaitDNS(t, srv, q2, want2)
	if err := fa.del(key("blue", "c1")); err != nil {
		t.Fatal(err)
	}
	awaitDNS(t, srv, q1, "NXDOMAIN ")
	awaitDNS(t, srv, dnsQuestion{"x.svc.cluster.local.", mdns.TypeA}, "NXDOMAIN ") // its last pod gone
	// Two sandboxes without a name in one namespace are one pod for DNS, with the
	// addresses of both: one detached, the other's record stays.
	attach("c3", "z", "")
	attach("c4", "z", "")
	q3, want3 := podA("c3", "z")
	q4, want4 := podA("c4", "z")
	awaitDNS(t, srv, q3, want3)
	awaitDNS(t, srv, q4, want4)
	if err := fa.del(key("blue", "c3")); err != nil {
		t.Fatal(err)
	}
	awaitDNS(t, srv, q3, "NXDOMAIN ")
	awaitDNS(t, srv, q4, want4)
	if n := st.lists.Load() - lists; n != 0 {
		t.Errorf("four ADDs and two DELs listed the endpoints %d times, want none", n)
	}
	rebuilt := newTestDNSServer(t, fa)
	fa.rebuildDNS(&dnsService{srv: rebuilt})
	for _, q := range []dnsQuestion{q1, q2, q3, q4, {"y.svc.cluster.local.", mdns.TypeA}, {"x.svc.cluster.local.", mdns.TypeA}} {
		if got, want := dnsAnswer(t, srv, q), dnsAnswer(t, rebuilt, q); got != want {
			t.Errorf("%s %s: %q, rebuilt from the store: %q", q.name, mdns.TypeToString[q.qtype], got, want)
		}
	}
}
